//! Rate limits per client IP and per user, and temporary lockouts after repeated
//! authentication failures, kept in Redis so every instance enforces the same budget.
//!
//! Owns the GCRA (generic cell rate algorithm) script: one atomic Redis call checks the IP's
//! and the user's buckets and the lockouts that apply (the IP's; for a credential not yet
//! validated, that credential's or account's at the IP, see [`Attempt`]) together, and spends from the buckets only
//! when all allow. For fast buckets one call takes a short lease of several requests that
//! this instance then spends without Redis (`rate_limit.lease_ms`): every leased request was
//! charged to the shared buckets, so the budget across instances is never exceeded; a lease
//! shrinks to what the buckets can afford, and unused leased requests lapse (a client is
//! refused slightly early, never late). If Redis cannot be reached the request proceeds (fail open:
//! availability over strict limits) and the failure is logged and counted.
//!
//! Machine clients (API keys, OAuth clients) have a bucket of their own, apart from their owner's, and may
//! have a quota of credits (Unkey-style: one per request, refilled to a set amount every
//! period; [`RateLimiter::spend_credit`]); their requests are counted per UTC day in memory and
//! added to Redis once a second ([`RateLimiter::flush_usage`]), so counting costs the request
//! path no round trip. Never keys a bucket
//! on anything the client can choose freely except through `trust_forwarded_for`, which must
//! only be enabled behind a proxy that overwrites `X-Forwarded-For`.

use std::net::IpAddr;

pub use crate::config::RateLimitConfig;
use crate::keys;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `remaining` requests before the tightest bucket refuses, and the seconds until
    /// it is full again.
    Allowed {
        limit: u32,
        remaining: u32,
        reset_secs: u64,
    },
    /// Over a limit: retry after this many seconds.
    Limited { limit: u32, retry_after_secs: u64 },
    /// The IP is locked out after repeated authentication failures.
    Locked { retry_after_secs: u64 },
}

/// GCRA over up to two buckets plus lockout keys, atomically, granting up to `want`
/// requests at once (a lease the caller spends locally).
/// KEYS: lock keys, then bucket keys. ARGV: the number of lock keys, per bucket (interval_us,
/// tolerance_us, burst), then want. Times are microseconds since [`EPOCH_SECS`] kept as
/// doubles (exact to well below a microsecond for centuries), so an interval need not be
/// whole: 30,000/s is 33.33… µs, not a rounded 33 or a floored millisecond. Every bucket is
/// charged the same grant: the fewest any of them can afford now, capped at `want`. Returns
/// {code, a, b, c, d}: code 1 allowed (limit, remaining after the grant, reset_ms, granted),
/// 0 limited (limit, retry_ms), -1 locked (retry_ms).
const GCRA: &str = r#"
local locks = tonumber(ARGV[1])
for i = 1, locks do
  local lock_ttl = redis.call('PTTL', KEYS[i])
  if lock_ttl > 0 then return {-1, lock_ttl, 0, 0, 0} end
