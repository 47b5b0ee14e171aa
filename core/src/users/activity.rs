//! Activity: when each user was last seen, and what they did lately.
//!
//! Last seen is noted in memory on every authenticated request ([`Seen::note`], a map write)
//! and written by [`flush_loop`] in one statement per tenant every `users.seen_flush_secs`,
//! so a busy user costs no database write per request; a crash or a failed write loses at most
//! one interval of last-seen times, never anything else. The activity view joins that with the user's
//! sessions (Redis) and their latest audit entries. Never writes the audit log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::Serialize;

use super::UsersState;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ids::{TenantId, UserId};
use crate::sessions::SessionView;
use crate::tenancy::cache::ResolvedTenant;

/// Users seen since the last flush: per tenant, its database and each user's latest time.
type Pending = HashMap<TenantId, (TenantDb, HashMap<UserId, DateTime<Utc>>)>;

/// Last-seen times noted by this instance and not yet written.
#[derive(Default)]
pub struct Seen {
    pending: Mutex<Pending>,
}

impl Seen {
    /// Notes that `user` of `tenant` made a request now (memory only).
    pub fn note(&self, tenant: TenantId, db: &TenantDb, user: UserId) {
        let mut pending = self.pending.lock().expect("seen lock");
        pending
            .entry(tenant)
            .or_insert_with(|| (db.clone(), HashMap::new()))
            .1
            .insert(user, Utc::now());
    }

    /// Writes everything noted so far: one statement per tenant. Times that cannot be written
    /// (the tenant's database is down, or the tenant is gone) are dropped: last-seen is
    /// best-effort, and the next request notes a newer time anyway.
    pub async fn flush(&self) -> usize {
        let taken = std::mem::take(&mut *self.pending.lock().expect("seen lock"));
        let mut written = 0;
        for (tenant, (db, users)) in taken {
            let (ids, times): (Vec<_>, Vec<_>) = users.iter().map(|(u, t)| (u.0, *t)).unzip();
            let result = db
                .transaction(async |tx| {
                    Ok::<_, ApiError>(super::repo::set_last_seen(tx.conn(), &ids, &times).await?)
                })
                .await;
            match result {
                Ok(n) => written += n,
                Err(e) => {
                    tracing::debug!(tenant = %tenant, error = %e.detail, cause = ?e.source, "writing last-seen times failed; dropped");
                }
            }
        }
        written
    }
}

/// Writes noted last-seen times every `every` until `stop` changes, and once more then.
pub async fn flush_loop(
    seen: Arc<Seen>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => {
                seen.flush().await;
                return;
            }
            _ = tick.tick() => {
                seen.flush().await;
            }
        }
    }
}

/// One thing the user did, from the audit log.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.users.RecentAction"))]
pub struct RecentAction {
    pub at: DateTime<Utc>,
    pub action: String,
    pub target_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
}

/// A user's activity.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.users.Activity"))]
pub struct Activity {
    pub user_id: UserId,
    /// The latest request seen (written at most `users.seen_flush_secs` late).
    pub last_seen_at: DateTime<Utc>,
    /// Their open sessions, newest first.
    pub sessions: Vec<SessionView>,
    /// Changes they made in the last 30 days, by action.
    pub actions_30d: HashMap<String, i64>,
    /// Their latest changes (up to 20), newest first; absent for callers who may not read the
    /// audit log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent: Option<Vec<RecentAction>>,
}

/// The activity of `id`; `with_log` includes their latest audit entries.
pub async fn activity(
    state: &UsersState,
    tenant: &ResolvedTenant,
    id: UserId,
    with_log: bool,
) -> ApiResult<Activity> {
    let user = super::service::by_id(&tenant.db, id).await?;
    let named = id.to_string();
    let since = Utc::now() - chrono::Duration::days(30);
    let (counts, recent) = tenant
        .db
        .read(async |conn| {
            let counts = super::repo::actions_since(conn, &named, since).await?;
            let recent = if with_log {
                Some(super::repo::recent_actions(conn, &named, 20).await?)
            } else {
                None
            };
            Ok::<_, ApiError>((counts, recent))
        })
        .await?;
    let sessions = state
        .sessions
        .list(tenant.tenant.id, &user.subject)
        .await
        .map_err(|e| {
            ApiError::new(ErrorCode::Unavailable, "sessions are unavailable").with_source(e)
        })?;
    Ok(Activity {
        user_id: id,
        last_seen_at: user.last_seen_at,
        sessions,
        actions_30d: counts.into_iter().collect(),
        recent: recent.map(|rows| {
            rows.into_iter()
                .map(|(at, action, target_type, target_id)| RecentAction {
                    at,
                    action,
                    target_type,
                    target_id,
                })
                .collect()
        }),
    })
}
