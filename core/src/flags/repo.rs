//! SQL of feature flags: definitions, segments, history, the generation counter, scheduled
//! changes and SDK keys, on the caller's tenant transaction. Never validates or caches.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bytea, Integer, Jsonb, Nullable, Text, Timestamptz};
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

type SqlUuid = diesel::sql_types::Uuid;

/// `flag` or `segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Flag,
    Segment,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Flag => "flag",
            Kind::Segment => "segment",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Kind::Flag => "flags",
            Kind::Segment => "flag_segments",
        }
    }
}

/// A stored flag or segment.
#[derive(Debug, Clone, QueryableByName)]
pub struct Row {
    #[diesel(sql_type = Text)]
    pub key: String,
    #[diesel(sql_type = Integer)]
    pub version: i32,
    #[diesel(sql_type = Jsonb)]
    pub definition: Value,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub updated_by: Option<Uuid>,
}

fn select(kind: Kind) -> String {
    let created = match kind {
        Kind::Flag => "created_at",
        Kind::Segment => "updated_at AS created_at",
    };
    format!(
        "SELECT key, version, definition, {created}, updated_at, updated_by FROM {}",
        kind.table()
    )
}

/// Every flag or segment, by key.
pub async fn all(conn: &mut AsyncPgConnection, kind: Kind) -> QueryResult<Vec<Row>> {
    sql_query(format!("{} ORDER BY key", select(kind)))
        .load(conn)
        .await
}

type QueryResult<T> = diesel::QueryResult<T>;