end
local t = redis.call('TIME')
local now = (tonumber(t[1]) - EPOCH) * 1000000 + tonumber(t[2])
local grant = tonumber(ARGV[#ARGV])
local tats = {}
for i = locks + 1, #KEYS do
  local j = (i - locks - 1) * 3 + 1
  local interval = tonumber(ARGV[j + 1])
  local tolerance = tonumber(ARGV[j + 2])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local affordable = math.floor((now + tolerance - tat) / interval + 1e-9)
  if affordable < 1 then
    return {0, tonumber(ARGV[j + 3]), math.ceil((tat + interval - tolerance - now) / 1000), 0, 0}
  end
  if affordable < grant then grant = affordable end
  tats[i] = tat
end
local best_remaining, best_limit, best_reset = nil, 0, 0
for i = locks + 1, #KEYS do
  local j = (i - locks - 1) * 3 + 1
  local interval = tonumber(ARGV[j + 1])
  local tolerance = tonumber(ARGV[j + 2])
  local new_tat = tats[i] + grant * interval
  redis.call('SET', KEYS[i], string.format('%.17g', new_tat), 'PX',
    math.max(math.ceil((new_tat - now) / 1000), 1))
  local remaining = math.floor((tolerance - (new_tat - now)) / interval + 1e-9)
  if best_remaining == nil or remaining < best_remaining then
    best_remaining, best_limit, best_reset = remaining, tonumber(ARGV[j + 3]), math.ceil((new_tat - now) / 1000)
  end
end
return {1, best_limit, best_remaining or 0, best_reset, grant}
"#;

/// The origin of the limiter's clock (2025-01-01T00:00:00Z), keeping its numbers small.
const EPOCH_SECS: u64 = 1_735_689_600;

/// Counts one authentication failure in each of its scopes; locks a scope when its window's
/// count reaches its maximum. KEYS: (counter, lock) per scope. ARGV: window_ms, lock_ms, then
/// the maximum per scope. Returns a bit per scope that this call locked (1: the first).
const FAILURE: &str = r#"
local locked = 0
for p = 1, #KEYS / 2 do
  local counter, lock = KEYS[2 * p - 1], KEYS[2 * p]
  local n = redis.call('INCR', counter)
  if n == 1 then redis.call('PEXPIRE', counter, ARGV[1]) end
  if n >= tonumber(ARGV[2 + p]) and redis.call('EXISTS', lock) == 0 then
    redis.call('SET', lock, 1, 'PX', ARGV[2])
    redis.call('DEL', counter)
    locked = locked + 2 ^ (p - 1)
  end
end
return locked
"#;

/// What an authentication attempt names besides its address. Failures lock that pair (address
/// and credential, or address and account), not the whole address, so the users behind one
/// NAT address do not lock one another out; the address alone is locked only at the much
/// higher `max_auth_failures_per_ip` (spraying).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt<'a> {
    /// A presented credential, by its fingerprint: a token, an API key, a reset or invitation
    /// token.
    Credential(&'a str),
    /// A named account, by its fingerprint (a password login): locked at the address, and
    /// from every address at `max_auth_failures` too, as Keycloak's brute-force detection
    /// does — a temporary lock, so guessing one account's password from many addresses fails.
    Account(&'a str),
}

impl Attempt<'_> {
    fn who(&self) -> &str {
        match self {
            Attempt::Credential(w) | Attempt::Account(w) => w,
        }
    }
}

/// A short, non-reversible fingerprint of what an attempt names (no credential or username
/// is written to Redis): 128 bits of SHA-256 over the parts, hex.
pub fn fingerprint(parts: &[&[u8]]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Spends one credit of a client's quota. KEYS: the quota hash. ARGV: the credits to start from
/// when Redis holds none (the last snapshot, or the quota), the period they belong to, the
/// refill amount (0: none) and interval in seconds (0: none). A new period refills. Returns
/// {allowed 1/0, left, seconds to the next refill (0: none), period}.
const CREDIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1])
local refill = tonumber(ARGV[3])
local every = tonumber(ARGV[4])
local period = 0
if every > 0 then period = math.floor(now / every) end
local left = tonumber(redis.call('HGET', KEYS[1], 'left'))
local at = tonumber(redis.call('HGET', KEYS[1], 'period'))
if left == nil or at == nil then
  left = tonumber(ARGV[1])
  at = tonumber(ARGV[2])
end
if refill > 0 and at < period then
  left = refill
  at = period
end
local reset = 0
if every > 0 then reset = (period + 1) * every - now end
local allowed = 0
if left > 0 then
  left = left - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'left', left, 'period', at)
return {allowed, left, reset, at}
"#;

/// A quota of credits: each request spends one; `refill` credits are restored (not added) every
/// `refill_secs` when both are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub credits: i64,
    pub refill: Option<(i64, i64)>,
    /// The last known count and its period (from the database), to resume a count Redis lost.
    pub snapshot: Option<(i64, i64)>,
}

