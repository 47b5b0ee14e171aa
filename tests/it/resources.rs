//! Resources through the API: the type registry (validation, changes refused or migrated),
//! CRUD with validation, ETags and soft delete, versions (history, diff, revert), lists with
//! filters, sorts and pages, tag counts, resource-level permissions and shares, and the audit
//! and outbox rows every change writes in its transaction.

use neotenant_tests::{
    Fetch, TestApp, TestTenant, audit_actions, direct, expect_problem, me, tenant_with_admin,
};
use reqwest::Method;
use serde_json::{Value, json};

pub(crate) fn ticket_type() -> Value {
    json!({
        "name": "ticket", "title": "Ticket",
        "schema": {"type": "object", "required": ["title"], "additionalProperties": false,
            "properties": {
                "title": {"type": "string", "minLength": 1, "maxLength": 200},
                "body": {"type": "string"},
                "status": {"type": "string", "enum": ["open", "closed"]},
                "priority": {"type": "integer", "minimum": 1, "maximum": 5},
                "owner_email": {"type": "string", "format": "email"}
            }},
        "searchable": ["title", "body"],
        "filterable": ["status", "priority"],
        "sortable": ["priority", "title"]
    })
}

async fn outbox_topics(app: &TestApp, t: &TestTenant) -> Vec<String> {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        topic: String,
    }
    let mut conn = direct(&app.state().config, &t.database).await;
    diesel::sql_query(format!(
        "SELECT topic FROM \"{}\".outbox ORDER BY txid, seq",
        t.schema
    ))
    .load::<Row>(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .map(|r| r.topic)
    .collect()
}

