//! Delivery of tenant events to integration plugins: at least once, in outbox order, with
//! retries.
//!
//! Each round visits recently written tenants (and, every sweep, all tenants). For each
//! enabled integration that is not waiting for a retry, an instance takes a short lease on
//! the installation row, reads the outbox after the installation's cursor (only events of
//! finished transactions) and calls the plugin for each subscribed event; the cursor moves
//! past an event in the same transaction that writes what the plugin emitted, so a crash
//! re-delivers at most that event. A failed delivery waits `retry_base_ms · 2^(n-1)` (at most
//! five minutes); after `delivery_max_attempts` the event is set aside as a dead letter and
//! delivery goes on. No transaction is held open while a plugin runs. An integration never
//! receives the events it emitted itself.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::DeadLetter;
use super::PluginsState;
use super::hooks::{call_ctx, emit};
use super::manifest::matches;
use super::repo::{self, InstallRow};
use super::service::{breaker_key, count_failure, loaded, record_failure};
use crate::db::TenantDb;
use crate::error::ApiError;
use crate::outbox::{self, Cursor};

/// Events read per installation per round.
const BATCH: i64 = 100;
/// How long a lease lasts: longer than a batch of calls that each take the whole
/// `plugins.timeout_ms`, so no other instance takes an installation mid-batch.
fn lease_secs(cfg: &crate::config::PluginsConfig) -> i32 {
    let secs = (BATCH as u64).saturating_mul(cfg.timeout_ms) / 1000 + 30;
    i32::try_from(secs).unwrap_or(i32::MAX)
}

fn subscribed(install: &InstallRow, topic: &str) -> bool {
    !topic.starts_with(&format!("plugin.{}.", install.name))
        && install.events.iter().any(|p| matches(p, topic))
}

/// Delivers due events of one tenant: how many were delivered, or `None` when the tenant
/// has no enabled integration at all.
pub async fn deliver_tenant(
    state: &PluginsState,
    tenant: Uuid,
    db: &TenantDb,
) -> Result<Option<usize>, ApiError> {
    let due = {
        db.transaction(async |tx| {
            let due = repo::due_integrations(tx.conn()).await?;
            let any = !due.is_empty() || repo::has_integrations(tx.conn()).await?;
            Ok::<_, ApiError>((due, any))
        })
        .await?
    };
    let (due, any) = due;
    if !any {
        return Ok(None);
    }
    let mut delivered = 0;
    for install in due {
        // Nothing new: no lease, no write.
        let after = Cursor {
            txid: install.cursor_txid,
            seq: install.cursor_seq,
        };
        let pending = db
            .transaction(async |tx| {
                Ok::<_, ApiError>(outbox::read_after(tx.conn(), after, 1).await?)
            })
            .await?;
        if pending.is_empty() {
            continue;
        }
        let lease = lease_secs(&state.config.plugins);
        let leased = db
            .transaction(async |tx| {
                Ok::<_, ApiError>(repo::lease(tx.conn(), &install.name, lease).await?)
            })
            .await?;
        let Some(install) = leased else { continue };
        let name = install.name.clone();
        let r = deliver_install(state, tenant, db, install).await;
        db.transaction(async |tx| Ok::<_, ApiError>(repo::release_lease(tx.conn(), &name).await?))
            .await?;
        delivered += r?;
    }
    Ok(Some(delivered))
}