/// The outcome of spending a credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    pub allowed: bool,
    pub left: i64,
    /// Seconds until the next refill; 0 without one.
    pub reset_secs: u64,
    pub period: i64,
}

/// A client's requests on one day, as counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DayUsage {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    pub requests: u64,
    /// Refused by the client's rate limit or quota.
    pub refused: u64,
}

/// Counts since the last flush, per (tenant, UTC day number since the epoch), per client:
/// (let through, refused). Two levels, so counting a known client allocates nothing.
type UsageCounts = std::collections::HashMap<
    (crate::ids::TenantId, i64),
    std::collections::HashMap<String, (u64, u64)>,
>;

/// Requests granted by Redis ahead of time to one (IP, user) pair on this instance.
struct Lease {
    left: u32,
    until: std::time::Instant,
    limit: u32,
    /// What the tightest bucket had left in Redis when the lease was taken.
    remaining: u32,
    reset_secs: u64,
}

/// Leases held at once before expired ones are swept.
const MAX_LEASES: usize = 10_000;

type LeaseKey = (IpAddr, Option<Box<str>>);

pub struct RateLimiter {
    config: RateLimitConfig,
    leases: std::sync::Mutex<std::collections::HashMap<LeaseKey, Lease>>,
    redis: crate::redis_link::Link,
    gcra: redis::Script,
    failure: redis::Script,
    credit: redis::Script,
    /// Client requests counted here since the last flush.
    usage: std::sync::Mutex<UsageCounts>,
    pub lockouts: prometheus::IntCounter,
    pub redis_errors: prometheus::IntCounter,
}

/// How many requests to ask Redis for at once for a bucket: what the rate allows within the
/// lease period, at most a quarter of the burst (so no instance holds most of it) and 1,024;
/// at least one.
fn lease_size(per_sec: f64, burst: u32, lease_ms: u64) -> u32 {
    let by_rate = (per_sec * lease_ms as f64 / 1000.0).floor();
    let cap = (burst / 4).clamp(1, 1024);
    (by_rate as u32).clamp(1, cap)
}

/// A bucket's script arguments: the emission interval and the tolerance in microseconds
/// (fractions kept: the rate is exact at any value), and the burst.
fn bucket_args(per_sec: f64, burst: u32) -> (f64, f64, u32) {
    let interval_us = 1_000_000.0 / per_sec;
    (interval_us, interval_us * f64::from(burst), burst)
}

impl RateLimiter {
    pub fn new(
        config: RateLimitConfig,
        redis: crate::redis_link::Link,
        lockouts: prometheus::IntCounter,
        redis_errors: prometheus::IntCounter,
    ) -> Self {
        Self {
            config,
            leases: Default::default(),
            redis,
            gcra: redis::Script::new(&GCRA.replace("EPOCH", &EPOCH_SECS.to_string())),
            failure: redis::Script::new(FAILURE),
            credit: redis::Script::new(CREDIT),
            usage: Default::default(),
            lockouts,
            redis_errors,
        }
    }

    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Checks (and spends from) the IP's bucket and, when known, the user's: from this
    /// instance's lease for the pair when one is left, else from Redis (taking a new lease).
    pub async fn check(&self, ip: IpAddr, user: Option<&str>) -> Decision {
        self.check_with(ip, user, None, None).await
    }

    /// [`Self::check`] for an attempt to authenticate: also refused while the attempt's pair
    /// (or account) is locked out. Always asks Redis (a lease would skip the lock).
    pub async fn check_attempt(&self, ip: IpAddr, attempt: Attempt<'_>) -> Decision {
        self.check_with(ip, None, None, Some(attempt)).await
    }

