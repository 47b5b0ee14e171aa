//! SQL of webhooks: endpoints, the router's cursor, messages (the per-endpoint queues), the
//! attempts log, endpoint leases and replays. Every function runs on the caller's connection
//! (inside its transaction); none decides anything.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use crate::outbox::Cursor;

#[derive(Debug, Clone, QueryableByName)]
pub struct EndpointRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Text)]
    pub description: String,
    #[diesel(sql_type = Array<Text>)]
    pub event_types: Vec<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub rate_limit: Option<i32>,
    #[diesel(sql_type = Bool)]
    pub enabled: bool,
    #[diesel(sql_type = Nullable<Text>)]
    pub disabled_reason: Option<String>,
    #[diesel(sql_type = Text)]
    pub secret: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub previous_secret: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub previous_expires_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub signing_key: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub public_key: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub failing_since: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

const ENDPOINT_COLUMNS: &str = "id, url, description, event_types, rate_limit, enabled, \
    disabled_reason, secret, previous_secret, previous_expires_at, signing_key, public_key, \
    failing_since, created_at, updated_at";

pub async fn insert_endpoint(
    mut conn: &AsyncPgConnection,
    e: &EndpointRow,
    created_by: Option<Uuid>,
) -> QueryResult<EndpointRow> {
    diesel::sql_query(format!(
        "INSERT INTO webhook_endpoints (id, url, description, event_types, rate_limit, enabled, \
           secret, signing_key, public_key, created_by, disabled_reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind::<SqlUuid, _>(e.id)
    .bind::<Text, _>(&e.url)
    .bind::<Text, _>(&e.description)
    .bind::<Array<Text>, _>(&e.event_types)
    .bind::<Nullable<Integer>, _>(e.rate_limit)
    .bind::<Bool, _>(e.enabled)
    .bind::<Text, _>(&e.secret)
    .bind::<Nullable<Text>, _>(&e.signing_key)
    .bind::<Nullable<Text>, _>(&e.public_key)
    .bind::<Nullable<SqlUuid>, _>(created_by)
    .bind::<Nullable<Text>, _>(&e.disabled_reason)
    .get_result(&mut conn)
    .await
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Whether the tenant has fewer than `max` endpoints, under a lock held until the transaction
/// ends (so concurrent creates cannot pass the cap together).
pub async fn under_cap(conn: &mut AsyncPgConnection, max: usize) -> QueryResult<bool> {
    crate::db::lock_named(conn, "webhook-endpoints").await?;
    let c: Count = diesel::sql_query("SELECT count(*) AS n FROM webhook_endpoints")
        .get_result(conn)
        .await?;
    Ok(c.n < max as i64)
}

pub async fn endpoints(mut conn: &AsyncPgConnection) -> QueryResult<Vec<EndpointRow>> {
    diesel::sql_query(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id"
    ))
    .load(&mut conn)
    .await
}

/// One endpoint; `lock` takes its row lock for an update.
pub async fn endpoint(
    mut conn: &AsyncPgConnection,
    id: Uuid,
    lock: bool,
) -> QueryResult<Option<EndpointRow>> {
    diesel::sql_query(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    ))
    .bind::<SqlUuid, _>(id)
    .get_result(&mut conn)
    .await
    .optional()
}

/// Writes an endpoint's settings and secrets back (after a change by the service).
pub async fn update_endpoint(
    mut conn: &AsyncPgConnection,
    e: &EndpointRow,
) -> QueryResult<EndpointRow> {
    diesel::sql_query(format!(
        "UPDATE webhook_endpoints SET url = $2, description = $3, event_types = $4, \
           rate_limit = $5, enabled = $6, disabled_reason = $7, secret = $8, \
           previous_secret = $9, previous_expires_at = $10, signing_key = $11, public_key = $12, \
           failing_since = $13, updated_at = now() \
         WHERE id = $1 RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind::<SqlUuid, _>(e.id)
    .bind::<Text, _>(&e.url)
    .bind::<Text, _>(&e.description)
    .bind::<Array<Text>, _>(&e.event_types)
    .bind::<Nullable<Integer>, _>(e.rate_limit)
    .bind::<Bool, _>(e.enabled)
    .bind::<Nullable<Text>, _>(&e.disabled_reason)
    .bind::<Text, _>(&e.secret)
    .bind::<Nullable<Text>, _>(&e.previous_secret)
    .bind::<Nullable<Timestamptz>, _>(e.previous_expires_at)
    .bind::<Nullable<Text>, _>(&e.signing_key)
    .bind::<Nullable<Text>, _>(&e.public_key)
    .bind::<Nullable<Timestamptz>, _>(e.failing_since)
    .get_result(&mut conn)
    .await
}

pub async fn delete_endpoint(mut conn: &AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    let n = diesel::sql_query("DELETE FROM webhook_endpoints WHERE id = $1")
        .bind::<SqlUuid, _>(id)
        .execute(&mut conn)
        .await?;
    Ok(n > 0)
}

// ---- routing ---------------------------------------------------------------------------

/// The router's cursor, locked for the transaction (one router per tenant at a time; others
/// skip the tenant instead of waiting).
pub async fn lock_cursor(mut conn: &AsyncPgConnection) -> QueryResult<Option<Cursor>> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = BigInt)]
        txid: i64,
        #[diesel(sql_type = BigInt)]
        seq: i64,
    }
    let r: Option<R> =
        diesel::sql_query("SELECT txid, seq FROM webhook_cursor FOR UPDATE SKIP LOCKED")
            .get_result(&mut conn)
            .await
            .optional()?;
    Ok(r.map(|r| Cursor {
        txid: r.txid,
        seq: r.seq,
    }))
}

