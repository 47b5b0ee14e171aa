//! Connection pools keyed by physical database, and the one entry point for tenant-scoped
//! work: [`TenantDb::transaction`] (or [`TenantDb::begin`] for a transaction held by hand).
//!
//! Owns how a connection is pinned to a tenant. **Architecture invariant:** every pooled
//! connection starts its session with an empty `search_path`, so an unqualified table name
//! outside a tenant transaction fails instead of reaching some schema; a tenant transaction
//! opens with `BEGIN; SET LOCAL search_path TO "<tenant schema>"` in one round trip, so the
//! setting dies with the transaction (commit or rollback). A transaction dropped half-way
//! (cancelled request, panic) leaves the connection marked as in-transaction, and the pool
//! discards such connections instead of reusing them. PostgreSQL re-plans cached prepared
//! statements when `search_path` changes, so statement caching cannot leak across tenants.
//! This module never builds SQL from unvalidated identifiers: schema and database names pass
//! [`is_identifier`] first.

pub mod migrate;
pub mod timing;

pub use timing::QUERY_SECONDS;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use diesel::QueryResult;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncPgConnection, SimpleAsyncConnection,
    TransactionManager,
};
use futures::FutureExt;

use crate::ids::ConnectionId;

pub type PgPool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;
pub type PooledConn =
    bb8::PooledConnection<'static, AsyncDieselConnectionManager<AsyncPgConnection>>;
pub type PoolError = bb8::RunError<diesel_async::pooled_connection::PoolError>;

/// Why a transaction could not start: no connection, or the server refused the `BEGIN`.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no database connection: {0}")]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// `true` for a safe, unquoted-compatible PostgreSQL identifier: `[a-z_][a-z0-9_]{0,62}`.
pub fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && name.len() <= 63
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

/// `server_url` (no database) joined with a database name.
pub fn database_url(server_url: &str, database: &str) -> String {
    format!("{}/{}", server_url.trim_end_matches('/'), database)
}

/// Settings shared by every pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_size: u32,
    pub timeout: Duration,
    pub statement_timeout_ms: u64,
}

