//! Invitations end to end: invite (one and in bulk), the mail in the devstack's SMTP sink, the
//! link opened and accepted (local and Keycloak tenants), single use under races, resend and
//! revoke, templates, the domain policy, hourly limits, failed deliveries, expiry, and the
//! problems bad input gets.

use diesel_async::RunQueryDsl;
use neotenant_tests::{
    Fetch, TEST_PASSWORD, TestApp, TestTenant, audit_actions, await_mails, direct, expect_problem,
    me, random_slug, tenant_with_admin, test_config, unfold,
};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "a-long-Invitee-password-1";

/// An address unique to this run (the SMTP sink is shared by every run).
fn address(name: &str) -> String {
    format!("{name}-{}@example.test", random_slug("m"))
}

/// The invitation token in a mail (`nti_` and 43 base64url characters), read from its link.
fn token_in(mail: &str) -> String {
    let text = unfold(mail);
    let at = text
        .find("#token=nti_")
        .expect("an accept link in the mail")
        + "#token=".len();
    let token: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    assert_eq!(token.len(), 47, "{token}");
    token
}

/// Waits for the one mail to `to` and returns its token.
async fn only_token(to: &str) -> String {
    let mails = await_mails(to, 1).await;
    assert_eq!(mails.len(), 1, "one mail reaches {to}");
    token_in(&mails[0])
}

