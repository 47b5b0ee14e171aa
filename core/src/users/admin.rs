//! User management by tenant administrators: create, change, deactivate, reactivate and
//! (soft) delete, written to Keycloak and PostgreSQL so that both always agree.
//!
//! **Invariants:** a change is made in a PostgreSQL transaction that commits only after
//! Keycloak accepted it, so Keycloak failing leaves PostgreSQL untouched; a user created in
//! Keycloak whose row then cannot be written is deleted from Keycloak again (compensation), and
//! the reconciliation job repairs anything a crash between the two leaves behind. Deactivation
//! and deletion revoke every session at once. A deleted user's row stays (status `deleted`) so
//! the audit trail keeps its subject. In organization mode the Keycloak account is shared by
//! the region's tenants: the tenant removes its membership instead of disabling or deleting it.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use salvo::oapi::{ToSchema, endpoint};
use salvo::prelude::*;
use serde::Deserialize;
use serde_json::json;

use super::User;
use crate::app::AppState;
use crate::auth::keycloak::IdpError;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::http::extract::{JsonBody, ListParams, Page, Path};
use crate::http::reply::{NoContent, Reply};
use crate::ids::UserId;
use crate::rbac::need::{UsersCreate, UsersDeactivate, UsersDelete, UsersRead, UsersUpdate};
use crate::rbac::perm::Scope;
use crate::rbac::{Caller, Can};
use crate::schema::tenant::users;
use crate::tenancy::cache::ResolvedTenant;
use crate::tenancy::model::IdentityMode;
use crate::tenancy::resolve::CurrentTenant;

use crate::http::extract::state;

fn idp_down(e: IdpError) -> ApiError {
    ApiError::new(
        ErrorCode::IdentityUnavailable,
        "Keycloak is unavailable; nothing was changed",
    )
    .with_source(e)
}

fn realm_of(tenant: &ResolvedTenant) -> ApiResult<&str> {
    tenant
        .tenant
        .identity
        .realm
        .as_deref()
        .filter(|_| tenant.tenant.identity.is_complete())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::IdentityUnavailable,
                "the tenant's identity home is not provisioned",
            )
        })
}

/// A user to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 3-64 characters of a-z, 0-9, `.`, `_`, `-`.
    pub username: String,
    pub email: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// An initial password; the user must change it at first login unless `temporary` is false.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default = "yes")]
    pub temporary: bool,
}

fn yes() -> bool {
    true
}

/// Fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

fn check_email(email: &str, pointer: &str, errors: &mut Vec<FieldError>) {
    let ok = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'));
    if !ok {
        errors.push(FieldError {
            pointer: pointer.into(),
            message: "must be an email address".into(),
        });
    }
}

fn check_display(name: &Option<String>, errors: &mut Vec<FieldError>) {
    if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        errors.push(FieldError {
            pointer: "/display_name".into(),
            message: "must be at most 200 characters".into(),
        });
    }
}

/// Keycloak's user profile wants a first and a last name: split a display name into both.
fn names(display: &str) -> (String, String) {
    match display.trim().split_once(' ') {
        Some((first, last)) => (first.to_string(), last.trim().to_string()),
        None => (display.trim().to_string(), display.trim().to_string()),
    }
}

