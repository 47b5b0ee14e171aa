//! Prometheus metrics: request counts and latency by route and status, pool statistics, and the
//! process-wide collectors every layer records into (cache lookups, plugin calls, outbox lag;
//! database queries are timed by `db`).
//!
//! Owns metric names and labels (stable: dashboards depend on them). Labels are bounded:
//! `route` is the matched route pattern (or `unmatched`), never the raw path.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::db::PoolStats;

/// Lookups of every cache by outcome: `neotenant_cache_lookups_total{cache, result}`. Process-
/// wide, so a cache records through a [`CacheMeter`] made once, without a label lookup.
static CACHE_LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "cache_lookups_total",
            "Cache lookups by cache and result (hit, miss)",
        )
        .namespace("neotenant"),
        &["cache", "result"],
    )
    .expect("valid metric")
});

/// Plugin calls by hook: `neotenant_plugin_call_duration_seconds{hook}`.
static PLUGIN_CALLS: LazyLock<HistogramVec> = LazyLock::new(|| {
    HistogramVec::new(
        HistogramOpts::new(
            "plugin_call_duration_seconds",
            "Plugin calls by hook, including instantiation",
        )
        .namespace("neotenant")
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]),
        &["hook"],
    )
    .expect("valid metric")
});

/// How far behind each outbox consumer is: `neotenant_outbox_lag_seconds{consumer}`.
static OUTBOX_LAG: LazyLock<GaugeVec> = LazyLock::new(|| {
    GaugeVec::new(
        Opts::new(
            "outbox_lag_seconds",
            "Age of the oldest outbox event a consumer has yet to handle (0: caught up)",
        )
        .namespace("neotenant"),
        &["consumer"],
    )
    .expect("valid metric")
});

/// A cache's hit and miss counters.
#[derive(Clone)]
pub struct CacheMeter {
    hit: IntCounter,
    miss: IntCounter,
}

impl CacheMeter {
    pub fn record(&self, hit: bool) {
        if hit { &self.hit } else { &self.miss }.inc();
    }
}

/// The meter of the cache `name` (make it once, where the cache is built).
pub fn cache(name: &str) -> CacheMeter {
    CacheMeter {
        hit: CACHE_LOOKUPS.with_label_values(&[name, "hit"]),
        miss: CACHE_LOOKUPS.with_label_values(&[name, "miss"]),
    }
}

/// The validated-credential cache's meter.
pub static TOKENS: LazyLock<CacheMeter> = LazyLock::new(|| cache("tokens"));

/// Records one plugin call of `hook` that took `elapsed`.
pub fn plugin_call(hook: &str, elapsed: Duration) {
    PLUGIN_CALLS
        .with_label_values(&[hook])
        .observe(elapsed.as_secs_f64());
}

/// The worst lag each consumer saw in its current window, and when the window began.
static LAG_WINDOWS: LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, f64)>>,
> = LazyLock::new(Default::default);

/// How long a lag seen for one tenant stays the consumer's figure unless a worse one comes.
const LAG_WINDOW: Duration = Duration::from_secs(10);

/// Records how far behind the outbox consumer `consumer` was for one tenant just now (0: caught
/// up). The gauge shows the worst figure of the last window (tenants are visited in turn), so
/// it returns to 0 once every tenant is caught up.
pub fn outbox_lag(consumer: &str, secs: f64) {
    let secs = secs.max(0.0);
    let mut windows = LAG_WINDOWS.lock().unwrap_or_else(|e| e.into_inner());
    let now = std::time::Instant::now();
    let shown = match windows.get_mut(consumer) {
        Some((start, worst)) if now.duration_since(*start) < LAG_WINDOW => {
            *worst = worst.max(secs);
            *worst
        }
        _ => {
            windows.insert(consumer.to_string(), (now, secs));
            secs
        }
    };
    OUTBOX_LAG.with_label_values(&[consumer]).set(shown);
}

