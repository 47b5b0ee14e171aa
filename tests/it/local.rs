//! The `local` identity mode: passwords here, EdDSA tokens from the platform, no Keycloak.

use neotenant_tests::{Fetch, TestApp, expect_problem, random_slug};
use reqwest::Method;
use serde_json::{Value, json};

async fn local_tenant(app: &TestApp) -> String {
    let slug = random_slug("loc");
    let res = app
        .admin(Method::POST, "/admin/v1/tenants")
        .json(&json!({"slug": slug, "display_name": "Local", "region": "eu", "identity": {"mode": "local"}}))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["identity"]["mode"], "local", "{body}");
    assert_eq!(body["identity"]["ready"], true);
    app.track(&slug);
    slug
}

#[tokio::test]
async fn local_users_sign_in_with_passwords_and_eddsa_tokens() {
    let app = TestApp::start().await;
    let slug = local_tenant(&app).await;
    let other = local_tenant(&app).await;
    let res = app
        .admin(Method::POST, &format!("/admin/v1/tenants/{slug}/local-users"))
        .json(&json!({"username": "ada", "email": "ada@example.test", "password": "a-long-Password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = app
        .admin(Method::POST, &format!("/admin/v1/tenants/{slug}/local-users"))
        .json(&json!({"username": "ada", "email": "ada2@example.test", "password": "a-long-Password-1"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 409, "conflict").await;
    let res = app
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/{slug}/local-users"),
        )
        .json(&json!({"username": "bo", "email": "x", "password": "short"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 3);

    let login = |tenant: &str, user: &str, password: &str| {
        app.anonymous(Method::POST, tenant, "/v1/auth/login")
            .json(&json!({"username": user, "password": password}))
            .send()
    };
    expect_problem(
        login(&slug, "ada", "wrong-password").await.unwrap(),
        401,
        "invalid-credentials",
    )
    .await;
    expect_problem(
        login(&slug, "nobody", "a-long-Password-1").await.unwrap(),
        401,
        "invalid-credentials",
    )
    .await;
    let res = login(&slug, "ada", "a-long-Password-1").await.unwrap();
    assert_eq!(res.status(), 200);
    let tokens: Value = res.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap();

    // An EdDSA token, verifiable with the published key.
    let header: Value = {
        use base64::Engine;
        let h = access.split('.').next().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header["alg"], "EdDSA");
    let jwks: Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .fetch_json()
        .await;
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");

    let me: Value = app
        .anonymous(Method::GET, &slug, "/v1/me")
        .bearer_auth(access)
        .fetch_json()
        .await;
    assert_eq!(me["username"], "ada");
    assert!(me["subject"].as_str().unwrap().starts_with("local:"));
    // Refused by another local tenant, and at a Keycloak tenant nobody logs in locally.
    expect_problem(
        app.anonymous(Method::GET, &other, "/v1/notes")
            .bearer_auth(access)
            .send()
            .await
            .unwrap(),
        401,
        "token-issuer",
    )
    .await;
    let kc_tenant = app.with_tenant("eu", "schema").await;
    expect_problem(
        login(&kc_tenant.slug, "ada", "a-long-Password-1")
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;

    // Refresh rotates; the old refresh token is dead.
    let first = tokens["refresh_token"].as_str().unwrap();
    let refresh = |token: &str| {
        app.anonymous(Method::POST, &slug, "/v1/auth/refresh")
            .json(&json!({"refresh_token": token}))
            .send()
    };
    let res = refresh(first).await.unwrap();
    assert_eq!(res.status(), 200);
    let renewed: Value = res.json().await.unwrap();
    assert_ne!(renewed["refresh_token"], tokens["refresh_token"]);
    let again = app
        .anonymous(Method::GET, &slug, "/v1/notes")
        .bearer_auth(renewed["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    expect_problem(refresh(first).await.unwrap(), 401, "refresh-token-invalid").await;
    app.cleanup().await;
}

#[tokio::test]
async fn user_admin_at_a_local_tenant_is_a_clear_conflict_and_keys_outlive_ended_sessions() {
    let app = TestApp::start().await;
    let slug = local_tenant(&app).await;
    let made: Value = app
        .admin(Method::POST, &format!("/admin/v1/tenants/{slug}/local-users"))
        .json(&json!({"username": "owner", "email": "owner@example.test", "password": "a-long-Password-1"}))
        .fetch_json()
        .await;
    let res = app
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/{slug}/role-assignments"),
        )
        .json(&json!({"role": "owner", "user_id": made["id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let tokens: Value = app
        .anonymous(Method::POST, &slug, "/v1/auth/login")
        .json(&json!({"username": "owner", "password": "a-long-Password-1"}))
        .fetch_json()
        .await;
    let token = tokens["access_token"].as_str().unwrap().to_string();
    let call = |m: Method, path: &str, credential: &str| {
        app.anonymous(m, &slug, path)
            .bearer_auth(credential.to_string())
    };
    // Users of a local tenant are the operator's to make and change: 409, never a 503.
    let id = made["id"].as_str().unwrap();
    for (m, path, body) in [
        (
            Method::POST,
            "/v1/users".to_string(),
            json!({"username": "xuser", "email": "x1@example.test"}),
        ),
        (
            Method::PATCH,
            format!("/v1/users/{id}"),
            json!({"display_name": "Owner"}),
        ),
        (
            Method::POST,
            format!("/v1/users/{id}/deactivate"),
            json!({}),
        ),
    ] {
        let res = call(m, &path, &token).json(&body).send().await.unwrap();
        expect_problem(res, 409, "conflict").await;
    }

    // Ending one's sessions ends sign-in sessions, not API keys (revoked at /v1/api-keys).
    let key: Value = call(Method::POST, "/v1/api-keys", &token)
        .json(&json!({"name": "ops", "scopes": ["sessions.revoke.own", "sessions.read.own"]}))
        .fetch_json()
        .await;
    let secret = key["secret"].as_str().unwrap().to_string();
    let listed: Value = call(Method::GET, "/v1/sessions", &secret)
        .fetch_json()
        .await;
    let text = listed.to_string();
    assert!(!text.contains("apikey:"), "{listed}");
    let res = call(Method::DELETE, "/v1/sessions", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        call(Method::GET, "/v1/me", &secret)
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the key is not a session"
    );
    let key_id = key["id"].as_str().unwrap();
    let res = call(
        Method::DELETE,
        &format!("/v1/sessions/apikey:{key_id}"),
        &secret,
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 404, "not-found").await;
    app.cleanup().await;
}
