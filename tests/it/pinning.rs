//! The schema-pinning mechanism itself, below HTTP: what a pooled connection can see outside
//! a tenant transaction, after an error, and after a transaction is abandoned half-way.

use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{Bool, Text};
use diesel_async::RunQueryDsl;
use neotenant::db::{PoolSettings, TenantDb, build_pool, database_url};
use neotenant::error::ApiError;
use neotenant_tests::{TestApp, test_config};

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    path: String,
    #[diesel(sql_type = Bool)]
    in_tx: bool,
}

async fn session_state(pool: &neotenant::db::PgPool) -> Setting {
    let mut conn = pool.get().await.unwrap();
    let mut state: Setting =
        diesel::sql_query("SELECT current_setting('search_path') AS path, false AS in_tx")
            .get_result(&mut *conn)
            .await
            .unwrap();
    // SAVEPOINT succeeds only inside an open transaction block.
    state.in_tx = diesel::sql_query("SAVEPOINT probe")
        .execute(&mut *conn)
        .await
        .is_ok();
    state
}

/// A pool of one connection to the shared US database: whatever one use leaves behind, the
/// next use sees.
fn one_connection_pool() -> neotenant::db::PgPool {
    let settings = PoolSettings {
        max_size: 1,
        timeout: Duration::from_secs(5),
        statement_timeout_ms: 10_000,
    };
    build_pool(
        &database_url(test_config().database.url.expose(), "neofast_shared_us"),
        &settings,
    )
}

