//! SQL for plugins: the registry's components, plugins and versions, and the tenant's
//! installations, key-value entries, failures and dead letters. No rules here.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Bytea, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use super::{DeadLetter, Failure};

// ---------------------------------------------------------------- registry

#[derive(Debug, Clone, QueryableByName)]
pub struct PluginRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub owner_tenant: Option<Uuid>,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Text)]
    pub publisher: String,
    #[diesel(sql_type = Text)]
    pub description: String,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, QueryableByName)]
pub struct VersionRow {
    #[diesel(sql_type = SqlUuid)]
    pub plugin_id: Uuid,
    #[diesel(sql_type = Text)]
    pub version: String,
    #[diesel(sql_type = Text)]
    pub hash: String,
    #[diesel(sql_type = Integer)]
    pub size: i32,
    #[diesel(sql_type = Jsonb)]
    pub manifest: Value,
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub type_info: Option<Value>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

const PLUGIN_COLS: &str =
    "id, owner_tenant, name, kind, publisher, description, created_at, updated_at";
const VERSION_COLS: &str =
    "v.plugin_id, v.version, v.hash, c.size, v.manifest, v.type_info, v.created_at";

pub async fn find_plugin(
    conn: &mut AsyncPgConnection,
    owner: Option<Uuid>,
    name: &str,
) -> QueryResult<Option<PluginRow>> {
    diesel::sql_query(format!(
        "SELECT {PLUGIN_COLS} FROM admin.plugins \
         WHERE owner_tenant IS NOT DISTINCT FROM $1 AND name = $2"
    ))
    .bind::<Nullable<SqlUuid>, _>(owner)
    .bind::<Text, _>(name)
    .get_result(conn)
    .await
    .optional()
}

pub async fn list_plugins(
    conn: &mut AsyncPgConnection,
    owner: Option<Uuid>,
) -> QueryResult<Vec<PluginRow>> {
    diesel::sql_query(format!(
        "SELECT {PLUGIN_COLS} FROM admin.plugins \
         WHERE owner_tenant IS NOT DISTINCT FROM $1 ORDER BY name"
    ))
    .bind::<Nullable<SqlUuid>, _>(owner)
    .load(conn)
    .await
}

pub async fn insert_plugin(conn: &mut AsyncPgConnection, p: &PluginRow) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO admin.plugins (id, owner_tenant, name, kind, publisher, description) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind::<SqlUuid, _>(p.id)
    .bind::<Nullable<SqlUuid>, _>(p.owner_tenant)
    .bind::<Text, _>(&p.name)
    .bind::<Text, _>(&p.kind)
    .bind::<Text, _>(&p.publisher)
    .bind::<Text, _>(&p.description)
    .execute(conn)
    .await
    .map(drop)
}

pub async fn touch_plugin(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    publisher: &str,
    description: &str,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE admin.plugins SET publisher = $2, description = $3, updated_at = now() WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(publisher)
    .bind::<Text, _>(description)
    .execute(conn)
    .await
    .map(drop)
}

pub async fn insert_component(
    conn: &mut AsyncPgConnection,
    hash: &str,
    bytes: &[u8],
) -> QueryResult<()> {
    diesel::sql_query(
        // DO UPDATE (not NOTHING) locks an existing row, so a concurrent removal of unused
        // components either finishes first (and this inserts anew) or waits for this upload.
        "INSERT INTO admin.plugin_components (hash, bytes, size) VALUES ($1, $2, $3) \
         ON CONFLICT (hash) DO UPDATE SET size = EXCLUDED.size",
    )
    .bind::<Text, _>(hash)
    .bind::<Bytea, _>(bytes)
    .bind::<Integer, _>(bytes.len() as i32)
    .execute(conn)
    .await
    .map(drop)
}

pub async fn component_bytes(
    conn: &mut AsyncPgConnection,
    hash: &str,
) -> QueryResult<Option<Vec<u8>>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Bytea)]
        bytes: Vec<u8>,
    }
    let r: Option<Row> =
        diesel::sql_query("SELECT bytes FROM admin.plugin_components WHERE hash = $1")
            .bind::<Text, _>(hash)
            .get_result(conn)
            .await
            .optional()?;
    Ok(r.map(|r| r.bytes))
}

