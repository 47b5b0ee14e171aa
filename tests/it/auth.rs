//! Token validation against the running server and a real Keycloak: real tokens pass; forged,
//! replayed, expired, misdirected and malformed ones are each refused with their own problem.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{KeyInit, Mac};
use neotenant_tests::{Fetch, TestApp, TestTenant, expect_problem, test_config};
use openidconnect::PrivateSigningKey;
use openidconnect::core::{CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey};
use reqwest::Method;
use serde_json::{Value, json};

fn parts(token: &str) -> (Value, Value, String) {
    let mut it = token.split('.');
    let header = serde_json::from_slice(&B64.decode(it.next().unwrap()).unwrap()).unwrap();
    let claims = serde_json::from_slice(&B64.decode(it.next().unwrap()).unwrap()).unwrap();
    (header, claims, it.next().unwrap().to_string())
}

fn encode(v: &Value) -> String {
    B64.encode(serde_json::to_vec(v).unwrap())
}

async fn refused(app: &TestApp, t: &TestTenant, token: &str, slug: &str) -> Value {
    let res = app
        .anonymous(Method::GET, &t.slug, "/v1/notes")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let body = expect_problem(res, 401, slug).await;
    let challenge = challenge.expect("WWW-Authenticate on every 401");
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{}\"", t.slug)),
        "{challenge}"
    );
    body
}

