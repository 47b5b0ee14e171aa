//! `/v1/me` and `/v1/users`: the calling user, and user management by tenant admins. HTTP
//! only; the rules are `users::service`.

use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::{
    CurrentUser, Me, NewUser, User, UserFilter, UserPatch, UsersState, activity, avatar, bulk,
    profile, service,
};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::extract::{JsonBody, ListParams, Page, Path, dep, read_file_part};
use crate::http::reply::{Binary, NoContent, Reply};
use crate::ids::{TeamId, UserId};
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

/// The list filter from the query: `q`, `status`, `role`, `team` and `attr.<name>`.
pub fn user_filter(req: &Request) -> ApiResult<UserFilter> {
    let bad = |name: &str, what: &str| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("query parameter `{name}` must be {what}"),
        )
    };
    let mut filter = UserFilter::default();
    for (name, value) in req.queries().iter() {
        match name.as_str() {
            "q" if value.chars().count() <= 200 => filter.q = Some(value.clone()),
            "q" => return Err(bad("q", "at most 200 characters")),
            "status" if matches!(value.as_str(), "active" | "deactivated" | "deleted") => {
                filter.status = Some(value.clone())
            }
            "status" => return Err(bad("status", "active, deactivated or deleted")),
            "role" if (1..=100).contains(&value.len()) => filter.role = Some(value.clone()),
            "role" => return Err(bad("role", "a role key")),
            "team" => {
                let team: TeamId = value
                    .parse()
                    .map_err(|_| bad("team", "a team id (team_…)"))?;
                filter.team = Some(team.0);
            }
            other if other.starts_with("attr.") => {
                let key = &other["attr.".len()..];
                if key.is_empty() || key.len() > 100 || value.len() > 1000 {
                    return Err(bad(
                        other,
                        "attr.<name>=<value> with a short name and value",
                    ));
                }
                if filter.attributes.len() >= 10 {
                    return Err(bad("attr.*", "at most 10 attribute conditions"));
                }
                let parsed = serde_json::from_str(value)
                    .unwrap_or_else(|_| serde_json::Value::String(value.clone()));
                filter.attributes.push((key.to_string(), parsed));
            }
            _ => {}
        }
    }
    Ok(filter)
}

/// List the tenant's users, oldest first; filter with `q` (email, username or display name),
/// `status`, `role` (held directly), `team` (member of) and `attr.<name>=<value>`.
#[endpoint(
    operation_id = "neotenant.users.admin.list_users",
    tags("users"),
    status_codes(200, 400, 401, 403)
)]
pub async fn list_users(
    _can: Can<UsersRead>,
    tenant: CurrentTenant,
    page: ListParams<UserId>,
    req: &mut Request,
) -> ApiResult<Reply<Page<User>>> {
    let filter = user_filter(req)?;
    let rows = service::list(&tenant.0.db, &filter, page.after, i64::from(page.limit) + 1).await?;
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

/// The tenant's schema for user attributes, and which of them users may edit on themselves.
#[endpoint(
    operation_id = "neotenant.users.profile.get_attribute_schema",
    tags("users"),
    status_codes(200, 401, 403)
)]
pub async fn get_attribute_schema(
    can: Can<UsersRead>,
) -> ApiResult<Reply<profile::AttributeSchema>> {
    Ok(Reply::ok(profile::schema(can.db()).await?))
}

/// Replace the attribute schema (a JSON Schema of an object; applies to writes from now on).
#[endpoint(
    operation_id = "neotenant.users.profile.put_attribute_schema",
    tags("users"),
    status_codes(200, 401, 403, 422)
)]
pub async fn put_attribute_schema(
    can: Can<UsersUpdate>,
    body: JsonBody<profile::AttributeSchemaInput>,
) -> ApiResult<Reply<profile::AttributeSchema>> {
    Ok(Reply::ok(
        profile::put_schema(can.db(), &can.actor, &body.0).await?,
    ))
}

/// A user's custom attributes (the user itself, or with `users.read.tenant`).
#[endpoint(
    operation_id = "neotenant.users.profile.get_attributes",
    tags("users"),
    status_codes(200, 400, 401, 403, 404)
)]
pub async fn get_attributes(
    caller: Caller,
    id: Path<UserId>,
) -> ApiResult<Reply<profile::Attributes>> {
    if caller.user.user.id != id.0 {
        caller.require("users", "read", Scope::Tenant)?;
    }
    Ok(Reply::ok(profile::attributes(caller.db(), id.0).await?))
}

