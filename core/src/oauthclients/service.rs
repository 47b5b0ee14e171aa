//! OAuth client use cases: make (the grant checked as for API keys, the Keycloak client created
//! first and removed again if the record cannot be written), list, rotate the secret, revoke
//! (record, Keycloak, broadcast), and the request path's mapping of a validated token of one of
//! these clients to the caller it acts as. Never runs SQL itself, never touches HTTP, never logs
//! a secret.

use rand::Rng;
use uuid::Uuid;

use super::repo::{self, ClientRow, NewClientRow};
use super::{ClientUsage, NewOAuthClient, OAuthClientSecret, OAuthClientView, revocation_id};
use crate::apikeys::KeyPolicyPatch;
use crate::apikeys::policy::{self, RateCeiling};
use crate::audit::{self, Change};
use crate::auth::keycloak::KeycloakAdmin;
use crate::auth::token::{Principal, TokenError};
use crate::db::{DbError, TenantDb};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::rbac::Caller;
use crate::sessions::Sessions;
use crate::tenancy::cache::ResolvedTenant;

/// The Keycloak realm a tenant's clients live in (its own, or its region's shared one).
fn realm_of(tenant: &ResolvedTenant) -> ApiResult<&str> {
    let identity = &tenant.tenant.identity;
    if identity.mode == crate::tenancy::model::IdentityMode::Local {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "OAuth clients need the tenant's users in Keycloak; this tenant keeps them locally (use API keys)",
        ));
    }
    identity
        .realm
        .as_deref()
        .filter(|_| identity.is_complete())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::IdentityUnavailable,
                "the tenant's identity home is not provisioned",
            )
        })
}

fn idp(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::IdentityUnavailable,
        format!("Keycloak refused or did not answer: {e}"),
    )
}

fn secret() -> String {
    let mut rng = rand::rng();
    (0..48)
        .map(|_| rng.sample(rand::distr::Alphanumeric) as char)
        .collect()
}

fn view(kc: &KeycloakAdmin, realm: &str, r: &ClientRow) -> OAuthClientView {
    let policy = r.stored().policy();
    OAuthClientView {
        id: r.id,
        client_id: r.client_id.clone(),
        name: r.name.clone(),
        scopes: r.scopes.clone(),
        token_endpoint: kc.token_endpoint(realm),
        created_at: r.created_at,
        rotated_at: r.rotated_at,
        api_version: policy.api_version.to_string(),
        rate_limit: policy.rate,
        quota: policy.quota,
    }
}

