//! A per-tenant in-process cache of versioned values (a tenant's settings, its feature-flag
//! set), kept for a time-to-live and dropped on every instance when any instance publishes a
//! newer version on the cache's Redis channel (`<tenant id>:<version>`). While the
//! subscription is down nothing is served from the cache (every read goes to the source),
//! and on (re)subscribing everything cached is dropped, so a change missed during an outage
//! cannot linger; a load that finishes after a newer version was announced is not kept.
//!
//! Owns only the cache and its broadcast; never loads or writes the values themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// A value that knows its version (increasing with every change).
pub trait Versioned {
    fn version(&self) -> i64;
}

/// Tenants kept at once; beyond it the oldest half is dropped.
const MAX_ENTRIES: usize = 50_000;

struct Entry<V> {
    at: Instant,
    value: Arc<V>,
}

struct Entries<V> {
    map: HashMap<Uuid, Entry<V>>,
    /// The newest version announced per tenant: an older load is not kept.
    newest: HashMap<Uuid, i64>,
}

pub struct VersionedCache<V> {
    entries: RwLock<Entries<V>>,
    live: AtomicBool,
    redis: crate::redis_link::Link,
    channel: &'static str,
    ttl: Duration,
    meter: crate::metrics::CacheMeter,
}

impl<V: Versioned + Send + Sync + 'static> VersionedCache<V> {
    pub fn new(redis: crate::redis_link::Link, channel: &'static str, ttl: Duration) -> Self {
        Self {
            entries: RwLock::new(Entries {
                map: HashMap::new(),
                newest: HashMap::new(),
            }),
            live: AtomicBool::new(false),
            redis,
            channel,
            ttl,
            // Named by its channel's last part (`settings`, `flags`).
            meter: crate::metrics::cache(channel.rsplit(':').next().unwrap_or(channel)),
        }
    }

    /// The cached value of `tenant`, if fresh and the broadcast is live.
    pub fn get(&self, tenant: Uuid) -> Option<Arc<V>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let found = entries
            .map
            .get(&tenant)
            .filter(|e| e.at.elapsed() < self.ttl)
            .map(|e| e.value.clone());
        self.meter.record(found.is_some());
        found
    }

    /// Keeps a loaded value (unless a newer version was announced meanwhile).
    pub fn put(&self, tenant: Uuid, value: Arc<V>) {
        if !self.live.load(Ordering::Acquire) {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries
            .newest
            .get(&tenant)
            .is_some_and(|v| *v > value.version())
        {
            return;
        }
        if entries.map.len() >= MAX_ENTRIES {
            let mut ages: Vec<(Instant, Uuid)> =
                entries.map.iter().map(|(k, e)| (e.at, *k)).collect();
            ages.sort();
            for (_, k) in ages.into_iter().take(MAX_ENTRIES / 2) {
                entries.map.remove(&k);
            }
        }
        entries.map.insert(
            tenant,
            Entry {
                at: Instant::now(),
                value,
            },
        );
    }

    /// After a committed change to version `version`: drop it here and tell every instance.
    pub async fn invalidate(&self, tenant: Uuid, version: i64) {
        self.forget(tenant, version);
        let mut conn = self.redis.clone();
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(self.channel)
            .arg(format!("{}:{version}", tenant.simple()))
            .query_async(&mut conn)
            .await;
        if let Err(error) = sent {
            // Other instances cannot be told: they keep their copy until the TTL, unless
            // their own subscription is down too (then they read the source).
            tracing::warn!(%error, channel = self.channel, "could not announce a change");
        }
    }

    fn forget(&self, tenant: Uuid, version: i64) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.map.remove(&tenant);
        let newest = entries.newest.entry(tenant).or_insert(version);
        *newest = (*newest).max(version);
    }

    fn on_message(&self, payload: &str) {
        if let Some((tenant, version)) = payload.split_once(':')
            && let (Ok(tenant), Ok(version)) = (Uuid::parse_str(tenant), version.parse())
        {
            self.forget(tenant, version);
        }
    }

    fn set_live(&self, live: bool) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.map.clear();
        self.live.store(live, Ordering::Release);
    }
}

/// Listens on the cache's channel until `shutdown` changes; `what` names it in logs.
pub async fn listen<V: Versioned + Send + Sync + 'static>(
    cache: Arc<VersionedCache<V>>,
    client: redis::Client,
    what: &'static str,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let channel = cache.channel;
    let (on_connect, on_message, on_lost) = (cache.clone(), cache.clone(), cache);
    crate::pubsub::listen(
        client,
        channel,
        what,
        shutdown,
        crate::pubsub::Subscriber {
            on_connect: move || {
                let c = on_connect.clone();
                Box::pin(async move {
                    c.set_live(true);
                    Ok(())
                }) as futures::future::BoxFuture<'static, redis::RedisResult<()>>
            },
            on_message: move |p: &str| on_message.on_message(p),
            on_lost: move || on_lost.set_live(false),
        },
    )
    .await;
}
