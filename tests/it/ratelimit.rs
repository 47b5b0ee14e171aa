//! Rate limits per user and per IP, and lockouts after repeated authentication failures.

use neotenant::ratelimit::Attempt;
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
async fn repeated_bad_tokens_lock_that_token_out_and_spraying_the_address() {
    let mut config = test_config();
    config.rate_limit.max_auth_failures = 3;
    config.rate_limit.max_auth_failures_per_ip = 6;
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
    // That token is locked out at that address...
    let res = from("203.0.113.7", "forged.token.value").await.unwrap();
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((50..=60).contains(&retry), "retry-after {retry}");
    expect_problem(res, 429, "auth-locked").await;
    // ...but another user behind the same address is not.
    assert_eq!(from("203.0.113.7", &t.token).await.unwrap().status(), 200);

    // Spraying different bad tokens from one address locks the address: then even a valid
    // token from it is refused for now.
    for n in 0..3 {
        expect_problem(
            from("203.0.113.7", &format!("forged.token.v{n}"))
                .await
                .unwrap(),
            401,
            "token-malformed",
        )
        .await;
    }
    let res = from("203.0.113.7", &t.token).await.unwrap();
    expect_problem(res, 429, "auth-locked").await;
    // Another address is not.
    assert_eq!(from("203.0.113.8", &t.token).await.unwrap().status(), 200);
    // Each lockout is recorded in the tenant's audit log, once.
    neotenant_tests::await_audit(&app, &t, "auth.locked_out", 2).await;
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
        metrics.contains("neotenant_auth_lockouts_total 2"),
        "the lockouts are recorded"
    );
    app.cleanup().await;
}

/// A limiter on the devstack's Redis, in a namespace of its own, allowing `per_sec` per IP
/// with `burst`.
async fn limiter(per_sec: f64, burst: u32) -> neotenant::ratelimit::RateLimiter {
    limiter_with(neotenant::config::RateLimitConfig {
        per_ip_per_sec: per_sec,
        per_ip_burst: burst,
        namespace: random_slug("rl"),
        ..Default::default()
    })
    .await
}

/// A limiter on the devstack's Redis with these settings (an instance of its own: limiters
/// sharing a namespace act as instances sharing the buckets).
async fn limiter_with(
    config: neotenant::config::RateLimitConfig,
) -> neotenant::ratelimit::RateLimiter {
    let client = redis::Client::open(test_config().redis.url.expose()).unwrap();
    let conn = neotenant::redis_link::Link::new(
        redis::aio::ConnectionManager::new(client).await.unwrap(),
        None,
    );
    neotenant::ratelimit::RateLimiter::new(
        config,
        conn,
        prometheus::IntCounter::new("lockouts", "lockouts").unwrap(),
        prometheus::IntCounter::new("redis_errors", "redis errors").unwrap(),
    )
}

fn allowed(d: &neotenant::ratelimit::Decision) -> bool {
    matches!(d, neotenant::ratelimit::Decision::Allowed { .. })
}

#[tokio::test]
async fn rates_above_a_thousand_per_second_hold_exactly() {
    // 1,000,000/s with a burst of 10: a token a microsecond, faster than one client in
    // sequence can ask (a check that leaves the process takes tens of microseconds), so every
    // check passes; a limiter that floored its interval at a millisecond would let about
    // 10 + 1,000 × elapsed through.
    let fast = limiter(1_000_000.0, 10).await;
    let ip: std::net::IpAddr = "10.30.0.1".parse().unwrap();
    let n = 2_000;
    let start = std::time::Instant::now();
    let mut passed = 0;
    for _ in 0..n {
        if allowed(&fast.check(ip, None).await) {
            passed += 1;
        }
    }
    let floored = 10.0 + 1_000.0 * start.elapsed().as_secs_f64();
    assert_eq!(
        passed, n,
        "{passed} of {n} passed (a millisecond floor would pass about {floored:.0})"
    );

    // 30,000/s, many checks at once: never more than the budget of the time they took.
    let rl = limiter(30_000.0, 10).await;
    let ip: std::net::IpAddr = "10.30.0.2".parse().unwrap();
    let start = std::time::Instant::now();
    let decisions = futures::future::join_all((0..n).map(|_| rl.check(ip, None))).await;
    let budget = 10.0 + 30_000.0 * start.elapsed().as_secs_f64();
    let passed = decisions.iter().filter(|d| allowed(d)).count();
    assert!(
        passed as f64 <= budget + 1.0,
        "{passed} of {n} passed, over a budget of {budget:.0}"
    );
}

