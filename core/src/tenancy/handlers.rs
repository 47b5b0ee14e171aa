//! Platform-admin HTTP API for tenants (`/admin/v1/tenants`), behind the platform token.
//!
//! Translates HTTP to `service` calls and back; no SQL and no business rules here.

use std::str::FromStr;

use salvo::oapi::extract::QueryParam;
use salvo::oapi::{self, endpoint};
use salvo::prelude::*;
use sha2::{Digest, Sha256};

use super::TenancyState;
use super::model::{CreateTenant, TenantView, validate_slug};
use super::service;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::extract::{JsonBody, ListParams, Page, Path};
use crate::http::problem::Render;
use crate::http::reply::{NoContent, Reply};
use crate::ratelimit::{Attempt, Decision, fingerprint};

use crate::http::extract::dep;

/// A syntactically valid tenant slug in a path.
#[derive(Debug, Clone)]
pub struct Slug(pub String);

impl FromStr for Slug {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        validate_slug(s).map(|()| Slug(s.to_string()))
    }
}

impl oapi::ToSchema for Slug {
    fn to_schema(_c: &mut oapi::Components) -> oapi::RefOr<oapi::schema::Schema> {
        oapi::Object::new()
            .schema_type(oapi::schema::BasicType::String)
            .pattern("^[a-z][a-z0-9-]{1,38}[a-z0-9]$")
            .into()
    }
}

/// Hoop: the platform token as a bearer token, compared in constant time.
pub struct AdminAuth;

#[async_trait]
impl Handler for AdminAuth {
    async fn handle(
        &self,
        req: &mut Request,
        depot: &mut Depot,
        res: &mut Response,
        ctrl: &mut FlowCtrl,
    ) {
        let Ok(state) = dep::<TenancyState>(depot) else {
            ctrl.skip_rest();
            return;
        };
        let presented = req
            .headers()
            .get(salvo::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        // A wrong platform token counts towards the lockouts like any failed authentication.
        let auth = dep::<crate::auth::AuthState>(depot).ok();
        let ip = crate::auth::hoops::client_ip(
            req,
            auth.as_ref()
                .is_some_and(|a| a.limiter.config().trust_forwarded_for),
        );
        let who = presented.map(|p| fingerprint(&[b"platform", p.as_bytes()]));
        if let (Some(auth), Some(who)) = (&auth, &who) {
            let refused = match auth
                .limiter
                .check_attempt(ip, Attempt::Credential(who))
                .await
            {
                Decision::Locked { retry_after_secs } => {
                    Some((ErrorCode::AuthLocked, retry_after_secs))
                }
                Decision::Limited {
                    retry_after_secs, ..
                } => Some((ErrorCode::RateLimited, retry_after_secs)),
                Decision::Allowed { .. } => None,
            };
            if let Some((code, retry)) = refused {
                if let Ok(v) = salvo::http::HeaderValue::from_str(&retry.to_string()) {
                    res.headers_mut()
                        .insert(salvo::http::header::RETRY_AFTER, v);
                }
                ApiError::new(code, format!("retry in {retry} s")).render(req, depot, res);
                ctrl.skip_rest();
                return;
            }
        }
        let expected = state.config.admin.token.expose();
        let ok = presented.is_some_and(|p| {
            // Equal-length digests compared without early exit: no timing oracle on the token.
            let a = Sha256::digest(p.as_bytes());
            let b = Sha256::digest(expected.as_bytes());
            crate::crypto::ct_eq(&a, &b)
        });
        if !ok {
            res.headers_mut().insert(
                salvo::http::header::WWW_AUTHENTICATE,
                salvo::http::HeaderValue::from_static("Bearer realm=\"neotenant-admin\""),
            );
            let detail = if presented.is_some() {
                "the platform token is not valid"
            } else {
                "send the platform token as `Authorization: Bearer <token>`"
            };
            if let (Some(auth), Some(who)) = (&auth, &who) {
                auth.limiter
                    .record_failure(ip, Attempt::Credential(who))
                    .await;
            }
            ApiError::new(ErrorCode::Unauthorized, detail).render(req, depot, res);
            ctrl.skip_rest();
        }
    }
}

/// Create a tenant (idempotent: repeating a create finishes an interrupted one).
#[endpoint(
    tags("admin: tenants"),
    status_codes(200, 201, 400, 401, 409, 422, 503)
)]
pub async fn create_tenant(
    body: JsonBody<CreateTenant>,
    depot: &mut Depot,
) -> ApiResult<Reply<TenantView>> {
    let state = dep::<TenancyState>(depot)?;
    let (tenant, created) = service::create(&state, &body.0).await?;
    let view = TenantView::from(&tenant);
    Ok(if created {
        Reply::created(view, format!("/admin/v1/tenants/{}", tenant.slug))
    } else {
        Reply::ok(view)
    })
}