    /// [`Self::check`] with the user's bucket at `user_rate` (per second, burst) instead of
    /// the platform's: a tenant's own limit. The IP's bucket is the platform's always. With an
    /// `attempt` (a credential not validated yet), its locks are checked too.
    pub async fn check_with(
        &self,
        ip: IpAddr,
        user: Option<&str>,
        user_rate: Option<(f64, u32)>,
        attempt: Option<Attempt<'_>>,
    ) -> Decision {
        if !self.config.enabled {
            return Decision::Allowed {
                limit: 0,
                remaining: 0,
                reset_secs: 0,
            };
        }
        let c = &self.config;
        let (user_per_sec, user_burst) =
            user_rate.unwrap_or((c.per_user_per_sec, c.per_user_burst));
        let mut want = lease_size(c.per_ip_per_sec, c.per_ip_burst, c.lease_ms);
        if user.is_some() {
            want = want.min(lease_size(user_per_sec, user_burst, c.lease_ms));
        }
        // A lease is spent only at the rate it was granted at: a tenant's new rate applies at
        // once, not when the leases of the old one lapse.
        let key: LeaseKey = (
            ip,
            user.map(|u| match user_rate {
                Some((rate, burst)) => format!("{u}@{rate}/{burst}").into(),
                None => u.into(),
            }),
        );
        if want > 1
            && attempt.is_none()
            && let Some(allowed) = self.spend_lease(&key)
        {
            return allowed;
        }
        let ns = &c.namespace;
        let mut invocation = self.gcra.prepare_invoke();
        invocation.key(keys::rate::ip_lock(ns, ip));
        let mut locks = 1;
        if let Some(a) = attempt {
            invocation.key(keys::rate::pair_lock(ns, ip, a.who()));
            locks += 1;
            if let Attempt::Account(who) = a {
                invocation.key(keys::rate::account_lock(ns, who));
                locks += 1;
            }
        }
        invocation.arg(locks);
        let (i, t, b) = bucket_args(c.per_ip_per_sec, c.per_ip_burst);
        invocation
            .key(keys::rate::ip_bucket(ns, ip))
            .arg(i)
            .arg(t)
            .arg(b);
        if let Some(user) = user {
            let (i, t, b) = bucket_args(user_per_sec, user_burst);
            invocation
                .key(keys::rate::user_bucket(ns, user))
                .arg(i)
                .arg(t)
                .arg(b);
        }
        invocation.arg(want);
        let mut conn = self.redis.clone();
        match invocation.invoke_async::<Vec<i64>>(&mut conn).await {
            Ok(r) if r.len() == 5 => {
                let secs = |ms: i64| (ms.max(0) as u64).div_ceil(1000);
                match r[0] {
                    1 => {
                        let (limit, remaining, reset_secs) =
                            (r[1] as u32, r[2].max(0) as u32, secs(r[3]));
                        let extra = (r[4].max(1) - 1) as u32;
                        let held = if extra > 0 {
                            self.keep_lease(key, extra, limit, remaining, reset_secs)
                        } else {
                            0
                        };
                        Decision::Allowed {
                            limit,
                            remaining: remaining.saturating_add(held),
                            reset_secs,
                        }
                    }
                    // Requests granted to concurrent checks of the same pair may be waiting
                    // in its lease: spend one rather than refuse while they lapse.
                    0 => self.spend_lease(&key).unwrap_or(Decision::Limited {
                        limit: r[1] as u32,
                        retry_after_secs: secs(r[2]).max(1),
                    }),
                    _ => Decision::Locked {
                        retry_after_secs: secs(r[1]).max(1),
                    },
                }
            }
            other => {
                self.redis_errors.inc();
                tracing::warn!(error = ?other.err(), "rate limit check failed; allowing the request");
                Decision::Allowed {
                    limit: 0,
                    remaining: 0,
                    reset_secs: 0,
                }
            }
        }
    }

