//! The audit log: one entry per change, written by the changing module inside its own
//! transaction, so an entry exists exactly when its change committed; then chained, signed,
//! searched, exported, streamed and forwarded.
//!
//! Shape: [`record`] is the one write call (any module); `chain` is the pure hash chain,
//! signatures and verifier; `seal` numbers and chains new entries behind the writes, signs
//! checkpoints, verifies and prunes; `search` filters and exports; `forward` ships entries to
//! a tenant's syslog collector; `handlers` is `/v1/audit`. **Invariants:** an entry is never
//! written outside its change's transaction and never updated except by the sealer setting its
//! `seq`/`hash` once; a new entry waits at most one sealing round (`audit.seal_interval_ms`,
//! or `audit.sweep_interval_secs` if the instance that wrote it died) before it is chained and
//! covered by a signed checkpoint; the signing key never enters a tenant database; reading the
//! log is itself audited. Callers never put secrets into `data`.

pub mod chain;
pub mod forward;
pub mod handlers;
pub mod seal;
pub mod search;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use salvo::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use crate::app::AppState;
use crate::db::TenantDb;
use crate::schema::tenant::audit_log;

/// Who performed an action, and from where; and in which tenant (so the sealer hears of it).
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// `user`, `api_key`, `system` or `platform`.
    pub kind: &'static str,
    pub id: Option<String>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The tenant whose log is written: its id and database.
    pub tenant: Option<(Uuid, TenantDb)>,
    /// This instance's record of recently written tenants (the sealer visits them first).
    pub recent: Option<Arc<Recent>>,
}

impl Actor {
    /// The platform itself (background jobs, provisioning) in `tenant`.
    pub fn system(state: &AppState, tenant: Uuid, db: &TenantDb) -> Self {
        Actor {
            kind: "system",
            tenant: Some((tenant, db.clone())),
            recent: Some(state.audit_recent.clone()),
            ..Default::default()
        }
    }

    /// The platform operator (admin API) in `tenant`.
    pub fn platform(state: &AppState, tenant: Uuid, db: &TenantDb) -> Self {
        Actor {
            kind: "platform",
            tenant: Some((tenant, db.clone())),
            recent: Some(state.audit_recent.clone()),
            ..Default::default()
        }
    }

    /// The caller of a tenant request, from the request context.
    pub fn from_request(req: &Request, depot: &Depot, id: String, api_key: bool) -> Self {
        let state = depot.get_typed::<Arc<AppState>>().ok();
        let trust = state.is_some_and(|s| s.config.rate_limit.trust_forwarded_for);
        Actor {
            kind: if api_key { "api_key" } else { "user" },
            id: Some(id),
            request_id: depot
                .get_typed::<crate::http::middleware::RequestId>()
                .ok()
                .map(|r| r.0.clone()),
            ip: Some(crate::auth::client_ip(req, trust).to_string()),
            user_agent: req
                .headers()
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(300).collect()),
            tenant: depot
                .get_typed::<crate::tenancy::resolve::CurrentTenant>()
                .ok()
                .map(|t| (t.0.tenant.id.0, t.0.db.clone())),
            recent: state.map(|s| s.audit_recent.clone()),
        }
    }
}

/// One change: `action` (e.g. `role.created`) on `target_type`/`target_id`, with `data`
/// (before/after or the fields that changed).
pub struct Change<'a> {
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: Option<String>,
    pub data: Value,
}

/// Tenants one instance wrote entries for recently: its sealer visits them every round. Part
/// of `AppState` (never process-global: a database handle belongs to its instance).
#[derive(Debug, Default)]
pub struct Recent(Mutex<HashMap<Uuid, (Instant, TenantDb)>>);

impl Recent {
    fn mark(&self, id: Uuid, db: &TenantDb) {
        let mut recent = self.0.lock().expect("audit recent lock");
        match recent.get_mut(&id) {
            Some(entry) => entry.0 = Instant::now(),
            None => {
                recent.insert(id, (Instant::now(), db.clone()));
            }
        }
    }

    /// Stops visiting `tenant` until it is written to again (it was deleted, or sealing
    /// failed and the periodic sweep will retry it).
    pub fn forget(&self, tenant: Uuid) {
        self.0.lock().expect("audit recent lock").remove(&tenant);
    }

    /// The tenants written to within `window` (entries older than an hour are forgotten).
    pub fn tenants(&self, window: std::time::Duration) -> Vec<(Uuid, TenantDb)> {
        let mut recent = self.0.lock().expect("audit recent lock");
        recent.retain(|_, (at, _)| at.elapsed() < std::time::Duration::from_secs(3600));
        recent
            .iter()
            .filter(|(_, (at, _))| at.elapsed() < window)
            .map(|(id, (_, db))| (*id, db.clone()))
            .collect()
    }
}

/// The time encoded in a UUIDv7 (the entry's time, so the id orders entries by time).
pub fn time_of(id: Uuid) -> DateTime<Utc> {
    id.get_timestamp()
        .and_then(|ts| {
            let (secs, nanos) = ts.to_unix();
            DateTime::from_timestamp(secs as i64, nanos)
        })
        .unwrap_or_else(Utc::now)
}

/// Records `change` by `actor` on the caller's connection, which must be inside the tenant
/// transaction that makes the change.
pub async fn record(
    conn: &mut AsyncPgConnection,
    actor: &Actor,
    change: Change<'_>,
) -> QueryResult<()> {
    let id = Uuid::now_v7();
    // Microsecond precision, as the database keeps it.
    let at = time_of(id);
    let at = DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at);
    diesel::insert_into(audit_log::table)
        .values((
            audit_log::id.eq(id),
            audit_log::at.eq(at),
            audit_log::actor_type.eq(actor.kind),
            audit_log::actor_id.eq(&actor.id),
            audit_log::action.eq(change.action),
            audit_log::target_type.eq(change.target_type),
            audit_log::target_id.eq(change.target_id),
            audit_log::data.eq(change.data),
            audit_log::request_id.eq(&actor.request_id),
            audit_log::ip.eq(&actor.ip),
            audit_log::user_agent.eq(&actor.user_agent),
        ))
        .execute(conn)
        .await?;
    if let (Some((id, db)), Some(recent)) = (&actor.tenant, &actor.recent) {
        recent.mark(*id, db);
    }
    Ok(())
}

/// Records `change` in a transaction of its own: for actions whose effect lives outside
/// PostgreSQL (sessions in Redis, reads of the log itself).
pub async fn record_alone(
    db: &TenantDb,
    actor: &Actor,
    change: Change<'_>,
) -> Result<(), crate::error::ApiError> {
    let mut tx = db.begin().await?;
    let r = record(tx.conn(), actor, change).await;
    tx.finish(r).await?;
    Ok(())
}
