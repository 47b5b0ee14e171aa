//! Rate limits per client IP and per user, and temporary lockouts after repeated
//! authentication failures, kept in Redis so every instance enforces the same budget.
//!
//! Owns the GCRA (generic cell rate algorithm) script: one atomic Redis call per request
//! checks the IP's and the user's buckets and the IP's lockout together, and spends from the
//! buckets only when all allow. If Redis cannot be reached the request proceeds (fail open:
//! availability over strict limits) and the failure is logged and counted. Never keys a bucket
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

/// GCRA over up to two buckets plus one lockout key, atomically.
/// KEYS: lock key, then bucket keys. ARGV: per bucket (interval_us, tolerance_us, burst).
/// Times are microseconds since [`EPOCH_SECS`] kept as doubles (exact to well below a
/// microsecond for centuries), so an interval need not be whole: 30,000/s is 33.33… µs, not
/// a rounded 33 or a floored millisecond. Returns {code, a, b, c}: code 1 allowed (limit,
/// remaining, reset_ms), 0 limited (limit, retry_ms), -1 locked (retry_ms).
const GCRA: &str = r#"
local lock_ttl = redis.call('PTTL', KEYS[1])
if lock_ttl > 0 then return {-1, lock_ttl, 0, 0} end
local t = redis.call('TIME')
local now = (tonumber(t[1]) - EPOCH) * 1000000 + tonumber(t[2])
local new_tats = {}
local best_remaining, best_limit, best_reset = nil, 0, 0
for i = 2, #KEYS do
  local j = (i - 2) * 3
  local interval = tonumber(ARGV[j + 1])
  local tolerance = tonumber(ARGV[j + 2])
  local burst = tonumber(ARGV[j + 3])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - tolerance
  if now < allow_at then
    return {0, burst, math.ceil((allow_at - now) / 1000), 0}
  end
  new_tats[i] = new_tat
  local remaining = math.floor((tolerance - (new_tat - now)) / interval)
  if best_remaining == nil or remaining < best_remaining then
    best_remaining, best_limit, best_reset = remaining, burst, math.ceil((new_tat - now) / 1000)
  end
end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], string.format('%.17g', new_tats[i]), 'PX',
    math.max(math.ceil((new_tats[i] - now) / 1000), 1))
end
return {1, best_limit, best_remaining or 0, best_reset}
"#;

/// The origin of the limiter's clock (2025-01-01T00:00:00Z), keeping its numbers small.
const EPOCH_SECS: u64 = 1_735_689_600;

/// Counts one authentication failure; locks the IP when the window's count reaches the
/// maximum. KEYS: counter, lock. ARGV: window_ms, max, lock_ms. Returns 1 when this call locked.
const FAILURE: &str = r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n >= tonumber(ARGV[2]) and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], 1, 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

pub struct RateLimiter {
    config: RateLimitConfig,
    redis: redis::aio::ConnectionManager,
    gcra: redis::Script,
    failure: redis::Script,
    pub lockouts: prometheus::IntCounter,
    pub redis_errors: prometheus::IntCounter,
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
        redis: redis::aio::ConnectionManager,
        lockouts: prometheus::IntCounter,
        redis_errors: prometheus::IntCounter,
    ) -> Self {
        Self {
            config,
            redis,
            gcra: redis::Script::new(&GCRA.replace("EPOCH", &EPOCH_SECS.to_string())),
            failure: redis::Script::new(FAILURE),
            lockouts,
            redis_errors,
        }
    }

    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Checks (and spends from) the IP's bucket and, when known, the user's.
    pub async fn check(&self, ip: IpAddr, user: Option<&str>) -> Decision {
        if !self.config.enabled {
            return Decision::Allowed {
                limit: 0,
                remaining: 0,
                reset_secs: 0,
            };
        }
        let ns = &self.config.namespace;
        let mut invocation = self.gcra.prepare_invoke();
        invocation.key(keys::rate::ip_lock(ns, ip));
        let (i, t, b) = bucket_args(self.config.per_ip_per_sec, self.config.per_ip_burst);
        invocation
            .key(keys::rate::ip_bucket(ns, ip))
            .arg(i)
            .arg(t)
            .arg(b);
        if let Some(user) = user {
            let (i, t, b) = bucket_args(self.config.per_user_per_sec, self.config.per_user_burst);
            invocation
                .key(keys::rate::user_bucket(ns, user))
                .arg(i)
                .arg(t)
                .arg(b);
        }
        let mut conn = self.redis.clone();
        match invocation.invoke_async::<Vec<i64>>(&mut conn).await {
            Ok(r) if r.len() == 4 => {
                let secs = |ms: i64| (ms.max(0) as u64).div_ceil(1000);
                match r[0] {
                    1 => Decision::Allowed {
                        limit: r[1] as u32,
                        remaining: r[2].max(0) as u32,
                        reset_secs: secs(r[3]),
                    },
                    0 => Decision::Limited {
                        limit: r[1] as u32,
                        retry_after_secs: secs(r[2]).max(1),
                    },
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

    /// Records an authentication failure from `ip`; locks it out after too many. Returns
    /// whether this failure started a lockout.
    pub async fn record_failure(&self, ip: IpAddr) -> bool {
        if !self.config.enabled {
            return false;
        }
        let ns = &self.config.namespace;
        let mut conn = self.redis.clone();
        let locked: redis::RedisResult<i64> = self
            .failure
            .key(keys::rate::ip_failures(ns, ip))
            .key(keys::rate::ip_lock(ns, ip))
            .arg(self.config.failure_window_secs * 1000)
            .arg(self.config.max_auth_failures)
            .arg(self.config.lockout_secs * 1000)
            .invoke_async(&mut conn)
            .await;
        match locked {
            Ok(1) => {
                self.lockouts.inc();
                tracing::warn!(
                    client_ip = %ip,
                    failures = self.config.max_auth_failures,
                    window_secs = self.config.failure_window_secs,
                    lockout_secs = self.config.lockout_secs,
                    "client locked out after repeated authentication failures"
                );
                true
            }
            Ok(_) => false,
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
    fn validation() {
        assert!(RateLimitConfig::default().validate().is_ok());
        let bad = RateLimitConfig {
            per_ip_per_sec: 0.0,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "rate_limit.per_ip_per_sec");
    }
}
