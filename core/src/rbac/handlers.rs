//! HTTP endpoints for roles, assignments, grants and permission checks under `/v1`.

use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::need::{
    PermissionsGrant, RolesAssign, RolesCreate, RolesDelete, RolesRead, RolesUpdate,
};
use super::{
    Assigned, Assignment, Caller, Can, CatalogEntry, CheckRequest, CheckResults, Grant, HeldRole,
    NewGrant, NewRole, Role, RolePatch, RoleTemplate, UserPermissions, service,
};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::extract::{JsonBody, Path};
use crate::http::reply::{NoContent, Reply};
use crate::ids::{GrantId, UserId};
use salvo::oapi::ToSchema;
use serde::Serialize;

use crate::http::extract::dep;
use crate::rbac::RbacState;

/// A strict boolean query flag: absent → false; `true`/`false`/`1`/`0` only.
pub(crate) fn flag(req: &Request, name: &str) -> ApiResult<bool> {
    match req.query::<String>(name).as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("query parameter `{name}` must be true or false"),
        )),
    }
}

/// The permission catalog: every resource, its actions and the scopes.
#[endpoint(tags("permissions"), status_codes(200, 401))]
pub async fn get_catalog(caller: Caller) -> ApiResult<Reply<Vec<CatalogEntry>>> {
    let c = service::load_catalog(caller.db()).await?;
    Ok(Reply::ok(service::catalog_entries(&c)))
}

/// Check a batch of permissions, for me or (with `permissions.read.tenant`) for others.
#[endpoint(tags("permissions"), status_codes(200, 400, 401, 403, 404, 422))]
pub async fn check(
    caller: Caller,
    body: JsonBody<CheckRequest>,
    depot: &mut Depot,
) -> ApiResult<Reply<CheckResults>> {
    let state = dep::<RbacState>(depot)?;
    let results = service::check(&state, &caller, &body.0.checks).await?;
    Ok(Reply::ok(CheckResults { results }))
}