/// Create a user in the tenant (Keycloak account and user row).
#[endpoint(tags("users"), status_codes(201, 401, 403, 409, 422, 503))]
pub async fn create_user(
    can: Can<UsersCreate>,
    tenant: CurrentTenant,
    body: JsonBody<NewUser>,
    depot: &mut Depot,
) -> ApiResult<Reply<User>> {
    let state = state(depot)?;
    let input = body.0;
    let mut errors = Vec::new();
    let username_ok = (3..=64).contains(&input.username.len())
        && input.username.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if !username_ok {
        errors.push(FieldError {
            pointer: "/username".into(),
            message: "must be 3-64 characters of a-z, 0-9, . _ -".into(),
        });
    }
    check_email(&input.email, "/email", &mut errors);
    check_display(&input.display_name, &mut errors);
    if input
        .password
        .as_ref()
        .is_some_and(|p| !(8..=256).contains(&p.chars().count()))
    {
        errors.push(FieldError {
            pointer: "/password".into(),
            message: "must be 8-256 characters".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let resolved = &tenant.0;
    let realm = realm_of(resolved)?;
    let (first, last) = names(input.display_name.as_deref().unwrap_or(&input.username));
    let mut representation = json!({
        "username": input.username, "email": input.email, "emailVerified": false, "enabled": true,
        "firstName": first, "lastName": last,
    });
    if let Some(password) = &input.password {
        representation["credentials"] =
            json!([{"type": "password", "value": password, "temporary": input.temporary}]);
    }
    let kc = &state.keycloak;
    let subject = kc
        .create_user(realm, &representation)
        .await
        .map_err(idp_down)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Conflict,
                "a user with this username or email already exists",
            )
        })?;
    let written: ApiResult<User> = async {
        if let (IdentityMode::Organization, Some(org)) = (
            resolved.tenant.identity.mode,
            resolved.tenant.identity.org_id.as_deref(),
        ) {
            kc.add_organization_member(realm, org, &subject)
                .await
                .map_err(idp_down)?;
        }
        let mut tx = resolved.db.begin().await?;
        let result = diesel::insert_into(users::table)
            .values((
                users::id.eq(UserId::generate().0),
                users::subject.eq(&subject),
                users::username.eq(&input.username),
                users::email.eq(&input.email),
                users::display_name.eq(&input.display_name),
            ))
            .returning(super::repo::row_selection())
            .get_result(tx.conn())
            .await
            .map(User::from)
            .map_err(ApiError::from);
        let result = match result {
            Ok(user) => crate::audit::record(
                tx.conn(),
                &can.actor,
                crate::audit::Change {
                    action: "user.created",
                    target_type: "user",
                    target_id: Some(user.id.to_string()),
                    data: json!({"after": {"username": user.username, "email": user.email,
                                           "display_name": user.display_name}}),
                },
            )
            .await
            .map(|()| user)
            .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        tx.finish(result).await
    }
    .await;
    match written {
        Ok(user) => Ok(Reply::created(
            user.clone(),
            format!("/v1/users/{}", user.id),
        )),
        Err(e) => {
            // Compensate: the Keycloak account must not outlive a failed creation.
            if let Err(undo) = kc.delete_user(realm, &subject).await {
                tracing::error!(error = %undo, subject, "compensating a failed user creation failed; reconciliation will pick it up");
            }
            Err(e)
        }
    }
}

/// List the tenant's users, oldest first.
#[endpoint(tags("users"), status_codes(200, 400, 401, 403))]
pub async fn list_users(
    _can: Can<UsersRead>,
    tenant: CurrentTenant,
    page: ListParams<UserId>,
) -> ApiResult<Reply<Page<User>>> {
    let mut tx = tenant.0.db.begin().await?;
    let mut query = users::table
        .select(super::repo::row_selection())
        .order(users::id.asc())
        .limit(i64::from(page.limit) + 1)
        .into_boxed();
    if let Some(after) = page.after {
        query = query.filter(users::id.gt(after.0));
    }
    let result = query.load(tx.conn()).await.map_err(ApiError::from);
    let rows: Vec<User> = tx
        .finish(result)
        .await?
        .into_iter()
        .map(User::from)
        .collect();
    Ok(Reply::ok(Page::from_rows(rows, page.limit, |u| u.id)))
}

/// One user (the user itself, or with `users.read.tenant`).
#[endpoint(tags("users"), status_codes(200, 400, 401, 403, 404))]
pub async fn get_user(
    caller: Caller,
    tenant: CurrentTenant,
    id: Path<UserId>,
) -> ApiResult<Reply<User>> {
    if caller.user.user.id != id.0 {
        caller.require("users", "read", Scope::Tenant)?;
    }
    Ok(Reply::ok(super::service::by_id(&tenant.0.db, id.0).await?))
}

/// Applies `change` to the row inside a transaction that commits only if `idp` succeeds.
#[allow(clippy::too_many_arguments)]
async fn change<F>(
    state: &AppState,
    tenant: &ResolvedTenant,
    actor: &crate::audit::Actor,
    action: &str,
    id: UserId,
    set_status: Option<&str>,
    patch: Option<&UserPatch>,
    idp: F,
) -> ApiResult<User>
where
    F: AsyncFnOnce(&User) -> Result<(), IdpError>,
{
    let mut tx = tenant.db.begin().await?;
    let result: ApiResult<User> = async {
        let current = super::repo::get(tx.conn(), id)
            .await?
            .ok_or_else(|| ApiError::not_found("user"))?;
        if current.status == "deleted" {
            return Err(ApiError::new(ErrorCode::Conflict, "the user was deleted"));
        }
        let email = patch
            .and_then(|p| p.email.clone())
            .or(current.email.clone());
        let display = patch
            .and_then(|p| p.display_name.clone())
            .or(current.display_name.clone());
        let status = set_status.unwrap_or(&current.status).to_string();
        let updated = diesel::update(users::table.find(id.0))
            .set((
                users::email.eq(&email),
                users::display_name.eq(&display),
                users::status.eq(&status),
                users::updated_at.eq(Utc::now()),
            ))
            .returning(super::repo::row_selection())
            .get_result(tx.conn())
            .await
            .map(User::from)?;
        crate::audit::record(
            tx.conn(),
            actor,
            crate::audit::Change {
                action,
                target_type: "user",
                target_id: Some(id.to_string()),
                data: json!({
                    "before": {"email": current.email, "display_name": current.display_name, "status": current.status},
                    "after": {"email": updated.email, "display_name": updated.display_name, "status": updated.status},
                }),
            },
        )
        .await?;
        idp(&updated).await.map_err(idp_down)?;
        Ok(updated)
    }
    .await;
    let user = tx.finish(result).await?;
    state.users.evict(tenant.tenant.id, &user.subject);
    Ok(user)
}

/// Change a user's email or display name (in Keycloak too).
#[endpoint(tags("users"), status_codes(200, 400, 401, 403, 404, 409, 422, 503))]
pub async fn patch_user(
    can: Can<UsersUpdate>,
    tenant: CurrentTenant,
    id: Path<UserId>,
    body: JsonBody<UserPatch>,
    depot: &mut Depot,
) -> ApiResult<Reply<User>> {
    let state = state(depot)?;
    let mut errors = Vec::new();
    if let Some(email) = &body.0.email {
        check_email(email, "/email", &mut errors);
    }
    check_display(&body.0.display_name, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let realm = realm_of(&tenant.0)?.to_string();
    let kc = state.keycloak.clone();
    let user = change(
        &state,
        &tenant.0,
        &can.actor,
        "user.updated",
        id.0,
        None,
        Some(&body.0),
        async |u: &User| {
            kc.update_user(
                &realm,
                &u.subject,
                &json!({"email": u.email, "firstName": u.display_name.clone().unwrap_or_default()}),
            )
            .await
        },
    )
    .await?;
    Ok(Reply::ok(user))
}

async fn set_active(
    state: &AppState,
    tenant: &ResolvedTenant,
    actor: &crate::audit::Actor,
    id: UserId,
    active: bool,
) -> ApiResult<User> {
    let realm = realm_of(tenant)?.to_string();
    let identity = tenant.tenant.identity.clone();
    let kc = state.keycloak.clone();
    let user = change(
        state,
        tenant,
        actor,
        if active {
            "user.reactivated"
        } else {
            "user.deactivated"
        },
        id,
        Some(if active { "active" } else { "deactivated" }),
        None,
        async |u: &User| {
            match (identity.mode, identity.org_id.as_deref()) {
                // A shared account: the tenant grants or withdraws its membership only.
                (IdentityMode::Organization, Some(org)) if active => {
                    kc.add_organization_member(&realm, org, &u.subject).await
                }
                (IdentityMode::Organization, Some(org)) => {
                    kc.remove_organization_member(&realm, org, &u.subject).await
                }
                _ => {
                    kc.update_user(&realm, &u.subject, &json!({"enabled": active}))
                        .await
                }
            }
        },
    )
    .await?;
    if !active {
        revoke_all(state, tenant, &user.subject).await;
    }
    Ok(user)
}

async fn revoke_all(state: &AppState, tenant: &ResolvedTenant, subject: &str) {
    let sids: Vec<String> = match state.sessions.list(tenant.tenant.id, subject).await {
        Ok(list) => list.into_iter().map(|s| s.id).collect(),
        Err(_) => Vec::new(),
    };
    if let Err(error) = state
        .sessions
        .revoke(tenant.tenant.id, subject, &sids)
        .await
    {
        tracing::warn!(%error, "revoking sessions failed; the user row is inactive and refused anyway");
    }
}

/// Deactivate a user: refused from now on, sessions ended, account disabled in Keycloak.
#[endpoint(tags("users"), status_codes(200, 400, 401, 403, 404, 409, 503))]
pub async fn deactivate_user(
    can: Can<UsersDeactivate>,
    tenant: CurrentTenant,
    id: Path<UserId>,
    depot: &mut Depot,
) -> ApiResult<Reply<User>> {
    let me = &can.user;
    if me.user.id == id.0 {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "you cannot deactivate yourself",
        ));
    }
    let state = state(depot)?;
    Ok(Reply::ok(
        set_active(&state, &tenant.0, &can.actor, id.0, false).await?,
    ))
}