/// Every component some version uses (to warm the compiled cache at start).
pub async fn all_hashes(conn: &mut AsyncPgConnection) -> QueryResult<Vec<String>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        hash: String,
    }
    let rows: Vec<Row> =
        diesel::sql_query("SELECT DISTINCT hash FROM admin.plugin_versions ORDER BY hash")
            .load(conn)
            .await?;
    Ok(rows.into_iter().map(|r| r.hash).collect())
}

/// Deletes components no version uses any more (their plugins were deleted with their
/// tenant). An upload inserts its component and version in one transaction, so it never
/// loses a component it is adding.
pub async fn delete_orphan_components(conn: &mut AsyncPgConnection) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM admin.plugin_components c \
         WHERE NOT EXISTS (SELECT 1 FROM admin.plugin_versions v WHERE v.hash = c.hash)",
    )
    .execute(conn)
    .await
}

pub async fn insert_version(
    conn: &mut AsyncPgConnection,
    plugin_id: Uuid,
    version: &str,
    hash: &str,
    manifest: &Value,
    type_info: Option<&Value>,
    published_by: &str,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO admin.plugin_versions (plugin_id, version, hash, manifest, type_info, published_by) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind::<SqlUuid, _>(plugin_id)
    .bind::<Text, _>(version)
    .bind::<Text, _>(hash)
    .bind::<Jsonb, _>(manifest)
    .bind::<Nullable<Jsonb>, _>(type_info)
    .bind::<Text, _>(published_by)
    .execute(conn)
    .await
    .map(drop)
}

/// Versions of the given plugins, newest first within each.
pub async fn versions(
    conn: &mut AsyncPgConnection,
    plugins: &[Uuid],
) -> QueryResult<Vec<VersionRow>> {
    diesel::sql_query(format!(
        "SELECT {VERSION_COLS} FROM admin.plugin_versions v \
         JOIN admin.plugin_components c ON c.hash = v.hash \
         WHERE v.plugin_id = ANY($1) ORDER BY v.plugin_id, v.created_at DESC, v.version DESC"
    ))
    .bind::<Array<SqlUuid>, _>(plugins)
    .load(conn)
    .await
}

pub async fn version(
    conn: &mut AsyncPgConnection,
    plugin: Uuid,
    version: &str,
) -> QueryResult<Option<VersionRow>> {
    diesel::sql_query(format!(
        "SELECT {VERSION_COLS} FROM admin.plugin_versions v \
         JOIN admin.plugin_components c ON c.hash = v.hash \
         WHERE v.plugin_id = $1 AND v.version = $2"
    ))
    .bind::<SqlUuid, _>(plugin)
    .bind::<Text, _>(version)
    .get_result(conn)
    .await
    .optional()
}

// ---------------------------------------------------------------- tenant

#[derive(Debug, Clone, QueryableByName)]
pub struct InstallRow {
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = SqlUuid)]
    pub plugin_id: Uuid,
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Text)]
    pub version: String,
    #[diesel(sql_type = Text)]
    pub hash: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub previous_version: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub previous_hash: Option<String>,
    #[diesel(sql_type = Jsonb)]
    pub grants: Value,
    #[diesel(sql_type = Jsonb)]
    pub settings: Value,
    #[diesel(sql_type = Jsonb)]
    pub secrets: Value,
    #[diesel(sql_type = Jsonb)]
    pub failure_modes: Value,
    #[diesel(sql_type = Array<Text>)]
    pub events: Vec<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub type_name: Option<String>,
    #[diesel(sql_type = Bool)]
    pub enabled: bool,
    #[diesel(sql_type = Nullable<Text>)]
    pub disabled_reason: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub cursor_txid: i64,
    #[diesel(sql_type = BigInt)]
    pub cursor_seq: i64,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub installed_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

const INSTALL_COLS: &str = "name, plugin_id, source, kind, version, hash, previous_version, \
    previous_hash, grants, settings, secrets, failure_modes, events, type_name, enabled, \
    disabled_reason, cursor_txid, cursor_seq, attempts, next_attempt_at, last_error, \
    installed_at, updated_at";

