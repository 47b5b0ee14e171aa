//! The change feed: an external mirror built only from `GET /v1/changes` pages (upserts and
//! tombstones applied in order, resumed from the cursor) equals the tenant's resources and
//! users after creates, updates, deletes, restores and user lifecycle changes; permissions
//! and bad cursors; another tenant's changes never appear.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use neotenant_tests::{Fetch, TestApp, TestTenant, expect_problem, tenant_with_admin};
use reqwest::Method;
use serde_json::{Value, json};

/// The JSON answer of a request that must succeed with `status`.
async fn expect_json(req: reqwest::RequestBuilder, status: u16) -> Value {
    let res = req.send().await.unwrap();
    let got = res.status().as_u16();
    let body = res.text().await.unwrap();
    assert_eq!(got, status, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// An external copy of a tenant: objects by (kind, id), and where the feed was left.
#[derive(Default)]
struct Mirror {
    objects: BTreeMap<(String, String), Value>,
    cursor: String,
    pages: usize,
}

impl Mirror {
    /// Applies every page available now.
    async fn sync(&mut self, app: &TestApp, t: &TestTenant, token: &str) {
        loop {
            let page = app
                .anonymous(
                    Method::GET,
                    &t.slug,
                    &format!("/v1/changes?since={}&limit=7", self.cursor),
                )
                .bearer_auth(token)
                .fetch_json()
                .await;
            self.pages += 1;
            for c in page["items"].as_array().unwrap() {
                assert!(c["id"].as_str().unwrap().starts_with("chg_"), "{c}");
                let key = (
                    c["kind"].as_str().unwrap().to_string(),
                    c["object_id"].as_str().unwrap().to_string(),
                );
                match c["op"].as_str().unwrap() {
                    "upsert" => {
                        self.objects.insert(key, c["object"].clone());
                    }
                    "delete" => {
                        assert!(c.get("object").is_none(), "{c}");
                        self.objects.remove(&key);
                    }
                    other => panic!("unknown op {other}"),
                }
            }
            self.cursor = page["next_cursor"].as_str().unwrap().to_string();
            if page["has_more"] != true {
                return;
            }
        }
    }

    fn ids(&self, kind: &str) -> BTreeSet<String> {
        self.objects
            .keys()
            .filter(|(k, _)| k == kind)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

/// The tenant's live resources of `kind_name` as `GET` shows them, by id.
async fn live_resources(
    app: &TestApp,
    t: &TestTenant,
    token: &str,
    type_name: &str,
) -> BTreeMap<String, Value> {
    let page = app
        .anonymous(
            Method::GET,
            &t.slug,
            &format!("/v1/resources/{type_name}?limit=100"),
        )
        .bearer_auth(token)
        .fetch_json()
        .await;
    let mut out = BTreeMap::new();
    for r in page["items"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap().to_string();
        let full = app
            .anonymous(
                Method::GET,
                &t.slug,
                &format!("/v1/resources/{type_name}/{id}"),
            )
            .bearer_auth(token)
            .fetch_json()
            .await;
        out.insert(id, full);
    }
    out
}

/// Whether the mirror equals the tenant: the same live resources with the same
/// representation, and every user either mirrored with its current profile or, when deleted,
/// absent.
async fn differences(
    app: &TestApp,
    t: &TestTenant,
    token: &str,
    mirror: &Mirror,
    users: &BTreeSet<String>,
) -> Vec<String> {
    let mut diffs = Vec::new();
    let live = live_resources(app, t, token, "item").await;
    let mirrored: BTreeMap<String, Value> = mirror
        .objects
        .iter()
        .filter(|((k, _), _)| k == "resource")
        .map(|((_, id), v)| (id.clone(), v.clone()))
        .collect();
    if live != mirrored {
        diffs.push(format!("resources: live {live:?} mirrored {mirrored:?}"));
    }
    for id in users {
        let user = app
            .anonymous(Method::GET, &t.slug, &format!("/v1/users/{id}"))
            .bearer_auth(token)
            .fetch_json()
            .await;
        let copy = mirror.objects.get(&("user".to_string(), id.clone()));
        match (user["status"].as_str(), copy) {
            (Some("deleted"), None) => {}
            (Some("deleted"), Some(c)) => {
                diffs.push(format!("deleted user {id} still mirrored: {c}"))
            }
            (_, None) => diffs.push(format!("user {id} missing from the mirror")),
            (_, Some(c)) => {
                for field in [
                    "id",
                    "subject",
                    "username",
                    "email",
                    "display_name",
                    "status",
                ] {
                    if c[field] != user[field] {
                        diffs.push(format!(
                            "user {id} {field}: {} vs {}",
                            c[field], user[field]
                        ));
                    }
                }
            }
        }
    }
    diffs
}

/// Syncs until the mirror equals the tenant (the feed shows a transaction once every older
/// one has finished), failing with the differences after a while.
async fn converge(
    app: &TestApp,
    t: &TestTenant,
    token: &str,
    mirror: &mut Mirror,
    users: &BTreeSet<String>,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        mirror.sync(app, t, token).await;
        let diffs = differences(app, t, token, mirror, users).await;
        if diffs.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{diffs:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_mirror_built_from_the_change_feed_equals_the_tenant() {
    let app = TestApp::start().await;
    let (t, member, boss, boss_id) = tenant_with_admin(&app).await;
    let call = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let res = call(Method::POST, "/v1/resource-types")
        .json(&json!({"name": "item", "title": "Item", "schema": {"type": "object"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let mut ids = Vec::new();
    for n in 0..12 {
        let r = expect_json(
            call(Method::POST, "/v1/resources/item")
                .json(&json!({"data": {"n": n}, "tags": ["t"]})),
            201,
        )
        .await;
        ids.push(r["id"].as_str().unwrap().to_string());
    }
    let member_id = member;
    let mut users: BTreeSet<String> = [member_id.clone(), boss_id.clone()].into();

    let mut mirror = Mirror::default();
    converge(&app, &t, &boss, &mut mirror, &users).await;
    assert_eq!(mirror.ids("resource").len(), 12);
    assert!(mirror.pages >= 2, "a limit of 7 pages the first sync");

    // Changes of every kind, some to the same resource several times.
    for (i, id) in ids.iter().take(4).enumerate() {
        for v in 0..3 {
            let res = call(Method::PATCH, &format!("/v1/resources/item/{id}"))
                .json(&json!({"data": {"n": i, "v": v}}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
    }
    for id in &ids[4..7] {
        let res = call(Method::DELETE, &format!("/v1/resources/item/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
    let res = call(
        Method::POST,
        &format!("/v1/resources/item/{}/restore", ids[4]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let extra = expect_json(
        call(Method::POST, "/v1/resources/item").json(&json!({"data": {"n": 99}})),
        201,
    )
    .await;
    let username = format!("mirror-{}", &t.slug[2..]);
    let created = expect_json(
        call(Method::POST, "/v1/users").json(&json!({"username": username,
            "email": format!("{username}@example.test"), "display_name": "Mirrored Person",
            "password": "first-Password-1", "temporary": false})),
        201,
    )
    .await;
    let new_id = created["id"].as_str().unwrap().to_string();
    users.insert(new_id.clone());
    let res = call(Method::PATCH, &format!("/v1/users/{new_id}"))
        .json(&json!({"display_name": "Renamed Person"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = call(Method::POST, &format!("/v1/users/{member_id}/deactivate"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let before = mirror.cursor.clone();
    converge(&app, &t, &boss, &mut mirror, &users).await;
    assert_ne!(mirror.cursor, before);
    assert!(
        mirror
            .ids("resource")
            .contains(extra["id"].as_str().unwrap())
    );
    assert!(!mirror.ids("resource").contains(&ids[5]));
    assert_eq!(
        mirror.objects[&("user".to_string(), member_id.clone())]["status"],
        "deactivated"
    );
    assert_eq!(
        mirror.objects[&("user".to_string(), new_id.clone())]["display_name"],
        "Renamed Person"
    );

    // A deleted user becomes a tombstone; the page folds an object's repeats into one item.
    let res = call(Method::DELETE, &format!("/v1/users/{new_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    for v in 0..5 {
        call(Method::PATCH, &format!("/v1/resources/item/{}", ids[0]))
            .json(&json!({"data": {"n": 0, "again": v}}))
            .send()
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let page = call(Method::GET, &format!("/v1/changes?since={}", mirror.cursor))
            .fetch_json()
            .await;
        let items = page["items"].as_array().unwrap();
        if items.iter().any(|c| c["object_id"] == ids[0].as_str())
            && items.iter().any(|c| c["object_id"] == new_id.as_str())
        {
            break page;
        }
        assert!(Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let items = page["items"].as_array().unwrap();
    assert_eq!(
        items
            .iter()
            .filter(|c| c["object_id"] == ids[0].as_str())
            .count(),
        1,
        "{page}"
    );
    let tomb = items
        .iter()
        .find(|c| c["object_id"] == new_id.as_str())
        .unwrap();
    assert_eq!(tomb["op"], "delete");
    assert_eq!(tomb["kind"], "user");
    converge(&app, &t, &boss, &mut mirror, &users).await;
    assert!(!mirror.ids("user").contains(&new_id));

    // Another tenant's changes never show here, and its feed does not show ours.
    let other = app.with_tenant("eu", "schema").await;
    let res = app
        .anonymous(Method::POST, &other.slug, "/v1/notes")
        .bearer_auth(&other.token)
        .json(&json!({"title": "x", "body": "y"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let mine = call(Method::GET, "/v1/changes?limit=1000")
        .fetch_json()
        .await;
    let all_ids: BTreeSet<&str> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["object_id"].as_str().unwrap())
        .collect();
    for id in &ids {
        if id != &ids[5] && id != &ids[6] {
            assert!(all_ids.contains(id.as_str()));
        }
    }
    let other_me = app
        .anonymous(Method::GET, &other.slug, "/v1/me")
        .bearer_auth(&other.token)
        .fetch_json()
        .await;
    assert!(!all_ids.contains(other_me["id"].as_str().unwrap()));

    // Bad cursors and limits are a clear 400; a member without changes.read gets 403.
    for q in [
        "since=12",
        "since=evt_1_2",
        "since=chg_x_1",
        "limit=0",
        "limit=5000",
    ] {
        expect_problem(
            call(Method::GET, &format!("/v1/changes?{q}"))
                .send()
                .await
                .unwrap(),
            400,
            "invalid-parameter",
        )
        .await;
    }
    let other_member = app
        .member_token(
            &t.realm,
            t.organization.as_deref(),
            &format!("plain-{}", t.slug),
        )
        .await;
    expect_problem(
        app.anonymous(Method::GET, &t.slug, "/v1/changes")
            .bearer_auth(&other_member)
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;

    // The feed shows nothing its reader could not read directly: a credential with
    // `changes.read` and `users.read` sees users and no resources; with `changes.read` alone,
    // nothing (403).
    let key = |scopes: Value| {
        let call = &call;
        async move {
            let made: Value = call(Method::POST, "/v1/api-keys")
                .json(&json!({"name": "mirror", "scopes": scopes}))
                .fetch_json()
                .await;
            made["secret"].as_str().unwrap().to_string()
        }
    };
    let users_only = key(json!(["changes.read.tenant", "users.read.tenant"])).await;
    let page: Value = app
        .anonymous(Method::GET, &t.slug, "/v1/changes?limit=1000")
        .bearer_auth(&users_only)
        .fetch_json()
        .await;
    let kinds: std::collections::BTreeSet<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["user"].into_iter().collect(), "{page}");
    let feed_only = key(json!(["changes.read.tenant"])).await;
    expect_problem(
        app.anonymous(Method::GET, &t.slug, "/v1/changes")
            .bearer_auth(&feed_only)
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
}
