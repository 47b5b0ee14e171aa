//! The audit log at scale, against the local PostgreSQL (`make up`):
//! - appends through the real transactional path (tenant transaction + `audit::record` +
//!   commit) from concurrent writers, entries/s and per-transaction p50/p99;
//! - sealing throughput (chaining + signing a backlog);
//! - verification speed over the whole chain (1M+ entries);
//! - search latency over 1M entries (first pages and deep keyset pages).
//!
//! A local-mode tenant `bench-audit` is generated once with 1,000,000 entries (1,000 actors,
//! 50,000 targets, 30 days). Plain timing harness: percentiles are the point.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::SimpleAsyncConnection;
use neotenant::app::AppState;
use neotenant::audit::chain::Signer;
use neotenant::audit::search::{self, Filter};
use neotenant::audit::{Actor, Change};
use neotenant::config::Config;
use neotenant::tenancy::model::{CreateTenant, IdentityMode, IdentityRequest, Isolation, Region};

const SLUG: &str = "bench-audit";

const GENERATE: &str = r#"
INSERT INTO audit_log (id, at, actor_type, actor_id, action, target_type, target_id, data, request_id, ip)
SELECT encode(set_byte(overlay(uuid_send(gen_random_uuid())
         placing substring(int8send((extract(epoch from ts) * 1000)::bigint) from 3) from 1),
         6, 112 + (g % 16)), 'hex')::uuid,
       date_trunc('milliseconds', ts), 'user', 'usr_' || lpad(to_hex(g % 1000), 32, '0'),
       (ARRAY['role.created','role.updated','team.created','team.members_added','note.created'])[1 + g % 5],
       'role', 'rol_' || (g % 50000), jsonb_build_object('n', g, 'name', 'entry ' || g),
       'req-' || g, '10.0.' || (g % 250) || '.' || (g % 200)
FROM (SELECT g, now() - interval '30 days' + g * interval '2500 milliseconds' AS ts
      FROM generate_series($FROM, $TO) g) s;
