//! OAuth clients: made in Keycloak for the client-credentials grant, their tokens obtained
//! from Keycloak for real and accepted with exactly the client's scopes, acting as the maker;
//! the delegation rule; the secret shown once and rotated; revocation refusing tokens already
//! issued; another tenant refusing them; a client's own quota, rate and pinned version.

use neotenant_tests::{Fetch, TestApp, expect_problem, tenant_with_admin};
use reqwest::Method;
use serde_json::{Value, json};

/// A token from Keycloak for the client, or Keycloak's refusal status.
async fn client_token(
    app: &TestApp,
    endpoint: &str,
    id: &str,
    secret: &str,
) -> Result<String, u16> {
    let res = app
        .client
        .post(endpoint)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    if !res.status().is_success() {
        return Err(res.status().as_u16());
    }
    let body: Value = res.json().await.unwrap();
    Ok(body["access_token"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn client_credentials_tokens_act_as_the_maker_within_the_scopes() {
    let app = TestApp::start().await;
    let (t, _member, boss, boss_id) = tenant_with_admin(&app).await;
    let call = |m: Method, path: &str, token: &str| {
        app.anonymous(m, &t.slug, path)
            .bearer_auth(token.to_string())
    };

    // Bad input and the delegation rule.
    expect_problem(
        call(Method::POST, "/v1/oauth-clients", &boss)
            .json(&json!({"name": "", "scopes": []}))
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    expect_problem(
        call(Method::POST, "/v1/oauth-clients", &t.token)
            .json(&json!({"name": "wider", "scopes": ["events.read.tenant"]}))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;

    let res = call(Method::POST, "/v1/oauth-clients", &boss)
        .json(&json!({"name": "sync job", "scopes": ["events.read.tenant"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let made: Value = res.json().await.unwrap();
    let client_id = made["client_id"].as_str().unwrap().to_string();
    let secret = made["client_secret"].as_str().unwrap().to_string();
    let endpoint = made["token_endpoint"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    assert!(client_id.starts_with(&format!("ntc-{}-", t.slug)), "{made}");
    let listed = call(Method::GET, "/v1/oauth-clients", &boss)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listed.contains(&client_id) && !listed.contains(&secret),
        "shown once"
    );

    // A real client-credentials exchange with Keycloak; the token acts as the maker.
    let token = client_token(&app, &endpoint, &client_id, &secret)
        .await
        .expect("a token");
    let me: Value = call(Method::GET, "/v1/me", &token).fetch_json().await;
    assert_eq!(me["id"], boss_id.as_str());
    let res = call(Method::GET, "/v1/events", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "within its scopes");
    expect_problem(
        call(Method::GET, "/v1/changes", &token)
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    // Not at another tenant.
    let other = app.with_tenant("eu", "schema").await;
    let res = app
        .anonymous(Method::GET, &other.slug, "/v1/me")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // Rotation: the old secret gets no more tokens, the new one does.
    let rotated: Value = call(
        Method::POST,
        &format!("/v1/oauth-clients/{id}/secret/rotate"),
        &boss,
    )
    .fetch_json()
    .await;
    let new_secret = rotated["client_secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    assert!(
        client_token(&app, &endpoint, &client_id, &secret)
            .await
            .is_err()
    );
    let fresh = client_token(&app, &endpoint, &client_id, &new_secret)
        .await
        .expect("a token with the new secret");
    assert_eq!(
        call(Method::GET, "/v1/events", &fresh)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Its requests are counted as its own (four let through so far, with either token).
    let usage: Value = call(
        Method::GET,
        &format!("/v1/oauth-clients/{id}/usage?days=2"),
        &boss,
    )
    .fetch_json()
    .await;
    assert_eq!(usage["days"].as_array().unwrap().len(), 2, "{usage}");
    assert_eq!(usage["days"][1]["requests"], 4, "{usage}");

    // Only the maker may revoke; revocation refuses the tokens already issued.
    expect_problem(
        call(Method::DELETE, &format!("/v1/oauth-clients/{id}"), &t.token)
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
    let res = call(Method::DELETE, &format!("/v1/oauth-clients/{id}"), &boss)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    expect_problem(
        call(Method::GET, "/v1/events", &fresh)
            .send()
            .await
            .unwrap(),
        401,
        "session-revoked",
    )
    .await;
    assert!(
        client_token(&app, &endpoint, &client_id, &new_secret)
            .await
            .is_err()
    );
    assert_eq!(
        call(Method::GET, "/v1/oauth-clients", &boss)
            .fetch_json()
            .await,
        json!([])
    );
}

#[tokio::test]
async fn a_client_has_its_own_quota_rate_and_version() {
    let app = TestApp::start().await;
    let (t, _member, boss, _boss_id) = tenant_with_admin(&app).await;
    let call = |m: Method, path: &str, token: &str| {
        app.anonymous(m, &t.slug, path)
            .bearer_auth(token.to_string())
    };
    // A policy beyond the tenant's per-user rate, or malformed, is refused with the field named.
    for (body, pointer) in [
        (
            json!({"name": "x", "scopes": ["users.read.own"], "rate_limit": {"per_sec": 1e9, "burst": 1}}),
            "/rate_limit/per_sec",
        ),
        (
            json!({"name": "x", "scopes": ["users.read.own"], "quota": {"credits": -5}}),
            "/quota/credits",
        ),
        (
            json!({"name": "x", "scopes": ["users.read.own"], "api_version": "1999-01-01"}),
            "/api_version",
        ),
    ] {
        let res = call(Method::POST, "/v1/oauth-clients", &boss)
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(res, 422, "validation").await;
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
    }

    let made: Value = call(Method::POST, "/v1/oauth-clients", &boss)
        .json(&json!({"name": "metered", "scopes": ["users.read.own"],
                      "api_version": "2026-06-01", "quota": {"credits": 2},
                      "rate_limit": {"per_sec": 50.0, "burst": 10}}))
        .fetch_json()
        .await;
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(made["quota"], json!({"credits": 2}), "{made}");
    assert_eq!(made["rate_limit"]["burst"], 10, "{made}");
    let token = client_token(
        &app,
        made["token_endpoint"].as_str().unwrap(),
        made["client_id"].as_str().unwrap(),
        made["client_secret"].as_str().unwrap(),
    )
    .await
    .expect("a token");

    // Pinned version: echoed when the request names none.
    let res = call(Method::GET, "/v1/me", &token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["neotenant-version"], "2026-06-01");
    let lines: Vec<String> = res
        .headers()
        .get_all("ratelimit")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        lines.iter().any(|l| l.starts_with("\"credits\";r=1;")),
        "{lines:?}"
    );
    assert_eq!(
        call(Method::GET, "/v1/me", &token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Out of credits: refused, while the maker's own requests go on.
    expect_problem(
        call(Method::GET, "/v1/me", &token).send().await.unwrap(),
        429,
        "quota-exceeded",
    )
    .await;
    assert_eq!(
        call(Method::GET, "/v1/me", &boss)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let usage: Value = call(
        Method::GET,
        &format!("/v1/oauth-clients/{id}/usage?days=1"),
        &boss,
    )
    .fetch_json()
    .await;
    assert_eq!(usage["credits_left"], 0, "{usage}");
    assert_eq!(usage["days"][0]["requests"], 2, "{usage}");
    assert_eq!(usage["days"][0]["refused"], 1, "{usage}");

    // A new quota tops it up at once; a patch leaving the rate out keeps it; a rate beyond
    // the ceiling is refused; another user cannot see or change it.
    let patched: Value = call(Method::PATCH, &format!("/v1/oauth-clients/{id}"), &boss)
        .json(&json!({"quota": {"credits": 1}, "api_version": "2026-12-01"}))
        .fetch_json()
        .await;
    assert_eq!(patched["rate_limit"]["burst"], 10, "{patched}");
    assert_eq!(patched["api_version"], "2026-12-01", "{patched}");
    let res = call(Method::GET, "/v1/me", &token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["neotenant-version"], "2026-12-01");
    expect_problem(
        call(Method::GET, "/v1/me", &token).send().await.unwrap(),
        429,
        "quota-exceeded",
    )
    .await;
    let res = call(Method::PATCH, &format!("/v1/oauth-clients/{id}"), &boss)
        .json(&json!({"rate_limit": {"per_sec": 1e9, "burst": 1}}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 422, "validation").await;
    for m in [Method::GET, Method::PATCH] {
        let res = call(m, &format!("/v1/oauth-clients/{id}"), &t.token)
            .json(&json!({"quota": null}))
            .send()
            .await
            .unwrap();
        expect_problem(res, 404, "not-found").await;
    }
    // Lifting the quota lets it through again.
    let lifted: Value = call(Method::PATCH, &format!("/v1/oauth-clients/{id}"), &boss)
        .json(&json!({"quota": null}))
        .fetch_json()
        .await;
    assert!(lifted.get("quota").is_none(), "{lifted}");
    assert_eq!(
        call(Method::GET, "/v1/me", &token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let shown: Value = call(Method::GET, &format!("/v1/oauth-clients/{id}"), &boss)
        .fetch_json()
        .await;
    assert_eq!(shown["id"], id.as_str());
    assert!(shown.get("client_secret").is_none(), "{shown}");
}

/// `limits.oauth_clients_per_user`: one more live client is 409 `limit-reached` before
/// Keycloak is asked to make it; a revocation frees the place.
#[tokio::test]
async fn live_clients_per_user_are_capped() {
    let mut config = neotenant_tests::test_config();
    config.limits.oauth_clients_per_user = 1;
    let app = TestApp::start_with(config).await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let make = || {
        app.anonymous(Method::POST, &t.slug, "/v1/oauth-clients")
            .bearer_auth(&boss)
            .json(&json!({"name": "sync", "scopes": ["events.read.tenant"]}))
    };
    let first: Value = make().fetch_json().await;
    let id = first["id"].as_str().unwrap().to_string();
    expect_problem(make().send().await.unwrap(), 409, "limit-reached").await;
    let res = app
        .anonymous(Method::DELETE, &t.slug, &format!("/v1/oauth-clients/{id}"))
        .bearer_auth(&boss)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = make().send().await.unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    app.cleanup().await;
}
