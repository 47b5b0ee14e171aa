//! `/v1/auth/{login,refresh,password-reset}` and `/.well-known/jwks.json`: the routes a
//! caller uses before it holds an access token. HTTP only (client address, rate limits,
//! answers); the rules are `account::service`.

use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::{
    Accepted, AccountState, LoginRequest, PasswordResetRequest, RefreshRequest, TokenResponse,
    service,
};
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::http::extract::{JsonBody, dep};
use crate::http::reply::Reply;
use crate::ratelimit::Decision;
use crate::tenancy::resolve::CurrentTenant;

/// Spends from the client address's bucket; a locked-out or limited address is refused.
async fn admit(state: &AccountState, req: &Request) -> ApiResult<std::net::IpAddr> {
    let ip = crate::auth::hoops::client_ip(req, state.limiter.config().trust_forwarded_for);
    match state.limiter.check(ip, None).await {
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

/// Exchange a refresh token for new tokens (the refresh token rotates: the old one is
/// refused from then on).
#[endpoint(
    operation_id = "neotenant.sessions.handlers.refresh",
    tags("sessions"),
    status_codes(200, 400, 401, 422, 503)
)]
pub async fn refresh(
    tenant: CurrentTenant,
    body: JsonBody<RefreshRequest>,
    depot: &mut Depot,
) -> ApiResult<Reply<TokenResponse>> {
    let state = dep::<AccountState>(depot)?;
    Ok(Reply::ok(
        service::refresh(&state, &tenant.0, &body.0.refresh_token).await?,
    ))
}

/// Mail a password-reset link (through Keycloak) to the tenant user with this username or
/// email. Always 202, whether or not such a user exists; one mail per user per minute.
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
    if login.is_empty() || login.len() > 254 {
        return Err(ApiError::validation(vec![FieldError {
            pointer: "/login".into(),
            message: "must be 1-254 characters".into(),
        }]));
    }
    if let Err(e) = admit(&state, req).await {
        // The reset route answers a lockout as a plain rate limit.
        return Err(ApiError::new(ErrorCode::RateLimited, e.detail));
    }
    let tenant = &tenant.0;
    // The lookup and the mail happen after the answer, so neither its content nor its
    // timing tells whether the account exists.
    let identity = tenant.tenant.identity.clone();
    let tenant_id = tenant.tenant.id;
    tokio::spawn(async move {
        if let Err(error) = service::send_reset(&state, tenant_id, &identity, &login).await {
            tracing::warn!(%error, "password reset mail not sent");
        }
    });
    Ok(Reply::accepted(Accepted { status: "accepted" }))
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
    let ip = admit(&state, req).await?;
    let input = body.0;
    match service::login(&state, &tenant.0, &input.username, input.password).await {
        Err(e) if e.code == ErrorCode::InvalidCredentials => {
            state.limiter.record_failure(ip).await;
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
        .push(Router::with_path("password-reset").post(password_reset))
}
