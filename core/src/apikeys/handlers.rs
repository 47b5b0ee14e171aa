//! `/v1/api-keys`: my keys. HTTP only: parses, calls one `apikeys::service` function and
//! answers; no SQL, no rules. Each endpoint names `CurrentTenant` (unused: the caller carries
//! the tenant) so the API document lists the `X-Tenant` header for it.

use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::{ApiKeyView, CreatedApiKey, KeyPolicyPatch, KeyUsage, NewApiKey, service};

use crate::error::ApiResult;
use crate::http::extract::{JsonBody, Path};
use crate::http::reply::{NoContent, Reply};
use crate::ids::ApiKeyId;
use crate::rbac::Can;
use crate::rbac::need::{ApiKeysCreateOwn, ApiKeysReadOwn, ApiKeysRevokeOwn};
use crate::tenancy::resolve::CurrentTenant;

use crate::auth::AuthState;
use crate::http::extract::dep;

/// The most a machine credential's own rate may be: the tenant's per-user rate (its
/// settings, else the platform's).
pub(crate) async fn ceiling(
    depot: &Depot,
    tenant: &CurrentTenant,
) -> ApiResult<service::RateCeiling> {
    let auth = dep::<AuthState>(depot)?;
    let settings = dep::<crate::settings::SettingsState>(depot)?;
    let limits = crate::settings::service::effective(&settings, &tenant.0)
        .await?
        .api
        .clone();
    let (per_sec, burst) = limits.user_ceiling(&auth.config.rate_limit);
    Ok(service::RateCeiling { per_sec, burst })
}

/// Create an API key acting as me (the secret is in this answer only). It may have its own
/// rate limit (a bucket apart from mine, at most the tenant's per-user rate), a quota of
/// credits with a periodic refill, and a pinned API version (the newest when not named).
#[endpoint(tags("api keys"), status_codes(201, 401, 409, 422))]
pub async fn create_key(
    can: Can<ApiKeysCreateOwn>,
    tenant: CurrentTenant,
    body: JsonBody<NewApiKey>,
    depot: &mut Depot,
) -> ApiResult<Reply<CreatedApiKey>> {
    let state = dep::<AuthState>(depot)?;
    let ceiling = ceiling(depot, &tenant).await?;
    let created = service::create(
        &can,
        state.config.auth.api_key_secret.expose(),
        &body.0,
        ceiling,
        state.config.limits.api_keys_per_user,
    )
    .await?;
    let location = format!("/v1/api-keys/{}", created.key.id);
    Ok(Reply::created(created, location))
}

/// My live API keys.
#[endpoint(tags("api keys"), status_codes(200, 401))]
pub async fn list_keys(
    can: Can<ApiKeysReadOwn>,
    _tenant: CurrentTenant,
) -> ApiResult<Reply<Vec<ApiKeyView>>> {
    Ok(Reply::ok(service::list(can.db(), can.user.user.id).await?))
}

/// One of my live API keys.
#[endpoint(tags("api keys"), status_codes(200, 400, 401, 404))]
pub async fn get_key(
    can: Can<ApiKeysReadOwn>,
    _tenant: CurrentTenant,
    id: Path<ApiKeyId>,
) -> ApiResult<Reply<ApiKeyView>> {
    Ok(Reply::ok(service::get(&can, id.0).await?))
}

/// Change one of my keys' rate limit, quota (setting one starts its credits afresh) or pinned
/// API version. Applies at once on this instance, within a minute on the others.
#[endpoint(tags("api keys"), status_codes(200, 400, 401, 404, 422))]
pub async fn update_key(
    can: Can<ApiKeysCreateOwn>,
    tenant: CurrentTenant,
    id: Path<ApiKeyId>,
    body: JsonBody<KeyPolicyPatch>,
    depot: &mut Depot,
) -> ApiResult<Reply<ApiKeyView>> {
    let auth = dep::<AuthState>(depot)?;
    let ceiling = ceiling(depot, &tenant).await?;
    let (key, quota_set) = service::update_policy(&can, id.0, &body.0, ceiling).await?;
    let client = service::client_id(id.0);
    if quota_set {
        auth.limiter.reset_credits(can.tenant_id(), &client).await;
    }
    auth.tokens.evict_client(&client);
    Ok(Reply::ok(key))
}

/// One of my keys' use: credits left and requests per UTC day (`?days=` 1-90, default 30).
#[endpoint(tags("api keys"), status_codes(200, 400, 401, 404))]
pub async fn key_usage(
    can: Can<ApiKeysReadOwn>,
    _tenant: CurrentTenant,
    id: Path<ApiKeyId>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Reply<KeyUsage>> {
    let days = crate::http::extract::days_param(req)?;
    let auth = dep::<AuthState>(depot)?;
    Ok(Reply::ok(
        service::usage(&can, &auth.limiter, id.0, days).await?,
    ))
}

/// Revoke one of my API keys; every instance refuses it from now on.
#[endpoint(tags("api keys"), status_codes(204, 400, 401, 404))]
pub async fn revoke_key(
    can: Can<ApiKeysRevokeOwn>,
    _tenant: CurrentTenant,
    id: Path<ApiKeyId>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let sessions = dep::<crate::sessions::Sessions>(depot)?;
    service::revoke(&can, &sessions, id.0).await?;
    Ok(NoContent)
}

pub fn router() -> Router {
    Router::with_path("api-keys")
        .get(list_keys)
        .post(create_key)
        .push(
            Router::with_path("{id}")
                .get(get_key)
                .patch(update_key)
                .delete(revoke_key)
                .push(Router::with_path("usage").get(key_usage)),
        )
}
