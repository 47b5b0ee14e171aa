//! The migration runner against a real database: concurrent runs, per-schema versions,
//! refusal of edited migrations.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use neotenant::db::migrate::{self, MigrateError};
use neotenant_tests::{direct, ensure_migrated, random_slug, test_config};

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Text)]
    name: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runs_apply_each_migration_once() {
    let config = test_config();
    ensure_migrated(&config).await;
    let schema = random_slug("m").replace('-', "_");
    let set = migrate::set("tenant");
    let latest = set.last().unwrap().version;
    let runs = (0..6).map(|_| {
        let config = config.clone();
        let schema = schema.clone();
        let set = set.clone();
        tokio::spawn(async move {
            let mut conn = direct(&config, "neofast_shared_us").await;
            migrate::apply(&mut conn, &schema, &set).await
        })
    });
    for run in futures::future::join_all(runs).await {
        assert_eq!(run.unwrap().unwrap(), latest);
    }
    let mut conn = direct(&config, "neofast_shared_us").await;
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT version, name FROM \"{schema}\"._migrations ORDER BY version"
    ))
    .load(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        rows.len(),
        set.len(),
        "each migration recorded exactly once"
    );
    assert_eq!(
        rows.iter().map(|r| r.version).collect::<Vec<_>>(),
        set.iter().map(|m| m.version).collect::<Vec<_>>()
    );
    assert_eq!(rows[0].name, set[0].name);

    // An applied migration whose text changed is refused, and nothing is applied.
    conn.batch_execute(&format!(
        "UPDATE \"{schema}\"._migrations SET checksum = 'edited' WHERE version = 1"
    ))
    .await
    .unwrap();
    let err = migrate::apply(&mut conn, &schema, &set).await.unwrap_err();
    assert!(
        matches!(err, MigrateError::Edited { version: 1, .. }),
        "{err}"
    );

    // A schema ahead of this build is refused too.
    conn.batch_execute(&format!(
        "UPDATE \"{schema}\"._migrations SET checksum = '{}' WHERE version = 1; \
         INSERT INTO \"{schema}\"._migrations (version, name, checksum) VALUES (9999, 'future', 'x')",
        set[0].checksum
    ))
    .await
    .unwrap();
    let err = migrate::apply(&mut conn, &schema, &set).await.unwrap_err();
    assert!(
        matches!(err, MigrateError::Unknown { version: 9999, .. }),
        "{err}"
    );

    // Bad schema names never reach SQL.
    let err = migrate::apply(&mut conn, "x\"; DROP TABLE y; --", &set)
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::BadSchema(_)));
    conn.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
async fn failed_migration_leaves_the_schema_untouched() {
    let config = test_config();
    ensure_migrated(&config).await;
    let schema = random_slug("f").replace('-', "_");
    let mut broken = migrate::set("tenant");
    let next = broken.last().unwrap().version + 1;
    broken.push(migrate::Migration {
        version: next,
        name: "broken".into(),
        sql: "CREATE TABLE half_made (id int); SELECT no_such_function();",
        checksum: "x".into(),
    });
    let mut conn = direct(&config, "neofast_shared_eu").await;
    assert!(migrate::apply(&mut conn, &schema, &broken).await.is_err());

    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let n: N = diesel::sql_query("SELECT count(*) AS n FROM pg_namespace WHERE nspname = $1")
        .bind::<Text, _>(&schema)
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        n.n, 0,
        "a failed first migration must not leave a half-made schema"
    );
}
