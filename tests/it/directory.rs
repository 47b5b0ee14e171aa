//! The user directory as files: CSV and JSON Lines export (filters apply, formulas defused)
//! and import that creates accounts or invitations, answering every row.

use neotenant_tests::{Fetch, TestApp, expect_problem, tenant_with_admin};
use reqwest::Method;
use serde_json::Value;

#[tokio::test]
async fn users_import_as_accounts_or_invitations_and_export_back() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let tag = &t.slug[2..10];
    let csv = format!(
        "email,username,display_name,roles,attributes\n\
         ada-{tag}@example.test,ada-{tag},-Ada Lovelace,viewer,\"{{\"\"desk\"\": \"\"B-12\"\"}}\"\n\
         not-an-address,bob-{tag},Bob,,\n\
         cy-{tag}@example.test,cy-{tag},Cy,no-such-role,\n"
    );
    let report: Value = as_boss(Method::POST, "/v1/users/import?format=csv")
        .header("content-type", "text/csv")
        .body(csv)
        .fetch_json()
        .await;
    assert_eq!(report["rows"], 3, "{report}");
    let items = report["items"].as_array().unwrap();
    assert_eq!(items[0]["line"], 2);
    assert_eq!(items[0]["status"], 201, "{report}");
    let ada = items[0]["id"].as_str().unwrap().to_string();
    assert!(ada.starts_with("usr_"));
    assert_eq!(items[1]["status"], 422);
    assert_eq!(items[1]["errors"][0]["pointer"], "/email");
    assert!(items[2]["status"].as_u64().unwrap() >= 400, "{report}");
    let user: Value = as_boss(Method::GET, &format!("/v1/users/{ada}/attributes"))
        .fetch_json()
        .await;
    assert_eq!(user["attributes"]["desk"], "B-12", "{user}");

    // Invitations instead of accounts: an existing member's address is refused as a single
    // call would refuse it.
    let lines = format!(
        "{{\"email\": \"dee-{tag}@example.test\", \"roles\": [\"viewer\"]}}\n\n{{\"email\": \"ada-{tag}@example.test\"}}\n[1]\n"
    );
    let report: Value = as_boss(Method::POST, "/v1/users/import?mode=invite")
        .header("content-type", "application/x-ndjson")
        .body(lines)
        .fetch_json()
        .await;
    let items = report["items"].as_array().unwrap();
    assert_eq!(report["rows"], 3, "{report}");
    assert_eq!(items[0]["status"], 201, "{report}");
    assert!(items[0]["id"].as_str().unwrap().starts_with("inv_"));
    assert_eq!(
        (items[1]["line"].as_u64(), items[1]["status"].as_u64()),
        (Some(3), Some(409))
    );
    assert!(
        items[1]["type"]
            .as_str()
            .unwrap()
            .ends_with("/already-member")
    );
    assert_eq!(items[2]["status"], 422);
    assert_eq!(
        (report["created"].as_u64(), report["refused"].as_u64()),
        (Some(1), Some(2))
    );

    // Export: CSV with the formula defused, JSON Lines filtered.
    let res = as_boss(Method::GET, "/v1/users/export?format=csv")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = res.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "id,username,email,display_name,status,created_at,last_seen_at,roles,teams,attributes"
    );
    let row = text
        .lines()
        .find(|l| l.contains(&ada))
        .expect("ada is exported");
    assert!(row.contains("\"'-Ada Lovelace\""), "{row}");
    assert!(row.contains("\"viewer\""), "{row}");
    let jsonl = as_boss(Method::GET, &format!("/v1/users/export?q=ada-{tag}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rows: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{jsonl}");
    assert_eq!(rows[0]["roles"], serde_json::json!(["viewer"]));
    // Read back as an import: the export's own columns are understood.
    let report: Value = as_boss(Method::POST, "/v1/users/import?mode=invite")
        .body(jsonl)
        .fetch_json()
        .await;
    assert!(
        report["items"][0]["type"]
            .as_str()
            .unwrap()
            .ends_with("/already-member"),
        "{report}"
    );

    // Bad input and permissions.
    for (path, body, status, slug) in [
        ("/v1/users/import?format=xml", "x", 400, "invalid-parameter"),
        ("/v1/users/import?mode=maybe", "x", 400, "invalid-parameter"),
        (
            "/v1/users/import?format=csv",
            "name,phone\nx,y\n",
            422,
            "validation",
        ),
    ] {
        let res = as_boss(Method::POST, path).body(body).send().await.unwrap();
        expect_problem(res, status, slug).await;
    }
    let big = "{\"email\": \"a@b.co\"}\n".repeat(900_000);
    let res = as_boss(Method::POST, "/v1/users/import?mode=invite")
        .body(big)
        .send()
        .await
        .unwrap();
    expect_problem(res, 413, "payload-too-large").await;
    for (m, path) in [
        (Method::GET, "/v1/users/export"),
        (Method::POST, "/v1/users/import"),
        (Method::POST, "/v1/users/import?mode=invite"),
    ] {
        let res = app
            .tenant_req(m, &t.slug, path)
            .body("")
            .send()
            .await
            .unwrap();
        expect_problem(res, 403, "forbidden").await;
    }
    app.cleanup().await;
}
