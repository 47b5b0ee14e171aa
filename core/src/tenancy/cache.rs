//! In-process cache of resolved tenants (slug → tenant + its database handle), kept coherent
//! across instances by a Redis pub/sub broadcast.
//!
//! Owns: entry lifetimes (a TTL bounds staleness even if a broadcast is missed), the
//! broadcast on change, and the listener that applies other instances' broadcasts. A listener
//! that loses Redis clears the whole cache when it reconnects, since it may have missed
//! messages. Unknown slugs are cached briefly too, so a flood of random subdomains does not
//! become a flood of registry queries. Never caches across a status change it has been told of.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::model::Tenant;
use crate::db::TenantDb;

/// Redis channel carrying the slug of every tenant that changed.
pub const CHANNEL: &str = crate::keys::channel::TENANT_CHANGED;
const MAX_ENTRIES: usize = 100_000;
const NEGATIVE_TTL: Duration = Duration::from_secs(2);

/// A tenant and the handle to its rows.
#[derive(Debug)]
pub struct ResolvedTenant {
    pub tenant: Tenant,
    pub db: TenantDb,
    /// The `iss` its tokens must carry; `None` until its identity home is provisioned, and
    /// then every token is refused.
    pub issuer: Option<String>,
    /// Organization mode: the one organization its tokens must name.
    pub org_alias: Option<String>,
}

struct Entry {
    at: Instant,
    value: Option<Arc<ResolvedTenant>>,
}

pub struct TenantCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, Entry>>,
    redis: crate::redis_link::Link,
    meter: crate::metrics::CacheMeter,
}

impl TenantCache {
    pub fn new(ttl: Duration, redis: crate::redis_link::Link) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
            redis,
            meter: crate::metrics::cache("tenants"),
        }
    }

    /// `Some(hit)` when a fresh entry exists (`hit` is `None` for a known-unknown slug).
    pub fn get(&self, slug: &str) -> Option<Option<Arc<ResolvedTenant>>> {
        let entries = self.entries.read().expect("tenant cache lock");
        let fresh = entries.get(slug).and_then(|entry| {
            let ttl = if entry.value.is_some() {
                self.ttl
            } else {
                NEGATIVE_TTL
            };
            (entry.at.elapsed() < ttl).then(|| entry.value.clone())
        });
        self.meter.record(fresh.is_some());
        fresh
    }

    pub fn put(&self, slug: &str, value: Option<Arc<ResolvedTenant>>) {
        let mut entries = self.entries.write().expect("tenant cache lock");
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            slug.to_string(),
            Entry {
                at: Instant::now(),
                value,
            },
        );
    }

    /// Forgets a tenant; returns what was cached for it, if anything.
    pub fn evict(&self, slug: &str) -> Option<Arc<ResolvedTenant>> {
        self.entries
            .write()
            .expect("tenant cache lock")
            .remove(slug)
            .and_then(|entry| entry.value)
    }

    pub fn clear(&self) {
        self.entries.write().expect("tenant cache lock").clear();
    }

    /// Drops the local entry and tells every other instance to drop theirs. A failed
    /// broadcast is logged; the TTL then bounds how long others serve the old state.
    pub async fn invalidate(&self, slug: &str) {
        self.evict(slug);
        let mut redis = self.redis.clone();
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(slug)
            .query_async(&mut redis)
            .await;
        if let Err(error) = sent {
            tracing::warn!(tenant = slug, %error, "tenant change broadcast failed; other instances catch up within the cache TTL");
        }
    }
}

/// Applies other instances' broadcasts until `shutdown` fires; reconnects with backoff. A
/// changed tenant with a database of its own also loses this instance's pool for it (rebuilt
/// on the next request, if the tenant still exists), so a deleted tenant's pool does not linger.
pub async fn listen(
    client: redis::Client,
    cache: Arc<TenantCache>,
    pools: Arc<crate::db::Pools>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (on_connect, on_message, on_lost) = (cache.clone(), cache.clone(), cache);
    crate::pubsub::listen(
        client,
        CHANNEL,
        "tenant changes",
        shutdown,
        crate::pubsub::Subscriber {
            // Anything may have changed while we were not listening.
            on_connect: move || {
                on_connect.clear();
                Box::pin(async { Ok(()) }) as futures::future::BoxFuture<'static, _>
            },
            on_message: move |slug: &str| {
                if let Some(gone) = on_message.evict(slug)
                    && gone.tenant.isolation == super::model::Isolation::Database
                {
                    pools.remove(gone.tenant.connection_id);
                }
            },
            on_lost: move || on_lost.clear(),
        },
    )
    .await;
}