/// List tenants, oldest first.
#[endpoint(tags("admin: tenants"), status_codes(200, 400, 401))]
pub async fn list_tenants(
    page: ListParams<uuid::Uuid>,
    depot: &mut Depot,
) -> ApiResult<Reply<Page<TenantView>>> {
    let state = dep::<TenancyState>(depot)?;
    let rows = service::list(&state, page.after, i64::from(page.limit) + 1).await?;
    let views: Vec<TenantView> = rows.iter().map(TenantView::from).collect();
    Ok(Reply::ok(Page::from_rows(views, page.limit, |t| t.id.0)))
}

/// Show one tenant.
#[endpoint(tags("admin: tenants"), status_codes(200, 400, 401, 404))]
pub async fn show_tenant(slug: Path<Slug>, depot: &mut Depot) -> ApiResult<Reply<TenantView>> {
    let state = dep::<TenancyState>(depot)?;
    Ok(Reply::ok(TenantView::from(
        &service::get(&state, &slug.0.0).await?,
    )))
}

/// Suspend a tenant: its API answers 403 `tenant-suspended` until resumed.
#[endpoint(tags("admin: tenants"), status_codes(200, 400, 401, 404, 409))]
pub async fn suspend_tenant(slug: Path<Slug>, depot: &mut Depot) -> ApiResult<Reply<TenantView>> {
    let state = dep::<TenancyState>(depot)?;
    Ok(Reply::ok(TenantView::from(
        &service::suspend(&state, &slug.0.0).await?,
    )))
}

/// Resume a suspended tenant.
#[endpoint(tags("admin: tenants"), status_codes(200, 400, 401, 404, 409))]
pub async fn resume_tenant(slug: Path<Slug>, depot: &mut Depot) -> ApiResult<Reply<TenantView>> {
    let state = dep::<TenancyState>(depot)?;
    Ok(Reply::ok(TenantView::from(
        &service::resume(&state, &slug.0.0).await?,
    )))
}

/// Delete a tenant and all its data. Requires `?confirm=<slug>`; without it answers 428.
#[endpoint(tags("admin: tenants"), status_codes(204, 400, 401, 404, 428, 503))]
pub async fn delete_tenant(
    slug: Path<Slug>,
    confirm: QueryParam<String, false>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<TenancyState>(depot)?;
    service::delete(&state, &slug.0.0, confirm.as_deref()).await?;
    Ok(NoContent)
}

/// Bring the tenant's users in line with Keycloak now (the background job does it periodically).
#[endpoint(tags("admin: tenants"), status_codes(200, 400, 401, 403, 404, 503))]
pub async fn reconcile_users(
    slug: Path<Slug>,
    depot: &mut Depot,
) -> ApiResult<Reply<crate::users::ReconcileReport>> {
    let state = dep::<TenancyState>(depot)?;
    let resolved = crate::tenancy::resolve::resolve(&state, &slug.0.0).await?;
    let report =
        crate::users::service::reconcile(&*dep::<crate::users::UsersState>(depot)?, &resolved)
            .await?;
    platform_event(
        &state,
        &resolved,
        "users.reconciled",
        "tenant",
        &resolved.tenant.id.to_string(),
        serde_json::to_value(&report).unwrap_or_default(),
    )
    .await?;
    Ok(Reply::ok(report))
}

/// A provider alias in a path.
#[derive(Debug, Clone)]
pub struct ProviderAlias(pub String);