    /// Counts one request against `tenant`'s daily quota of `per_day` (UTC days): refused
    /// once the day's count passes it, until midnight UTC. Allowed when Redis cannot answer.
    pub async fn quota(&self, tenant: crate::ids::TenantId, per_day: u64) -> Decision {
        let now = chrono::Utc::now();
        let day = now.format("%Y%m%d").to_string();
        let midnight = (now.date_naive() + chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or(now);
        let reset_secs = (midnight - now).num_seconds().max(1) as u64;
        let key = keys::tenant_quota(&self.config.namespace, tenant, &day);
        let mut conn = self.redis.clone();
        let counted: redis::RedisResult<(i64,)> = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .expire(&key, 2 * 86_400)
            .ignore()
            .query_async(&mut conn)
            .await;
        let limit = u32::try_from(per_day).unwrap_or(u32::MAX);
        match counted {
            Ok((n,)) if n.max(0) as u64 > per_day => Decision::Limited {
                limit,
                retry_after_secs: reset_secs,
            },
            Ok((n,)) => Decision::Allowed {
                limit,
                remaining: u32::try_from(per_day.saturating_sub(n.max(0) as u64))
                    .unwrap_or(u32::MAX),
                reset_secs,
            },
            Err(error) => {
                self.redis_errors.inc();
                tracing::warn!(%error, "quota count failed; allowing the request");
                Decision::Allowed {
                    limit: 0,
                    remaining: 0,
                    reset_secs: 0,
                }
            }
        }
    }

    /// Spends one credit of a client's quota. Allowed (and not counted) when Redis cannot
    /// answer: availability over strict limits, as for rates.
    pub async fn spend_credit(
        &self,
        tenant: crate::ids::TenantId,
        client: &str,
        quota: &Quota,
    ) -> Credit {
        let (refill, every) = quota.refill.unwrap_or((0, 0));
        let now = chrono::Utc::now().timestamp();
        let current = if every > 0 { now / every } else { 0 };
        let (start, period) = quota.snapshot.unwrap_or((quota.credits, current));
        let mut conn = self.redis.clone();
        let spent: redis::RedisResult<Vec<i64>> = self
            .credit
            .key(keys::client_quota(&self.config.namespace, tenant, client))
            .arg(start)
            .arg(period)
            .arg(refill)
            .arg(every)
            .invoke_async(&mut conn)
            .await;
        match spent {
            Ok(r) if r.len() == 4 => Credit {
                allowed: r[0] == 1,
                left: r[1],
                reset_secs: r[2].max(0) as u64,
                period: r[3],
            },
            other => {
                self.redis_errors.inc();
                tracing::warn!(error = ?other.err(), "quota check failed; allowing the request");
                Credit {
                    allowed: true,
                    left: quota.credits,
                    reset_secs: 0,
                    period,
                }
            }
        }
    }

    /// Sets a client's credits left (a new quota, or a top-up): forgets the count in Redis, so
    /// the next request starts from `quota`'s credits.
    pub async fn reset_credits(&self, tenant: crate::ids::TenantId, client: &str) {
        let mut conn = self.redis.clone();
        let cleared: redis::RedisResult<i64> = redis::cmd("DEL")
            .arg(keys::client_quota(&self.config.namespace, tenant, client))
            .query_async(&mut conn)
            .await;
        if let Err(error) = cleared {
            self.redis_errors.inc();
            tracing::warn!(%error, "resetting a client's credits failed");
        }
    }

    /// The credits a client has left and their period, if Redis holds a count.
    pub async fn credits_left(
        &self,
        tenant: crate::ids::TenantId,
        client: &str,
    ) -> Option<(i64, i64)> {
        let mut conn = self.redis.clone();
        let (left, period): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(keys::client_quota(&self.config.namespace, tenant, client))
            .arg("left")
            .arg("period")
            .query_async(&mut conn)
            .await
            .ok()?;
        Some((left?, period?))
    }

    /// Counts one request of a client (in memory until the next [`Self::flush_usage`]).
    pub fn count_use(&self, tenant: crate::ids::TenantId, client: &str, refused: bool) {
        let day = chrono::Utc::now().timestamp().div_euclid(86_400);
        let add = |e: &mut (u64, u64)| {
            if refused {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        };
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let clients = usage.entry((tenant, day)).or_default();
        if let Some(e) = clients.get_mut(client) {
            add(e);
        } else {
            add(clients.entry(client.to_owned()).or_default());
        }
    }

    /// Adds the counts held here to Redis (kept 400 days) and forgets them; a failed write
    /// puts them back for the next flush.
    pub async fn flush_usage(&self) {
        let taken = std::mem::take(&mut *self.usage.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for ((tenant, day), clients) in &taken {
            let date = chrono::DateTime::from_timestamp(day * 86_400, 0)
                .unwrap_or_default()
                .format("%Y%m%d")
                .to_string();
            for (client, (ok, refused)) in clients {
                let key = keys::client_usage(&self.config.namespace, *tenant, client, &date);
                pipe.hincr(&key, "ok", *ok)
                    .ignore()
                    .hincr(&key, "refused", *refused)
                    .ignore()
                    .expire(&key, 400 * 86_400)
                    .ignore();
            }
        }
        let mut conn = self.redis.clone();
        if let Err(error) = pipe.query_async::<()>(&mut conn).await {
            self.redis_errors.inc();
            tracing::warn!(%error, "client usage not written; kept for the next flush");
            let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
            for (k, clients) in taken {
                let held = usage.entry(k).or_default();
                for (client, (ok, refused)) in clients {
                    let e = held.entry(client).or_default();
                    e.0 += ok;
                    e.1 += refused;
                }
            }
        }
    }

    pub async fn flush_loop(
        self: std::sync::Arc<Self>,
        every: std::time::Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    self.flush_usage().await;
                    return;
                }
                _ = tick.tick() => self.flush_usage().await,
            }
        }
    }