async fn jwks_fetches(app: &TestApp) -> f64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("neotenant_jwks_fetches_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn real_tokens_pass_and_forgeries_fail() {
    let app = TestApp::start().await;
    let t = app.with_tenant("us", "schema").await;
    let ok = app
        .tenant_req(Method::GET, &t.slug, "/v1/notes")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // Missing, wrong scheme, garbage, oversized.
    let res = app
        .anonymous(Method::GET, &t.slug, "/v1/notes")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["www-authenticate"],
        format!("Bearer realm=\"{}\"", t.slug)
    );
    expect_problem(res, 401, "token-missing").await;
    let res = app
        .anonymous(Method::GET, &t.slug, "/v1/notes")
        .header("authorization", format!("Basic {}", t.token))
        .send()
        .await
        .unwrap();
    expect_problem(res, 401, "token-missing").await;
    refused(&app, &t, "not-a-jwt", "token-malformed").await;
    refused(&app, &t, "a.b.c", "token-malformed").await;
    refused(
        &app,
        &t,
        &format!("{}{}", t.token, "A".repeat(9000)),
        "token-too-large",
    )
    .await;

    let (header, claims, signature) = parts(&t.token);
    // The exact bytes Keycloak signed.
    let signing_input = t.token.rsplit_once('.').unwrap().0.to_string();
    let raw_header = t.token.split('.').next().unwrap().to_string();

    // alg "none" with no signature.
    let mut none = header.clone();
    none["alg"] = json!("none");
    refused(
        &app,
        &t,
        &format!("{}.{}.", encode(&none), encode(&claims)),
        "token-algorithm",
    )
    .await;

    // HS256 keyed with the realm's public key (the classic algorithm-confusion attack).
    let jwks: Value = app
        .client
        .get(format!(
            "{}/protocol/openid-connect/certs",
            app.state().keycloak.issuer(&t.realm)
        ))
        .fetch_json()
        .await;
    let public = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap();
    let mut hs = header.clone();
    hs["alg"] = json!("HS256");
    let input = format!("{}.{}", encode(&hs), encode(&claims));
    for secret in [
        public["n"].as_str().unwrap().as_bytes().to_vec(),
        serde_json::to_vec(public).unwrap(),
    ] {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
        mac.update(input.as_bytes());
        let forged = format!("{input}.{}", B64.encode(mac.finalize().into_bytes()));
        refused(&app, &t, &forged, "token-algorithm").await;
    }

    // Claims changed under the original signature: a raised exp, another subject.
    for (field, value) in [
        ("exp", json!(claims["exp"].as_i64().unwrap() + 86_400)),
        ("sub", json!("someone-else")),
    ] {
        let mut c = claims.clone();
        c[field] = value;
        refused(
            &app,
            &t,
            &format!("{raw_header}.{}.{signature}", encode(&c)),
            "token-signature",
        )
        .await;
    }
    // One flipped bit in the signature.
    let mut sig = B64.decode(&signature).unwrap();
    sig[10] ^= 0x01;
    refused(
        &app,
        &t,
        &format!("{signing_input}.{}", B64.encode(&sig)),
        "token-signature",
    )
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn tokens_are_bound_to_their_tenant() {
    let app = TestApp::start().await;
    let a = app.with_tenant("us", "schema").await;
    let b = app.with_tenant("us", "schema").await;
    let eu = app.with_tenant("eu", "schema").await;
    let r1 = app.with_tenant_identity("us", "schema", "realm").await;
    let r2 = app.with_tenant_identity("eu", "schema", "realm").await;
    for t in [&a, &b, &eu, &r1, &r2] {
        assert_eq!(
            app.tenant_req(Method::GET, &t.slug, "/v1/notes")
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{}",
            t.slug
        );
    }
    // Same shared realm, other organization.
    refused(&app, &b, &a.token, "token-tenant").await;
    // Another region's shared realm, another tenant's own realm, and the other way round.
    refused(&app, &eu, &a.token, "token-issuer").await;
    refused(&app, &r1, &a.token, "token-issuer").await;
    refused(&app, &r2, &r1.token, "token-issuer").await;
    refused(&app, &a, &r1.token, "token-issuer").await;

    // A member of two organizations must ask for one: without it the token names none.
    let kc = &app.state().keycloak;
    let realm = &a.realm;
    let user = format!("two-{}", a.slug);
    let token_a = app
        .member_token(realm, a.organization.as_deref(), &user)
        .await;
    let user_id = kc
        .ensure_user(
            realm,
            &user,
            "x@example.test",
            neotenant_tests::TEST_PASSWORD,
        )
        .await
        .unwrap();
    let (org_b, _) = kc
        .find_organization(realm, b.organization.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    kc.add_organization_member(realm, &org_b, &user_id)
        .await
        .unwrap();
    let token_b = app
        .login(realm, &user, b.organization.as_deref())
        .await
        .unwrap();
    let unscoped = app.login(realm, &user, None).await.unwrap();
    app.anonymous(Method::GET, &a.slug, "/v1/notes")
        .bearer_auth(&token_a)
        .send()
        .await
        .unwrap();
    assert_eq!(
        app.anonymous(Method::GET, &b.slug, "/v1/notes")
            .bearer_auth(&token_b)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    refused(&app, &a, &token_b, "token-tenant").await;
    refused(&app, &a, &unscoped, "token-tenant").await;
    kc.delete_user(realm, &user_id).await.unwrap();

    // A token of the realm's admin console client is not meant for this API.
    let res = app
        .client
        .post(kc.token_endpoint(&r1.realm))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", &format!("u-{}", r1.slug)),
            ("password", neotenant_tests::TEST_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    let admin_cli = body["access_token"].as_str().expect("admin-cli token");
    refused(&app, &r1, admin_cli, "token-audience").await;
    app.cleanup().await;
}

#[tokio::test]
async fn unknown_kid_flood_costs_keycloak_at_most_one_fetch() {
    let app = TestApp::start().await;
    let t = app.with_tenant("eu", "schema").await;
    assert_eq!(
        app.tenant_req(Method::GET, &t.slug, "/v1/notes")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let before = jwks_fetches(&app).await;
    let (header, claims, signature) = parts(&t.token);
    let sends = (0..200).map(|i| {
        let mut h = header.clone();
        h["kid"] = json!(format!("forged-{i}"));
        let token = format!("{}.{}.{signature}", encode(&h), encode(&claims));
        let req = app
            .anonymous(Method::GET, &t.slug, "/v1/notes")
            .bearer_auth(token);
        async move { req.send().await.unwrap() }
    });
    for res in futures::future::join_all(sends).await {
        expect_problem(res, 401, "token-unknown-key").await;
    }
    let after = jwks_fetches(&app).await;
    assert!(
        after - before <= 1.0,
        "200 unknown kids caused {} key fetches",
        after - before
    );
    // The real token still works.
    assert_eq!(
        app.tenant_req(Method::GET, &t.slug, "/v1/notes")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    app.cleanup().await;
}

/// A realm-mode tenant whose realm signs with a key this test holds, so that tokens with any
/// claims can be made with a signature Keycloak itself publishes.
async fn tenant_with_known_key(app: &TestApp) -> (TestTenant, CoreRsaPrivateSigningKey, String) {
    let t = app.with_tenant_identity("us", "schema", "realm").await;
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "2048"])
        .output()
        .expect("openssl is available");
    let pem = String::from_utf8(out.stdout).unwrap();
    let realm: Value = kc_get(app, &format!("/{}", t.realm)).await;
    let component = json!({
        "name": "test-rsa", "providerId": "rsa", "providerType": "org.keycloak.keys.KeyProvider",
        "parentId": realm["id"],
        "config": {"priority": ["1000"], "enabled": ["true"], "active": ["true"], "algorithm": ["RS256"], "privateKey": [pem]}
    });
    kc_post(app, &format!("/{}/components", t.realm), &component).await;
    let keys: Value = kc_get(app, &format!("/{}/keys", t.realm)).await;
    let kid = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["providerPriority"] == 1000 && k["algorithm"] == "RS256")
        .and_then(|k| k["kid"].as_str())
        .expect("imported key listed")
        .to_string();
    let key = CoreRsaPrivateSigningKey::from_pem(&pem, None).unwrap();
    (t, key, kid)
}

async fn kc_admin_token(app: &TestApp) -> String {
    let config = test_config();
    let res = app
        .client
        .post(app.state().keycloak.token_endpoint("master"))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", config.keycloak.admin_username.as_str()),
            ("password", config.keycloak.admin_password.expose()),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

async fn kc_get(app: &TestApp, path: &str) -> Value {
    let base = test_config().keycloak.url;
    app.client
        .get(format!("{base}/admin/realms{path}"))
        .bearer_auth(kc_admin_token(app).await)
        .fetch_json()
        .await
}

async fn kc_post(app: &TestApp, path: &str, body: &Value) {
    let base = test_config().keycloak.url;
    let res = app
        .client
        .post(format!("{base}/admin/realms{path}"))
        .bearer_auth(kc_admin_token(app).await)
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{path}: {}", res.status());
}

fn sign(key: &CoreRsaPrivateSigningKey, kid: &str, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        encode(&json!({"alg": "RS256", "typ": "JWT", "kid": kid})),
        encode(claims)
    );
    let sig = key
        .sign(
            &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            input.as_bytes(),
        )
        .unwrap();
    format!("{input}.{}", B64.encode(sig))
}

#[tokio::test]
async fn validly_signed_tokens_with_bad_claims_are_refused() {
    let mut config = test_config();
    config.auth.leeway_secs = 5;
    let app = TestApp::start_with(config).await;
    let (t, key, kid) = tenant_with_known_key(&app).await;
    let now = chrono::Utc::now().timestamp();
    let issuer = app.state().keycloak.issuer(&t.realm);
    let good = json!({"iss": issuer, "aud": ["neotenant-api"], "sub": "s-1", "typ": "Bearer",
                      "azp": "neotenant-app", "iat": now - 10, "exp": now + 300, "tenant": t.slug});
    let ok = app
        .anonymous(Method::GET, &t.slug, "/v1/notes")
        .bearer_auth(sign(&key, &kid, &good))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "a token signed by the realm's key passes");

    let with = |field: &str, value: Value| {
        let mut c = good.clone();
        c[field] = value;
        sign(&key, &kid, &c)
    };
    refused(&app, &t, &with("exp", json!(now - 60)), "token-expired").await;
    refused(
        &app,
        &t,
        &with("nbf", json!(now + 600)),
        "token-not-yet-valid",
    )
    .await;
    refused(
        &app,
        &t,
        &with("iat", json!(now + 600)),
        "token-not-yet-valid",
    )
    .await;
    refused(&app, &t, &with("aud", json!(["account"])), "token-audience").await;
    refused(
        &app,
        &t,
        &with("iss", json!(format!("{issuer}-other"))),
        "token-issuer",
    )
    .await;
    refused(&app, &t, &with("typ", json!("Refresh")), "token-type").await;
    refused(
        &app,
        &t,
        &with("tenant", json!("someone-else")),
        "token-tenant",
    )
    .await;
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    refused(&app, &t, &sign(&key, &kid, &no_exp), "token-malformed").await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_keys_keep_validating_while_keycloak_is_down() {
    // This app reaches Keycloak only through a forwarder the test can cut.
    let kc_url = url::Url::parse(&test_config().keycloak.url).unwrap();
    let target = std::net::SocketAddr::new("127.0.0.1".parse().unwrap(), kc_url.port().unwrap());
    let forwarder = neotenant_tests::Forwarder::start(target).await;
    let mut config = test_config();
    config.keycloak.url = format!("http://{}", forwarder.addr);
    let app = TestApp::start_with(config).await;
    let t = app.with_tenant("eu", "schema").await;
    assert!(t.token.len() > 100);
    assert_eq!(
        app.tenant_req(Method::GET, &t.slug, "/v1/notes")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    forwarder.stop();
    assert!(
        app.state().keycloak.realm_exists(&t.realm).await.is_err(),
        "Keycloak is unreachable now"
    );
    for _ in 0..5 {
        let res = app
            .tenant_req(Method::GET, &t.slug, "/v1/notes")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "a cached key keeps validating");
    }
    // A kid never seen cannot be fetched now, and is refused rather than trusted.
    let (mut header, claims, signature) = parts(&t.token);
    header["kid"] = json!("never-seen");
    refused(
        &app,
        &t,
        &format!("{}.{}.{signature}", encode(&header), encode(&claims)),
        "token-unknown-key",
    )
    .await;
    // Cleanup needs Keycloak: let a fresh app on the real address delete the tenant.
    let mut app = app;
    app.server.take().unwrap().shutdown().await;
    let cleaner = TestApp::start().await;
    cleaner.track(&t.slug);
    cleaner.cleanup().await;
}