impl FromStr for ProviderAlias {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if super::idp::valid_alias(s) {
            Ok(Self(s.to_string()))
        } else {
            Err("must be 1-40 characters of a-z, 0-9 and single hyphens".into())
        }
    }
}

impl oapi::ToSchema for ProviderAlias {
    fn to_schema(_c: &mut oapi::Components) -> oapi::RefOr<oapi::schema::Schema> {
        oapi::Object::new()
            .schema_type(oapi::schema::BasicType::String)
            .into()
    }
}

/// The tenant's login providers (social and enterprise).
#[endpoint(tags("admin: tenants"), status_codes(200, 400, 401, 404, 503))]
pub async fn list_identity_providers(
    slug: Path<Slug>,
    depot: &mut Depot,
) -> ApiResult<Reply<Vec<super::idp::IdentityProviderView>>> {
    let state = dep::<TenancyState>(depot)?;
    let resolved = crate::tenancy::resolve::resolve(&state, &slug.0.0).await?;
    Ok(Reply::ok(super::idp::list(&state, &resolved).await?))
}

/// Create or replace a login provider of the tenant (the client secret is write-only).
#[endpoint(tags("admin: tenants"), status_codes(200, 400, 401, 404, 422, 503))]
pub async fn put_identity_provider(
    slug: Path<Slug>,
    alias: Path<ProviderAlias>,
    body: JsonBody<super::idp::IdentityProviderInput>,
    depot: &mut Depot,
) -> ApiResult<Reply<super::idp::IdentityProviderView>> {
    let state = dep::<TenancyState>(depot)?;
    let resolved = crate::tenancy::resolve::resolve(&state, &slug.0.0).await?;
    let view = super::idp::put(&state, &resolved, &alias.0.0, &body.0).await?;
    platform_event(
        &state,
        &resolved,
        "identity_provider.saved",
        "identity_provider",
        &alias.0.0,
        serde_json::to_value(&view).unwrap_or_default(),
    )
    .await?;
    Ok(Reply::ok(view))
}

/// Records a platform operator's action in the tenant's audit log.
async fn platform_event(
    state: &TenancyState,
    tenant: &super::cache::ResolvedTenant,
    action: &str,
    target_type: &str,
    target_id: &str,
    data: serde_json::Value,
) -> ApiResult<()> {
    crate::audit::record_alone(
        &tenant.db,
        &crate::audit::Actor::platform(&state.audit_recent, tenant.tenant.id, &tenant.db),
        crate::audit::Change {
            action,
            target_type,
            target_id: Some(target_id.to_string()),
            data,
        },
    )
    .await
}

/// Remove a login provider of the tenant.
#[endpoint(tags("admin: tenants"), status_codes(204, 400, 401, 404, 503))]
pub async fn delete_identity_provider(
    slug: Path<Slug>,
    alias: Path<ProviderAlias>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<TenancyState>(depot)?;
    let resolved = crate::tenancy::resolve::resolve(&state, &slug.0.0).await?;
    super::idp::delete(&state, &resolved, &alias.0.0).await?;
    platform_event(
        &state,
        &resolved,
        "identity_provider.deleted",
        "identity_provider",
        &alias.0.0,
        serde_json::json!({}),
    )
    .await?;
    Ok(NoContent)
}

/// A user of a local-mode tenant, with its password.
#[derive(Debug, serde::Deserialize, oapi::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLocalUser {
    /// 3-64 characters of a-z, 0-9, `.`, `_`, `-`.
    pub username: String,
    pub email: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// 12-256 characters, without NUL.
    pub password: String,
}

