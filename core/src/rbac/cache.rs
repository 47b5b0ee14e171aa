//! Effective-permission caches: in-process (L1, one minute) and Redis (L2, five minutes),
//! invalidated on every instance through Redis pub/sub.
//!
//! Owns freshness. **Invariant:** a cached set is used only if it was computed at the tenant's
//! current *generation*, a Redis counter bumped after every committed change that feeds
//! permissions. A computation records the generation it started from, so a set computed from
//! data older than a change can never be stored as current — whatever order the change, the
//! broadcast and the computation interleave in. While the listener is not subscribed (Redis
//! down), L1 is bypassed: answers come from the database and stay correct. Never decides a
//! permission itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::perm::Effective;
use crate::ids::TenantId;

pub const CHANNEL: &str = crate::keys::channel::RBAC;
const L1_TTL: Duration = Duration::from_secs(60);
pub const L2_TTL_SECS: i64 = 300;
const L1_MAX_PER_TENANT: usize = 100_000;

use crate::keys::{rbac_generation as gen_key, rbac_permissions as hash_key};

/// What a cached set was computed for, besides the user: the identity-provider roles of the
/// token (realm mode), summarised.
pub type IdpKey = u64;

struct L1Entry {
    generation: i64,
    at: Instant,
    idp: IdpKey,
    effective: Arc<Effective>,
}

#[derive(Default)]
struct TenantEntries {
    /// The newest generation this instance has heard of.
    generation: i64,
    users: HashMap<Uuid, L1Entry>,
}

#[derive(Serialize, Deserialize)]
struct L2Entry {
    generation: i64,
    at: i64,
    idp: IdpKey,
    effective: Effective,
}

/// Read both the generation and the user's entry in one round trip.
const READ_SCRIPT: &str = r"
local g = redis.call('GET', KEYS[1]) or '0'
local v = redis.call('HGET', KEYS[2], ARGV[1])
return {g, v or ''}
";

pub struct PermCache {
    l1: RwLock<HashMap<Uuid, TenantEntries>>,
    /// Whether the invalidation listener is subscribed (L1 is trusted only then).
    live: AtomicBool,
    redis: crate::redis_link::Link,
    read: redis::Script,
    last_warning: AtomicI64,
}

impl PermCache {
    pub fn new(redis: crate::redis_link::Link) -> Self {
        Self {
            l1: RwLock::new(HashMap::new()),
            live: AtomicBool::new(false),
            redis,
            read: redis::Script::new(READ_SCRIPT),
            last_warning: AtomicI64::new(0),
        }
    }

