//! Scheduled flag changes: a background worker that, every `flags.schedule_interval_secs`,
//! visits every active tenant with pending changes due and applies each through the one
//! write path (`service::write_in`): a new version whose reason names the schedule, audited,
//! with its event and broadcast. A change that no longer gives a valid flag is marked
//! `failed` with the reason (audited), never half applied. Instances share the work through
//! row locks (`SKIP LOCKED`): a change applies once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::FlagsState;
use super::repo::{self, Kind};
use super::service::{self, Writer};
use crate::audit::{self, Actor, Change};
use crate::error::ApiError;
use crate::settings::Author;
use crate::tenancy::cache::ResolvedTenant;

/// Applies `tenant`'s due changes; returns how many applied.
pub async fn apply_due(state: &FlagsState, tenant: &ResolvedTenant) -> Result<usize, ApiError> {
    let actor = Actor::system(&state.audit_recent, tenant.tenant.id, &tenant.db);
    let mut applied = 0;
    loop {
        // One change per transaction: its outcome commits with it.
        let outcome = tenant
            .db
            .transaction(async |tx| {
                let conn = tx.conn();
                let Some(due) = repo::due_schedules(conn, 1).await?.into_iter().next() else {
                    return Ok::<_, ApiError>(None);
                };
                let writer = Writer {
                    actor: &actor,
                    author: Author {
                        id: due.created_by.map(crate::ids::UserId),
                        name: None,
                    },
                    reason: format!("scheduled change {}", due.id),
                };
                let patch = due.patch.clone();
                let result = service::write_in(
                    state,
                    conn,
                    &writer,
                    Kind::Flag,
                    &due.flag_key,
                    None,
                    Box::new(move |current| {
                        let mut next = current.ok_or_else(|| ApiError::not_found("flag"))?.clone();
                        crate::settings::catalogue::merge_patch(&mut next, &patch);
                        Ok(Some(next))
                    }),
                )
                .await;
                Ok(Some((due, result)))
            })
            .await;
        let (due, result) = match outcome {
            Ok(Some(x)) => x,
            Ok(None) => break,
            Err(e) => return Err(e),
        };
        match result {
            Ok((row, generation)) => {
                let version = row.map(|r| r.version);
                tenant
                    .db
                    .transaction(async |tx| {
                        repo::set_schedule_outcome(tx.conn(), due.id, "applied", version, None)
                            .await?;
                        Ok::<_, ApiError>(())
                    })
                    .await?;
                if let Some(g) = generation {
                    state.cache.invalidate(tenant.tenant.id.0, g).await;
                }
                applied += 1;
            }
            Err(error) => {
                // The write rolled back with its transaction; record why, in one of its own.
                let why = match error.errors.is_empty() {
                    true => error.detail.to_string(),
                    false => error
                        .errors
                        .iter()
                        .map(|e| format!("{}: {}", e.pointer, e.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                };
                tenant
                    .db
                    .transaction(async |tx| {
                        let conn = tx.conn();
                        repo::set_schedule_outcome(conn, due.id, "failed", None, Some(&why))
                            .await?;
                        audit::record(
                            conn,
                            &actor,
                            Change {
                                action: "flag.schedule_failed",
                                target_type: "flag",
                                target_id: Some(due.flag_key.clone()),
                                data: json!({"schedule": due.id, "error": why}),
                            },
                        )
                        .await?;
                        Ok::<_, ApiError>(())
                    })
                    .await?;
            }
        }
    }
    Ok(applied)
}

/// Whether `tenant` has a pending change due now (one indexed read).
async fn has_due(tenant: &ResolvedTenant) -> bool {
    tenant
        .db
        .transaction(async |tx| Ok::<_, ApiError>(repo::next_due(tx.conn()).await?))
        .await
        .ok()
        .flatten()
        .is_some_and(|at| at <= chrono::Utc::now())
}

/// The worker: runs until `stop` changes.
pub async fn worker(state: Arc<FlagsState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(
        state.config.flags.schedule_interval_secs,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        for tenant in crate::tenancy::service::active_tenants(&state.tenancy, "flag schedule").await
        {
            if !has_due(&tenant).await {
                continue;
            }
            match apply_due(&state, &tenant).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(tenant = %tenant.tenant.id, applied = n, "scheduled flag changes applied")
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant.tenant.id, error = %e.detail, "scheduled flag changes failed; retrying next round")
                }
            }
        }
    }
}