    /// A client's requests per UTC day, the last `days` days (today last). Includes what this
    /// instance has not flushed yet.
    pub async fn usage(
        &self,
        tenant: crate::ids::TenantId,
        client: &str,
        days: u32,
    ) -> Result<Vec<DayUsage>, redis::RedisError> {
        self.flush_usage().await;
        let today = chrono::Utc::now().date_naive();
        let dates: Vec<chrono::NaiveDate> = (0..days)
            .rev()
            .filter_map(|back| today.checked_sub_days(chrono::Days::new(u64::from(back))))
            .collect();
        let mut pipe = redis::pipe();
        for d in &dates {
            pipe.cmd("HMGET")
                .arg(keys::client_usage(
                    &self.config.namespace,
                    tenant,
                    client,
                    &d.format("%Y%m%d").to_string(),
                ))
                .arg("ok")
                .arg("refused");
        }
        let mut conn = self.redis.clone();
        let counts: Vec<(Option<u64>, Option<u64>)> = pipe.query_async(&mut conn).await?;
        Ok(dates
            .iter()
            .zip(counts)
            .map(|(d, (ok, refused))| DayUsage {
                date: d.format("%Y-%m-%d").to_string(),
                requests: ok.unwrap_or(0),
                refused: refused.unwrap_or(0),
            })
            .collect())
    }

    /// Spends one request of a live lease for the pair, if it has any left.
    fn spend_lease(&self, key: &LeaseKey) -> Option<Decision> {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let lease = leases.get_mut(key)?;
        if lease.left == 0 || lease.until <= std::time::Instant::now() {
            return None;
        }
        lease.left -= 1;
        Some(Decision::Allowed {
            limit: lease.limit,
            remaining: lease.remaining.saturating_add(lease.left),
            reset_secs: lease.reset_secs,
        })
    }

    /// Keeps `extra` granted requests for the pair (added to what a concurrent grant left);
    /// returns how many the pair now holds.
    fn keep_lease(
        &self,
        key: LeaseKey,
        extra: u32,
        limit: u32,
        remaining: u32,
        reset_secs: u64,
    ) -> u32 {
        let now = std::time::Instant::now();
        let until = now + std::time::Duration::from_millis(self.config.lease_ms);
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        if leases.len() >= MAX_LEASES {
            leases.retain(|_, l| l.left > 0 && l.until > now);
        }
        let lease = leases.entry(key).or_insert(Lease {
            left: 0,
            until,
            limit,
            remaining,
            reset_secs,
        });
        if lease.until <= now {
            lease.left = 0;
        }
        lease.left = lease.left.saturating_add(extra);
        lease.until = until;
        lease.limit = limit;
        lease.remaining = remaining;
        lease.reset_secs = reset_secs;
        lease.left
    }

