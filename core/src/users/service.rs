//! Just-in-time users and the per-instance user cache (profile TTL 15 minutes, as planned).

use super::ReconcileReport;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::json;

use super::repo::{self, SeenUser};
use super::{NewUser, User, UserPatch, UsersState};
use crate::audit::{self, Actor, Change};
use crate::auth::keycloak::IdpError;
use crate::auth::token::Principal;
use crate::db::TenantDb;
use crate::error::FieldError;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ids::{TenantId, UserId};
use crate::tenancy::cache::ResolvedTenant;
use crate::tenancy::model::IdentityMode;

const TTL: Duration = Duration::from_secs(15 * 60);
const MAX_ENTRIES: usize = 100_000;

/// Users by (tenant, subject), loaded at most once per TTL per instance.
#[derive(Default)]
pub struct UserCache {
    /// Per tenant, by identity-provider subject (looked up without allocating).
    entries: RwLock<HashMap<TenantId, HashMap<String, CachedUser>>>,
}

/// When it was loaded, and the user.
type CachedUser = (Instant, Arc<User>);

impl UserCache {
    fn get(&self, tenant: TenantId, subject: &str) -> Option<Arc<User>> {
        let entries = self.entries.read().expect("user cache lock");
        let (at, user) = entries.get(&tenant)?.get(subject)?;
        (at.elapsed() < TTL).then(|| user.clone())
    }

    fn put(&self, tenant: TenantId, user: Arc<User>) {
        let mut entries = self.entries.write().expect("user cache lock");
        if entries.values().map(HashMap::len).sum::<usize>() >= MAX_ENTRIES {
            entries.clear();
        }
        entries
            .entry(tenant)
            .or_default()
            .insert(user.subject.clone(), (Instant::now(), user));
    }

    /// Forgets a user (after it changed) so its next request reloads it.
    pub fn evict(&self, tenant: TenantId, subject: &str) {
        if let Some(users) = self
            .entries
            .write()
            .expect("user cache lock")
            .get_mut(&tenant)
        {
            users.remove(subject);
        }
    }
}

/// The active user behind `principal`, created on first sight.
pub async fn current(
    cache: &UserCache,
    tenant: TenantId,
    db: &TenantDb,
    principal: &Principal,
) -> ApiResult<Arc<User>> {
    let user = match cache.get(tenant, &principal.subject) {
        Some(user) => user,
        None => {
            let seen = SeenUser {
                subject: &principal.subject,
                username: principal.username.as_deref(),
                email: principal.email.as_deref(),
                display_name: principal.name.as_deref(),
                as_of: principal.issued_at,
            };
            let user = db
                .transaction(async |tx| {
                    Ok::<_, ApiError>(repo::upsert_seen(tx.conn(), &seen).await?)
                })
                .await?
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::UserInactive,
                        "this user was erased in this tenant",
                    )
                })?;
            let user = Arc::new(user);
            cache.put(tenant, user.clone());
            user
        }
    };
    if user.status != "active" {
        return Err(ApiError::new(
            ErrorCode::UserInactive,
            format!("this user is {} in this tenant", user.status),
        ));
    }
    Ok(user)
}

/// A user of the tenant by id.
pub async fn by_id(db: &TenantDb, id: UserId) -> ApiResult<User> {
    db.transaction(async |tx| Ok::<_, ApiError>(repo::get(tx.conn(), id).await?))
        .await?
        .ok_or_else(|| ApiError::not_found("user"))
}

/// The one active user whose email is `email` (case-insensitive).
pub async fn by_email(db: &TenantDb, email: &str) -> ApiResult<UserId> {
    let found = db
        .read(async |conn| Ok::<_, ApiError>(repo::active_by_email(conn, email, 2).await?))
        .await?;
    match found.as_slice() {
        [one] => Ok(UserId(*one)),
        [] => Err(ApiError::not_found("user")),
        _ => Err(ApiError::new(
            crate::error::ErrorCode::Conflict,
            "several users have this email; give user_id",
        )),
    }
}

