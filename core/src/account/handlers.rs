//! `/v1/auth/{login,refresh,password-reset,password-reset/confirm}` and
//! `/.well-known/jwks.json`: the routes a caller uses before it holds an access token. HTTP
//! only (client address, rate limits, audit actor, answers); the rules are `account::service`.

use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::{
    Accepted, AccountState, LoginRequest, PasswordResetConfirmRequest, PasswordResetRequest,
    RefreshRequest, TokenResponse, service,
};
use crate::audit::Actor;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::http::extract::{JsonBody, dep};
use crate::http::reply::{NoContent, Reply};
use crate::ids::RequestId;
use crate::ratelimit::{Attempt, Decision, fingerprint};
use crate::tenancy::resolve::CurrentTenant;

/// Spends from the client address's bucket; a limited or locked-out address is refused, and
/// so is a locked-out `attempt` (the credential or account it names, at this address).
pub async fn admit(
    state: &AccountState,
    req: &Request,
    attempt: Option<Attempt<'_>>,
) -> ApiResult<std::net::IpAddr> {
    let ip = crate::auth::hoops::client_ip(req, state.limiter.config().trust_forwarded_for);
    let decision = match attempt {
        Some(a) => state.limiter.check_attempt(ip, a).await,
        None => state.limiter.check(ip, None).await,
    };
    match decision {
        Decision::Locked { retry_after_secs } => Err(ApiError::new(
            ErrorCode::AuthLocked,
            format!("retry in {retry_after_secs} s"),
        )),
        Decision::Limited {
            retry_after_secs, ..
        } => Err(ApiError::new(
            ErrorCode::RateLimited,
            format!("retry in {retry_after_secs} s"),
        )),
        Decision::Allowed { .. } => Ok(ip),
    }
}

/// The audit actor of an anonymous request: a `system` actor with the client's address, user
/// agent and request id (the service names the user once a reset token proves who it is).
pub fn anonymous_actor(
    state: &AccountState,
    req: &Request,
    depot: &Depot,
    tenant: &CurrentTenant,
    ip: std::net::IpAddr,
) -> Actor {
    Actor {
        request_id: depot.get_typed::<RequestId>().ok().map(|r| r.0.clone()),
        ip: Some(ip.to_string()),
        user_agent: req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(300).collect()),
        ..Actor::system(&state.audit_recent, tenant.0.tenant.id, &tenant.0.db)
    }
}

/// Exchange a refresh token for new tokens (the refresh token rotates: the old one is
/// refused from then on).
#[endpoint(
    operation_id = "neotenant.sessions.handlers.refresh",
    tags("sessions"),
    status_codes(200, 400, 401, 422, 429, 503)
)]
pub async fn refresh(
    req: &mut Request,
    tenant: CurrentTenant,
    body: JsonBody<RefreshRequest>,
    depot: &mut Depot,
) -> ApiResult<Reply<TokenResponse>> {
    let state = dep::<AccountState>(depot)?;
    // A refresh token is a credential: its failures count towards the lockouts.
    let who = fingerprint(&[b"refresh", body.0.refresh_token.as_bytes()]);
    let attempt = Attempt::Credential(&who);
    let ip = admit(&state, req, Some(attempt)).await?;
    match service::refresh(&state, &tenant.0, &body.0.refresh_token).await {
        Err(e) if e.code == ErrorCode::RefreshTokenInvalid => {
            state.limiter.record_failure(ip, attempt).await;
            Err(e)
        }
        other => Ok(Reply::ok(other?)),
    }
}