/// A local-mode tenant with an administrator: (tenant, admin token).
async fn local_tenant_with_admin(app: &TestApp) -> (TestTenant, String) {
    let slug = random_slug("inv");
    let body: Value = app
        .admin(Method::POST, "/admin/v1/tenants")
        .json(
            &json!({"slug": slug, "display_name": "Invite & Co", "region": "eu",
                      "identity": {"mode": "local"}}),
        )
        .fetch_json()
        .await;
    assert_eq!(body["identity"]["mode"], "local", "{body}");
    app.track(&slug);
    let boss_email = address("boss");
    let res = app
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/{slug}/local-users"),
        )
        .json(&json!({"username": "boss", "email": boss_email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let login: Value = app
        .anonymous(Method::POST, &slug, "/v1/auth/login")
        .json(&json!({"username": "boss", "password": PASSWORD}))
        .fetch_json()
        .await;
    let token = login["access_token"].as_str().expect("token").to_string();
    let boss_id = me(app, &slug, &token).await;
    let res = app
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/{slug}/role-assignments"),
        )
        .json(&json!({"role": "admin", "user_id": boss_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let t = TestTenant {
        slug,
        region: "eu".into(),
        isolation: body["isolation"].as_str().unwrap().into(),
        database: body["database"].as_str().unwrap().into(),
        schema: body["schema"].as_str().unwrap().into(),
        realm: String::new(),
        organization: None,
        token: token.clone(),
    };
    (t, token)
}

fn as_user(
    app: &TestApp,
    method: Method,
    slug: &str,
    path: &str,
    token: &str,
) -> reqwest::RequestBuilder {
    app.anonymous(method, slug, path).bearer_auth(token)
}

async fn invite(app: &TestApp, slug: &str, token: &str, body: Value) -> reqwest::Response {
    as_user(app, Method::POST, slug, "/v1/invitations", token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn post_token(app: &TestApp, slug: &str, path: &str, body: Value) -> reqwest::Response {
    app.anonymous(Method::POST, slug, path)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn make_team(app: &TestApp, slug: &str, token: &str, name: &str) -> String {
    let team: Value = as_user(app, Method::POST, slug, "/v1/teams", token)
        .json(&json!({"name": name}))
        .fetch_json()
        .await;
    team["id"].as_str().expect("team id").to_string()
}

#[tokio::test]
async fn an_invitation_is_mailed_opened_and_accepted_into_its_roles_and_teams() {
    let app = TestApp::start().await;
    let (t, boss) = local_tenant_with_admin(&app).await;
    let team = make_team(&app, &t.slug, &boss, "Support").await;
    let to = address("bob");
    let res = invite(
        &app,
        &t.slug,
        &boss,
        json!({"email": to, "roles": ["viewer"], "teams": [team],
               "message": "Welcome <b>aboard</b>"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["status"], "pending");
    assert!(
        created.get("token").is_none(),
        "the token is never answered"
    );

    let mails = await_mails(&to, 1).await;
    assert_eq!(mails.len(), 1, "one mail reaches the invitee");
    let mail = unfold(&mails[0]);
    assert!(mail.contains("Invite & Co"), "{mail}");
    assert!(
        mail.contains("&lt;b&gt;aboard&lt;"),
        "the HTML part escapes the message: {mail}"
    );
    let html = mail.split("text/html").nth(1).expect("an HTML part");
    assert!(
        !html.contains("<b>aboard"),
        "no markup from the message: {html}"
    );
    let token = token_in(&mails[0]);
    // Only the digest is stored.
    let mut conn = direct(&test_config(), &t.database).await;
    let stored: Vec<Row> = diesel::sql_query(format!(
        "SELECT encode(token_hash, 'hex') AS h FROM {}.invitations",
        t.schema
    ))
    .load(&mut conn)
    .await
    .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].h.as_deref().map(str::len), Some(64));
    assert!(!stored[0].h.as_deref().unwrap().contains(&token[4..]));

    let status = |app: &TestApp| {
        as_user(
            app,
            Method::GET,
            &t.slug,
            &format!("/v1/invitations/{id}"),
            &boss,
        )
        .fetch_json()
    };
    assert_eq!(status(&app).await["status"], "sent");

    let preview: Value = post_token(
        &app,
        &t.slug,
        "/v1/invitations/open",
        json!({"token": token}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(preview["email"], to.as_str());
    assert_eq!(preview["password_required"], true);
    assert_eq!(preview["roles"], json!(["viewer"]));
    assert_eq!(status(&app).await["status"], "opened");

    // A new account needs a password that meets the rule.
    let res = post_token(
        &app,
        &t.slug,
        "/v1/invitations/accept",
        json!({"token": token}),
    )
    .await;
    let problem = expect_problem(res, 422, "validation").await;
    assert_eq!(problem["errors"][0]["pointer"], "/password");

    let res = post_token(
        &app,
        &t.slug,
        "/v1/invitations/accept",
        json!({"token": token, "password": PASSWORD, "username": "bob", "display_name": "Bob B"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let accepted: Value = res.json().await.unwrap();
    assert_eq!(accepted["linked"], false);
    assert_eq!(accepted["roles"], json!(["viewer"]));
    assert_eq!(accepted["teams"], json!([team]));

    // Bob signs in and holds what the invitation gave.
    let login: Value = app
        .anonymous(Method::POST, &t.slug, "/v1/auth/login")
        .json(&json!({"username": "bob", "password": PASSWORD}))
        .fetch_json()
        .await;
    let bob = login["access_token"]
        .as_str()
        .expect("bob signs in")
        .to_string();
    let perms: Value = as_user(&app, Method::GET, &t.slug, "/v1/me/permissions", &bob)
        .fetch_json()
        .await;
    assert!(
        perms["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "viewer"),
        "{perms}"
    );
    let members: Value = as_user(
        &app,
        Method::GET,
        &t.slug,
        &format!("/v1/teams/{team}/members"),
        &boss,
    )
    .fetch_json()
    .await;
    assert!(
        members
            .to_string()
            .contains(accepted["user_id"].as_str().unwrap()),
        "{members}"
    );

    // The token worked once.
    let res = post_token(
        &app,
        &t.slug,
        "/v1/invitations/accept",
        json!({"token": token, "password": PASSWORD}),
    )
    .await;
    expect_problem(res, 400, "invitation-token-invalid").await;
    let after = status(&app).await;
    assert_eq!(after["status"], "accepted");
    assert_eq!(after["accepted_by"], accepted["user_id"]);
    let actions = audit_actions(&app, &t).await;
    for action in [
        "invitation.created",
        "invitation.sent",
        "invitation.opened",
        "invitation.accepted",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
    let events: Vec<Topic> = diesel::sql_query(format!(
        "SELECT topic FROM {}.outbox WHERE aggregate_type = 'invitation' ORDER BY seq",
        t.schema
    ))
    .load(&mut conn)
    .await
    .unwrap();
    let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
    for topic in [
        "invitation.created",
        "invitation.sent",
        "invitation.accepted",
    ] {
        assert!(topics.contains(&topic), "{topic} in {topics:?}");
    }
    // Inviting a member now is a conflict.
    let res = invite(&app, &t.slug, &boss, json!({"email": to.to_uppercase()})).await;
    expect_problem(res, 409, "already-member").await;
    app.cleanup().await;
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    h: Option<String>,
}

#[derive(diesel::QueryableByName)]
struct Topic {
    #[diesel(sql_type = diesel::sql_types::Text)]
    topic: String,
}

#[tokio::test]
async fn two_racing_accepts_make_one_membership() {
    let app = TestApp::start().await;
    let (t, boss) = local_tenant_with_admin(&app).await;
    let to = address("race");
    assert_eq!(
        invite(
            &app,
            &t.slug,
            &boss,
            json!({"email": to, "roles": ["member"]})
        )
        .await
        .status(),
        201
    );
    let token = only_token(&to).await;
    let body = json!({"token": token, "password": PASSWORD});
    let (a, b) = futures::future::join(
        post_token(&app, &t.slug, "/v1/invitations/accept", body.clone()),
        post_token(&app, &t.slug, "/v1/invitations/accept", body.clone()),
    )
    .await;
    let mut statuses = vec![a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 400], "exactly one accept wins");
    let mut conn = direct(&test_config(), &t.database).await;
    let users: Vec<Row> = diesel::sql_query(format!(
        "SELECT id::text AS h FROM {}.users WHERE lower(email) = lower('{to}')",
        t.schema
    ))
    .load(&mut conn)
    .await
    .unwrap();
    assert_eq!(users.len(), 1, "one user for the address");
    app.cleanup().await;
}

#[tokio::test]
async fn resend_and_revoke_kill_earlier_tokens() {
    let app = TestApp::start().await;
    let (t, boss) = local_tenant_with_admin(&app).await;
    let to = address("again");
    let created: Value = invite(&app, &t.slug, &boss, json!({"email": to}))
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let first = only_token(&to).await;
    let res = as_user(
        &app,
        Method::POST,
        &t.slug,
        &format!("/v1/invitations/{id}/resend"),
        &boss,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let mails = await_mails(&to, 2).await;
    assert_eq!(mails.len(), 2);
    let second = mails
        .iter()
        .map(|m| token_in(m))
        .find(|tok| *tok != first)
        .expect("the resend carries a new token");
    let open = |tok: &str| post_token(&app, &t.slug, "/v1/invitations/open", json!({"token": tok}));
    expect_problem(open(&first).await, 400, "invitation-token-invalid").await;
    assert_eq!(open(&second).await.status(), 200);
    let revoked: Value = as_user(
        &app,
        Method::POST,
        &t.slug,
        &format!("/v1/invitations/{id}/revoke"),
        &boss,
    )
    .fetch_json()
    .await;
    assert_eq!(revoked["status"], "revoked");
    expect_problem(open(&second).await, 400, "invitation-token-invalid").await;
    // Revoking twice is a conflict; a revoked invitation is not resent.
    let res = as_user(
        &app,
        Method::POST,
        &t.slug,
        &format!("/v1/invitations/{id}/revoke"),
        &boss,
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 409, "conflict").await;
    let res = as_user(
        &app,
        Method::POST,
        &t.slug,
        &format!("/v1/invitations/{id}/resend"),
        &boss,
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 409, "conflict").await;
    // The address may be invited again now.
    assert_eq!(
        invite(&app, &t.slug, &boss, json!({"email": to}))
            .await
            .status(),
        201
    );
    let counts: Value = as_user(&app, Method::GET, &t.slug, "/v1/invitations/counts", &boss)
        .fetch_json()
        .await;
    assert_eq!(counts["revoked"], 1, "{counts}");
    assert_eq!(counts["total"], 2, "{counts}");
    let revoked_list: Value = as_user(
        &app,
        Method::GET,
        &t.slug,
        "/v1/invitations?status=revoked",
        &boss,
    )
    .fetch_json()
    .await;
    assert_eq!(revoked_list["items"].as_array().unwrap().len(), 1);
    assert!(actions_contain(&app, &t, "invitation.revoked").await);
    app.cleanup().await;
}

async fn actions_contain(app: &TestApp, t: &TestTenant, action: &str) -> bool {
    audit_actions(app, t).await.iter().any(|a| a == action)
}

#[tokio::test]
async fn a_bulk_invite_answers_each_item_and_mails_the_valid_ones() {
    let app = TestApp::start().await;
    let (t, boss) = local_tenant_with_admin(&app).await;
    let ok1 = address("bulk1");
    let ok2 = address("bulk2");
    let boss_email: Value = as_user(&app, Method::GET, &t.slug, "/v1/me", &boss)
        .fetch_json()
        .await;
    let items = json!([
        {"email": ok1, "roles": ["member"]},
        {"email": "not-an-address"},
        {"email": ok1},
        {"email": boss_email["email"]},
        {"email": address("owner"), "roles": ["owner"]},
        {"email": address("ghost"), "roles": ["no-such-role"]},
        {"email": ok2, "locale": "de"},
        {"email": address("bad-team"), "teams": ["team_0193a8c5e1f27b3c9d4e5f6a7b8c9d0e"]},
    ]);
    let res = as_user(&app, Method::POST, &t.slug, "/v1/invitations/bulk", &boss)
        .json(&json!({"items": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let result: Value = res.json().await.unwrap();
    let statuses: Vec<u64> = result["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [201, 422, 409, 409, 403, 422, 201, 422],
        "{result}"
    );
    assert_eq!(result["created"], 2);
    assert_eq!(result["refused"], 6);
    let kinds: Vec<&str> = result["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap_or(""))
        .collect();
    assert!(kinds[2].ends_with("/invitation-exists"), "{kinds:?}");
    assert!(kinds[3].ends_with("/already-member"), "{kinds:?}");
    assert_eq!(result["items"][5]["errors"][0]["pointer"], "/roles/0");
    assert_eq!(result["items"][7]["errors"][0]["pointer"], "/teams/0");
    assert_eq!(await_mails(&ok1, 1).await.len(), 1);
    assert_eq!(await_mails(&ok2, 1).await.len(), 1);

    // Too many items, or none, refuse the call.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"email": format!("x{i}@example.test")}))
        .collect();
    let res = as_user(&app, Method::POST, &t.slug, "/v1/invitations/bulk", &boss)
        .json(&json!({"items": many}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 422, "validation").await;
    let res = as_user(&app, Method::POST, &t.slug, "/v1/invitations/bulk", &boss)
        .json(&json!({"items": []}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 422, "validation").await;
    app.cleanup().await;
}

#[tokio::test]
async fn the_domain_policy_and_the_permission_gate_who_is_invited() {
    let app = TestApp::start().await;
    let (t, _member, boss, _boss_id) = tenant_with_admin(&app).await;
    let res = as_user(&app, Method::PUT, &t.slug, "/v1/invitations/policy", &boss)
        .json(&json!({"expiry_hours": 48, "allowed_domains": ["Bad Domain"]}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    assert_eq!(problem["errors"][0]["pointer"], "/allowed_domains/0");
    let res = as_user(&app, Method::PUT, &t.slug, "/v1/invitations/policy", &boss)
        .json(&json!({"expiry_hours": 48, "allowed_domains": ["*.corp.test"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = invite(&app, &t.slug, &boss, json!({"email": "x@elsewhere.test"})).await;
    let problem = expect_problem(res, 422, "validation").await;
    assert_eq!(problem["errors"][0]["pointer"], "/email");
    let res = invite(
        &app,
        &t.slug,
        &boss,
        json!({"email": format!("{}@eu.corp.test", random_slug("p"))}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let hours = (chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap())
        .unwrap()
        - chrono::DateTime::parse_from_rfc3339(created["created_at"].as_str().unwrap()).unwrap())
    .num_hours();
    assert!((47..=48).contains(&hours), "the policy's lifetime: {hours}");
    // A plain member may not invite.
    let res = app
        .tenant_req(Method::POST, &t.slug, "/v1/invitations")
        .json(&json!({"email": "y@eu.corp.test"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;
    app.cleanup().await;
}

#[tokio::test]
async fn keycloak_tenants_link_existing_accounts_and_create_new_ones() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    // An account that exists in the realm but not in this tenant's organization.
    let existing_name = format!("ext-{}", t.slug);
    let existing_email = format!("{existing_name}@example.test");
    let kc = &app.state().keycloak;
    let subject = kc
        .ensure_user(&t.realm, &existing_name, &existing_email, TEST_PASSWORD)
        .await
        .unwrap();
    let res = invite(
        &app,
        &t.slug,
        &boss,
        json!({"email": existing_email, "roles": ["viewer"]}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let token = only_token(&existing_email).await;
    let preview: Value = post_token(
        &app,
        &t.slug,
        "/v1/invitations/open",
        json!({"token": token}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(preview["password_required"], false);
    let accepted: Value = post_token(
        &app,
        &t.slug,
        "/v1/invitations/accept",
        json!({"token": token}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(accepted["linked"], true, "{accepted}");
    // The linked account now signs in to the tenant's organization.
    let login = app
        .login(&t.realm, &existing_name, t.organization.as_deref())
        .await
        .expect("the linked account signs in to the organization");
    assert_eq!(
        me(&app, &t.slug, &login).await,
        accepted["user_id"].as_str().unwrap()
    );

    // A new address: the account is made with the chosen password.
    let fresh_name = format!("new-{}", t.slug);
    let fresh = format!("{fresh_name}@example.test");
    assert_eq!(
        invite(&app, &t.slug, &boss, json!({"email": fresh}))
            .await
            .status(),
        201
    );
    let token = only_token(&fresh).await;
    let res = post_token(
        &app,
        &t.slug,
        "/v1/invitations/accept",
        json!({"token": token, "password": TEST_PASSWORD, "username": fresh_name}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let accepted: Value = res.json().await.unwrap();
    assert_eq!(accepted["linked"], false);
    let login = app
        .login(&t.realm, &fresh_name, t.organization.as_deref())
        .await
        .expect("the new account signs in");
    assert_eq!(
        me(&app, &t.slug, &login).await,
        accepted["user_id"].as_str().unwrap()
    );
    if let Some(id) = kc.find_user(&t.realm, &fresh).await.unwrap() {
        let _ = kc.delete_user(&t.realm, &id).await;
    }
    let _ = kc.delete_user(&t.realm, &subject).await;
    app.cleanup().await;
}

#[tokio::test]
async fn templates_are_checked_at_save_and_used_by_locale() {
    let app = TestApp::start().await;
    let (t, boss) = local_tenant_with_admin(&app).await;
    let put = |locale: &str, body: Value| {
        as_user(
            &app,
            Method::PUT,
            &t.slug,
            &format!("/v1/invitations/templates/{locale}"),
            &boss,
        )
        .json(&body)
        .send()
    };
    let res = put(
        "de",
        json!({"subject": "Hallo {{ secret }}", "text_body": "{{ accept_url }} {% if %}"}),
    )
    .await
    .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/subject", "/text_body"], "{problem}");
    let res = put("de_DE", json!({"subject": "x", "text_body": "y"}))
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-parameter").await;
    let res = put(
        "de",
        json!({"subject": "Einladung zu {{ tenant_name }}",
               "text_body": "Hallo! {{ inviter_name }} lädt ein: {{ accept_url }}",
               "html_body": "<p>{{ message }}</p><a href=\"{{ accept_url }}\">Annehmen</a>"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let to = address("lang");
    let res = invite(
        &app,
        &t.slug,
        &boss,
        json!({"email": to, "locale": "de", "message": "<i>hi</i>"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let mails = await_mails(&to, 1).await;
    assert_eq!(mails.len(), 1);
    let mail = unfold(&mails[0]);
    assert!(mail.contains("Subject: Einladung zu Invite & Co"), "{mail}");
    assert!(
        mail.contains("&lt;i&gt;hi&lt;"),
        "the HTML body escapes variables: {mail}"
    );
    let html = mail.split("text/html").nth(1).expect("an HTML part");
    assert!(!html.contains("<i>hi"), "{html}");
    token_in(&mails[0]);
    let listed: Value = as_user(
        &app,
        Method::GET,
        &t.slug,
        "/v1/invitations/templates",
        &boss,
    )
    .fetch_json()
    .await;
    let locales: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["locale"].as_str().unwrap())
        .collect();
    assert_eq!(locales, ["en", "de"], "{listed}");
    let res = as_user(
        &app,
        Method::DELETE,
        &t.slug,
        "/v1/invitations/templates/de",
        &boss,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    let used: Value = as_user(
        &app,
        Method::GET,
        &t.slug,
        "/v1/invitations/templates/de",
        &boss,
    )
    .fetch_json()
    .await;
    assert_eq!(used["builtin"], true);
    app.cleanup().await;
}

#[tokio::test]
async fn the_hourly_limit_answers_429_with_retry_after() {
    let mut config = test_config();
    config.invitations.per_inviter_per_hour = 2;
    let app = TestApp::start_with(config).await;
    let (t, boss) = local_tenant_with_admin(&app).await;
    for _ in 0..2 {
        assert_eq!(
            invite(&app, &t.slug, &boss, json!({"email": address("lim")}))
                .await
                .status(),
            201
        );
    }
    let res = invite(&app, &t.slug, &boss, json!({"email": address("lim")})).await;
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3000..=3600).contains(&retry), "retry-after {retry}");
    expect_problem(res, 429, "rate-limited").await;
    app.cleanup().await;
}

/// The tenant-wide hourly limit, lowered by the tenant's own setting below the platform's,
/// is obeyed: 429 naming the tenant's limit, with `Retry-After`, though the inviter's own is far.
#[tokio::test]
async fn the_tenants_own_lower_hourly_limit_is_obeyed() {
    let mut config = test_config();
    config.invitations.per_inviter_per_hour = 100;
    config.invitations.per_tenant_per_hour = 5;
    let app = TestApp::start_with(config).await;
    let (t, boss) = local_tenant_with_admin(&app).await;
    let res = as_user(&app, Method::PATCH, &t.slug, "/v1/settings", &boss)
        .header("content-type", "application/merge-patch+json")
        .body(json!({"invitations": {"per_tenant_per_hour": 2}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    for _ in 0..2 {
        assert_eq!(
            invite(&app, &t.slug, &boss, json!({"email": address("tlim")}))
                .await
                .status(),
            201
        );
    }
    let res = invite(&app, &t.slug, &boss, json!({"email": address("tlim")})).await;
    assert!(res.headers().contains_key("retry-after"));
    let p = expect_problem(res, 429, "rate-limited").await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("this tenant may send 2"),
        "{p}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_failing_relay_is_retried_then_the_mail_marked_failed() {
    // The devstack's relay answers 451 to every `defer-` recipient, whichever server of the
    // test run sends (they all sweep every tenant); every server gives a mail two attempts.
    let app = TestApp::start().await;
    let (t, boss) = local_tenant_with_admin(&app).await;
    let created: Value = invite(
        &app,
        &t.slug,
        &boss,
        json!({"email": address("defer-lost")}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let last = loop {
        let now: Value = as_user(
            &app,
            Method::GET,
            &t.slug,
            &format!("/v1/invitations/{id}"),
            &boss,
        )
        .fetch_json()
        .await;
        if now["delivery"]["status"] == "failed" || std::time::Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(last["delivery"]["status"], "failed", "{last}");
    assert_eq!(last["delivery"]["attempts"], 2, "{last}");
    assert!(
        last["delivery"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    assert_eq!(last["status"], "pending", "never sent");
    assert!(actions_contain(&app, &t, "invitation.delivery_failed").await);
    app.cleanup().await;
}

#[tokio::test]
async fn an_expired_invitation_is_refused_and_closed_with_an_event() {
    let app = TestApp::start().await;
    let (t, boss) = local_tenant_with_admin(&app).await;
    let to = address("late");
    let created: Value = invite(&app, &t.slug, &boss, json!({"email": to}))
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let token = only_token(&to).await;
    let mut conn = direct(&test_config(), &t.database).await;
    diesel::sql_query(format!(
        "UPDATE {}.invitations SET expires_at = now() - interval '1 minute'",
        t.schema
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let res = post_token(
        &app,
        &t.slug,
        "/v1/invitations/accept",
        json!({"token": token, "password": PASSWORD}),
    )
    .await;
    expect_problem(res, 400, "invitation-token-invalid").await;
    let shown: Value = as_user(
        &app,
        Method::GET,
        &t.slug,
        &format!("/v1/invitations/{id}"),
        &boss,
    )
    .fetch_json()
    .await;
    assert_eq!(shown["status"], "expired");
    // The next invitation closes it for good, with its event.
    assert_eq!(
        invite(&app, &t.slug, &boss, json!({"email": to}))
            .await
            .status(),
        201
    );
    let events: Vec<Topic> = diesel::sql_query(format!(
        "SELECT topic FROM {}.outbox WHERE topic = 'invitation.expired'",
        t.schema
    ))
    .load(&mut conn)
    .await
    .unwrap();
    assert_eq!(events.len(), 1);
    app.cleanup().await;
}

#[tokio::test]
async fn bad_tokens_and_bodies_get_problems_and_change_nothing() {
    let app = TestApp::start().await;
    let (t, boss) = local_tenant_with_admin(&app).await;
    let (other, other_boss) = local_tenant_with_admin(&app).await;
    let to = address("foreign");
    assert_eq!(
        invite(&app, &other.slug, &other_boss, json!({"email": to}))
            .await
            .status(),
        201
    );
    let foreign = only_token(&to).await;
    for token in [
        foreign.clone(),
        format!("nti_{}", "A".repeat(43)),
        "nti_short".to_string(),
        format!("ntp_{}", "A".repeat(43)),
        format!("nti_{}\u{1}", "A".repeat(42)),
        "x".repeat(10_000),
    ] {
        for (path, body) in [
            ("/v1/invitations/open", json!({"token": token})),
            (
                "/v1/invitations/accept",
                json!({"token": token, "password": PASSWORD}),
            ),
        ] {
            let res = post_token(&app, &t.slug, path, body).await;
            expect_problem(res, 400, "invitation-token-invalid").await;
        }
    }
    // The other tenant's invitation is untouched by the attempt at this tenant.
    let listed: Value = as_user(
        &app,
        Method::GET,
        &other.slug,
        "/v1/invitations",
        &other_boss,
    )
    .fetch_json()
    .await;
    assert_eq!(listed["items"][0]["status"], "sent");
    for (body, status, slug) in [
        (json!({"email": "two@@example.test"}), 422, "validation"),
        (
            json!({"email": "a@b.test", "expires_in_hours": 0}),
            422,
            "validation",
        ),
        (
            json!({"email": "a@b.test", "locale": "english"}),
            422,
            "validation",
        ),
        (
            json!({"email": "a@b.test", "message": "x".repeat(2001)}),
            422,
            "validation",
        ),
        (
            json!({"email": "a@b.test", "teams": ["not-a-team-id"]}),
            422,
            "validation",
        ),
        (
            json!({"email": "a@b.test", "surprise": true}),
            422,
            "validation",
        ),
        (json!({"emails": "a@b.test"}), 422, "validation"),
    ] {
        let res = invite(&app, &t.slug, &boss, body.clone()).await;
        expect_problem(res, status, slug).await;
    }
    let res = as_user(
        &app,
        Method::GET,
        &t.slug,
        "/v1/invitations?status=lost",
        &boss,
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 400, "invalid-parameter").await;
    let counts: Value = as_user(&app, Method::GET, &t.slug, "/v1/invitations/counts", &boss)
        .fetch_json()
        .await;
    assert_eq!(counts["total"], 0, "nothing was created: {counts}");
    app.cleanup().await;
}