/// Builds a pool whose connections start with an empty `search_path` and bounded timeouts.
/// Connecting is lazy: building never touches the network.
pub fn build_pool(url: &str, settings: &PoolSettings) -> PgPool {
    let session_sql = format!(
        "SET search_path TO ''; SET statement_timeout = {}; \
         SET idle_in_transaction_session_timeout = {}; SET application_name = 'neotenant'",
        settings.statement_timeout_ms,
        settings.statement_timeout_ms * 2
    );
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url: &str| {
        let url = url.to_string();
        let session_sql = session_sql.clone();
        async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            conn.set_instrumentation(timing::QueryTimer::default());
            conn.batch_execute(&session_sql)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::new_with_config(url, config);
    bb8::Pool::builder()
        .max_size(settings.max_size)
        .min_idle(Some(0))
        .connection_timeout(settings.timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .test_on_check_out(false)
        .retry_connection(false)
        .build_unchecked(manager)
}

/// One pool per physical database, created on first use.
pub struct Pools {
    settings: PoolSettings,
    inner: RwLock<HashMap<ConnectionId, (String, PgPool)>>,
}

/// A snapshot of one pool for metrics.
#[derive(Debug, Clone)]
pub struct PoolStats {
    pub database: String,
    pub connections: u32,
    pub idle: u32,
    pub max_size: u32,
}

impl Pools {
    pub fn new(settings: PoolSettings) -> Self {
        Self {
            settings,
            inner: RwLock::new(HashMap::new()),
        }
    }

    /// The pool of connection `id`, built from `url` if this process has none yet.
    /// `database` labels the pool in metrics (never the URL: it holds a secret).
    pub fn get_or_create(
        &self,
        id: ConnectionId,
        database: &str,
        url: impl FnOnce() -> String,
    ) -> PgPool {
        if let Some((_, pool)) = self.inner.read().expect("pool map lock").get(&id) {
            return pool.clone();
        }
        let mut map = self.inner.write().expect("pool map lock");
        map.entry(id)
            .or_insert_with(|| (database.to_string(), build_pool(&url(), &self.settings)))
            .1
            .clone()
    }

    /// Forgets a pool (its database is being dropped); idle connections close with it.
    pub fn remove(&self, id: ConnectionId) {
        self.inner.write().expect("pool map lock").remove(&id);
    }

    pub fn stats(&self) -> Vec<PoolStats> {
        self.inner
            .read()
            .expect("pool map lock")
            .values()
            .map(|(database, pool)| {
                let state = pool.state();
                PoolStats {
                    database: database.clone(),
                    connections: state.connections,
                    idle: state.idle_connections,
                    max_size: self.settings.max_size,
                }
            })
            .collect()
    }

    /// Drops every pool; called at shutdown after in-flight requests finished.
    pub fn close_all(&self) {
        self.inner.write().expect("pool map lock").clear();
    }
}

/// Whether the database behind `pool` answers (readiness): a connection and `SELECT 1`.
pub async fn ping(pool: &PgPool) -> Result<(), String> {
    use diesel_async::RunQueryDsl;
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    diesel::sql_query("SELECT 1")
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Where one tenant's rows live: a pool (physical database) and a schema in it.
#[derive(Clone)]
pub struct TenantDb {
    pool: PgPool,
    schema: Arc<str>,
    /// `BEGIN; SET LOCAL search_path …` for writes and `BEGIN READ ONLY; …` for reads, built
    /// once per tenant rather than per request.
    begin: Arc<str>,
    begin_read: Arc<str>,
}

impl std::fmt::Debug for TenantDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantDb")
            .field("schema", &self.schema)
            .finish()
    }
}

impl TenantDb {
    /// `schema` must satisfy [`is_identifier`]; the tenant registry guarantees it.
    pub fn new(pool: PgPool, schema: &str) -> Self {
        assert!(
            is_identifier(schema),
            "tenant schema must be a plain identifier"
        );
        Self {
            pool,
            schema: schema.into(),
            begin: format!("BEGIN; SET LOCAL search_path TO \"{schema}\"").into(),
            begin_read: format!("BEGIN READ ONLY; SET LOCAL search_path TO \"{schema}\"").into(),
        }
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Opens a transaction pinned to this tenant's schema. All tenant-scoped SQL runs
    /// through the returned [`Tx`]; there is no other way to reach a tenant's tables.
    /// Prefer [`TenantDb::transaction`], which cannot forget to commit.
    pub async fn begin(&self) -> Result<Tx, DbError> {
        Tx::begin(&self.pool, self.begin_sql()).await
    }

    /// `BEGIN` and the schema pin, in one round trip.
    fn begin_sql(&self) -> &str {
        &self.begin
    }

    /// Runs `work` in a transaction pinned to this tenant's schema: commits when it returns
    /// `Ok`, rolls back when it returns `Err` (the error path *is* the rollback), and answers
    /// what `work` answered (or the commit's failure).
    pub async fn transaction<T, E>(
        &self,
        work: impl AsyncFnOnce(&mut Tx) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError> + From<diesel::result::Error>,
    {
        transaction(&self.pool, self.begin_sql(), work).await
    }
}

impl TenantDb {
    /// Runs read-only `work` pinned to this tenant's schema in one round trip:
    /// `BEGIN READ ONLY; SET LOCAL search_path TO "<schema>"` goes out pipelined with the
    /// statements `work` sends first (PostgreSQL runs them in order on the connection, so
    /// they run inside the pinned transaction), and the transaction ends with a `COMMIT`
    /// sent after `work` answered, off the caller's path: the connection goes back to the
    /// pool once that `COMMIT` has answered. `work` gets a shared connection so it can
    /// pipeline statements of its own (poll them together).
    ///
    /// Until the `COMMIT` answers the connection counts as broken for the pool, so a read
    /// dropped half-way (cancelled request, panic) can never hand an open transaction to
    /// another request. Writes go through [`TenantDb::transaction`].
    pub async fn read<T, E>(
        &self,
        work: impl AsyncFnOnce(&AsyncPgConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError> + From<diesel::result::Error>,
    {
        let mut conn = self.pool.get_owned().await.map_err(DbError::from)?;
        AnsiTransactionManager::transaction_manager_status_mut(&mut *conn).set_in_error();
        let (began, result) = {
            let shared: &AsyncPgConnection = &conn;
            let mut sender = shared;
            futures::join!(sender.batch_execute(&self.begin_read), work(shared))
        };
        // `COMMIT` also ends a transaction a failed statement aborted (as a rollback).
        tokio::spawn(async move {
            if (&mut &*conn).batch_execute("COMMIT").await.is_ok() {
                *AnsiTransactionManager::transaction_manager_status_mut(&mut *conn) =
                    Default::default();
            }
        });
        began?;
        result
    }
}

/// Takes a transaction-scoped lock named `what` in the current schema, so that a count taken
/// after it stays true until the transaction ends: how caps on the number of things a user or
/// tenant may make (keys, clients, endpoints) hold under concurrent creates.
pub async fn lock_named(conn: &mut AsyncPgConnection, what: &str) -> QueryResult<()> {
    use diesel_async::RunQueryDsl;
    diesel::sql_query(
        "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':' || $1, 0))",
    )
    .bind::<diesel::sql_types::Text, _>(what)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Runs `work` in a transaction on `pool` that `begin_sql` opens (it must start one, e.g.
/// `"BEGIN"` on the registry): commits when `work` returns `Ok`, rolls back when it returns
/// `Err`, and answers what `work` answered (or the commit's failure). Tenant work goes
/// through [`TenantDb::transaction`] instead, which pins the schema.
pub async fn transaction<T, E>(
    pool: &PgPool,
    begin_sql: &str,
    work: impl AsyncFnOnce(&mut Tx) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<DbError> + From<diesel::result::Error>,
{
    let mut tx = Tx::begin(pool, begin_sql).await?;
    let result = work(&mut tx).await;
    tx.finish(result).await
}

/// An open transaction on a pooled connection (a tenant's, from [`TenantDb::begin`], or the
/// registry's). Finish it with [`Tx::finish`]; if it is dropped instead, the connection still
/// has an open transaction and the pool discards it (the server rolls back), so an abandoned
/// transaction can never serve another request.
pub struct Tx {
    conn: PooledConn,
}

impl Tx {
    /// Checks out a connection and runs `begin_sql` (which must start a transaction) on it,
    /// tracked by diesel's transaction manager.
    pub async fn begin(pool: &PgPool, begin_sql: &str) -> Result<Tx, DbError> {
        let mut conn = pool.get_owned().await?;
        AnsiTransactionManager::begin_transaction_sql(&mut *conn, begin_sql).await?;
        Ok(Tx { conn })
    }

    pub fn conn(&mut self) -> &mut AsyncPgConnection {
        &mut self.conn
    }

    /// Commits when `result` is `Ok`, rolls back when it is `Err`, and returns `result`
    /// (or the commit's failure).
    pub async fn finish<T, E>(mut self, result: Result<T, E>) -> Result<T, E>
    where
        E: From<diesel::result::Error>,
    {
        match result {
            Ok(value) => {
                AnsiTransactionManager::commit_transaction(&mut *self.conn).await?;
                Ok(value)
            }
            Err(err) => {
                // A failed rollback leaves the connection broken; the pool then drops it.
                let _ = AnsiTransactionManager::rollback_transaction(&mut *self.conn).await;
                Err(err)
            }
        }
    }

    /// Commits unconditionally.
    pub async fn commit(mut self) -> QueryResult<()> {
        AnsiTransactionManager::commit_transaction(&mut *self.conn).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["t_acme", "tenant_demo_us", "_x", "a1"] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "A",
            "t-acme",
            "t\"x",
            "t;drop",
            "t x",
            &"a".repeat(64),
        ] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn urls_join() {
        assert_eq!(database_url("postgres://h:1/", "db"), "postgres://h:1/db");
        assert_eq!(database_url("postgres://h:1", "db"), "postgres://h:1/db");
    }
}