/// A user's effective permissions; `explain=true` says which role, team or grant gave or
/// denied each. My own need no permission; others' need `permissions.read.tenant`.
#[endpoint(tags("permissions"), status_codes(200, 400, 401, 403, 404))]
pub async fn user_permissions(
    caller: Caller,
    id: Path<UserId>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Reply<UserPermissions>> {
    let state = dep::<RbacState>(depot)?;
    let explain = flag(req, "explain")?;
    Ok(Reply::ok(
        service::permissions_of(&state, &caller, id.0, explain).await?,
    ))
}

/// My effective permissions (`explain=true` for their sources).
#[endpoint(tags("permissions"), status_codes(200, 400, 401))]
pub async fn my_permissions(
    caller: Caller,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Reply<UserPermissions>> {
    let state = dep::<RbacState>(depot)?;
    let explain = flag(req, "explain")?;
    let me = caller.user.user.id;
    Ok(Reply::ok(
        service::permissions_of(&state, &caller, me, explain).await?,
    ))
}

/// The role templates shipped with the platform.
#[endpoint(tags("roles"), status_codes(200, 401))]
pub async fn list_templates(_caller: Caller) -> Reply<Vec<RoleTemplate>> {
    Reply::ok(service::templates())
}

/// The tenant's roles.
#[endpoint(tags("roles"), status_codes(200, 401, 403))]
pub async fn list_roles(can: Can<RolesRead>) -> ApiResult<Reply<Vec<Role>>> {
    Ok(Reply::ok(service::list_roles(can.db()).await?))
}

/// Create a role (own permissions, parents, or a template's copy). You can only create roles
/// whose every permission, inherited ones included, you hold yourself.
#[endpoint(tags("roles"), status_codes(201, 400, 401, 403, 409, 422))]
pub async fn create_role(
    can: Can<RolesCreate>,
    body: JsonBody<NewRole>,
    depot: &mut Depot,
) -> ApiResult<Reply<Role>> {
    let state = dep::<RbacState>(depot)?;
    let role = service::create_role(&state, &can, &body.0).await?;
    let location = format!("/v1/roles/{}", role.key);
    Ok(Reply::created(role, location))
}

/// One role.
#[endpoint(tags("roles"), status_codes(200, 401, 403, 404))]
pub async fn get_role(can: Can<RolesRead>, key: Path<String>) -> ApiResult<Reply<Role>> {
    Ok(Reply::ok(service::get_role(can.db(), &key.0).await?))
}

/// Change a role; parents that would make a cycle are refused.
#[endpoint(tags("roles"), status_codes(200, 400, 401, 403, 404, 409, 422))]
pub async fn update_role(
    can: Can<RolesUpdate>,
    key: Path<String>,
    body: JsonBody<RolePatch>,
    depot: &mut Depot,
) -> ApiResult<Reply<Role>> {
    let state = dep::<RbacState>(depot)?;
    Ok(Reply::ok(
        service::update_role(&state, &can, &key.0, &body.0).await?,
    ))
}

/// Delete a role (its assignments end with it).
#[endpoint(tags("roles"), status_codes(204, 401, 403, 404, 409))]
pub async fn delete_role(
    can: Can<RolesDelete>,
    key: Path<String>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<RbacState>(depot)?;
    service::delete_role(&state, &can, &key.0).await?;
    Ok(NoContent)
}

/// A user holding a role directly.
#[derive(Debug, Serialize, ToSchema)]
pub struct Holder {
    pub user_id: UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The users holding a role directly.
#[endpoint(tags("roles"), status_codes(200, 401, 403, 404))]
pub async fn list_holders(can: Can<RolesRead>, key: Path<String>) -> ApiResult<Reply<Vec<Holder>>> {
    let rows = service::holders(can.db(), &key.0).await?;
    Ok(Reply::ok(
        rows.into_iter()
            .map(|(user_id, expires_at)| Holder {
                user_id,
                expires_at,
            })
            .collect(),
    ))
}

/// Assign a role to up to 1000 users at once (all or nothing).
#[endpoint(tags("roles"), status_codes(200, 400, 401, 403, 404, 422))]
pub async fn assign(
    can: Can<RolesAssign>,
    key: Path<String>,
    body: JsonBody<Assignment>,
    depot: &mut Depot,
) -> ApiResult<Reply<Assigned>> {
    let state = dep::<RbacState>(depot)?;
    Ok(Reply::ok(
        service::assign(&state, &can, &key.0, &body.0.user_ids, body.0.expires_at).await?,
    ))
}

/// Take a role from a user.
#[endpoint(tags("roles"), status_codes(204, 400, 401, 403, 404, 409))]
pub async fn unassign(
    can: Can<RolesAssign>,
    key: Path<String>,
    user_id: Path<UserId>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<RbacState>(depot)?;
    service::unassign(&state, &can, &key.0, user_id.0).await?;
    Ok(NoContent)
}

/// The roles a user holds directly.
#[endpoint(tags("roles"), status_codes(200, 400, 401, 403))]
pub async fn user_roles(can: Can<RolesRead>, id: Path<UserId>) -> ApiResult<Reply<Vec<HeldRole>>> {
    Ok(Reply::ok(service::roles_of(can.db(), id.0).await?))
}

/// A user's custom grants and denies.
#[endpoint(tags("permissions"), status_codes(200, 400, 401, 403))]
pub async fn list_grants(caller: Caller, id: Path<UserId>) -> ApiResult<Reply<Vec<Grant>>> {
    if id.0 != caller.user.user.id {
        caller.require("permissions", "read", super::perm::Scope::Tenant)?;
    }
    Ok(Reply::ok(service::grants_of(caller.db(), id.0).await?))
}

/// Give a user a custom grant or deny (a deny beats any grant). You can only grant or deny
/// what you hold yourself.
#[endpoint(tags("permissions"), status_codes(201, 400, 401, 403, 404, 409, 422))]
pub async fn add_grant(
    can: Can<PermissionsGrant>,
    id: Path<UserId>,
    body: JsonBody<NewGrant>,
    depot: &mut Depot,
) -> ApiResult<Reply<Grant>> {
    let state = dep::<RbacState>(depot)?;
    let grant = service::add_grant(&state, &can, id.0, &body.0).await?;
    let location = format!("/v1/users/{}/grants/{}", id.0, grant.id);
    Ok(Reply::created(grant, location))
}

/// Remove a custom grant or deny.
#[endpoint(tags("permissions"), status_codes(204, 400, 401, 403, 404))]
pub async fn remove_grant(
    can: Can<PermissionsGrant>,
    id: Path<UserId>,
    grant_id: Path<GrantId>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<RbacState>(depot)?;
    service::remove_grant(&state, &can, id.0, grant_id.0).await?;
    Ok(NoContent)
}

/// The RBAC routes (mounted behind authentication).
pub fn router() -> Router {
    Router::new()
        .push(
            Router::with_path("permissions")
                .get(get_catalog)
                .push(Router::with_path("check").post(check)),
        )
        .push(Router::with_path("me/permissions").get(my_permissions))
        .push(Router::with_path("role-templates").get(list_templates))
        .push(
            Router::with_path("roles")
                .get(list_roles)
                .post(create_role)
                .push(
                    Router::with_path("{key}")
                        .get(get_role)
                        .patch(update_role)
                        .delete(delete_role)
                        .push(
                            Router::with_path("assignments")
                                .get(list_holders)
                                .post(assign)
                                .push(Router::with_path("{user_id}").delete(unassign)),
                        ),
                ),
        )
        .push(
            Router::with_path("users/{id}")
                .push(Router::with_path("permissions").get(user_permissions))
                .push(Router::with_path("roles").get(user_roles))
                .push(
                    Router::with_path("grants")
                        .get(list_grants)
                        .post(add_grant)
                        .push(Router::with_path("{grant_id}").delete(remove_grant)),
                ),
        )
}
