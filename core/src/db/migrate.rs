//! SQL migrations from `migrations/` (embedded at build time) and the runner that applies a
//! set to one schema.
//!
//! Two sets: `registry` (the platform registry, schema `admin`) and `tenant` (the tenant
//! template, applied to every tenant schema). Each schema records what it has applied in its
//! own `_migrations` table (version, name, checksum), so versions are tracked per tenant.
//! **Invariant:** a set is applied in one transaction holding an advisory lock on the schema
//! name, so two processes migrating at once serialise and the second finds nothing to do, and a
//! failure leaves the schema exactly as it was. An applied migration whose file changed is
//! refused, never silently skipped.

use diesel::sql_types::{BigInt, Text};
use diesel::{QueryableByName, sql_query};
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    TransactionManager,
};
use include_dir::{Dir, include_dir};
use sha2::{Digest, Sha256};

use super::is_identifier;

static MIGRATIONS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../migrations");

/// One migration file.
#[derive(Debug, Clone)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    pub sql: &'static str,
    pub checksum: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("database error: {0}")]
    Db(#[from] diesel::result::Error),
    #[error("cannot connect: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("migration {version} ({name}) in schema {schema} was changed after it was applied")]
    Edited {
        schema: String,
        version: i64,
        name: String,
    },
    #[error(
        "schema {schema} has migration {version} that this build does not know; refusing to run an older build against it"
    )]
    Unknown { schema: String, version: i64 },
    #[error("database pool: {0}")]
    Pool(#[from] super::PoolError),
    #[error("invalid schema name {0:?}")]
    BadSchema(String),
    #[error("cannot open a transaction in the tenant: {0}")]
    Tenant(String),
}

/// A tenant transaction that could not open (for seeding after the migration).
impl From<super::DbError> for MigrateError {
    fn from(e: super::DbError) -> Self {
        MigrateError::Tenant(e.to_string())
    }
}

/// The migrations of one set (`registry` or `tenant`), ordered by version.
pub fn set(name: &str) -> Vec<Migration> {
    let dir = MIGRATIONS
        .get_dir(name)
        .unwrap_or_else(|| panic!("migrations/{name} is embedded"));
    let mut out: Vec<Migration> = dir
        .files()
        .filter(|f| f.path().extension().is_some_and(|e| e == "sql"))
        .map(|f| {
            let stem = f
                .path()
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 file name");
            let (version, name) = stem.split_once('_').expect("NNNN_name.sql");
            let sql = f.contents_utf8().expect("utf-8 migration");
            Migration {
                version: version.parse().expect("numeric migration version"),
                name: name.to_string(),
                sql,
                checksum: hex::encode(Sha256::digest(sql.as_bytes())),
            }
        })
        .collect();
    out.sort_by_key(|m| m.version);
    out
}

#[derive(QueryableByName)]
struct Applied {
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Text)]
    checksum: String,
}

/// Applies `migrations` to `schema` (created if missing) and returns the schema's version
/// afterwards. Safe to call concurrently from several processes.
pub async fn apply(
    conn: &mut AsyncPgConnection,
    schema: &str,
    migrations: &[Migration],
) -> Result<i64, MigrateError> {
    if !is_identifier(schema) {
        return Err(MigrateError::BadSchema(schema.to_string()));
    }
    AnsiTransactionManager::begin_transaction(conn).await?;
    let result = apply_in_tx(conn, schema, migrations).await;
    match result {
        Ok(version) => {
            AnsiTransactionManager::commit_transaction(conn).await?;
            Ok(version)
        }
        Err(e) => {
            let _ = AnsiTransactionManager::rollback_transaction(conn).await;
            Err(e)
        }
    }
}

async fn apply_in_tx(
    conn: &mut AsyncPgConnection,
    schema: &str,
    migrations: &[Migration],
) -> Result<i64, MigrateError> {
    sql_query("SELECT pg_advisory_xact_lock(hashtextextended('neotenant-migrate:' || $1, 0))")
        .bind::<Text, _>(schema)
        .execute(conn)
        .await?;
    conn.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; SET LOCAL search_path TO \"{schema}\"; \
         CREATE TABLE IF NOT EXISTS _migrations (\
           version bigint PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, \
           applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await?;
    let applied: Vec<Applied> =
        sql_query("SELECT version, checksum FROM _migrations ORDER BY version")
            .load(conn)
            .await?;
    for row in &applied {
        match migrations.iter().find(|m| m.version == row.version) {
            Some(m) if m.checksum == row.checksum => {}
            Some(m) => {
                return Err(MigrateError::Edited {
                    schema: schema.into(),
                    version: m.version,
                    name: m.name.clone(),
                });
            }
            None => {
                return Err(MigrateError::Unknown {
                    schema: schema.into(),
                    version: row.version,
                });
            }
        }
    }
    let current = applied.last().map(|a| a.version).unwrap_or(0);
    let mut version = current;
    for m in migrations.iter().filter(|m| m.version > current) {
        conn.batch_execute(m.sql).await?;
        sql_query("INSERT INTO _migrations (version, name, checksum) VALUES ($1, $2, $3)")
            .bind::<BigInt, _>(m.version)
            .bind::<Text, _>(&m.name)
            .bind::<Text, _>(&m.checksum)
            .execute(conn)
            .await?;
        tracing::info!(schema, version = m.version, name = %m.name, "migration applied");
        version = m.version;
    }
    Ok(version)
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    exists: bool,
}

/// Creates database `name` on the server at `server_url` unless it exists. Idempotent and safe
/// against a concurrent creator.
pub async fn ensure_database(server_url: &str, name: &str) -> Result<bool, MigrateError> {
    if !is_identifier(name) {
        return Err(MigrateError::BadSchema(name.to_string()));
    }
    let mut conn =
        AsyncPgConnection::establish(&super::database_url(server_url, "postgres")).await?;
    if database_exists(&mut conn, name).await? {
        return Ok(false);
    }
    match conn
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
    {
        Ok(()) => Ok(true),
        // Lost a race with another creator: fine if it now exists.
        Err(e) if database_exists(&mut conn, name).await? => {
            tracing::debug!(database = name, error = %e, "database created concurrently");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Drops database `name` (terminating its sessions). Idempotent.
pub async fn drop_database(server_url: &str, name: &str) -> Result<(), MigrateError> {
    if !is_identifier(name) {
        return Err(MigrateError::BadSchema(name.to_string()));
    }
    let mut conn =
        AsyncPgConnection::establish(&super::database_url(server_url, "postgres")).await?;
    conn.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await?;
    Ok(())
}

async fn database_exists(conn: &mut AsyncPgConnection, name: &str) -> Result<bool, MigrateError> {
    let row: Exists =
        sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<Text, _>(name)
            .get_result(conn)
            .await?;
    Ok(row.exists)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_embedded_ordered_and_unique() {
        for name in ["registry", "tenant"] {
            let set = set(name);
            assert!(!set.is_empty(), "{name}");
            let versions: Vec<i64> = set.iter().map(|m| m.version).collect();
            let mut sorted = versions.clone();
            sorted.dedup();
            assert_eq!(
                versions, sorted,
                "{name}: versions must be unique and ordered"
            );
            assert!(versions[0] >= 1);
        }
    }
}
