//! Plugins through the API, with the real components `make plugins` builds: uploads and
//! their refusals, installs with grants, a resource-type plugin on the write path (validation,
//! normalisation, veto, custom action, key-value, events), upgrades and rollbacks, the
//! marketplace, hostile components against every sandbox limit with the circuit breaker and
//! failure modes, tenant isolation, and an integration delivering events to a loopback
//! receiver with retries and dead letters.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use neotenant_tests::{
    Fetch, TestApp, TestTenant, audit_actions, direct, expect_problem, tenant_with_admin,
};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn dist(name: &str) -> Vec<u8> {
    std::fs::read(neotenant_runtime::dist_dir().join(format!("{name}.wasm")))
        .unwrap_or_else(|e| panic!("{name}.wasm (run `make plugins`): {e}"))
}

fn manifest(name: &str) -> Value {
    let p = neotenant_runtime::dist_dir().join(format!("{name}.json"));
    serde_json::from_slice(&std::fs::read(p).expect("manifest")).unwrap()
}

/// The same component with a custom section appended: valid, but other bytes (a "new
/// build" for version tests).
fn rebuilt(wasm: &[u8], tag: &str) -> Vec<u8> {
    let name = b"neotenant-test";
    let payload = tag.as_bytes();
    let size = 1 + name.len() + payload.len();
    assert!(size < 128 && name.len() < 128);
    let mut out = wasm.to_vec();
    out.extend_from_slice(&[0, size as u8, name.len() as u8]);
    out.extend_from_slice(name);
    out.extend_from_slice(payload);
    out
}

fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "neotenant-boundary-7f3a";
    let mut body = Vec::new();
    for (name, data) in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if *name == "component" {
            body.extend_from_slice(b"; filename=\"plugin.wasm\"\r\nContent-Type: application/wasm");
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn upload_req(
    req: reqwest::RequestBuilder,
    wasm: &[u8],
    manifest: &Value,
) -> reqwest::RequestBuilder {
    let m = serde_json::to_vec(manifest).unwrap();
    let (ct, body) = multipart(&[("manifest", &m), ("component", wasm)]);
    req.header("content-type", ct).body(body)
}

async fn upload(
    app: &TestApp,
    slug: &str,
    token: &str,
    wasm: &[u8],
    manifest: &Value,
) -> reqwest::Response {
    upload_req(
        app.anonymous(Method::POST, slug, "/v1/plugins")
            .bearer_auth(token),
        wasm,
        manifest,
    )
    .send()
    .await
    .unwrap()
}

async fn install(app: &TestApp, slug: &str, token: &str, body: Value) -> Value {
    let res = app
        .anonymous(Method::POST, slug, "/v1/plugin-installations")
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let v: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    v
}

async fn kv_value(app: &TestApp, t: &TestTenant, plugin: &str, key: &str) -> Option<String> {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Bytea)]
        value: Vec<u8>,
    }
    let mut conn = direct(&app.state().config, &t.database).await;
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT value FROM \"{}\".plugin_kv WHERE plugin = $1 AND key = $2",
        t.schema
    ))
    .bind::<diesel::sql_types::Text, _>(plugin)
    .bind::<diesel::sql_types::Text, _>(key)
    .load(&mut conn)
    .await
    .unwrap();
    rows.into_iter()
        .next()
        .map(|r| String::from_utf8(r.value).unwrap())
}

async fn outbox_topics(app: &TestApp, t: &TestTenant) -> Vec<String> {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        topic: String,
    }
    let mut conn = direct(&app.state().config, &t.database).await;
    diesel::sql_query(format!(
        "SELECT topic FROM \"{}\".outbox ORDER BY txid, seq",
        t.schema
    ))
    .load::<Row>(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .map(|r| r.topic)
    .collect()
}