/// A page of flags or segments by key, after `after`.
pub async fn page(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    after: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<Row>> {
    sql_query(format!(
        "{} WHERE ($1::text IS NULL OR key > $1) ORDER BY key LIMIT $2",
        select(kind)
    ))
    .bind::<Nullable<Text>, _>(after)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// One flag or segment; `lock` holds it (and, when absent, nothing) for a read-modify-write.
pub async fn get(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    key: &str,
    lock: bool,
) -> QueryResult<Option<Row>> {
    let suffix = if lock { " FOR UPDATE" } else { "" };
    let rows: Vec<Row> = sql_query(format!("{} WHERE key = $1{suffix}", select(kind)))
        .bind::<Text, _>(key)
        .load(conn)
        .await?;
    Ok(rows.into_iter().next())
}

/// Serialises writers of a tenant's flags (validation reads the other flags and segments).
pub async fn lock_writers(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    sql_query("SELECT generation FROM flag_state FOR UPDATE")
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(QueryableByName)]
struct Generation {
    #[diesel(sql_type = BigInt)]
    generation: i64,
}

/// The tenant's flag generation.
pub async fn generation(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    let g: Generation = sql_query("SELECT generation FROM flag_state")
        .get_result(conn)
        .await?;
    Ok(g.generation)
}

/// Bumps the generation; returns the new one.
pub async fn bump(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    let g: Generation =
        sql_query("UPDATE flag_state SET generation = generation + 1 RETURNING generation")
            .get_result(conn)
            .await?;
    Ok(g.generation)
}

/// Writes version `version` of `key` (`None`: deletes it).
pub async fn put(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    key: &str,
    version: i32,
    definition: Option<&Value>,
    author: Option<Uuid>,
) -> QueryResult<()> {
    match definition {
        Some(def) => {
            sql_query(format!(
                "INSERT INTO {} (key, version, definition, updated_by) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (key) DO UPDATE SET version = $2, definition = $3, \
                 updated_by = $4, updated_at = now()",
                kind.table()
            ))
            .bind::<Text, _>(key)
            .bind::<Integer, _>(version)
            .bind::<Jsonb, _>(def)
            .bind::<Nullable<SqlUuid>, _>(author)
            .execute(conn)
            .await?;
        }
        None => {
            sql_query(format!("DELETE FROM {} WHERE key = $1", kind.table()))
                .bind::<Text, _>(key)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

/// One history entry.
#[derive(Debug, Clone, QueryableByName)]
pub struct HistoryRow {
    #[diesel(sql_type = Integer)]
    pub version: i32,
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub definition: Option<Value>,
    #[diesel(sql_type = Jsonb)]
    pub diff: Value,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub author_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    pub author_name: Option<String>,
    #[diesel(sql_type = Text)]
    pub reason: String,
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
}

pub async fn add_history(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    key: &str,
    row: &HistoryRow,
) -> QueryResult<()> {
    sql_query(
        "INSERT INTO flag_history (kind, key, version, definition, diff, author_id, author_name, reason, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind::<Text, _>(kind.as_str())
    .bind::<Text, _>(key)
    .bind::<Integer, _>(row.version)
    .bind::<Nullable<Jsonb>, _>(&row.definition)
    .bind::<Jsonb, _>(&row.diff)
    .bind::<Nullable<SqlUuid>, _>(row.author_id)
    .bind::<Nullable<Text>, _>(&row.author_name)
    .bind::<Text, _>(&row.reason)
    .bind::<Timestamptz, _>(row.at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The newest version `key` ever had (a deleted key keeps counting).
pub async fn last_version(conn: &mut AsyncPgConnection, kind: Kind, key: &str) -> QueryResult<i32> {
    #[derive(QueryableByName)]
    struct V {
        #[diesel(sql_type = Integer)]
        v: i32,
    }
    let v: V = sql_query(
        "SELECT coalesce(max(version), 0) AS v FROM flag_history WHERE kind = $1 AND key = $2",
    )
    .bind::<Text, _>(kind.as_str())
    .bind::<Text, _>(key)
    .get_result(conn)
    .await?;
    Ok(v.v)
}

const HISTORY: &str =
    "SELECT version, definition, diff, author_id, author_name, reason, at FROM flag_history";

/// History of `key`, newest first, before `before` when given.
pub async fn history(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    key: &str,
    before: Option<i32>,
    limit: i64,
) -> QueryResult<Vec<HistoryRow>> {
    sql_query(format!(
        "{HISTORY} WHERE kind = $1 AND key = $2 AND version < $3 ORDER BY version DESC LIMIT $4"
    ))
    .bind::<Text, _>(kind.as_str())
    .bind::<Text, _>(key)
    .bind::<Integer, _>(before.unwrap_or(i32::MAX))
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

pub async fn history_version(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    key: &str,
    version: i32,
) -> QueryResult<Option<HistoryRow>> {
    let rows: Vec<HistoryRow> = sql_query(format!(
        "{HISTORY} WHERE kind = $1 AND key = $2 AND version = $3"
    ))
    .bind::<Text, _>(kind.as_str())
    .bind::<Text, _>(key)
    .bind::<Integer, _>(version)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next())
}

/// A scheduled change.
#[derive(Debug, Clone, QueryableByName)]
pub struct ScheduleRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub flag_key: String,
    #[diesel(sql_type = Timestamptz)]
    pub apply_at: DateTime<Utc>,
    #[diesel(sql_type = Jsonb)]
    pub patch: Value,
    #[diesel(sql_type = Text)]
    pub reason: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Nullable<Integer>)]
    pub applied_version: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub created_by: Option<Uuid>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

const SCHEDULES: &str = "SELECT id, flag_key, apply_at, patch, reason, status, applied_version, \
     error, created_by, created_at FROM flag_schedules";

pub async fn add_schedule(conn: &mut AsyncPgConnection, row: &ScheduleRow) -> QueryResult<()> {
    sql_query(
        "INSERT INTO flag_schedules (id, flag_key, apply_at, patch, reason, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind::<SqlUuid, _>(row.id)
    .bind::<Text, _>(&row.flag_key)
    .bind::<Timestamptz, _>(row.apply_at)
    .bind::<Jsonb, _>(&row.patch)
    .bind::<Text, _>(&row.reason)
    .bind::<Nullable<SqlUuid>, _>(row.created_by)
    .execute(conn)
    .await?;
    Ok(())
}

/// Schedules of `key`, soonest first.
pub async fn schedules(conn: &mut AsyncPgConnection, key: &str) -> QueryResult<Vec<ScheduleRow>> {
    sql_query(format!(
        "{SCHEDULES} WHERE flag_key = $1 ORDER BY apply_at, id"
    ))
    .bind::<Text, _>(key)
    .load(conn)
    .await
}

pub async fn schedule(
    conn: &mut AsyncPgConnection,
    key: &str,
    id: Uuid,
    lock: bool,
) -> QueryResult<Option<ScheduleRow>> {
    let suffix = if lock { " FOR UPDATE" } else { "" };
    let rows: Vec<ScheduleRow> = sql_query(format!(
        "{SCHEDULES} WHERE flag_key = $1 AND id = $2{suffix}"
    ))
    .bind::<Text, _>(key)
    .bind::<SqlUuid, _>(id)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next())
}

/// Pending schedules due now, locked (others skip them), oldest first.
pub async fn due_schedules(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> QueryResult<Vec<ScheduleRow>> {
    sql_query(format!(
        "{SCHEDULES} WHERE status = 'pending' AND apply_at <= now() \
         ORDER BY apply_at, id LIMIT $1 FOR UPDATE SKIP LOCKED"
    ))
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

pub async fn set_schedule_outcome(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    status: &str,
    applied_version: Option<i32>,
    error: Option<&str>,
) -> QueryResult<()> {
    sql_query(
        "UPDATE flag_schedules SET status = $2, applied_version = $3, error = $4, \
         updated_at = now() WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(status)
    .bind::<Nullable<Integer>, _>(applied_version)
    .bind::<Nullable<Text>, _>(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// When the tenant's soonest pending change is due, if it has one.
pub async fn next_due(conn: &mut AsyncPgConnection) -> QueryResult<Option<DateTime<Utc>>> {
    #[derive(QueryableByName)]
    struct At {
        #[diesel(sql_type = Nullable<Timestamptz>)]
        at: Option<DateTime<Utc>>,
    }
    let at: At =
        sql_query("SELECT min(apply_at) AS at FROM flag_schedules WHERE status = 'pending'")
            .get_result(conn)
            .await?;
    Ok(at.at)
}

/// An SDK key.
#[derive(Debug, Clone, QueryableByName)]
pub struct SdkKeyRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub environment: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub prefix: String,
    #[diesel(sql_type = Bytea)]
    pub digest: Vec<u8>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub revoked_at: Option<DateTime<Utc>>,
}

const SDK_KEYS: &str =
    "SELECT id, environment, name, prefix, digest, created_at, revoked_at FROM flag_sdk_keys";

pub async fn add_sdk_key(
    conn: &mut AsyncPgConnection,
    row: &SdkKeyRow,
    created_by: Option<Uuid>,
) -> QueryResult<()> {
    sql_query(
        "INSERT INTO flag_sdk_keys (id, environment, name, prefix, digest, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind::<SqlUuid, _>(row.id)
    .bind::<Text, _>(&row.environment)
    .bind::<Text, _>(&row.name)
    .bind::<Text, _>(&row.prefix)
    .bind::<Bytea, _>(&row.digest)
    .bind::<Nullable<SqlUuid>, _>(created_by)
    .execute(conn)
    .await?;
    Ok(())
}

/// SDK keys of `environments` (all when empty), newest first.
pub async fn sdk_keys(
    conn: &mut AsyncPgConnection,
    environments: &[String],
    live_only: bool,
) -> QueryResult<Vec<SdkKeyRow>> {
    sql_query(format!(
        "{SDK_KEYS} WHERE (cardinality($1::text[]) = 0 OR environment = ANY($1)) \
         AND ($2 = false OR revoked_at IS NULL) ORDER BY created_at DESC, id"
    ))
    .bind::<Array<Text>, _>(environments)
    .bind::<diesel::sql_types::Bool, _>(live_only)
    .load(conn)
    .await
}

/// Revokes a live key of `environment`; whether one was.
pub async fn revoke_sdk_key(
    conn: &mut AsyncPgConnection,
    environment: &str,
    id: Uuid,
) -> QueryResult<bool> {
    let n = sql_query(
        "UPDATE flag_sdk_keys SET revoked_at = now() \
         WHERE id = $1 AND environment = $2 AND revoked_at IS NULL",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(environment)
    .execute(conn)
    .await?;
    Ok(n == 1)
}