/// Reactivate a deactivated user.
#[endpoint(tags("users"), status_codes(200, 400, 401, 403, 404, 409, 503))]
pub async fn reactivate_user(
    can: Can<UsersDeactivate>,
    tenant: CurrentTenant,
    id: Path<UserId>,
    depot: &mut Depot,
) -> ApiResult<Reply<User>> {
    let state = state(depot)?;
    Ok(Reply::ok(
        set_active(&state, &tenant.0, &can.actor, id.0, true).await?,
    ))
}

/// Delete a user: the row stays as `deleted` (audit trail); the Keycloak account (or, for a
/// shared account, the tenant's membership) goes; sessions end.
#[endpoint(tags("users"), status_codes(204, 400, 401, 403, 404, 409, 503))]
pub async fn delete_user(
    can: Can<UsersDelete>,
    tenant: CurrentTenant,
    id: Path<UserId>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let me = &can.user;
    if me.user.id == id.0 {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "you cannot delete yourself",
        ));
    }
    let state = state(depot)?;
    let resolved = &tenant.0;
    let realm = realm_of(resolved)?.to_string();
    let identity = resolved.tenant.identity.clone();
    let kc = state.keycloak.clone();
    let user = change(
        &state,
        resolved,
        &can.actor,
        "user.deleted",
        id.0,
        Some("deleted"),
        None,
        async |u: &User| match (identity.mode, identity.org_id.as_deref()) {
            (IdentityMode::Organization, Some(org)) => {
                kc.remove_organization_member(&realm, org, &u.subject).await
            }
            _ => kc.delete_user(&realm, &u.subject).await,
        },
    )
    .await?;
    revoke_all(&state, resolved, &user.subject).await;
    Ok(NoContent)
}

pub fn router() -> Router {
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