pub async fn set_cursor(mut conn: &AsyncPgConnection, c: Cursor) -> QueryResult<()> {
    diesel::sql_query("UPDATE webhook_cursor SET txid = $1, seq = $2")
        .bind::<BigInt, _>(c.txid)
        .bind::<BigInt, _>(c.seq)
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// What the router needs of each enabled endpoint.
#[derive(Debug, Clone, QueryableByName)]
pub struct Route {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Array<Text>)]
    pub event_types: Vec<String>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

/// Endpoints that receive new events: enabled ones and ones disabled by the platform (their
/// queue keeps filling, so nothing is lost while a receiver is down); not those a person
/// disabled.
pub async fn routes(mut conn: &AsyncPgConnection) -> QueryResult<Vec<Route>> {
    diesel::sql_query(
        "SELECT id, event_types, created_at FROM webhook_endpoints \
         WHERE enabled OR disabled_reason IS DISTINCT FROM 'by request'",
    )
    .load(&mut conn)
    .await
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: Uuid,
    pub endpoint: Uuid,
    pub event_type: String,
    pub event_id: String,
    pub event_at: DateTime<Utc>,
    pub payload: Value,
}

pub async fn insert_messages(mut conn: &AsyncPgConnection, rows: &[NewMessage]) -> QueryResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let endpoints: Vec<Uuid> = rows.iter().map(|r| r.endpoint).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    let events: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    let ats: Vec<DateTime<Utc>> = rows.iter().map(|r| r.event_at).collect();
    let payloads: Vec<&Value> = rows.iter().map(|r| &r.payload).collect();
    diesel::sql_query(
        "INSERT INTO webhook_messages (id, endpoint_id, event_type, event_id, event_at, payload) \
         SELECT a, b, c, d, e, f FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], \
                              $5::timestamptz[], $6::jsonb[]) WITH ORDINALITY AS x(a, b, c, d, e, f, o) \
         ORDER BY o",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<SqlUuid>, _>(&endpoints)
    .bind::<Array<Text>, _>(&types)
    .bind::<Array<Text>, _>(&events)
    .bind::<Array<Timestamptz>, _>(&ats)
    .bind::<Array<Jsonb>, _>(&payloads)
    .execute(&mut conn)
    .await?;
    Ok(())
}

