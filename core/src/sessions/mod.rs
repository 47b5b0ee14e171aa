//! Session registry and revocation, in Redis, keyed by the token's session id (`sid`).
//!
//! Owns: recording each session's device (user agent, client hints, coarse IP) and last-seen
//! time — written at most once a minute per session per instance; spotting a device a user has
//! not used before; revoking one session or all of a user's, which also ends them in Keycloak.
//! **Invariant:** revocation is checked from an in-process set, refreshed by a Redis pub/sub
//! broadcast on every change and reloaded whole whenever the listener reconnects, so a revoked
//! session is refused by every instance within about a second and the check costs no network
//! call. Never stores a token.
//!
//! Shape: this file is the registry; `service` ends sessions (here and in Keycloak) and
//! records who did it; `handlers` is `/v1/sessions`.

pub mod handlers;
pub mod service;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};

use crate::ids::TenantId;

/// Channel carrying `<tenant id>:<sid>` of every revoked session.
pub const CHANNEL: &str = crate::keys::channel::SESSION_REVOKED;
/// How long a revocation is remembered: longer than any access token lives.
const REVOKED_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long an idle session stays listed.
const SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// One session as listed to its user.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct SessionView {
    /// The identity provider's session id.
    pub id: String,
    pub user_agent: String,
    /// Client hints (`Sec-CH-UA-Platform`), when the browser sent them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The client network, coarsened (/24 for IPv4, /48 for IPv6).
    pub network: String,
    pub first_seen: i64,
    pub last_seen: i64,
    /// Whether this is the session of the request listing it.
    #[serde(default)]
    pub current: bool,
}

/// What a request tells about its device.
#[derive(Debug, Clone)]
pub struct Device {
    pub user_agent: String,
    pub platform: Option<String>,
    pub network: String,
}

impl Device {
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!(
            "{}\u{0}{}\u{0}{}",
            self.user_agent,
            self.platform.as_deref().unwrap_or(""),
            self.network
        ));
        hex::encode(&digest[..12])
    }
}

/// Coarse network of an address: /24 (IPv4) or /48 (IPv6).
pub fn coarse_network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// Instants per (tenant, session id), looked up without allocating on the request path.
#[derive(Default)]
struct PerSession {
    map: RwLock<HashMap<TenantId, HashMap<String, Instant>>>,
}

impl PerSession {
    const MAX: usize = 100_000;

    fn get(&self, tenant: TenantId, sid: &str) -> Option<Instant> {
        self.map
            .read()
            .expect("session map lock")
            .get(&tenant)?
            .get(sid)
            .copied()
    }

    /// Inserts; when the map is full, first drops entries `expired` says are stale.
    fn insert(
        &self,
        tenant: TenantId,
        sid: String,
        at: Instant,
        expired: impl Fn(&Instant) -> bool,
    ) {
        let mut map = self.map.write().expect("session map lock");
        if map.values().map(HashMap::len).sum::<usize>() >= Self::MAX {
            map.retain(|_, sids| {
                sids.retain(|_, t| !expired(t));
                !sids.is_empty()
            });
        }
        map.entry(tenant).or_default().insert(sid, at);
    }
}

pub struct Sessions {
    redis: crate::redis_link::Link,
    /// Revoked sessions and until when that is remembered.
    revoked: PerSession,
    /// When this instance last recorded each session.
    touched: PerSession,
    pub new_devices: prometheus::IntCounter,
}

use crate::keys::{
    revoked_session as revoked_key, session as key, user_devices as devices_key,
    user_sessions as user_key,
};
fn member(tenant: TenantId, sid: &str) -> String {
    format!("{tenant}:{sid}")
}

impl Sessions {
    pub fn new(redis: crate::redis_link::Link, new_devices: prometheus::IntCounter) -> Self {
        Self {
            redis,
            revoked: PerSession::default(),
            touched: PerSession::default(),
            new_devices,
        }
    }

