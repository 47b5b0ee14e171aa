//! A worker killed with SIGKILL in the middle of sending loses nothing and repeats at most
//! one batch, each repeat with its original `Message-ID`.
//!
//! Its own test binary: cargo runs test binaries one after another, so no other test server's
//! worker takes part in this tenant's sending, and only the child processes started here do.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use diesel_async::RunQueryDsl;
use neotenant_tests::{Fetch, TestApp, direct, tenant_with_admin, test_config, test_env};
use reqwest::Method;
use serde_json::json;

const RECIPIENTS: usize = 300;
const CONCURRENCY: usize = 4;

/// The `neotenant` binary next to this test binary (`target/<profile>/`).
fn server_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory");
    let bin = dir.join("neotenant");
    assert!(
        bin.exists(),
        "{} is built by `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// A server process with the notification worker on.
fn spawn_worker() -> tokio::process::Child {
    tokio::process::Command::new(server_binary())
        .arg("--config")
        .arg(neotenant_tests::config_path())
        .arg("serve")
        .env_clear()
        .envs(test_env())
        .env("NEOTENANT_NOTIFICATIONS__WORKER", "true")
        .env(
            "NEOTENANT_NOTIFICATIONS__CONCURRENCY",
            CONCURRENCY.to_string(),
        )
        .env("NEOTENANT_NOTIFICATIONS__SWEEP_INTERVAL_SECS", "1")
        .kill_on_drop(true)
        .spawn()
        .expect("the server starts")
}

/// Every mail in the sink to an address ending in `suffix`: address → Message-IDs.
fn sink(suffix: &str) -> HashMap<String, Vec<String>> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.devstack/smtp/maildir/new");
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let to = text
            .lines()
            .find_map(|l| l.strip_prefix("To: "))
            .unwrap_or("");
        if !to.ends_with(suffix) {
            continue;
        }
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .unwrap_or("")
            .to_string();
        out.entry(to.to_string()).or_default().push(id);
    }
    out
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[tokio::test]
async fn a_killed_worker_loses_nothing_and_repeats_at_most_one_batch() {
    // The in-process server only takes requests; workers run in the children.
    let mut config = test_config();
    config.notifications.worker = false;
    let app = TestApp::start_with(config).await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let suffix = format!("-{}@example.test", t.slug);
    let mut conn = direct(&app.state().config, &t.database).await;
    diesel::sql_query(format!(
        "INSERT INTO \"{schema}\".users (id, subject, email, status) \
         SELECT gen_random_uuid(), 'crash-' || i, 'crash-' || i || '{suffix}', 'active' \
         FROM generate_series(1, {RECIPIENTS}) AS i",
        schema = t.schema
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let res = app
        .anonymous(Method::PUT, &t.slug, "/v1/notification-categories/bulk")
        .bearer_auth(&boss)
        .json(&json!({"name": "Bulk", "channels": ["email"], "variables": {"title": {"type": "string"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let n = app
        .anonymous(Method::POST, &t.slug, "/v1/notifications")
        .bearer_auth(&boss)
        .json(&json!({"category": "bulk", "audience": {"everyone": true}, "data": {"title": "Crash test"}}))
        .fetch_json()
        .await;
    assert!(
        n["recipients"].as_i64().unwrap() >= RECIPIENTS as i64,
        "{n}"
    );

    // Kill the first worker once part of the mail is out.
    let mut first = spawn_worker();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: usize = sink(&suffix).values().map(Vec::len).sum();
        if got >= RECIPIENTS / 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first worker sent {got} mails"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();
    let at_kill: usize = sink(&suffix).values().map(Vec::len).sum();
    assert!(at_kill < RECIPIENTS, "killed mid-way ({at_kill} sent)");

    // A second worker finishes the work.
    let mut second = spawn_worker();
    let deadline = Instant::now() + Duration::from_secs(90);
    let schema = &t.schema;
    loop {
        let open: Count = diesel::sql_query(format!(
            "SELECT count(*) AS n FROM \"{schema}\".notification_deliveries WHERE status IN ('queued', 'held')"
        ))
        .get_result(&mut conn)
        .await
        .unwrap();
        let expanded: Count = diesel::sql_query(format!(
            "SELECT count(*) AS n FROM \"{schema}\".notifications WHERE expanded_at IS NULL"
        ))
        .get_result(&mut conn)
        .await
        .unwrap();
        if open.n == 0 && expanded.n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} deliveries still open",
            open.n
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.start_kill().unwrap();
    second.wait().await.unwrap();

    let sent: Count = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM \"{schema}\".notification_deliveries d JOIN \"{schema}\".users u \
         ON u.id = d.user_id WHERE d.status = 'sent' AND u.email LIKE 'crash-%'"
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        sent.n, RECIPIENTS as i64,
        "every delivery is recorded sent once"
    );
    let mails = sink(&suffix);
    let crash: HashMap<&String, &Vec<String>> = mails
        .iter()
        .filter(|(to, _)| to.starts_with("crash-"))
        .collect();
    assert_eq!(crash.len(), RECIPIENTS, "every recipient got mail");
    let total: usize = crash.values().map(|v| v.len()).sum();
    let repeats = total - RECIPIENTS;
    assert!(
        repeats <= 2 * CONCURRENCY,
        "{repeats} repeats: at most one batch of {}",
        2 * CONCURRENCY
    );
    for (to, ids) in &crash {
        let distinct: HashSet<&String> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "a repeat to {to} carries its original Message-ID: {ids:?}"
        );
    }
    eprintln!("crash test: {at_kill} mails before the kill, {repeats} repeated after it");
    app.cleanup().await;
}