// ---- delivery --------------------------------------------------------------------------

/// Takes up to `limit` enabled endpoints with due messages and no live lease, leasing each for
/// `lease_secs`.
pub async fn lease_endpoints(
    mut conn: &AsyncPgConnection,
    limit: i64,
    lease_secs: f64,
) -> QueryResult<Vec<EndpointRow>> {
    diesel::sql_query(format!(
        "UPDATE webhook_endpoints e SET lease_until = now() + make_interval(secs => $2) \
         WHERE e.id IN (SELECT x.id FROM webhook_endpoints x \
             WHERE x.enabled AND (x.lease_until IS NULL OR x.lease_until < now()) \
               AND EXISTS (SELECT 1 FROM webhook_messages m WHERE m.endpoint_id = x.id \
                           AND m.status = 'pending' AND m.due_at <= now()) \
             ORDER BY x.lease_until NULLS FIRST LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING {}",
        ENDPOINT_COLUMNS
            .split(", ")
            .map(|c| format!("e.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .bind::<BigInt, _>(limit)
    .bind::<diesel::sql_types::Double, _>(lease_secs)
    .load(&mut conn)
    .await
}

/// Ends an endpoint's lease; `hold_secs` keeps it from being taken again that long (its rate
/// limit).
pub async fn release(mut conn: &AsyncPgConnection, id: Uuid, hold_secs: f64) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE webhook_endpoints SET lease_until = \
           CASE WHEN $2 > 0 THEN now() + make_interval(secs => $2) ELSE NULL END WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<diesel::sql_types::Double, _>(hold_secs)
    .execute(&mut conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, QueryableByName)]
pub struct DueMessage {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Jsonb)]
    pub payload: Value,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
}

/// The endpoint's due messages, oldest first.
pub async fn due_messages(
    mut conn: &AsyncPgConnection,
    endpoint: Uuid,
    limit: i64,
) -> QueryResult<Vec<DueMessage>> {
    diesel::sql_query(
        "SELECT id, event_type, payload, attempts FROM webhook_messages \
         WHERE endpoint_id = $1 AND status = 'pending' AND due_at <= now() \
         ORDER BY due_at, seq LIMIT $2",
    )
    .bind::<SqlUuid, _>(endpoint)
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await
}

/// One attempt's record and the message's state after it.
#[derive(Debug, Clone)]
pub struct Attempted {
    pub message: Uuid,
    pub n: i32,
    pub url: String,
    pub request_body: String,
    pub response_status: Option<i32>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i32,
    /// `succeeded`, `pending` (again at `due_at`) or `failed`.
    pub status: &'static str,
    pub due_at: DateTime<Utc>,
}

pub async fn record_attempts(mut conn: &AsyncPgConnection, rows: &[Attempted]) -> QueryResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.message).collect();
    let ns: Vec<i32> = rows.iter().map(|r| r.n).collect();
    let urls: Vec<&str> = rows.iter().map(|r| r.url.as_str()).collect();
    let reqs: Vec<&str> = rows.iter().map(|r| r.request_body.as_str()).collect();
    let codes: Vec<Option<i32>> = rows.iter().map(|r| r.response_status).collect();
    let bodies: Vec<Option<&str>> = rows.iter().map(|r| r.response_body.as_deref()).collect();
    let errors: Vec<Option<&str>> = rows.iter().map(|r| r.error.as_deref()).collect();
    let durations: Vec<i32> = rows.iter().map(|r| r.duration_ms).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.status).collect();
    let dues: Vec<DateTime<Utc>> = rows.iter().map(|r| r.due_at).collect();
    diesel::sql_query(
        "WITH x AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], \
                      $5::int[], $6::text[], $7::text[], $8::int[], $9::text[], $10::timestamptz[]) \
                    AS x(id, n, url, req, code, body, error, ms, status, due)), \
         a AS (INSERT INTO webhook_attempts (message_id, n, url, request_body, response_status, \
                 response_body, error, duration_ms) \
               SELECT id, n, url, req, code, body, error, ms FROM x ON CONFLICT DO NOTHING) \
         UPDATE webhook_messages m SET status = x.status, attempts = x.n, due_at = x.due, \
           last_status = x.code, last_error = x.error, \
           delivered_at = CASE WHEN x.status = 'succeeded' THEN now() ELSE m.delivered_at END \
         FROM x WHERE m.id = x.id AND m.status = 'pending'",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<Integer>, _>(&ns)
    .bind::<Array<Text>, _>(&urls)
    .bind::<Array<Text>, _>(&reqs)
    .bind::<Array<Nullable<Integer>>, _>(&codes)
    .bind::<Array<Nullable<Text>>, _>(&bodies)
    .bind::<Array<Nullable<Text>>, _>(&errors)
    .bind::<Array<Integer>, _>(&durations)
    .bind::<Array<Text>, _>(&statuses)
    .bind::<Array<Timestamptz>, _>(&dues)
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// Notes the endpoint's health after a batch: a success clears `failing_since`, failures only
/// set it when unset. Returns when it has been failing since (if it is).
pub async fn health(
    mut conn: &AsyncPgConnection,
    id: Uuid,
    any_success: bool,
    any_failure: bool,
) -> QueryResult<Option<DateTime<Utc>>> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Nullable<Timestamptz>)]
        failing_since: Option<DateTime<Utc>>,
    }
    let r: Option<R> = diesel::sql_query(
        "UPDATE webhook_endpoints SET failing_since = CASE \
           WHEN $2 THEN NULL WHEN $3 THEN coalesce(failing_since, now()) ELSE failing_since END \
         WHERE id = $1 RETURNING failing_since",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Bool, _>(any_success)
    .bind::<Bool, _>(any_failure && !any_success)
    .get_result(&mut conn)
    .await
    .optional()?;
    Ok(r.and_then(|r| r.failing_since))
}