/// Change a user's attributes with a JSON merge patch: any of them with `users.update.tenant`,
/// or the self-editable ones on yourself. The result must satisfy the attribute schema.
#[endpoint(
    operation_id = "neotenant.users.profile.patch_attributes",
    tags("users"),
    status_codes(200, 400, 401, 403, 404, 422)
)]
pub async fn patch_attributes(
    caller: Caller,
    id: Path<UserId>,
    body: JsonBody<serde_json::Value>,
) -> ApiResult<Reply<profile::Attributes>> {
    let as_admin = caller.allows("users", "update", Scope::Tenant);
    if caller.user.user.id != id.0 && !as_admin {
        caller.require("users", "update", Scope::Tenant)?;
    }
    Ok(Reply::ok(
        profile::patch_attributes(caller.db(), &caller.actor, id.0, &body.0, as_admin).await?,
    ))
}

/// My preferences (locale, time zone, notification defaults), defaults filled in.
#[endpoint(
    operation_id = "neotenant.users.profile.my_preferences",
    tags("users"),
    status_codes(200, 401)
)]
pub async fn my_preferences(caller: Caller) -> ApiResult<Reply<profile::Preferences>> {
    Ok(Reply::ok(
        profile::preferences(caller.db(), caller.user.user.id).await?,
    ))
}

/// Change my preferences (absent fields stay).
#[endpoint(
    operation_id = "neotenant.users.profile.patch_my_preferences",
    tags("users"),
    status_codes(200, 401, 422)
)]
pub async fn patch_my_preferences(
    caller: Caller,
    body: JsonBody<profile::PreferencesPatch>,
) -> ApiResult<Reply<profile::Preferences>> {
    Ok(Reply::ok(
        profile::patch_preferences(caller.db(), &caller.actor, caller.user.user.id, &body.0)
            .await?,
    ))
}

/// Change up to 1,000 users at once: `deactivate`, `reactivate` and `delete` item by item (each
/// answered on its own), `assign_role` and `add_to_team` all or nothing. Each action needs the
/// permission its single-user route needs.
#[endpoint(
    operation_id = "neotenant.users.admin.bulk",
    tags("users"),
    status_codes(200, 400, 401, 403, 404, 413, 422, 503)
)]
pub async fn bulk_users(
    caller: Caller,
    tenant: CurrentTenant,
    body: JsonBody<bulk::BulkRequest>,
    depot: &mut Depot,
) -> ApiResult<Reply<bulk::BulkResult>> {
    use bulk::BulkAction as A;
    let input = body.0;
    bulk::check(&input)?;
    let result = match input.action {
        A::Deactivate | A::Reactivate | A::Delete => {
            let action = if input.action == A::Delete {
                "delete"
            } else {
                "deactivate"
            };
            caller.require("users", action, Scope::Tenant)?;
            let state = dep::<UsersState>(depot)?;
            bulk::change_each(
                &state,
                &tenant.0,
                &caller.actor,
                caller.user.user.id,
                input.action,
                &input.user_ids,
            )
            .await?
        }
        A::AssignRole => {
            caller.require("roles", "assign", Scope::Tenant)?;
            let state = dep::<crate::rbac::RbacState>(depot)?;
            let Some(role) = input.role.as_deref() else {
                return Err(ApiError::new(
                    ErrorCode::Validation,
                    "assign_role needs a role",
                ));
            };
            crate::rbac::service::assign(&state, &caller, role, &input.user_ids, None).await?;
            bulk::BulkResult::all(&input.user_ids, 200)
        }
        A::AddToTeam => {
            let state = dep::<crate::rbac::RbacState>(depot)?;
            let Some(team) = input.team else {
                return Err(ApiError::new(
                    ErrorCode::Validation,
                    "add_to_team needs a team",
                ));
            };
            let members = crate::teams::AddMembers {
                user_ids: input.user_ids.clone(),
                team_role: None,
            };
            crate::teams::service::add_members(&state, &caller, team, &members).await?;
            bulk::BulkResult::all(&input.user_ids, 200)
        }
    };
    Ok(Reply::ok(result))
}

/// A user's activity: last seen, open sessions, changes in the last 30 days by action, and
/// (for callers who may read the audit log, or the user themself) their latest changes.
#[endpoint(
    operation_id = "neotenant.users.activity",
    tags("users"),
    status_codes(200, 400, 401, 403, 404, 503)
)]
pub async fn user_activity(
    caller: Caller,
    id: Path<UserId>,
    depot: &mut Depot,
) -> ApiResult<Reply<activity::Activity>> {
    let own = caller.user.user.id == id.0;
    if !own {
        caller.require("users", "read", Scope::Tenant)?;
    }
    let with_log = own || caller.allows("audit", "read", Scope::Tenant);
    let state = dep::<UsersState>(depot)?;
    Ok(Reply::ok(
        activity::activity(&state, caller.tenant(), id.0, with_log).await?,
    ))
}