    /// Whether the session was revoked (in-process; no network).
    pub fn is_revoked(&self, tenant: TenantId, sid: &str) -> bool {
        self.revoked
            .get(tenant, sid)
            .is_some_and(|until| Instant::now() < until)
    }

    fn mark_revoked(&self, tenant: TenantId, sid: &str) {
        let now = Instant::now();
        self.revoked
            .insert(tenant, sid.to_string(), now + REVOKED_TTL, |until| {
                *until <= now
            });
    }

    /// Applies a `<tenant id>:<sid>` revocation entry (broadcast or remembered in Redis).
    fn mark_revoked_entry(&self, entry: &str) {
        if let Some((tenant, sid)) = entry.split_once(':')
            && let Ok(tenant) = tenant.parse::<TenantId>()
        {
            self.mark_revoked(tenant, sid);
        }
    }

    /// Records the session's device and last-seen time (at most once a minute per session per
    /// instance). Returns whether the device is new for this user. Best effort: a Redis failure
    /// is logged and the request goes on.
    pub async fn touch(&self, tenant: TenantId, subject: &str, sid: &str, device: &Device) -> bool {
        if self
            .touched
            .get(tenant, sid)
            .is_some_and(|t| t.elapsed() < TOUCH_EVERY)
        {
            return false;
        }
        self.touched
            .insert(tenant, sid.to_string(), Instant::now(), |t| {
                t.elapsed() >= TOUCH_EVERY
            });
        let now = chrono::Utc::now().timestamp();
        let mut conn = self.redis.clone();
        let k = key(tenant, sid);
        let result: redis::RedisResult<i64> = async {
            let (_, _, _, _, added): ((), (), (), (), i64) = redis::pipe()
                .hset_nx(&k, "first_seen", now)
                .hset_multiple(
                    &k,
                    &[
                        ("user_agent", device.user_agent.clone()),
                        ("platform", device.platform.clone().unwrap_or_default()),
                        ("network", device.network.clone()),
                        ("last_seen", now.to_string()),
                        ("subject", subject.to_string()),
                    ],
                )
                .expire(&k, SESSION_TTL.as_secs() as i64)
                .sadd(user_key(tenant, subject), sid)
                .sadd(devices_key(tenant, subject), device.fingerprint())
                .query_async(&mut conn)
                .await?;
            Ok(added)
        }
        .await;
        match result {
            Ok(1) => {
                self.new_devices.inc();
                tracing::info!(tenant = %tenant, user = subject, network = %device.network, "new device for user");
                true
            }
            Ok(_) => false,
            Err(error) => {
                tracing::warn!(%error, "recording the session failed");
                false
            }
        }
    }

    /// Lists a session the moment it starts (a local sign-in), before any request used it, so
    /// that ending all of a user's sessions also ends one whose tokens were never presented.
    /// Its device is recorded by the first [`Sessions::touch`].
    pub async fn register(
        &self,
        tenant: TenantId,
        subject: &str,
        sid: &str,
    ) -> redis::RedisResult<()> {
        let now = chrono::Utc::now().timestamp();
        let k = key(tenant, sid);
        let mut conn = self.redis.clone();
        redis::pipe()
            .hset_nx(&k, "first_seen", now)
            .hset_multiple(
                &k,
                &[
                    ("last_seen", now.to_string()),
                    ("subject", subject.to_string()),
                ],
            )
            .expire(&k, SESSION_TTL.as_secs() as i64)
            .sadd(user_key(tenant, subject), sid)
            .query_async(&mut conn)
            .await
    }