/// Create a user (with a password) in a local-mode tenant.
#[endpoint(tags("admin: tenants"), status_codes(201, 400, 401, 404, 409, 422))]
pub async fn create_local_user(
    slug: Path<Slug>,
    body: JsonBody<NewLocalUser>,
    depot: &mut Depot,
) -> ApiResult<Reply<crate::users::User>> {
    let state = dep::<TenancyState>(depot)?;
    let resolved = crate::tenancy::resolve::resolve(&state, &slug.0.0).await?;
    if resolved.tenant.identity.mode != super::model::IdentityMode::Local {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "this tenant's users live in Keycloak",
        ));
    }
    let input = body.0;
    let mut errors = Vec::new();
    let username_ok = (3..=64).contains(&input.username.len())
        && input.username.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if !username_ok {
        errors.push(crate::error::FieldError {
            pointer: "/username".into(),
            message: "must be 3-64 characters of a-z, 0-9, . _ -".into(),
        });
    }
    if !input.email.contains('@') || input.email.len() > 254 {
        errors.push(crate::error::FieldError {
            pointer: "/email".into(),
            message: "must be an email address".into(),
        });
    }
    if let Err(message) = crate::auth::local::check_password_rule(&input.password) {
        errors.push(crate::error::FieldError {
            pointer: "/password".into(),
            message: message.into(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let password = input.password.clone();
    let hash = tokio::task::spawn_blocking(move || crate::auth::local::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let user = resolved
        .db
        .transaction(async |tx| {
            let user = crate::users::repo::create_local(
                tx.conn(),
                &input.username,
                &input.email,
                input.display_name.as_deref(),
                &hash,
            )
            .await?;
            crate::audit::record(
                tx.conn(),
                &crate::audit::Actor::platform(
                    &state.audit_recent,
                    resolved.tenant.id,
                    &resolved.db,
                ),
                crate::audit::Change {
                    action: "user.created",
                    target_type: "user",
                    target_id: Some(user.id.to_string()),
                    data: serde_json::json!({"after": {"username": user.username, "email": user.email,
                                                       "display_name": user.display_name}}),
                },
            )
            .await?;
            Ok::<_, ApiError>(user)
        })
        .await?;
    Ok(Reply::created(
        user.clone(),
        format!("/v1/users/{}", user.id),
    ))
}

/// The `/admin/v1` router.
/// A role to give a user of a tenant from the platform side.
#[derive(Debug, serde::Deserialize, oapi::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlatformAssignment {
    /// The role's key (e.g. `owner`).
    pub role: String,
    /// The user, by id…
    #[serde(default)]
    pub user_id: Option<crate::ids::UserId>,
    /// …or by email (exactly one active user must have it).
    #[serde(default)]
    pub email: Option<String>,
}

/// Give a user of the tenant a role, bypassing tenant delegation rules: how a platform
/// operator appoints a tenant's first owner. Audited as the platform.
#[endpoint(
    tags("admin: tenants"),
    status_codes(204, 400, 401, 404, 409, 422, 503)
)]
pub async fn assign_role(
    slug: Path<Slug>,
    body: JsonBody<PlatformAssignment>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<TenancyState>(depot)?;
    let resolved = crate::tenancy::resolve::resolve(&state, &slug.0.0).await?;
    let user = match (&body.0.user_id, &body.0.email) {
        (Some(id), None) => *id,
        (None, Some(email)) => crate::users::service::by_email(&resolved.db, email).await?,
        _ => {
            return Err(crate::error::ApiError::validation(vec![
                crate::error::FieldError {
                    pointer: "/user_id".into(),
                    message: "give exactly one of user_id and email".into(),
                },
            ]));
        }
    };
    crate::rbac::service::platform_assign(
        &*dep::<crate::rbac::RbacState>(depot)?,
        &resolved.db,
        resolved.tenant.id,
        &body.0.role,
        user,
    )
    .await?;
    Ok(NoContent)
}

pub fn router() -> Router {
    Router::with_path("admin/v1/tenants")
        .hoop(AdminAuth)
        .get(list_tenants)
        .post(create_tenant)
        .push(
            Router::with_path("{slug}")
                .get(show_tenant)
                .delete(delete_tenant)
                .push(Router::with_path("suspend").post(suspend_tenant))
                .push(Router::with_path("resume").post(resume_tenant))
                .push(Router::with_path("reconcile-users").post(reconcile_users))
                .push(Router::with_path("local-users").post(create_local_user))
                .push(Router::with_path("role-assignments").post(assign_role))
                .push(
                    Router::with_path("identity-providers")
                        .get(list_identity_providers)
                        .push(
                            Router::with_path("{alias}")
                                .put(put_identity_provider)
                                .delete(delete_identity_provider),
                        ),
                ),
        )
}
