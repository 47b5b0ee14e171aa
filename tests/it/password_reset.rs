//! Password reset of local-mode tenants: our own token, mailed through the devstack's SMTP
//! sink, confirmed once, before its expiry; and the problems bad requests get.

use diesel_async::RunQueryDsl;
use neotenant_tests::{
    TestApp, TestTenant, audit_actions, await_mails, direct, expect_problem, mails_to, random_slug,
    unfold,
};
use reqwest::Method;
use serde_json::{Value, json};

const OLD_PASSWORD: &str = "the-old-Password-1";
const NEW_PASSWORD: &str = "a-brand-new-Password-2";

/// A local-mode tenant (deleted by cleanup), as a `TestTenant` for the audit helpers.
async fn local_tenant(app: &TestApp) -> TestTenant {
    let slug = random_slug("rst");
    let res = app
        .admin(Method::POST, "/admin/v1/tenants")
        .json(
            &json!({"slug": slug, "display_name": "Reset Co", "region": "eu",
            "identity": {"mode": "local"}}),
        )
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["identity"]["mode"], "local", "{body}");
    app.track(&slug);
    TestTenant {
        slug,
        region: "eu".into(),
        isolation: body["isolation"].as_str().unwrap().into(),
        database: body["database"].as_str().unwrap().into(),
        schema: body["schema"].as_str().unwrap().into(),
        realm: String::new(),
        organization: None,
        token: String::new(),
    }
}

/// Creates a local user `name` with [`OLD_PASSWORD`]; returns its email address (unique to
/// this tenant, since the SMTP sink is shared by every test run).
async fn local_user(app: &TestApp, t: &TestTenant, name: &str) -> String {
    let email = format!("{name}-{}@example.test", t.slug);
    let res = app
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/{}/local-users", t.slug),
        )
        .json(&json!({"username": name, "email": email, "password": OLD_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    email
}

async fn request_reset(app: &TestApp, slug: &str, login: &str) -> reqwest::Response {
    app.anonymous(Method::POST, slug, "/v1/auth/password-reset")
        .json(&json!({"login": login}))
        .send()
        .await
        .unwrap()
}

async fn confirm(app: &TestApp, slug: &str, body: Value) -> reqwest::Response {
    app.anonymous(Method::POST, slug, "/v1/auth/password-reset/confirm")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn login(app: &TestApp, slug: &str, user: &str, password: &str) -> reqwest::Response {
    app.anonymous(Method::POST, slug, "/v1/auth/login")
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
}

/// The reset token in a mail (`ntp_` and 43 base64url characters).
fn token_in(mail: &str) -> String {
    let text = unfold(mail);
    let at = text.find("ntp_").expect("a token in the mail");
    let token: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    assert_eq!(token.len(), 47, "{token}");
    token
}

/// Waits for the one reset mail to `address` and returns its token.
async fn mailed_token(address: &str) -> (String, String) {
    let mails = await_mails(address, 1).await;
    assert_eq!(mails.len(), 1, "one reset mail reaches {address}");
    (token_in(&mails[0]), mails[0].clone())
}

#[tokio::test]
async fn a_mailed_token_sets_a_new_password_once_and_ends_every_session() {
    let app = TestApp::start().await;
    let t = local_tenant(&app).await;
    let slug = t.slug.as_str();
    let email = local_user(&app, &t, "ada").await;
    // Two sessions: one in use, one whose tokens were never presented.
    let used: Value = login(&app, slug, "ada", OLD_PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let idle: Value = login(&app, slug, "ada", OLD_PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let notes = |token: &str| {
        app.anonymous(Method::GET, slug, "/v1/notes")
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        notes(used["access_token"].as_str().unwrap())
            .await
            .unwrap()
            .status(),
        200
    );

    // By email, in any case: 202 with the same body as for anybody.
    let res = request_reset(&app, slug, &email.to_uppercase()).await;
    assert_eq!(res.status(), 202);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"status": "accepted"})
    );
    let (token, mail) = mailed_token(&email).await;
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(
        mail.contains("text/plain") && mail.contains("text/html"),
        "{mail}"
    );
    assert!(
        mail.contains("From: NeoTenantApi <no-reply@neotenant.test>"),
        "{mail}"
    );
    let text = unfold(&mail);
    assert!(
        text.contains(&format!(
            "http://{slug}.localhost:8080/reset-password#token={token}"
        )),
        "the link carries the token: {text}"
    );

    // A password breaking the rules is refused and leaves the token usable.
    let res = confirm(&app, slug, json!({"token": token, "password": "short"})).await;
    let problem = expect_problem(res, 422, "validation").await;
    assert_eq!(problem["errors"][0]["pointer"], "/password");

    let res = confirm(
        &app,
        slug,
        json!({"token": token, "password": NEW_PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), 204);

    expect_problem(
        login(&app, slug, "ada", OLD_PASSWORD).await,
        401,
        "invalid-credentials",
    )
    .await;
    assert_eq!(login(&app, slug, "ada", NEW_PASSWORD).await.status(), 200);

    // Every earlier session ended: its access token and its refresh token are refused.
    expect_problem(
        notes(used["access_token"].as_str().unwrap()).await.unwrap(),
        401,
        "session-revoked",
    )
    .await;
    for session in [&used, &idle] {
        let res = app
            .anonymous(Method::POST, slug, "/v1/auth/refresh")
            .json(&json!({"refresh_token": session["refresh_token"]}))
            .send()
            .await
            .unwrap();
        expect_problem(res, 401, "refresh-token-invalid").await;
    }

    // The token works once.
    let res = confirm(
        &app,
        slug,
        json!({"token": token, "password": "yet-another-Password-3"}),
    )
    .await;
    let problem = expect_problem(res, 400, "reset-token-invalid").await;
    assert_eq!(
        problem["detail"],
        "the password-reset token is invalid, expired or already used"
    );
    assert_eq!(login(&app, slug, "ada", NEW_PASSWORD).await.status(), 200);

    let actions = audit_actions(&app, &t).await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "user.password_reset_requested")
            .count(),
        1
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "user.password_reset")
            .count(),
        1
    );
    app.cleanup().await;
}

