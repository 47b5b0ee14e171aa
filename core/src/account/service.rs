//! Account rules: local sign-in, refresh (rotating, single-use), and password reset (Keycloak's
//! mail, or for local-mode tenants a single-use token of ours, mailed and then confirmed).
//!
//! No HTTP here: client addresses and rate limits are the handlers'. Redis holds local
//! refresh-token records (by digest, never the token) and the once-a-minute reset guard.
//! Reset tokens live in the tenant's database (`password_resets`), not in Redis: using one
//! changes the password hash, marks the token used and writes the audit entry in one
//! PostgreSQL transaction, so a token is spent exactly when the new password commits; and the
//! row lives and goes with its user and tenant.

use chrono::{Duration, Utc};

use super::reset::{self, ResetMail};
use super::{AccountState, TokenResponse, repo};
use crate::audit::{self, Actor, Change};
use crate::auth::local;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::keys;
use crate::tenancy::cache::ResolvedTenant;
use crate::tenancy::model::IdentityMode;

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

/// Whether this is the first reset mail to `account` this minute (and from now on, it is).
/// A guard that cannot be checked counts as spent: no mail rather than a flood.
async fn first_reset_this_minute(
    state: &AccountState,
    tenant: &ResolvedTenant,
    account: &str,
) -> bool {
    let mut redis = state.redis.clone();
    let first: redis::RedisResult<Option<String>> = redis::cmd("SET")
        .arg(keys::password_reset_throttle(tenant.tenant.id, account))
        .arg(1)
        .arg("NX")
        .arg("EX")
        .arg(60)
        .query_async(&mut redis)
        .await;
    matches!(first, Ok(Some(_)))
}

/// Mails a password reset to the account with this login (username or email, lowercased), if
/// there is one in this tenant: Keycloak's link for Keycloak tenants, our own token for
/// local-mode ones. At most one mail per account and minute. Silent about absent accounts;
/// runs after the request was answered, so its errors are only logged. `actor` is the
/// anonymous requester (address, user agent, request id), for the audit entry.
pub async fn send_reset(
    state: &AccountState,
    tenant: &ResolvedTenant,
    actor: &Actor,
    login: &str,
) -> ApiResult<()> {
    if tenant.tenant.identity.mode == IdentityMode::Local {
        return send_local_reset(state, tenant, actor, login).await;
    }
    send_keycloak_reset(state, tenant, login)
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorCode::IdentityUnavailable,
                "the identity provider is unavailable",
            )
            .with_source(e)
        })
}

async fn send_keycloak_reset(
    state: &AccountState,
    tenant: &ResolvedTenant,
    login: &str,
) -> Result<(), crate::auth::keycloak::IdpError> {
    let identity = &tenant.tenant.identity;
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
    if !first_reset_this_minute(state, tenant, &user_id).await {
        return Ok(());
    }
    state.keycloak.send_password_reset(realm, &user_id).await
}

/// A local user's reset: a new token replaces any earlier one, its digest is stored with an
/// expiry (`account.password_reset_ttl_secs`), and the token goes out in the mail only.
async fn send_local_reset(
    state: &AccountState,
    tenant: &ResolvedTenant,
    actor: &Actor,
    login: &str,
) -> ApiResult<()> {
    let found = tenant
        .db
        .transaction(async |tx| {
            Ok::<_, ApiError>(crate::users::repo::local_by_login(tx.conn(), login).await?)
        })
        .await?;
    let Some((user, email)) = found.and_then(|u| u.email.clone().map(|e| (u, e))) else {
        return Ok(());
    };
    if !first_reset_this_minute(state, tenant, &user.subject).await {
        return Ok(());
    }
    let config = &state.config.account;
    let token = reset::new_token();
    let now = Utc::now();
    let expires_at = now + Duration::seconds(config.password_reset_ttl_secs as i64);
    tenant
        .db
        .transaction(async |tx| {
            repo::replace(tx.conn(), user.id, &token.digest, now, expires_at).await?;
            audit::record(
                tx.conn(),
                actor,
                Change {
                    action: "user.password_reset_requested",
                    target_type: "user",
                    target_id: Some(user.id.to_string()),
                    data: serde_json::json!({"expires_at": expires_at}),
                },
            )
            .await?;
            Ok::<_, ApiError>(())
        })
        .await?;
    let link = reset::link(
        &config.password_reset_url,
        &tenant.tenant.slug,
        &token.token,
    );
    let mail = reset::mail(&ResetMail {
        to: &email,
        username: user.username.as_deref().unwrap_or(&email),
        tenant: &tenant.tenant.display_name,
        link: &link,
        token: &token.token,
        valid_minutes: config.password_reset_ttl_secs.div_ceil(60),
    });
    state
        .mailer
        .send(&mail)
        .await
        .map_err(|e| ApiError::unavailable("the mail relay", e))
}