pub struct Metrics {
    registry: Registry,
    /// The process-wide collectors (caches, plugin calls, outbox lag, database queries).
    shared: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pool_connections: IntGaugeVec,
    pool_idle: IntGaugeVec,
    pool_max: IntGaugeVec,
    /// Signing-key fetches from the identity provider, by outcome.
    pub jwks_fetches: IntCounterVec,
    /// Clients locked out after repeated authentication failures.
    pub auth_lockouts: prometheus::IntCounter,
    /// Rate-limit checks that could not reach Redis (the request was allowed).
    pub rate_limit_errors: prometheus::IntCounter,
    /// Sessions seen on a device their user had not used before.
    pub new_devices: prometheus::IntCounter,
    /// Effective-permission lookups by where they were answered, resolved once (the L1 one
    /// counts on every request): `neotenant_permission_lookups_total{layer="l1"|"l2"|"database"}`.
    pub permission_l1: prometheus::IntCounter,
    pub permission_l2: prometheus::IntCounter,
    pub permission_database: prometheus::IntCounter,
    /// Failed plugin calls by hook and failure (`cpu`, `memory`, `stack`, `timeout`, `trap`,
    /// `output`): `neotenant_plugin_failures_total{hook,code}`.
    pub plugin_failures: IntCounterVec,
    /// Events delivered to integrations, by outcome (`delivered`, `retried`, `dead_letter`).
    pub plugin_deliveries: IntCounterVec,
    /// Whether each dependency answered its last readiness check (1) or not (0):
    /// `neotenant_dependency_up{dependency="postgres"|"redis"}`.
    pub dependency_up: IntGaugeVec,
    /// Times Redis became unreachable and its commands started failing fast
    /// (`crate::redis_link`).
    pub redis_unreachable: prometheus::IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("neotenant".into()), None).expect("valid prefix");
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by method, route and status",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by method, route and status",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let pool_connections = IntGaugeVec::new(
            Opts::new("db_pool_connections", "Open connections per database pool"),
            &["database"],
        )
        .expect("valid metric");
        let pool_idle = IntGaugeVec::new(
            Opts::new(
                "db_pool_idle_connections",
                "Idle connections per database pool",
            ),
            &["database"],
        )
        .expect("valid metric");
        let pool_max = IntGaugeVec::new(
            Opts::new(
                "db_pool_max_connections",
                "Configured maximum connections per database pool",
            ),
            &["database"],
        )
        .expect("valid metric");
        let jwks_fetches = IntCounterVec::new(
            Opts::new(
                "jwks_fetches_total",
                "Signing-key fetches from the identity provider by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let auth_lockouts = prometheus::IntCounter::new(
            "auth_lockouts_total",
            "Clients locked out after repeated authentication failures",
        )
        .expect("valid metric");
        let rate_limit_errors = prometheus::IntCounter::new(
            "rate_limit_errors_total",
            "Rate-limit checks that could not reach Redis (request allowed)",
        )
        .expect("valid metric");
        let new_devices = prometheus::IntCounter::new(
            "new_devices_total",
            "Sessions on a device new to their user",
        )
        .expect("valid metric");
        let permission_lookups = IntCounterVec::new(
            Opts::new(
                "permission_lookups_total",
                "Effective-permission lookups by the layer that answered",
            ),
            &["layer"],
        )
        .expect("valid metric");
        let plugin_failures = IntCounterVec::new(
            Opts::new(
                "plugin_failures_total",
                "Failed plugin calls by hook and failure",
            ),
            &["hook", "code"],
        )
        .expect("valid metric");
        let plugin_deliveries = IntCounterVec::new(
            Opts::new(
                "plugin_deliveries_total",
                "Events delivered to integration plugins by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let dependency_up = IntGaugeVec::new(
            Opts::new(
                "dependency_up",
                "Whether a dependency answered the last readiness check (1) or not (0)",
            ),
            &["dependency"],
        )
        .expect("valid metric");
        let redis_unreachable = prometheus::IntCounter::new(
            "redis_unreachable_total",
            "Times Redis became unreachable and its commands started failing fast",
        )
        .expect("valid metric");
        // Process-wide collectors: every registry of this process shows the same values (the
        // namespace is theirs already, so they go into a registry without a prefix).
        let shared = Registry::new();
        for c in [
            Box::new(CACHE_LOOKUPS.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(PLUGIN_CALLS.clone()),
            Box::new(OUTBOX_LAG.clone()),
            Box::new(crate::db::QUERY_SECONDS.clone()),
        ] {
            shared.register(c).expect("unique metric");
        }
        for c in [
            Box::new(plugin_failures.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(redis_unreachable.clone()),
            Box::new(dependency_up.clone()),
            Box::new(plugin_deliveries.clone()),
            Box::new(permission_lookups.clone()),
            Box::new(new_devices.clone()),
            Box::new(auth_lockouts.clone()),
            Box::new(rate_limit_errors.clone()),
            Box::new(jwks_fetches.clone()),
            Box::new(requests.clone()),
            Box::new(latency.clone()),
            Box::new(pool_connections.clone()),
            Box::new(pool_idle.clone()),
            Box::new(pool_max.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Self {
            registry,
            shared,
            requests,
            latency,
            pool_connections,
            pool_idle,
            pool_max,
            jwks_fetches,
            auth_lockouts,
            rate_limit_errors,
            new_devices,
            permission_l1: permission_lookups.with_label_values(&["l1"]),
            permission_l2: permission_lookups.with_label_values(&["l2"]),
            permission_database: permission_lookups.with_label_values(&["database"]),
            plugin_failures,
            plugin_deliveries,
            dependency_up,
            redis_unreachable,
        }
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.latency
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition, with pool gauges refreshed from `pools`.
    pub fn render(&self, pools: &[PoolStats]) -> String {
        for p in pools {
            self.pool_connections
                .with_label_values(&[p.database.as_str()])
                .set(i64::from(p.connections));
            self.pool_idle
                .with_label_values(&[p.database.as_str()])
                .set(i64::from(p.idle));
            self.pool_max
                .with_label_values(&[p.database.as_str()])
                .set(i64::from(p.max_size));
        }
        let mut families = self.registry.gather();
        families.extend(self.shared.gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is utf-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_lag_shows_the_worst_of_its_window() {
        outbox_lag("test-consumer", 5.0);
        outbox_lag("test-consumer", 0.0);
        let shown = OUTBOX_LAG.with_label_values(&["test-consumer"]).get();
        assert_eq!(shown, 5.0);
        // A new window starts from what is seen then.
        LAG_WINDOWS.lock().unwrap().insert(
            "test-consumer".into(),
            (std::time::Instant::now() - LAG_WINDOW, 5.0),
        );
        outbox_lag("test-consumer", 0.0);
        assert_eq!(OUTBOX_LAG.with_label_values(&["test-consumer"]).get(), 0.0);
    }
}
