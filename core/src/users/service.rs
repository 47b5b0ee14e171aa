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
    entries: RwLock<HashMap<UserKey, (Instant, Arc<User>)>>,
}

/// (tenant, identity-provider subject).
type UserKey = (TenantId, String);

impl UserCache {
    fn get(&self, tenant: TenantId, subject: &str) -> Option<Arc<User>> {
        let entries = self.entries.read().expect("user cache lock");
        let (at, user) = entries.get(&(tenant, subject.to_string()))?;
        (at.elapsed() < TTL).then(|| user.clone())
    }

    fn put(&self, tenant: TenantId, user: Arc<User>) {
        let mut entries = self.entries.write().expect("user cache lock");
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert((tenant, user.subject.clone()), (Instant::now(), user));
    }

    /// Forgets a user (after it changed) so its next request reloads it.
    pub fn evict(&self, tenant: TenantId, subject: &str) {
        self.entries
            .write()
            .expect("user cache lock")
            .remove(&(tenant, subject.to_string()));
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
                id: UserId::generate().0,
                subject: &principal.subject,
                username: principal.username.as_deref(),
                email: principal.email.as_deref(),
                display_name: principal.name.as_deref(),
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
