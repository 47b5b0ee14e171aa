//! Operational endpoints and process behaviour: health, readiness, metrics, OpenAPI, docs,
//! graceful shutdown.

use std::time::Duration;

use neotenant_tests::{Fetch, TestApp, test_config};
use reqwest::Method;
use serde_json::Value;

#[tokio::test]
async fn health_readiness_metrics_and_docs() {
    let app = TestApp::start().await;
    let t = app.with_tenant("us", "schema").await;
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready: Value = app.client.get(app.url("/readyz")).fetch_json().await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["postgres"], "ok");
    assert_eq!(ready["checks"]["redis"], "ok");

    app.tenant_req(Method::GET, &t.slug, "/v1/notes")
        .send()
        .await
        .unwrap();
    app.client.get(app.url("/nope")).send().await.unwrap();
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    assert!(
        text.contains(
            r#"neotenant_http_requests_total{method="GET",route="v1/notes",status="200"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"route="unmatched",status="404""#),
        "raw paths never become labels"
    );
    assert!(text.contains("neotenant_http_request_duration_seconds_bucket"));
    assert!(
        text.contains(r#"neotenant_db_pool_connections{database="neofast_shared_us"}"#),
        "{text}"
    );
    assert!(!text.contains("neotenant-dev"), "no secrets in metrics");
    // Every cache counts its lookups; statements are timed by kind.
    for family in [
        r#"neotenant_cache_lookups_total{cache="tokens",result="#,
        r#"neotenant_cache_lookups_total{cache="tenants",result="#,
        r#"neotenant_db_query_duration_seconds_bucket{kind="select""#,
        r#"neotenant_db_query_duration_seconds_bucket{kind="begin""#,
    ] {
        assert!(text.contains(family), "{family}\n{text}");
    }

    let doc: Value = app.client.get(app.url("/openapi.json")).fetch_json().await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/notes"]["post"].is_object());
    assert!(doc["paths"]["/admin/v1/tenants/{slug}"]["delete"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());

    let docs = app
        .client
        .get(app.url("/docs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(docs.contains("/openapi.json") && docs.contains("/assets/scalar/standalone.js"));
    app.cleanup().await;
}

#[test]
fn committed_openapi_matches_the_code() {
    let generated = neotenant::http::openapi().to_pretty_json().unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed.trim() == generated.trim(),
        "docs/openapi.json is stale: run `make openapi` and commit the result"
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let app = TestApp::start().await;
    let t = app.with_tenant("eu", "schema").await;
    // A request whose body is still arriving when shutdown begins.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let request = app
        .tenant_req(Method::POST, &t.slug, "/v1/notes")
        .header("content-type", "application/json")
        .body(body)
        .send();
    let in_flight = tokio::spawn(request);
    tx.send(Ok(bytes::Bytes::from_static(b"{\"title\": ")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut app = app;
    let server = app.server.take().unwrap();
    let addr = server.addr;
    let shutdown = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are refused while the old request is still open.
    let fresh = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    assert!(
        fresh.is_err(),
        "a stopping server accepts no new connections"
    );
    tx.send(Ok(bytes::Bytes::from_static(b"\"finished\"}")))
        .await
        .unwrap();
    drop(tx);
    let res = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(res.status(), 201);
    shutdown.await.unwrap();

    // The note was committed; clean up through a fresh server.
    let app2 = TestApp::start_with(test_config()).await;
    app2.use_token(&t.slug, &t.token);
    let page: Value = app2
        .tenant_req(Method::GET, &t.slug, "/v1/notes")
        .fetch_json()
        .await;
    assert_eq!(page["items"][0]["title"], "finished");
    app2.track(&t.slug);
    app2.cleanup().await;
}

#[tokio::test]
async fn without_redis_an_instance_stays_ready_degraded_and_serves() {
    // A Redis of this test's own, so stopping it disturbs no other test.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spawn = || {
        std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed by `make up`")
    };
    let mut redis = spawn();
    let mut config = test_config();
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    config.redis.url = neotenant::config::Secret::new(url);
    let app = TestApp::start_with(config).await;
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let t = app.with_tenant("us", "schema").await;
    let notes = || app.tenant_req(Method::GET, &t.slug, "/v1/notes").send();
    assert_eq!(notes().await.unwrap().status(), 200);

    redis.kill().unwrap();
    redis.wait().unwrap();
    // Readiness depends on PostgreSQL only: Redis gone is reported, not failed.
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let ready: Value = res.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_ne!(ready["checks"]["redis"], "ok", "{ready}");
    assert_eq!(ready["checks"]["postgres"], "ok", "{ready}");
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("neotenant_dependency_up{dependency=\"redis\"} 0"),
        "{metrics}"
    );
    // Requests are still served (limits and caches degrade).
    for _ in 0..3 {
        assert_eq!(notes().await.unwrap().status(), 200);
    }
    // Liveness is unaffected.
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Redis back: ready again.
    let mut redis = spawn();
    let mut status = Value::Null;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ready: Value = app.client.get(app.url("/readyz")).fetch_json().await;
        status = ready["status"].clone();
        if status == "ready" {
            break;
        }
    }
    assert_eq!(status, "ready");
    app.cleanup().await;
    redis.kill().unwrap();
    redis.wait().unwrap();
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() {
    let mut config = test_config();
    config.server.metrics_token = neotenant::config::Secret::new("scrape-me-0123456789");
    let app = TestApp::start_with(config).await;
    for bad in [None, Some("wrong"), Some("scrape-me-012345678")] {
        let mut req = app.client.get(app.url("/metrics"));
        if let Some(token) = bad {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.unwrap();
        assert!(res.headers().contains_key("www-authenticate"));
        neotenant_tests::expect_problem(res, 401, "unauthorized").await;
    }
    let res = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("scrape-me-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("neotenant_http_requests_total")
    );
    app.cleanup().await;
}
