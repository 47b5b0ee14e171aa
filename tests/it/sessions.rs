//! Sessions: listing, revocation on every instance, admin revocation, refresh-token rotation,
//! new-device detection.

use neotenant_tests::{Fetch, TEST_PASSWORD, TestApp, expect_problem, mails_to, test_config};
use reqwest::Method;
use serde_json::{Value, json};

const UA: &str = "neotenant-tests/1.0 (sessions)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_sessions_are_refused_by_every_instance() {
    let a = TestApp::start().await;
    let b = TestApp::start_with(test_config()).await;
    let t = a.with_tenant("us", "schema").await;
    b.use_token(&t.slug, &t.token);
    let listed: Value = a
        .tenant_req(Method::GET, &t.slug, "/v1/sessions")
        .header("user-agent", UA)
        .fetch_json()
        .await;
    let sessions = listed.as_array().expect("a list");
    assert_eq!(sessions.len(), 1, "{listed}");
    assert_eq!(sessions[0]["current"], true);
    assert_eq!(sessions[0]["user_agent"], UA);
    assert_eq!(sessions[0]["network"], "127.0.0.0/24");
    assert_eq!(
        b.tenant_req(Method::GET, &t.slug, "/v1/notes")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let sid = sessions[0]["id"].as_str().unwrap();
    // Someone else's session id is not found.
    expect_problem(
        a.tenant_req(Method::DELETE, &t.slug, "/v1/sessions/not-mine")
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
    let res = a
        .tenant_req(Method::DELETE, &t.slug, &format!("/v1/sessions/{sid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    expect_problem(
        a.tenant_req(Method::GET, &t.slug, "/v1/notes")
            .send()
            .await
            .unwrap(),
        401,
        "session-revoked",
    )
    .await;
    let mut seen = 0;
    for _ in 0..20 {
        seen = b
            .tenant_req(Method::GET, &t.slug, "/v1/notes")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if seen == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen, 401,
        "the other instance refuses the revoked session within a second"
    );
    b.cleanup().await;
    a.cleanup().await;
}

#[tokio::test]
async fn refresh_tokens_rotate_and_cannot_be_reused() {
    let app = TestApp::start().await;
    let t = app.with_tenant("eu", "schema").await;
    let tokens = app
        .login_full(
            &t.realm,
            &format!("u-{}", t.slug),
            t.organization.as_deref(),
        )
        .await
        .unwrap();
    let first = tokens["refresh_token"].as_str().unwrap().to_string();
    let refresh = |token: &str| {
        app.anonymous(Method::POST, &t.slug, "/v1/auth/refresh")
            .json(&json!({"refresh_token": token}))
            .send()
    };
    let res = refresh(&first).await.unwrap();
    assert_eq!(res.status(), 200);
    let renewed: Value = res.json().await.unwrap();
    let access = renewed["access_token"].as_str().unwrap();
    assert_ne!(
        renewed["refresh_token"].as_str().unwrap(),
        first,
        "the refresh token rotates"
    );
    let ok = app
        .anonymous(Method::GET, &t.slug, "/v1/notes")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "the new access token works");
    expect_problem(refresh(&first).await.unwrap(), 401, "refresh-token-invalid").await;
    expect_problem(
        refresh("garbage").await.unwrap(),
        401,
        "refresh-token-invalid",
    )
    .await;
    let res = app
        .anonymous(Method::POST, &t.slug, "/v1/auth/refresh")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 422, "validation").await;
    app.cleanup().await;
}

