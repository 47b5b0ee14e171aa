//! The event feed: CloudEvents pages in commit order with type filters and resumable cursors,
//! the SSE stream resuming after Last-Event-ID, permissions, bad cursors and filters, and
//! tenant isolation.

use std::time::{Duration, Instant};

use futures::StreamExt;
use neotenant_tests::{Fetch, TestApp, TestTenant, expect_problem, tenant_with_admin};
use reqwest::Method;
use serde_json::{Value, json};

fn call(
    app: &TestApp,
    t: &TestTenant,
    token: &str,
    method: Method,
    path: &str,
) -> reqwest::RequestBuilder {
    app.anonymous(method, &t.slug, path).bearer_auth(token)
}

async fn make_type(app: &TestApp, t: &TestTenant, token: &str, name: &str) {
    let res = call(app, t, token, Method::POST, "/v1/resource-types")
        .json(&json!({"name": name, "title": name, "schema": {"type": "object"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

/// Waits until the feed from `after` (with `types`) holds `n` items; returns the page.
async fn feed(app: &TestApp, t: &TestTenant, token: &str, query: &str, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = call(app, t, token, Method::GET, &format!("/v1/events?{query}"))
            .fetch_json()
            .await;
        if page["items"].as_array().is_some_and(|i| i.len() >= n) {
            return page;
        }
        assert!(Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_feed_pages_filters_and_resumes_in_commit_order() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    for name in ["one", "two", "three"] {
        make_type(&app, &t, &boss, name).await;
    }
    let page = feed(&app, &t, &boss, "types=resource_type.*", 3).await;
    let items = page["items"].as_array().unwrap();
    let subjects: Vec<&str> = items
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        [
            "resource_type/one",
            "resource_type/two",
            "resource_type/three"
        ]
    );
    let e = &items[0];
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["type"], "resource_type.created");
    assert_eq!(e["source"], format!("/tenants/{}", t.slug));
    assert_eq!(e["datacontenttype"], "application/json");
    assert!(e["id"].as_str().unwrap().starts_with("evt_"));
    assert!(e["time"].as_str().is_some());
    // Paging with a limit of one, then resuming from each cursor, gives the same order.
    let mut after = String::new();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let p = call(
            &app,
            &t,
            &boss,
            Method::GET,
            &format!("/v1/events?types=resource_type.created&limit=1&after={after}"),
        )
        .fetch_json()
        .await;
        seen.push(p["items"][0]["subject"].as_str().unwrap().to_string());
        after = p["next_cursor"].as_str().unwrap().to_string();
    }
    assert_eq!(seen, subjects);
    let rest = call(
        &app,
        &t,
        &boss,
        Method::GET,
        &format!("/v1/events?types=resource_type.created&after={after}"),
    )
    .fetch_json()
    .await;
    assert_eq!(rest["items"], json!([]));
    assert_eq!(rest["has_more"], false);
    // A filter that matches nothing still moves the cursor on.
    let none = call(
        &app,
        &t,
        &boss,
        Method::GET,
        "/v1/events?types=flag.changed",
    )
    .fetch_json()
    .await;
    assert_eq!(none["items"], json!([]));
    assert_ne!(none["next_cursor"], "evt_0_0");

    // Bad input is a clear 400; a member without events.read gets 403.
    for q in [
        "after=12",
        "after=evt_x_1",
        "types=nothing.real",
        "limit=0",
        "limit=5000",
    ] {
        let res = call(&app, &t, &boss, Method::GET, &format!("/v1/events?{q}"))
            .send()
            .await
            .unwrap();
        expect_problem(res, 400, "invalid-parameter").await;
    }
    let res = call(&app, &t, &t.token, Method::GET, "/v1/events")
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;
    let res = call(&app, &t, &t.token, Method::GET, "/v1/events/stream")
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;

    // Another tenant's feed holds none of these.
    let (u, _, boss_u, _) = tenant_with_admin(&app).await;
    let other = call(
        &app,
        &u,
        &boss_u,
        Method::GET,
        "/v1/events?types=resource_type.*",
    )
    .fetch_json()
    .await;
    assert_eq!(other["items"], json!([]));
    app.cleanup().await;
}

#[tokio::test]
async fn the_stream_sends_new_events_and_resumes_after_the_last_one_seen() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    make_type(&app, &t, &boss, "before").await;
    let first = feed(&app, &t, &boss, "types=resource_type.*", 1).await;
    let first_id = first["items"][0]["id"].as_str().unwrap().to_string();

    // Resuming after the first event: the stream sends what came after it, and only that.
    let res = call(
        &app,
        &t,
        &boss,
        Method::GET,
        "/v1/events/stream?types=resource_type.*",
    )
    .header("last-event-id", &first_id)
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.bytes_stream();
    make_type(&app, &t, &boss, "after").await;
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("resource_type/after") {
        let chunk = tokio::time::timeout_at(deadline.into(), body.next())
            .await
            .expect("the stream sends the new event in time")
            .expect("open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: resource_type.created"), "{text}");
    assert!(!text.contains("resource_type/before"), "{text}");
    let frame = text
        .split("\n\n")
        .find(|f| f.contains("resource_type/after"))
        .unwrap();
    let data: Value = serde_json::from_str(
        frame
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(data["specversion"], "1.0");
    let id_line = frame.lines().find_map(|l| l.strip_prefix("id: ")).unwrap();
    assert_eq!(id_line, data["id"]);
    let res = call(&app, &t, &boss, Method::GET, "/v1/events/stream")
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-parameter").await;
    app.cleanup().await;
}