/// Brings this tenant's users in line with Keycloak: created, changed and disabled users
/// arrive; users gone from Keycloak (or from the tenant's organization) are deactivated, and
/// sessions of users who became inactive are revoked.
pub async fn reconcile(
    state: &super::UsersState,
    resolved: &crate::tenancy::cache::ResolvedTenant,
) -> ApiResult<ReconcileReport> {
    let tenant = &resolved.tenant;
    let identity = &tenant.identity;
    if identity.mode == crate::tenancy::model::IdentityMode::Local {
        // Local users live only here: nothing to reconcile with.
        return Ok(ReconcileReport::default());
    }
    let realm = identity
        .realm
        .as_deref()
        .filter(|_| identity.is_complete())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::IdentityUnavailable,
                "the tenant's identity home is not provisioned",
            )
        })?;
    let org_id = identity.org_id.as_deref();
    let unavailable = |e: crate::auth::keycloak::IdpError| {
        ApiError::new(ErrorCode::IdentityUnavailable, "Keycloak is unavailable").with_source(e)
    };
    let mut listed = Vec::new();
    let page = 200;
    loop {
        let batch = state
            .keycloak
            .list_users(realm, org_id, listed.len(), page)
            .await
            .map_err(unavailable)?;
        let n = batch.len();
        listed.extend(batch);
        if n < page {
            break;
        }
    }
    let mut report = ReconcileReport {
        seen: listed.len(),
        ..Default::default()
    };
    let mut became_inactive = Vec::new();
    resolved
        .db
        .transaction(async |tx| -> ApiResult<()> {
            let mut present = Vec::with_capacity(listed.len());
            for u in &listed {
                let Some(subject) = u["id"].as_str() else {
                    continue;
                };
                let name = match (u["firstName"].as_str(), u["lastName"].as_str()) {
                    (Some(f), Some(l)) => Some(format!("{f} {l}")),
                    (Some(f), None) => Some(f.to_string()),
                    (None, Some(l)) => Some(l.to_string()),
                    (None, None) => None,
                };
                let enabled = u["enabled"].as_bool().unwrap_or(true);
                let idp = repo::IdpUser {
                    subject,
                    username: u["username"].as_str(),
                    email: u["email"].as_str(),
                    display_name: name.as_deref(),
                    enabled,
                };
                if repo::reconcile_one(tx.conn(), &idp).await? {
                    report.changed += 1;
                    if !enabled {
                        became_inactive.push(subject.to_string());
                    }
                }
                present.push(subject.to_string());
            }
            let removed = repo::deactivate_missing(tx.conn(), &present).await?;
            report.removed = removed.len();
            became_inactive.extend(removed);
            Ok(())
        })
        .await?;
    for subject in &became_inactive {
        state.users.evict(tenant.id, subject);
        if let Ok(sessions) = state.sessions.list(tenant.id, subject).await {
            let sids: Vec<String> = sessions.into_iter().map(|s| s.id).collect();
            if let Err(error) = state.sessions.revoke(tenant.id, subject, &sids).await {
                tracing::warn!(%error, "revoking an inactive user's sessions failed");
            }
        }
    }
    for u in &listed {
        if let Some(subject) = u["id"].as_str() {
            state.users.evict(tenant.id, subject);
        }
    }
    tracing::info!(tenant = %tenant.slug, seen = report.seen, changed = report.changed, removed = report.removed, "users reconciled");
    Ok(report)
}

/// Reconciles every active tenant's users every `interval`, one instance per tenant at a time
/// (a Redis lock per tenant and round), until `shutdown` fires.
pub async fn reconcile_loop(
    state: std::sync::Arc<super::UsersState>,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let mut after = None;
        loop {
            let page = match crate::tenancy::service::list(&state.tenancy, after, 200).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "user reconciliation could not list tenants");
                    break;
                }
            };
            let Some(last) = page.last() else { break };
            after = Some(last.id.0);
            for tenant in page
                .iter()
                .filter(|t| t.status == crate::tenancy::model::TenantStatus::Active)
            {
                let lock = crate::keys::reconcile_lock(tenant.id);
                let mut redis = state.redis.clone();
                let won: redis::RedisResult<Option<String>> = redis::cmd("SET")
                    .arg(&lock)
                    .arg(1)
                    .arg("NX")
                    .arg("EX")
                    .arg(interval.as_secs().max(1))
                    .query_async(&mut redis)
                    .await;
                if !matches!(won, Ok(Some(_))) {
                    continue;
                }
                let resolved = crate::tenancy::service::resolved(&state.tenancy, tenant.clone());
                if let Err(error) = reconcile(&state, &resolved).await {
                    tracing::warn!(tenant = %tenant.slug, %error, "user reconciliation failed");
                }
            }
        }
    }
}

// ---- management by tenant admins -------------------------------------------------------
//
// **Invariants:** a change is made in a PostgreSQL transaction that commits only after
// Keycloak accepted it, so Keycloak failing leaves PostgreSQL untouched; a user created in
// Keycloak whose row then cannot be written is deleted from Keycloak again (compensation), and
// the reconciliation job repairs anything a crash between the two leaves behind. Deactivation
// and deletion revoke every session at once. A deleted user's row stays (status `deleted`) so
// the audit trail keeps its subject. In organization mode the Keycloak account is shared by
// the region's tenants: the tenant removes its membership instead of disabling or deleting it.

fn idp_down(e: IdpError) -> ApiError {
    ApiError::new(
        ErrorCode::IdentityUnavailable,
        "Keycloak is unavailable; nothing was changed",
    )
    .with_source(e)
}

fn realm_of(tenant: &ResolvedTenant) -> ApiResult<&str> {
    if tenant.tenant.identity.mode == crate::tenancy::model::IdentityMode::Local {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "this tenant keeps its users locally: the platform operator manages them \
             (/admin/v1/tenants/{slug}/local-users); here, change roles, teams and attributes",
        ));
    }
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

