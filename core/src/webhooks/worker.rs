//! The webhook worker: routes outbox events into per-endpoint queues and delivers them.
//!
//! Each round visits tenants written recently (and, every sweep, all tenants). Routing: under
//! the router cursor's row lock, events after the cursor (finished transactions only, in
//! commit order) become messages for every endpoint whose filters take them and that existed
//! when the event happened; messages and the cursor commit together. Delivery: the round
//! leases endpoints with due messages (as many as it has free slots) and hands each to a task
//! of its own, so a receiver that hangs holds only its own endpoint's slot; the task sends the
//! endpoint's due messages oldest first, `webhooks.per_endpoint_concurrency` at a time,
//! records each attempt and the next due time in one transaction per group, extends its lease
//! and stops early when a whole group failed. A receiver's 2xx is success; 410 disables the
//! endpoint; anything else (3xx included: redirects are not followed) is retried on the
//! schedule, later when `Retry-After` asks; after the schedule the message is a dead letter.
//! An endpoint failing without a success for `webhooks.disable_after_secs` is disabled, and a
//! `webhook.endpoint_disabled` event tells the tenant.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use rand::Rng;
use serde_json::json;
use uuid::Uuid;

use super::repo::{self, Attempted, EndpointRow};
use super::{WebhooksState, catalogue, service, signing};
use crate::crypto::Keyring;
use crate::db::TenantDb;
use crate::error::ApiError;
use crate::outbox;
use crate::settings::IntegrationSettings;

/// Events routed per transaction.
const ROUTE_BATCH: i64 = 1000;
/// Routing transactions per tenant per round.
const ROUTE_ROUNDS: usize = 20;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);
/// Tenants a round works on at once.
const TENANTS_AT_ONCE: usize = 8;

fn lease_secs(state: &WebhooksState) -> f64 {
    2.0 * state.config.webhooks.timeout_ms as f64 / 1000.0 + 30.0
}

/// Routes a tenant's new events into its endpoints' queues; how many events were read.
pub async fn route(db: &TenantDb) -> Result<usize, ApiError> {
    let mut total = 0;
    for _ in 0..ROUTE_ROUNDS {
        let n = db
            .transaction(async |tx| {
                let conn = tx.conn();
                let Some(cursor) = repo::lock_cursor(conn).await? else {
                    // Another instance routes this tenant now.
                    return Ok::<_, ApiError>(0);
                };
                let events = outbox::read_after(conn, cursor, ROUTE_BATCH).await?;
                crate::outbox::record_lag("webhooks", &events);
                let Some(last) = events.last().map(outbox::Event::cursor) else {
                    return Ok(0);
                };
                let routes = repo::routes(conn).await?;
                let msgs: Vec<_> = events
                    .iter()
                    .flat_map(|ev| {
                        routes
                            .iter()
                            .filter(|r| {
                                r.created_at <= ev.at
                                    && catalogue::wanted(&r.event_types, &ev.topic)
                            })
                            .map(|r| service::message_for(r.id, ev))
                    })
                    .collect();
                repo::insert_messages(conn, &msgs).await?;
                repo::set_cursor(conn, last).await?;
                Ok(events.len())
            })
            .await?;
        total += n;
        if (n as i64) < ROUTE_BATCH {
            break;
        }
    }
    Ok(total)
}

/// The opened secrets of an endpoint: `whsec_` secrets that sign (the current one, and the
/// previous one during its overlap) and the `whsk_` key, if any.
struct Keys {
    secrets: Vec<String>,
    signing: Option<String>,
}

fn open_keys(keyring: &Keyring, tenant: Uuid, e: &EndpointRow) -> Result<Keys, String> {
    let ctx = |what: &str| WebhooksState::seal_context(tenant, e.id, what);
    let open = |what: &str, v: &str| {
        keyring
            .open_str(&ctx(what), v)
            .map_err(|err| format!("the endpoint's {what} cannot be opened: {err}"))
    };
    let mut secrets = vec![open("secret", &e.secret)?];
    if let (Some(prev), Some(until)) = (&e.previous_secret, e.previous_expires_at)
        && until > Utc::now()
    {
        secrets.push(open("secret", prev)?);
    }
    let signing = e
        .signing_key
        .as_deref()
        .map(|k| open("signing_key", k))
        .transpose()?;
    Ok(Keys { secrets, signing })
}

