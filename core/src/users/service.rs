//! Just-in-time users and the per-instance user cache (profile TTL 15 minutes, as planned).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::User;
use super::repo::{self, SeenUser};
use crate::auth::token::Principal;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ids::{TenantId, UserId};

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
            let mut tx = db.begin().await?;
            let result = repo::upsert_seen(tx.conn(), &seen)
                .await
                .map_err(ApiError::from);
            let user = Arc::new(tx.finish(result).await?);
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
    let mut tx = db.begin().await?;
    let result = repo::get(tx.conn(), id).await.map_err(ApiError::from);
    tx.finish(result)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))
}

/// The one active user whose email is `email` (case-insensitive).
pub async fn by_email(db: &TenantDb, email: &str) -> ApiResult<UserId> {
    use crate::schema::tenant::users;
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let mut tx = db.begin().await?;
    let result = users::table
        .filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("lower(email) = lower(")
                .bind::<diesel::sql_types::Text, _>(email.to_string())
                .sql(")"),
        )
        .filter(users::status.eq("active"))
        .select(users::id)
        .limit(2)
        .load::<uuid::Uuid>(tx.conn())
        .await
        .map_err(ApiError::from);
    match tx.finish(result).await?.as_slice() {
        [one] => Ok(UserId(*one)),
        [] => Err(ApiError::not_found("user")),
        _ => Err(ApiError::new(
            crate::error::ErrorCode::Conflict,
            "several users have this email; give user_id",
        )),
    }
}

/// What a reconciliation changed.
#[derive(Debug, Default, Clone, serde::Serialize, salvo::oapi::ToSchema)]
pub struct ReconcileReport {
    /// Users listed by the identity provider.
    pub seen: usize,
    /// Users created or whose profile or status changed.
    pub changed: usize,
    /// Users deactivated because the identity provider no longer lists them.
    pub removed: usize,
}

/// Brings this tenant's users in line with Keycloak: created, changed and disabled users
/// arrive; users gone from Keycloak (or from the tenant's organization) are deactivated, and
/// sessions of users who became inactive are revoked.
pub async fn reconcile(
    state: &crate::app::AppState,
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
    let mut tx = resolved.db.begin().await?;
    let result: ApiResult<()> = async {
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
    }
    .await;
    tx.finish(result).await?;
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
    state: std::sync::Arc<crate::app::AppState>,
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
            let page = match crate::tenancy::service::list(&state, after, 200).await {
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
                let lock = format!("neotenant:lock:reconcile:{}", tenant.id);
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
                let resolved = crate::tenancy::service::resolved(&state, tenant.clone());
                if let Err(error) = reconcile(&state, &resolved).await {
                    tracing::warn!(tenant = %tenant.slug, %error, "user reconciliation failed");
                }
            }
        }
    }
}