/// Creates a user (Keycloak account, then the row; the account is removed again if the row
/// cannot be written).
pub async fn create(
    state: &UsersState,
    tenant: &ResolvedTenant,
    actor: &Actor,
    input: &NewUser,
) -> ApiResult<User> {
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
    let realm = realm_of(tenant)?;
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
            tenant.tenant.identity.mode,
            tenant.tenant.identity.org_id.as_deref(),
        ) {
            kc.add_organization_member(realm, org, &subject)
                .await
                .map_err(idp_down)?;
        }
        tenant
            .db
            .transaction(async |tx| {
                let user = repo::insert(
                    tx.conn(),
                    &subject,
                    &input.username,
                    &input.email,
                    input.display_name.as_deref(),
                )
                .await?;
                audit::record(
                    tx.conn(),
                    actor,
                    Change {
                        action: "user.created",
                        target_type: "user",
                        target_id: Some(user.id.to_string()),
                        data: json!({"after": {"username": user.username, "email": user.email,
                                               "display_name": user.display_name}}),
                    },
                )
                .await?;
                Ok::<_, ApiError>(user)
            })
            .await
    }
    .await;
    if written.is_err() {
        // Compensate: the Keycloak account must not outlive a failed creation.
        if let Err(undo) = kc.delete_user(realm, &subject).await {
            tracing::error!(error = %undo, subject, "compensating a failed user creation failed; reconciliation will pick it up");
        }
    }
    written
}

/// A page of the tenant's users, oldest first (`limit` + 1 rows: the extra one says there is
/// a next page).
pub async fn list(
    db: &TenantDb,
    filter: &super::UserFilter,
    after: Option<UserId>,
    limit: i64,
) -> ApiResult<Vec<User>> {
    db.transaction(async |tx| Ok::<_, ApiError>(repo::page(tx.conn(), filter, after, limit).await?))
        .await
}

/// Applies `change` to the row inside a transaction that commits only if `idp` succeeds.
#[allow(clippy::too_many_arguments)]
async fn change<F>(
    state: &UsersState,
    tenant: &ResolvedTenant,
    actor: &Actor,
    action: &str,
    id: UserId,
    set_status: Option<&str>,
    patch: Option<&UserPatch>,
    idp: F,
) -> ApiResult<User>
where
    F: AsyncFnOnce(&User) -> Result<(), IdpError>,
{
    let user = tenant.db.transaction(async |tx| -> ApiResult<User> {
        let current = repo::get(tx.conn(), id)
            .await?
            .ok_or_else(|| ApiError::not_found("user"))?;
        if current.status == "deleted" {
            return Err(ApiError::new(ErrorCode::Conflict, "the user was deleted"));
        }
        let status = set_status.unwrap_or(&current.status).to_string();
        let updated = if status == "deleted" {
            // A deleted user's row keeps no email, name or profile in clear.
            repo::forget_profile(tx.conn(), id).await?
        } else {
            let email = patch
                .and_then(|p| p.email.clone())
                .or(current.email.clone());
            let display = patch
                .and_then(|p| p.display_name.clone())
                .or(current.display_name.clone());
            repo::set_profile(
                tx.conn(),
                id,
                email.as_deref(),
                display.as_deref(),
                &status,
            )
            .await?
        };
        audit::record(
            tx.conn(),
            actor,
            Change {
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
    })
    .await?;
    state.users.evict(tenant.tenant.id, &user.subject);
    Ok(user)
}

/// Changes a user's email or display name (in Keycloak too).
pub async fn update(
    state: &UsersState,
    tenant: &ResolvedTenant,
    actor: &Actor,
    id: UserId,
    patch: &UserPatch,
) -> ApiResult<User> {
    let mut errors = Vec::new();
    if let Some(email) = &patch.email {
        check_email(email, "/email", &mut errors);
    }
    check_display(&patch.display_name, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let realm = realm_of(tenant)?.to_string();
    let kc = state.keycloak.clone();
    change(
        state,
        tenant,
        actor,
        "user.updated",
        id,
        None,
        Some(patch),
        async |u: &User| {
            kc.update_user(
                &realm,
                &u.subject,
                &json!({"email": u.email, "firstName": u.display_name.clone().unwrap_or_default()}),
            )
            .await
        },
    )
    .await
}

/// Deactivates (`active == false`) or reactivates a user; deactivation ends their sessions.
pub async fn set_active(
    state: &UsersState,
    tenant: &ResolvedTenant,
    actor: &Actor,
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

pub async fn revoke_all(state: &UsersState, tenant: &ResolvedTenant, subject: &str) {
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

/// Deletes a user: the row stays as `deleted` (the audit trail names its id) but keeps no
/// email, name, username, attributes, preferences or avatar; the Keycloak account (or, for a shared
/// account, the tenant's membership) goes; sessions end.
pub async fn delete(
    state: &UsersState,
    tenant: &ResolvedTenant,
    actor: &Actor,
    id: UserId,
) -> ApiResult<()> {
    let realm = realm_of(tenant)?.to_string();
    let identity = tenant.tenant.identity.clone();
    let kc = state.keycloak.clone();
    let user = change(
        state,
        tenant,
        actor,
        "user.deleted",
        id,
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
    revoke_all(state, tenant, &user.subject).await;
    Ok(())
}
