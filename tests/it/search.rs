//! Search through the API: the outbox feeds each tenant's index; words with typos, field
//! terms, filters, facets and highlights; results limited to what the caller may read (also
//! while the index trails a change); deletes disappear; the index keeps its cursor across
//! restarts and catches up; a rebuild refills it from PostgreSQL; deleting the tenant removes
//! it; bad parameters are 400s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use neotenant::resources::indexer;
use neotenant_search::Registry;
use neotenant_tests::{Fetch, TestApp, expect_problem, me, tenant_with_admin};
use reqwest::Method;
use serde_json::{Value, json};

use crate::resources::ticket_type;

fn titles(v: &Value) -> Vec<String> {
    let mut t: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap().to_string())
        .collect();
    t.sort();
    t
}

#[tokio::test]
async fn search_finds_what_the_caller_may_read_and_follows_every_change() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let res = as_boss(Method::POST, "/v1/resource-types")
        .json(&ticket_type())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let own = app
        .member_token(
            &t.realm,
            t.organization.as_deref(),
            &format!("own-{}", t.slug),
        )
        .await;
    let own_id = me(&app, &t.slug, &own).await;
    let res = as_boss(Method::POST, &format!("/v1/users/{own_id}/grants"))
        .json(&json!({"permission": "resources.read.team", "effect": "deny"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    let create = |token: &str, data: Value, tags: Value| {
        app.anonymous(Method::POST, &t.slug, "/v1/resources/ticket")
            .bearer_auth(token)
            .json(&json!({"data": data, "tags": tags}))
    };
    let fire: Value = create(
        &t.token,
        json!({"title": "Printer on fire", "body": "The printer in room four is burning", "status": "open", "priority": 5}),
        json!(["hardware"]),
    )
    .fetch_json()
    .await;
    let keyboard: Value = create(
        &boss,
        json!({"title": "Broken keyboard", "body": "Keys stick", "status": "closed"}),
        json!(["desk"]),
    )
    .fetch_json()
    .await;
    create(
        &own,
        json!({"title": "Printer toner low", "status": "open"}),
        json!(["hardware"]),
    )
    .fetch_json()
    .await;

    let search = |token: String, query: String| {
        let app = &app;
        let t = &t;
        async move {
            app.anonymous(Method::GET, &t.slug, &format!("/v1/search?{query}"))
                .bearer_auth(&token)
                .fetch_json()
                .await
        }
    };
    // Wait for the indexer (it trails writes by a round).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r: Value = search(boss.clone(), "q=".into()).await;
        if r["total"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "not indexed: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let r = search(boss.clone(), "q=printer".into()).await;
    assert_eq!(titles(&r), ["Printer on fire", "Printer toner low"]);
    let fire_hit = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == fire["id"])
        .unwrap();
    assert!(
        fire_hit["highlight"]
            .as_str()
            .unwrap()
            .contains("<b>printer</b>"),
        "{r}"
    );
    assert_eq!(
        titles(&search(boss.clone(), "q=pronter%20burnin".into()).await),
        ["Printer on fire"],
        "typos in longer words"
    );
    assert_eq!(
        titles(&search(boss.clone(), "q=status:closed".into()).await),
        ["Broken keyboard"]
    );
    let r = search(boss.clone(), "q=&tag=hardware".into()).await;
    assert_eq!(r["total"], 2);
    let all = search(boss.clone(), "q=".into()).await;
    assert_eq!(
        all["facets"]["types"],
        json!([{"value": "ticket", "count": 3}])
    );
    assert_eq!(
        all["facets"]["tags"][0],
        json!({"value": "hardware", "count": 2})
    );
    let page1 = search(boss.clone(), "q=&limit=2".into()).await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().unwrap().to_string();
    let page2 = search(boss.clone(), format!("q=&limit=2&cursor={cursor}")).await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert!(page2.get("next_cursor").is_none());

    // The `own` reader sees only their own ticket, in results and in facets' page.
    assert_eq!(
        titles(&search(own.clone(), "q=printer".into()).await),
        ["Printer toner low"]
    );
    assert!(
        search(own.clone(), "q=keyboard".into()).await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // A share makes the keyboard visible once indexed; unsharing hides it at once (results are
    // re-checked against the database even before the index catches up).
    let kb_url = format!("/v1/resources/ticket/{}", keyboard["id"].as_str().unwrap());
    let share: Value = as_boss(Method::POST, &format!("{kb_url}/shares"))
        .json(&json!({"user_id": own_id, "access": "read"}))
        .fetch_json()
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while titles(&search(own.clone(), "q=keyboard".into()).await).is_empty() {
        assert!(Instant::now() < deadline, "share never reached the index");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let res = as_boss(
        Method::DELETE,
        &format!("{kb_url}/shares/{}", share["id"].as_str().unwrap()),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    assert!(titles(&search(own.clone(), "q=keyboard".into()).await).is_empty());

    // A soft delete leaves the index.
    let res = as_boss(Method::DELETE, &kb_url).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let deadline = Instant::now() + Duration::from_secs(15);
    while search(boss.clone(), "q=".into()).await["total"] != 2 {
        assert!(Instant::now() < deadline, "delete never reached the index");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bad parameters.
    for (q, slug) in [
        ("q=x&bogus=1", "invalid-parameter"),
        ("q=x&cursor=%%%", "invalid-cursor"),
        ("q=x&created_from=yesterday", "invalid-parameter"),
        (
            "q=x&owner=team_0193a8c5e1f27b3c9d4e5f6a7b8c9d0e",
            "invalid-parameter",
        ),
        ("limit=0", "invalid-parameter"),
    ] {
        expect_problem(
            app.anonymous(Method::GET, &t.slug, &format!("/v1/search?{q}"))
                .bearer_auth(&boss)
                .send()
                .await
                .unwrap(),
            400,
            slug,
        )
        .await;
    }
    let long = "a".repeat(501);
    expect_problem(
        app.anonymous(Method::GET, &t.slug, &format!("/v1/search?q={long}"))
            .bearer_auth(&boss)
            .send()
            .await
            .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;

    // Another index directory (as after a move or a lost disk): a fresh index catches up from
    // the start of the outbox, keeps its cursor across reopening, and a rebuild refills it.
    let tenant = neotenant::tenancy::resolve::resolve(&app.state().tenancy, &t.slug)
        .await
        .unwrap();
    let tid = tenant.tenant.id.0;
    let dir = std::env::temp_dir().join(format!("neotenant-search-test-{}", tid.simple()));
    let registry = Arc::new(Registry::new(&dir, 2));
    // Events of transactions still running elsewhere in the cluster wait for them, so catching
    // up may take more than one call.
    let key = indexer::index_key(tid);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut applied = 0;
    loop {
        applied += indexer::index_tenant(&registry, tid, &tenant.db, usize::MAX)
            .await
            .unwrap();
        if registry.get(&key).unwrap().len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A tenant with history and no index folder: built from PostgreSQL (its two resources),
    // not replayed event by event.
    assert!(applied >= 2, "applied {applied}");
    drop(registry);
    let registry = Arc::new(Registry::new(&dir, 2));
    assert_eq!(
        indexer::index_tenant(&registry, tid, &tenant.db, usize::MAX)
            .await
            .unwrap(),
        0,
        "cursor kept"
    );
    create(&boss, json!({"title": "Coffee machine"}), json!([]))
        .fetch_json()
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while indexer::index_tenant(&registry, tid, &tenant.db, usize::MAX)
        .await
        .unwrap()
        == 0
    {
        assert!(Instant::now() < deadline, "the new event never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        indexer::rebuild(&registry, tid, &tenant.db).await.unwrap(),
        3
    );
    assert_eq!(registry.get(&indexer::index_key(tid)).unwrap().len(), 3);
    // The folder lost under an open index: the next round rebuilds it, and it is whole.
    std::fs::remove_dir_all(dir.join(&key)).unwrap();
    assert_eq!(
        indexer::index_tenant(&registry, tid, &tenant.db, usize::MAX)
            .await
            .unwrap(),
        3
    );
    assert_eq!(registry.get(&key).unwrap().len(), 3);
    registry.remove(&indexer::index_key(tid)).unwrap();

    // Deleting the tenant removes its index.
    let own_dir = app.state().search.root().join(indexer::index_key(tid));
    assert!(own_dir.exists());
    app.cleanup().await;
    assert!(!own_dir.exists(), "index of a deleted tenant remains");
}