/// Disables an endpoint for a reason (`gone`, `failing`, `by request`); whether it was enabled.
pub async fn disable(mut conn: &AsyncPgConnection, id: Uuid, reason: &str) -> QueryResult<bool> {
    let n = diesel::sql_query(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, lease_until = NULL, \
           updated_at = now() WHERE id = $1 AND enabled",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(reason)
    .execute(&mut conn)
    .await?;
    Ok(n > 0)
}

/// Whether the tenant has webhook work: an endpoint at all, and then outbox events after the
/// router's cursor or due messages.
pub async fn has_work(mut conn: &AsyncPgConnection) -> QueryResult<(bool, bool)> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Bool)]
        any: bool,
        #[diesel(sql_type = Bool)]
        work: bool,
    }
    let r: R = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM webhook_endpoints) AS any, \
           (EXISTS (SELECT 1 FROM webhook_endpoints) AND ( \
             EXISTS (SELECT 1 FROM outbox o, webhook_cursor c WHERE (o.txid, o.seq) > (c.txid, c.seq)) \
             OR EXISTS (SELECT 1 FROM webhook_messages m JOIN webhook_endpoints e ON e.id = m.endpoint_id \
                        WHERE m.status = 'pending' AND m.due_at <= now() AND e.enabled))) AS work",
    )
    .get_result(&mut conn)
    .await?;
    Ok((r.any, r.work))
}

// ---- the log -----------------------------------------------------------------------------

#[derive(Debug, Clone, QueryableByName)]
pub struct MessageRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub endpoint_id: Uuid,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Timestamptz)]
    pub event_at: DateTime<Utc>,
    #[diesel(sql_type = Jsonb)]
    pub payload: Value,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    pub due_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub last_status: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub delivered_at: Option<DateTime<Utc>>,
}

const MESSAGE_COLUMNS: &str = "id, endpoint_id, event_type, event_id, event_at, payload, status, \
    attempts, due_at, last_status, last_error, created_at, delivered_at";

