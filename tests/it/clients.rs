//! Machine clients' own policies and dated API versions: an API key's own rate-limit bucket
//! (not its owner's), a quota of credits refused with 429 `quota-exceeded` and resumed from
//! its snapshot when Redis forgets the count, usage per day, the IETF `RateLimit` headers,
//! pinned versions, the `NeoTenant-Version` header (echoed, unknown ones refused) and the one
//! change between versions.

use std::time::Duration;

use neotenant::ids::TenantId;
use neotenant_tests::{Fetch, TestApp, expect_problem, tenant_with_admin};
use reqwest::Method;
use serde_json::{Value, json};

async fn make_key(app: &TestApp, slug: &str, token: &str, body: Value) -> (String, Value) {
    let res = app
        .anonymous(Method::POST, slug, "/v1/api-keys")
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let created: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{created}");
    (created["secret"].as_str().unwrap().to_string(), created)
}

/// The bucket name of a key (`apikey:<hex>`), as the server keys its counters.
fn client_of(key: &Value) -> String {
    let id = key["id"].as_str().unwrap();
    format!("apikey:{}", id.strip_prefix("key_").unwrap())
}

#[tokio::test]
async fn a_key_has_its_own_bucket_quota_and_usage() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let get = |token: &str| {
        app.anonymous(Method::GET, &t.slug, "/v1/me")
            .bearer_auth(token.to_string())
    };

    // Bad policies are 422s naming the field.
    for (body, pointer) in [
        (
            json!({"rate_limit": {"per_sec": 5000000.0, "burst": 1}}),
            "/rate_limit/per_sec",
        ),
        (
            json!({"rate_limit": {"per_sec": 1.0, "burst": 0}}),
            "/rate_limit/burst",
        ),
        (json!({"quota": {"credits": -1}}), "/quota/credits"),
        (
            json!({"quota": {"credits": 5, "refill": {"amount": 5, "interval_secs": 5}}}),
            "/quota/refill/interval_secs",
        ),
        (json!({"api_version": "2020-01-01"}), "/api_version"),
    ] {
        let mut body = body;
        body["name"] = json!("bad");
        body["scopes"] = json!(["users.read.own"]);
        let problem = expect_problem(
            app.anonymous(Method::POST, &t.slug, "/v1/api-keys")
                .bearer_auth(&boss)
                .json(&body)
                .send()
                .await
                .unwrap(),
            422,
            "validation",
        )
        .await;
        assert!(problem.to_string().contains(pointer), "{problem}");
    }

    // Its own bucket: a slow key is refused while its owner, at the same time, is not.
    let (slow, slow_view) = make_key(
        &app,
        &t.slug,
        &boss,
        json!({"name": "slow", "scopes": ["users.read.own"], "rate_limit": {"per_sec": 0.2, "burst": 2}}),
    )
    .await;
    assert_eq!(slow_view["rate_limit"], json!({"per_sec": 0.2, "burst": 2}));
    let mut limited = None;
    for _ in 0..6 {
        let res = get(&slow).send().await.unwrap();
        if res.status() == 429 {
            limited = Some(res);
            break;
        }
        assert_eq!(res.status(), 200);
        let policy = res.headers()["ratelimit-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(policy.contains("\"burst\";q="), "{policy}");
    }
    let limited = limited.expect("the key's own bucket refuses");
    assert!(limited.headers().contains_key("retry-after"));
    expect_problem(limited, 429, "rate-limited").await;
    assert_eq!(
        get(&boss).send().await.unwrap().status(),
        200,
        "the owner's bucket is another"
    );

    // Credits: three requests, then 429 quota-exceeded with the headers saying so.
    let (metered, metered_view) = make_key(
        &app,
        &t.slug,
        &boss,
        json!({"name": "metered", "scopes": ["users.read.own"], "quota": {"credits": 3}}),
    )
    .await;
    for left in [2, 1, 0] {
        let res = get(&metered).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let lines: Vec<String> = res
            .headers()
            .get_all("ratelimit")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("\"credits\";r={left};"))),
            "{lines:?}"
        );
    }
    let refused = get(&metered).send().await.unwrap();
    assert_eq!(refused.headers()["ratelimit-remaining"], "0");
    expect_problem(refused, 429, "quota-exceeded").await;

    // The count survives Redis forgetting it: the snapshot written at zero is where it resumes.
    let tenant: Value = app
        .admin(Method::GET, &format!("/admin/v1/tenants/{}", t.slug))
        .fetch_json()
        .await;
    let tenant_id: TenantId = tenant["id"].as_str().unwrap().parse().unwrap();
    let client = client_of(&metered_view);
    let state = app.state();
    tokio::time::sleep(Duration::from_millis(300)).await;
    state.auth.limiter.reset_credits(tenant_id, &client).await;
    state.auth.tokens.evict_client(&client);
    expect_problem(get(&metered).send().await.unwrap(), 429, "quota-exceeded").await;

    // Usage per day: three let through, two refused; credits left 0.
    let key_id = metered_view["id"].as_str().unwrap();
    let usage: Value = app
        .anonymous(
            Method::GET,
            &t.slug,
            &format!("/v1/api-keys/{key_id}/usage?days=3"),
        )
        .bearer_auth(&boss)
        .fetch_json()
        .await;
    let days = usage["days"].as_array().unwrap();
    assert_eq!(days.len(), 3, "{usage}");
    assert_eq!(days[2]["requests"], 3, "{usage}");
    assert_eq!(days[2]["refused"], 2, "{usage}");
    assert_eq!(usage["credits_left"], 0, "{usage}");
    expect_problem(
        app.anonymous(
            Method::GET,
            &t.slug,
            &format!("/v1/api-keys/{key_id}/usage?days=0"),
        )
        .bearer_auth(&boss)
        .send()
        .await
        .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;

    // A new quota tops the key up at once.
    let res = app
        .anonymous(Method::PATCH, &t.slug, &format!("/v1/api-keys/{key_id}"))
        .bearer_auth(&boss)
        .json(&json!({"quota": {"credits": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(get(&metered).send().await.unwrap().status(), 200);
    assert_eq!(get(&metered).send().await.unwrap().status(), 200);
    assert_eq!(get(&metered).send().await.unwrap().status(), 429);
    // Removing the quota lifts it.
    let res = app
        .anonymous(Method::PATCH, &t.slug, &format!("/v1/api-keys/{key_id}"))
        .bearer_auth(&boss)
        .json(&json!({"quota": null}))
        .send()
        .await
        .unwrap();
    let after: Value = res.json().await.unwrap();
    assert!(after.get("quota").is_none(), "{after}");
    assert_eq!(get(&metered).send().await.unwrap().status(), 200);

    // Another user cannot see or change the key.
    expect_problem(
        app.anonymous(Method::PATCH, &t.slug, &format!("/v1/api-keys/{key_id}"))
            .bearer_auth(&t.token)
            .json(&json!({"quota": null}))
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
}

#[tokio::test]
async fn versions_are_chosen_per_request_or_pinned_per_key_and_echoed() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let versions: Value = app
        .client
        .get(app.url("/v1/api-versions"))
        .fetch_json()
        .await;
    let listed: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["2026-06-01", "2026-12-01"]);

    let res = app
        .anonymous(Method::POST, &t.slug, "/v1/resource-types")
        .bearer_auth(&boss)
        .json(&json!({"name": "thing", "title": "Thing", "schema": {"type": "object"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.headers()["neotenant-version"],
        "2026-06-01",
        "the baseline"
    );
    let make = |token: String| {
        let app = &app;
        let slug = t.slug.clone();
        async move {
            let r: Value = app
                .anonymous(Method::POST, &slug, "/v1/resources/thing")
                .bearer_auth(token)
                .json(&json!({"data": {"a": 1}}))
                .fetch_json()
                .await;
            r["id"].as_str().unwrap().to_string()
        }
    };
    let delete = |token: &str, id: &str, version: Option<&str>| {
        let mut req = app
            .anonymous(
                Method::DELETE,
                &t.slug,
                &format!("/v1/resources/thing/{id}"),
            )
            .bearer_auth(token.to_string());
        if let Some(v) = version {
            req = req.header("neotenant-version", v);
        }
        req.send()
    };

    // A token without the header: the baseline, 204.
    let id = make(boss.clone()).await;
    let res = delete(&boss, &id, None).await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["neotenant-version"], "2026-06-01");
    // With 2026-12-01: 200 and the deleted resource, its ETag the new version.
    let id = make(boss.clone()).await;
    let res = delete(&boss, &id, Some("2026-12-01")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["neotenant-version"], "2026-12-01");
    assert_eq!(res.headers()["etag"], "\"2\"");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["id"], id.as_str());
    assert!(body["deleted_at"].is_string(), "{body}");
    assert_eq!(body["version"], 2);

    // An unknown version is a 400 naming the supported ones, wherever it is sent.
    let problem = expect_problem(
        delete(&boss, &id, Some("2025-13-01")).await.unwrap(),
        400,
        "unknown-api-version",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("2026-12-01"));

    // A new key is pinned to the newest version; one made for the baseline stays on it; the
    // header still wins over the pin.
    let scopes = json!([
        "resources.create.own",
        "resources.delete.own",
        "resources.read.own"
    ]);
    let (newest, view) = make_key(
        &app,
        &t.slug,
        &boss,
        json!({"name": "newest", "scopes": scopes}),
    )
    .await;
    assert_eq!(view["api_version"], "2026-12-01");
    let (old, view) = make_key(
        &app,
        &t.slug,
        &boss,
        json!({"name": "old", "scopes": scopes, "api_version": "2026-06-01"}),
    )
    .await;
    assert_eq!(view["api_version"], "2026-06-01");
    let id = make(newest.clone()).await;
    let res = delete(&newest, &id, None).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["neotenant-version"], "2026-12-01");
    let id = make(old.clone()).await;
    let res = delete(&old, &id, None).await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["neotenant-version"], "2026-06-01");
    let id = make(old.clone()).await;
    let res = delete(&old, &id, Some("2026-12-01")).await.unwrap();
    assert_eq!(res.status(), 200, "the header wins over the pin");
    // Re-pinning applies at once.
    let old_id = view["id"].as_str().unwrap();
    let res = app
        .anonymous(Method::PATCH, &t.slug, &format!("/v1/api-keys/{old_id}"))
        .bearer_auth(&boss)
        .json(&json!({"api_version": "2026-12-01"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let id = make(old.clone()).await;
    assert_eq!(delete(&old, &id, None).await.unwrap().status(), 200);
}