/// Mail a password reset to the tenant user with this username or email: Keycloak's link for
/// Keycloak tenants; for local-mode tenants a single-use token (valid
/// `account.password_reset_ttl_secs`) to send to `/v1/auth/password-reset/confirm`. Always 202
/// with the same body, whether or not such a user exists; one mail per user per minute.
#[endpoint(
    operation_id = "neotenant.sessions.handlers.password_reset",
    tags("sessions"),
    status_codes(202, 400, 422, 429)
)]
pub async fn password_reset(
    req: &mut Request,
    tenant: CurrentTenant,
    body: JsonBody<PasswordResetRequest>,
    depot: &mut Depot,
) -> ApiResult<Reply<Accepted>> {
    let state = dep::<AccountState>(depot)?;
    let login = body.0.login.trim().to_lowercase();
    if login.is_empty() || login.len() > 254 || login.chars().any(char::is_control) {
        return Err(ApiError::validation(vec![FieldError {
            pointer: "/login".into(),
            message: "must be 1-254 characters, without control characters".into(),
        }]));
    }
    let ip = match admit(&state, req, None).await {
        Ok(ip) => ip,
        // The reset route answers a lockout as a plain rate limit.
        Err(e) => return Err(ApiError::new(ErrorCode::RateLimited, e.detail)),
    };
    let actor = anonymous_actor(&state, req, depot, &tenant, ip);
    // The lookup and the mail happen after the answer, so neither its content nor its
    // timing tells whether the account exists.
    let tenant = tenant.0;
    tokio::spawn(async move {
        if let Err(error) = service::send_reset(&state, &tenant, &actor, &login).await {
            tracing::warn!(%error, "password reset mail not sent");
        }
    });
    Ok(Reply::accepted(Accepted { status: "accepted" }))
}

/// Set a new password with the token from a password-reset mail (local-mode tenants). The token
/// works once and until it expires; every session of the user ends. A token that does not work,
/// for whatever reason, is 400 `reset-token-invalid` and counts as a failed authentication of
/// the client address.
#[endpoint(
    operation_id = "neotenant.sessions.handlers.password_reset_confirm",
    tags("sessions"),
    status_codes(204, 400, 409, 422, 429, 503)
)]
pub async fn password_reset_confirm(
    req: &mut Request,
    tenant: CurrentTenant,
    body: JsonBody<PasswordResetConfirmRequest>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<AccountState>(depot)?;
    let who = fingerprint(&[b"reset", body.0.token.as_bytes()]);
    let attempt = Attempt::Credential(&who);
    let ip = admit(&state, req, Some(attempt)).await?;
    let actor = anonymous_actor(&state, req, depot, &tenant, ip);
    let input = body.0;
    match service::confirm_reset(&state, &tenant.0, actor, &input.token, input.password).await {
        Err(e) if e.code == ErrorCode::ResetTokenInvalid => {
            state.limiter.record_failure(ip, attempt).await;
            Err(e)
        }
        Err(e) => Err(e),
        Ok(()) => Ok(NoContent),
    }
}

/// Sign in to a local-mode tenant with a username and password.
#[endpoint(
    operation_id = "neotenant.sessions.handlers.local_login",
    tags("sessions"),
    status_codes(200, 401, 409, 422, 429)
)]
pub async fn local_login(
    req: &mut Request,
    tenant: CurrentTenant,
    body: JsonBody<LoginRequest>,
    depot: &mut Depot,
) -> ApiResult<Reply<TokenResponse>> {
    let state = dep::<AccountState>(depot)?;
    if tenant.0.tenant.identity.mode != crate::tenancy::model::IdentityMode::Local {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "this tenant signs in through Keycloak",
        ));
    }
    // The account is named by its tenant and lower-cased username: failures lock it at this
    // address, and from every address after as many (Keycloak's brute-force detection).
    let who = fingerprint(&[
        tenant.0.tenant.id.0.as_bytes(),
        body.0.username.trim().to_lowercase().as_bytes(),
    ]);
    let attempt = Attempt::Account(&who);
    let ip = admit(&state, req, Some(attempt)).await?;
    let input = body.0;
    match service::login(&state, &tenant.0, &input.username, input.password).await {
        Err(e) if e.code == ErrorCode::InvalidCredentials => {
            state.limiter.record_failure(ip, attempt).await;
            Err(e)
        }
        other => Ok(Reply::ok(other?)),
    }
}

/// The public key of local-mode tokens (JWKS).
#[endpoint(
    operation_id = "neotenant.sessions.handlers.jwks",
    tags("sessions"),
    status_codes(200)
)]
pub async fn jwks(depot: &mut Depot) -> ApiResult<Reply<serde_json::Value>> {
    Ok(Reply::ok(dep::<AccountState>(depot)?.local_keys.jwks()))
}

/// The routes that need the tenant but no access token.
pub fn router() -> Router {
    Router::with_path("auth")
        .push(Router::with_path("refresh").post(refresh))
        .push(Router::with_path("login").post(local_login))
        .push(
            Router::with_path("password-reset")
                .post(password_reset)
                .push(Router::with_path("confirm").post(password_reset_confirm)),
        )
}