    /// The user's set from L1, if fresh and current.
    pub fn l1(&self, tenant: TenantId, user: Uuid, idp: IdpKey) -> Option<Arc<Effective>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let l1 = self.l1.read().expect("rbac l1 lock");
        let entries = l1.get(&tenant.0)?;
        let e = entries.users.get(&user)?;
        (e.generation >= entries.generation && e.idp == idp && e.at.elapsed() < L1_TTL)
            .then(|| e.effective.clone())
    }

    /// The tenant's current generation and the user's L2 set if it is current.
    pub async fn l2(
        &self,
        tenant: TenantId,
        user: Uuid,
        idp: IdpKey,
    ) -> Result<(i64, Option<Effective>), redis::RedisError> {
        let mut conn = self.redis.clone();
        let (generation, raw): (String, String) = self
            .read
            .key(gen_key(tenant))
            .key(hash_key(tenant))
            .arg(user.simple().to_string())
            .invoke_async(&mut conn)
            .await?;
        let generation = generation.parse().unwrap_or(0);
        let now = chrono::Utc::now().timestamp();
        let hit = serde_json::from_str::<L2Entry>(&raw)
            .ok()
            .filter(|e| e.generation == generation && e.idp == idp && now - e.at < L2_TTL_SECS);
        Ok((generation, hit.map(|e| e.effective)))
    }

    /// Keeps a set computed at `generation` in L1 (unless a newer generation is known).
    pub fn put_l1(
        &self,
        tenant: TenantId,
        user: Uuid,
        idp: IdpKey,
        generation: i64,
        effective: Arc<Effective>,
    ) {
        if !self.live.load(Ordering::Acquire) {
            return;
        }
        let mut l1 = self.l1.write().expect("rbac l1 lock");
        let entries = l1.entry(tenant.0).or_default();
        if generation < entries.generation {
            return;
        }
        if entries.users.len() >= L1_MAX_PER_TENANT {
            entries.users.clear();
        }
        entries.users.insert(
            user,
            L1Entry {
                generation,
                at: Instant::now(),
                idp,
                effective,
            },
        );
    }

    /// Keeps a set computed at `generation` in L2.
    pub async fn put_l2(
        &self,
        tenant: TenantId,
        user: Uuid,
        idp: IdpKey,
        generation: i64,
        effective: &Effective,
    ) -> Result<(), redis::RedisError> {
        let entry = L2Entry {
            generation,
            at: chrono::Utc::now().timestamp(),
            idp,
            effective: effective.clone(),
        };
        let json = serde_json::to_string(&entry).expect("serialisable");
        let mut conn = self.redis.clone();
        let key = hash_key(tenant);
        redis::pipe()
            .hset(&key, user.simple().to_string(), json)
            .ignore()
            .expire(&key, L2_TTL_SECS)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }

    /// After a committed change to anything feeding `tenant`'s permissions: a new generation,
    /// announced to every instance. Local L1 is dropped even when Redis is unreachable.
    pub async fn invalidate(&self, tenant: TenantId) {
        self.forget(tenant.0, None);
        let mut conn = self.redis.clone();
        let result: Result<i64, _> = async {
            let generation: i64 = conn.incr(gen_key(tenant), 1).await?;
            let _: () = conn
                .publish(CHANNEL, format!("{}:{generation}", tenant.0.simple()))
                .await?;
            Ok::<_, redis::RedisError>(generation)
        }
        .await;
        match result {
            Ok(generation) => self.forget(tenant.0, Some(generation)),
            Err(error) => {
                tracing::warn!(%error, "permission change not broadcast: Redis unreachable; other instances bypass L1 until they reconnect");
            }
        }
    }

    /// Drops the tenant's L1 entries and remembers `generation` as current.
    fn forget(&self, tenant: Uuid, generation: Option<i64>) {
        let mut l1 = self.l1.write().expect("rbac l1 lock");
        let entries = l1.entry(tenant).or_default();
        entries.users.clear();
        if let Some(g) = generation {
            entries.generation = entries.generation.max(g);
        }
    }

    fn on_message(&self, payload: &str) {
        let Some((tenant, generation)) = payload.split_once(':') else {
            return;
        };
        if let (Ok(tenant), Ok(generation)) = (Uuid::parse_str(tenant), generation.parse()) {
            self.forget(tenant, Some(generation));
        }
    }

    fn set_live(&self, live: bool) {
        if !live || !self.live.load(Ordering::Acquire) {
            // Messages may have been missed: start from nothing.
            self.l1.write().expect("rbac l1 lock").clear();
        }
        self.live.store(live, Ordering::Release);
    }

    /// Logs a Redis failure on the permission path at most once a minute.
    pub fn warn_degraded(&self, error: &redis::RedisError) {
        let now = chrono::Utc::now().timestamp();
        let last = self.last_warning.load(Ordering::Relaxed);
        if now - last >= 60
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(%error, "permission cache unavailable; answering from the database");
        }
    }
}

/// Subscribes to permission changes and applies them to L1 until shutdown; while not
/// subscribed, L1 is off.
pub async fn listen(
    client: redis::Client,
    cache: Arc<PermCache>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (on_connect, on_message, on_lost) = (cache.clone(), cache.clone(), cache);
    crate::pubsub::listen(
        client,
        CHANNEL,
        "permission changes",
        shutdown,
        crate::pubsub::Subscriber {
            on_connect: move || {
                on_connect.set_live(true);
                Box::pin(async { Ok(()) }) as futures::future::BoxFuture<'static, _>
            },
            on_message: move |payload: &str| on_message.on_message(payload),
            on_lost: move || on_lost.set_live(false),
        },
    )
    .await;
}
