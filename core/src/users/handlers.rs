//! `/v1/me` and `/v1/users`: the calling user, and user management by tenant admins. HTTP
//! only; the rules are `users::service`.

use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::{CurrentUser, Me, NewUser, User, UserPatch, UsersState, service};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::extract::{JsonBody, ListParams, Page, Path, dep};
use crate::http::reply::{NoContent, Reply};
use crate::ids::UserId;
use crate::rbac::need::{UsersCreate, UsersDeactivate, UsersDelete, UsersRead, UsersUpdate};
use crate::rbac::perm::Scope;
use crate::rbac::{Caller, Can};
use crate::tenancy::resolve::CurrentTenant;

/// The calling user (created on its first authenticated request from the token).
#[endpoint(tags("users"), status_codes(200, 401, 403, 404))]
pub async fn me(caller: CurrentUser) -> ApiResult<Reply<Me>> {
    let principal = &caller.principal.0;
    Ok(Reply::ok(Me {
        user: (*caller.user).clone(),
        roles: principal.roles.clone(),
        client: principal.client.clone(),
    }))
}

/// Create a user in the tenant (Keycloak account and user row).
#[endpoint(
    operation_id = "neotenant.users.admin.create_user",
    tags("users"),
    status_codes(201, 401, 403, 409, 422, 503)
)]
pub async fn create_user(
    can: Can<UsersCreate>,
    tenant: CurrentTenant,
    body: JsonBody<NewUser>,
    depot: &mut Depot,
) -> ApiResult<Reply<User>> {
    let state = dep::<UsersState>(depot)?;
    let user = service::create(&state, &tenant.0, &can.actor, &body.0).await?;
    let location = format!("/v1/users/{}", user.id);
    Ok(Reply::created(user, location))
}

/// List the tenant's users, oldest first.
#[endpoint(
    operation_id = "neotenant.users.admin.list_users",
    tags("users"),
    status_codes(200, 400, 401, 403)
)]
pub async fn list_users(
    _can: Can<UsersRead>,
    tenant: CurrentTenant,
    page: ListParams<UserId>,
) -> ApiResult<Reply<Page<User>>> {
    let rows = service::list(&tenant.0.db, page.after, i64::from(page.limit) + 1).await?;
    Ok(Reply::ok(Page::from_rows(rows, page.limit, |u| u.id)))
}

/// One user (the user itself, or with `users.read.tenant`).
#[endpoint(
    operation_id = "neotenant.users.admin.get_user",
    tags("users"),
    status_codes(200, 400, 401, 403, 404)
)]
pub async fn get_user(
    caller: Caller,
    tenant: CurrentTenant,
    id: Path<UserId>,
) -> ApiResult<Reply<User>> {
    if caller.user.user.id != id.0 {
        caller.require("users", "read", Scope::Tenant)?;
    }
    Ok(Reply::ok(service::by_id(&tenant.0.db, id.0).await?))
}

/// Change a user's email or display name (in Keycloak too).
#[endpoint(
    operation_id = "neotenant.users.admin.patch_user",
    tags("users"),
    status_codes(200, 400, 401, 403, 404, 409, 422, 503)
)]
pub async fn patch_user(
    can: Can<UsersUpdate>,
    tenant: CurrentTenant,
    id: Path<UserId>,
    body: JsonBody<UserPatch>,
    depot: &mut Depot,
) -> ApiResult<Reply<User>> {
    let state = dep::<UsersState>(depot)?;
    Ok(Reply::ok(
        service::update(&state, &tenant.0, &can.actor, id.0, &body.0).await?,
    ))
}

/// Deactivate a user: refused from now on, sessions ended, account disabled in Keycloak.
#[endpoint(
    operation_id = "neotenant.users.admin.deactivate_user",
    tags("users"),
    status_codes(200, 400, 401, 403, 404, 409, 503)
)]
pub async fn deactivate_user(
    can: Can<UsersDeactivate>,
    tenant: CurrentTenant,
    id: Path<UserId>,
    depot: &mut Depot,
) -> ApiResult<Reply<User>> {
    if can.user.user.id == id.0 {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "you cannot deactivate yourself",
        ));
    }
    let state = dep::<UsersState>(depot)?;
    Ok(Reply::ok(
        service::set_active(&state, &tenant.0, &can.actor, id.0, false).await?,
    ))
}

/// Reactivate a deactivated user.
#[endpoint(
    operation_id = "neotenant.users.admin.reactivate_user",
    tags("users"),
    status_codes(200, 400, 401, 403, 404, 409, 503)
)]
pub async fn reactivate_user(
    can: Can<UsersDeactivate>,
    tenant: CurrentTenant,
    id: Path<UserId>,
    depot: &mut Depot,
) -> ApiResult<Reply<User>> {
    let state = dep::<UsersState>(depot)?;
    Ok(Reply::ok(
        service::set_active(&state, &tenant.0, &can.actor, id.0, true).await?,
    ))
}

/// Delete a user: the row stays as `deleted` (audit trail); the Keycloak account (or, for a
/// shared account, the tenant's membership) goes; sessions end.
#[endpoint(
    operation_id = "neotenant.users.admin.delete_user",
    tags("users"),
    status_codes(204, 400, 401, 403, 404, 409, 503)
)]
pub async fn delete_user(
    can: Can<UsersDelete>,
    tenant: CurrentTenant,
    id: Path<UserId>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    if can.user.user.id == id.0 {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "you cannot delete yourself",
        ));
    }
    let state = dep::<UsersState>(depot)?;
    service::delete(&state, &tenant.0, &can.actor, id.0).await?;
    Ok(NoContent)
}

/// `/v1/me`.
pub fn router() -> Router {
    Router::with_path("me").get(me)
}

/// `/v1/users`: management by tenant admins.
pub fn admin_router() -> Router {
    Router::with_path("users")
        .get(list_users)
        .post(create_user)
        .push(
            Router::with_path("{id}")
                .get(get_user)
                .patch(patch_user)
                .delete(delete_user)
                .push(Router::with_path("deactivate").post(deactivate_user))
                .push(Router::with_path("reactivate").post(reactivate_user)),
        )
}