/// Yourself, or a caller allowed `users.update.tenant`.
fn may_change(caller: &Caller, id: UserId) -> ApiResult<()> {
    if caller.user.user.id != id {
        caller.require("users", "update", Scope::Tenant)?;
    }
    Ok(())
}

/// The new avatar's ETag.
#[derive(Debug, serde::Serialize, salvo::oapi::ToSchema)]
#[salvo(schema(name = "neotenant.users.AvatarSaved"))]
pub struct AvatarSaved {
    pub etag: String,
    /// The sides (px) it is served at: `GET …/avatar?size=64|256`.
    pub sizes: Vec<u32>,
}

/// Upload a user's avatar (multipart, one file part `file`; yourself or with
/// `users.update.tenant`): a PNG, JPEG or WebP picture (judged by its bytes) of at most 5 MiB
/// and 4096×4096 pixels, stored as square 64 and 256 px WebP variants.
#[endpoint(
    operation_id = "neotenant.users.put_avatar",
    tags("users"),
    status_codes(200, 400, 401, 403, 404, 409, 413, 415, 422)
)]
pub async fn put_avatar(
    caller: Caller,
    id: Path<UserId>,
    req: &mut Request,
) -> ApiResult<Reply<AvatarSaved>> {
    may_change(&caller, id.0)?;
    let bytes = read_file_part(req, avatar::MAX_BYTES, "an avatar").await?;
    let etag = avatar::put(caller.db(), &caller.actor, id.0, bytes).await?;
    Ok(Reply::ok(AvatarSaved {
        etag,
        sizes: avatar::SIZES.to_vec(),
    }))
}

/// A user's avatar as WebP, `size` 64 or 256 (default 256), with an ETag (`If-None-Match`
/// answers 304); any user of the tenant may see it.
#[endpoint(
    operation_id = "neotenant.users.get_avatar",
    tags("users"),
    status_codes(200, 304, 400, 401, 404)
)]
pub async fn get_avatar(caller: Caller, id: Path<UserId>, req: &mut Request) -> ApiResult<Binary> {
    let side = match req.query::<String>("size").as_deref() {
        None => avatar::SIZES[1],
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|s| avatar::SIZES.contains(s))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    "query parameter `size` must be 64 or 256",
                )
            })?,
    };
    let (etag, body) = avatar::get(caller.db(), id.0, side).await?;
    Ok(Binary {
        content_type: "image/webp",
        etag: format!("\"{etag}-{side}\""),
        max_age: 300,
        body,
    })
}

/// Remove a user's avatar (yourself or with `users.update.tenant`).
#[endpoint(
    operation_id = "neotenant.users.delete_avatar",
    tags("users"),
    status_codes(204, 400, 401, 403, 404)
)]
pub async fn delete_avatar(caller: Caller, id: Path<UserId>) -> ApiResult<NoContent> {
    may_change(&caller, id.0)?;
    avatar::delete(caller.db(), &caller.actor, id.0).await?;
    Ok(NoContent)
}

/// `/v1/me`.
pub fn router() -> Router {
    Router::with_path("me").get(me).push(
        Router::with_path("preferences")
            .get(my_preferences)
            .patch(patch_my_preferences),
    )
}

/// `/v1/users`: management by tenant admins.
pub fn admin_router() -> Router {
    Router::with_path("users")
        .get(list_users)
        .post(create_user)
        .push(Router::with_path("bulk").post(bulk_users))
        .push(
            Router::with_path("attribute-schema")
                .get(get_attribute_schema)
                .put(put_attribute_schema),
        )
        .push(
            Router::with_path("{id}")
                .get(get_user)
                .patch(patch_user)
                .delete(delete_user)
                .push(
                    Router::with_path("attributes")
                        .get(get_attributes)
                        .patch(patch_attributes),
                )
                .push(Router::with_path("activity").get(user_activity))
                .push(
                    Router::with_path("avatar")
                        .get(get_avatar)
                        .put(put_avatar)
                        .delete(delete_avatar),
                )
                .push(Router::with_path("deactivate").post(deactivate_user))
                .push(Router::with_path("reactivate").post(reactivate_user)),
        )
}