#[tokio::test]
async fn a_slow_rate_still_refuses_after_its_burst() {
    let rl = limiter(0.5, 2).await;
    let ip: std::net::IpAddr = "10.30.0.3".parse().unwrap();
    let first: Vec<bool> = futures::future::join_all((0..4).map(|_| rl.check(ip, None)))
        .await
        .iter()
        .map(allowed)
        .collect();
    assert_eq!(first.iter().filter(|a| **a).count(), 2, "{first:?}");
    match rl.check(ip, None).await {
        neotenant::ratelimit::Decision::Limited {
            retry_after_secs, ..
        } => assert!((1..=2).contains(&retry_after_secs), "{retry_after_secs}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn leases_on_two_instances_never_exceed_the_shared_budget() {
    // 10,000/s with a burst of 1,000: each instance takes leases of up to 250 requests. The
    // leases live a second (not the default 50 ms) so that a machine busy with other tests
    // does not let them lapse unspent: a lapsed lease refuses early by design, which would
    // make the burst's lower bound below a matter of scheduling, not of the limiter.
    let config = neotenant::config::RateLimitConfig {
        per_ip_per_sec: 10_000.0,
        per_ip_burst: 1_000,
        namespace: random_slug("rl"),
        lease_ms: 1_000,
        ..Default::default()
    };
    let a = limiter_with(config.clone()).await;
    let b = limiter_with(config).await;
    let ip: std::net::IpAddr = "10.30.0.4".parse().unwrap();
    let n = 3_000;
    let start = std::time::Instant::now();
    let (on_a, on_b) = futures::future::join(
        futures::future::join_all((0..n).map(|_| a.check(ip, None))),
        futures::future::join_all((0..n).map(|_| b.check(ip, None))),
    )
    .await;
    let budget = 1_000.0 + 10_000.0 * start.elapsed().as_secs_f64();
    let passed = on_a.iter().chain(&on_b).filter(|d| allowed(d)).count();
    assert!(
        passed as f64 <= budget + 1.0,
        "{passed} of {} passed, over a budget of {budget:.0}",
        2 * n
    );
    assert!(passed >= 1_000, "the burst is served: {passed}");

    // In sequence, below the rate, every request passes although most never ask Redis.
    let ip: std::net::IpAddr = "10.30.0.5".parse().unwrap();
    for i in 0..600 {
        let d = if i % 2 == 0 { &a } else { &b }.check(ip, None).await;
        assert!(allowed(&d), "request {i}: {d:?}");
    }
}

#[tokio::test]
async fn a_lockout_ends_the_addresses_leases_at_once() {
    let config = neotenant::config::RateLimitConfig {
        per_ip_per_sec: 10_000.0,
        per_ip_burst: 10_000,
        max_auth_failures: 2,
        max_auth_failures_per_ip: 2,
        namespace: random_slug("rl"),
        lease_ms: 1_000,
        ..Default::default()
    };
    let rl = limiter_with(config).await;
    let ip: std::net::IpAddr = "10.30.0.6".parse().unwrap();
    // The first check takes a lease of 1,024 requests for the address.
    assert!(allowed(&rl.check(ip, None).await));
    assert!(allowed(&rl.check(ip, None).await));
    assert!(!rl.record_failure(ip, Attempt::Credential("a")).await);
    assert!(
        rl.record_failure(ip, Attempt::Credential("b")).await,
        "the second failure locks"
    );
    match rl.check(ip, None).await {
        neotenant::ratelimit::Decision::Locked { retry_after_secs } => {
            assert!(retry_after_secs >= 1)
        }
        other => panic!("a leased request outlived the lockout: {other:?}"),
    }
}

#[tokio::test]
async fn lockouts_are_per_credential_per_account_and_per_spraying_address() {
    let rl = limiter_with(neotenant::config::RateLimitConfig {
        max_auth_failures: 2,
        max_auth_failures_per_ip: 5,
        namespace: random_slug("rl"),
        ..Default::default()
    })
    .await;
    let locked = |d: &neotenant::ratelimit::Decision| {
        matches!(d, neotenant::ratelimit::Decision::Locked { .. })
    };
    let nat: std::net::IpAddr = "10.40.0.1".parse().unwrap();
    // One credential failing twice locks it at that address only.
    let bad = Attempt::Credential("bad-token");
    assert!(!rl.record_failure(nat, bad).await);
    assert!(rl.record_failure(nat, bad).await);
    assert!(locked(&rl.check_attempt(nat, bad).await));
    let elsewhere: std::net::IpAddr = "10.40.0.2".parse().unwrap();
    assert!(allowed(&rl.check_attempt(elsewhere, bad).await));
    assert!(allowed(
        &rl.check_attempt(nat, Attempt::Credential("good-token"))
            .await
    ));
    assert!(allowed(&rl.check(nat, None).await));

    // An account failing twice is locked from every address (its password is not guessed
    // from many), while other accounts at those addresses are not.
    let alice = Attempt::Account("alice");
    assert!(!rl.record_failure(nat, alice).await);
    assert!(rl.record_failure(elsewhere, alice).await);
    let third: std::net::IpAddr = "10.40.0.3".parse().unwrap();
    assert!(locked(&rl.check_attempt(third, alice).await));
    assert!(allowed(
        &rl.check_attempt(third, Attempt::Account("bob")).await
    ));

    // Spraying: five failures from one address naming different credentials lock it.
    let sprayer: std::net::IpAddr = "10.40.0.9".parse().unwrap();
    let mut locks = Vec::new();
    for n in 0..5 {
        let who = format!("guess-{n}");
        locks.push(rl.record_failure(sprayer, Attempt::Credential(&who)).await);
    }
    assert_eq!(locks, [false, false, false, false, true]);
    assert!(locked(&rl.check(sprayer, None).await));
    assert!(locked(
        &rl.check_attempt(sprayer, Attempt::Credential("fresh"))
            .await
    ));
}
