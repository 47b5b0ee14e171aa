//! `/v1/api-keys`: my keys. HTTP only; the rules are `apikeys` (mod.rs).

use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::{ApiKeyView, CreatedApiKey, NewApiKey};

use crate::error::{ApiError, ApiResult};
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
    tenant: CurrentTenant,
    body: JsonBody<NewApiKey>,
    depot: &mut Depot,
) -> ApiResult<Reply<CreatedApiKey>> {
    let state = dep::<AuthState>(depot)?;
    let me = &can.user;
    let mut tx = tenant.0.db.begin().await?;
    let catalog = crate::rbac::service::catalog(tx.conn()).await;
    let catalog = tx.finish(catalog).await?;
    let created = super::create(
        &tenant.0.db,
        state.config.auth.api_key_secret.expose(),
        me.user.id,
        &body.0,
        &catalog,
        &can,
    )
    .await?;
    let location = format!("/v1/api-keys/{}", created.key.id);
    Ok(Reply::created(created, location))
}

/// My live API keys.
#[endpoint(tags("api keys"), status_codes(200, 401))]
pub async fn list_keys(
    can: Can<ApiKeysReadOwn>,
    tenant: CurrentTenant,
) -> ApiResult<Reply<Vec<ApiKeyView>>> {
    Ok(Reply::ok(
        super::list(&tenant.0.db, can.user.user.id).await?,
    ))
}

/// Revoke one of my API keys; every instance refuses it from now on.
#[endpoint(tags("api keys"), status_codes(204, 400, 401, 404))]
pub async fn revoke_key(
    can: Can<ApiKeysRevokeOwn>,
    tenant: CurrentTenant,
    id: Path<ApiKeyId>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let sessions = dep::<crate::sessions::Sessions>(depot)?;
    if !super::revoke(&tenant.0.db, &can.actor, can.user.user.id, id.0).await? {
        return Err(ApiError::not_found("API key"));
    }
    sessions
        .revoke(
            tenant.0.tenant.id,
            &can.user.user.subject,
            &[super::revocation_id(id.0)],
        )
        .await
        .map_err(|e| ApiError::unavailable("the session store", e))?;
    Ok(NoContent)
}

pub fn router() -> Router {
    Router::with_path("api-keys")
        .get(list_keys)
        .post(create_key)
        .push(Router::with_path("{id}").delete(revoke_key))
}
