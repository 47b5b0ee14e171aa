//! The audit log end to end: tamper evidence against direct SQL edits, search, export, the
//! live stream, access control, syslog forwarding through an outage, retention.

use std::time::{Duration, Instant};

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use futures::StreamExt;
use neotenant_tests::{
    Fetch, TestApp, TestTenant, audit_settled as settled, audit_verify as verify, direct,
    expect_problem, tenant_with_admin,
};
use reqwest::Method;
use serde_json::{Value, json};

/// Makes `n` audited changes (roles) as `token`.
async fn changes(app: &TestApp, t: &TestTenant, token: &str, n: usize, tag: &str) {
    for i in 0..n {
        let res = app
            .anonymous(Method::POST, &t.slug, "/v1/roles")
            .bearer_auth(token)
            .header("x-request-id", format!("req-{tag}-{i}"))
            .json(&json!({"key": format!("r-{tag}-{i}"), "permissions": ["notes.read.own"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
}

async fn sql(conn: &mut AsyncPgConnection, text: &str) {
    conn.batch_execute(text)
        .await
        .unwrap_or_else(|e| panic!("{text}: {e}"));
}

async fn broken_at(app: &TestApp, t: &TestTenant, token: &str) -> (i64, String) {
    let v = verify(app, t, token).await;
    assert_eq!(v["ok"], false, "tampering went unnoticed: {v}");
    (
        v["broken"]["seq"].as_i64().unwrap(),
        v["broken"]["reason"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn every_kind_of_tampering_is_detected() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    changes(&app, &t, &boss, 8, "a").await;
    let v = settled(&app, &t, &boss).await;
    assert!(v["entries"].as_i64().unwrap() >= 9, "{v}");
    assert!(v["checkpoints"].as_i64().unwrap() >= 1, "{v}");
    let mut db = direct(&app.state().config, &t.database).await;
    let log = format!("\"{}\".audit_log", t.schema);
    let backup = format!("\"{}\".tamper_backup", t.schema);

    // Edit one entry's data.
    sql(
        &mut db,
        &format!("CREATE TABLE {backup} AS SELECT * FROM {log} WHERE seq = 3"),
    )
    .await;
    sql(
        &mut db,
        &format!("UPDATE {log} SET data = '{{\"forged\": true}}' WHERE seq = 3"),
    )
    .await;
    let (seq, reason) = broken_at(&app, &t, &boss).await;
    assert_eq!(seq, 3, "{reason}");
    sql(
        &mut db,
        &format!("UPDATE {log} l SET data = b.data FROM {backup} b WHERE l.seq = 3"),
    )
    .await;
    settled(&app, &t, &boss).await;

    // Change who did it.
    sql(
        &mut db,
        &format!(
            "UPDATE {log} SET actor_id = 'usr_00000000000000000000000000000000' WHERE seq = 3"
        ),
    )
    .await;
    assert_eq!(broken_at(&app, &t, &boss).await.0, 3);
    sql(
        &mut db,
        &format!("UPDATE {log} l SET actor_id = b.actor_id FROM {backup} b WHERE l.seq = 3"),
    )
    .await;
    sql(&mut db, &format!("DROP TABLE {backup}")).await;
    settled(&app, &t, &boss).await;

    // Delete one.
    sql(
        &mut db,
        &format!("CREATE TABLE {backup} AS SELECT * FROM {log} WHERE seq = 2"),
    )
    .await;
    sql(&mut db, &format!("DELETE FROM {log} WHERE seq = 2")).await;
    let (seq, reason) = broken_at(&app, &t, &boss).await;
    assert_eq!(seq, 2, "{reason}");
    assert!(reason.contains("missing"), "{reason}");
    sql(
        &mut db,
        &format!("INSERT INTO {log} SELECT * FROM {backup}; DROP TABLE {backup}"),
    )
    .await;
    settled(&app, &t, &boss).await;

    // Reorder two.
    let swap = |a: i64, b: i64| {
        format!(
            "UPDATE {log} SET seq = -1 WHERE seq = {a}; UPDATE {log} SET seq = {a} WHERE seq = {b}; \
             UPDATE {log} SET seq = {b} WHERE seq = -1"
        )
    };
    sql(&mut db, &swap(4, 5)).await;
    assert_eq!(broken_at(&app, &t, &boss).await.0, 4);
    sql(&mut db, &swap(4, 5)).await;
    settled(&app, &t, &boss).await;

    // Insert a forged entry into the sealed chain.
    sql(
        &mut db,
        &format!(
            "INSERT INTO {log} (id, at, actor_type, action, target_type, data, seq, hash) \
             VALUES (gen_random_uuid(), now(), 'user', 'role.created', 'role', '{{}}', 1000000, '\\x00')"
        ),
    )
    .await;
    let (_, reason) = broken_at(&app, &t, &boss).await;
    assert!(
        reason.contains("missing") || reason.contains("hash"),
        "{reason}"
    );
    sql(&mut db, &format!("DELETE FROM {log} WHERE seq = 1000000")).await;
    settled(&app, &t, &boss).await;

    // Cut the tail together with its checkpoints, back to an earlier checkpoint: what is left
    // is a consistent, signed chain, and the sealer even continues it with new entries. Only
    // the platform's record of the head (outside the tenant database) can tell.
    let last = settled(&app, &t, &boss).await["last_seq"].as_i64().unwrap();
    #[derive(diesel::QueryableByName)]
    struct Seq {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        seq: i64,
    }
    let cut = diesel_async::RunQueryDsl::get_result::<Seq>(
        diesel::sql_query(format!(
            "SELECT seq FROM \"{}\".audit_checkpoints WHERE seq < {last} ORDER BY seq DESC LIMIT 1",
            t.schema
        )),
        &mut db,
    )
    .await
    .unwrap()
    .seq;
    sql(
        &mut db,
        &format!(
            "DELETE FROM {log} WHERE seq > {cut}; DELETE FROM \"{schema}\".audit_checkpoints WHERE seq > {cut}",
            schema = t.schema
        ),
    )
    .await;
    let (seq, reason) = broken_at(&app, &t, &boss).await;
    assert!(
        seq > cut && seq <= last + 1,
        "{seq} in {cut}..={last}: {reason}"
    );
    // Reported as removed entries: either the gap itself (a sealing round racing the cut
    // chained past it) or the platform's head no longer matching.
    assert!(
        reason.contains("removed") || reason.contains("missing"),
        "{reason}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn search_export_and_the_live_stream_are_permissioned_and_audited() {
    let app = TestApp::start().await;
    let (t, member, boss, boss_id) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    changes(&app, &t, &boss, 5, "s").await;
    settled(&app, &t, &boss).await;

    // Members cannot read the log; admins can search but not export.
    for path in [
        "/v1/audit",
        "/v1/audit/verify",
        "/v1/audit/export",
        "/v1/audit/stream",
    ] {
        expect_problem(
            app.tenant_req(Method::GET, &t.slug, path)
                .send()
                .await
                .unwrap(),
            403,
            "forbidden",
        )
        .await;
    }
    expect_problem(
        as_boss(Method::GET, "/v1/audit/export")
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;

    // Filters.
    let found: Value = as_boss(Method::GET, "/v1/audit?action=role.created")
        .fetch_json()
        .await;
    let items = found["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert!(items[0]["id"].as_str().unwrap().starts_with("aud_"));
    assert_eq!(items[0]["data"]["after"]["key"], "r-s-4", "newest first");
    assert_eq!(items[0]["actor_id"], json!(boss_id));
    let by_prefix: Value = as_boss(Method::GET, "/v1/audit?action=role.&limit=200")
        .fetch_json()
        .await;
    assert!(
        by_prefix["items"].as_array().unwrap().len() >= 6,
        "role.created and role.assigned"
    );
    let by_request: Value = as_boss(Method::GET, "/v1/audit?request_id=req-s-2")
        .fetch_json()
        .await;
    assert_eq!(by_request["items"].as_array().unwrap().len(), 1);
    let target = items[0]["target_id"].as_str().unwrap();
    let by_target: Value = as_boss(
        Method::GET,
        &format!("/v1/audit?target_type=role&target_id={target}"),
    )
    .fetch_json()
    .await;
    assert_eq!(by_target["items"].as_array().unwrap().len(), 1);
    let by_actor: Value = as_boss(Method::GET, &format!("/v1/audit?actor={member}"))
        .fetch_json()
        .await;
    assert_eq!(
        by_actor["items"],
        json!([]),
        "the member did nothing audited"
    );
    let future: Value = as_boss(Method::GET, "/v1/audit?from=2999-01-01T00:00:00Z")
        .fetch_json()
        .await;
    assert_eq!(future["items"], json!([]));
    let past: Value = as_boss(
        Method::GET,
        "/v1/audit?action=role.created&from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00Z",
    )
    .fetch_json()
    .await;
    assert_eq!(past["items"].as_array().unwrap().len(), 5);
    // Keyset pages: no overlap, nothing skipped.
    let first: Value = as_boss(Method::GET, "/v1/audit?action=role.created&limit=2")
        .fetch_json()
        .await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = as_boss(
        Method::GET,
        &format!("/v1/audit?action=role.created&limit=2&cursor={cursor}"),
    )
    .fetch_json()
    .await;
    assert_eq!(first["items"][1]["data"]["after"]["key"], "r-s-3");
    assert_eq!(second["items"][0]["data"]["after"]["key"], "r-s-2");
    for bad in [
        "/v1/audit?from=yesterday",
        "/v1/audit?from=2030-01-01T00:00:00Z&to=2020-01-01T00:00:00Z",
        "/v1/audit?actor=",
        "/v1/audit?cursor=garbage",
    ] {
        let res = as_boss(Method::GET, bad).send().await.unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }

    // Owners export, streamed, filtered like search.
    app.admin(
        Method::POST,
        &format!("/admin/v1/tenants/{}/role-assignments", t.slug),
    )
    .json(&json!({"role": "owner", "user_id": boss_id}))
    .send()
    .await
    .unwrap();
    let res = as_boss(
        Method::GET,
        "/v1/audit/export?format=csv&action=role.created",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = res.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("id,seq,at,"));
    assert_eq!(lines.len(), 6, "{csv}");
    assert!(lines[1].contains("r-s-0"), "oldest first");
    let jsonl = as_boss(Method::GET, "/v1/audit/export?format=jsonl&action=role.")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in jsonl.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v["action"].as_str().unwrap().starts_with("role."));
    }
    expect_problem(
        as_boss(Method::GET, "/v1/audit/export?format=xml")
            .send()
            .await
            .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;

    // Reading the log is itself in the log.
    let reads: Value = as_boss(Method::GET, "/v1/audit?action=audit.&limit=200")
        .fetch_json()
        .await;
    let actions: Vec<&str> = reads["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in ["audit.searched", "audit.verified", "audit.exported"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }

    // The live stream: resume from an event id, then see a new change arrive.
    expect_problem(
        as_boss(Method::GET, "/v1/audit/stream")
            .header("last-event-id", "-5")
            .send()
            .await
            .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;
    let res = as_boss(Method::GET, "/v1/audit/stream")
        .header("last-event-id", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut events = Events {
        body: Box::pin(res.bytes_stream()),
        buf: String::new(),
    };
    let mut ids: Vec<i64> = Vec::new();
    for _ in 0..3 {
        ids.push(events.next().await.0);
    }
    let res = as_boss(Method::POST, "/v1/roles")
        .json(&json!({"key": "r-live", "permissions": ["notes.read.own"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    loop {
        let (id, data) = events.next().await;
        ids.push(id);
        if data.contains("\"r-live\"") {
            break;
        }
    }
    assert_eq!(ids[0], 3, "resumed right after Last-Event-ID");
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "in chain order: {ids:?}"
    );
    app.cleanup().await;
}

/// Server-sent events read off a response body.
struct Events {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl Events {
    /// The next event's id and data (comments skipped); fails after 10 s of silence.
    async fn next(&mut self) -> (i64, String) {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                let id = event.lines().find_map(|l| l.strip_prefix("id: "));
                let data = event.lines().find_map(|l| l.strip_prefix("data: "));
                if let (Some(id), Some(data)) = (id, data) {
                    return (id.parse().unwrap(), data.to_string());
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("an event within 10 s")
                .expect("the stream stays open")
                .unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// Reads octet-counted syslog frames from every connection to `listener` into `out`.
fn collect(
    listener: tokio::net::TcpListener,
    out: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let out = out.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = Vec::new();
                let _ = sock.read_to_end(&mut buf).await;
                let mut rest = &buf[..];
                while let Some(space) = rest.iter().position(|b| *b == b' ') {
                    let len: usize = std::str::from_utf8(&rest[..space])
                        .unwrap()
                        .parse()
                        .unwrap();
                    let msg = &rest[space + 1..space + 1 + len];
                    out.lock()
                        .unwrap()
                        .push(String::from_utf8(msg.to_vec()).unwrap());
                    rest = &rest[space + 1 + len..];
                }
            });
        }
    })
}

fn seqs(frames: &[String]) -> std::collections::BTreeSet<i64> {
    frames
        .iter()
        .filter_map(|f| {
            let start = f.find("seq=\"")? + 5;
            f[start..].split('"').next()?.parse().ok()
        })
        .collect()
}

#[tokio::test]
async fn syslog_forwarding_loses_nothing_while_the_collector_is_down() {
    let app = TestApp::start().await;
    let (t, _member, boss, boss_id) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    // Admins read the log; configuring it takes an owner.
    expect_problem(
        as_boss(Method::PUT, "/v1/audit/settings")
            .json(&json!({"retention_days": null, "syslog": null}))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    app.admin(
        Method::POST,
        &format!("/admin/v1/tenants/{}/role-assignments", t.slug),
    )
    .json(&json!({"role": "owner", "user_id": boss_id}))
    .send()
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let frames = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let receiver = collect(listener, frames.clone());

    for (body, pointer) in [
        (
            json!({"retention_days": 0, "syslog": null}),
            "/retention_days",
        ),
        (
            json!({"retention_days": null, "syslog": {"host": "bad host!", "port": 514}}),
            "/syslog/host",
        ),
    ] {
        let p = expect_problem(
            as_boss(Method::PUT, "/v1/audit/settings")
                .json(&body)
                .send()
                .await
                .unwrap(),
            422,
            "validation",
        )
        .await;
        assert_eq!(p["errors"][0]["pointer"], pointer);
    }
    // A collector inside the platform's network is refused (the tests' operator allows only
    // 127.0.0.1): no forwarding to cloud metadata, private services or other loopbacks.
    for host in ["169.254.169.254", "10.0.0.1", "127.0.0.2", "localhost"] {
        let p = expect_problem(
            as_boss(Method::PUT, "/v1/audit/settings")
                .json(&json!({"retention_days": null, "syslog": {"host": host, "port": 6379}}))
                .send()
                .await
                .unwrap(),
            422,
            "url-refused",
        )
        .await;
        assert_eq!(p["errors"][0]["pointer"], "/syslog/host", "{host}");
    }
    let res = as_boss(Method::PUT, "/v1/audit/settings")
        .json(&json!({"retention_days": null, "syslog": {"host": "127.0.0.1", "port": port}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    changes(&app, &t, &boss, 3, "f").await;
    let head = settled(&app, &t, &boss).await["last_seq"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seqs(&frames.lock().unwrap()).range(..=head).count() < head as usize {
        assert!(Instant::now() < deadline, "forwarding never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let got = frames.lock().unwrap();
        let first = got
            .iter()
            .find(|f| f.contains(" role.created "))
            .expect("a role.created message");
        assert!(first.starts_with("<110>1 "), "{first}");
        assert!(first.contains("[audit@32473 tenant=\"ten_"), "{first}");
    }

    // The collector goes away: entries wait, the error is visible, nothing is skipped.
    receiver.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    changes(&app, &t, &boss, 4, "g").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s: Value = as_boss(Method::GET, "/v1/audit/settings")
            .fetch_json()
            .await;
        if s["forward_error"].is_string() {
            assert!(s["forwarded_seq"].as_i64().unwrap() <= head + 2, "{s}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outage was never noticed: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let receiver = collect(listener, frames.clone());
    let head = settled(&app, &t, &boss).await["last_seq"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = seqs(&frames.lock().unwrap());
        if (1..=head).all(|s| got.contains(&s)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "entries lost: have {got:?}, want 1..={head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The forwarder records its success after the collector has the frames: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s: Value = as_boss(Method::GET, "/v1/audit/settings")
            .fetch_json()
            .await;
        if s["forward_error"].is_null() && s["forwarded_seq"].as_i64() >= Some(head) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the recovery was never recorded: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    receiver.abort();
    app.cleanup().await;
}

#[tokio::test]
async fn retention_prunes_a_prefix_that_stays_verifiable() {
    let app = TestApp::start().await;
    // A fresh tenant whose log starts with five entries from three days ago (written unsealed
    // straight into the table, as an import would), sealed before anything else happens.
    let t = app.with_tenant("eu", "schema").await;
    let mut db = direct(&app.state().config, &t.database).await;
    let log = format!("\"{}\".audit_log", t.schema);
    let old = chrono::Utc::now() - chrono::Duration::days(3);
    for i in 0..5u8 {
        let at = old + chrono::Duration::milliseconds(i64::from(i));
        let id = neotenant::audit::search::id_floor(at).as_u128() | u128::from(i + 1);
        sql(
            &mut db,
            &format!(
                "INSERT INTO {log} (id, at, actor_type, action, target_type, data) VALUES \
                 ('{}', '{}', 'system', 'legacy.imported', 'tenant', '{{}}')",
                uuid::Uuid::from_u128(id),
                at.to_rfc3339()
            ),
        )
        .await;
    }
    let state = app.state();
    let resolved = neotenant::tenancy::resolve::resolve(&state.tenancy, &t.slug)
        .await
        .unwrap();
    let signer = neotenant::audit::chain::Signer::new(state.config.audit.signing_key.expose());
    let sealed = neotenant::audit::seal::seal_tenant(
        &signer,
        &state.registry,
        resolved.tenant.id.0,
        &resolved.db,
    )
    .await
    .unwrap();
    assert_eq!(sealed, 5);
    // Then an owner and some fresh changes.
    let boss_name = format!("boss-{}", t.slug);
    let boss = app
        .member_token(&t.realm, t.organization.as_deref(), &boss_name)
        .await;
    let boss_id = neotenant_tests::me(&app, &t.slug, &boss).await;
    app.admin(
        Method::POST,
        &format!("/admin/v1/tenants/{}/role-assignments", t.slug),
    )
    .json(&json!({"role": "owner", "user_id": boss_id}))
    .send()
    .await
    .unwrap();
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    changes(&app, &t, &boss, 2, "young").await;
    let before = settled(&app, &t, &boss).await;
    assert!(before["anchor_seq"].is_null());

    // Without a policy nothing goes; with one, exactly the old prefix.
    let res = as_boss(Method::POST, "/v1/audit/retention/apply")
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["pruned"], 0);
    let res = as_boss(Method::PUT, "/v1/audit/settings")
        .json(&json!({"retention_days": 1, "syslog": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let pruned: Value = as_boss(Method::POST, "/v1/audit/retention/apply")
        .fetch_json()
        .await;
    assert_eq!(pruned["pruned"], 5);
    let after = settled(&app, &t, &boss).await;
    assert_eq!(after["anchor_seq"], 5, "{after}");
    assert_eq!(after["ok"], true, "{after}");
    let legacy: Value = as_boss(Method::GET, "/v1/audit?action=legacy.imported")
        .fetch_json()
        .await;
    assert_eq!(legacy["items"], json!([]));
    // A second run finds nothing more to prune.
    let again: Value = as_boss(Method::POST, "/v1/audit/retention/apply")
        .fetch_json()
        .await;
    assert_eq!(again["pruned"], 0);

    // The anchor is signed: forging it breaks verification.
    let anchors = format!("\"{}\".audit_anchors", t.schema);
    sql(
        &mut db,
        &format!("UPDATE {anchors} SET hash = sha256(hash)"),
    )
    .await;
    let (seq, reason) = broken_at(&app, &t, &boss).await;
    assert_eq!(seq, 5, "{reason}");
    app.cleanup().await;
}

/// A throwaway CA and a certificate for 127.0.0.1 signed by it: (CA PEM, cert PEM, key PEM).
fn test_pki() -> (String, String, String) {
    let dir = std::env::temp_dir().join(format!("nt-pki-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Test syslog CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let out = (read("ca.pem"), read("leaf.pem"), read("leaf.key"));
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// Like [`collect`], behind TLS with `cert`/`key`.
fn collect_tls(
    listener: tokio::net::TcpListener,
    cert: &str,
    key: &str,
    out: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (out, acceptor) = (out.clone(), acceptor.clone());
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let mut buf = Vec::new();
                let _ = tls.read_to_end(&mut buf).await;
                let mut rest = &buf[..];
                while let Some(space) = rest.iter().position(|b| *b == b' ') {
                    let len: usize = std::str::from_utf8(&rest[..space])
                        .unwrap()
                        .parse()
                        .unwrap();
                    let msg = &rest[space + 1..space + 1 + len];
                    out.lock()
                        .unwrap()
                        .push(String::from_utf8(msg.to_vec()).unwrap());
                    rest = &rest[space + 1 + len..];
                }
            });
        }
    })
}

#[tokio::test]
async fn syslog_over_tls_verifies_the_collector() {
    let app = TestApp::start().await;
    let (t, _member, boss, boss_id) = tenant_with_admin(&app).await;
    app.admin(
        Method::POST,
        &format!("/admin/v1/tenants/{}/role-assignments", t.slug),
    )
    .json(&json!({"role": "owner", "user_id": boss_id}))
    .send()
    .await
    .unwrap();
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let (ca, cert, key) = test_pki();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let frames = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let receiver = collect_tls(listener, &cert, &key, frames.clone());

    for (syslog, pointer) in [
        (
            json!({"host": "127.0.0.1", "port": port, "tls": true, "ca_pem": "not a certificate"}),
            "/syslog/ca_pem",
        ),
        (
            json!({"host": "127.0.0.1", "port": port, "tls": false, "ca_pem": ca}),
            "/syslog/ca_pem",
        ),
    ] {
        let p = expect_problem(
            as_boss(Method::PUT, "/v1/audit/settings")
                .json(&json!({"retention_days": null, "syslog": syslog}))
                .send()
                .await
                .unwrap(),
            422,
            "validation",
        )
        .await;
        assert_eq!(p["errors"][0]["pointer"], pointer);
    }

    // Without the CA the collector's certificate is not trusted: nothing is sent, the error
    // says why, and the entries wait.
    as_boss(Method::PUT, "/v1/audit/settings")
        .json(&json!({"retention_days": null, "syslog": {"host": "127.0.0.1", "port": port, "tls": true}}))
        .send()
        .await
        .unwrap();
    changes(&app, &t, &boss, 2, "tls").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s: Value = as_boss(Method::GET, "/v1/audit/settings")
            .fetch_json()
            .await;
        if let Some(e) = s["forward_error"].as_str() {
            assert!(e.contains("TLS") || e.contains("certificate"), "{e}");
            assert_eq!(s["forwarded_seq"], 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "untrusted collector accepted: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(frames.lock().unwrap().is_empty());

    // With the CA, everything arrives, encrypted.
    let res = as_boss(Method::PUT, "/v1/audit/settings")
        .json(&json!({"retention_days": null, "syslog": {"host": "127.0.0.1", "port": port, "tls": true, "ca_pem": ca}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let shown: Value = res.json().await.unwrap();
    assert_eq!(shown["syslog"]["tls"], true);
    let head = settled(&app, &t, &boss).await["last_seq"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = seqs(&frames.lock().unwrap());
        if (1..=head).all(|s| got.contains(&s)) {
            break;
        }
        assert!(Instant::now() < deadline, "have {got:?}, want 1..={head}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    receiver.abort();
    app.cleanup().await;
}
