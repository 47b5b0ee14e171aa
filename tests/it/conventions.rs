//! HTTP conventions: every kind of bad input gets a precise problem response.

use neotenant_tests::{Fetch, TestApp, all_pages, expect_problem};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn bad_input_gets_precise_problems() {
    let app = TestApp::start().await;
    let t = app.with_tenant("us", "schema").await;
    let post = |body: &'static str, ct: Option<&'static str>| {
        let mut r = app
            .tenant_req(Method::POST, &t.slug, "/v1/notes")
            .body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };

    expect_problem(
        post("{\"title\": ", Some("application/json"))
            .await
            .unwrap(),
        400,
        "malformed-json",
    )
    .await;
    expect_problem(
        post("", Some("application/json")).await.unwrap(),
        400,
        "malformed-json",
    )
    .await;
    expect_problem(
        post("{\"title\":\"a\"} x", Some("application/json"))
            .await
            .unwrap(),
        400,
        "malformed-json",
    )
    .await;
    expect_problem(
        post("{\"title\":\"a\"}", Some("text/plain")).await.unwrap(),
        415,
        "unsupported-media-type",
    )
    .await;
    expect_problem(
        post("{\"title\":\"a\"}", None).await.unwrap(),
        415,
        "unsupported-media-type",
    )
    .await;

    let body = expect_problem(
        post("{\"title\": 7}", Some("application/json"))
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    assert_eq!(body["errors"][0]["pointer"], "/title");
    let body = expect_problem(
        post(
            "{\"title\": \"a\", \"colour\": 1}",
            Some("application/json"),
        )
        .await
        .unwrap(),
        422,
        "validation",
    )
    .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{body}"
    );

    // Every field error at once.
    let res = app
        .tenant_req(Method::POST, &t.slug, "/v1/notes/batch")
        .json(&json!({"items": [{"title": ""}, {"title": "ok"}, {"title": "x".repeat(201), "external_id": ""}]}))
        .send()
        .await
        .unwrap();
    let body = expect_problem(res, 422, "validation").await;
    let pointers: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        ["/items/0/title", "/items/2/title", "/items/2/external_id"]
    );

    // Oversized bodies: declared length and streamed (chunked) without a length.
    let big = "x".repeat(2 * 1024 * 1024);
    let res = app
        .tenant_req(Method::POST, &t.slug, "/v1/notes")
        .header("content-type", "application/json")
        .body(format!("{{\"title\":\"{big}\"}}"))
        .send()
        .await
        .unwrap();
    expect_problem(res, 413, "payload-too-large").await;
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..40)
        .map(|_| Ok(bytes::Bytes::from(vec![b' '; 64 * 1024])))
        .collect();
    let res = app
        .tenant_req(Method::POST, &t.slug, "/v1/notes")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(tokio_stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    expect_problem(res, 413, "payload-too-large").await;

    // Routing and parameters.
    expect_problem(
        app.client
            .get(app.url("/no/such/route"))
            .send()
            .await
            .unwrap(),
        404,
        "route-not-found",
    )
    .await;
    let res = app
        .tenant_req(Method::PUT, &t.slug, "/v1/notes")
        .send()
        .await
        .unwrap();
    let allow = res
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    expect_problem(res, 405, "method-not-allowed").await;
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "Allow: {allow}"
    );
    expect_problem(
        app.tenant_req(Method::GET, &t.slug, "/v1/notes/not-an-id")
            .send()
            .await
            .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;
    expect_problem(
        app.tenant_req(
            Method::GET,
            &t.slug,
            "/v1/notes/ten_0193a8c5e1f27b3c9d4e5f6a7b8c9d0e",
        )
        .send()
        .await
        .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;
    expect_problem(
        app.tenant_req(
            Method::GET,
            &t.slug,
            "/v1/notes/note_0193a8c5e1f27b3c9d4e5f6a7b8c9d0e",
        )
        .send()
        .await
        .unwrap(),
        404,
        "not-found",
    )
    .await;
    for q in ["limit=0", "limit=201", "limit=abc", "limit=-1"] {
        expect_problem(
            app.tenant_req(Method::GET, &t.slug, &format!("/v1/notes?{q}"))
                .send()
                .await
                .unwrap(),
            400,
            "invalid-parameter",
        )
        .await;
    }
    for c in ["garbage!", "eyJ4IjoxfQ", "AAAA"] {
        expect_problem(
            app.tenant_req(Method::GET, &t.slug, &format!("/v1/notes?cursor={c}"))
                .send()
                .await
                .unwrap(),
            400,
            "invalid-cursor",
        )
        .await;
    }

    // Uniqueness.
    let ok = app
        .tenant_req(Method::POST, &t.slug, "/v1/notes")
        .json(&json!({"title": "a", "external_id": "k"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
    let dup = app
        .tenant_req(Method::POST, &t.slug, "/v1/notes")
        .json(&json!({"title": "b", "external_id": "k"}))
        .send()
        .await
        .unwrap();
    expect_problem(dup, 409, "conflict").await;

    // The server is still healthy after all of that.
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    app.cleanup().await;
}

#[tokio::test]
async fn request_ids_are_echoed_or_created() {
    let app = TestApp::start().await;
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "bad id <script>")
        .send()
        .await
        .unwrap();
    let generated = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(generated, "bad id <script>");
    assert_eq!(generated.len(), 32);
    app.cleanup().await;
}

#[tokio::test]
async fn tenant_resolution_from_host_and_header() {
    let app = TestApp::start().await;
    let a = app.with_tenant("us", "schema").await;
    let b = app.with_tenant("eu", "schema").await;
    let port = app.base.rsplit(':').next().unwrap().to_string();

    let res = app
        .client
        .post(app.url("/v1/notes"))
        .header("host", format!("{}.localhost:{port}", a.slug))
        .bearer_auth(&a.token)
        .json(&json!({"title": "via host"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let listed: serde_json::Value = app
        .tenant_req(Method::GET, &a.slug, "/v1/notes")
        .fetch_json()
        .await;
    assert_eq!(listed["items"][0]["title"], "via host");

    let res = app
        .client
        .get(app.url("/v1/notes"))
        .header("host", format!("{}.localhost:{port}", a.slug))
        .bearer_auth(&a.token)
        .header("x-tenant", &b.slug)
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "tenant-mismatch").await;
    expect_problem(
        app.client.get(app.url("/v1/notes")).send().await.unwrap(),
        400,
        "tenant-required",
    )
    .await;
    expect_problem(
        app.tenant_req(Method::GET, "no-such-tenant", "/v1/notes")
            .send()
            .await
            .unwrap(),
        404,
        "tenant-not-found",
    )
    .await;
    expect_problem(
        app.tenant_req(Method::GET, "Bad Slug!", "/v1/notes")
            .send()
            .await
            .unwrap(),
        404,
        "tenant-not-found",
    )
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn pagination_is_stable_and_complete() {
    let app = TestApp::start().await;
    let t = app.with_tenant("eu", "schema").await;
    let items: Vec<_> = (0..25)
        .map(|i| json!({"title": format!("n{i:02}")}))
        .collect();
    let res = app
        .tenant_req(Method::POST, &t.slug, "/v1/notes/batch")
        .json(&json!({"items": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let seen: Vec<String> = all_pages(7, "/v1/notes?limit=7", |p| {
        app.tenant_req(Method::GET, &t.slug, p)
    })
    .await
    .iter()
    .map(|n| n["title"].as_str().unwrap().to_string())
    .collect();
    let expected: Vec<String> = (0..25).map(|i| format!("n{i:02}")).collect();
    assert_eq!(seen, expected, "every note exactly once, in creation order");
    app.cleanup().await;
}

#[tokio::test]
async fn a_nul_in_any_json_body_is_a_422_naming_the_field() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = neotenant_tests::tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let ok = as_boss(Method::POST, "/v1/resource-types")
        .json(&serde_json::json!({"name": "ticket", "title": "Ticket",
            "schema": {"type": "object", "properties": {"title": {"type": "string"}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
    let team: serde_json::Value = as_boss(Method::POST, "/v1/teams")
        .json(&serde_json::json!({"name": "nul-team"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let team_roles = format!("/v1/teams/{}/roles", team["id"].as_str().unwrap());
    let nul = "a\u{0}b";
    let cases: Vec<(Method, &str, serde_json::Value, &str)> = vec![
        (
            Method::POST,
            "/v1/notes",
            serde_json::json!({"title": nul}),
            "/title",
        ),
        (
            Method::POST,
            "/v1/notes/batch",
            serde_json::json!({"items": [{"title": "fine"}, {"title": nul}]}),
            "/items/1/title",
        ),
        (
            Method::POST,
            "/v1/resource-types",
            serde_json::json!({"name": "other", "title": nul, "schema": {"type": "object"}}),
            "/title",
        ),
        (
            Method::POST,
            "/v1/resources/ticket",
            serde_json::json!({"data": {"title": nul}}),
            "/data/title",
        ),
        (
            Method::POST,
            &team_roles,
            serde_json::json!({"role": nul}),
            "/role",
        ),
        (
            Method::POST,
            "/v1/teams",
            serde_json::json!({"name": nul}),
            "/name",
        ),
        (
            Method::POST,
            "/v1/roles",
            serde_json::json!({"key": "k", "permissions": [nul]}),
            "/permissions/0",
        ),
    ];
    for (method, path, body, pointer) in cases {
        let res = as_boss(method, path).json(&body).send().await.unwrap();
        let problem = neotenant_tests::expect_problem(res, 422, "validation").await;
        assert_eq!(
            problem["errors"][0]["pointer"], pointer,
            "{path}: {problem}"
        );
    }
    // Nothing was written.
    let notes: serde_json::Value = as_boss(Method::GET, "/v1/notes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(notes["items"].as_array().unwrap().len(), 0);
    app.cleanup().await;
}