pub async fn install(
    conn: &mut AsyncPgConnection,
    name: &str,
    for_update: bool,
) -> QueryResult<Option<InstallRow>> {
    diesel::sql_query(format!(
        "SELECT {INSTALL_COLS} FROM plugin_installs WHERE name = $1{}",
        if for_update { " FOR UPDATE" } else { "" }
    ))
    .bind::<Text, _>(name)
    .get_result(conn)
    .await
    .optional()
}

pub async fn install_for_type(
    conn: &mut AsyncPgConnection,
    type_name: &str,
) -> QueryResult<Option<InstallRow>> {
    diesel::sql_query(format!(
        "SELECT {INSTALL_COLS} FROM plugin_installs WHERE type_name = $1"
    ))
    .bind::<Text, _>(type_name)
    .get_result(conn)
    .await
    .optional()
}

pub async fn installs(conn: &mut AsyncPgConnection) -> QueryResult<Vec<InstallRow>> {
    diesel::sql_query(format!(
        "SELECT {INSTALL_COLS} FROM plugin_installs ORDER BY name"
    ))
    .load(conn)
    .await
}

/// Integrations that are due: enabled, not leased, not waiting for a retry.
pub async fn due_integrations(conn: &mut AsyncPgConnection) -> QueryResult<Vec<InstallRow>> {
    diesel::sql_query(format!(
        "SELECT {INSTALL_COLS} FROM plugin_installs \
         WHERE kind = 'integration' AND enabled \
           AND (lease_until IS NULL OR lease_until < now()) \
           AND (next_attempt_at IS NULL OR next_attempt_at <= now()) ORDER BY name"
    ))
    .load(conn)
    .await
}

/// Whether the tenant has any enabled integration (due or not).
pub async fn has_integrations(conn: &mut AsyncPgConnection) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Bool)]
        any: bool,
    }
    let r: Row = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM plugin_installs WHERE kind = 'integration' AND enabled) AS any",
    )
    .get_result(conn)
    .await?;
    Ok(r.any)
}

/// Leases a due integration for `lease_secs` (so one instance delivers at a time); the row
/// as leased, or `None` if another instance holds it or it is no longer due.
pub async fn lease(
    conn: &mut AsyncPgConnection,
    name: &str,
    lease_secs: i32,
) -> QueryResult<Option<InstallRow>> {
    diesel::sql_query(format!(
        "UPDATE plugin_installs SET lease_until = now() + make_interval(secs => $2) \
         WHERE name = $1 AND kind = 'integration' AND enabled \
           AND (lease_until IS NULL OR lease_until < now()) \
           AND (next_attempt_at IS NULL OR next_attempt_at <= now()) \
         RETURNING {INSTALL_COLS}"
    ))
    .bind::<Text, _>(name)
    .bind::<Integer, _>(lease_secs)
    .get_result(conn)
    .await
    .optional()
}

