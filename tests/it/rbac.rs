//! RBAC through the API: templates, hierarchy, delegation (escalation attempts), deny wins,
//! explanations, audit entries, invalidation across instances and a Redis outage.

use std::time::{Duration, Instant};

use neotenant_tests::{Fetch, Forwarder, TestApp, expect_problem, tenant_with_admin, test_config};
use reqwest::Method;
use serde_json::{Value, json};

pub async fn check(app: &TestApp, slug: &str, token: &str, perms: &[&str]) -> Vec<bool> {
    let checks: Vec<Value> = perms.iter().map(|p| json!({"permission": p})).collect();
    let res = app
        .anonymous(Method::POST, slug, "/v1/permissions/check")
        .bearer_auth(token)
        .json(&json!({ "checks": checks }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["allowed"].as_bool().unwrap())
        .collect()
}

#[tokio::test]
async fn roles_hierarchy_delegation_and_denies() {
    let app = TestApp::start().await;
    let (t, member, boss, boss_id) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let as_member = |m: Method, path: &str| app.tenant_req(m, &t.slug, path);

    // Every tenant starts with the platform's templates; members hold `member` by default.
    let roles: Value = as_member(Method::GET, "/v1/roles").fetch_json().await;
    let keys: Vec<&str> = roles
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["admin", "member", "owner", "viewer"]);
    let templates: Value = as_member(Method::GET, "/v1/role-templates")
        .fetch_json()
        .await;
    assert_eq!(templates.as_array().unwrap().len(), 4);
    expect_problem(
        as_member(Method::POST, "/v1/roles")
            .json(&json!({"key": "mine", "permissions": ["notes.read.own"]}))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;

    // A role with a parent; validated permissions.
    let res = as_boss(Method::POST, "/v1/roles")
        .json(&json!({"key": "editor", "name": "Editor", "permissions": ["notes.*.tenant", "users.read.team"],
                      "parents": ["viewer"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let editor: Value = res.json().await.unwrap();
    assert_eq!(editor["parents"], json!(["viewer"]));
    assert!(editor["id"].as_str().unwrap().starts_with("rol_"));
    let bad = expect_problem(
        as_boss(Method::POST, "/v1/roles")
            .json(&json!({"key": "Bad Key", "permissions": ["notes.fly.tenant", "garbage", "widgets.read.own"]}))
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    let pointers: Vec<&str> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        ["/key", "/permissions/0", "/permissions/1", "/permissions/2"]
    );
    expect_problem(
        as_boss(Method::POST, "/v1/roles")
            .json(&json!({"key": "editor", "permissions": []}))
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;
    expect_problem(
        as_boss(Method::POST, "/v1/roles")
            .json(&json!({"key": "x", "parents": ["nobody"]}))
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    // A cycle: viewer ← editor, so viewer cannot inherit from editor.
    expect_problem(
        as_boss(Method::PATCH, "/v1/roles/viewer")
            .json(&json!({"parents": ["editor"]}))
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;

    // Escalation attempts: an admin cannot mint, copy or hand out what it does not hold.
    for body in [
        json!({"key": "god", "permissions": ["*.*.tenant"]}),
        json!({"key": "owner-copy", "from_template": "owner"}),
        json!({"key": "sneaky", "parents": ["owner"]}),
    ] {
        expect_problem(
            as_boss(Method::POST, "/v1/roles")
                .json(&body)
                .send()
                .await
                .unwrap(),
            403,
            "forbidden",
        )
        .await;
    }
    expect_problem(
        as_boss(Method::POST, "/v1/roles/owner/assignments")
            .json(&json!({"user_ids": [member]}))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    expect_problem(
        as_boss(Method::PATCH, "/v1/roles/owner")
            .json(&json!({"name": "Mine"}))
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;
    // A member cannot grant itself anything.
    expect_problem(
        as_member(Method::POST, &format!("/v1/users/{member}/grants"))
            .json(&json!({"permission": "roles.assign.tenant", "effect": "allow"}))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;

    // Bulk assignment, then inheritance shows in the member's permissions.
    let res = as_boss(Method::POST, "/v1/roles/editor/assignments")
        .json(&json!({"user_ids": [member, boss_id]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["assigned"], 2);
    expect_problem(
        as_boss(Method::POST, "/v1/roles/editor/assignments")
            .json(&json!({"user_ids": ["usr_0193a8c5e1f27b3c9d4e5f6a7b8c9d0e"]}))
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    let perms: Value = as_member(Method::GET, "/v1/me/permissions?explain=true")
        .fetch_json()
        .await;
    let roles = perms["roles"].as_array().unwrap();
    for r in ["editor", "member", "viewer"] {
        assert!(roles.contains(&json!(r)), "{perms}");
    }
    let held = perms["permissions"].as_array().unwrap();
    // Listed at the widest scope held: the viewer parent's tenant scope beats editor's team.
    assert!(held.contains(&json!("users.read.tenant")), "{perms}");
    assert!(!held.contains(&json!("users.read.team")), "{perms}");
    let via_viewer = perms["explain"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pattern"] == "notes.read.tenant")
        .expect("explained");
    assert!(
        via_viewer["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["path"] == json!(["editor", "viewer"]) && s["via"]["type"] == "direct"),
        "{via_viewer}"
    );

    // Deny wins, capped at its scope.
    assert_eq!(
        check(
            &app,
            &t.slug,
            &t.token,
            &["notes.delete.tenant", "notes.delete.team"]
        )
        .await,
        [true, true]
    );
    let res = as_boss(Method::POST, &format!("/v1/users/{member}/grants"))
        .json(
            &json!({"permission": "notes.delete.tenant", "effect": "deny", "reason": "probation"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let grant: Value = res.json().await.unwrap();
    assert_eq!(
        check(
            &app,
            &t.slug,
            &t.token,
            &["notes.delete.tenant", "notes.delete.team"]
        )
        .await,
        [false, true]
    );
    let res = as_member(Method::POST, "/v1/notes")
        .json(&json!({"title": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let note: Value = res.json().await.unwrap();
    expect_problem(
        as_member(
            Method::DELETE,
            &format!("/v1/notes/{}", note["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap(),
        403,
        "forbidden",
    )
    .await;
    let explained: Value = as_boss(
        Method::GET,
        &format!("/v1/users/{member}/permissions?explain=true"),
    )
    .fetch_json()
    .await;
    let deny = explained["explain"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["effect"] == "deny")
        .expect("deny explained");
    assert_eq!(deny["pattern"], "notes.delete.tenant");
    assert_eq!(deny["sources"][0]["kind"], "grant");
    assert_eq!(deny["sources"][0]["id"], grant["id"]);
    let res = as_boss(
        Method::DELETE,
        &format!(
            "/v1/users/{member}/grants/{}",
            grant["id"].as_str().unwrap()
        ),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        check(&app, &t.slug, &t.token, &["notes.delete.tenant"]).await,
        [true]
    );

    // A member may not look at others' permissions; bad input is a problem, not a crash.
    expect_problem(
        as_member(Method::GET, &format!("/v1/users/{boss_id}/permissions"))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    expect_problem(
        as_member(Method::GET, "/v1/me/permissions?explain=maybe")
            .send()
            .await
            .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;
    expect_problem(
        as_member(Method::GET, "/v1/users/not-an-id/permissions")
            .send()
            .await
            .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;
    let many: Vec<Value> = (0..101)
        .map(|_| json!({"permission": "notes.read.own"}))
        .collect();
    expect_problem(
        as_member(Method::POST, "/v1/permissions/check")
            .json(&json!({ "checks": many }))
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    expect_problem(
        as_member(Method::POST, "/v1/permissions/check")
            .json(&json!({"checks": [{"permission": "notes.*.tenant"}]}))
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;

    // The owner: only the platform appoints the first; the last one cannot be removed.
    app.admin(
        Method::POST,
        &format!("/admin/v1/tenants/{}/role-assignments", t.slug),
    )
    .json(&json!({"role": "owner", "email": format!("boss-{}@example.test", t.slug)}))
    .send()
    .await
    .unwrap();
    let res = as_boss(Method::POST, "/v1/roles")
        .json(&json!({"key": "god", "permissions": ["*.*.tenant"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "an owner may");
    expect_problem(
        as_boss(
            Method::DELETE,
            &format!("/v1/roles/owner/assignments/{boss_id}"),
        )
        .send()
        .await
        .unwrap(),
        409,
        "conflict",
    )
    .await;

    // Every change left an audit entry.
    let actions = neotenant_tests::audit_actions(&app, &t).await;
    for a in [
        "role.created",
        "role.assigned",
        "permission.denied",
        "permission.revoked",
        "note.created",
    ] {
        assert!(actions.contains(&a.to_string()), "{a} in {actions:?}");
    }
    app.cleanup().await;
}

/// Polls `probe` until it returns `want` (at most 3 s); returns how long it took.
async fn until<F, Fut>(want: bool, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if probe().await == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the change never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn changes_reach_every_instance_and_redis_outages_stay_correct() {
    let a = TestApp::start().await;
    let (t, member, boss, _) = tenant_with_admin(&a).await;
    let b = TestApp::start().await;
    b.use_token(&t.slug, &t.token);
    // Instance c reaches Redis through a forwarder this test can cut.
    let redis_addr: std::net::SocketAddr = {
        let url = url::Url::parse(test_config().redis.url.expose()).unwrap();
        format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(6379))
            .parse()
            .unwrap()
    };
    let forwarder = Forwarder::start(redis_addr).await;
    let mut config = test_config();
    config.redis.url = neotenant::config::Secret::new(format!("redis://{}", forwarder.addr));
    let c = TestApp::start_with(config).await;
    c.use_token(&t.slug, &t.token);

    // Warm both caches.
    for app in [&b, &c] {
        assert_eq!(
            check(app, &t.slug, &t.token, &["notes.delete.tenant"]).await,
            [true]
        );
        assert_eq!(
            check(app, &t.slug, &t.token, &["notes.delete.tenant"]).await,
            [true]
        );
    }
    let deny = |effect: &str| {
        a.anonymous(Method::POST, &t.slug, &format!("/v1/users/{member}/grants"))
            .bearer_auth(&boss)
            .json(&json!({"permission": "notes.delete.tenant", "effect": effect}))
    };
    let res = deny("deny").send().await.unwrap();
    assert_eq!(res.status(), 201);
    let grant: Value = res.json().await.unwrap();
    let took = until(false, || async {
        check(&b, &t.slug, &t.token, &["notes.delete.tenant"]).await[0]
    })
    .await;
    println!("permission change reached another instance in {took:?}");
    until(false, || async {
        check(&c, &t.slug, &t.token, &["notes.delete.tenant"]).await[0]
    })
    .await;

    // Redis goes away for c: it answers from the database, and still sees changes.
    forwarder.stop();
    a.anonymous(
        Method::DELETE,
        &t.slug,
        &format!(
            "/v1/users/{member}/grants/{}",
            grant["id"].as_str().unwrap()
        ),
    )
    .bearer_auth(&boss)
    .send()
    .await
    .unwrap();
    until(true, || async {
        check(&c, &t.slug, &t.token, &["notes.delete.tenant"]).await[0]
    })
    .await;
    let res = deny("deny").send().await.unwrap();
    assert_eq!(res.status(), 201);
    // No broadcast can reach c now: the very next answer must already be right.
    assert_eq!(
        check(&c, &t.slug, &t.token, &["notes.delete.tenant"]).await,
        [false]
    );
    b.cleanup().await;
    c.cleanup().await;
    a.cleanup().await;
}
