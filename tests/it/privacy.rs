//! Data-subject rights: the export of everything held about a person, and an erasure that
//! pseudonymises them everywhere (audit log included) while the audit chain keeps verifying.

use diesel::QueryableByName;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use neotenant_tests::{
    Fetch, TestApp, TestTenant, audit_settled as settled, audit_verify as verify, direct,
    expect_problem, tenant_with_admin,
};
use reqwest::Method;
use serde_json::{Value, json};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Rows of the tenant's `table` whose text mentions `needle` (any case).
async fn mentions(app: &TestApp, t: &TestTenant, table: &str, needle: &str) -> i64 {
    let mut db = direct(&app.state().config, &t.database).await;
    diesel::sql_query(format!(
        "SELECT count(*) AS n FROM \"{}\".{table} x WHERE x::text ILIKE '%' || $1 || '%'",
        t.schema
    ))
    .bind::<diesel::sql_types::Text, _>(needle)
    .get_result::<Count>(&mut db)
    .await
    .unwrap()
    .n
}

#[tokio::test]
async fn an_export_holds_everything_and_an_erasure_leaves_nothing_but_a_verifying_chain() {
    let app = TestApp::start().await;
    let (t, member_id, boss, boss_id) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let me: Value = app
        .tenant_req(Method::GET, &t.slug, "/v1/me")
        .fetch_json()
        .await;
    let email = me["email"]
        .as_str()
        .expect("the member has an email")
        .to_string();

    // The member leaves traces: an API key, a note; the admin names them in a change.
    let res = app
        .tenant_req(Method::POST, &t.slug, "/v1/api-keys")
        .header("user-agent", "Ada's Browser/1.0")
        .json(&json!({"name": "Ada's laptop", "scopes": ["notes.read.tenant"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = as_boss(Method::PATCH, &format!("/v1/users/{member_id}"))
        .json(&json!({"display_name": "Ada Lovelace"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let res = as_boss(Method::PUT, "/v1/users/attribute-schema")
        .json(&json!({"schema": {"type": "object", "properties": {"desk": {"type": "string"}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let res = as_boss(Method::PATCH, &format!("/v1/users/{member_id}/attributes"))
        .json(&json!({"desk": "B-12"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    settled(&app, &t, &boss).await;

    // The export: one JSON document, everything about the person, no secrets.
    let res = as_boss(Method::GET, &format!("/v1/users/{member_id}/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["user_id"], member_id.as_str());
    assert_eq!(doc["profile"]["email"], email.as_str());
    assert_eq!(doc["profile"]["display_name"], "Ada Lovelace");
    assert_eq!(doc["profile"]["attributes"]["desk"], "B-12");
    let keys = doc["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["name"], "Ada's laptop");
    assert!(
        keys[0].get("secret_hash").is_none(),
        "no secrets: {}",
        keys[0]
    );
    assert!(doc["roles"].is_array() && doc["teams"].is_array() && doc["sessions"].is_array());
    let actions: Vec<&str> = doc["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"api_key.created") && actions.contains(&"user.updated"),
        "{actions:?}"
    );
    // The person may export themself; nobody else's without the permission.
    let mine: Value = app
        .tenant_req(Method::GET, &t.slug, "/v1/me/export")
        .fetch_json()
        .await;
    assert_eq!(mine["user_id"], member_id.as_str());
    for path in [
        format!("/v1/users/{boss_id}/export"),
        format!("/v1/users/{boss_id}/erase"),
    ] {
        let m = if path.ends_with("erase") {
            Method::POST
        } else {
            Method::GET
        };
        expect_problem(
            app.tenant_req(m, &t.slug, &path).send().await.unwrap(),
            403,
            "forbidden",
        )
        .await;
    }
    // Bad input and nonsense.
    expect_problem(
        as_boss(Method::POST, "/v1/users/not-an-id/erase")
            .send()
            .await
            .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;
    expect_problem(
        as_boss(
            Method::POST,
            "/v1/users/usr_0193a8c5e1f27b3c9d4e5f6a7b8c9d0e/erase",
        )
        .send()
        .await
        .unwrap(),
        404,
        "not-found",
    )
    .await;
    expect_problem(
        as_boss(Method::POST, &format!("/v1/users/{boss_id}/erase"))
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;
    assert!(mentions(&app, &t, "audit_log", &email).await > 0);

    // The erasure.
    let done: Value = as_boss(Method::POST, &format!("/v1/users/{member_id}/erase"))
        .fetch_json()
        .await;
    assert_eq!(done["already_erased"], false, "{done}");
    assert!(done["audit_sealed"].as_u64().unwrap() >= 1, "{done}");
    let pseudonym = done["pseudonym"].as_str().unwrap().to_string();
    assert_eq!(pseudonym, format!("erased:{member_id}"));

    // Nothing names the person any more: not the row, the log, the outbox or the keys.
    for needle in [email.as_str(), "Ada Lovelace", "Ada's Browser", "B-12"] {
        for table in ["users", "audit_log", "outbox", "api_keys", "invitations"] {
            assert_eq!(
                mentions(&app, &t, table, needle).await,
                0,
                "{needle} is still in {table}"
            );
        }
    }
    let gone: Value = as_boss(Method::GET, &format!("/v1/users/{member_id}"))
        .fetch_json()
        .await;
    assert_eq!(gone["status"], "deleted");
    assert!(gone["email"].is_null() && gone["display_name"].is_null());
    // The person's token no longer works here.
    let res = app
        .tenant_req(Method::GET, &t.slug, "/v1/me")
        .send()
        .await
        .unwrap();
    assert!(
        matches!(res.status().as_u16(), 401 | 403),
        "{}",
        res.status()
    );

    // The chain still verifies: the sealed entries that changed are accepted through their
    // signed redactions.
    let v = settled(&app, &t, &boss).await;
    assert!(v["redacted"].as_u64().unwrap() >= 1, "{v}");
    let state = app.state();
    let signer = neotenant::audit::chain::Signer::new(state.config.audit.signing_key.expose());
    let tenant = neotenant::tenancy::resolve::resolve(&state.tenancy, &t.slug)
        .await
        .unwrap();
    let report = neotenant::audit::seal::verify_tenant(
        &signer,
        &state.registry,
        tenant.tenant.id.0,
        &tenant.db,
    )
    .await
    .unwrap();
    assert!(report.ok, "{report:?}");

    // Erasing again changes nothing.
    let again: Value = as_boss(Method::POST, &format!("/v1/users/{member_id}/erase"))
        .fetch_json()
        .await;
    assert_eq!(again["already_erased"], true, "{again}");

    // A redacted entry is no licence to edit: changing it again breaks the chain there, and
    // so does a redaction record nobody signed.
    let mut db = direct(&state.config, &t.database).await;
    let log = format!("\"{}\".audit_log", t.schema);
    let red = format!("\"{}\".audit_redactions", t.schema);
    db.batch_execute(&format!(
        "CREATE TEMP TABLE keep AS SELECT * FROM {log}; \
         UPDATE {log} SET data = '{{\"edited\": true}}' WHERE seq = (SELECT min(seq) FROM {red})"
    ))
    .await
    .unwrap();
    let v = verify(&app, &t, &boss).await;
    assert_eq!(v["ok"], false, "{v}");
    db.batch_execute(&format!(
        "UPDATE {log} l SET data = k.data FROM keep k WHERE l.id = k.id; \
         INSERT INTO {red} (seq, entry_id, prev, hash, content, signature, reason) \
           SELECT seq, id, '\\x00', hash, '\\x00', '\\x00', 'forged' FROM {log} \
           WHERE seq = (SELECT max(seq) FROM {log}) ON CONFLICT DO NOTHING; \
         UPDATE {log} SET data = '{{\"forged\": true}}' WHERE seq = (SELECT max(seq) FROM {log})"
    ))
    .await
    .unwrap();
    let v = verify(&app, &t, &boss).await;
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["broken"]["reason"]
            .as_str()
            .unwrap()
            .contains("does not match its hash"),
        "{v}"
    );
    app.cleanup().await;
}