/// The answer to every token that does not work, whatever the reason.
pub fn reset_refused() -> ApiError {
    ApiError::new(
        ErrorCode::ResetTokenInvalid,
        "the password-reset token is invalid, expired or already used",
    )
}

/// Sets a local user's new password with a reset token from the mail. In one transaction: the
/// token is found by its digest and row-locked, checked (unused, unexpired, its user active),
/// the new argon2id hash is written, the token is marked used, the audit entry is written, and
/// every session of the user is ended. Any token that does not work is [`reset_refused`].
/// `actor` is the requester; the entry names the user as the actor, since holding the token
/// proves control of the account's mailbox.
pub async fn confirm_reset(
    state: &AccountState,
    tenant: &ResolvedTenant,
    actor: Actor,
    token: &str,
    password: String,
) -> ApiResult<()> {
    if tenant.tenant.identity.mode != IdentityMode::Local {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "this tenant resets passwords through Keycloak",
        ));
    }
    if let Err(message) = local::check_password_rule(&password) {
        return Err(ApiError::validation(vec![FieldError {
            pointer: "/password".into(),
            message: message.into(),
        }]));
    }
    let digest = reset::digest_of(token).ok_or_else(reset_refused)?;
    let now = Utc::now();
    tenant
        .db
        .transaction(async |tx| {
            let Some((user_id, stored)) = repo::lock(tx.conn(), &digest).await? else {
                return Err(reset_refused());
            };
            stored.check(now).map_err(|_| reset_refused())?;
            let user = crate::users::repo::get(tx.conn(), user_id)
                .await?
                .filter(|u| u.status == "active")
                .ok_or_else(reset_refused)?;
            // Hashed only for a token that works, so bad tokens cost no argon2 work; the row
            // stays locked meanwhile.
            let hash = tokio::task::spawn_blocking(move || local::hash_password(&password))
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?;
            if !crate::users::repo::set_password(tx.conn(), user.id, &hash).await? {
                return Err(reset_refused());
            }
            repo::mark_used(tx.conn(), user.id, now).await?;
            let sessions = end_sessions(state, tenant, &user.subject).await?;
            audit::record(
                tx.conn(),
                &Actor {
                    kind: "user",
                    id: Some(user.id.to_string()),
                    ..actor
                },
                Change {
                    action: "user.password_reset",
                    target_type: "user",
                    target_id: Some(user.id.to_string()),
                    data: serde_json::json!({"sessions_ended": sessions}),
                },
            )
            .await?;
            Ok(())
        })
        .await
}

/// Ends every session of `subject` (their refresh tokens die with them); how many. Runs inside
/// the reset's transaction, before the commit: if it fails nothing is committed and the token
/// still works; if the commit fails after it, the sessions are gone and the password is
/// unchanged, which is harmless.
async fn end_sessions(
    state: &AccountState,
    tenant: &ResolvedTenant,
    subject: &str,
) -> ApiResult<usize> {
    let tenant_id = tenant.tenant.id;
    let sids: Vec<String> = state
        .sessions
        .list(tenant_id, subject)
        .await
        .map_err(store_down)?
        .into_iter()
        .map(|s| s.id)
        .collect();
    state
        .sessions
        .revoke(tenant_id, subject, &sids)
        .await
        .map_err(store_down)?;
    Ok(sids.len())
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
    state
        .sessions
        .register(tenant.tenant.id, &user.subject, &sid)
        .await
        .map_err(store_down)?;
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
