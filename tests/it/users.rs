//! Users created just in time from tokens, per tenant, and refused when inactive.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use neotenant_tests::{Fetch, TestApp, direct, expect_problem, test_config};
use reqwest::Method;
use serde_json::Value;

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[tokio::test]
async fn first_request_creates_the_user_and_later_ones_reuse_it() {
    let app = TestApp::start().await;
    let t = app.with_tenant("eu", "schema").await;
    let config = test_config();
    let mut db = direct(&config, &t.database).await;
    let count = |n: &str| format!("SELECT count(*) AS n FROM \"{}\".users{n}", t.schema);
    let before: N = diesel::sql_query(count(""))
        .get_result(&mut db)
        .await
        .unwrap();
    assert_eq!(before.n, 0, "no user before the first request");

    let me: Value = app
        .tenant_req(Method::GET, &t.slug, "/v1/me")
        .fetch_json()
        .await;
    assert!(me["id"].as_str().unwrap().starts_with("usr_"), "{me}");
    assert_eq!(me["username"], format!("u-{}", t.slug));
    assert_eq!(me["email"], format!("u-{}@example.test", t.slug));
    assert_eq!(me["status"], "active");
    assert!(
        me["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "member"),
        "default role: {me}"
    );
    for _ in 0..3 {
        let again: Value = app
            .tenant_req(Method::GET, &t.slug, "/v1/me")
            .fetch_json()
            .await;
        assert_eq!(again["id"], me["id"]);
    }
    let after: N = diesel::sql_query(count(" WHERE subject = $1"))
        .bind::<Text, _>(me["subject"].as_str().unwrap())
        .get_result(&mut db)
        .await
        .unwrap();
    assert_eq!(after.n, 1);

    // Any authenticated request creates the row, not only /v1/me.
    let u = app.with_tenant("eu", "schema").await;
    app.tenant_req(Method::GET, &u.slug, "/v1/notes")
        .send()
        .await
        .unwrap();
    let mut db_u = direct(&config, &u.database).await;
    let n: N = diesel::sql_query(format!("SELECT count(*) AS n FROM \"{}\".users", u.schema))
        .get_result(&mut db_u)
        .await
        .unwrap();
    assert_eq!(n.n, 1);

    // A deactivated user is refused even with a valid token.
    diesel::sql_query(format!(
        "UPDATE \"{}\".users SET status = 'deactivated'",
        t.schema
    ))
    .execute(&mut db)
    .await
    .unwrap();
    let tenant_id: neotenant::ids::TenantId = me_tenant_id(&app, &t.slug).await;
    app.state()
        .users
        .users
        .evict(tenant_id, me["subject"].as_str().unwrap());
    let res = app
        .tenant_req(Method::GET, &t.slug, "/v1/notes")
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "user-inactive").await;
    app.cleanup().await;
}

async fn me_tenant_id(app: &TestApp, slug: &str) -> neotenant::ids::TenantId {
    let shown: Value = app
        .admin(Method::GET, &format!("/admin/v1/tenants/{slug}"))
        .fetch_json()
        .await;
    shown["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn keycloak_side_changes_arrive_by_reconciliation() {
    let app = TestApp::start().await;
    let t = app.with_tenant("us", "schema").await;
    let kc = app.state().keycloak.clone();
    let me: Value = app
        .tenant_req(Method::GET, &t.slug, "/v1/me")
        .fetch_json()
        .await;
    let subject = me["subject"].as_str().unwrap().to_string();

    // Changed in Keycloak's own console: a profile, a new member, a disabled member.
    kc.update_user(&t.realm, &subject, &serde_json::json!({"email": format!("changed-{}@example.test", t.slug), "firstName": "Changed", "lastName": "Name"}))
        .await
        .unwrap();
    let console_user = format!("console-{}", t.slug);
    let console_id = kc
        .ensure_user(
            &t.realm,
            &console_user,
            &format!("{console_user}@example.test"),
            neotenant_tests::TEST_PASSWORD,
        )
        .await
        .unwrap();
    let (org_id, _) = kc
        .find_organization(&t.realm, t.organization.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    kc.add_organization_member(&t.realm, &org_id, &console_id)
        .await
        .unwrap();
    let leaver = format!("leaver-{}", t.slug);
    let leaver_token = app
        .member_token(&t.realm, t.organization.as_deref(), &leaver)
        .await;
    let leaver_me: Value = app
        .anonymous(Method::GET, &t.slug, "/v1/me")
        .bearer_auth(&leaver_token)
        .fetch_json()
        .await;
    kc.update_user(
        &t.realm,
        leaver_me["subject"].as_str().unwrap(),
        &serde_json::json!({"enabled": false}),
    )
    .await
    .unwrap();

    let report: Value = app
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/{}/reconcile-users", t.slug),
        )
        .fetch_json()
        .await;
    assert_eq!(report["seen"], 3, "{report}");
    assert_eq!(report["changed"], 3, "{report}");

    let config = test_config();
    let mut db = direct(&config, &t.database).await;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        subject: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
        email: Option<String>,
        #[diesel(sql_type = Text)]
        status: String,
    }
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT subject, email, status FROM \"{}\".users",
        t.schema
    ))
    .load(&mut db)
    .await
    .unwrap();
    let row = |s: &str| {
        rows.iter()
            .find(|r| r.subject == s)
            .unwrap_or_else(|| panic!("no row for {s}"))
    };
    assert_eq!(
        row(&subject).email.as_deref(),
        Some(format!("changed-{}@example.test", t.slug).as_str())
    );
    assert_eq!(
        row(&console_id).status,
        "active",
        "a user made in Keycloak arrives"
    );
    assert_eq!(
        row(leaver_me["subject"].as_str().unwrap()).status,
        "deactivated"
    );

    // The change shows through the API at once, and the disabled user is out.
    let again: Value = app
        .tenant_req(Method::GET, &t.slug, "/v1/me")
        .fetch_json()
        .await;
    assert_eq!(again["email"], format!("changed-{}@example.test", t.slug));
    assert_eq!(again["display_name"], "Changed Name");
    let res = app
        .anonymous(Method::GET, &t.slug, "/v1/notes")
        .bearer_auth(&leaver_token)
        .send()
        .await
        .unwrap();
    assert!(
        matches!(res.status().as_u16(), 401 | 403),
        "disabled user refused: {}",
        res.status()
    );

    // Gone from Keycloak: deactivated here on the next round.
    kc.delete_user(&t.realm, &console_id).await.unwrap();
    let report: Value = app
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/{}/reconcile-users", t.slug),
        )
        .fetch_json()
        .await;
    assert_eq!(report["removed"], 1, "{report}");
    app.cleanup().await;
}