/// What one attempt came to.
struct Answer {
    status: Option<u16>,
    body: Option<String>,
    error: Option<String>,
    retry_after: Option<Duration>,
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Reads at most `max` bytes of an answer's body, then stops (the rest is never read).
async fn read_capped(res: reqwest::Response, max: usize) -> String {
    let mut out = Vec::new();
    let mut stream = res.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = max.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= max {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn retry_after(res: &reqwest::Response) -> Option<Duration> {
    let v = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

async fn send_one(
    state: &WebhooksState,
    rules: &IntegrationSettings,
    url: &str,
    keys: &Keys,
    msg: &repo::DueMessage,
    body: &[u8],
) -> Answer {
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    if !rules.host_allowed(&host) {
        return Answer {
            status: None,
            body: None,
            error: Some(format!(
                "the tenant's settings (integrations.allowed_hosts) do not list `{host}`"
            )),
            retry_after: None,
        };
    }
    let timeout = rules.timeout(state.config.webhooks.timeout_ms);
    let id = service::message_id(msg.id);
    let ts = Utc::now().timestamp();
    let secrets: Vec<&str> = keys.secrets.iter().map(String::as_str).collect();
    let signature = signing::header(&secrets, keys.signing.as_deref(), &id, ts, body);
    let max = state.config.webhooks.log_body_bytes;
    let sent = state
        .client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .timeout(timeout)
        .body(body.to_vec())
        .send()
        .await;
    match sent {
        Ok(res) => {
            let status = res.status().as_u16();
            let after = retry_after(&res);
            let text = tokio::time::timeout(timeout, read_capped(res, max))
                .await
                .unwrap_or_default();
            Answer {
                status: Some(status),
                body: Some(text),
                error: (300..400)
                    .contains(&status)
                    .then(|| "redirects are not followed".to_string()),
                retry_after: after,
            }
        }
        Err(e) => {
            let why = if e.is_timeout() {
                "the receiver did not answer in time".to_string()
            } else if e.is_connect() {
                format!("cannot connect: {}", root_cause(&e))
            } else {
                format!("the request failed: {}", root_cause(&e))
            };
            Answer {
                status: None,
                body: None,
                error: Some(why),
                retry_after: None,
            }
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cut(&cur.to_string(), 300)
}

/// The wait before attempt `n + 1` after `n` attempts (±10 %), or `None` when the schedule is
/// over.
pub fn next_wait(schedule: &[Duration], n: usize) -> Option<Duration> {
    let base = schedule.get(n)?;
    let jitter = rand::rng().random_range(0.9..=1.1);
    Some(base.mul_f64(jitter))
}

/// Delivers one leased endpoint's due messages; always ends the lease.
async fn deliver_endpoint(state: Arc<WebhooksState>, tenant: Uuid, db: TenantDb, e: EndpointRow) {
    let started = Instant::now();
    let result = deliver_endpoint_inner(&state, tenant, &db, &e).await;
    if let Err(err) = &result {
        tracing::debug!(endpoint = %e.id, error = %err.detail, cause = ?err.source, "webhook delivery round failed");
    }
    // An endpoint with its own rate limit is not taken again before a second has passed
    // since this batch began.
    let hold = match (e.rate_limit, &result) {
        (_, Ok(Outcome::Failing)) => 1.0,
        (Some(_), _) => (1.0 - started.elapsed().as_secs_f64()).max(0.0),
        _ => 0.0,
    };
    let _ = db
        .transaction(async |tx| Ok::<_, ApiError>(repo::release(tx.conn(), e.id, hold).await?))
        .await;
}

enum Outcome {
    Done,
    /// A whole group failed: the rest waits for the next lease.
    Failing,
}

async fn deliver_endpoint_inner(
    state: &WebhooksState,
    tenant: Uuid,
    db: &TenantDb,
    e: &EndpointRow,
) -> Result<Outcome, ApiError> {
    let cfg = &state.config.webhooks;
    let limit = e.rate_limit.map_or(i64::from(cfg.batch), |r| {
        i64::from(r).min(i64::from(cfg.batch))
    });
    let due = db
        .transaction(async |tx| {
            Ok::<_, ApiError>(repo::due_messages(tx.conn(), e.id, limit).await?)
        })
        .await?;
    let rules = db
        .read(async |conn| {
            crate::settings::service::integrations(&state.settings, tenant, conn).await
        })
        .await?;
    let rules = &rules;
    let keys = match open_keys(&state.keyring, tenant, e) {
        Ok(k) => k,
        Err(why) => {
            tracing::error!(endpoint = %e.id, "{why}");
            return Ok(Outcome::Failing);
        }
    };
    let group = cfg.per_endpoint_concurrency;
    let mut outcome = Outcome::Done;
    for chunk in due.chunks(group) {
        let keys = &keys;
        let sent: Vec<(Attempted, bool, bool)> = futures::stream::iter(chunk.to_vec())
            .map(move |m: repo::DueMessage| async move {
                let body = serde_json::to_vec(&m.payload).unwrap_or_default();
                let t0 = Instant::now();
                let answer = send_one(state, rules, &e.url, keys, &m, &body).await;
                judge(state, rules, e, &m, &body, answer, t0.elapsed())
            })
            .buffer_unordered(group)
            .collect()
            .await;
        let any_ok = sent.iter().any(|(a, _, _)| a.status == "succeeded");
        let any_fail = sent.iter().any(|(a, _, _)| a.status != "succeeded");
        let gone = sent.iter().any(|(_, gone, _)| *gone);
        let rows: Vec<Attempted> = sent.into_iter().map(|(a, _, _)| a).collect();
        let disable_after = chrono::Duration::seconds(cfg.disable_after_secs as i64);
        let lease = lease_secs(state);
        let actor =
            crate::audit::Actor::system(&state.audit_recent, crate::ids::TenantId(tenant), db);
        let disabled = db
            .transaction(async |tx| {
                let conn = tx.conn();
                repo::record_attempts(conn, &rows).await?;
                let since = repo::health(conn, e.id, any_ok, any_fail).await?;
                let reason = if gone {
                    Some("gone")
                } else if since.is_some_and(|s| Utc::now() - s >= disable_after) {
                    Some("failing")
                } else {
                    None
                };
                if let Some(reason) = reason
                    && repo::disable(conn, e.id, reason).await?
                {
                    disabled_event(conn, &actor, e, reason).await?;
                    return Ok::<_, ApiError>(true);
                }
                repo::extend_lease(conn, e.id, lease).await?;
                Ok(false)
            })
            .await?;
        if disabled {
            return Ok(Outcome::Done);
        }
        if !any_ok {
            outcome = Outcome::Failing;
            break;
        }
    }
    Ok(outcome)
}

/// Tells the tenant (an outbox event, which its webhooks, rules and notifications see) and the
/// audit log that the platform disabled an endpoint.
async fn disabled_event(
    conn: &mut diesel_async::AsyncPgConnection,
    actor: &crate::audit::Actor,
    e: &EndpointRow,
    reason: &str,
) -> Result<(), ApiError> {
    let created_by: Option<Uuid> = repo::created_by(conn, e.id).await?;
    crate::audit::record(
        conn,
        actor,
        crate::audit::Change {
            action: "webhook.endpoint_disabled",
            target_type: "webhook_endpoint",
            target_id: Some(e.id.to_string()),
            data: json!({"url": e.url, "reason": reason}),
        },
    )
    .await?;
    outbox::emit(
        conn,
        "webhook.endpoint_disabled",
        "webhook_endpoint",
        &e.id.to_string(),
        json!({"endpoint_id": e.id, "url": e.url, "reason": reason, "created_by": created_by}),
    )
    .await?;
    Ok(())
}

/// Turns an answer into the attempt's record: (record, the endpoint is gone, succeeded).
fn judge(
    state: &WebhooksState,
    rules: &IntegrationSettings,
    e: &EndpointRow,
    m: &repo::DueMessage,
    body: &[u8],
    a: Answer,
    took: Duration,
) -> (Attempted, bool, bool) {
    let cfg = &state.config.webhooks;
    let n = m.attempts + 1;
    let ok = a.error.is_none() && a.status.is_some_and(|s| (200..300).contains(&s));
    let gone = a.status == Some(410);
    let error = if ok {
        None
    } else if gone {
        Some("the receiver answered 410 Gone: the endpoint is disabled".to_string())
    } else {
        a.error
            .clone()
            .or_else(|| a.status.map(|s| format!("the receiver answered {s}")))
    };
    let (status, due) = if ok {
        ("succeeded", Utc::now())
    } else if gone {
        ("failed", Utc::now())
    } else {
        let wait = if (n as usize) < rules.attempts(state.schedule.len()) {
            next_wait(&state.schedule, n as usize).map(|w| rules.retry_wait(w))
        } else {
            None
        };
        match wait {
            Some(wait) => {
                // A receiver asking for a later retry gets it (up to a day).
                let wait = a
                    .retry_after
                    .map_or(wait, |ra| wait.max(ra.min(MAX_RETRY_AFTER)));
                (
                    "pending",
                    Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                )
            }
            None => ("failed", Utc::now()),
        }
    };
    let record = Attempted {
        message: m.id,
        n,
        url: e.url.clone(),
        request_body: cut(&String::from_utf8_lossy(body), cfg.log_body_bytes),
        response_status: a.status.map(i32::from),
        response_body: a.body.map(|b| cut(&b, cfg.log_body_bytes)),
        error,
        duration_ms: took.as_millis().min(i32::MAX as u128) as i32,
        status,
        due_at: due,
    };
    (record, gone, ok)
}

/// Routes one tenant's events and starts deliveries for its due endpoints (up to the free
/// slots). `Ok(false)`: the tenant has no endpoints at all.
async fn run_tenant(
    state: &Arc<WebhooksState>,
    slots: &Arc<tokio::sync::Semaphore>,
    tenant: Uuid,
    db: &TenantDb,
) -> Result<bool, ApiError> {
    let (any, work) = db
        .transaction(async |tx| Ok::<_, ApiError>(repo::has_work(tx.conn()).await?))
        .await?;
    if !any {
        return Ok(false);
    }
    if !work {
        return Ok(true);
    }
    route(db).await?;
    let free = slots.available_permits();
    if free == 0 {
        return Ok(true);
    }
    let lease = lease_secs(state);
    let leased = db
        .transaction(async |tx| {
            Ok::<_, ApiError>(repo::lease_endpoints(tx.conn(), free as i64, lease).await?)
        })
        .await?;
    for e in leased {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Taken meanwhile by another tenant: give the lease back.
            let _ = db
                .transaction(async |tx| {
                    Ok::<_, ApiError>(repo::release(tx.conn(), e.id, 0.0).await?)
                })
                .await;
            continue;
        };
        let state = state.clone();
        let db = db.clone();
        tokio::spawn(async move {
            deliver_endpoint(state, tenant, db, e).await;
            drop(permit);
        });
    }
    Ok(true)
}

/// The webhook loop; runs until `stop` changes.
pub async fn worker(state: Arc<WebhooksState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let cfg = &state.config.webhooks;
    let every = Duration::from_millis(cfg.worker_interval_ms);
    let mut round = tokio::time::interval(every);
    let mut sweep = tokio::time::interval(Duration::from_secs(cfg.sweep_interval_secs));
    for t in [&mut round, &mut sweep] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.endpoints_at_once));
    // Tenants with endpoints stay on the list between sweeps (retries come due later).
    let mut known: HashMap<Uuid, TenantDb> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = sweep.tick() => {
                for (id, db) in crate::audit::seal::all_tenants(&state.tenancy).await {
                    known.entry(id).or_insert(db);
                }
            }
            _ = round.tick() => {}
        }
        for (id, db) in state.audit_recent.tenants(Duration::from_secs(10) + every) {
            known.entry(id).or_insert(db);
        }
        let state_ref = &state;
        let slots_ref = &slots;
        let results: Vec<(Uuid, TenantDb, Result<bool, ApiError>)> =
            futures::stream::iter(known.drain())
                .map(|(id, db)| async move {
                    let r = run_tenant(state_ref, slots_ref, id, &db).await;
                    (id, db, r)
                })
                .buffer_unordered(TENANTS_AT_ONCE)
                .collect()
                .await;
        for (id, db, r) in results {
            match r {
                // No endpoints: off the list until it writes again or the next sweep.
                Ok(false) => {}
                Ok(true) => {
                    known.insert(id, db);
                }
                Err(e) => {
                    tracing::debug!(tenant = %id, error = %e.detail, cause = ?e.source, "webhook round failed");
                    known.insert(id, db);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_has_jitter_and_an_end() {
        let s: Vec<Duration> = [0u64, 5, 300]
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect();
        assert_eq!(next_wait(&s, 0), Some(Duration::ZERO));
        for _ in 0..50 {
            let w = next_wait(&s, 1).unwrap().as_secs_f64();
            assert!((4.5..=5.5).contains(&w), "{w}");
        }
        assert_eq!(next_wait(&s, 3), None);
    }

    #[test]
    fn cuts_on_character_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("abc", 10), "abc");
    }
}
