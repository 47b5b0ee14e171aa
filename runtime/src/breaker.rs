//! The circuit breaker: consecutive failures per installation, in memory. The caller
//! persists what a trip means (the installation disabled, an audit entry).

use std::collections::HashMap;
use std::sync::Mutex;

/// Counts consecutive plugin failures per key; a success resets the count.
pub struct Breaker {
    threshold: u32,
    counts: Mutex<HashMap<String, u32>>,
}

impl Breaker {
    pub fn new(threshold: u32) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Records a success.
    pub fn success(&self, key: &str) {
        let mut c = self.counts.lock().expect("lock");
        if c.contains_key(key) {
            c.remove(key);
        }
    }

    /// Records a failure; true exactly once, when this failure reaches the threshold.
    pub fn failure(&self, key: &str) -> bool {
        let mut c = self.counts.lock().expect("lock");
        let n = c.entry(key.to_string()).or_insert(0);
        *n += 1;
        if *n >= self.threshold {
            c.remove(key);
            true
        } else {
            false
        }
    }

    /// Forgets a key (re-enabled or removed installation).
    pub fn reset(&self, key: &str) {
        self.counts.lock().expect("lock").remove(key);
    }

    pub fn failures(&self, key: &str) -> u32 {
        self.counts
            .lock()
            .expect("lock")
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::Breaker;

    #[test]
    fn trips_once_after_consecutive_failures_and_success_resets() {
        let b = Breaker::new(3);
        assert!(!b.failure("a"));
        assert!(!b.failure("a"));
        b.success("a");
        assert!(!b.failure("a"));
        assert!(!b.failure("a"));
        assert!(!b.failure("b"));
        assert!(b.failure("a"));
        assert_eq!(b.failures("a"), 0);
        assert_eq!(b.failures("b"), 1);
    }
}
