//! Timing of every statement a pooled connection runs, by kind (the statement's first word:
//! `select`, `insert`, `update`, `delete`, `with`, `begin`, `commit`, `rollback`, `set`, else
//! `other`): `neotenant_db_query_duration_seconds{kind}`.
//!
//! Reads only the first word of the SQL (never its binds, which may hold personal data); never
//! allocates per statement.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::LazyLock;
use std::time::Instant;

use diesel::connection::{Instrumentation, InstrumentationEvent};
use prometheus::{HistogramOpts, HistogramVec};

/// The histogram, registered by `metrics`.
pub static QUERY_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    HistogramVec::new(
        HistogramOpts::new(
            "db_query_duration_seconds",
            "Database statements by kind (their first word)",
        )
        .namespace("neotenant")
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]),
        &["kind"],
    )
    .expect("valid metric")
});

const KINDS: [&str; 10] = [
    "select", "insert", "update", "delete", "with", "begin", "commit", "rollback", "set", "other",
];

/// Collects the first word of a statement, then stops the formatting.
struct FirstWord {
    buf: [u8; 8],
    len: usize,
    started: bool,
}

impl Write for FirstWord {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for b in s.bytes() {
            if b.is_ascii_whitespace() || b == b'(' || b == b';' {
                if self.started {
                    return Err(std::fmt::Error);
                }
                continue;
            }
            self.started = true;
            if self.len == self.buf.len() {
                return Err(std::fmt::Error);
            }
            self.buf[self.len] = b.to_ascii_lowercase();
            self.len += 1;
        }
        Ok(())
    }
}

/// The kind of a statement from its text.
pub fn kind_of(sql: &dyn std::fmt::Display) -> &'static str {
    let mut w = FirstWord {
        buf: [0; 8],
        len: 0,
        started: false,
    };
    let _ = write!(w, "{sql}");
    let word = &w.buf[..w.len];
    KINDS
        .iter()
        .find(|k| k.as_bytes() == word)
        .copied()
        .unwrap_or("other")
}

/// A connection's timer: statements finish in the order they started (pipelined ones too).
#[derive(Default)]
pub struct QueryTimer {
    started: VecDeque<(Instant, &'static str)>,
}

impl Instrumentation for QueryTimer {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { query, .. } if self.started.len() < 64 => {
                self.started.push_back((Instant::now(), kind_of(query)));
            }
            InstrumentationEvent::FinishQuery { .. } => {
                if let Some((at, kind)) = self.started.pop_front() {
                    QUERY_SECONDS
                        .with_label_values(&[kind])
                        .observe(at.elapsed().as_secs_f64());
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::kind_of;

    #[test]
    fn kinds_come_from_the_first_word_only() {
        assert_eq!(
            kind_of(&"SELECT \"x\" FROM t -- binds: [\"secret\"]"),
            "select"
        );
        assert_eq!(kind_of(&"  insert into t values ($1)"), "insert");
        assert_eq!(kind_of(&"WITH a AS (select 1) select * from a"), "with");
        assert_eq!(kind_of(&"BEGIN; SET LOCAL search_path TO x"), "begin");
        assert_eq!(kind_of(&"(SELECT 1) UNION (SELECT 2)"), "select");
        assert_eq!(kind_of(&"VACUUM"), "other");
        assert_eq!(kind_of(&"selected"), "other");
        assert_eq!(kind_of(&""), "other");
    }
}
