//! Teams through the API: the tree and its surgery (move, merge, split), roles flowing down
//! the tree into permissions, shares, templates, analytics and the org chart.

use neotenant_tests::{Fetch, TestApp, expect_problem, tenant_with_admin};
use reqwest::Method;
use serde_json::{Value, json};

use crate::rbac::check;

#[tokio::test]
async fn tree_surgery_keeps_memberships_and_permissions_consistent() {
    let app = TestApp::start().await;
    let (t, member, boss, boss_id) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let as_member = |m: Method, path: &str| app.tenant_req(m, &t.slug, path);
    let create = |name: &str, parent: Option<&str>| {
        as_boss(Method::POST, "/v1/teams").json(&json!({"name": name, "parent_id": parent}))
    };
    let id_of = |v: &Value| v["id"].as_str().unwrap().to_string();

    let company: Value = create("Company", None).fetch_json().await;
    let company = id_of(&company);
    let eng = id_of(&create("Engineering", Some(&company)).fetch_json().await);
    let sales = id_of(&create("Sales", Some(&company)).fetch_json().await);
    let platform: Value = create("Platform", Some(&eng)).fetch_json().await;
    assert_eq!(platform["depth"], 2);
    assert_eq!(platform["path"], json!([company, eng, platform["id"]]));
    let platform = id_of(&platform);

    // Refusals: no permission, bad input, sibling names unique.
    expect_problem(
        as_member(Method::POST, "/v1/teams")
            .json(&json!({"name": "Rogue"}))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    for (body, status, slug) in [
        (json!({"name": ""}), 422, "validation"),
        (
            json!({"name": "X", "parent_id": "team_0193a8c5e1f27b3c9d4e5f6a7b8c9d0e"}),
            422,
            "validation",
        ),
        (
            json!({"name": "X", "parent_id": "usr_0193a8c5e1f27b3c9d4e5f6a7b8c9d0e"}),
            422,
            "validation",
        ),
        (
            json!({"name": "Engineering", "parent_id": company}),
            409,
            "conflict",
        ),
        (json!({"name": "X", "template": "nope"}), 422, "validation"),
    ] {
        expect_problem(
            as_boss(Method::POST, "/v1/teams")
                .json(&body)
                .send()
                .await
                .unwrap(),
            status,
            slug,
        )
        .await;
    }

    // Subtree and ancestors.
    let sub: Value = as_boss(Method::GET, &format!("/v1/teams/{eng}/subtree"))
        .fetch_json()
        .await;
    let names: Vec<&str> = sub
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Engineering", "Platform"]);
    let up: Value = as_boss(Method::GET, &format!("/v1/teams/{platform}/ancestors"))
        .fetch_json()
        .await;
    let names: Vec<&str> = up
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Company", "Engineering"]);

    // Roles flow down the tree: a role on Engineering reaches Platform's members.
    let res = as_boss(Method::POST, &format!("/v1/teams/{platform}/members"))
        .json(&json!({"user_ids": [member], "team_role": "lead"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = as_boss(Method::POST, "/v1/roles")
        .json(&json!({"key": "directory", "permissions": ["users.read.tenant"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    expect_problem(
        as_boss(Method::POST, &format!("/v1/teams/{eng}/roles"))
            .json(&json!({"role": "owner"}))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    let res = as_boss(Method::POST, &format!("/v1/teams/{eng}/roles"))
        .json(&json!({"role": "directory"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let can_list = || async { check(&app, &t.slug, &t.token, &["users.read.tenant"]).await[0] };
    assert!(can_list().await, "role through the parent team");
    let explained: Value = as_member(Method::GET, "/v1/me/permissions?explain=true")
        .fetch_json()
        .await;
    let via = explained["explain"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pattern"] == "users.read.tenant")
        .unwrap();
    assert_eq!(via["sources"][0]["via"]["type"], "team");
    assert_eq!(via["sources"][0]["via"]["team"], json!(eng));
    assert_eq!(
        as_member(Method::GET, "/v1/users")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Move Platform under Sales: the role no longer reaches it.
    let moved: Value = as_boss(Method::POST, &format!("/v1/teams/{platform}/move"))
        .json(&json!({"parent_id": sales}))
        .fetch_json()
        .await;
    assert_eq!(moved["path"], json!([company, sales, platform]));
    assert!(!can_list().await, "moved out from under the role");
    // No cycles.
    expect_problem(
        as_boss(Method::POST, &format!("/v1/teams/{company}/move"))
            .json(&json!({"parent_id": platform}))
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;

    // Merge Sales into Engineering: Platform comes along, under Engineering again.
    let merged: Value = as_boss(Method::POST, &format!("/v1/teams/{sales}/merge"))
        .json(&json!({"into": eng}))
        .fetch_json()
        .await;
    assert_eq!(merged["id"], json!(eng));
    let p: Value = as_boss(Method::GET, &format!("/v1/teams/{platform}"))
        .fetch_json()
        .await;
    assert_eq!(p["path"], json!([company, eng, platform]));
    assert!(can_list().await, "back under the role after the merge");
    expect_problem(
        as_boss(Method::GET, &format!("/v1/teams/{sales}"))
            .send()
            .await
            .unwrap(),
        404,
        "not-found",
    )
    .await;

    // Split: members of Engineering move to a new sibling that copies the roles.
    as_boss(Method::POST, &format!("/v1/teams/{eng}/members"))
        .json(&json!({"user_ids": [member, boss_id]}))
        .send()
        .await
        .unwrap();
    expect_problem(
        as_boss(Method::POST, &format!("/v1/teams/{eng}/split"))
            .json(&json!({"name": "Infra", "member_ids": ["usr_0193a8c5e1f27b3c9d4e5f6a7b8c9d0e"]}))
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    let res = as_boss(Method::POST, &format!("/v1/teams/{eng}/split"))
        .json(&json!({"name": "Infra", "member_ids": [member], "copy_roles": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let infra: Value = res.json().await.unwrap();
    assert_eq!(infra["parent_id"], json!(company));
    assert_eq!(infra["member_count"], 1);
    let eng_members: Value = as_boss(Method::GET, &format!("/v1/teams/{eng}/members"))
        .fetch_json()
        .await;
    let ids: Vec<&str> = eng_members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [boss_id.as_str()]);
    let roles: Value = as_boss(Method::GET, &format!("/v1/teams/{}/roles", id_of(&infra)))
        .fetch_json()
        .await;
    assert_eq!(roles, json!(["directory"]));

    // Deleting a team with sub-teams needs recursive=true; then the role is gone for good.
    expect_problem(
        as_boss(Method::DELETE, &format!("/v1/teams/{company}"))
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;
    expect_problem(
        as_boss(
            Method::DELETE,
            &format!("/v1/teams/{company}?recursive=perhaps"),
        )
        .send()
        .await
        .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;
    let res = as_boss(
        Method::DELETE,
        &format!("/v1/teams/{company}?recursive=true"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    assert!(!can_list().await);
    let left: Value = as_boss(Method::GET, "/v1/teams").fetch_json().await;
    assert_eq!(left["items"], json!([]));

    // Every change was audited.
    let actions = neotenant_tests::audit_actions(&app, &t).await;
    for a in [
        "team.created",
        "team.members_added",
        "team.role_granted",
        "team.moved",
        "team.merged",
        "team.split",
        "team.deleted",
    ] {
        assert!(actions.contains(&a.to_string()), "{a} in {actions:?}");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn deep_trees_templates_shares_analytics_and_the_org_chart() {
    let app = TestApp::start().await;
    let (t, member, boss, _) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);

    // A chain twelve deep: subtree and ancestors stay exact.
    let mut chain: Vec<String> = Vec::new();
    for depth in 0..12 {
        let team: Value = as_boss(Method::POST, "/v1/teams")
            .json(&json!({"name": format!("Level {depth}"), "parent_id": chain.last()}))
            .fetch_json()
            .await;
        assert_eq!(team["depth"], depth, "{team}");
        chain.push(team["id"].as_str().unwrap().to_string());
    }
    let sub: Value = as_boss(Method::GET, &format!("/v1/teams/{}/subtree", chain[0]))
        .fetch_json()
        .await;
    assert_eq!(sub.as_array().unwrap().len(), 12);
    let up: Value = as_boss(Method::GET, &format!("/v1/teams/{}/ancestors", chain[11]))
        .fetch_json()
        .await;
    let up_ids: Vec<&str> = up
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        up_ids,
        chain[..11].iter().map(String::as_str).collect::<Vec<_>>()
    );
    // Moving the middle of the chain to the root re-paths everything below it.
    as_boss(Method::POST, &format!("/v1/teams/{}/move", chain[6]))
        .json(&json!({"parent_id": null}))
        .send()
        .await
        .unwrap();
    let leaf: Value = as_boss(Method::GET, &format!("/v1/teams/{}", chain[11]))
        .fetch_json()
        .await;
    assert_eq!(leaf["depth"], 5);
    assert_eq!(leaf["path"][0], json!(chain[6]));
    let roots: Value = as_boss(Method::GET, "/v1/teams?parent=root")
        .fetch_json()
        .await;
    assert_eq!(roots["items"].as_array().unwrap().len(), 2);
    expect_problem(
        as_boss(Method::GET, "/v1/teams?parent=nonsense")
            .send()
            .await
            .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;

    // Templates: the platform's and the tenant's own.
    let templates: Value = as_boss(Method::GET, "/v1/team-templates")
        .fetch_json()
        .await;
    assert!(
        templates
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "product-squad")
    );
    let squad: Value = as_boss(Method::POST, "/v1/teams")
        .json(&json!({"name": "Checkout", "template": "product-squad"}))
        .fetch_json()
        .await;
    let squad_id = squad["id"].as_str().unwrap().to_string();
    let sub: Value = as_boss(Method::GET, &format!("/v1/teams/{squad_id}/subtree"))
        .fetch_json()
        .await;
    assert_eq!(sub.as_array().unwrap().len(), 4);
    let res = as_boss(Method::POST, "/v1/team-templates")
        .json(
            &json!({"key": "region", "name": "Region", "spec": {"roles": ["viewer"], "children": [
            {"name": "Field", "children": [{"name": "North"}, {"name": "South"}]}]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    expect_problem(
        as_boss(Method::POST, "/v1/team-templates")
            .json(&json!({"key": "department", "name": "Mine", "spec": {}}))
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;
    let region: Value = as_boss(Method::POST, "/v1/teams")
        .json(&json!({"name": "EMEA", "template": "region"}))
        .fetch_json()
        .await;
    let region_id = region["id"].as_str().unwrap().to_string();
    let sub: Value = as_boss(Method::GET, &format!("/v1/teams/{region_id}/subtree"))
        .fetch_json()
        .await;
    assert_eq!(sub.as_array().unwrap().len(), 4);
    let roles: Value = as_boss(Method::GET, &format!("/v1/teams/{region_id}/roles"))
        .fetch_json()
        .await;
    assert_eq!(roles, json!(["viewer"]));

    // Shares between teams.
    let res = as_boss(Method::POST, &format!("/v1/teams/{squad_id}/shares"))
        .json(&json!({"shared_with": region_id, "resource_type": "document", "resource_id": "doc-1", "access": "read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let share: Value = res.json().await.unwrap();
    for (body, status, slug) in [
        (
            json!({"shared_with": region_id, "resource_type": "document", "resource_id": "doc-1", "access": "read"}),
            409,
            "conflict",
        ),
        (
            json!({"shared_with": squad_id, "resource_type": "document", "resource_id": "doc-2", "access": "read"}),
            422,
            "validation",
        ),
        (
            json!({"shared_with": region_id, "resource_type": "Bad Type", "resource_id": "", "access": "admin"}),
            422,
            "validation",
        ),
    ] {
        expect_problem(
            as_boss(Method::POST, &format!("/v1/teams/{squad_id}/shares"))
                .json(&body)
                .send()
                .await
                .unwrap(),
            status,
            slug,
        )
        .await;
    }
    // The seam resource modules ask: teams it was shared with get its access; others none.
    {
        let resolved = neotenant::tenancy::resolve::resolve(&app.state().tenancy, &t.slug)
            .await
            .unwrap();
        let team = |id: &str| id.parse::<neotenant::ids::TeamId>().unwrap().0;
        let mut tx = resolved.db.begin().await.unwrap();
        let with = neotenant::teams::service::shared_access(
            tx.conn(),
            &[team(&region_id)],
            "document",
            "doc-1",
        )
        .await
        .unwrap();
        let owner = neotenant::teams::service::shared_access(
            tx.conn(),
            &[team(&squad_id)],
            "document",
            "doc-1",
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(with.as_deref(), Some("read"));
        assert_eq!(owner, None, "sharing grants the other team, not the owner");
    }
    let seen: Value = as_boss(Method::GET, &format!("/v1/teams/{region_id}/shares"))
        .fetch_json()
        .await;
    assert_eq!(seen[0]["id"], share["id"]);
    let res = as_boss(
        Method::DELETE,
        &format!(
            "/v1/teams/{squad_id}/shares/{}",
            share["id"].as_str().unwrap()
        ),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);

    // Analytics.
    as_boss(Method::POST, &format!("/v1/teams/{squad_id}/members"))
        .json(&json!({"user_ids": [member], "team_role": "lead"}))
        .send()
        .await
        .unwrap();
    let stats: Value = as_boss(
        Method::GET,
        &format!("/v1/teams/{squad_id}/analytics?months=3"),
    )
    .fetch_json()
    .await;
    assert_eq!(stats["members"], 1);
    assert_eq!(stats["members_in_subtree"], 1);
    assert_eq!(stats["sub_teams"], 3);
    assert_eq!(stats["active_members_30d"], 1);
    let growth = stats["growth"].as_array().unwrap();
    assert_eq!(growth.len(), 3);
    assert_eq!(growth[2]["joined"], 1);
    assert_eq!(stats["actions_30d"], 0, "the member changed nothing");
    // Activity: the admin's audited changes count for the teams it belongs to.
    let boss_id = neotenant_tests::me(&app, &t.slug, &boss).await;
    as_boss(Method::POST, &format!("/v1/teams/{region_id}/members"))
        .json(&json!({"user_ids": [boss_id]}))
        .send()
        .await
        .unwrap();
    let region_stats: Value = as_boss(Method::GET, &format!("/v1/teams/{region_id}/analytics"))
        .fetch_json()
        .await;
    assert_eq!(
        region_stats["actions_30d"], 20,
        "12 chain teams, a move, 2 teams and a template made, a share made and removed, 2 member additions: {region_stats}"
    );
    let all: Value = as_boss(Method::GET, "/v1/teams/analytics")
        .fetch_json()
        .await;
    assert_eq!(all.as_array().unwrap().len(), 12 + 4 + 4);
    expect_problem(
        as_boss(Method::GET, "/v1/teams/analytics?months=0")
            .send()
            .await
            .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;

    // The org chart, as JSON and as a picture.
    let chart: Value = as_boss(Method::GET, "/v1/teams/chart").fetch_json().await;
    let checkout = chart
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "Checkout")
        .unwrap();
    assert_eq!(checkout["children"].as_array().unwrap().len(), 3);
    assert_eq!(checkout["members"], 1);
    assert_eq!(checkout["leads"][0], format!("u-{} User", t.slug));
    for req in [
        as_boss(Method::GET, "/v1/teams/chart?format=svg"),
        as_boss(Method::GET, "/v1/teams/chart").header("accept", "image/svg+xml"),
    ] {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "image/svg+xml");
        let svg = res.text().await.unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains(">Checkout<") && svg.contains(">Level 11<"));
        assert_eq!(svg.matches("<rect x=").count(), 20, "one box per team");
    }
    expect_problem(
        as_boss(Method::GET, "/v1/teams/chart?format=pdf")
            .send()
            .await
            .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;
    app.cleanup().await;
}
