//! Users created just in time from tokens, per tenant, and refused when inactive.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use neotenant_tests::{TestApp, direct, expect_problem, test_config};
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
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    shown["id"].as_str().unwrap().parse().unwrap()
}
