//! Account rules: local sign-in, refresh (rotating, single-use), and password-reset mail.
//!
//! No HTTP here: client addresses and rate limits are the handlers'. Redis holds local
//! refresh-token records (by digest, never the token) and the once-a-minute reset guard.

use super::{AccountState, TokenResponse};
use crate::auth::local;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ids::TenantId;
use crate::keys;
use crate::tenancy::cache::ResolvedTenant;
use crate::tenancy::model::{Identity, IdentityMode};

fn store_down(e: redis::RedisError) -> ApiError {
    ApiError::unavailable("the session store", e)
}

fn refused() -> ApiError {
    ApiError::new(
        ErrorCode::RefreshTokenInvalid,
        "the refresh token is invalid, expired or already used",
    )
}

/// The answer to a wrong username or password (the same whichever was wrong).
pub fn invalid_credentials() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidCredentials,
        "the username or password is wrong",
    )
}

/// New tokens for a refresh token: Keycloak's for Keycloak tenants, ours for local ones.
pub async fn refresh(
    state: &AccountState,
    tenant: &ResolvedTenant,
    refresh_token: &str,
) -> ApiResult<TokenResponse> {
    let identity = &tenant.tenant.identity;
    if identity.mode == IdentityMode::Local {
        return local_refresh(state, tenant, refresh_token).await;
    }
    let realm = identity.realm.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::IdentityUnavailable,
            "the tenant has no identity provider yet",
        )
    })?;
    if refresh_token.len() > 16_384 {
        return Err(ApiError::new(
            ErrorCode::RefreshTokenInvalid,
            "the refresh token is too large",
        ));
    }
    let scope = match &tenant.org_alias {
        Some(alias) => format!("openid organization:{alias}"),
        None => "openid".into(),
    };
    let tokens = state
        .keycloak
        .refresh(realm, refresh_token, &scope)
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorCode::IdentityUnavailable,
                "the identity provider is unavailable",
            )
            .with_source(e)
        })?
        .ok_or_else(refused)?;
    serde_json::from_value(tokens).map_err(ApiError::internal)
}

/// Mails a password-reset link (through Keycloak) to the account with this login, if there is
/// one in this tenant; at most one mail per account and minute. Silent about absent accounts.
pub async fn send_reset(
    state: &AccountState,
    tenant_id: TenantId,
    identity: &Identity,
    login: &str,
) -> Result<(), crate::auth::keycloak::IdpError> {
    let (Some(realm), true) = (identity.realm.as_deref(), identity.is_complete()) else {
        return Ok(());
    };
    let Some(user_id) = state.keycloak.find_user(realm, login).await? else {
        return Ok(());
    };
    if let Some(org_id) = identity.org_id.as_deref()
        && identity.mode == IdentityMode::Organization
        && !state.keycloak.is_member(realm, org_id, &user_id).await?
    {
        return Ok(());
    }
    // At most one mail per user and minute, however it is asked for.
    let mut redis = state.redis.clone();
    let first: redis::RedisResult<Option<String>> = redis::cmd("SET")
        .arg(keys::password_reset_throttle(tenant_id, &user_id))
        .arg(1)
        .arg("NX")
        .arg("EX")
        .arg(60)
        .query_async(&mut redis)
        .await;
    if !matches!(first, Ok(Some(_))) {
        return Ok(());
    }
    state.keycloak.send_password_reset(realm, &user_id).await
}

/// Issues an access token and a refresh token for a session of a local user.
async fn issue(
    state: &AccountState,
    tenant: &ResolvedTenant,
    subject: &str,
    sid: &str,
    username: Option<&str>,
    email: Option<&str>,
) -> ApiResult<TokenResponse> {
    let now = chrono::Utc::now().timestamp();
    let claims = local::LocalClaims {
        slug: &tenant.tenant.slug,
        audience: &state.config.auth.audience,
        subject,
        session_id: sid,
        username,
        email,
    };
    let access = local::access_token(&state.local_keys, &claims, now);
    let (refresh_token, digest) = local::new_refresh_token();
    let record =
        serde_json::json!({"subject": subject, "sid": sid, "username": username, "email": email});
    let mut redis = state.redis.clone();
    let _: () = redis::cmd("SET")
        .arg(keys::local_refresh_token(tenant.tenant.id, &digest))
        .arg(record.to_string())
        .arg("EX")
        .arg(local::REFRESH_TTL_SECS)
        .query_async(&mut redis)
        .await
        .map_err(store_down)?;
    Ok(TokenResponse {
        access_token: access,
        refresh_token,
        expires_in: local::ACCESS_TTL_SECS,
        token_type: "Bearer".into(),
    })
}

async fn local_refresh(
    state: &AccountState,
    tenant: &ResolvedTenant,
    token: &str,
) -> ApiResult<TokenResponse> {
    if !token.starts_with("ntr_") || token.len() > 100 {
        return Err(refused());
    }
    let mut redis = state.redis.clone();
    // GETDEL: a refresh token works exactly once.
    let record: Option<String> = redis::cmd("GETDEL")
        .arg(keys::local_refresh_token(
            tenant.tenant.id,
            &local::refresh_digest(token),
        ))
        .query_async(&mut redis)
        .await
        .map_err(store_down)?;
    let record: serde_json::Value = record
        .and_then(|r| serde_json::from_str(&r).ok())
        .ok_or_else(refused)?;
    let (Some(subject), Some(sid)) = (record["subject"].as_str(), record["sid"].as_str()) else {
        return Err(refused());
    };
    if state.sessions.is_revoked(tenant.tenant.id, sid) {
        return Err(refused());
    }
    issue(
        state,
        tenant,
        subject,
        sid,
        record["username"].as_str(),
        record["email"].as_str(),
    )
    .await
}

/// Signs a local user in: tokens for a new session, or [`invalid_credentials`] (whichever of
/// username and password was wrong, after the same work).
pub async fn login(
    state: &AccountState,
    tenant: &ResolvedTenant,
    username: &str,
    password: String,
) -> ApiResult<TokenResponse> {
    if tenant.tenant.identity.mode != IdentityMode::Local {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "this tenant signs in through Keycloak",
        ));
    }
    if username.len() > 64 || password.len() > 256 {
        return Err(invalid_credentials());
    }
    let found = tenant
        .db
        .transaction(async |tx| {
            Ok::<_, ApiError>(crate::users::repo::with_password(tx.conn(), username).await?)
        })
        .await?;
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), hash),
        None => (None, None),
    };
    let ok =
        tokio::task::spawn_blocking(move || local::verify_password(&password, hash.as_deref()))
            .await
            .map_err(ApiError::internal)?;
    let Some(user) = user.filter(|_| ok) else {
        return Err(invalid_credentials());
    };
    let sid = uuid::Uuid::now_v7().simple().to_string();
    issue(
        state,
        tenant,
        &user.subject,
        &sid,
        user.username.as_deref(),
        user.email.as_deref(),
    )
    .await
}
