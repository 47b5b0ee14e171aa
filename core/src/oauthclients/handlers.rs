//! `/v1/oauth-clients`: my OAuth machine clients. HTTP only: parses, calls one
//! `oauthclients::service` function and answers; no SQL, no rules. They are machine
//! credentials like API keys and need the same permissions (`api_keys.*.own`).

use salvo::oapi::endpoint;
use salvo::prelude::*;
use uuid::Uuid;

use crate::apikeys::KeyPolicyPatch;

use super::{ClientUsage, NewOAuthClient, OAuthClientSecret, OAuthClientView, service};
use crate::error::ApiResult;
use crate::http::extract::{JsonBody, Path, dep};
use crate::http::reply::{NoContent, Reply};
use crate::rbac::Can;
use crate::rbac::need::{ApiKeysCreateOwn, ApiKeysReadOwn, ApiKeysRevokeOwn};
use crate::tenancy::resolve::CurrentTenant;
use crate::users::UsersState;

/// Make an OAuth client for the client-credentials grant, acting as me within its scopes
/// (each one I hold). The secret is in this answer only; get tokens at `token_endpoint`. It
/// may have its own rate limit (a bucket apart from mine, at most the tenant's per-user rate),
/// a quota of credits with a periodic refill, and a pinned API version (the newest when not
/// named).
#[endpoint(
    operation_id = "neotenant.oauthclients.create",
    tags("oauth clients"),
    status_codes(201, 401, 403, 409, 422, 503)
)]
pub async fn create_client(
    can: Can<ApiKeysCreateOwn>,
    tenant: CurrentTenant,
    body: JsonBody<NewOAuthClient>,
    depot: &mut Depot,
) -> ApiResult<Reply<OAuthClientSecret>> {
    let users = dep::<UsersState>(depot)?;
    let ceiling = crate::apikeys::handlers::ceiling(depot, &tenant).await?;
    let max = users.config.limits.oauth_clients_per_user;
    let made = service::create(&can, &users.keycloak, &tenant.0, &body.0, ceiling, max).await?;
    let location = format!("/v1/oauth-clients/{}", made.client.id);
    Ok(Reply::created(made, location))
}

/// My live OAuth clients (never their secrets).
#[endpoint(
    operation_id = "neotenant.oauthclients.list",
    tags("oauth clients"),
    status_codes(200, 401, 403)
)]
pub async fn list_clients(
    can: Can<ApiKeysReadOwn>,
    tenant: CurrentTenant,
    depot: &mut Depot,
) -> ApiResult<Reply<Vec<OAuthClientView>>> {
    let users = dep::<UsersState>(depot)?;
    Ok(Reply::ok(
        service::list(&can, &users.keycloak, &tenant.0).await?,
    ))
}

/// One of my live OAuth clients.
#[endpoint(
    operation_id = "neotenant.oauthclients.get",
    tags("oauth clients"),
    status_codes(200, 400, 401, 403, 404)
)]
pub async fn get_client(
    can: Can<ApiKeysReadOwn>,
    tenant: CurrentTenant,
    id: Path<Uuid>,
    depot: &mut Depot,
) -> ApiResult<Reply<OAuthClientView>> {
    let users = dep::<UsersState>(depot)?;
    Ok(Reply::ok(
        service::get(&can, &users.keycloak, &tenant.0, id.0).await?,
    ))
}

/// Change one of my OAuth clients' rate limit, quota (setting one starts its credits afresh)
/// or pinned API version. Applies at once on this instance, within a minute on the others.
#[endpoint(
    operation_id = "neotenant.oauthclients.update",
    tags("oauth clients"),
    status_codes(200, 400, 401, 403, 404, 422)
)]
pub async fn update_client(
    can: Can<ApiKeysCreateOwn>,
    tenant: CurrentTenant,
    id: Path<Uuid>,
    body: JsonBody<KeyPolicyPatch>,
    depot: &mut Depot,
) -> ApiResult<Reply<OAuthClientView>> {
    let users = dep::<UsersState>(depot)?;
    let auth = dep::<crate::auth::AuthState>(depot)?;
    let ceiling = crate::apikeys::handlers::ceiling(depot, &tenant).await?;
    let (client, quota_set) =
        service::update_policy(&can, &users.keycloak, &tenant.0, id.0, &body.0, ceiling).await?;
    let key = service::client_key(id.0);
    if quota_set {
        auth.limiter.reset_credits(can.tenant_id(), &key).await;
    }
    auth.tokens.evict_client(&key);
    Ok(Reply::ok(client))
}

/// A new secret for one of my OAuth clients, shown in this answer only; the old one stops
/// working at once.
#[endpoint(
    operation_id = "neotenant.oauthclients.rotate",
    tags("oauth clients"),
    status_codes(200, 400, 401, 403, 404, 409, 503)
)]
pub async fn rotate_client(
    can: Can<ApiKeysCreateOwn>,
    tenant: CurrentTenant,
    id: Path<Uuid>,
    depot: &mut Depot,
) -> ApiResult<Reply<OAuthClientSecret>> {
    let users = dep::<UsersState>(depot)?;
    Ok(Reply::ok(
        service::rotate(&can, &users.keycloak, &tenant.0, id.0).await?,
    ))
}

/// One of my OAuth clients' use: credits left and requests per UTC day (`?days=` 1-90,
/// default 30), let through and refused by its rate limit or quota.
#[endpoint(
    operation_id = "neotenant.oauthclients.usage",
    tags("oauth clients"),
    status_codes(200, 400, 401, 403, 404)
)]
pub async fn client_usage(
    can: Can<ApiKeysReadOwn>,
    _tenant: CurrentTenant,
    id: Path<Uuid>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Reply<ClientUsage>> {
    let days = crate::http::extract::days_param(req)?;
    let auth = dep::<crate::auth::AuthState>(depot)?;
    Ok(Reply::ok(
        service::usage(&can, &auth.limiter, id.0, days).await?,
    ))
}

/// Revoke one of my OAuth clients: no new tokens, and every instance refuses its tokens at once.
#[endpoint(
    operation_id = "neotenant.oauthclients.revoke",
    tags("oauth clients"),
    status_codes(204, 400, 401, 403, 404)
)]
pub async fn revoke_client(
    can: Can<ApiKeysRevokeOwn>,
    tenant: CurrentTenant,
    id: Path<Uuid>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let users = dep::<UsersState>(depot)?;
    let sessions = dep::<crate::sessions::Sessions>(depot)?;
    service::revoke(&can, &users.keycloak, &sessions, &tenant.0, id.0).await?;
    Ok(NoContent)
}

pub fn router() -> Router {
    Router::with_path("oauth-clients")
        .get(list_clients)
        .post(create_client)
        .push(
            Router::with_path("{id}")
                .get(get_client)
                .patch(update_client)
                .delete(revoke_client)
                .push(Router::with_path("usage").get(client_usage))
                .push(Router::with_path("secret/rotate").post(rotate_client)),
        )
}
