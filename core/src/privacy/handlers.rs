//! `/v1/users/{id}/export`, `/v1/me/export` and `/v1/users/{id}/erase`. HTTP only; the rules
//! are `privacy::service`.

use bytes::Bytes;
use futures::StreamExt;
use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::{Erasure, service};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::extract::{Path, dep};
use crate::http::reply::{Reply, Streamed};
use crate::ids::UserId;
use crate::rbac::need::{UsersErase, UsersExport};
use crate::rbac::{Caller, Can};
use crate::users::UsersState;

fn archive(doc: serde_json::Value) -> ApiResult<Streamed> {
    let bytes = serde_json::to_vec_pretty(&doc).map_err(ApiError::internal)?;
    Ok(Streamed {
        content_type: "application/json",
        filename: Some("personal-data.json"),
        body: futures::stream::once(async move { Ok(Bytes::from(bytes)) }).boxed(),
    })
}

/// Everything the tenant holds about a user, as one JSON document: profile, attributes,
/// preferences, memberships, roles, grants, sessions, API key metadata, invitations, owned
/// resources and the audit entries by or about them. The export is itself audited.
#[endpoint(
    operation_id = "neotenant.privacy.export_user",
    tags("users"),
    status_codes(200, 400, 401, 403, 404, 503)
)]
pub async fn export_user(
    can: Can<UsersExport>,
    id: Path<UserId>,
    depot: &mut Depot,
) -> ApiResult<Streamed> {
    let state = dep::<UsersState>(depot)?;
    archive(service::export(&state, can.tenant(), &can.actor, id.0).await?)
}

/// Everything the tenant holds about the caller (the same document as a user export).
#[endpoint(
    operation_id = "neotenant.privacy.export_me",
    tags("users"),
    status_codes(200, 401, 503)
)]
pub async fn export_me(caller: Caller, depot: &mut Depot) -> ApiResult<Streamed> {
    let state = dep::<UsersState>(depot)?;
    let id = caller.user.user.id;
    archive(service::export(&state, caller.tenant(), &caller.actor, id).await?)
}

/// Erase a user: their account goes (as a deletion), and their email, names, username,
/// attributes, preferences, addresses and browsers are replaced by a pseudonym everywhere —
/// audit log included, under signed redactions, so `neotenant audit verify` stays green.
/// Erasing again changes nothing.
#[endpoint(
    operation_id = "neotenant.privacy.erase_user",
    tags("users"),
    status_codes(200, 400, 401, 403, 404, 409, 503)
)]
pub async fn erase_user(
    can: Can<UsersErase>,
    id: Path<UserId>,
    depot: &mut Depot,
) -> ApiResult<Reply<Erasure>> {
    if can.user.user.id == id.0 {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "you cannot erase yourself; ask another administrator",
        ));
    }
    let state = dep::<UsersState>(depot)?;
    Ok(Reply::ok(
        service::erase(&state, can.tenant(), &can.actor, id.0).await?,
    ))
}

/// The privacy routes.
pub fn router() -> Router {
    Router::new()
        .push(Router::with_path("me/export").get(export_me))
        .push(Router::with_path("users/{id}/export").get(export_user))
        .push(Router::with_path("users/{id}/erase").post(erase_user))
}
