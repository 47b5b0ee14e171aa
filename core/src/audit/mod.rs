//! The audit log: one entry per change, written by the changing module inside its own
//! transaction, so an entry exists exactly when its change committed.
//!
//! Owns the entry format and the one write call ([`record`]). Callers describe who acted
//! ([`Actor`], taken from the request by [`Actor::from_request`]) and what changed; this module
//! must never be written to outside the caller's transaction, and never stores secrets (callers
//! pass redacted data).

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use salvo::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use crate::schema::tenant::audit_log;

/// Who performed an action, and from where.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// `user`, `api_key`, `system` or `platform`.
    pub kind: &'static str,
    pub id: Option<String>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Actor {
    /// The platform itself (background jobs, provisioning).
    pub fn system() -> Self {
        Actor {
            kind: "system",
            ..Default::default()
        }
    }

    /// The caller of a tenant request, from the request context.
    pub fn from_request(req: &Request, depot: &Depot, id: String, api_key: bool) -> Self {
        let trust = depot
            .get_typed::<std::sync::Arc<crate::app::AppState>>()
            .is_ok_and(|s| s.config.rate_limit.trust_forwarded_for);
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

/// Records `change` by `actor` on the caller's connection, which must be inside the tenant
/// transaction that makes the change.
pub async fn record(
    conn: &mut AsyncPgConnection,
    actor: &Actor,
    change: Change<'_>,
) -> QueryResult<()> {
    diesel::insert_into(audit_log::table)
        .values((
            audit_log::id.eq(Uuid::now_v7()),
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
    Ok(())
}