pub async fn release_lease(conn: &mut AsyncPgConnection, name: &str) -> QueryResult<()> {
    diesel::sql_query("UPDATE plugin_installs SET lease_until = NULL WHERE name = $1")
        .bind::<Text, _>(name)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn insert_install(conn: &mut AsyncPgConnection, r: &InstallRow) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO plugin_installs (name, plugin_id, source, kind, version, hash, grants, \
         settings, secrets, failure_modes, events, type_name, cursor_txid, cursor_seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind::<Text, _>(&r.name)
    .bind::<SqlUuid, _>(r.plugin_id)
    .bind::<Text, _>(&r.source)
    .bind::<Text, _>(&r.kind)
    .bind::<Text, _>(&r.version)
    .bind::<Text, _>(&r.hash)
    .bind::<Jsonb, _>(&r.grants)
    .bind::<Jsonb, _>(&r.settings)
    .bind::<Jsonb, _>(&r.secrets)
    .bind::<Jsonb, _>(&r.failure_modes)
    .bind::<Array<Text>, _>(&r.events)
    .bind::<Nullable<Text>, _>(&r.type_name)
    .bind::<BigInt, _>(r.cursor_txid)
    .bind::<BigInt, _>(r.cursor_seq)
    .execute(conn)
    .await
    .map(drop)
}

/// Writes the configurable part of an installation (version, grants, settings, modes,
/// subscriptions, enabled state).
pub async fn update_install(conn: &mut AsyncPgConnection, r: &InstallRow) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE plugin_installs SET version = $2, hash = $3, previous_version = $4, \
         previous_hash = $5, grants = $6, settings = $7, secrets = $8, failure_modes = $9, \
         events = $10, enabled = $11, disabled_reason = $12, attempts = $13, \
         next_attempt_at = $14, updated_at = now() WHERE name = $1",
    )
    .bind::<Text, _>(&r.name)
    .bind::<Text, _>(&r.version)
    .bind::<Text, _>(&r.hash)
    .bind::<Nullable<Text>, _>(&r.previous_version)
    .bind::<Nullable<Text>, _>(&r.previous_hash)
    .bind::<Jsonb, _>(&r.grants)
    .bind::<Jsonb, _>(&r.settings)
    .bind::<Jsonb, _>(&r.secrets)
    .bind::<Jsonb, _>(&r.failure_modes)
    .bind::<Array<Text>, _>(&r.events)
    .bind::<Bool, _>(r.enabled)
    .bind::<Nullable<Text>, _>(&r.disabled_reason)
    .bind::<Integer, _>(r.attempts)
    .bind::<Nullable<Timestamptz>, _>(r.next_attempt_at)
    .execute(conn)
    .await
    .map(drop)
}

/// Disables an installation if it is enabled; true when this call disabled it.
pub async fn disable(conn: &mut AsyncPgConnection, name: &str, reason: &str) -> QueryResult<bool> {
    let n = diesel::sql_query(
        "UPDATE plugin_installs SET enabled = false, disabled_reason = $2, updated_at = now() \
         WHERE name = $1 AND enabled",
    )
    .bind::<Text, _>(name)
    .bind::<Text, _>(reason)
    .execute(conn)
    .await?;
    Ok(n == 1)
}

pub async fn delete_install(conn: &mut AsyncPgConnection, name: &str) -> QueryResult<()> {
    diesel::sql_query("DELETE FROM plugin_installs WHERE name = $1")
        .bind::<Text, _>(name)
        .execute(conn)
        .await
        .map(drop)
}

/// After a delivered (or set-aside) event: the new position, retry state cleared.
pub async fn advance(
    conn: &mut AsyncPgConnection,
    name: &str,
    txid: i64,
    seq: i64,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE plugin_installs SET cursor_txid = $2, cursor_seq = $3, attempts = 0, \
         next_attempt_at = NULL, last_error = NULL WHERE name = $1",
    )
    .bind::<Text, _>(name)
    .bind::<BigInt, _>(txid)
    .bind::<BigInt, _>(seq)
    .execute(conn)
    .await
    .map(drop)
}

/// After a failed delivery: when to try again and why it failed.
pub async fn retry_later(
    conn: &mut AsyncPgConnection,
    name: &str,
    attempts: i32,
    delay_ms: i64,
    error: &str,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE plugin_installs SET attempts = $2, \
         next_attempt_at = now() + make_interval(secs => $3::double precision / 1000), \
         last_error = $4 WHERE name = $1",
    )
    .bind::<Text, _>(name)
    .bind::<Integer, _>(attempts)
    .bind::<BigInt, _>(delay_ms)
    .bind::<Text, _>(error)
    .execute(conn)
    .await
    .map(drop)
}

pub async fn insert_failure(
    conn: &mut AsyncPgConnection,
    plugin: &str,
    hook: &str,
    code: &str,
    message: &str,
    subject: Option<&str>,
    fail_open: bool,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO plugin_failures (plugin, hook, code, message, subject, fail_open) \
         VALUES ($1, $2, $3, left($4, 2000), $5, $6)",
    )
    .bind::<Text, _>(plugin)
    .bind::<Text, _>(hook)
    .bind::<Text, _>(code)
    .bind::<Text, _>(message)
    .bind::<Nullable<Text>, _>(subject)
    .bind::<Bool, _>(fail_open)
    .execute(conn)
    .await
    .map(drop)
}