async fn deliver_install(
    state: &PluginsState,
    tenant: Uuid,
    db: &TenantDb,
    install: InstallRow,
) -> Result<usize, ApiError> {
    let cfg = &state.config.plugins;
    let after = Cursor {
        txid: install.cursor_txid,
        seq: install.cursor_seq,
    };
    let events = db
        .transaction(async |tx| {
            Ok::<_, ApiError>(outbox::read_after(tx.conn(), after, BATCH).await?)
        })
        .await?;
    outbox::record_lag("plugins", &events);
    if events.is_empty() {
        return Ok(0);
    }
    let plugin = loaded(state, &install.hash).await?;
    let rules = db
        .read(async |conn| {
            crate::settings::service::integrations(&state.settings, tenant, conn).await
        })
        .await?;
    let call = call_ctx(&state.keyring, tenant, db, &install, &rules);
    let mut skipped: Option<Cursor> = None;
    let mut delivered = 0;
    for ev in events {
        if !subscribed(&install, &ev.topic) {
            skipped = Some(ev.cursor());
            continue;
        }
        let event = neotenant_runtime::Event {
            id: format!("{}:{}", ev.txid, ev.seq),
            kind: ev.topic.clone(),
            subject: format!("{}/{}", ev.aggregate_type, ev.aggregate_id),
            data: ev.payload.clone(),
            occurred_at: ev.at.to_rfc3339(),
        };
        let started = std::time::Instant::now();
        let outcome = state
            .plugins
            .runtime
            .on_event(&plugin, call.clone(), &event)
            .await;
        crate::metrics::plugin_call("on_event", started.elapsed());
        let error = match outcome {
            Ok((Ok(()), fx)) => {
                state
                    .plugins
                    .breaker
                    .success(&breaker_key(tenant, &install.name, &install.hash));
                db.transaction(async |tx| {
                    emit(tx.conn(), &install.name, fx).await?;
                    repo::advance(tx.conn(), &install.name, ev.txid, ev.seq).await?;
                    Ok::<_, ApiError>(())
                })
                .await?;
                state
                    .metrics
                    .plugin_deliveries
                    .with_label_values(&["delivered"])
                    .inc();
                delivered += 1;
                skipped = None;
                continue;
            }
            Ok((Err(message), _)) => message,
            Err(e) => {
                state
                    .metrics
                    .plugin_failures
                    .with_label_values(&["on_event", e.code()])
                    .inc();
                let message = e.to_string();
                record_failure(
                    db,
                    &install.name,
                    "on_event",
                    e.code(),
                    &message,
                    Some(&event.subject),
                    false,
                )
                .await;
                count_failure(state, tenant, db, &install.name, &install.hash, &message).await;
                message
            }
        };
        // Failed: save progress up to here, then retry this event later or set it aside.
        let attempts = install.attempts + 1;
        db.transaction(async |tx| {
            let conn = tx.conn();
            if let Some(c) = skipped {
                repo::advance(conn, &install.name, c.txid, c.seq).await?;
            }
            if attempts as u32 >= cfg.delivery_max_attempts {
                let dead = DeadLetter {
                    id: 0,
                    event_seq: ev.seq,
                    topic: ev.topic.clone(),
                    subject: event.subject.clone(),
                    payload: ev.payload.clone(),
                    error: error.clone(),
                    attempts,
                    at: chrono::Utc::now(),
                };
                repo::insert_dead_letter(conn, &install.name, &dead).await?;
                repo::advance(conn, &install.name, ev.txid, ev.seq).await?;
            } else {
                let delay = (cfg.retry_base_ms as i64)
                    .saturating_mul(1 << (attempts - 1).min(20))
                    .min(300_000);
                repo::retry_later(conn, &install.name, attempts, delay, &error).await?;
            }
            Ok::<_, ApiError>(())
        })
        .await?;
        let outcome = if attempts as u32 >= cfg.delivery_max_attempts {
            "dead_letter"
        } else {
            "retried"
        };
        state
            .metrics
            .plugin_deliveries
            .with_label_values(&[outcome])
            .inc();
        tracing::info!(%tenant, plugin = %install.name, attempts, %error, outcome, "event delivery failed");
        return Ok(delivered);
    }
    if let Some(c) = skipped {
        db.transaction(async |tx| {
            Ok::<_, ApiError>(repo::advance(tx.conn(), &install.name, c.txid, c.seq).await?)
        })
        .await?;
    }
    Ok(delivered)
}

/// The delivery loop; runs until `stop` changes.
pub async fn worker(state: Arc<PluginsState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = Duration::from_millis(state.config.plugins.delivery_interval_ms);
    let mut round = tokio::time::interval(every);
    let mut sweep =
        tokio::time::interval(Duration::from_secs(state.config.search.sweep_interval_secs));
    for t in [&mut round, &mut sweep] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    // Tenants with integrations stay on the list between sweeps (retries come due later).
    let mut known: Vec<(Uuid, TenantDb)> = Vec::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = sweep.tick() => {
                known = crate::audit::seal::all_tenants(&state.tenancy).await;
                continue;
            }
            _ = round.tick() => {}
        }
        let recent = state.audit_recent.tenants(Duration::from_secs(10) + every);
        for (id, db) in &recent {
            if !known.iter().any(|(k, _)| k == id) {
                known.push((*id, db.clone()));
            }
        }
        let mut keep = Vec::with_capacity(known.len());
        for (id, db) in known.drain(..) {
            match deliver_tenant(&state, id, &db).await {
                // No integrations: off the list until it writes again or the next sweep.
                Ok(None) => {}
                Ok(Some(_)) => keep.push((id, db)),
                Err(e) => {
                    tracing::debug!(tenant = %id, error = %e.detail, "plugin delivery round failed");
                    keep.push((id, db));
                }
            }
        }
        known = keep;
    }
}