#[tokio::test]
async fn admins_revoke_a_users_sessions_and_members_cannot() {
    let app = TestApp::start().await;
    let t = app.with_tenant_identity("us", "schema", "realm").await;
    let member: Value = app
        .tenant_req(Method::GET, &t.slug, "/v1/me")
        .fetch_json()
        .await;
    let kc = &app.state().keycloak;
    let admin_name = format!("admin-{}", t.slug);
    let admin_token = app
        .member_token(&t.realm, t.organization.as_deref(), &admin_name)
        .await;
    let admin_id = kc
        .ensure_user(&t.realm, &admin_name, "a@example.test", TEST_PASSWORD)
        .await
        .unwrap();
    // A member may not revoke others (the admin has no row yet: use the member's own id).
    let path = format!("/v1/users/{}/sessions", member["id"].as_str().unwrap());
    let as_member = app
        .anonymous(Method::DELETE, &t.slug, &path)
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    expect_problem(as_member, 403, "forbidden").await;
    kc.grant_realm_role(&t.realm, &admin_id, "admin")
        .await
        .unwrap();
    let admin_token = app
        .login(&t.realm, &admin_name, t.organization.as_deref())
        .await
        .unwrap();
    let res = app
        .anonymous(Method::DELETE, &t.slug, &path)
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    expect_problem(
        app.tenant_req(Method::GET, &t.slug, "/v1/notes")
            .send()
            .await
            .unwrap(),
        401,
        "session-revoked",
    )
    .await;
    // The admin's own session is untouched.
    let ok = app
        .anonymous(Method::GET, &t.slug, "/v1/notes")
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let unknown = "/v1/users/usr_0193a8c5e1f27b3c9d4e5f6a7b8c9d0e/sessions";
    let res = app
        .anonymous(Method::DELETE, &t.slug, unknown)
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    expect_problem(res, 404, "not-found").await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_new_device_is_noticed() {
    let app = TestApp::start().await;
    let t = app.with_tenant("eu", "schema").await;
    let count = || async {
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
            .find(|l| l.starts_with("neotenant_new_devices_total "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = count().await;
    let first = app
        .tenant_req(Method::GET, &t.slug, "/v1/notes")
        .header("user-agent", UA)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(
        count().await,
        before + 1.0,
        "the first device of a user is new"
    );
    // A second session of the same user from the same device is not new; another device is.
    let again = app
        .login(
            &t.realm,
            &format!("u-{}", t.slug),
            t.organization.as_deref(),
        )
        .await
        .unwrap();
    app.anonymous(Method::GET, &t.slug, "/v1/notes")
        .bearer_auth(&again)
        .header("user-agent", UA)
        .send()
        .await
        .unwrap();
    assert_eq!(count().await, before + 1.0);
    let other = app
        .login(
            &t.realm,
            &format!("u-{}", t.slug),
            t.organization.as_deref(),
        )
        .await
        .unwrap();
    app.anonymous(Method::GET, &t.slug, "/v1/notes")
        .bearer_auth(&other)
        .header("user-agent", "Another Browser/2")
        .header("x-forwarded-for", "198.51.100.20")
        .send()
        .await
        .unwrap();
    assert_eq!(count().await, before + 2.0);
    // Each new device is a security event in the tenant's audit log.
    neotenant_tests::await_audit(&app, &t, "session.new_device", 2).await;
    app.cleanup().await;
}

#[tokio::test]
async fn shared_realm_roles_never_make_a_tenant_admin() {
    // In organization mode the realm is shared by the region's tenants: an `admin` realm role
    // there must not administer any of them.
    let app = TestApp::start().await;
    let t = app.with_tenant("eu", "schema").await;
    let member: Value = app
        .tenant_req(Method::GET, &t.slug, "/v1/me")
        .fetch_json()
        .await;
    let kc = &app.state().keycloak;
    let name = format!("regional-admin-{}", t.slug);
    app.member_token(&t.realm, t.organization.as_deref(), &name)
        .await;
    let id = kc
        .ensure_user(
            &t.realm,
            &name,
            &format!("{name}@example.test"),
            TEST_PASSWORD,
        )
        .await
        .unwrap();
    kc.grant_realm_role(&t.realm, &id, "admin").await.unwrap();
    let token = app
        .login(&t.realm, &name, t.organization.as_deref())
        .await
        .unwrap();
    let path = format!("/v1/users/{}/sessions", member["id"].as_str().unwrap());
    let res = app
        .anonymous(Method::DELETE, &t.slug, &path)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;
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

#[tokio::test]
async fn password_reset_mails_the_member_and_nobody_else() {
    let app = TestApp::start().await;
    let t = app.with_tenant("us", "schema").await;
    let other = app.with_tenant("us", "schema").await;
    let reset = |tenant: &str, login: &str| {
        app.anonymous(Method::POST, tenant, "/v1/auth/password-reset")
            .json(&json!({"login": login}))
            .send()
    };
    let address = format!("u-{}@example.test", t.slug);
    let res = reset(&t.slug, &format!("u-{}", t.slug)).await.unwrap();
    assert_eq!(res.status(), 202);
    let mut mail = Vec::new();
    for _ in 0..100 {
        mail = mails_to(&address);
        if !mail.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(mail.len(), 1, "one reset mail reaches the user");
    assert!(
        mail[0].contains("action-token") || mail[0].contains("Update Password"),
        "{}",
        mail[0]
    );

    // Unknown logins and members of another tenant get the same answer and no mail.
    assert_eq!(
        reset(&t.slug, "nobody-at-all@example.test")
            .await
            .unwrap()
            .status(),
        202
    );
    let other_address = format!("u-{}@example.test", other.slug);
    assert_eq!(reset(&t.slug, &other_address).await.unwrap().status(), 202);
    // A repeat within the minute sends nothing more.
    assert_eq!(reset(&t.slug, &address).await.unwrap().status(), 202);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(mails_to(&address).len(), 1);
    assert!(
        mails_to(&other_address).is_empty(),
        "no mail across tenants"
    );
    let res = app
        .anonymous(Method::POST, &t.slug, "/v1/auth/password-reset")
        .json(&json!({"login": ""}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 422, "validation").await;
    app.cleanup().await;
}