#[tokio::test]
async fn pooled_connections_never_keep_a_tenant() {
    let app = TestApp::start().await;
    let a = app.with_tenant("us", "schema").await;
    let b = app.with_tenant("us", "schema").await;
    let pool = one_connection_pool();
    let db_a = TenantDb::new(pool.clone(), &a.schema);
    let db_b = TenantDb::new(pool.clone(), &b.schema);

    // Outside a tenant transaction, tenant tables do not resolve at all.
    {
        let mut conn = pool.get().await.unwrap();
        let err = diesel::sql_query("SELECT count(*) FROM notes")
            .execute(&mut *conn)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    // Write in A, then read in B through the same single connection: B sees nothing of A.
    let mut tx = db_a.begin().await.unwrap();
    diesel::sql_query("INSERT INTO notes (id, title) VALUES (gen_random_uuid(), 'from-a')")
        .execute(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let state = session_state(&pool).await;
    assert_eq!(state.path, "\"\"", "search_path resets after commit");
    assert!(!state.in_tx);
    let mut tx = db_b.begin().await.unwrap();
    let titles: Vec<Setting> = diesel::sql_query("SELECT title AS path, false AS in_tx FROM notes")
        .load(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(titles.is_empty(), "tenant B read tenant A's row");

    // An error inside the transaction, then rollback: the connection is clean.
    let mut tx = db_a.begin().await.unwrap();
    let failed = diesel::sql_query("SELECT 1/0")
        .execute(tx.conn())
        .await
        .map_err(ApiError::from);
    assert!(tx.finish(failed).await.is_err());
    let state = session_state(&pool).await;
    assert_eq!(state.path, "\"\"");
    assert!(!state.in_tx);

    // A transaction abandoned mid-statement (the request future is dropped): the pool must
    // not hand the half-open transaction, still pinned to A, to the next user.
    let abandoned = async {
        let mut tx = db_a.begin().await.unwrap();
        diesel::sql_query("SELECT pg_sleep(5)")
            .execute(tx.conn())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    };
    assert!(
        tokio::time::timeout(Duration::from_millis(200), abandoned)
            .await
            .is_err()
    );
    let state = session_state(&pool).await;
    assert_eq!(
        state.path, "\"\"",
        "abandoned transaction leaked its search_path"
    );
    assert!(!state.in_tx, "abandoned transaction was reused");

    // Dropped without finishing (no statement in flight): also never reused.
    {
        let mut tx = db_a.begin().await.unwrap();
        diesel::sql_query("INSERT INTO notes (id, title) VALUES (gen_random_uuid(), 'never')")
            .execute(tx.conn())
            .await
            .unwrap();
    }
    let state = session_state(&pool).await;
    assert_eq!(state.path, "\"\"");
    assert!(!state.in_tx);
    let mut tx = db_a.begin().await.unwrap();
    let rows: Vec<Setting> =
        diesel::sql_query("SELECT title AS path, false AS in_tx FROM notes ORDER BY title")
            .load(tx.conn())
            .await
            .unwrap();
    tx.commit().await.unwrap();
    let titles: Vec<String> = rows.into_iter().map(|r| r.path).collect();
    assert_eq!(
        titles,
        vec!["from-a".to_string()],
        "the dropped transaction's row must not exist"
    );
    app.cleanup().await;
}

/// Titles of the notes `db`'s tenant holds, read through the one-round-trip read path with a
/// cached prepared statement (the same statement for every tenant).
async fn titles(db: &TenantDb) -> Result<Vec<String>, ApiError> {
    use diesel::QueryDsl;
    use neotenant::schema::tenant::notes;
    db.read(async |mut conn| {
        Ok(notes::table
            .select(notes::title)
            .order(notes::title)
            .load::<String>(&mut conn)
            .await?)
    })
    .await
}

#[tokio::test]
async fn pipelined_reads_never_see_another_tenant() {
    let app = TestApp::start().await;
    let a = app.with_tenant("us", "schema").await;
    let b = app.with_tenant("us", "schema").await;
    // Every read below runs on the one connection, with the statement cached on it.
    let pool = one_connection_pool();
    let db_a = TenantDb::new(pool.clone(), &a.schema);
    let db_b = TenantDb::new(pool.clone(), &b.schema);
    db_a.transaction(async |tx| {
        diesel::sql_query("INSERT INTO notes (id, title) VALUES (gen_random_uuid(), 'from-a')")
            .execute(tx.conn())
            .await
            .map_err(ApiError::from)
    })
    .await
    .unwrap();

    for _ in 0..3 {
        assert_eq!(titles(&db_a).await.unwrap(), vec!["from-a".to_string()]);
        assert!(
            titles(&db_b).await.unwrap().is_empty(),
            "tenant B read tenant A's row through the same prepared statement"
        );
    }
    // Reads and their COMMIT leave the connection unpinned and outside any transaction.
    let state = session_state(&pool).await;
    assert_eq!(state.path, "\"\"");
    assert!(!state.in_tx);

    // A read is read-only: a write inside one fails, and nothing is written.
    let write = db_a
        .read(async |mut conn| {
            diesel::sql_query("INSERT INTO notes (id, title) VALUES (gen_random_uuid(), 'sneaky')")
                .execute(&mut conn)
                .await
                .map_err(ApiError::from)
        })
        .await;
    assert!(write.is_err(), "a write inside a read must fail");
    assert_eq!(titles(&db_a).await.unwrap(), vec!["from-a".to_string()]);
    let state = session_state(&pool).await;
    assert_eq!(state.path, "\"\"");
    assert!(!state.in_tx, "a failed read left its transaction open");

    // A read abandoned mid-statement: the pool never hands its open transaction, still
    // pinned to A, to the next user.
    let abandoned = db_a.read(async |mut conn| {
        diesel::sql_query("SELECT pg_sleep(5)")
            .execute(&mut conn)
            .await
            .map_err(ApiError::from)
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(200), abandoned)
            .await
            .is_err()
    );
    let state = session_state(&pool).await;
    assert_eq!(state.path, "\"\"", "abandoned read leaked its search_path");
    assert!(!state.in_tx, "abandoned read was reused");
    assert!(titles(&db_b).await.unwrap().is_empty());
    app.cleanup().await;
}
