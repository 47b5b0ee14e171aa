//! Tenant provisioning and lifecycle through the platform-admin API.

use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use neotenant_tests::{
    Fetch, TestApp, all_pages, direct, expect_problem, random_slug, test_config,
};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn admin_api_requires_the_platform_token() {
    let app = TestApp::start().await;
    let res = app
        .client
        .get(app.url("/admin/v1/tenants"))
        .send()
        .await
        .unwrap();
    let www = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    expect_problem(res, 401, "unauthorized").await;
    assert_eq!(www.as_deref(), Some("Bearer realm=\"neotenant-admin\""));
    for token in ["wrong", "", "dev-platform-token-0123456789abcdeF"] {
        let res = app
            .client
            .get(app.url("/admin/v1/tenants"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        expect_problem(res, 401, "unauthorized").await;
    }
    let res = app
        .client
        .post(app.url("/admin/v1/tenants"))
        .header("authorization", format!("Basic {}", app.admin_token()))
        .json(&json!({"slug": random_slug("x"), "display_name": "x", "region": "us"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 401, "unauthorized").await;
    app.cleanup().await;
}

#[tokio::test]
async fn create_is_validated_idempotent_and_conflicts_on_different_placement() {
    let app = TestApp::start().await;
    let slug = random_slug("life");
    let body =
        json!({"slug": slug, "display_name": "Life", "region": "eu", "isolation": "database"});
    let res = app
        .admin(Method::POST, "/admin/v1/tenants")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.headers()["location"],
        format!("/admin/v1/tenants/{slug}")
    );
    app.track(&slug);
    let first: Value = res.json().await.unwrap();
    assert_eq!(first["status"], "active");
    let latest = neotenant::db::migrate::set("tenant")
        .last()
        .unwrap()
        .version;
    assert_eq!(first["schema_version"], latest);

    let res = app
        .admin(Method::POST, "/admin/v1/tenants")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "repeating a create is not an error");
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    let moved =
        json!({"slug": slug, "display_name": "Life", "region": "us", "isolation": "database"});
    expect_problem(
        app.admin(Method::POST, "/admin/v1/tenants")
            .json(&moved)
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;

    let res = app
        .admin(Method::POST, "/admin/v1/tenants")
        .json(&json!({"slug": "Bad_Slug", "display_name": "", "region": "us"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/slug", "/display_name"]);
    let res = app
        .admin(Method::POST, "/admin/v1/tenants")
        .json(&json!({"slug": random_slug("x"), "display_name": "x", "region": "mars"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    assert_eq!(problem["errors"][0]["pointer"], "/region");

    let shown: Value = app
        .admin(Method::GET, &format!("/admin/v1/tenants/{slug}"))
        .fetch_json()
        .await;
    assert_eq!(
        shown["database"],
        format!("tenant_{}", slug.replace('-', "_"))
    );
    expect_problem(
        app.admin(Method::GET, "/admin/v1/tenants/nobody-here")
            .send()
            .await
            .unwrap(),
        404,
        "tenant-not-found",
    )
    .await;
    expect_problem(
        app.admin(Method::GET, "/admin/v1/tenants/NOT_A_SLUG")
            .send()
            .await
            .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn suspend_resume_and_delete_with_confirmation() {
    let app = TestApp::start().await;
    let t = app.with_tenant("us", "database").await;
    let note = app
        .tenant_req(Method::POST, &t.slug, "/v1/notes")
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(note.status(), 201);

    let res = app
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/{}/suspend", t.slug),
        )
        .send()
        .await
        .unwrap();
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["status"], "suspended");
    assert!(v["suspended_at"].is_string());
    expect_problem(
        app.tenant_req(Method::GET, &t.slug, "/v1/notes")
            .send()
            .await
            .unwrap(),
        403,
        "tenant-suspended",
    )
    .await;
    // Suspending twice is a no-op, not an error.
    let res = app
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/{}/suspend", t.slug),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/{}/resume", t.slug),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.tenant_req(Method::GET, &t.slug, "/v1/notes")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let res = app
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/{}/resume", t.slug),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "resuming an active tenant is a no-op");

    // Deleting needs the slug repeated.
    let path = format!("/admin/v1/tenants/{}", t.slug);
    expect_problem(
        app.admin(Method::DELETE, &path).send().await.unwrap(),
        428,
        "confirmation-required",
    )
    .await;
    expect_problem(
        app.admin(Method::DELETE, &format!("{path}?confirm=other"))
            .send()
            .await
            .unwrap(),
        428,
        "confirmation-required",
    )
    .await;
    let res = app
        .admin(Method::DELETE, &format!("{path}?confirm={}", t.slug))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    expect_problem(
        app.admin(Method::GET, &path).send().await.unwrap(),
        404,
        "tenant-not-found",
    )
    .await;
    expect_problem(
        app.tenant_req(Method::GET, &t.slug, "/v1/notes")
            .send()
            .await
            .unwrap(),
        404,
        "tenant-not-found",
    )
    .await;

    // Its database is gone too.
    let config = test_config();
    let mut pg = direct(&config, "postgres").await;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let n: N = diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
        .bind::<diesel::sql_types::Text, _>(&t.database)
        .get_result(&mut pg)
        .await
        .unwrap();
    assert_eq!(n.n, 0);
    app.cleanup().await;
}

#[tokio::test]
async fn interrupted_provisioning_is_invisible_and_resumes() {
    let app = TestApp::start().await;
    let t = app.with_tenant("eu", "schema").await;
    let config = test_config();
    // Simulate a crash after the registry row was written but before the schema existed.
    let mut registry = direct(&config, &config.database.registry_database).await;
    diesel::sql_query("UPDATE admin.tenants SET status = 'provisioning' WHERE slug = $1")
        .bind::<diesel::sql_types::Text, _>(&t.slug)
        .execute(&mut registry)
        .await
        .unwrap();
    let mut shared = direct(&config, &t.database).await;
    shared
        .batch_execute(&format!("DROP SCHEMA \"{}\" CASCADE", t.schema))
        .await
        .unwrap();
    app.state().tenant_cache.invalidate(&t.slug).await;

    expect_problem(
        app.tenant_req(Method::GET, &t.slug, "/v1/notes")
            .send()
            .await
            .unwrap(),
        503,
        "tenant-unavailable",
    )
    .await;

    // Re-running the same create finishes the job.
    let res = app
        .admin(Method::POST, "/admin/v1/tenants")
        .json(&json!({"slug": t.slug, "display_name": "again", "region": "eu", "isolation": "schema"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["status"], "active");
    let res = app
        .tenant_req(Method::POST, &t.slug, "/v1/notes")
        .json(&json!({"title": "back"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    app.cleanup().await;
}

#[tokio::test]
async fn list_pages_through_tenants() {
    let app = TestApp::start().await;
    for _ in 0..3 {
        app.with_tenant("us", "schema").await;
    }
    let mut seen = std::collections::HashSet::new();
    for t in all_pages(2, "/admin/v1/tenants?limit=2", |p| {
        app.admin(Method::GET, p)
    })
    .await
    {
        assert!(
            seen.insert(t["slug"].as_str().unwrap().to_string()),
            "no tenant twice"
        );
    }
    assert!(seen.len() >= 3);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_tenant_make_it_once() {
    let app = TestApp::start().await;
    let slug = random_slug("race");
    app.track(&slug);
    let body =
        json!({"slug": slug, "display_name": "Race", "region": "eu", "isolation": "database"});
    let sends = (0..6).map(|_| {
        app.admin(Method::POST, "/admin/v1/tenants")
            .json(&body)
            .send()
    });
    let statuses: Vec<u16> = futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 200),
        "{statuses:?}"
    );
    app.add_member(&slug).await;
    let res = app
        .tenant_req(Method::POST, &slug, "/v1/notes")
        .json(&json!({"title": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletion_racing_a_migration_leaves_nothing_behind() {
    let app = TestApp::start().await;
    let config = test_config();
    for round in 0..8 {
        let t = app.with_tenant("us", "schema").await;
        let state = app.state();
        // Start the migration a little earlier or later each round to hit both orders.
        let stagger = std::time::Duration::from_millis(round % 4);
        let (deleted, _migrated) = tokio::join!(
            neotenant::tenancy::service::delete(&state.tenancy, &t.slug, Some(&t.slug)),
            async {
                tokio::time::sleep(stagger).await;
                neotenant::tenancy::service::migrate_one(&state.tenancy, &t.slug).await
            },
        );
        deleted.unwrap();
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut shared = direct(&config, "neofast_shared_us").await;
        let n: N = diesel::sql_query("SELECT count(*) AS n FROM pg_namespace WHERE nspname = $1")
            .bind::<diesel::sql_types::Text, _>(&t.schema)
            .get_result(&mut shared)
            .await
            .unwrap();
        assert_eq!(
            n.n, 0,
            "a migration resurrected the schema of deleted tenant {}",
            t.slug
        );
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_reach_other_instances_through_the_broadcast() {
    // Instance B caches tenants for an hour: only the Redis broadcast can make it notice.
    let a = TestApp::start().await;
    let mut config = test_config();
    config.tenancy.cache_ttl_secs = 3600;
    let b = TestApp::start_with(config).await;
    let t = a.with_tenant("eu", "schema").await;
    b.use_token(&t.slug, &t.token);
    assert_eq!(
        b.tenant_req(Method::GET, &t.slug, "/v1/notes")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    a.admin(
        Method::POST,
        &format!("/admin/v1/tenants/{}/suspend", t.slug),
    )
    .send()
    .await
    .unwrap();
    let mut seen = 0;
    for _ in 0..50 {
        seen = b
            .tenant_req(Method::GET, &t.slug, "/v1/notes")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if seen == 403 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 403, "instance B never learned of the suspension");
    b.cleanup().await;
    a.cleanup().await;
}

#[tokio::test]
async fn identity_homes_are_made_linked_and_removed_precisely() {
    let app = TestApp::start().await;
    let kc = app.state().keycloak.clone();

    // Realm mode: the tenant's own realm, gone with the tenant.
    let own = app.with_tenant_identity("eu", "schema", "realm").await;
    assert_eq!(own.realm, format!("tenant-{}", own.slug));
    assert!(kc.realm_exists(&own.realm).await.unwrap());
    // Organization mode: an organization in the shared realm, gone with the tenant; the realm stays.
    let org = app.with_tenant("eu", "schema").await;
    assert_eq!(org.realm, "neotenant-eu");
    assert!(
        kc.find_organization(&org.realm, &org.slug)
            .await
            .unwrap()
            .is_some()
    );

    // Linked realm and linked organization that existed before.
    let outside_realm = format!("outside-{}", random_slug("r"));
    kc.ensure_realm(&outside_realm, "Outside", false, "someone-else")
        .await
        .unwrap();
    let outside_org = random_slug("o");
    kc.ensure_organization("neotenant-eu", &outside_org, "Outside org", "someone-else")
        .await
        .unwrap();
    let linked_realm = random_slug("lr");
    let linked_org = random_slug("lo");
    for (slug, identity) in [
        (
            &linked_realm,
            json!({"mode": "realm", "link": outside_realm}),
        ),
        (
            &linked_org,
            json!({"mode": "organization", "link": outside_org}),
        ),
    ] {
        let res = app
            .admin(Method::POST, "/admin/v1/tenants")
            .json(&json!({"slug": slug, "display_name": "Linked", "region": "eu", "identity": identity}))
            .send()
            .await
            .unwrap();
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["identity"]["linked"], true, "{body}");
        assert_eq!(body["identity"]["ready"], true, "{body}");
    }
    // Users of the linked realm sign in to the tenant.
    app.add_member(&linked_realm).await;
    let res = app
        .tenant_req(Method::GET, &linked_realm, "/v1/notes")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        kc.client_exists(&outside_realm, "neotenant-api")
            .await
            .unwrap()
    );

    // A realm that exists but is not ours is not adopted silently.
    let squatted = random_slug("sq");
    kc.ensure_realm(
        &format!("tenant-{squatted}"),
        "Squatter",
        false,
        "someone-else",
    )
    .await
    .unwrap();
    let res = app
        .admin(Method::POST, "/admin/v1/tenants")
        .json(&json!({"slug": squatted, "display_name": "S", "region": "us", "identity": {"mode": "realm"}}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 409, "conflict").await;
    app.track(&squatted);

    for slug in [&own.slug, &org.slug, &linked_realm, &linked_org, &squatted] {
        let res = app
            .admin(
                Method::DELETE,
                &format!("/admin/v1/tenants/{slug}?confirm={slug}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "delete {slug}");
    }
    assert!(
        !kc.realm_exists(&own.realm).await.unwrap(),
        "own realm removed"
    );
    assert!(
        kc.find_organization(&org.realm, &org.slug)
            .await
            .unwrap()
            .is_none(),
        "own organization removed"
    );
    assert!(
        kc.realm_exists("neotenant-eu").await.unwrap(),
        "the shared realm stays"
    );
    assert!(
        kc.realm_exists(&outside_realm).await.unwrap(),
        "a linked realm stays"
    );
    assert!(
        !kc.client_exists(&outside_realm, "neotenant-api")
            .await
            .unwrap(),
        "what we added to it goes"
    );
    assert!(
        kc.find_organization("neotenant-eu", &outside_org)
            .await
            .unwrap()
            .is_some(),
        "a linked organization stays"
    );
    assert!(
        kc.realm_exists(&format!("tenant-{squatted}"))
            .await
            .unwrap(),
        "a foreign realm is never deleted"
    );

    kc.delete_realm(&outside_realm).await.unwrap();
    kc.delete_realm(&format!("tenant-{squatted}"))
        .await
        .unwrap();
    let (id, _) = kc
        .find_organization("neotenant-eu", &outside_org)
        .await
        .unwrap()
        .unwrap();
    kc.delete_organization("neotenant-eu", &id).await.unwrap();
    app.cleanup().await;
}

#[tokio::test]
async fn login_providers_are_configured_per_tenant() {
    let app = TestApp::start().await;
    let org = app.with_tenant("us", "schema").await;
    let own = app.with_tenant_identity("us", "schema", "realm").await;
    let kc = app.state().keycloak.clone();
    let github = json!({"provider": "github", "client_id": "gh-client", "client_secret": "gh-secret-value", "display_name": "GitHub"});
    for t in [&org, &own] {
        let path = format!("/admin/v1/tenants/{}/identity-providers/github", t.slug);
        let res = app
            .admin(Method::PUT, &path)
            .json(&github)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let listed = app
            .admin(
                Method::GET,
                &format!("/admin/v1/tenants/{}/identity-providers", t.slug),
            )
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let listed: Value = serde_json::from_str(&listed).unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
        assert_eq!(listed[0]["alias"], "github");
        assert_eq!(listed[0]["client_id"], "gh-client");
        assert!(
            !listed.to_string().contains("gh-secret-value"),
            "secrets are write-only"
        );
    }
    // In Keycloak: the realm tenant's own realm has it; the organization tenant's lives in the
    // shared realm under a tenant-specific alias, linked to its organization only.
    let in_own = kc.list_identity_providers(&own.realm, None).await.unwrap();
    assert!(in_own.iter().any(|p| p["alias"] == "github"));
    let (org_id, _) = kc
        .find_organization(&org.realm, &org.slug)
        .await
        .unwrap()
        .unwrap();
    let linked = kc
        .list_identity_providers(&org.realm, Some(&org_id))
        .await
        .unwrap();
    assert_eq!(linked.len(), 1);
    assert_eq!(linked[0]["alias"], format!("{}--github", org.slug));
    // Another organization tenant sees none of it.
    let third = app.with_tenant("us", "schema").await;
    let none: Value = app
        .admin(
            Method::GET,
            &format!("/admin/v1/tenants/{}/identity-providers", third.slug),
        )
        .fetch_json()
        .await;
    assert_eq!(none, json!([]));

    let bad = json!({"provider": "myspace", "client_id": "", "client_secret": "x"});
    let res = app
        .admin(
            Method::PUT,
            &format!("/admin/v1/tenants/{}/identity-providers/x", org.slug),
        )
        .json(&bad)
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2);
    let res = app
        .admin(
            Method::PUT,
            &format!(
                "/admin/v1/tenants/{}/identity-providers/Bad--Alias",
                org.slug
            ),
        )
        .json(&github)
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-parameter").await;

    let res = app
        .admin(
            Method::DELETE,
            &format!("/admin/v1/tenants/{}/identity-providers/github", own.slug),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(
        kc.list_identity_providers(&own.realm, None)
            .await
            .unwrap()
            .is_empty()
    );
    // Deleting the organization tenant removes its provider from the shared realm.
    let slug = org.slug.clone();
    let res = app
        .admin(
            Method::DELETE,
            &format!("/admin/v1/tenants/{slug}?confirm={slug}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let all = kc.list_identity_providers(&org.realm, None).await.unwrap();
    assert!(
        !all.iter().any(|p| p["alias"] == format!("{slug}--github")),
        "provider removed with its tenant"
    );
    app.cleanup().await;
}
