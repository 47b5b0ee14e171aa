//! The transactional outbox: events written in the same transaction as the change they
//! describe, read by consumers (the search indexer now; webhooks, notifications and plugins
//! later) in commit-safe order.
//!
//! Order and safety: every row carries the id of the transaction that wrote it (`txid`).
//! Consumers read in `(txid, seq)` order and only rows of transactions older than the oldest
//! one still running (`pg_snapshot_xmin`), so a transaction that commits late can never put a
//! row *behind* a consumer's cursor: nothing is skipped, and a consumer that stores its cursor
//! with its own effects (atomically) applies each event at least once. A long transaction
//! delays consumers (bounded by the pools' statement and idle-in-transaction timeouts); it
//! never loses events. This module never decides what an event means.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Jsonb, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::tenant::outbox;

/// A consumer's position: the last `(txid, seq)` it applied. `(0, 0)` is the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    pub txid: i64,
    pub seq: i64,
}

/// An event read back.
#[derive(Debug, Clone, QueryableByName)]
pub struct Event {
    #[diesel(sql_type = BigInt)]
    pub seq: i64,
    #[diesel(sql_type = BigInt)]
    pub txid: i64,
    #[diesel(sql_type = Text)]
    pub topic: String,
    #[diesel(sql_type = Text)]
    pub aggregate_type: String,
    #[diesel(sql_type = Text)]
    pub aggregate_id: String,
    #[diesel(sql_type = Jsonb)]
    pub payload: Value,
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
}

impl Cursor {
    /// The public form of the position: `<prefix>_<txid>_<seq>` (`evt`, `chg`).
    pub fn id(self, prefix: &str) -> String {
        format!("{prefix}_{}_{}", self.txid, self.seq)
    }

    /// Parses [`Self::id`]'s form with `prefix`; absent or empty is the beginning. `None` when
    /// the text is not such a position.
    pub fn parse(raw: Option<&str>, prefix: &str) -> Option<Self> {
        let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
            return Some(Self::default());
        };
        let (txid, seq) = raw
            .strip_prefix(prefix)?
            .strip_prefix('_')?
            .split_once('_')?;
        let number = |v: &str| {
            (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse::<i64>().ok())
                .flatten()
        };
        Some(Self {
            txid: number(txid)?,
            seq: number(seq)?,
        })
    }
}

impl Event {
    pub fn cursor(&self) -> Cursor {
        Cursor {
            txid: self.txid,
            seq: self.seq,
        }
    }
}

/// Writes an event inside the caller's transaction.
pub async fn emit(
    mut conn: &AsyncPgConnection,
    topic: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    payload: Value,
) -> QueryResult<()> {
    diesel::insert_into(outbox::table)
        .values((
            outbox::topic.eq(topic),
            outbox::aggregate_type.eq(aggregate_type),
            outbox::aggregate_id.eq(aggregate_id),
            outbox::payload.eq(payload),
        ))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Up to `limit` events after `after`, only from transactions no longer running.
/// Records, for the consumer `consumer`, how old the oldest of the `events` it just picked up
/// for one tenant is (none: caught up): `neotenant_outbox_lag_seconds{consumer}`.
pub fn record_lag(consumer: &str, events: &[Event]) {
    let secs = events.first().map_or(0.0, |first| {
        (chrono::Utc::now() - first.at).num_milliseconds() as f64 / 1000.0
    });
    crate::metrics::outbox_lag(consumer, secs);
}

pub async fn read_after(
    conn: &mut AsyncPgConnection,
    after: Cursor,
    limit: i64,
) -> QueryResult<Vec<Event>> {
    diesel::sql_query(
        "SELECT seq, txid, topic, aggregate_type, aggregate_id, payload, at FROM outbox \
         WHERE (txid, seq) > ($1, $2) \
           AND txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
         ORDER BY txid, seq LIMIT $3",
    )
    .bind::<BigInt, _>(after.txid)
    .bind::<BigInt, _>(after.seq)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// Events read per query while scanning.
const SCAN_BATCH: i64 = 500;

/// What [`scan`] found: the events kept, where the scan stopped, and whether more events are
/// waiting behind it.
pub struct Scanned {
    pub events: Vec<Event>,
    pub next: Cursor,
    pub more: bool,
}

/// Up to `limit` events after `after` that `keep` accepts, reading at most `max_scan` events
/// (so a rare filter never makes one call read the whole outbox). `next` is where the scan
/// stopped — after the last kept event when `limit` was reached, else after the last event read
/// — so a caller polling with it never reads an event twice nor skips one.
pub async fn scan(
    db: &crate::db::TenantDb,
    after: Cursor,
    limit: usize,
    max_scan: usize,
    mut keep: impl FnMut(&Event) -> bool,
) -> Result<Scanned, crate::error::ApiError> {
    let mut events = Vec::new();
    let mut at = after;
    let mut scanned = 0;
    let mut more = false;
    'scan: while scanned < max_scan {
        let batch = db
            .transaction(async |tx| {
                Ok::<_, crate::error::ApiError>(read_after(tx.conn(), at, SCAN_BATCH).await?)
            })
            .await?;
        let n = batch.len();
        let full = n as i64 == SCAN_BATCH;
        for (i, e) in batch.into_iter().enumerate() {
            scanned += 1;
            at = e.cursor();
            if keep(&e) {
                events.push(e);
                if events.len() == limit {
                    more = i + 1 < n || full;
                    break 'scan;
                }
            }
        }
        // A full batch may have more behind it; a short one is the end for now.
        more = full;
        if !full {
            break;
        }
    }
    Ok(Scanned {
        events,
        next: at,
        more,
    })
}

/// The position after every event that is safe to read now (for consumers that rebuild from
/// the source and then continue from here).
pub async fn head(conn: &mut AsyncPgConnection) -> QueryResult<Cursor> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        txid: i64,
        #[diesel(sql_type = BigInt)]
        seq: i64,
    }
    let row: Option<Row> = diesel::sql_query(
        "SELECT txid, seq FROM outbox \
         WHERE txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
         ORDER BY txid DESC, seq DESC LIMIT 1",
    )
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map_or(Cursor::default(), |r| Cursor {
        txid: r.txid,
        seq: r.seq,
    }))
}

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn cursor_ids_round_trip_and_refuse_garbage() {
        let c = Cursor { txid: 42, seq: 7 };
        assert_eq!(Cursor::parse(Some(&c.id("evt")), "evt"), Some(c));
        assert_eq!(Cursor::parse(None, "evt"), Some(Cursor::default()));
        assert_eq!(Cursor::parse(Some(" "), "chg"), Some(Cursor::default()));
        assert_eq!(Cursor::parse(Some(&c.id("evt")), "chg"), None);
        for bad in [
            "7",
            "evt_",
            "evt_1",
            "evt_a_b",
            "evt_-1_2",
            "evt_1_2_3",
            "evt_+1_2",
            "evtx_1_2",
        ] {
            assert_eq!(Cursor::parse(Some(bad), "evt"), None, "{bad}");
        }
    }
}
