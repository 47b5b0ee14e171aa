//! User management by tenant admins, kept consistent between Keycloak and PostgreSQL.

use neotenant_tests::{
    Fetch, Forwarder, TEST_PASSWORD, TestApp, TestTenant, expect_problem, test_config,
};
use reqwest::Method;
use serde_json::{Value, json};

/// An admin of a realm-mode tenant: (tenant, admin token).
async fn admin_of(app: &TestApp) -> (TestTenant, String) {
    let t = app.with_tenant_identity("eu", "schema", "realm").await;
    let kc = &app.state().keycloak;
    let name = format!("boss-{}", t.slug);
    app.member_token(&t.realm, None, &name).await;
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
    let token = app.login(&t.realm, &name, None).await.unwrap();
    (t, token)
}

#[tokio::test]
async fn admins_manage_users_in_keycloak_and_here() {
    let app = TestApp::start().await;
    let (t, admin) = admin_of(&app).await;
    let kc = app.state().keycloak.clone();
    let as_admin = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&admin);
    let username = format!("new-{}", &t.slug[2..]);
    let body = json!({"username": username, "email": format!("{username}@example.test"), "display_name": "New Person",
                      "password": "first-Password-1", "temporary": false});
    let res = as_admin(Method::POST, "/v1/users")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    expect_problem(
        as_admin(Method::POST, "/v1/users")
            .json(&body)
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;

    // The new user signs in and is the same user here.
    let res = app
        .client
        .post(kc.token_endpoint(&t.realm))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "neotenant-app"),
            ("username", username.as_str()),
            ("password", "first-Password-1"),
        ])
        .send()
        .await
        .unwrap();
    let tokens: Value = res.json().await.unwrap();
    let user_token = tokens["access_token"]
        .as_str()
        .expect("the new user can log in")
        .to_string();
    let me: Value = app
        .anonymous(Method::GET, &t.slug, "/v1/me")
        .bearer_auth(&user_token)
        .fetch_json()
        .await;
    assert_eq!(me["id"], id);
    // A member cannot manage users.
    expect_problem(
        app.anonymous(Method::GET, &t.slug, "/v1/users")
            .bearer_auth(&user_token)
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;

    // Changes reach Keycloak.
    let new_email = format!("renamed-{username}@example.test");
    let res = as_admin(Method::PATCH, &format!("/v1/users/{id}"))
        .json(&json!({"email": new_email}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        kc.find_user(&t.realm, &new_email).await.unwrap().as_deref(),
        Some(created["subject"].as_str().unwrap())
    );

    // Deactivated: refused now, and cannot log in.
    let res = as_admin(Method::POST, &format!("/v1/users/{id}/deactivate"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let refused = app
        .anonymous(Method::GET, &t.slug, "/v1/notes")
        .bearer_auth(&user_token)
        .send()
        .await
        .unwrap();
    assert!(matches!(refused.status().as_u16(), 401 | 403));
    let login = app.login(&t.realm, &username, None).await;
    assert!(login.is_err(), "a disabled account cannot log in");
    // Reactivated: back.
    let res = as_admin(Method::POST, &format!("/v1/users/{id}/reactivate"))
        .send()
        .await
        .unwrap();
    let back: Value = res.json().await.unwrap();
    assert_eq!(back["status"], "active");

    // Deleted: the row stays as deleted; the account and the avatar are gone.
    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image::RgbImage::new(80, 80))
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let boundary = "useradmin-avatar";
    let mut upload = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n"
    )
    .into_bytes();
    upload.extend_from_slice(png.get_ref());
    upload.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let res = as_admin(Method::PUT, &format!("/v1/users/{id}/avatar"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(upload)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = as_admin(Method::DELETE, &format!("/v1/users/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let gone: Value = as_admin(Method::GET, &format!("/v1/users/{id}"))
        .fetch_json()
        .await;
    assert_eq!(gone["status"], "deleted");
    // A soft-deleted row keeps no email or name in clear.
    assert!(
        gone["email"].is_null() && gone["display_name"].is_null() && gone["username"].is_null()
    );
    let res = as_admin(Method::GET, &format!("/v1/users/{id}/avatar"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "a deleted user keeps no avatar");
    assert!(kc.find_user(&t.realm, &new_email).await.unwrap().is_none());
    let listed: Value = as_admin(Method::GET, "/v1/users?limit=200")
        .fetch_json()
        .await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["id"] == id.as_str())
    );
    let res = as_admin(Method::POST, "/v1/users")
        .json(&json!({"username": "X", "email": "nope"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2);
    // Each change is in the tenant's audit log, attributed to the admin.
    let actions = neotenant_tests::audit_actions(&app, &t).await;
    for a in [
        "user.created",
        "user.updated",
        "user.deactivated",
        "user.reactivated",
        "user.deleted",
    ] {
        assert!(actions.contains(&a.to_string()), "{a} in {actions:?}");
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_failing_mid_operation_leaves_both_sides_unchanged() {
    let kc_url = url::Url::parse(&test_config().keycloak.url).unwrap();
    let target = std::net::SocketAddr::new("127.0.0.1".parse().unwrap(), kc_url.port().unwrap());
    let forwarder = Forwarder::start(target).await;
    let mut config = test_config();
    config.keycloak.url = format!("http://{}", forwarder.addr);
    let app = TestApp::start_with(config).await;
    let (t, admin) = admin_of(&app).await;
    let as_admin = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&admin);
    let member: Value = app
        .tenant_req(Method::GET, &t.slug, "/v1/me")
        .fetch_json()
        .await;
    let member_id = member["id"].as_str().unwrap().to_string();
    assert_eq!(
        as_admin(Method::GET, "/v1/users")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    forwarder.stop();
    let res = as_admin(Method::POST, "/v1/users")
        .json(&json!({"username": "never-made", "email": "never-made@example.test"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 503, "identity-unavailable").await;
    let res = as_admin(Method::POST, &format!("/v1/users/{member_id}/deactivate"))
        .send()
        .await
        .unwrap();
    expect_problem(res, 503, "identity-unavailable").await;
    let res = as_admin(Method::PATCH, &format!("/v1/users/{member_id}"))
        .json(&json!({"email": "x@example.test"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 503, "identity-unavailable").await;

    let users: Value = as_admin(Method::GET, "/v1/users").fetch_json().await;
    let items = users["items"].as_array().unwrap();
    assert!(
        !items.iter().any(|u| u["username"] == "never-made"),
        "no row without an account"
    );
    let still = items
        .iter()
        .find(|u| u["id"] == member_id.as_str())
        .unwrap();
    assert_eq!(
        still["status"], "active",
        "the failed deactivation changed nothing"
    );
    assert_ne!(
        still["email"], "x@example.test",
        "the failed change changed nothing"
    );
    assert_eq!(
        app.tenant_req(Method::GET, &t.slug, "/v1/notes")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let mut app = app;
    app.server.take().unwrap().shutdown().await;
    let cleaner = TestApp::start().await;
    cleaner.track(&t.slug);
    cleaner.cleanup().await;
}
