//! Rate limits per user and per IP, and lockouts after repeated authentication failures.

use neotenant_tests::{TestApp, expect_problem, random_slug, test_config};
use reqwest::Method;

#[tokio::test]
async fn users_over_their_budget_get_429_with_retry_after() {
    let mut config = test_config();
    config.rate_limit.per_user_per_sec = 0.5;
    config.rate_limit.per_user_burst = 3;
    config.rate_limit.namespace = random_slug("rl");
    let app = TestApp::start_with(config).await;
    let a = app.with_tenant("us", "schema").await;
    let b = app.with_tenant("us", "schema").await;
    // The first request validates the token; from then on the user's bucket applies.
    assert_eq!(
        app.tenant_req(Method::GET, &a.slug, "/v1/notes")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let res = app
            .tenant_req(Method::GET, &a.slug, "/v1/notes")
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        if res.status() == 429 {
            limited = Some(res);
            break;
        }
        assert!(
            res.headers().contains_key("ratelimit-remaining"),
            "RateLimit headers on success"
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "the burst, then no more: {statuses:?}"
    );
    let res = limited.expect("the fourth request is limited");
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    assert_eq!(res.headers()["ratelimit-remaining"], "0");
    expect_problem(res, 429, "rate-limited").await;
    // Another user is not affected.
    assert_eq!(
        app.tenant_req(Method::GET, &b.slug, "/v1/notes")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    app.cleanup().await;
}

#[tokio::test]
async fn repeated_bad_tokens_lock_the_client_out() {
    let mut config = test_config();
    config.rate_limit.max_auth_failures = 3;
    config.rate_limit.lockout_secs = 60;
    config.rate_limit.namespace = random_slug("rl");
    let app = TestApp::start_with(config).await;
    let t = app.with_tenant("eu", "schema").await;
    let from = |ip: &str, token: &str| {
        app.anonymous(Method::GET, &t.slug, "/v1/notes")
            .header("x-forwarded-for", ip)
            .bearer_auth(token)
            .send()
    };
    for _ in 0..3 {
        expect_problem(
            from("203.0.113.7", "forged.token.value").await.unwrap(),
            401,
            "token-malformed",
        )
        .await;
    }
    // Locked: even a valid token from that address is refused for now.
    let res = from("203.0.113.7", &t.token).await.unwrap();
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((50..=60).contains(&retry), "retry-after {retry}");
    expect_problem(res, 429, "auth-locked").await;
    // Another address is not.
    assert_eq!(from("203.0.113.8", &t.token).await.unwrap().status(), 200);
    // The lockout is recorded in the tenant's audit log, once.
    neotenant_tests::await_audit(&app, &t, "auth.locked_out", 1).await;
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
        metrics.contains("neotenant_auth_lockouts_total 1"),
        "the lockout is recorded"
    );
    app.cleanup().await;
}