#[tokio::test]
async fn uploads_are_checked_and_a_resource_type_plugin_runs_on_the_write_path() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let as_member = |m: Method, path: &str| app.tenant_req(m, &t.slug, path);
    let ticket = dist("ticket");
    let ticket_manifest = manifest("ticket");

    // Refusals: members may not upload; garbage, core modules, lying manifests, broken
    // multipart bodies and oversize bodies get problems.
    expect_problem(
        upload(&app, &t.slug, &t.token, &ticket, &ticket_manifest).await,
        403,
        "forbidden",
    )
    .await;
    let p = expect_problem(
        upload(
            &app,
            &t.slug,
            &boss,
            b"definitely not wasm",
            &ticket_manifest,
        )
        .await,
        422,
        "plugin-invalid",
    )
    .await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("not a WebAssembly component"),
        "{p}"
    );
    let p = expect_problem(
        upload(&app, &t.slug, &boss, b"\0asm\x01\0\0\0", &ticket_manifest).await,
        422,
        "plugin-invalid",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("core module"), "{p}");
    // A component that implements no world of the package (it exports nothing).
    let p = expect_problem(
        upload(&app, &t.slug, &boss, b"\0asm\x0d\0\x01\0", &ticket_manifest).await,
        422,
        "plugin-invalid",
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains("does not implement"),
        "{p}"
    );
    let mut lying = ticket_manifest.clone();
    lying["kind"] = json!("integration");
    lying["events"] = json!(["resource.*"]);
    let p = expect_problem(
        upload(&app, &t.slug, &boss, &ticket, &lying).await,
        422,
        "plugin-invalid",
    )
    .await;
    assert!(
        p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["pointer"] == "/kind"),
        "{p}"
    );
    let mut hiding = ticket_manifest.clone();
    hiding["capabilities"]["kv"] = json!(false);
    let p = expect_problem(
        upload(&app, &t.slug, &boss, &ticket, &hiding).await,
        422,
        "plugin-invalid",
    )
    .await;
    assert!(
        p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["pointer"] == "/capabilities/kv"),
        "{p}"
    );
    let mut bad = ticket_manifest.clone();
    bad["version"] = json!("one");
    expect_problem(
        upload(&app, &t.slug, &boss, &ticket, &bad).await,
        422,
        "plugin-invalid",
    )
    .await;
    expect_problem(
        as_boss(Method::POST, "/v1/plugins")
            .json(&json!({"component": "x"}))
            .send()
            .await
            .unwrap(),
        415,
        "unsupported-media-type",
    )
    .await;
    let (ct, body) = multipart(&[("component", &ticket)]);
    expect_problem(
        as_boss(Method::POST, "/v1/plugins")
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap(),
        400,
        "malformed-multipart",
    )
    .await;
    let huge = vec![0u8; app.state().config.plugins.max_component_bytes + (2 << 20)];
    expect_problem(
        upload(&app, &t.slug, &boss, &huge, &ticket_manifest).await,
        413,
        "payload-too-large",
    )
    .await;

    // A good upload: 201, then 200 for the same bytes and manifest; another component or
    // manifest under the same version: 409.
    let res = upload(&app, &t.slug, &boss, &ticket, &ticket_manifest).await;
    assert_eq!(res.status(), 201);
    let plugin: Value = res.json().await.unwrap();
    assert_eq!(plugin["kind"], "resource-type");
    assert_eq!(
        plugin["versions"][0]["hash"],
        neotenant_runtime::content_hash(&ticket)
    );
    assert_eq!(plugin["versions"][0]["type_info"]["name"], "ticket");
    assert_eq!(
        upload(&app, &t.slug, &boss, &ticket, &ticket_manifest)
            .await
            .status(),
        200
    );
    expect_problem(
        upload(
            &app,
            &t.slug,
            &boss,
            &rebuilt(&ticket, "b"),
            &ticket_manifest,
        )
        .await,
        409,
        "conflict",
    )
    .await;
    let mut redescribed = ticket_manifest.clone();
    redescribed["description"] = json!("the same version, described otherwise");
    expect_problem(
        upload(&app, &t.slug, &boss, &ticket, &redescribed).await,
        409,
        "conflict",
    )
    .await;

    // Installing: grants beyond what the manifest asks are refused.
    let res = as_boss(Method::POST, "/v1/plugin-installations")
        .json(&json!({"plugin": "ticket", "grants": {"http": ["example.com"], "kv": true}}))
        .send()
        .await
        .unwrap();
    let p = expect_problem(res, 422, "validation").await;
    assert_eq!(p["errors"][0]["pointer"], "/grants/http/0");
    expect_problem(
        as_member(Method::POST, "/v1/plugin-installations")
            .json(&json!({"plugin": "ticket"}))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    let inst = install(
        &app,
        &t.slug,
        &boss,
        json!({
            "plugin": "ticket", "grants": {"logging": true, "kv": true, "events": true}
        }),
    )
    .await;
    assert_eq!(inst["version"], "1.0.0");
    assert_eq!(inst["type_name"], "ticket");
    assert_eq!(inst["failure_modes"]["validate"], "closed");
    let ty = as_member(Method::GET, "/v1/resource-types/ticket")
        .fetch_json()
        .await;
    assert_eq!(
        (ty["source"].as_str(), ty["plugin"].as_str()),
        (Some("plugin"), Some("ticket"))
    );
    expect_problem(
        as_boss(Method::PUT, "/v1/resource-types/ticket")
            .json(&json!({"title": "Mine", "schema": {"type": "object"}}))
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;

    // The write path: normalisation, the plugin's own field errors, a veto, an action.
    let res = as_member(Method::POST, "/v1/resources/ticket")
        .json(&json!({"data": {"title": "  Printer on fire  ", "status": "OPEN"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let r: Value = res.json().await.unwrap();
    assert_eq!(
        r["data"],
        json!({"title": "Printer on fire", "status": "open", "priority": 3})
    );
    let id = r["id"].as_str().unwrap().to_string();
    let p = expect_problem(
        as_member(Method::POST, "/v1/resources/ticket")
            .json(&json!({"data": {"title": "x", "status": "closed"}}))
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    assert_eq!(p["errors"][0]["pointer"], "/data/resolution");
    // The schema is checked by the host before the plugin runs.
    expect_problem(
        as_member(Method::POST, "/v1/resources/ticket")
            .json(&json!({"data": {"priority": 9}}))
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    let p = expect_problem(
        as_member(Method::DELETE, &format!("/v1/resources/ticket/{id}"))
            .send()
            .await
            .unwrap(),
        422,
        "plugin-veto",
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains("close it first"),
        "{p}"
    );
    expect_problem(
        as_member(
            Method::POST,
            &format!("/v1/resources/ticket/{id}/actions/reopen"),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap(),
        404,
        "not-found",
    )
    .await;
    expect_problem(
        as_member(
            Method::POST,
            &format!("/v1/resources/ticket/{id}/actions/close"),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap(),
        422,
        "plugin-veto",
    )
    .await;
    let res = as_member(
        Method::POST,
        &format!("/v1/resources/ticket/{id}/actions/close"),
    )
    .json(&json!({"resolution": " replaced the toner "}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let out: Value = res.json().await.unwrap();
    assert_eq!(out["output"], json!({"closed": true}));
    assert_eq!(out["resource"]["data"]["status"], "closed");
    assert_eq!(out["resource"]["data"]["resolution"], "replaced the toner");
    assert_eq!(out["resource"]["version"], 2);
    let res = as_member(Method::DELETE, &format!("/v1/resources/ticket/{id}"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(
        kv_value(&app, &t, "ticket", "created").await.as_deref(),
        Some("1")
    );
    let topics = outbox_topics(&app, &t).await;
    assert!(
        topics.contains(&"plugin.ticket.closed".to_string()),
        "{topics:?}"
    );
    assert!(
        topics.contains(&"plugin.installed".to_string()),
        "{topics:?}"
    );

    // Upgrade to a new version, then roll back; each audited.
    let mut v11 = ticket_manifest.clone();
    v11["version"] = json!("1.1.0");
    assert_eq!(
        upload(&app, &t.slug, &boss, &rebuilt(&ticket, "1.1"), &v11)
            .await
            .status(),
        201
    );
    let up = as_boss(Method::PATCH, "/v1/plugin-installations/ticket")
        .json(&json!({"version": "1.1.0"}))
        .fetch_json()
        .await;
    assert_eq!(
        (up["version"].as_str(), up["previous_version"].as_str()),
        (Some("1.1.0"), Some("1.0.0"))
    );
    assert_ne!(up["hash"], inst["hash"]);
    let back = as_boss(Method::POST, "/v1/plugin-installations/ticket/rollback")
        .fetch_json()
        .await;
    assert_eq!(
        (back["version"].as_str(), back["hash"].as_str()),
        (Some("1.0.0"), inst["hash"].as_str())
    );
    expect_problem(
        as_boss(Method::PATCH, "/v1/plugin-installations/ticket")
            .json(&json!({"version": "9.9.9"}))
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
    // Uninstalling while resources of its type exist is refused.
    expect_problem(
        as_boss(Method::DELETE, "/v1/plugin-installations/ticket")
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;
    let actions = audit_actions(&app, &t).await;
    for a in [
        "plugin.uploaded",
        "plugin.installed",
        "resource.action",
        "plugin.upgraded",
        "plugin.rolled_back",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }

    // The marketplace: publishing needs the platform token; tenants browse and install.
    let hook_manifest = manifest("webhook");
    let res = upload_req(
        app.anonymous(Method::POST, &t.slug, "/admin/v1/marketplace")
            .bearer_auth(&boss),
        &dist("webhook"),
        &hook_manifest,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 401);
    let res = upload_req(
        app.admin(Method::POST, "/admin/v1/marketplace"),
        &dist("webhook"),
        &hook_manifest,
    )
    .send()
    .await
    .unwrap();
    assert!(
        res.status() == 201 || res.status() == 200,
        "{}",
        res.status()
    );
    // Browsing is for those who may install (members get 403).
    expect_problem(
        as_member(Method::GET, "/v1/marketplace")
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    let market = as_boss(Method::GET, "/v1/marketplace").fetch_json().await;
    let listed = market
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "webhook")
        .expect("listed");
    assert_eq!(listed["publisher"], "NeoTenant examples");
    assert_eq!(listed["versions"][0]["capabilities"]["http"], json!(["*"]));
    let inst = install(
        &app,
        &t.slug,
        &boss,
        json!({
            "plugin": "webhook", "source": "marketplace",
            "grants": {"logging": true, "kv": true, "http": ["127.0.0.1:9"]},
            "settings": {"url": "http://127.0.0.1:9/hook"}, "secrets": {"token": "s3cret"}
        }),
    )
    .await;
    assert_eq!(inst["source"], "marketplace");
    assert_eq!(inst["secret_keys"], json!(["token"]));
    let shown = as_boss(Method::GET, "/v1/plugin-installations/webhook")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!shown.contains("s3cret"), "secrets never come back");
    // Nor are they stored in clear: sealed under the master key, the names beside them.
    {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            secrets: String,
        }
        let mut conn = direct(&app.state().config, &t.database).await;
        let row: Row = diesel::sql_query(format!(
            "SELECT secrets::text AS secrets FROM \"{}\".plugin_installs WHERE name = 'webhook'",
            t.schema
        ))
        .get_result(&mut conn)
        .await
        .unwrap();
        assert!(!row.secrets.contains("s3cret"), "{}", row.secrets);
        assert!(row.secrets.contains("nts1:"), "{}", row.secrets);
    }
    app.cleanup().await;
}

/// A loopback listener that accepts connections and never answers.
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let h = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (format!("127.0.0.1:{port}"), h)
}

#[tokio::test]
async fn hostile_plugins_fail_per_call_trip_the_breaker_and_spare_other_tenants() {
    let app = TestApp::start().await;
    let (a, _, boss_a, _) = tenant_with_admin(&app).await;
    let (b, _, boss_b, _) = tenant_with_admin(&app).await;
    let (hole, hole_task) = black_hole().await;
    assert_eq!(
        upload(
            &app,
            &a.slug,
            &boss_a,
            &dist("hostile"),
            &manifest("hostile")
        )
        .await
        .status(),
        201
    );
    install(
        &app,
        &a.slug,
        &boss_a,
        json!({
            "plugin": "hostile", "grants": {"logging": true, "http": [hole]}
        }),
    )
    .await;
    // Tenant B cannot see or install tenant A's private plugin.
    expect_problem(
        app.anonymous(Method::GET, &b.slug, "/v1/plugins/hostile")
            .bearer_auth(&boss_b)
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
    expect_problem(
        app.anonymous(Method::POST, &b.slug, "/v1/plugin-installations")
            .bearer_auth(&boss_b)
            .json(&json!({"plugin": "hostile"}))
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
    assert_eq!(
        upload(&app, &b.slug, &boss_b, &dist("ticket"), &manifest("ticket"))
            .await
            .status(),
        201
    );
    install(
        &app,
        &b.slug,
        &boss_b,
        json!({"plugin": "ticket", "grants": {"logging": true, "kv": true, "events": true}}),
    )
    .await;

    let create = |mode: &str| {
        let body = json!({"data": {"mode": mode, "url": format!("http://{hole}/slow")}});
        app.anonymous(Method::POST, &a.slug, "/v1/resources/hostile")
            .bearer_auth(&boss_a)
            .json(&body)
            .send()
    };
    // Tenant B keeps writing while tenant A's plugin misbehaves.
    let b_writes = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, url, slug, token) = (
            reqwest::Client::new(),
            app.url("/v1/resources/ticket"),
            b.slug.clone(),
            boss_b.clone(),
        );
        let (count, stop) = (b_writes.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let res = client
                    .post(&url)
                    .header("x-tenant", &slug)
                    .bearer_auth(&token)
                    .json(&json!({"data": {"title": "steady"}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201, "tenant B unaffected");
                count.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // Each failure is an error for that call only (424, naming what happened); a success
    // in between resets the breaker.
    for (mode, what) in [
        ("loop", "CPU"),
        ("alloc", "memory"),
        ("ok", ""),
        ("recurse", "stack"),
        ("trap", "trapped"),
    ] {
        let res = create(mode).await.unwrap();
        if mode == "ok" {
            assert_eq!(res.status(), 201);
            continue;
        }
        let p = expect_problem(res, 424, "plugin-failed").await;
        assert!(p["detail"].as_str().unwrap().contains(what), "{mode}: {p}");
    }
    // The third consecutive failure trips the breaker, which disables the installation.
    let p = expect_problem(create("garbage").await.unwrap(), 424, "plugin-failed").await;
    assert!(p["detail"].as_str().unwrap().contains("garbage"), "{p}");
    let inst = app
        .anonymous(Method::GET, &a.slug, "/v1/plugin-installations/hostile")
        .bearer_auth(&boss_a)
        .fetch_json()
        .await;
    assert_eq!(inst["enabled"], false);
    assert!(
        inst["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("circuit breaker"),
        "{inst}"
    );
    let p = expect_problem(create("ok").await.unwrap(), 424, "plugin-failed").await;
    assert!(p["detail"].as_str().unwrap().contains("disabled"), "{p}");
    assert!(
        audit_actions(&app, &a)
            .await
            .contains(&"plugin.disabled".to_string())
    );

    // Enabled again and failing open: writes go through unchanged, failures are recorded.
    let res = app
        .anonymous(
            Method::POST,
            &a.slug,
            "/v1/plugin-installations/hostile/enable",
        )
        .bearer_auth(&boss_a)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .anonymous(Method::PATCH, &a.slug, "/v1/plugin-installations/hostile")
        .bearer_auth(&boss_a)
        .json(&json!({"failure_modes": {"validate": "open"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for mode in ["huge", "off-schema", "slow"] {
        let started = Instant::now();
        let res = create(mode).await.unwrap();
        assert_eq!(res.status(), 201, "{mode} fails open");
        let r: Value = res.json().await.unwrap();
        assert_eq!(r["data"]["mode"], mode, "stored as sent");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let failures = app
        .anonymous(
            Method::GET,
            &a.slug,
            "/v1/plugin-installations/hostile/failures",
        )
        .bearer_auth(&boss_a)
        .fetch_json()
        .await;
    let codes: Vec<&str> = failures
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    for c in ["cpu", "memory", "stack", "trap", "output", "timeout"] {
        assert!(codes.contains(&c), "{c} in {codes:?}");
    }
    assert_eq!(failures[0]["fail_open"], true);
    assert_eq!(failures[0]["code"], "timeout");

    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert!(b_writes.load(Ordering::Relaxed) > 0);
    hole_task.abort();
    app.cleanup().await;
}

/// A loopback HTTP receiver answering 500 to the first `fail_first` requests and whenever
/// `failing` is set, 200 otherwise; it keeps the bodies of the requests it accepted.
struct Receiver {
    addr: String,
    bodies: Arc<std::sync::Mutex<Vec<Value>>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
    hits: Arc<AtomicUsize>,
}

async fn receiver(fail_first: usize) -> Receiver {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let (b, f, h) = (bodies.clone(), failing.clone(), hits.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (b, f, h) = (b.clone(), f.clone(), h.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break buf[end + 4..end + 4 + len].to_vec();
                    }
                };
                let n = h.fetch_add(1, Ordering::SeqCst);
                let ok = n >= fail_first && !f.load(Ordering::SeqCst);
                if ok {
                    b.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                }
                let status = if ok {
                    "200 OK"
                } else {
                    "500 Internal Server Error"
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    Receiver {
        addr,
        bodies,
        failing,
        hits,
    }
}

async fn wait_until<F: FnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_integration_receives_events_at_least_once_with_retries_and_dead_letters() {
    let app = TestApp::start().await;
    let (t, _, boss, _) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let rx = receiver(2).await;
    assert_eq!(
        upload(&app, &t.slug, &boss, &dist("webhook"), &manifest("webhook"))
            .await
            .status(),
        201
    );
    // Wildcards are not grants; subscriptions must be among the manifest's.
    let p = expect_problem(
        as_boss(Method::POST, "/v1/plugin-installations")
            .json(
                &json!({"plugin": "webhook", "grants": {"http": ["*"]}, "events": ["audit.read"]}),
            )
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    let pointers: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/grants/http/0", "/events/0"]);
    // Inside addresses cannot be granted (the tests' operator allows only 127.0.0.1).
    let p = expect_problem(
        as_boss(Method::POST, "/v1/plugin-installations")
            .json(&json!({"plugin": "webhook",
                          "grants": {"http": ["169.254.169.254", "10.0.0.1:6379", "localhost:80"]},
                          "events": ["resource.created"]}))
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    let pointers: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        ["/grants/http/0", "/grants/http/1", "/grants/http/2"],
        "{p}"
    );
    let inst = install(
        &app,
        &t.slug,
        &boss,
        json!({
            "plugin": "webhook",
            "grants": {"logging": true, "kv": true, "http": [rx.addr]},
            "settings": {"url": format!("http://{}/hook", rx.addr)},
            "events": ["resource.created"]
        }),
    )
    .await;
    assert_eq!(inst["events"], json!(["resource.created"]));
    assert_eq!(inst["delivery"]["attempts"], 0);

    let ty = json!({"name": "lead", "title": "Lead", "schema": {"type": "object", "properties": {"name": {"type": "string"}}}});
    assert_eq!(
        as_boss(Method::POST, "/v1/resource-types")
            .json(&ty)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let r: Value = as_boss(Method::POST, "/v1/resources/lead")
        .json(&json!({"data": {"name": "Ada"}}))
        .fetch_json()
        .await;
    let id = r["id"].as_str().unwrap().to_string();
    // Two 500s, then delivered (retries wait 100 ms, then 200 ms).
    wait_until("the first delivery", || {
        !rx.bodies.lock().unwrap().is_empty()
    })
    .await;
    let first = rx.bodies.lock().unwrap()[0].clone();
    assert_eq!(first["kind"], "resource.created");
    assert_eq!(first["subject"], format!("lead/{id}"));
    assert!(rx.hits.load(Ordering::SeqCst) >= 3);
    // Only subscribed kinds arrive: the type definition and updates did not.
    assert!(
        rx.bodies
            .lock()
            .unwrap()
            .iter()
            .all(|b| b["kind"] == "resource.created")
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let delivered = loop {
        match kv_value(&app, &t, "webhook", "delivered").await {
            Some(v) => break v,
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            None => panic!("the delivery count never reached key-value"),
        }
    };
    assert_eq!(delivered, "1");

    // A receiver that keeps failing: after every attempt the event becomes a dead letter and
    // delivery goes on with the next one.
    rx.failing.store(true, Ordering::SeqCst);
    let r2: Value = as_boss(Method::POST, "/v1/resources/lead")
        .json(&json!({"data": {"name": "Bob"}}))
        .fetch_json()
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let d = as_boss(Method::GET, "/v1/plugin-installations/webhook/dead-letters")
            .fetch_json()
            .await;
        if d.as_array().is_some_and(|d| !d.is_empty()) || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead[0]["topic"], "resource.created", "{dead}");
    assert_eq!(
        dead[0]["subject"],
        format!("lead/{}", r2["id"].as_str().unwrap())
    );
    assert_eq!(dead[0]["attempts"], 4);
    rx.failing.store(false, Ordering::SeqCst);
    let r3: Value = as_boss(Method::POST, "/v1/resources/lead")
        .json(&json!({"data": {"name": "Cy"}}))
        .fetch_json()
        .await;
    let want = format!("lead/{}", r3["id"].as_str().unwrap());
    wait_until("delivery after a dead letter", || {
        rx.bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| b["subject"] == want)
    })
    .await;
    let inst = as_boss(Method::GET, "/v1/plugin-installations/webhook")
        .fetch_json()
        .await;
    assert_eq!(inst["delivery"]["attempts"], 0);

    // Disabled: nothing is delivered; enabled again, the backlog arrives.
    as_boss(Method::POST, "/v1/plugin-installations/webhook/disable")
        .send()
        .await
        .unwrap();
    let r4: Value = as_boss(Method::POST, "/v1/resources/lead")
        .json(&json!({"data": {"name": "Di"}}))
        .fetch_json()
        .await;
    let want = format!("lead/{}", r4["id"].as_str().unwrap());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !rx.bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| b["subject"] == want)
    );
    as_boss(Method::POST, "/v1/plugin-installations/webhook/enable")
        .send()
        .await
        .unwrap();
    wait_until("the backlog after enabling", || {
        rx.bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| b["subject"] == want)
    })
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_python_component_is_an_integration_like_any_other() {
    let app = TestApp::start().await;
    let (t, _, boss, _) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let rx = receiver(0).await;
    // componentize-py imports every interface of the world, so its manifest asks for all;
    // the tenant grants only what it wants (the rest answer errors to the plugin).
    let res = upload(
        &app,
        &t.slug,
        &boss,
        &dist("py_webhook"),
        &manifest("py_webhook"),
    )
    .await;
    assert_eq!(res.status(), 201);
    install(
        &app,
        &t.slug,
        &boss,
        json!({
            "plugin": "py_webhook",
            "grants": {"kv": true, "http": [rx.addr]},
            "settings": {"url": format!("http://{}/hook", rx.addr)},
            "events": ["resource.created"]
        }),
    )
    .await;
    let ty = json!({"name": "lead", "title": "Lead", "schema": {"type": "object"}});
    assert_eq!(
        as_boss(Method::POST, "/v1/resource-types")
            .json(&ty)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let r: Value = as_boss(Method::POST, "/v1/resources/lead")
        .json(&json!({"data": {"n": 1}}))
        .fetch_json()
        .await;
    let want = format!("lead/{}", r["id"].as_str().unwrap());
    wait_until("the Python plugin's delivery", || {
        rx.bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| b["subject"] == want && b["via"] == "python")
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while kv_value(&app, &t, "py_webhook", "delivered")
        .await
        .as_deref()
        != Some("1")
    {
        assert!(
            Instant::now() < deadline,
            "the Python plugin's key-value write"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.cleanup().await;
}

/// A multipart body whose parts carry the given `Content-Disposition` parameters (after
/// `form-data; `) and data.
fn multipart_with(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "neotenant-boundary-quoted";
    let mut body = Vec::new();
    for (params, data) in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; {params}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary=\"{boundary}\""),
        body,
    )
}

#[tokio::test]
async fn upload_parts_are_named_by_their_quoted_parameters() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let send = |(ct, body): (String, Vec<u8>)| {
        app.anonymous(Method::POST, &t.slug, "/v1/plugins")
            .bearer_auth(&boss)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let ticket = dist("ticket");
    let m = serde_json::to_vec(&manifest("ticket")).unwrap();

    // A quoted filename holding `;` (and, in the second upload, what looks like another
    // `name` parameter) is one value: the parts are still `component` and `manifest`.
    let res = send(multipart_with(&[
        (r#"name="manifest""#, &m),
        (r#"name="component"; filename="a;b.wasm""#, &ticket),
    ]))
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let plugin: Value = res.json().await.unwrap();
    assert_eq!(
        plugin["versions"][0]["hash"],
        neotenant_runtime::content_hash(&ticket)
    );
    let res = send(multipart_with(&[
        (
            r#"filename="x;name=manifest.wasm"; name="component""#,
            &ticket,
        ),
        (r#"name="manifest"; filename="plugin.json""#, &m),
    ]))
    .await
    .unwrap();
    assert_eq!(res.status(), 200, "the same bytes again");

    // Duplicate, unknown and missing parts, and a component sent as a text part.
    for parts in [
        vec![
            (r#"name="manifest""#, &m[..]),
            (r#"name="component"; filename="a.wasm""#, &ticket[..]),
            (r#"name="component"; filename="b.wasm""#, &ticket[..]),
        ],
        vec![
            (r#"name="manifest""#, &m[..]),
            (r#"name="component"; filename="a.wasm""#, &ticket[..]),
            (r#"name="readme""#, &b"hi"[..]),
        ],
        vec![(r#"name="manifest""#, &m[..])],
        vec![
            (r#"name="manifest""#, &m[..]),
            (r#"name="component""#, &ticket[..]),
        ],
    ] {
        expect_problem(
            send(multipart_with(&parts)).await.unwrap(),
            400,
            "malformed-multipart",
        )
        .await;
    }
    // A body that is not multipart framing at all.
    expect_problem(
        send((
            "multipart/form-data; boundary=XX".into(),
            b"no parts here".to_vec(),
        ))
        .await
        .unwrap(),
        400,
        "malformed-multipart",
    )
    .await;
    app.cleanup().await;
}
