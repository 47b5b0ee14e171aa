//! The audit log: one entry per change, written by the changing module inside its own
//! transaction, so an entry exists exactly when its change committed; then chained, signed,
//! searched, exported, streamed, forwarded, and pseudonymised for an erasure.
//!
//! Shape: [`record`] is the one write call (any module); `chain` is the pure hash chain,
//! signatures and verifier; `seal` numbers and chains new entries behind the writes, signs
//! checkpoints, verifies and prunes; `search` filters and exports; `forward` ships entries to
//! a tenant's syslog collector; `redact` pseudonymises a person for an erasure; `handlers` is
//! `/v1/audit`. **Invariants:** an entry is never written outside its change's transaction and
//! never updated except by the sealer setting its `seq`/`hash` once, or by `redact` under a
//! signed redaction record; a new entry waits at most one sealing round
//! (`audit.seal_interval_ms`, or `audit.sweep_interval_secs` if the instance that wrote it
//! died) before it is chained and covered by a signed checkpoint; the signing key never enters
//! a tenant database; reading the log is itself audited. Callers never put secrets into `data`.

pub mod chain;
pub mod forward;
pub mod handlers;
pub mod recent;
pub mod redact;
pub mod repo;
pub mod seal;
pub mod search;
pub mod settings;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use crate::db::TenantDb;
use crate::ids::TenantId;
use crate::schema::tenant::audit_log;
pub use recent::Recent;

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
    pub fn system(recent: &Arc<Recent>, tenant: TenantId, db: &TenantDb) -> Self {
        Actor {
            kind: "system",
            tenant: Some((tenant.0, db.clone())),
            recent: Some(recent.clone()),
            ..Default::default()
        }
    }

    /// The platform operator (admin API) in `tenant`.
    pub fn platform(recent: &Arc<Recent>, tenant: TenantId, db: &TenantDb) -> Self {
        Actor {
            kind: "platform",
            tenant: Some((tenant.0, db.clone())),
            recent: Some(recent.clone()),
            ..Default::default()
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
    mut conn: &AsyncPgConnection,
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
        .execute(&mut conn)
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
    db.transaction(async |tx| {
        record(tx.conn(), actor, change).await?;
        Ok::<_, crate::error::ApiError>(())
    })
    .await
}

/// Applies a change and records it in one tenant transaction: `apply` runs first, and its
/// error (a refusal) rolls everything back.
pub async fn record_with(
    db: &TenantDb,
    actor: &Actor,
    change: Change<'_>,
    apply: impl AsyncFnOnce(&AsyncPgConnection) -> Result<(), crate::error::ApiError>,
) -> Result<(), crate::error::ApiError> {
    db.transaction(async |tx| {
        let conn = tx.conn();
        apply(conn).await?;
        record(conn, actor, change).await?;
        Ok::<_, crate::error::ApiError>(())
    })
    .await
}

/// What the audit log's sealer and endpoints use, built once by `app`.
pub struct AuditState {
    pub config: Arc<crate::config::Config>,
    /// The platform registry (checkpoint signatures are kept there).
    pub registry: crate::db::PgPool,
    /// Tenants whose audit log this instance wrote recently.
    pub audit_recent: Arc<Recent>,
    /// Where every tenant's database is (the sealer's catch-up rounds).
    pub tenancy: Arc<crate::tenancy::TenancyState>,
}