pub async fn failures(
    conn: &mut AsyncPgConnection,
    plugin: &str,
    limit: i64,
) -> QueryResult<Vec<Failure>> {
    diesel::sql_query(
        "SELECT id, hook, code, message, subject, fail_open, at FROM plugin_failures \
         WHERE plugin = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind::<Text, _>(plugin)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

pub async fn insert_dead_letter(
    conn: &mut AsyncPgConnection,
    plugin: &str,
    d: &DeadLetter,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO plugin_dead_letters (plugin, event_seq, topic, subject, payload, error, attempts) \
         VALUES ($1, $2, $3, $4, $5, left($6, 2000), $7)",
    )
    .bind::<Text, _>(plugin)
    .bind::<BigInt, _>(d.event_seq)
    .bind::<Text, _>(&d.topic)
    .bind::<Text, _>(&d.subject)
    .bind::<Jsonb, _>(&d.payload)
    .bind::<Text, _>(&d.error)
    .bind::<Integer, _>(d.attempts)
    .execute(conn)
    .await
    .map(drop)
}

pub async fn dead_letters(
    conn: &mut AsyncPgConnection,
    plugin: &str,
    limit: i64,
) -> QueryResult<Vec<DeadLetter>> {
    diesel::sql_query(
        "SELECT id, event_seq, topic, subject, payload, error, attempts, at FROM plugin_dead_letters \
         WHERE plugin = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind::<Text, _>(plugin)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

// ---------------------------------------------------------------- key-value

pub async fn kv_get(
    conn: &mut AsyncPgConnection,
    plugin: &str,
    key: &str,
) -> QueryResult<Option<Vec<u8>>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Bytea)]
        value: Vec<u8>,
    }
    let r: Option<Row> =
        diesel::sql_query("SELECT value FROM plugin_kv WHERE plugin = $1 AND key = $2")
            .bind::<Text, _>(plugin)
            .bind::<Text, _>(key)
            .get_result(conn)
            .await
            .optional()?;
    Ok(r.map(|r| r.value))
}

/// Sets a key unless the plugin already holds `max_keys` other keys; false if it is full.
pub async fn kv_set(
    conn: &mut AsyncPgConnection,
    plugin: &str,
    key: &str,
    value: &[u8],
    max_keys: i64,
) -> QueryResult<bool> {
    let n = diesel::sql_query(
        "INSERT INTO plugin_kv (plugin, key, value) \
         SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM plugin_kv WHERE plugin = $1 AND key = $2) \
            OR (SELECT count(*) FROM plugin_kv WHERE plugin = $1) < $4 \
         ON CONFLICT (plugin, key) DO UPDATE SET value = EXCLUDED.value",
    )
    .bind::<Text, _>(plugin)
    .bind::<Text, _>(key)
    .bind::<Bytea, _>(value)
    .bind::<BigInt, _>(max_keys)
    .execute(conn)
    .await?;
    Ok(n == 1)
}

pub async fn kv_delete(conn: &mut AsyncPgConnection, plugin: &str, key: &str) -> QueryResult<()> {
    diesel::sql_query("DELETE FROM plugin_kv WHERE plugin = $1 AND key = $2")
        .bind::<Text, _>(plugin)
        .bind::<Text, _>(key)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn kv_keys(
    conn: &mut AsyncPgConnection,
    plugin: &str,
    prefix: &str,
    limit: i64,
) -> QueryResult<Vec<String>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        key: String,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT key FROM plugin_kv WHERE plugin = $1 AND starts_with(key, $2) ORDER BY key LIMIT $3",
    )
    .bind::<Text, _>(plugin)
    .bind::<Text, _>(prefix)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.key).collect())
}

/// Replaces an installation's stored secrets (re-sealing under another master key).
pub async fn set_secrets(
    conn: &mut AsyncPgConnection,
    name: &str,
    secrets: &Value,
) -> QueryResult<()> {
    diesel::sql_query("UPDATE plugin_installs SET secrets = $2 WHERE name = $1")
        .bind::<Text, _>(name)
        .bind::<Jsonb, _>(secrets)
        .execute(conn)
        .await?;
    Ok(())
}
