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
