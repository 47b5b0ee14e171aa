//! Checks over the whole published API (OWASP API1, API2, API5): every operation the document
//! lists, except the few that are public by design, refuses a caller without credentials and
//! a caller with another tenant's token, before it looks at the request; the admin API
//! refuses tenant tokens.

use neotenant_tests::{Fetch, TestApp, test_config};
use reqwest::Method;
use serde_json::{Value, json};

/// Operations without a tenant credential: what a client needs before it has a token (they
/// are limited per address and never say whether an account exists), and provider callbacks.
const PUBLIC: &[&str] = &[
    "/v1/api-versions",
    "/v1/auth/login",
    "/v1/auth/refresh",
    "/v1/auth/password-reset",
    "/v1/auth/password-reset/confirm",
    "/v1/invitations/accept",
    "/v1/invitations/open",
    "/v1/notifications/unsubscribe",
    // A message provider's delivery report: its own token in the body, checked against the
    // provider the delivery went through (`tests/it/notifications.rs`).
    "/v1/notifications/deliveries/{id}/report",
];

/// Every (method, path) of the document, path parameters filled with something well formed.
fn operations(spec: &Value) -> Vec<(Method, String, String)> {
    let mut out = Vec::new();
    for (path, ops) in spec["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            if op.get("responses").is_none() {
                continue;
            }
            let concrete = path
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') {
                        "0190d4a8-7c5e-7000-8000-000000000000"
                    } else {
                        seg
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
            out.push((m, path.clone(), concrete));
        }
    }
    out
}

#[tokio::test]
async fn no_operation_but_the_public_ones_serves_a_caller_without_credentials_or_of_another_tenant()
{
    let mut config = test_config();
    // Hundreds of refused credentials from one address on purpose.
    config.rate_limit.max_auth_failures_per_ip = 1_000_000;
    let app = TestApp::start_with(config).await;
    let t = app.with_tenant("us", "schema").await;
    let other = app.with_tenant("eu", "schema").await;
    let spec = app.client.get(app.url("/openapi.json")).fetch_json().await;
    let ops = operations(&spec);
    assert!(ops.len() > 200, "only {} operations", ops.len());
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (method, path, concrete) in &ops {
        if PUBLIC.contains(&path.as_str()) {
            continue;
        }
        let admin = path.starts_with("/admin/");
        let with_body = |req: reqwest::RequestBuilder| match *method {
            Method::POST | Method::PUT | Method::PATCH => req.json(&json!({})),
            _ => req,
        };
        let requests = [
            (
                "no credentials",
                with_body(app.anonymous(method.clone(), &t.slug, concrete)),
            ),
            (
                "another tenant's token",
                with_body(
                    app.anonymous(method.clone(), &t.slug, concrete)
                        .bearer_auth(&other.token),
                ),
            ),
        ];
        for (who, req) in requests {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let body = res.text().await.unwrap_or_default();
            let problem: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let typed = problem["type"].as_str().unwrap_or_default();
            // The admin API answers every non-admin credential alike; everything else names
            // why the credential is refused.
            let ok = status == 401 && (admin || !typed.is_empty());
            if !ok {
                wrong.push(format!("{method} {path} with {who}: {status} {body}"));
            }
            checked += 1;
        }
    }
    assert!(
        wrong.is_empty(),
        "{} served:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(checked > 400);

    // The tenant's own token is refused by the admin API.
    for (method, path, concrete) in ops.iter().filter(|(_, p, _)| p.starts_with("/admin/")) {
        let res = app
            .client
            .request(method.clone(), app.url(concrete))
            .bearer_auth(&t.token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{method} {path}");
    }
    app.cleanup().await;
}
