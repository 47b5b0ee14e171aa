//! Permission checks at scale, against the local PostgreSQL and Redis (`make up`).
//!
//! Generates (once) a local-mode tenant `bench-rbac` with 10,000 users, 1,000 roles in a
//! five-level hierarchy, 2,000 teams in a tree with members and team roles, role assignments
//! and denies; then measures a permission check answered from L1 (in-process), from L2
//! (Redis) and cold (resolved from PostgreSQL), printing p50/p99 per layer. Latency
//! percentiles are the point, so this is a plain timing harness rather than criterion.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::SimpleAsyncConnection;
use neotenant::app::AppState;
use neotenant::config::Config;
use neotenant::rbac::cache::PermCache;
use neotenant::rbac::perm::{Effective, Scope};
use neotenant::rbac::service;
use neotenant::tenancy::model::{CreateTenant, IdentityMode, IdentityRequest};
use uuid::Uuid;

const SLUG: &str = "bench-rbac";

const GENERATE: &str = r#"
INSERT INTO users (id, subject, username, status)
  SELECT gen_random_uuid(), 'bench:' || g, 'bench' || g, 'active' FROM generate_series(1, 10000) g;
INSERT INTO roles (id, key, name, permissions)
  SELECT gen_random_uuid(), 'r' || g, 'Role ' || g, ARRAY[
    (ARRAY['notes','users','teams','roles','audit'])[1 + g % 5] || '.' ||
    (ARRAY['read','create','update','delete'])[1 + (g / 5) % 4] || '.' ||
    (ARRAY['own','team','tenant'])[1 + g % 3],
    (ARRAY['notes','users','teams','sessions','api_keys'])[1 + (g / 3) % 5] || '.read.own']
  FROM generate_series(0, 999) g;
-- Five levels of 200 roles; each role below the top inherits from two of the level above.
INSERT INTO role_parents (role_id, parent_id)
  SELECT c.id, p.id FROM roles c JOIN roles p
    ON c.key ~ '^r[0-9]+$' AND p.key ~ '^r[0-9]+$' AND (substr(p.key, 2)::int = (substr(c.key, 2)::int / 200 - 1) * 200 + (substr(c.key, 2)::int % 200)
    OR substr(p.key, 2)::int = (substr(c.key, 2)::int / 200 - 1) * 200 + ((substr(c.key, 2)::int * 7) % 200))
  WHERE c.key ~ '^r[0-9]+$' AND substr(c.key, 2)::int >= 200
  ON CONFLICT DO NOTHING;
-- 2,000 teams: 10 roots, then five children per team, level by level.
INSERT INTO teams (id, parent_id, path, name)
  SELECT x, NULL, ARRAY[x], 'Root ' || x FROM (SELECT gen_random_uuid() AS x FROM generate_series(1, 10)) r;
DO $$
DECLARE level int := 1;
BEGIN
  WHILE (SELECT count(*) FROM teams) < 2000 LOOP
    INSERT INTO teams (id, parent_id, path, name)
      SELECT c.cid, c.pid, c.ppath || c.cid, 'Team ' || c.cid
      FROM (SELECT gen_random_uuid() AS cid, p.id AS pid, p.path AS ppath
            FROM teams p, generate_series(1, 5) g WHERE cardinality(p.path) = level
            LIMIT 2000 - (SELECT count(*) FROM teams)) c;
    level := level + 1;
  END LOOP;
END $$;
WITH u AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM users),
     t AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM teams)
INSERT INTO team_members (team_id, user_id, team_role)
  SELECT t.id, u.id, CASE WHEN u.n % 10 = 0 THEN 'lead' ELSE 'member' END
  FROM u JOIN t ON t.n = 1 + u.n % 2000 OR t.n = 1 + (u.n * 13) % 2000;
WITH r AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM roles WHERE key ~ '^r[0-9]+$'),
     t AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM teams)
INSERT INTO team_roles (team_id, role_id) SELECT t.id, r.id FROM t JOIN r ON r.n = 1 + t.n % 1000;
WITH r AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM roles WHERE key ~ '^r[0-9]+$'),
     u AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM users)
INSERT INTO user_roles (user_id, role_id)
  SELECT u.id, r.id FROM u JOIN r ON r.n = 1 + u.n % 1000 OR r.n = 1 + (u.n * 7) % 1000
  ON CONFLICT DO NOTHING;
INSERT INTO user_grants (id, user_id, permission, effect)
  SELECT gen_random_uuid(), id, 'notes.delete.tenant', 'deny' FROM users WHERE username LIKE '%0';
"#;

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), *samples.last().unwrap())
}