/// Makes a client acting as the caller within `input.scopes` (each one the caller holds);
/// returns it with its secret.
pub async fn create(
    caller: &Caller,
    kc: &KeycloakAdmin,
    tenant: &ResolvedTenant,
    input: &NewOAuthClient,
    ceiling: RateCeiling,
    max_live: usize,
) -> ApiResult<OAuthClientSecret> {
    let owner = caller.user_id();
    let full = || ApiError::limit_reached("live OAuth clients per user", max_live);
    let mut errors = Vec::new();
    let (name, scopes) =
        crate::apikeys::service::checked_grant(caller, &input.name, &input.scopes, &mut errors)
            .await?;
    let policy = policy::check_new(
        input.api_version.as_deref(),
        input.rate_limit,
        input.quota,
        ceiling,
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    caller.require_delegable(&scopes)?;
    let realm = realm_of(tenant)?;
    // Checked before Keycloak is asked, and again where the row is written.
    let room = caller
        .db()
        .transaction(async |tx| {
            Ok::<_, ApiError>(repo::under_cap(tx.conn(), owner, max_live).await?)
        })
        .await?;
    if !room {
        return Err(full());
    }
    let id = Uuid::now_v7();
    let client_id = format!(
        "{}{}-{}",
        crate::auth::token::MACHINE_CLIENT_PREFIX,
        tenant.tenant.slug,
        &id.simple().to_string()[20..]
    );
    let client_secret = secret();
    let keycloak_id = kc
        .create_service_client(realm, &client_id, name, &client_secret, &tenant.tenant.slug)
        .await
        .map_err(idp)?;
    let written = caller
        .db()
        .transaction(async |tx| {
            if !repo::under_cap(tx.conn(), owner, max_live).await? {
                return Err(full());
            }
            let row = repo::insert(
                tx.conn(),
                NewClientRow {
                    id,
                    client_id: &client_id,
                    keycloak_id: &keycloak_id,
                    name,
                    owner: caller.user_id(),
                    scopes: &input.scopes,
                    policy: policy.stored(),
                },
            )
            .await?;
            audit::record(
                tx.conn(),
                &caller.actor,
                Change {
                    action: "oauth_client.created",
                    target_type: "oauth_client",
                    target_id: Some(id.to_string()),
                    data: serde_json::json!({"name": row.name, "client_id": row.client_id,
                                             "scopes": row.scopes, "policy": policy.json()}),
                },
            )
            .await?;
            Ok::<_, ApiError>(row)
        })
        .await;
    let row = match written {
        Ok(row) => row,
        Err(e) => {
            // No record: no client either.
            if let Err(error) = kc.delete_client(realm, &keycloak_id).await {
                tracing::warn!(%error, client_id, "an unrecorded OAuth client was left in Keycloak");
            }
            return Err(e);
        }
    };
    Ok(OAuthClientSecret {
        client: view(kc, realm, &row),
        client_secret,
    })
}

/// The caller's live clients.
pub async fn list(
    caller: &Caller,
    kc: &KeycloakAdmin,
    tenant: &ResolvedTenant,
) -> ApiResult<Vec<OAuthClientView>> {
    let owner = caller.user_id();
    let rows = caller
        .db()
        .transaction(async |tx| Ok::<_, ApiError>(repo::live_of(tx.conn(), owner).await?))
        .await?;
    let realm = tenant.tenant.identity.realm.as_deref().unwrap_or_default();
    Ok(rows.iter().map(|r| view(kc, realm, r)).collect())
}

/// One of the caller's live clients (404 if none).
async fn live(caller: &Caller, id: Uuid) -> ApiResult<ClientRow> {
    let owner = caller.user_id();
    caller
        .db()
        .transaction(async |tx| Ok::<_, ApiError>(repo::live(tx.conn(), owner, id, false).await?))
        .await?
        .ok_or_else(|| ApiError::not_found("OAuth client"))
}

/// One of the caller's live clients.
pub async fn get(
    caller: &Caller,
    kc: &KeycloakAdmin,
    tenant: &ResolvedTenant,
    id: Uuid,
) -> ApiResult<OAuthClientView> {
    let realm = tenant.tenant.identity.realm.as_deref().unwrap_or_default();
    Ok(view(kc, realm, &live(caller, id).await?))
}

/// A new secret for one of the caller's clients: the old one stops working at once (tokens
/// already issued stay valid until they expire, five minutes at most). Keycloak is called
/// outside any transaction; the rotation is recorded after it took effect.
pub async fn rotate(
    caller: &Caller,
    kc: &KeycloakAdmin,
    tenant: &ResolvedTenant,
    id: Uuid,
) -> ApiResult<OAuthClientSecret> {
    let realm = realm_of(tenant)?;
    let owner = caller.user_id();
    let client_secret = secret();
    let current = live(caller, id).await?;
    kc.set_client_secret(realm, &current.keycloak_id, &client_secret)
        .await
        .map_err(idp)?;
    let row = caller
        .db()
        .transaction(async |tx| {
            // Revoked meanwhile: its Keycloak client is gone or going, and so is the secret.
            let Some(row) = repo::mark_rotated(tx.conn(), owner, id).await? else {
                return Err(ApiError::not_found("OAuth client"));
            };
            audit::record(
                tx.conn(),
                &caller.actor,
                Change {
                    action: "oauth_client.secret_rotated",
                    target_type: "oauth_client",
                    target_id: Some(id.to_string()),
                    data: serde_json::json!({"client_id": row.client_id}),
                },
            )
            .await?;
            Ok(row)
        })
        .await?;
    Ok(OAuthClientSecret {
        client: view(kc, realm, &row),
        client_secret,
    })
}

/// Replaces the policy of one of the caller's live clients (404 if none): each field present
/// in `patch` replaces the client's. Returns the client and whether its quota was set (its
/// credits start again from the quota's).
pub async fn update_policy(
    caller: &Caller,
    kc: &KeycloakAdmin,
    tenant: &ResolvedTenant,
    id: Uuid,
    patch: &KeyPolicyPatch,
    ceiling: RateCeiling,
) -> ApiResult<(OAuthClientView, bool)> {
    let owner = caller.user_id();
    let (row, quota_set) = caller
        .db()
        .transaction(async |tx| {
            let Some(row) = repo::live(tx.conn(), owner, id, true).await? else {
                return Err(ApiError::not_found("OAuth client"));
            };
            let change = policy::merge(&row.stored(), patch, ceiling)?;
            let updated = repo::set_policy(tx.conn(), owner, id, change.policy.stored())
                .await?
                .ok_or_else(|| ApiError::not_found("OAuth client"))?;
            if change.quota_set {
                repo::snapshot_credits(tx.conn(), id, None).await?;
            }
            audit::record(
                tx.conn(),
                &caller.actor,
                Change {
                    action: "oauth_client.policy_changed",
                    target_type: "oauth_client",
                    target_id: Some(id.to_string()),
                    data: change.policy.json(),
                },
            )
            .await?;
            Ok((updated, change.quota_set))
        })
        .await?;
    let realm = tenant.tenant.identity.realm.as_deref().unwrap_or_default();
    Ok((view(kc, realm, &row), quota_set))
}

/// Revokes one of the caller's clients: recorded, removed from Keycloak (no new tokens), and
/// broadcast so every instance refuses the tokens it already has.
pub async fn revoke(
    caller: &Caller,
    kc: &KeycloakAdmin,
    sessions: &Sessions,
    tenant: &ResolvedTenant,
    id: Uuid,
) -> ApiResult<()> {
    let owner = caller.user_id();
    let row = caller
        .db()
        .transaction(async |tx| {
            let Some(row) = repo::live(tx.conn(), owner, id, true).await? else {
                return Err(ApiError::not_found("OAuth client"));
            };
            repo::mark_revoked(tx.conn(), id).await?;
            audit::record(
                tx.conn(),
                &caller.actor,
                Change {
                    action: "oauth_client.revoked",
                    target_type: "oauth_client",
                    target_id: Some(id.to_string()),
                    data: serde_json::json!({"client_id": row.client_id}),
                },
            )
            .await?;
            Ok(row)
        })
        .await?;
    sessions
        .revoke(
            caller.tenant_id(),
            &caller.user.user.subject,
            &[revocation_id(id)],
        )
        .await
        .map_err(|e| ApiError::unavailable("the session store", e))?;
    if let Some(realm) = tenant.tenant.identity.realm.as_deref()
        && let Err(error) = kc.delete_client(realm, &row.keycloak_id).await
    {
        // The record is revoked and its tokens refused; only new tokens could still be issued
        // until the client is removed.
        tracing::warn!(%error, client_id = row.client_id, "a revoked OAuth client is still in Keycloak");
    }
    Ok(())
}

/// The bucket, credits and usage name of a client.
pub fn client_key(id: Uuid) -> String {
    format!("oauth:{}", id.simple())
}

/// One of the caller's clients' use: credits left (when it has a quota) and requests per UTC
/// day over the last `days` (1-90).
pub async fn usage(
    caller: &Caller,
    limiter: &crate::ratelimit::RateLimiter,
    id: Uuid,
    days: u32,
) -> ApiResult<ClientUsage> {
    let stored = live(caller, id).await?.stored();
    let client = client_key(id);
    let tenant = caller.tenant_id();
    Ok(ClientUsage {
        id,
        quota: stored.quota(),
        credits_left: policy::credits_left(limiter, tenant, &client, &stored).await,
        days: crate::apikeys::service::days_of_use(limiter, tenant, &client, days).await?,
    })
}

/// Stores the last known count of a client's credits, so a count Redis lost resumes from it
/// (called off the request path, now and then).
pub async fn snapshot_credits(db: &TenantDb, id: Uuid, left: i64, period: i64) {
    let written = db
        .transaction(async |tx| {
            Ok::<_, DbError>(repo::snapshot_credits(tx.conn(), id, Some((left, period))).await?)
        })
        .await;
    if let Err(error) = written {
        tracing::warn!(%error, "an OAuth client's credits were not snapshotted");
    }
}

/// The caller a validated token of one of this platform's OAuth clients acts as: the client's
/// maker, narrowed to its scopes, with its own rate-limit bucket. A client this tenant does not
/// hold is refused; a revoked one is `session-revoked`.
pub async fn authenticate(db: &TenantDb, token: &Principal) -> Result<Principal, TokenError> {
    let Some(client_id) = token.client.as_deref() else {
        return Err(TokenError::Malformed("no azp claim"));
    };
    let found = db
        .transaction(async |tx| Ok::<_, DbError>(repo::find(tx.conn(), client_id).await?))
        .await
        .map_err(|e| TokenError::KeysUnavailable(e.to_string()))?;
    let Some((row, subject)) = found else {
        return Err(TokenError::Tenant(
            "the token's client is not an OAuth client of this tenant".into(),
        ));
    };
    if row.revoked_at.is_some() {
        return Err(TokenError::SessionRevoked);
    }
    let client_policy = row.stored().client_policy(
        client_key(row.id),
        crate::auth::token::ClientKind::OAuthClient,
        row.id,
    );
    Ok(Principal {
        subject,
        session_id: Some(revocation_id(row.id)),
        username: None,
        email: None,
        name: None,
        roles: Vec::new(),
        expires_at: token.expires_at,
        issued_at: token.issued_at,
        key_scopes: Some(row.scopes),
        client_policy: Some(client_policy),
        client: Some(row.client_id),
    })
}
