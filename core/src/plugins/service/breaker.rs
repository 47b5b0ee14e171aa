//! What a failing plugin call leaves behind: a failure record (in a transaction of its own,
//! as the request's may roll back), and a count toward the installation's circuit breaker,
//! which disables the installation when it trips (audited as the system).

use serde_json::json;
use uuid::Uuid;

use super::breaker_key;
use super::installs::record;
use crate::audit::Actor;
use crate::db::TenantDb;
use crate::error::{ApiError, found};
use crate::plugins::PluginsState;
use crate::plugins::repo;

/// Records a failed call in its own transaction (the request's may roll back).
pub async fn record_failure(
    db: &TenantDb,
    name: &str,
    hook: &str,
    code: &str,
    message: &str,
    subject: Option<&str>,
    fail_open: bool,
) {
    let r = db
        .transaction(async |tx| {
            let conn = tx.conn();
            repo::insert_failure(conn, name, hook, code, message, subject, fail_open).await?;
            Ok::<_, ApiError>(())
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(plugin = %name, error = %e, "cannot record a plugin failure");
    }
}

/// Counts a failed call; when the breaker trips, disables the installation (its own
/// transaction, audited as the system) and says so in the log.
pub async fn count_failure(
    state: &PluginsState,
    tenant: Uuid,
    db: &TenantDb,
    name: &str,
    hash: &str,
    last: &str,
) {
    if !state
        .plugins
        .breaker
        .failure(&breaker_key(tenant, name, hash))
    {
        return;
    }
    let reason = format!(
        "circuit breaker: {} consecutive failures (last: {last})",
        state.config.plugins.breaker_threshold
    );
    let r = db
        .transaction(async |tx| {
            let conn = tx.conn();
            if !repo::disable(conn, name, &reason).await? {
                return Ok(false);
            }
            let row = found(
                repo::install(conn, name, false).await?,
                "plugin installation",
            )?;
            let actor = Actor::system(&state.audit_recent, crate::ids::TenantId(tenant), db);
            record(
                conn,
                &actor,
                "plugin.disabled",
                &row,
                json!({"reason": reason}),
            )
            .await?;
            Ok::<_, ApiError>(true)
        })
        .await;
    match r {
        Ok(true) => tracing::warn!(%tenant, plugin = %name, %reason, "plugin disabled"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(%tenant, plugin = %name, error = %e, "cannot disable a failing plugin")
        }
    }
}