fn report(name: &str, samples: Vec<Duration>) {
    let n = samples.len();
    let total: Duration = samples.iter().sum();
    let (p50, p99, max) = percentiles(samples);
    println!(
        "{name:<44} n={n:<7} p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}  ({:.0} ops/s per core)",
        p50,
        p99,
        max,
        n as f64 / total.as_secs_f64()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let path = std::path::Path::new("neotenant.toml");
    let path = if path.exists() {
        path.to_path_buf()
    } else {
        std::path::Path::new("../neotenant.toml").to_path_buf()
    };
    let config = Config::load(Some(&path), std::env::vars()).expect("config");
    let state: Arc<AppState> = AppState::connect(config).await.expect("services (make up)");
    neotenant::tenancy::service::ensure_platform(&state.tenancy)
        .await
        .expect("platform");
    let _ = neotenant::tenancy::service::create(
        &state.tenancy,
        &CreateTenant {
            slug: SLUG.into(),
            display_name: "RBAC bench".into(),
            region: neotenant::tenancy::model::Region::Us,
            isolation: neotenant::tenancy::model::Isolation::Schema,
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
    let db = &tenant.db;

    // Generate once.
    let mut tx = db.begin().await.unwrap();
    let roles: i64 = {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        neotenant::schema::tenant::roles::table
            .count()
            .get_result(tx.conn())
            .await
            .unwrap()
    };
    if roles < 1000 {
        let started = Instant::now();
        tx.conn().batch_execute(GENERATE).await.expect("generate");
        tx.commit().await.unwrap();
        println!(
            "generated 10,000 users, 1,000 roles (5 levels), 2,000 teams in {:.1?}",
            started.elapsed()
        );
    } else {
        tx.commit().await.unwrap();
    }
    // A branch fifteen levels deeper than the rest: tree queries at depth 10+.
    let mut tx = db.begin().await.unwrap();
    tx.conn()
        .batch_execute(
            r#"
DO $$
DECLARE parent teams%ROWTYPE; child uuid; i int;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM teams WHERE name LIKE 'Deep %') THEN
    SELECT * INTO parent FROM teams ORDER BY cardinality(path) DESC, id LIMIT 1;
    FOR i IN 1..15 LOOP
      child := gen_random_uuid();
      INSERT INTO teams (id, parent_id, path, name) VALUES (child, parent.id, parent.path || child, 'Deep ' || i);
      SELECT * INTO parent FROM teams WHERE id = child;
    END LOOP;
  END IF;
END $$;
"#,
        )
        .await
        .expect("deep branch");
    tx.commit().await.unwrap();
    let users: Vec<Uuid> = {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let mut tx = db.begin().await.unwrap();
        let ids = neotenant::schema::tenant::users::table
            .filter(neotenant::schema::tenant::users::username.like("bench%"))
            .select(neotenant::schema::tenant::users::id)
            .limit(2000)
            .load(tx.conn())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        ids
    };
    let tid = tenant.tenant.id;

    // What one user's resolved set looks like.
    let sample = service::compute(db, users[0], &[]).await.unwrap();
    println!(
        "a user holds {} roles (with inheritance) and {} permission patterns, in {} teams' reach",
        sample.roles.len(),
        sample.sources.len(),
        sample.teams.len()
    );

    let check = |e: &Effective| e.allows("notes", "read", Scope::Team);

    // Cold: resolved from PostgreSQL (one query), no cache.
    let mut cold = Vec::new();
    for u in users.iter().take(500) {
        let t = Instant::now();
        let e = service::compute(db, *u, &[]).await.unwrap();
        std::hint::black_box(check(&e));
        cold.push(t.elapsed());
    }
    report("check, cold (PostgreSQL, one round trip)", cold);

    // L2: Redis, read and decoded (a cache with no subscription never uses L1).
    let l2_only = PermCache::new(state.redis.clone());
    let (generation, _) = l2_only.l2(tid, users[0], 0).await.unwrap();
    for u in users.iter().take(500) {
        let e = service::compute(db, *u, &[]).await.unwrap();
        l2_only.put_l2(tid, *u, 0, generation, &e).await.unwrap();
    }
    let mut l2 = Vec::new();
    for round in 0..4 {
        for u in users.iter().take(500) {
            let t = Instant::now();
            let (_, hit) = l2_only.l2(tid, *u, 0).await.unwrap();
            let e = hit.expect("cached in L2");
            std::hint::black_box(check(&e));
            if round > 0 {
                l2.push(t.elapsed());
            }
        }
    }
    report("check, L2 (Redis round trip + decode)", l2);

    // L1: the request path's lookup, once the listener is subscribed.
    let (_keep_listening, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(neotenant::rbac::cache::listen(
        state.redis_client.clone(),
        state.perms.clone(),
        stop,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for u in users.iter().take(1000) {
        service::effective(&state.rbac, &tenant, *u, &[])
            .await
            .unwrap();
    }
    let mut l1 = Vec::new();
    for _ in 0..200 {
        for u in users.iter().take(1000) {
            let t = Instant::now();
            let e = service::effective(&state.rbac, &tenant, *u, &[])
                .await
                .unwrap();
            std::hint::black_box(check(&e));
            l1.push(t.elapsed());
        }
    }
    report("check, L1 (in-process)", l1);

    // Tree queries over the 2,000 teams: a root's subtree and the deepest team's ancestors.
    let (root, deepest) = {
        let mut tx = db.begin().await.unwrap();
        let all = neotenant::teams::repo::all(tx.conn()).await.unwrap();
        tx.commit().await.unwrap();
        let root = all.iter().find(|t| t.parent_id.is_none()).unwrap().id;
        let deepest = all.iter().max_by_key(|t| t.path.len()).unwrap().clone();
        (root, deepest)
    };
    let mut sub = Vec::new();
    let mut size = 0;
    let mut up = Vec::new();
    for _ in 0..300 {
        let mut tx = db.begin().await.unwrap();
        let t = Instant::now();
        size = neotenant::teams::repo::subtree(tx.conn(), root)
            .await
            .unwrap()
            .len();
        sub.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(
            neotenant::teams::repo::ancestors(tx.conn(), &deepest.path)
                .await
                .unwrap(),
        );
        up.push(t.elapsed());
        tx.commit().await.unwrap();
    }
    report(&format!("team subtree of a root ({size} teams)"), sub);
    report(
        &format!("team ancestors at depth {}", deepest.path.len() - 1),
        up,
    );

    // Resolution alone (the CPU part of a cold check).
    let inputs = {
        let mut tx = db.begin().await.unwrap();
        let i = neotenant::rbac::repo::load_inputs(tx.conn(), users[0], &[])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        i
    };
    let mut resolve = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        std::hint::black_box(Effective::resolve(&inputs));
        resolve.push(t.elapsed());
    }
    report("resolve one user's inputs (CPU only)", resolve);
}
