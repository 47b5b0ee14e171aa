//! API keys: shown once, stored hashed, accepted in both headers, scoped to their tenant,
//! revocable everywhere at once, expiring.

use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use neotenant_tests::{Fetch, TestApp, direct, expect_problem, test_config};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn keys_are_shown_once_hashed_and_revocable() {
    let app = TestApp::start().await;
    let t = app.with_tenant("us", "schema").await;
    let other = app.with_tenant("us", "schema").await;
    let res = app
        .tenant_req(Method::POST, &t.slug, "/v1/api-keys")
        .json(&json!({"name": "ci", "scopes": ["notes.read.tenant"], "expires_in_days": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with(created["prefix"].as_str().unwrap()));
    assert!(secret.starts_with("ntk_"));

    // Listed without the secret; stored only as a hash.
    let listed = app
        .tenant_req(Method::GET, &t.slug, "/v1/api-keys")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listed.contains(created["prefix"].as_str().unwrap()) && !listed.contains(&secret[13..])
    );
    #[derive(QueryableByName)]
    struct Leak {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut db = direct(&test_config(), &t.database).await;
    let leak: Leak = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM \"{}\".api_keys WHERE position($1 in encode(secret_hash, 'escape')) > 0",
        t.schema
    ))
    .bind::<diesel::sql_types::Text, _>(&secret[13..])
    .get_result(&mut db)
    .await
    .unwrap();
    assert_eq!(leak.n, 0);

    // Works as a bearer token and as X-Api-Key, acting as its owner.
    let me: Value = app
        .anonymous(Method::GET, &t.slug, "/v1/me")
        .bearer_auth(&secret)
        .fetch_json()
        .await;
    assert_eq!(me["username"], format!("u-{}", t.slug));
    let res = app
        .anonymous(Method::GET, &t.slug, "/v1/notes")
        .header("x-api-key", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Scopes narrow the key: its owner may create notes, the key may not.
    expect_problem(
        app.anonymous(Method::POST, &t.slug, "/v1/notes")
            .bearer_auth(&secret)
            .json(&json!({"title": "from a read-only key"}))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    // A key cannot carry a permission its maker lacks, nor mint a wider key.
    for scopes in [json!(["roles.assign.tenant"]), json!(["*.*.tenant"])] {
        expect_problem(
            app.tenant_req(Method::POST, &t.slug, "/v1/api-keys")
                .json(&json!({"name": "escalate", "scopes": scopes}))
                .send()
                .await
                .unwrap(),
            403,
            "forbidden",
        )
        .await;
    }
    expect_problem(
        app.anonymous(Method::POST, &t.slug, "/v1/api-keys")
            .bearer_auth(&secret)
            .json(&json!({"name": "child", "scopes": ["notes.read.tenant"]}))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    // Not at another tenant, not with a wrong secret, not malformed.
    expect_problem(
        app.anonymous(Method::GET, &other.slug, "/v1/notes")
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap(),
        401,
        "token-signature",
    )
    .await;
    let mut wrong = secret.clone();
    wrong.pop();
    wrong.push(if secret.ends_with('A') { 'B' } else { 'A' });
    expect_problem(
        app.anonymous(Method::GET, &t.slug, "/v1/notes")
            .bearer_auth(&wrong)
            .send()
            .await
            .unwrap(),
        401,
        "token-signature",
    )
    .await;
    expect_problem(
        app.anonymous(Method::GET, &t.slug, "/v1/notes")
            .bearer_auth("ntk_nonsense")
            .send()
            .await
            .unwrap(),
        401,
        "token-malformed",
    )
    .await;

    // Revoked: refused at once.
    let id = created["id"].as_str().unwrap();
    let res = app
        .tenant_req(Method::DELETE, &t.slug, &format!("/v1/api-keys/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    expect_problem(
        app.anonymous(Method::GET, &t.slug, "/v1/notes")
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap(),
        401,
        "session-revoked",
    )
    .await;
    expect_problem(
        app.tenant_req(Method::DELETE, &t.slug, &format!("/v1/api-keys/{id}"))
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;

    // Bad input.
    let res = app
        .tenant_req(Method::POST, &t.slug, "/v1/api-keys")
        .json(&json!({"name": "", "scopes": ["everything"], "expires_in_days": 0}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 3);

    // Expired keys are refused.
    let res = app
        .tenant_req(Method::POST, &t.slug, "/v1/api-keys")
        .json(&json!({"name": "short", "scopes": ["notes.read.tenant"]}))
        .send()
        .await
        .unwrap();
    let short: Value = res.json().await.unwrap();
    diesel::sql_query(format!(
        "UPDATE \"{}\".api_keys SET expires_at = now() - interval '1 minute' WHERE prefix = $1",
        t.schema
    ))
    .bind::<diesel::sql_types::Text, _>(short["prefix"].as_str().unwrap())
    .execute(&mut db)
    .await
    .unwrap();
    let res = app
        .anonymous(Method::GET, &t.slug, "/v1/notes")
        .bearer_auth(short["secret"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    expect_problem(res, 401, "token-expired").await;
    let actions = neotenant_tests::audit_actions(&app, &t).await;
    assert_eq!(
        actions.iter().filter(|a| *a == "api_key.created").count(),
        2,
        "{actions:?}"
    );
    assert!(
        actions.contains(&"api_key.revoked".to_string()),
        "{actions:?}"
    );
    app.cleanup().await;
}

/// `limits.api_keys_per_user` live keys per user: one more is 409 `limit-reached`, counted
/// per user (another user still makes keys) and freed by a revocation; concurrent creates
/// cannot pass the cap together.
#[tokio::test]
async fn live_keys_per_user_are_capped() {
    let mut config = test_config();
    config.limits.api_keys_per_user = 3;
    let app = TestApp::start_with(config).await;
    let (t, _, boss, _) = neotenant_tests::tenant_with_admin(&app).await;
    let make = |token: String| {
        let req = app
            .anonymous(Method::POST, &t.slug, "/v1/api-keys")
            .bearer_auth(token)
            .json(&json!({"name": "k", "scopes": ["notes.read.tenant"]}));
        async move { req.send().await.unwrap() }
    };
    // Six at once: exactly three are made.
    let answers = futures::future::join_all((0..6).map(|_| make(t.token.clone()))).await;
    let mut made = Vec::new();
    let mut refused = 0;
    for res in answers {
        match res.status().as_u16() {
            201 => made.push(
                res.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ),
            409 => {
                expect_problem(res, 409, "limit-reached").await;
                refused += 1;
            }
            s => panic!("unexpected {s}: {}", res.text().await.unwrap()),
        }
    }
    assert_eq!((made.len(), refused), (3, 3));
    // Another user has a cap of their own.
    assert_eq!(make(boss.clone()).await.status(), 201);
    // A revoked key frees its place.
    let res = app
        .tenant_req(
            Method::DELETE,
            &t.slug,
            &format!("/v1/api-keys/{}", made[0]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(make(t.token.clone()).await.status(), 201);
    expect_problem(make(t.token.clone()).await, 409, "limit-reached").await;
    app.cleanup().await;
}