#[tokio::test]
async fn expired_unknown_and_replaced_tokens_are_refused_alike() {
    let app = TestApp::start().await;
    let t = local_tenant(&app).await;
    let slug = t.slug.as_str();
    let email = local_user(&app, &t, "bob").await;
    assert_eq!(request_reset(&app, slug, "bob").await.status(), 202);
    let (token, _) = mailed_token(&email).await;

    // At most one mail a minute per account, however it is named.
    assert_eq!(request_reset(&app, slug, &email).await.status(), 202);
    assert_eq!(request_reset(&app, slug, "bob").await.status(), 202);

    // The token's time runs out.
    let mut db = direct(&app.state().config, &t.database).await;
    let changed = diesel::sql_query(format!(
        "UPDATE \"{}\".password_resets SET expires_at = now() - interval '1 minute'",
        t.schema
    ))
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(changed, 1, "one token row for the user");
    let expired = confirm(
        &app,
        slug,
        json!({"token": token, "password": NEW_PASSWORD}),
    )
    .await;
    let expired = expect_problem(expired, 400, "reset-token-invalid").await;

    // A well-formed token nobody issued, and one from another tenant, get the same answer.
    let made_up = format!("ntp_{}", "A".repeat(43));
    let unknown = confirm(
        &app,
        slug,
        json!({"token": made_up, "password": NEW_PASSWORD}),
    )
    .await;
    let unknown = expect_problem(unknown, 400, "reset-token-invalid").await;
    assert_eq!(expired["detail"], unknown["detail"]);
    assert_eq!(expired["title"], unknown["title"]);

    assert_eq!(mails_to(&email).len(), 1, "throttled: still one mail");
    assert_eq!(login(&app, slug, "bob", OLD_PASSWORD).await.status(), 200);
    let actions = audit_actions(&app, &t).await;
    assert!(!actions.iter().any(|a| a == "user.password_reset"));

    let other = local_tenant(&app).await;
    let other_email = local_user(&app, &other, "bob").await;
    // A token is good only at the tenant that issued it.
    assert_eq!(request_reset(&app, &other.slug, "bob").await.status(), 202);
    let (foreign, _) = mailed_token(&other_email).await;
    let res = confirm(
        &app,
        slug,
        json!({"token": foreign, "password": NEW_PASSWORD}),
    )
    .await;
    expect_problem(res, 400, "reset-token-invalid").await;
    let res = confirm(
        &app,
        &other.slug,
        json!({"token": foreign, "password": NEW_PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), 204);
    app.cleanup().await;
}

#[tokio::test]
async fn unknown_accounts_get_the_same_answer_and_no_mail() {
    let app = TestApp::start().await;
    let t = local_tenant(&app).await;
    let slug = t.slug.as_str();
    let known = local_user(&app, &t, "cyd").await;
    let nobody = format!("nobody-{slug}@example.test");
    let res = request_reset(&app, slug, &nobody).await;
    assert_eq!(res.status(), 202);
    let body: Value = res.json().await.unwrap();
    let res = request_reset(&app, slug, "cyd").await;
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap(), body, "same answer");
    // The known user's mail arrives; by then the unknown one's would have too.
    assert_eq!(await_mails(&known, 1).await.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(mails_to(&nobody).is_empty(), "no mail for an unknown login");
    // A deactivated user gets none either.
    let mut db = direct(&app.state().config, &t.database).await;
    let gone = local_user(&app, &t, "dee").await;
    diesel::sql_query(format!(
        "UPDATE \"{}\".users SET status = 'deactivated' WHERE username = 'dee'",
        t.schema
    ))
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(request_reset(&app, slug, "dee").await.status(), 202);
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(mails_to(&gone).is_empty(), "no mail for an inactive user");
    app.cleanup().await;
}

#[tokio::test]
async fn malformed_reset_requests_are_problems() {
    let app = TestApp::start().await;
    let t = local_tenant(&app).await;
    let slug = t.slug.as_str();
    local_user(&app, &t, "eve").await;
    let good_token = format!("ntp_{}", "A".repeat(43));
    for (body, status, kind) in [
        (json!({}), 422, "validation"),
        (json!({"token": good_token}), 422, "validation"),
        (json!({"password": NEW_PASSWORD}), 422, "validation"),
        (
            json!({"token": 5, "password": NEW_PASSWORD}),
            422,
            "validation",
        ),
        (
            json!({"token": good_token, "password": NEW_PASSWORD, "extra": 1}),
            422,
            "validation",
        ),
        (
            json!({"token": good_token, "password": "x".repeat(300)}),
            422,
            "validation",
        ),
        (
            json!({"token": good_token, "password": "with a NUL \u{0} inside"}),
            422,
            "validation",
        ),
        (
            json!({"token": "", "password": NEW_PASSWORD}),
            400,
            "reset-token-invalid",
        ),
        (
            json!({"token": "x".repeat(100_000), "password": NEW_PASSWORD}),
            400,
            "reset-token-invalid",
        ),
        // A NUL is refused for every JSON body before any field is read.
        (
            json!({"token": format!("ntp_{}\u{0}", "A".repeat(42)), "password": NEW_PASSWORD}),
            422,
            "validation",
        ),
    ] {
        let res = confirm(&app, slug, body.clone()).await;
        expect_problem(res, status, kind).await;
    }
    let raw = |path: &'static str, body: &'static str| {
        app.anonymous(Method::POST, slug, path)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for path in ["/v1/auth/password-reset", "/v1/auth/password-reset/confirm"] {
        expect_problem(
            raw(path, "{\"token\": ").await.unwrap(),
            400,
            "malformed-json",
        )
        .await;
        expect_problem(raw(path, "").await.unwrap(), 400, "malformed-json").await;
    }
    for login in [
        String::new(),
        "   ".into(),
        "x".repeat(255),
        "eve\u{0}".into(),
    ] {
        let res = request_reset(&app, slug, &login).await;
        expect_problem(res, 422, "validation").await;
    }
    // Keycloak tenants reset through Keycloak.
    let kc = app.with_tenant("eu", "schema").await;
    let res = confirm(
        &app,
        &kc.slug,
        json!({"token": good_token, "password": NEW_PASSWORD}),
    )
    .await;
    expect_problem(res, 409, "conflict").await;
    app.cleanup().await;
}