"#;

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{name:<52} n={:<6} p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}",
        samples.len(),
        at(0.5),
        at(0.99),
        samples.last().unwrap()
    );
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let path = ["neotenant.toml", "../neotenant.toml"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .expect("neotenant.toml");
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.push(("NEOTENANT_DATABASE__POOL_MAX_SIZE".into(), "40".into()));
    env.push((
        "NEOTENANT_DATABASE__STATEMENT_TIMEOUT_MS".into(),
        "600000".into(),
    ));
    let config = Config::load(Some(&path), env).expect("config");
    let state: Arc<AppState> = AppState::connect(config).await.expect("services (make up)");
    neotenant::tenancy::service::ensure_platform(&state.tenancy)
        .await
        .expect("platform");
    neotenant::tenancy::service::create(
        &state.tenancy,
        &CreateTenant {
            slug: SLUG.into(),
            display_name: "Audit bench".into(),
            region: Region::Us,
            isolation: Isolation::Schema,
            identity: IdentityRequest {
                mode: IdentityMode::Local,
                link: None,
            },
        },
    )
    .await
    .expect("bench tenant");
    let tenant = neotenant::tenancy::resolve::resolve(&state.tenancy, SLUG)
        .await
        .expect("resolves");
    let db = tenant.db.clone();
    let tid = tenant.tenant.id.0;
    let signer = Signer::new(state.config.audit.signing_key.expose());

    let count = || async {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let mut tx = db.begin().await.unwrap();
        let n: i64 = neotenant::schema::tenant::audit_log::table
            .count()
            .get_result(tx.conn())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        n
    };
    if count().await < 1_000_000 {
        let t = Instant::now();
        for chunk in 0..10 {
            let sql = GENERATE
                .replace("$FROM", &(chunk * 100_000 + 1).to_string())
                .replace("$TO", &((chunk + 1) * 100_000).to_string());
            let mut tx = db.begin().await.unwrap();
            tx.conn().batch_execute(&sql).await.expect("generate");
            tx.commit().await.unwrap();
        }
        println!("generated 1,000,000 entries in {:.1?}", t.elapsed());
        let mut tx = db.begin().await.unwrap();
        tx.conn().batch_execute("ANALYZE audit_log").await.unwrap();
        tx.commit().await.unwrap();
    }
    let t = Instant::now();
    let sealed = neotenant::audit::seal::seal_tenant(&signer, &state.registry, tid, &db)
        .await
        .expect("seal");
    if sealed > 0 {
        println!(
            "sealed a backlog of {sealed} entries in {:.1?} ({:.0} entries/s)",
            t.elapsed(),
            sealed as f64 / t.elapsed().as_secs_f64()
        );
    }

    // Appends through the real path: concurrent writers, `per_tx` entries per transaction
    // (one change, or a bulk change writing several).
    for (writers, per_tx) in [(16usize, 1usize), (32, 1), (16, 10)] {
        let secs = 5;
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for w in 0..writers {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let actor = Actor {
                    kind: "user",
                    id: Some(format!("usr_{w:032x}")),
                    request_id: Some("bench".into()),
                    ip: Some("127.0.0.1".into()),
                    user_agent: Some("bench".into()),
                    tenant: Some((tid, db.clone())),
                    recent: None,
                };
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let mut tx = db.begin().await.unwrap();
                    let mut r = Ok(());
                    for _ in 0..per_tx {
                        r = neotenant::audit::record(
                            tx.conn(),
                            &actor,
                            Change {
                                action: "role.updated",
                                target_type: "role",
                                target_id: Some("rol_bench".into()),
                                data: serde_json::json!({"before": {"name": "a"}, "after": {"name": "b"}}),
                            },
                        )
                        .await;
                        if r.is_err() {
                            break;
                        }
                    }
                    tx.finish(r).await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        println!(
            "appends, {writers} writers, {per_tx} entr{} per transaction: {:.0} entries/s",
            if per_tx == 1 { "y" } else { "ies" },
            (all.len() * per_tx) as f64 / secs as f64
        );
        report(
            &format!("  append transaction latency ({writers} writers, {per_tx}/tx)"),
            all,
        );
        let t = Instant::now();
        let n = neotenant::audit::seal::seal_tenant(&signer, &state.registry, tid, &db)
            .await
            .unwrap();
        println!(
            "  sealing that backlog: {n} entries in {:.2?} ({:.0} entries/s)",
            t.elapsed(),
            n as f64 / t.elapsed().as_secs_f64()
        );
    }

    // Statistics as autovacuum would keep them after the appends.
    let mut tx = db.begin().await.unwrap();
    tx.conn().batch_execute("ANALYZE audit_log").await.unwrap();
    tx.commit().await.unwrap();

    // Verification of the whole chain.
    let report_v = neotenant::audit::seal::verify_tenant(&signer, &state.registry, tid, &db)
        .await
        .unwrap();
    println!(
        "verify: ok={} {} entries, {} checkpoints in {} ms ({} entries/s)",
        report_v.ok,
        report_v.entries,
        report_v.checkpoints,
        report_v.elapsed_ms,
        report_v.entries_per_sec
    );

    // Search over the 1M+ entries.
    let day = chrono::Utc::now() - chrono::Duration::days(12);
    type Case = (&'static str, Box<dyn Fn(usize) -> Filter>);
    let cases: Vec<Case> = vec![
        (
            "search by actor, first page of 50",
            Box::new(|i| Filter {
                actor: Some(format!("usr_{:032x}", (i * 37) % 1000)),
                ..Default::default()
            }),
        ),
        (
            "search by action, first page of 50",
            Box::new(|_| Filter {
                action: Some("team.created".into()),
                ..Default::default()
            }),
        ),
        (
            "search by target, first page of 50",
            Box::new(|i| Filter {
                target_type: Some("role".into()),
                target_id: Some(format!("rol_{}", (i * 7919) % 50000)),
                ..Default::default()
            }),
        ),
        (
            "search by request id",
            Box::new(|i| Filter {
                request_id: Some(format!("req-{}", 1 + (i * 4999) % 1_000_000)),
                ..Default::default()
            }),
        ),
        (
            "search by time range (one hour)",
            Box::new(move |i| Filter {
                from: Some(day + chrono::Duration::minutes(i as i64)),
                to: Some(day + chrono::Duration::minutes(i as i64 + 60)),
                ..Default::default()
            }),
        ),
        (
            "search by actor + action + one day",
            Box::new(move |i| Filter {
                actor: Some(format!("usr_{:032x}", (i * 13) % 1000)),
                action: Some("role.".into()),
                from: Some(day),
                to: Some(day + chrono::Duration::days(1)),
                ..Default::default()
            }),
        ),
    ];
    for (name, make) in &cases {
        let mut lat = Vec::new();
        for i in 0..200 {
            let f = make(i);
            let t = Instant::now();
            std::hint::black_box(search::search(&db, &f, None, 51).await.unwrap());
            lat.push(t.elapsed());
        }
        report(name, lat);
    }
    // Deep keyset pages: 40 pages of 50 of one action.
    let f = Filter {
        action: Some("role.created".into()),
        ..Default::default()
    };
    let mut lat = Vec::new();
    let mut before = None;
    for _ in 0..40 {
        let t = Instant::now();
        let page = search::search(&db, &f, before, 51).await.unwrap();
        lat.push(t.elapsed());
        before = page.get(49).map(|e| e.id.0);
    }
    report("search, keyset pages 1-40 of one action", lat);
}