    /// The user's sessions, newest activity first.
    pub async fn list(
        &self,
        tenant: TenantId,
        subject: &str,
    ) -> redis::RedisResult<Vec<SessionView>> {
        let mut conn = self.redis.clone();
        let sids: Vec<String> = conn.smembers(user_key(tenant, subject)).await?;
        let mut out = Vec::new();
        for sid in sids {
            let fields: HashMap<String, String> = conn.hgetall(key(tenant, &sid)).await?;
            if fields.is_empty() || self.is_revoked(tenant, &sid) {
                let _: i64 = conn.srem(user_key(tenant, subject), &sid).await?;
                continue;
            }
            let num = |f: &str| fields.get(f).and_then(|v| v.parse().ok()).unwrap_or(0);
            out.push(SessionView {
                id: sid,
                user_agent: fields.get("user_agent").cloned().unwrap_or_default(),
                platform: fields.get("platform").filter(|p| !p.is_empty()).cloned(),
                network: fields.get("network").cloned().unwrap_or_default(),
                first_seen: num("first_seen"),
                last_seen: num("last_seen"),
                current: false,
            });
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.last_seen));
        Ok(out)
    }

    /// Whether `sid` is a session of this user.
    pub async fn owns(
        &self,
        tenant: TenantId,
        subject: &str,
        sid: &str,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.redis.clone();
        conn.sismember(user_key(tenant, subject), sid).await
    }

    /// Revokes sessions everywhere: remembered in Redis (for instances that start later) and
    /// broadcast (for running ones), and applied here at once.
    pub async fn revoke(
        &self,
        tenant: TenantId,
        subject: &str,
        sids: &[String],
    ) -> redis::RedisResult<()> {
        let mut conn = self.redis.clone();
        for sid in sids {
            let entry = member(tenant, sid);
            self.mark_revoked(tenant, sid);
            let _: () = redis::pipe()
                .set_ex(revoked_key(tenant, sid), 1, REVOKED_TTL.as_secs())
                .del(key(tenant, sid))
                .srem(user_key(tenant, subject), sid)
                .publish(CHANNEL, &entry)
                .query_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Loads every remembered revocation (at start and after the listener reconnects).
    async fn reload(&self, conn: &mut crate::redis_link::Link) -> redis::RedisResult<()> {
        let mut iter: redis::AsyncIter<String> = conn
            .scan_match(crate::keys::REVOKED_SESSIONS_PATTERN)
            .await?;
        let mut found = Vec::new();
        while let Some(k) = iter.next_item().await {
            found.push(k?);
        }
        for k in found {
            if let Some(entry) = k.strip_prefix(crate::keys::REVOKED_SESSIONS_PREFIX) {
                self.mark_revoked_entry(entry);
            }
        }
        Ok(())
    }
}

/// Applies revocations broadcast by any instance until `shutdown` fires.
pub async fn listen(
    client: redis::Client,
    sessions: Arc<Sessions>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let on_message = sessions.clone();
    crate::pubsub::listen(
        client,
        CHANNEL,
        "session revocations",
        shutdown,
        crate::pubsub::Subscriber {
            // Revocations broadcast while we were not listening are in Redis.
            on_connect: move || {
                let sessions = sessions.clone();
                Box::pin(async move {
                    let mut conn = sessions.redis.clone();
                    sessions.reload(&mut conn).await
                }) as futures::future::BoxFuture<'static, _>
            },
            on_message: move |entry: &str| on_message.mark_revoked_entry(entry),
            on_lost: || {},
        },
    )
    .await;
}

/// What the session endpoints use, built once by `app`.
pub struct SessionsState {
    pub sessions: Arc<Sessions>,
    /// Keycloak admin API: ending sessions there too.
    pub keycloak: Arc<crate::auth::keycloak::KeycloakAdmin>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_coarse() {
        assert_eq!(
            coarse_network("203.0.113.77".parse().unwrap()),
            "203.0.113.0/24"
        );
        assert_eq!(
            coarse_network("2001:db8:1:2::5".parse().unwrap()),
            "2001:db8:1::/48"
        );
    }

    #[test]
    fn fingerprints_depend_on_the_device() {
        let a = Device {
            user_agent: "curl/8".into(),
            platform: None,
            network: "10.0.0.0/24".into(),
        };
        let mut b = a.clone();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.network = "10.0.1.0/24".into();
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