/// An endpoint's messages, newest first, after the cursor `(created_at, id)`.
pub async fn messages(
    mut conn: &AsyncPgConnection,
    endpoint: Uuid,
    status: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> QueryResult<Vec<MessageRow>> {
    diesel::sql_query(format!(
        "SELECT {MESSAGE_COLUMNS} FROM webhook_messages WHERE endpoint_id = $1 \
           AND ($2::text IS NULL OR status = $2) \
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4)) \
         ORDER BY created_at DESC, id DESC LIMIT $5"
    ))
    .bind::<SqlUuid, _>(endpoint)
    .bind::<Nullable<Text>, _>(status)
    .bind::<Nullable<Timestamptz>, _>(after.map(|a| a.0))
    .bind::<SqlUuid, _>(after.map_or(Uuid::nil(), |a| a.1))
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await
}

pub async fn message(mut conn: &AsyncPgConnection, id: Uuid) -> QueryResult<Option<MessageRow>> {
    diesel::sql_query(format!(
        "SELECT {MESSAGE_COLUMNS} FROM webhook_messages WHERE id = $1"
    ))
    .bind::<SqlUuid, _>(id)
    .get_result(&mut conn)
    .await
    .optional()
}

#[derive(Debug, Clone, QueryableByName)]
pub struct AttemptRow {
    #[diesel(sql_type = Integer)]
    pub n: i32,
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Text)]
    pub request_body: String,
    #[diesel(sql_type = Nullable<Integer>)]
    pub response_status: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    pub response_body: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    #[diesel(sql_type = Integer)]
    pub duration_ms: i32,
}

pub async fn attempts(mut conn: &AsyncPgConnection, message: Uuid) -> QueryResult<Vec<AttemptRow>> {
    diesel::sql_query(
        "SELECT n, at, url, request_body, response_status, response_body, error, duration_ms \
         FROM webhook_attempts WHERE message_id = $1 ORDER BY n",
    )
    .bind::<SqlUuid, _>(message)
    .load(&mut conn)
    .await
}

/// Queues a message again now (a manual retry); a message already pending is left alone.
pub async fn retry(mut conn: &AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    let n = diesel::sql_query(
        "UPDATE webhook_messages SET status = 'pending', due_at = now(), attempts = 0 \
         WHERE id = $1 AND status IN ('failed', 'succeeded')",
    )
    .bind::<SqlUuid, _>(id)
    .execute(&mut conn)
    .await?;
    Ok(n > 0)
}

/// The events of `[since, until)` from finished transactions, in commit order, at most `max`
/// (a replay; the caller applies the endpoint's filters and queues them).
pub async fn replay_events(
    mut conn: &AsyncPgConnection,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    max: i64,
) -> QueryResult<Vec<crate::outbox::Event>> {
    diesel::sql_query(
        "SELECT seq, txid, topic, aggregate_type, aggregate_id, payload, at FROM outbox \
         WHERE at >= $1 AND at < $2 \
           AND txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
         ORDER BY txid, seq LIMIT $3",
    )
    .bind::<Timestamptz, _>(since)
    .bind::<Timestamptz, _>(until)
    .bind::<BigInt, _>(max)
    .load(&mut conn)
    .await
}

/// Moves an endpoint's lease `secs` ahead (a delivery task still working on it).
pub async fn extend_lease(mut conn: &AsyncPgConnection, id: Uuid, secs: f64) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE webhook_endpoints SET lease_until = now() + make_interval(secs => $2) \
         WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<diesel::sql_types::Double, _>(secs)
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// Who created an endpoint.
pub async fn created_by(mut conn: &AsyncPgConnection, id: Uuid) -> QueryResult<Option<Uuid>> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Nullable<SqlUuid>)]
        created_by: Option<Uuid>,
    }
    let r: Option<R> = diesel::sql_query("SELECT created_by FROM webhook_endpoints WHERE id = $1")
        .bind::<SqlUuid, _>(id)
        .get_result(&mut conn)
        .await
        .optional()?;
    Ok(r.and_then(|r| r.created_by))
}