    /// Records a failed authentication from `ip` naming `attempt`; locks the pair out after
    /// `max_auth_failures`, the account (from every address) after as many, and the address
    /// after `max_auth_failures_per_ip`. Returns whether this failure started a lockout.
    pub async fn record_failure(&self, ip: IpAddr, attempt: Attempt<'_>) -> bool {
        if !self.config.enabled {
            return false;
        }
        let c = &self.config;
        let ns = &c.namespace;
        let mut invocation = self.failure.prepare_invoke();
        invocation
            .key(keys::rate::ip_failures(ns, ip))
            .key(keys::rate::ip_lock(ns, ip))
            .key(keys::rate::pair_failures(ns, ip, attempt.who()))
            .key(keys::rate::pair_lock(ns, ip, attempt.who()));
        invocation
            .arg(c.failure_window_secs * 1000)
            .arg(c.lockout_secs * 1000)
            .arg(c.max_auth_failures_per_ip.max(c.max_auth_failures))
            .arg(c.max_auth_failures);
        if let Attempt::Account(who) = attempt {
            invocation
                .key(keys::rate::account_failures(ns, who))
                .key(keys::rate::account_lock(ns, who))
                .arg(c.max_auth_failures);
        }
        let mut conn = self.redis.clone();
        match invocation.invoke_async::<i64>(&mut conn).await {
            Ok(0) => false,
            Ok(locked) => {
                self.lockouts.inc();
                if locked & 1 == 1 {
                    // Requests already leased to the address must not outlive its lockout.
                    self.leases
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|(leased_ip, _), _| *leased_ip != ip);
                }
                let scope = match (locked & 1 == 1, locked & 4 == 4) {
                    (true, _) => "address",
                    (false, true) => "account",
                    _ => "credential at address",
                };
                tracing::warn!(
                    client_ip = %ip,
                    scope,
                    window_secs = c.failure_window_secs,
                    lockout_secs = c.lockout_secs,
                    "locked out after repeated authentication failures"
                );
                true
            }
            Err(error) => {
                self.redis_errors.inc();
                tracing::warn!(%error, "recording an authentication failure failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_arguments() {
        assert_eq!(bucket_args(100.0, 200), (10_000.0, 2_000_000.0, 200));
        assert_eq!(bucket_args(0.5, 3), (2_000_000.0, 6_000_000.0, 3));
        assert_eq!(bucket_args(1_000_000.0, 10), (1.0, 10.0, 10));
        // Rates above 1,000/s keep their interval (no floor at a millisecond).
        let (interval, tolerance, _) = bucket_args(30_000.0, 60_000);
        assert!((interval - 1_000_000.0 / 30_000.0).abs() < 1e-9);
        assert!((tolerance - 2_000_000.0).abs() < 1e-6);
    }

    #[test]
    fn lease_sizes() {
        // Slow or small buckets are asked per request.
        assert_eq!(lease_size(0.5, 3, 50), 1);
        assert_eq!(lease_size(100.0, 200, 50), 5);
        assert_eq!(lease_size(100.0, 200, 0), 1);
        // A quarter of the burst at most, and 1,024.
        assert_eq!(lease_size(30_000.0, 10, 50), 2);
        assert_eq!(lease_size(1_000_000.0, 1_000_000, 50), 1024);
    }

    #[test]
    fn validation() {
        assert!(RateLimitConfig::default().validate().is_ok());
        let bad = RateLimitConfig {
            per_ip_per_sec: 0.0,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "rate_limit.per_ip_per_sec");
    }
}
