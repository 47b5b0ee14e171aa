//! `Idempotency-Key` for write endpoints: the key, a digest of the request and the successful
//! answer are stored in the *same* transaction as the effect, so a replay can only find an
//! answer whose effect committed, and an effect can only commit with its answer.
//!
//! While the first request with a key runs, it holds a transaction-scoped advisory lock on the
//! key: a second request with the same key meanwhile is refused (`idempotency-in-flight`, 409
//! with `Retry-After`) instead of waiting; after the commit it gets the stored answer; the
//! same key with another request body is `idempotency-key-reused` (422). Failures store
//! nothing (the transaction rolls back), so a failed request may be retried with its key.
//! Answers are kept [`KEEP_HOURS`]; older rows are ignored and purged. Never decides what a
//! request does; never stores a failure.

use diesel::prelude::*;
use diesel::sql_types::{Bytea, Integer, Jsonb, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult, ErrorCode};

/// How long a stored answer is replayed.
pub const KEEP_HOURS: i32 = 24;
/// The longest key accepted.
pub const MAX_KEY: usize = 255;

/// A stored successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub status: u16,
    pub body: Value,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Bytea)]
    request_hash: Vec<u8>,
    #[diesel(sql_type = Integer)]
    status: i32,
    #[diesel(sql_type = Jsonb)]
    response: Value,
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

/// The digest a request is compared by: its canonical JSON body.
pub fn request_hash(body: &Value) -> Vec<u8> {
    Sha256::digest(body.to_string().as_bytes()).to_vec()
}

/// Checks an `Idempotency-Key` header value: 1–255 visible ASCII characters.
pub fn check_key(key: &str) -> ApiResult<()> {
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(())
}

/// Starts an idempotent request inside the caller's transaction: `Some(answer)` to replay, or
/// `None` to go on (the key is then held until the transaction ends).
pub async fn begin(
    mut conn: &AsyncPgConnection,
    scope: &str,
    key: &str,
    hash: &[u8],
) -> ApiResult<Option<Stored>> {
    let locked: Locked = diesel::sql_query(
        "SELECT pg_try_advisory_xact_lock(hashtextextended('idem:' || $1 || ':' || $2, 0)) AS locked",
    )
    .bind::<Text, _>(scope)
    .bind::<Text, _>(key)
    .get_result(&mut conn)
    .await?;
    if !locked.locked {
        return Err(ApiError::new(
            ErrorCode::IdempotencyInFlight,
            "a request with this Idempotency-Key is still being processed",
        )
        .retry_after(1));
    }
    let row: Option<Row> = diesel::sql_query(
        "SELECT request_hash, status, response FROM idempotency_keys \
         WHERE scope = $1 AND key = $2 AND created_at > now() - make_interval(hours => $3)",
    )
    .bind::<Text, _>(scope)
    .bind::<Text, _>(key)
    .bind::<Integer, _>(KEEP_HOURS)
    .get_result(&mut conn)
    .await
    .optional()?;
    match row {
        None => Ok(None),
        Some(r) if r.request_hash == hash => Ok(Some(Stored {
            status: u16::try_from(r.status).unwrap_or(200),
            body: r.response,
        })),
        Some(_) => Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request",
        )),
    }
}

/// Stores the successful answer in the caller's transaction (replacing an expired one).
pub async fn finish(
    mut conn: &AsyncPgConnection,
    scope: &str,
    key: &str,
    hash: &[u8],
    answer: &Stored,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO idempotency_keys (scope, key, request_hash, status, response) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (scope, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, \
             status = EXCLUDED.status, response = EXCLUDED.response, created_at = now()",
    )
    .bind::<Text, _>(scope)
    .bind::<Text, _>(key)
    .bind::<Bytea, _>(hash)
    .bind::<Integer, _>(i32::from(answer.status))
    .bind::<Jsonb, _>(&answer.body)
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// Drops answers older than [`KEEP_HOURS`]; returns how many.
pub async fn purge(mut conn: &AsyncPgConnection) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)",
    )
    .bind::<Integer, _>(KEEP_HOURS)
    .execute(&mut conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert!(check_key("order-42").is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY)).is_ok());
        for bad in ["", "has space", "tab\t", "é", &"k".repeat(MAX_KEY + 1)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_hash_follows_the_body() {
        let a = serde_json::json!({"a": 1});
        assert_eq!(request_hash(&a), request_hash(&a.clone()));
        assert_ne!(request_hash(&a), request_hash(&serde_json::json!({"a": 2})));
    }
}