#[tokio::test]
async fn types_records_versions_and_concurrency() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let as_member = |m: Method, path: &str| app.tenant_req(m, &t.slug, path);

    // Defining types: members may not; a broken definition lists every problem.
    expect_problem(
        as_member(Method::POST, "/v1/resource-types")
            .json(&ticket_type())
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    let mut broken = ticket_type();
    broken["name"] = json!("Bad Name");
    broken["schema"]["properties"]["priority"]["type"] = json!("integr");
    broken["sortable"] = json!(["nope"]);
    let problem = expect_problem(
        as_boss(Method::POST, "/v1/resource-types")
            .json(&broken)
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert!(pointers.contains(&"/name"), "{problem}");
    assert!(
        pointers.iter().any(|p| p.starts_with("/schema")),
        "{problem}"
    );
    let created = as_boss(Method::POST, "/v1/resource-types")
        .json(&ticket_type())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    expect_problem(
        as_boss(Method::POST, "/v1/resource-types")
            .json(&ticket_type())
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;
    let types: Value = as_member(Method::GET, "/v1/resource-types")
        .fetch_json()
        .await;
    assert_eq!(types[0]["name"], "ticket");

    // Create: every field error at once; unknown type 404; wrong content type 415.
    let problem = expect_problem(
        as_member(Method::POST, "/v1/resources/ticket")
            .json(
                &json!({"data": {"status": "maybe", "priority": 9, "owner_email": "x", "extra": 1},
                          "tags": ["", "ok"]}),
            )
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    for p in [
        "/data",
        "/data/status",
        "/data/priority",
        "/data/owner_email",
        "/tags/0",
    ] {
        assert!(pointers.contains(&p), "{p} missing: {problem}");
    }
    expect_problem(
        as_member(Method::POST, "/v1/resources/nosuch")
            .json(&json!({"data": {}}))
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;
    expect_problem(
        as_member(Method::POST, "/v1/resources/ticket")
            .body("title=x")
            .send()
            .await
            .unwrap(),
        415,
        "unsupported-media-type",
    )
    .await;

    let res = as_member(Method::POST, "/v1/resources/ticket")
        .json(
            &json!({"data": {"title": "Printer on fire", "status": "open", "priority": 5},
                      "tags": ["hardware", "urgent"], "category": "facilities"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["etag"], "\"1\"");
    let r: Value = res.json().await.unwrap();
    let id = r["id"].as_str().unwrap().to_string();
    let url = format!("/v1/resources/ticket/{id}");

    // Optimistic concurrency: a stale If-Match is 412 and changes nothing.
    let res = as_member(Method::PATCH, &url)
        .header("if-match", "\"1\"")
        .json(&json!({"data": {"status": "closed", "body": "put out"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let stale = as_member(Method::PUT, &url)
        .header("if-match", "\"1\"")
        .json(&json!({"data": {"title": "lost update"}}))
        .send()
        .await
        .unwrap();
    expect_problem(stale, 412, "precondition-failed").await;
    let now: Value = as_member(Method::GET, &url).fetch_json().await;
    assert_eq!(
        now["data"],
        json!({"title": "Printer on fire", "status": "closed", "priority": 5, "body": "put out"})
    );
    // A patch that breaks the schema is refused, naming the field.
    let problem = expect_problem(
        as_member(Method::PATCH, &url)
            .json(&json!({"data": {"title": null}}))
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    assert_eq!(problem["errors"][0]["pointer"], "/data");

    // Versions: history, diff, revert.
    let history: Value = as_member(Method::GET, &format!("{url}/versions"))
        .fetch_json()
        .await;
    let changes: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes, ["updated", "created"]);
    let diff: Value = as_member(Method::GET, &format!("{url}/diff?from=1&to=2"))
        .fetch_json()
        .await;
    let got: Vec<(String, String)> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["op"].as_str().unwrap().into(),
                c["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("add".into(), "/data/body".into()),
            ("replace".into(), "/data/status".into())
        ]
    );
    expect_problem(
        as_member(Method::GET, &format!("{url}/diff?from=0&to=9"))
            .send()
            .await
            .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;
    let reverted: Value = as_member(Method::POST, &format!("{url}/versions/1/restore"))
        .fetch_json()
        .await;
    assert_eq!(reverted["version"], 3);
    assert_eq!(reverted["data"]["status"], "open");
    assert!(reverted["data"].get("body").is_none());

    // Soft delete and restore.
    let res = as_member(Method::DELETE, &url).send().await.unwrap();
    assert_eq!(res.status(), 204);
    expect_problem(
        as_member(Method::GET, &url).send().await.unwrap(),
        404,
        "not-found",
    )
    .await;
    let gone: Value = as_member(Method::GET, &format!("{url}?deleted=true"))
        .fetch_json()
        .await;
    assert!(gone["deleted_at"].is_string());
    let listed: Value = as_member(Method::GET, "/v1/resources/ticket")
        .fetch_json()
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 0);
    let listed: Value = as_member(Method::GET, "/v1/resources/ticket?deleted=true")
        .fetch_json()
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let back: Value = as_member(Method::POST, &format!("{url}/restore"))
        .fetch_json()
        .await;
    assert!(back.get("deleted_at").is_none());
    assert_eq!(back["version"], 5);

    // Lists: filters typed as declared, sorts with pages, tags and category counts.
    for (i, (status, priority, tag)) in [
        ("open", 3, "a"),
        ("closed", 1, "b"),
        ("open", 2, "a"),
        ("open", 4, "b"),
        ("closed", 2, "a"),
    ]
    .into_iter()
    .enumerate()
    {
        let res = as_member(Method::POST, "/v1/resources/ticket")
            .json(&json!({"data": {"title": format!("t{i}"), "status": status, "priority": priority}, "tags": [tag]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    let open: Value = as_member(
        Method::GET,
        "/v1/resources/ticket?filter[status]=open&limit=50",
    )
    .fetch_json()
    .await;
    assert_eq!(open["items"].as_array().unwrap().len(), 4);
    let p2: Value = as_member(Method::GET, "/v1/resources/ticket?filter[priority]=2")
        .fetch_json()
        .await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 2);
    for (q, status) in [
        ("filter[priority]=two", 400),
        ("filter[body]=x", 400),
        ("sort=body", 400),
        ("bogus=1", 400),
        ("owner=team_0193a8c5e1f27b3c9d4e5f6a7b8c9d0e", 400),
    ] {
        expect_problem(
            as_member(Method::GET, &format!("/v1/resources/ticket?{q}"))
                .send()
                .await
                .unwrap(),
            status,
            "invalid-parameter",
        )
        .await;
    }
    // One ticket without a priority: last ascending, first descending. Numeric, not textual,
    // order, two per page.
    let res = as_member(Method::POST, "/v1/resources/ticket")
        .json(&json!({"data": {"title": "unprioritised"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let order = |sort: &'static str| {
        let as_member = &as_member;
        async move {
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut path = format!("/v1/resources/ticket?sort={sort}&limit=2");
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                let page: Value = as_member(Method::GET, &path).fetch_json().await;
                for item in page["items"].as_array().unwrap() {
                    seen.push(item["data"]["priority"].as_i64());
                }
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            seen
        }
    };
    assert_eq!(
        order("-priority").await,
        [None, Some(5), Some(4), Some(3), Some(2), Some(2), Some(1)]
    );
    assert_eq!(
        order("priority").await,
        [Some(1), Some(2), Some(2), Some(3), Some(4), Some(5), None]
    );
    let tags: Value = as_member(Method::GET, "/v1/resources/ticket/tags")
        .fetch_json()
        .await;
    assert_eq!(tags[0], json!({"value": "a", "count": 3}));
    let tagged: Value = as_member(Method::GET, "/v1/resources/ticket?tag=hardware&tag=urgent")
        .fetch_json()
        .await;
    assert_eq!(tagged["items"].as_array().unwrap().len(), 1);

    // A type change that would break stored data is refused; with a migration it applies.
    let mut stricter = ticket_type();
    stricter["schema"]["required"] = json!(["title", "severity"]);
    stricter["schema"]["properties"]["severity"] =
        json!({"type": "string", "enum": ["low", "high"]});
    let problem = expect_problem(
        as_boss(Method::PUT, "/v1/resource-types/ticket")
            .json(&stricter)
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;
    assert!(
        problem["errors"].as_array().unwrap().len() == 7,
        "{problem}"
    );
    stricter["migration"] = json!({"set_default": {"severity": "low"}});
    let changed: Value = as_boss(Method::PUT, "/v1/resource-types/ticket")
        .json(&stricter)
        .fetch_json()
        .await;
    assert_eq!(changed["version"], 2);
    let migrated: Value = as_member(Method::GET, &url).fetch_json().await;
    assert_eq!(migrated["data"]["severity"], "low");
    assert_eq!(migrated["version"], 6);
    let history: Value = as_member(Method::GET, &format!("{url}/versions?limit=1"))
        .fetch_json()
        .await;
    assert_eq!(history["items"][0]["change"], "migrated");
    expect_problem(
        as_boss(Method::DELETE, "/v1/resource-types/ticket")
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;

    // Every change wrote its audit entry and outbox event in its transaction.
    let actions = audit_actions(&app, &t).await;
    for a in [
        "resource_type.created",
        "resource.created",
        "resource.updated",
        "resource.reverted",
        "resource.deleted",
        "resource.restored",
        "resource_type.updated",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} not audited: {actions:?}"
        );
    }
    let topics = outbox_topics(&app, &t).await;
    assert_eq!(
        topics.iter().filter(|x| *x == "resource.created").count(),
        7
    );
    assert!(topics.iter().any(|x| x == "resource.deleted"));
    // The type's own changes are events too (webhooks and plugins subscribe to them); only
    // the users' own events (their first sign-in) come before it.
    assert_eq!(
        topics
            .iter()
            .find(|x| !x.starts_with("user."))
            .map(String::as_str),
        Some("resource_type.created")
    );
    assert!(topics.iter().any(|x| x == "resource_type.updated"));
    app.cleanup().await;
}

#[tokio::test]
async fn readers_see_only_what_their_scope_and_shares_reach() {
    let app = TestApp::start().await;
    let (t, member, boss, _) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let res = as_boss(Method::POST, "/v1/resource-types")
        .json(&ticket_type())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // Two more users: `own` (reads only their own) and `teamed` (reads their teams').
    let token = |name: String| {
        let app = &app;
        let t = &t;
        async move {
            app.member_token(&t.realm, t.organization.as_deref(), &name)
                .await
        }
    };
    let own = token(format!("own-{}", t.slug)).await;
    let own_id = me(&app, &t.slug, &own).await;
    let teamed = token(format!("teamed-{}", t.slug)).await;
    let teamed_id = me(&app, &t.slug, &teamed).await;
    for (user, deny) in [
        (&own_id, "resources.read.team"),
        (&teamed_id, "resources.read.tenant"),
    ] {
        let res = as_boss(Method::POST, &format!("/v1/users/{user}/grants"))
            .json(&json!({"permission": deny, "effect": "deny"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    // Teams: Eng > Platform. `teamed` is in Eng; the member is in Platform.
    let eng: Value = as_boss(Method::POST, "/v1/teams")
        .json(&json!({"name": "Eng"}))
        .fetch_json()
        .await;
    let eng = eng["id"].as_str().unwrap().to_string();
    let platform: Value = as_boss(Method::POST, "/v1/teams")
        .json(&json!({"name": "Platform", "parent_id": eng}))
        .fetch_json()
        .await;
    let platform = platform["id"].as_str().unwrap().to_string();
    for (team, user) in [(&eng, &teamed_id), (&platform, &member)] {
        let res = as_boss(Method::POST, &format!("/v1/teams/{team}/members"))
            .json(&json!({"user_ids": [user]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    let create = |token: &str, title: &str, team: Option<&str>| {
        app.anonymous(Method::POST, &t.slug, "/v1/resources/ticket")
            .bearer_auth(token)
            .json(&json!({"data": {"title": title}, "team_id": team}))
    };
    // The member may put resources only in their own team (or below).
    expect_problem(
        create(&t.token, "x", Some(&eng)).send().await.unwrap(),
        403,
        "forbidden",
    )
    .await;
    let in_platform: Value = create(&t.token, "platform doc", Some(&platform))
        .fetch_json()
        .await;
    let private: Value = create(&boss, "boss private", None).fetch_json().await;
    let mine: Value = create(&own, "own doc", None).fetch_json().await;

    let titles = |token: String| {
        let app = &app;
        let t = &t;
        async move {
            let page: Value = app
                .anonymous(Method::GET, &t.slug, "/v1/resources/ticket")
                .bearer_auth(&token)
                .fetch_json()
                .await;
            let mut v: Vec<String> = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["data"]["title"].as_str().unwrap().to_string())
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(
        titles(boss.clone()).await,
        ["boss private", "own doc", "platform doc"]
    );
    assert_eq!(
        titles(t.token.clone()).await,
        ["boss private", "own doc", "platform doc"],
        "members read the tenant by default"
    );
    assert_eq!(titles(own.clone()).await, ["own doc"]);
    assert_eq!(
        titles(teamed.clone()).await,
        ["platform doc"],
        "team scope reaches teams below"
    );

    // Reading a resource out of reach is a 404, never a 403.
    let private_url = format!("/v1/resources/ticket/{}", private["id"].as_str().unwrap());
    for token in [&own, &teamed] {
        expect_problem(
            app.anonymous(Method::GET, &t.slug, &private_url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap(),
            404,
            "not-found",
        )
        .await;
    }
    // Updating another's resource needs a wider scope than `own`: the member (update.own) is refused.
    expect_problem(
        app.anonymous(Method::PATCH, &t.slug, &private_url)
            .bearer_auth(&t.token)
            .json(&json!({"data": {"title": "hijacked"}}))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;

    // Shares: with a user (read), then with a team (write) that reaches its sub-teams.
    let share = |body: Value| as_boss(Method::POST, &format!("{private_url}/shares")).json(&body);
    let s: Value = share(json!({"user_id": own_id, "access": "read"}))
        .fetch_json()
        .await;
    assert!(s["id"].as_str().unwrap().starts_with("rsh_"));
    assert_eq!(titles(own.clone()).await, ["boss private", "own doc"]);
    expect_problem(
        app.anonymous(Method::PATCH, &t.slug, &private_url)
            .bearer_auth(&own)
            .json(&json!({"data": {"title": "edited"}}))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    let res = share(json!({"team_id": eng, "access": "write"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let edited: Value = app
        .anonymous(Method::PATCH, &t.slug, &private_url)
        .bearer_auth(&t.token)
        .json(&json!({"data": {"title": "edited by platform"}}))
        .fetch_json()
        .await;
    assert_eq!(
        edited["version"], 2,
        "a write share with Eng reaches Platform below it"
    );
    for body in [
        json!({"access": "read"}),
        json!({"user_id": own_id, "team_id": eng, "access": "read"}),
        json!({"user_id": "usr_0193a8c5e1f27b3c9d4e5f6a7b8c9d0e", "access": "read"}),
        json!({"user_id": own_id, "access": "admin"}),
    ] {
        expect_problem(share(body).send().await.unwrap(), 422, "validation").await;
    }
    // Sharing needs resources.share reaching the resource.
    expect_problem(
        app.anonymous(Method::POST, &t.slug, &format!("{private_url}/shares"))
            .bearer_auth(&own)
            .json(&json!({"user_id": teamed_id, "access": "read"}))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    // Removing the user share hides it again.
    let res = as_boss(
        Method::DELETE,
        &format!("{private_url}/shares/{}", s["id"].as_str().unwrap()),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(titles(own.clone()).await, ["own doc"]);
    let _ = (in_platform, mine);
    app.cleanup().await;
}

#[tokio::test]
async fn links_follow_their_kinds_and_delete_rules() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let req = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let schema =
        json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}});
    for body in [
        json!({"name": "project", "title": "Project", "schema": schema}),
        json!({"name": "task", "title": "Task", "schema": schema, "relationships": [
            {"kind": "belongs_to", "target": "project", "on_delete": "cascade"},
            {"kind": "blocks", "target": "task", "on_delete": "refuse"},
            {"kind": "mentions", "target": "project", "on_delete": "detach"}]}),
    ] {
        let res = req(Method::POST, "/v1/resource-types")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    let new = |ty: &'static str, name: &'static str| {
        let req = &req;
        async move {
            let v: Value = req(Method::POST, &format!("/v1/resources/{ty}"))
                .json(&json!({"data": {"name": name}}))
                .fetch_json()
                .await;
            v["id"].as_str().unwrap().to_string()
        }
    };
    let p1 = new("project", "P1").await;
    let p2 = new("project", "P2").await;
    let t1 = new("task", "T1").await;
    let t2 = new("task", "T2").await;
    let t3 = new("task", "T3").await;
    let link = |from: &str, kind: &str, to: &str| {
        req(Method::POST, &format!("/v1/resources/task/{from}/links"))
            .json(&json!({"kind": kind, "to_id": to}))
    };
    for (from, kind, to) in [
        (&t1, "belongs_to", &p1),
        (&t2, "belongs_to", &p1),
        (&t3, "blocks", &t2),
        (&t1, "mentions", &p2),
    ] {
        let res = link(from, kind, to).send().await.unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    // Refusals: undeclared kind, wrong target type, a link to itself, a duplicate.
    for (from, kind, to, status, slug) in [
        (&t1, "owns", &p1, 422, "validation"),
        (&t1, "belongs_to", &t2, 422, "validation"),
        (&t3, "blocks", &t3, 422, "validation"),
        (&t1, "belongs_to", &p1, 409, "conflict"),
    ] {
        expect_problem(link(from, kind, to).send().await.unwrap(), status, slug).await;
    }
    // Both directions.
    let incoming: Value = req(
        Method::GET,
        &format!("/v1/resources/project/{p1}/links?direction=in"),
    )
    .fetch_json()
    .await;
    let mut from: Vec<&str> = incoming
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["from_id"].as_str().unwrap())
        .collect();
    from.sort();
    let mut expected = vec![t1.as_str(), t2.as_str()];
    expected.sort();
    assert_eq!(from, expected);
    let out: Value = req(Method::GET, &format!("/v1/resources/task/{t1}/links"))
        .fetch_json()
        .await;
    assert_eq!(out.as_array().unwrap().len(), 2);
    expect_problem(
        req(
            Method::GET,
            &format!("/v1/resources/task/{t1}/links?direction=sideways"),
        )
        .send()
        .await
        .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;

    // detach: deleting P2 removes T1's `mentions` link.
    assert_eq!(
        req(Method::DELETE, &format!("/v1/resources/project/{p2}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let out: Value = req(Method::GET, &format!("/v1/resources/task/{t1}/links"))
        .fetch_json()
        .await;
    assert_eq!(out.as_array().unwrap().len(), 1);
    // cascade would reach T2, which T3 `blocks` (refuse): the whole deletion is refused.
    let problem = expect_problem(
        req(Method::DELETE, &format!("/v1/resources/project/{p1}"))
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;
    assert!(
        problem["errors"][0]["pointer"]
            .as_str()
            .unwrap()
            .contains(&t3),
        "{problem}"
    );
    let still: Value = req(Method::GET, &format!("/v1/resources/task/{t1}"))
        .fetch_json()
        .await;
    assert!(still.get("deleted_at").is_none(), "nothing changed");
    // Without the blocker, deleting P1 cascades to T1 and T2.
    let res = req(
        Method::DELETE,
        &format!("/v1/resources/task/{t3}/links/blocks/{t2}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        req(Method::DELETE, &format!("/v1/resources/project/{p1}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    for task in [&t1, &t2] {
        expect_problem(
            req(Method::GET, &format!("/v1/resources/task/{task}"))
                .send()
                .await
                .unwrap(),
            404,
            "not-found",
        )
        .await;
    }
    let alive: Value = req(Method::GET, &format!("/v1/resources/task/{t3}"))
        .fetch_json()
        .await;
    assert_eq!(alive["data"]["name"], "T3");
    let actions = audit_actions(&app, &t).await;
    assert!(
        actions.iter().any(|a| a == "resource.linked")
            && actions.iter().any(|a| a == "resource.unlinked")
    );
    app.cleanup().await;
}

#[tokio::test]
async fn bulk_is_all_or_nothing_or_item_by_item() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let res = as_boss(Method::POST, "/v1/resource-types")
        .json(&ticket_type())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let bulk = |body: Value| as_boss(Method::POST, "/v1/resources/ticket/bulk").json(&body);
    let count = || async {
        let v: Value = as_boss(Method::GET, "/v1/resources/ticket?limit=200")
            .fetch_json()
            .await;
        v["items"].as_array().unwrap().len()
    };
    let create = |title: &str| json!({"op": "create", "data": {"title": title, "priority": 2}});
    let statuses = |v: &Value| -> Vec<u64> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_u64().unwrap())
            .collect()
    };

    let ok: Value = bulk(json!({"operations": [create("a"), create("b"), create("c")]}))
        .fetch_json()
        .await;
    assert_eq!(ok["committed"], true);
    assert_eq!(statuses(&ok), [201, 201, 201]);
    let a = ok["results"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Atomic: one bad operation and nothing is applied.
    let bad = json!({"op": "create", "data": {"priority": 9}});
    let failed: Value = bulk(json!({"operations": [create("d"), bad.clone(), create("e")]}))
        .fetch_json()
        .await;
    assert_eq!(failed["committed"], false);
    assert_eq!(statuses(&failed), [424, 422, 424]);
    let pointers: Vec<&str> = failed["results"][1]["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert!(
        pointers.contains(&"/data") && pointers.contains(&"/data/priority"),
        "{failed}"
    );
    assert_eq!(count().await, 3);

    // Item by item: the good ones stay.
    let each: Value = bulk(json!({"atomic": false, "operations": [
        create("d"), bad,
        {"op": "update", "id": a, "if_match": "\"9\"", "data": {"status": "closed"}},
        {"op": "update", "id": a, "if_match": "\"1\"", "data": {"status": "closed"}},
        {"op": "delete", "id": "res_0193a8c5e1f27b3c9d4e5f6a7b8c9d0e"},
    ]}))
    .fetch_json()
    .await;
    assert_eq!(statuses(&each), [201, 422, 412, 200, 404]);
    assert_eq!(each["results"][3]["resource"]["data"]["status"], "closed");
    assert_eq!(count().await, 4);

    // Another user's bulk is checked operation by operation: a member may not change the
    // admin's tickets (403) but may create their own.
    let mine: Value = app
        .tenant_req(Method::POST, &t.slug, "/v1/resources/ticket/bulk")
        .json(&json!({"atomic": false, "operations": [
            {"op": "delete", "id": a}, create("member's")]}))
        .fetch_json()
        .await;
    assert_eq!(statuses(&mine), [403, 201]);

    // Malformed requests.
    let many: Vec<Value> = (0..1001).map(|i| create(&format!("t{i}"))).collect();
    for body in [
        json!({"operations": []}),
        json!({"operations": many}),
        json!({"operations": [{"op": "explode"}]}),
        json!({"operations": [{"op": "create"}]}),
        json!({"operations": [create("x")], "extra": 1}),
    ] {
        expect_problem(bulk(body).send().await.unwrap(), 422, "validation").await;
    }
    app.cleanup().await;
}

#[tokio::test]
async fn export_and_import_round_trip_and_report_rejected_rows() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let res = as_boss(Method::POST, "/v1/resource-types")
        .json(&ticket_type())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    for (title, priority, tags) in [
        ("=SUM(A1)", 1, json!(["x"])),
        ("comma, \"quote\"\nand a second line", 2, json!(["y", "z"])),
        ("plain", 3, json!([])),
    ] {
        let res = as_boss(Method::POST, "/v1/resources/ticket")
            .json(&json!({"data": {"title": title, "priority": priority, "status": "open"}, "tags": tags}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    let jsonl = as_boss(Method::GET, "/v1/resources/ticket/export")
        .send()
        .await
        .unwrap();
    assert_eq!(jsonl.headers()["content-type"], "application/x-ndjson");
    let jsonl = jsonl.text().await.unwrap();
    assert_eq!(jsonl.lines().count(), 3);
    let csv = as_boss(
        Method::GET,
        "/v1/resources/ticket/export?format=csv&filter[status]=open",
    )
    .send()
    .await
    .unwrap();
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = csv.text().await.unwrap();
    assert!(
        csv.starts_with("id,version,created_at,updated_at,owner_id,team_id,tags,category,"),
        "{csv}"
    );
    assert!(csv.contains("\"'=SUM(A1)\""), "formulas defused: {csv}");

    let import = |format: &str, body: String| {
        as_boss(
            Method::POST,
            &format!("/v1/resources/ticket/import?format={format}"),
        )
        .header(
            "content-type",
            if format == "csv" {
                "text/csv"
            } else {
                "application/x-ndjson"
            },
        )
        .body(body)
    };
    // The CSV export imports back, exactly.
    let report: Value = import("csv", csv).fetch_json().await;
    assert_eq!(report["imported"], 3, "{report}");
    assert_eq!(report["rejected"], 0);
    let all: Value = as_boss(Method::GET, "/v1/resources/ticket?limit=50")
        .fetch_json()
        .await;
    let mut titles: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"]["title"].as_str().unwrap())
        .collect();
    titles.sort();
    assert_eq!(
        titles,
        [
            "=SUM(A1)",
            "=SUM(A1)",
            "comma, \"quote\"\nand a second line",
            "comma, \"quote\"\nand a second line",
            "plain",
            "plain"
        ]
    );
    // So does the JSON Lines export.
    let report: Value = import("jsonl", jsonl).fetch_json().await;
    assert_eq!(report["imported"], 3, "{report}");

    // Rejected rows are reported by line; the valid ones are created.
    let body = [
        r#"{"data": {"title": "ok"}}"#,
        r#"{"data": {"title": "bad", "priority": 9}}"#,
        "not json",
        r#"{"data": {"title": "x"}, "surprise": 1}"#,
        "",
    ]
    .join("\n");
    let report: Value = import("jsonl", body).fetch_json().await;
    assert_eq!(
        (
            report["rows"].as_u64(),
            report["imported"].as_u64(),
            report["rejected"].as_u64()
        ),
        (Some(4), Some(1), Some(3)),
        "{report}"
    );
    let lines: Vec<u64> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [2, 3, 4]);
    assert_eq!(
        report["errors"][0]["errors"][0]["pointer"],
        "/data/priority"
    );
    let report: Value = import(
        "csv",
        "title,priority\nfine,2\nnope,two\n\"open quote,1\n".into(),
    )
    .fetch_json()
    .await;
    assert_eq!(report["imported"], 1, "{report}");
    assert_eq!(report["errors"][0]["line"], 3);
    assert_eq!(
        report["errors"][0]["errors"][0]["pointer"],
        "/data/priority"
    );
    assert_eq!(report["errors"][1]["line"], 4);

    // Refusals: unknown columns, unknown format.
    expect_problem(
        import("csv", "title,colour\nx,red\n".into())
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    expect_problem(
        import("xml", "<x/>".into()).send().await.unwrap(),
        400,
        "invalid-parameter",
    )
    .await;
    expect_problem(
        as_boss(Method::GET, "/v1/resources/ticket/export?format=xml")
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
async fn csv_export_imports_back_cells_that_start_with_the_guard_or_a_formula() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let res = as_boss(Method::POST, "/v1/resource-types")
        .json(&ticket_type())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let originals = [
        json!({"title": "'abc", "body": "=SUM(1)", "priority": 2}),
        json!({"title": "=SUM(1)", "body": "'=x", "status": "open"}),
        json!({"title": "''", "body": "-1\n'+2, \"quoted\"", "priority": 5}),
        json!({"title": "'", "body": "@me\tand\r\nmore"}),
    ];
    for data in &originals {
        let res = as_boss(Method::POST, "/v1/resources/ticket")
            .json(&json!({"data": data}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    let csv = as_boss(Method::GET, "/v1/resources/ticket/export?format=csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        csv.contains("\"''abc\""),
        "a leading ' is guarded too: {csv}"
    );
    assert!(csv.contains("\"'=SUM(1)\""), "formulas defused: {csv}");

    let report: Value = as_boss(Method::POST, "/v1/resources/ticket/import?format=csv")
        .header("content-type", "text/csv")
        .body(csv.clone())
        .fetch_json()
        .await;
    assert_eq!(
        (report["imported"].as_u64(), report["rejected"].as_u64()),
        (Some(4), Some(0)),
        "{report}"
    );
    let all: Value = as_boss(Method::GET, "/v1/resources/ticket?limit=50")
        .fetch_json()
        .await;
    // Key order aside (stored data comes back in the database's order).
    let canonical = |v: &Value| {
        let sorted: std::collections::BTreeMap<String, Value> =
            serde_json::from_value(v.clone()).unwrap();
        serde_json::to_string(&sorted).unwrap()
    };
    let mut got: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| canonical(&r["data"]))
        .collect();
    got.sort();
    let mut want: Vec<String> = originals.iter().chain(&originals).map(canonical).collect();
    want.sort();
    assert_eq!(got, want, "every cell came back exactly");
    app.cleanup().await;
}

#[tokio::test]
async fn a_type_change_with_a_migration_can_retype_a_sortable_field() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let req = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let v1 = json!({"name": "item", "title": "Item", "schema": {"type": "object",
        "properties": {"name": {"type": "string"}, "rank": {"type": "string"}}}, "sortable": ["rank"]});
    assert_eq!(
        req(Method::POST, "/v1/resource-types")
            .json(&v1)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    for (name, rank) in [("a", "high"), ("b", "low")] {
        let res = req(Method::POST, "/v1/resources/item")
            .json(&json!({"data": {"name": name, "rank": rank}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    // `rank` becomes a number: the old strings are dropped and a default set, and the sort
    // index is rebuilt over the mended rows.
    let v2 = json!({"title": "Item", "schema": {"type": "object",
        "properties": {"name": {"type": "string"}, "rank": {"type": "integer"}}}, "sortable": ["rank"],
        "migration": {"remove": ["rank"], "set_default": {"rank": 3}}});
    let res = req(Method::PUT, "/v1/resource-types/item")
        .json(&v2)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let page: Value = req(Method::GET, "/v1/resources/item?sort=-rank")
        .fetch_json()
        .await;
    let ranks: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"]["rank"].as_i64().unwrap())
        .collect();
    assert_eq!(ranks, [3, 3]);
    app.cleanup().await;
}
