//! `/v1/api-keys`: my keys. HTTP only: parses, calls one `apikeys::service` function and
//! answers; no SQL, no rules. Each endpoint names `CurrentTenant` (unused: the caller carries
//! the tenant) so the API document lists the `X-Tenant` header for it.

use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::{ApiKeyView, CreatedApiKey, NewApiKey, service};

use crate::error::ApiResult;
use crate::http::extract::{JsonBody, Path};
use crate::http::reply::{NoContent, Reply};
use crate::ids::ApiKeyId;
use crate::rbac::Can;
use crate::rbac::need::{ApiKeysCreateOwn, ApiKeysReadOwn, ApiKeysRevokeOwn};
use crate::tenancy::resolve::CurrentTenant;

use crate::auth::AuthState;
use crate::http::extract::dep;

/// Create an API key acting as me (the secret is in this answer only).
#[endpoint(tags("api keys"), status_codes(201, 401, 422))]
pub async fn create_key(
    can: Can<ApiKeysCreateOwn>,
    _tenant: CurrentTenant,
    body: JsonBody<NewApiKey>,
    depot: &mut Depot,
) -> ApiResult<Reply<CreatedApiKey>> {
    let state = dep::<AuthState>(depot)?;
    let created = service::create(&can, state.config.auth.api_key_secret.expose(), &body.0).await?;
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
        .push(Router::with_path("{id}").delete(revoke_key))
}
