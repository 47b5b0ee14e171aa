//! The instance's shared Redis connection, behind a circuit breaker.
//!
//! Owns one rule: when Redis stops answering, callers learn it at once instead of each waiting
//! on a reconnection. The first failure that says Redis is unreachable (refused, dropped, timed
//! out, any I/O error) opens the breaker: for [`OPEN_FOR`] every command fails immediately with
//! an I/O error, which every caller already treats as "Redis unavailable" (limits allow, caches
//! fall back to PostgreSQL, broadcasts wait). Then one command at a time is let through as a
//! probe; the first success closes the breaker. Errors Redis itself answers (a wrong type, a
//! script error) say nothing about its reachability and leave the breaker as it is.
//!
//! Foundation: std and crates only. Never holds a lock across a command; never retries a
//! command itself (the connection manager reconnects underneath).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// How long the breaker stays open before a probe.
pub const OPEN_FOR: Duration = Duration::from_secs(1);

/// A cloneable handle on the shared connection and its breaker.
#[derive(Clone)]
pub struct Link {
    inner: ConnectionManager,
    breaker: Arc<Breaker>,
}

struct Breaker {
    origin: Instant,
    /// Milliseconds since `origin` until which commands fail at once; 0: closed.
    open_until: AtomicU64,
    opened: Option<prometheus::IntCounter>,
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    /// Whether a command may go to Redis now: always when closed; when open, only once its
    /// time is up, and then only one command (the probe) per `OPEN_FOR`.
    fn admit(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        now >= until
            && self
                .open_until
                .compare_exchange(
                    until,
                    now + OPEN_FOR.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    fn record<T>(&self, result: &RedisResult<T>) {
        match result {
            Ok(_) => {
                if self.open_until.load(Ordering::Acquire) != 0 {
                    self.open_until.store(0, Ordering::Release);
                    tracing::info!("Redis answers again");
                }
            }
            Err(e) if unreachable(e) => {
                let was = self.open_until.swap(
                    self.now_ms() + OPEN_FOR.as_millis() as u64,
                    Ordering::AcqRel,
                );
                if was == 0 {
                    if let Some(c) = &self.opened {
                        c.inc();
                    }
                    tracing::warn!(error = %e, "Redis unreachable: failing its commands fast until it answers");
                }
            }
            Err(_) => {}
        }
    }
}

/// Whether an error says Redis could not be reached (as opposed to an answer it gave).
fn unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout()
}

fn open_error() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "Redis is unreachable (failing fast until it answers)",
    ))
}

impl Link {
    /// `opened` counts the times the breaker opened.
    pub fn new(inner: ConnectionManager, opened: Option<prometheus::IntCounter>) -> Self {
        Self {
            inner,
            breaker: Arc::new(Breaker {
                origin: Instant::now(),
                open_until: AtomicU64::new(0),
                opened,
            }),
        }
    }

    /// Whether commands currently fail fast.
    pub fn is_open(&self) -> bool {
        self.breaker.open_until.load(Ordering::Acquire) != 0
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        async move {
            if !self.breaker.admit() {
                return Err(open_error());
            }
            let result = self.inner.req_packed_command(cmd).await;
            self.breaker.record(&result);
            result
        }
        .boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        async move {
            if !self.breaker.admit() {
                return Err(open_error());
            }
            let result = self
                .inner
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.breaker.record(&result);
            result
        }
        .boxed()
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker {
            origin: Instant::now(),
            open_until: AtomicU64::new(0),
            opened: None,
        }
    }

    #[test]
    fn unreachable_opens_a_probe_closes_answers_leave_it() {
        let b = breaker();
        assert!(b.admit());
        // An answer Redis gave (a script error, say) does not open it.
        b.record::<()>(&Err(RedisError::from((
            redis::ErrorKind::Extension,
            "WRONGTYPE",
        ))));
        assert!(b.admit());
        // Unreachable: commands fail fast until the time is up.
        b.record::<()>(&Err(RedisError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ))));
        assert!(!b.admit() && !b.admit());
        // Time up: exactly one probe.
        b.open_until.store(1, Ordering::Release);
        assert!(b.admit());
        assert!(!b.admit());
        // The probe answers: closed.
        b.record(&Ok(()));
        assert!(b.admit() && b.admit());
    }
}
