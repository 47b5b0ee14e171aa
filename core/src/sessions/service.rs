//! Ending sessions: one, or all of a user's, in the registry (which broadcasts the
//! revocation) and in Keycloak, with an audit entry naming who did it.
//!
//! Rules only: the registry's Redis commands live in `sessions` (mod.rs); no HTTP here.
//! Keycloak being down never undoes a revocation made here.

use super::{SessionView, SessionsState};
use crate::audit::{self, Actor, Change};
use crate::error::{ApiError, ApiResult};
use crate::tenancy::cache::ResolvedTenant;
use crate::users::User;

fn store_down(e: redis::RedisError) -> ApiError {
    ApiError::unavailable("the session store", e)
}

/// Ends sessions in Keycloak too; our own revocation already holds if Keycloak is down.
async fn end_in_keycloak(state: &SessionsState, tenant: &ResolvedTenant, sids: &[String]) {
    let Some(realm) = tenant.tenant.identity.realm.as_deref() else {
        return;
    };
    for sid in sids {
        if let Err(error) = state.keycloak.delete_session(realm, sid).await {
            tracing::warn!(%error, "ending a session in Keycloak failed; it stays revoked here");
        }
    }
}

/// Whether a registered id is a machine credential's (an API key's, an OAuth client's: see
/// `apikeys::revocation_id`, `oauthclients::revocation_id`) rather than a sign-in session.
/// Those are listed and revoked at `/v1/api-keys` and `/v1/oauth-clients`, never as sessions:
/// ending sessions must not revoke a key behind its record's back.
fn is_machine(sid: &str) -> bool {
    sid.starts_with("apikey:") || sid.starts_with("oauthclient:")
}

/// A user's sessions, most recently active first; `current` is flagged.
pub async fn list(
    state: &SessionsState,
    tenant: &ResolvedTenant,
    subject: &str,
    current: Option<&str>,
) -> ApiResult<Vec<SessionView>> {
    let mut sessions = state
        .sessions
        .list(tenant.tenant.id, subject)
        .await
        .map_err(store_down)?;
    sessions.retain(|s| !is_machine(&s.id));
    for s in &mut sessions {
        s.current = Some(s.id.as_str()) == current;
    }
    Ok(sessions)
}

/// Ends one session of `subject`, everywhere; 404 unless it is theirs.
pub async fn revoke_one(
    state: &SessionsState,
    tenant: &ResolvedTenant,
    actor: &Actor,
    subject: &str,
    sid: String,
) -> ApiResult<()> {
    let tenant_id = tenant.tenant.id;
    if sid.len() > 128
        || is_machine(&sid)
        || !state
            .sessions
            .owns(tenant_id, subject, &sid)
            .await
            .map_err(store_down)?
    {
        return Err(ApiError::not_found("session"));
    }
    let sids = vec![sid];
    state
        .sessions
        .revoke(tenant_id, subject, &sids)
        .await
        .map_err(store_down)?;
    end_in_keycloak(state, tenant, &sids).await;
    audit::record_alone(
        &tenant.db,
        actor,
        Change {
            action: "session.revoked",
            target_type: "session",
            target_id: Some(sids[0].clone()),
            data: serde_json::json!({}),
        },
    )
    .await
}

/// Ends every session of `user` (plus `current`, if the registry missed it), here and in
/// Keycloak, and records who did it.
pub async fn revoke_all(
    state: &SessionsState,
    tenant: &ResolvedTenant,
    actor: &Actor,
    user: &User,
    current: Option<&str>,
) -> ApiResult<()> {
    let subject = user.subject.as_str();
    let tenant_id = tenant.tenant.id;
    let mut sids: Vec<String> = state
        .sessions
        .list(tenant_id, subject)
        .await
        .map_err(store_down)?
        .into_iter()
        .map(|s| s.id)
        .filter(|id| !is_machine(id))
        .collect();
    if let Some(current) = current
        && !is_machine(current)
        && !sids.iter().any(|s| s == current)
    {
        sids.push(current.to_string());
    }
    state
        .sessions
        .revoke(tenant_id, subject, &sids)
        .await
        .map_err(store_down)?;
    if let Some(realm) = tenant.tenant.identity.realm.as_deref()
        && let Err(error) = state.keycloak.logout_user(realm, subject).await
    {
        tracing::warn!(%error, "ending a user's sessions in Keycloak failed; they stay revoked here");
    }
    audit::record_alone(
        &tenant.db,
        actor,
        Change {
            action: "sessions.revoked_all",
            target_type: "user",
            target_id: Some(user.id.to_string()),
            data: serde_json::json!({}),
        },
    )
    .await
}
