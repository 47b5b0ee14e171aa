//! Notifications: the send API (audiences through teams, idempotency keys, limits, bad input),
//! the in-app inbox and its live stream (no update skipped under concurrent sends, resumable),
//! email through the SMTP sink (multipart, List-Unsubscribe, stable Message-ID), SMS and push
//! through the devstack's message provider (failover, retries, dead letters, refusals),
//! preferences with critical categories, quiet hours, digests, throttles, event rules,
//! templates, tracking and analytics.

use std::time::{Duration, Instant};

use futures::StreamExt;
use neotenant_tests::{
    Fetch, TestApp, TestTenant, await_mails, expect_problem, problem_pointers, tenant_with_admin,
    test_config, unfold,
};
use reqwest::Method;
use serde_json::{Value, json};

fn call(
    app: &TestApp,
    t: &TestTenant,
    token: &str,
    method: Method,
    path: &str,
) -> reqwest::RequestBuilder {
    app.anonymous(method, &t.slug, path).bearer_auth(token)
}

async fn send(app: &TestApp, t: &TestTenant, token: &str, body: Value) -> reqwest::Response {
    call(app, t, token, Method::POST, "/v1/notifications")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn sent_id(app: &TestApp, t: &TestTenant, token: &str, body: Value) -> String {
    let res = send(app, t, token, body).await;
    let status = res.status();
    let v: Value = res.json().await.unwrap();
    assert_eq!(status, 202, "{v}");
    v["id"].as_str().unwrap().to_string()
}

/// Waits (up to `secs`) until `check` holds for the deliveries of a notification.
async fn deliveries_until(
    app: &TestApp,
    t: &TestTenant,
    token: &str,
    id: &str,
    secs: u64,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let page = call(
            app,
            t,
            token,
            Method::GET,
            &format!("/v1/notifications/{id}/deliveries"),
        )
        .fetch_json()
        .await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if check(&items) {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries never settled: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn of<'a>(items: &'a [Value], channel: &str) -> &'a Value {
    items
        .iter()
        .find(|d| d["channel"] == channel)
        .unwrap_or_else(|| panic!("no {channel} delivery in {items:?}"))
}

fn settled(items: &[Value]) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|d| !["queued", "held", "digested"].contains(&d["status"].as_str().unwrap_or("")))
}

async fn inbox(app: &TestApp, t: &TestTenant, token: &str, query: &str) -> Vec<Value> {
    call(app, t, token, Method::GET, &format!("/v1/me/inbox{query}"))
        .fetch_json()
        .await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn unread(app: &TestApp, t: &TestTenant, token: &str) -> i64 {
    call(app, t, token, Method::GET, "/v1/me/inbox/count")
        .fetch_json()
        .await["unread"]
        .as_i64()
        .unwrap()
}

async fn wait_inbox(app: &TestApp, t: &TestTenant, token: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let items = inbox(app, t, token, "").await;
        if items.len() >= n {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "inbox has {} of {n}",
            items.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A header's value, folded lines joined.
fn header(mail: &str, name: &str) -> Option<String> {
    let mut lines = mail.lines();
    let prefix = format!("{name}: ");
    let first = lines.by_ref().find(|l| l.starts_with(&prefix))?;
    let mut value = first[prefix.len()..].to_string();
    for l in lines {
        if l.starts_with([' ', '\t']) {
            value.push_str(l.trim());
        } else {
            break;
        }
    }
    Some(value)
}

fn member_email(t: &TestTenant) -> String {
    format!("u-{}@example.test", t.slug)
}

/// The messages the devstack's provider received, with its answer.
fn provider_log() -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.devstack/provider/messages.jsonl");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// PUTs a notification category as the holder of `token` and asserts it was saved.
async fn put_category(app: &TestApp, t: &TestTenant, token: &str, key: &str, body: Value) {
    let res = call(
        app,
        t,
        token,
        Method::PUT,
        &format!("/v1/notification-categories/{key}"),
    )
    .json(&body)
    .send()
    .await
    .unwrap();
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );
}

#[tokio::test]
async fn a_send_reaches_team_members_in_app_and_by_mail_and_is_tracked() {
    let app = TestApp::start().await;
    let (t, member, boss, _boss_id) = tenant_with_admin(&app).await;
    // A team tree: the member is in Engineering, under Company.
    let company: Value = call(&app, &t, &boss, Method::POST, "/v1/teams")
        .json(&json!({"name": "Company"}))
        .fetch_json()
        .await;
    let eng: Value = call(&app, &t, &boss, Method::POST, "/v1/teams")
        .json(&json!({"name": "Engineering", "parent_id": company["id"]}))
        .fetch_json()
        .await;
    let res = call(
        &app,
        &t,
        &boss,
        Method::POST,
        &format!("/v1/teams/{}/members", eng["id"].as_str().unwrap()),
    )
    .json(&json!({"user_ids": [member]}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);

    // A member may not send.
    let res = send(
        &app,
        &t,
        &t.token,
        json!({"category": "system", "audience": {"everyone": true}, "data": {"title": "x"}}),
    )
    .await;
    expect_problem(res, 403, "forbidden").await;

    let res = send(
        &app,
        &t,
        &boss,
        json!({
            "category": "mention",
            "audience": {"teams": [company["id"]]},
            "data": {"title": "You were mentioned", "body": "<b>look</b> here", "link": "https://x.test/1", "author": "Boss"}
        }),
    )
    .await;
    assert_eq!(res.status(), 202);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let n: Value = res.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/notifications/{}", n["id"].as_str().unwrap())
    );
    assert_eq!(
        n["recipients"], 1,
        "only the member is in the team tree: {n}"
    );
    let id = n["id"].as_str().unwrap().to_string();

    let items = wait_inbox(&app, &t, &t.token, 1).await;
    assert_eq!(items[0]["title"], "You were mentioned");
    assert_eq!(items[0]["body"], "<b>look</b> here");
    assert_eq!(items[0]["category"], "mention");
    assert_eq!(unread(&app, &t, &t.token).await, 1);
    assert!(
        inbox(&app, &t, &boss, "").await.is_empty(),
        "the sender is not in the team"
    );

    let mails = await_mails(&member_email(&t), 1).await;
    assert_eq!(mails.len(), 1);
    let mail = unfold(&mails[0]);
    assert!(mail.contains("Subject: You were mentioned"), "{mail}");
    assert!(mail.contains("multipart/alternative"), "{mail}");
    let html = &mail[mail.find("text/html").expect("an HTML part")..];
    assert!(
        html.contains("&lt;b&gt;look&lt;") && !html.contains("<b>look"),
        "the HTML part is escaped: {mail}"
    );
    assert!(
        mail.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{mail}"
    );
    let delivery_mail_id = header(&mail, "Message-ID").expect("a Message-ID");
    let delivery_mail_id = delivery_mail_id.trim_start_matches('<').to_string();

    let ds = deliveries_until(&app, &t, &boss, &id, 10, settled).await;
    let email = of(&ds, "email");
    assert_eq!(email["status"], "sent", "{email}");
    assert_eq!(email["attempts"], 1);
    assert_eq!(email["history"][0]["provider"], "smtp");
    assert_eq!(email["history"][0]["ok"], true);
    assert!(delivery_mail_id.starts_with(&email["id"].as_str().unwrap().replace('-', "")));
    assert_eq!(of(&ds, "in_app")["status"], "delivered");

    // Read, unread, archive, read-all: the count follows.
    let item = items[0]["id"].as_str().unwrap();
    let c = call(
        &app,
        &t,
        &t.token,
        Method::POST,
        &format!("/v1/me/inbox/{item}/read"),
    )
    .fetch_json()
    .await;
    assert_eq!(c["unread"], 0);
    let c = call(
        &app,
        &t,
        &t.token,
        Method::POST,
        &format!("/v1/me/inbox/{item}/read"),
    )
    .fetch_json()
    .await;
    assert_eq!(c["unread"], 0, "reading twice changes nothing");
    let c = call(
        &app,
        &t,
        &t.token,
        Method::POST,
        &format!("/v1/me/inbox/{item}/unread"),
    )
    .fetch_json()
    .await;
    assert_eq!(c["unread"], 1);
    assert_eq!(inbox(&app, &t, &t.token, "?status=unread").await.len(), 1);
    let c = call(
        &app,
        &t,
        &t.token,
        Method::POST,
        &format!("/v1/me/inbox/{item}/archive"),
    )
    .fetch_json()
    .await;
    assert_eq!(c["unread"], 0);
    assert!(inbox(&app, &t, &t.token, "").await.is_empty());
    assert_eq!(inbox(&app, &t, &t.token, "?status=archived").await.len(), 1);
    let c = call(
        &app,
        &t,
        &t.token,
        Method::POST,
        &format!("/v1/me/inbox/{item}/unarchive"),
    )
    .fetch_json()
    .await;
    assert_eq!(c["unread"], 1);
    let c = call(&app, &t, &t.token, Method::POST, "/v1/me/inbox/read-all")
        .fetch_json()
        .await;
    assert_eq!(c["unread"], 0);
    let res = call(&app, &t, &t.token, Method::GET, "/v1/me/inbox?status=bogus")
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-parameter").await;

    // Nobody else reaches the item: not the boss, not another tenant's user.
    let res = call(
        &app,
        &t,
        &boss,
        Method::POST,
        &format!("/v1/me/inbox/{item}/read"),
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 404, "not-found").await;
    let other = app.with_tenant("eu", "schema").await;
    let res = call(
        &app,
        &other,
        &other.token,
        Method::POST,
        &format!("/v1/me/inbox/{item}/read"),
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 404, "not-found").await;
    let res = call(
        &app,
        &other,
        &other.token,
        Method::GET,
        &format!("/v1/notifications/{id}"),
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 403, "forbidden").await;

    // One-click unsubscribe from the mail's link turns that category's email off.
    let link = header(&mail, "List-Unsubscribe")
        .and_then(|l| l.strip_prefix('<')?.strip_suffix('>').map(str::to_string))
        .expect("a List-Unsubscribe link");
    let token = link.split("token=").nth(1).unwrap().to_string();
    let res = app
        .anonymous(
            Method::POST,
            &t.slug,
            &format!("/v1/notifications/unsubscribe?token={}x", &token),
        )
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-parameter").await;
    let res = app
        .anonymous(
            Method::POST,
            &other.slug,
            &format!("/v1/notifications/unsubscribe?token={token}"),
        )
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-parameter").await;
    let res = app
        .anonymous(
            Method::POST,
            &t.slug,
            &format!("/v1/notifications/unsubscribe?token={token}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let prefs = call(
        &app,
        &t,
        &t.token,
        Method::GET,
        "/v1/me/notification-preferences",
    )
    .fetch_json()
    .await;
    let mention = prefs["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "mention")
        .unwrap();
    let email = mention["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "email")
        .unwrap();
    assert_eq!(email["enabled"], false);
    assert_eq!(email["source"], "recipient");

    // The list and the analytics see it.
    let list = call(&app, &t, &boss, Method::GET, "/v1/notifications")
        .fetch_json()
        .await;
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert_eq!(list["items"][0]["status"], "expanded");
    let stats = call(&app, &t, &boss, Method::GET, "/v1/notifications/analytics")
        .fetch_json()
        .await;
    let email_stat = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["category"] == "mention" && s["channel"] == "email")
        .unwrap();
    assert_eq!(email_stat["sent"], 1, "{stats}");
    let in_app = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["category"] == "mention" && s["channel"] == "in_app")
        .unwrap();
    assert_eq!(in_app["read"], 1, "{stats}");
    assert_eq!(in_app["read_rate"], 1.0, "{stats}");
    let res = call(
        &app,
        &t,
        &boss,
        Method::GET,
        "/v1/notifications/analytics?from=yesterday",
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 400, "invalid-parameter").await;
    app.cleanup().await;
}

#[tokio::test]
async fn bad_sends_templates_and_categories_are_clear_problems() {
    let app = TestApp::start().await;
    let (t, member, boss, _) = tenant_with_admin(&app).await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"category": "nope", "audience": {"users": [member]}}),
            "/category",
        ),
        (
            json!({"category": "system", "audience": {}, "data": {"title": "x"}}),
            "/audience",
        ),
        (
            json!({"category": "system", "audience": {"users": [format!("usr_{}", uuid::Uuid::new_v4().simple())]}, "data": {"title": "x"}}),
            "/audience/users/0",
        ),
        (
            json!({"category": "system", "audience": {"teams": [format!("team_{}", uuid::Uuid::new_v4().simple())]}, "data": {"title": "x"}}),
            "/audience/teams/0",
        ),
        (
            json!({"category": "system", "audience": {"roles": ["no-such-role"]}, "data": {"title": "x"}}),
            "/audience/roles/0",
        ),
        (
            json!({"category": "system", "audience": {"users": [member]}, "data": {"title": 5}}),
            "/data/title",
        ),
        (
            json!({"category": "system", "audience": {"users": [member]}, "data": {}}),
            "/data/title",
        ),
        (
            json!({"category": "system", "audience": {"users": [member]}, "data": {"title": "x", "nope": 1}}),
            "/data/nope",
        ),
        (
            json!({"category": "mention", "audience": {"users": [member]}, "data": {"title": "x", "link": "javascript:alert(1)"}}),
            "/data/link",
        ),
        (
            json!({"category": "system", "audience": {"users": [member]}, "data": {"title": "x".repeat(20_000)}}),
            "/data",
        ),
        (
            json!({"category": "system", "audience": {"users": [member]}, "data": {"title": "x"}, "channels": ["email"]}),
            "/channels/0",
        ),
        (
            json!({"category": "system", "audience": {"users": [member]}, "data": {"title": "x"}, "send_at": "2099-01-01T00:00:00Z"}),
            "/send_at",
        ),
    ];
    for (body, pointer) in cases {
        let res = send(&app, &t, &boss, body.clone()).await;
        let problem = expect_problem(res, 422, "validation").await;
        assert!(
            problem_pointers(&problem).iter().any(|p| p == pointer),
            "{body}: {problem}"
        );
    }
    let res = send(
        &app,
        &t,
        &boss,
        json!({"category": "system", "audience": {"users": [member]}, "channels": ["fax"]}),
    )
    .await;
    expect_problem(res, 422, "validation").await;
    let res = call(&app, &t, &boss, Method::POST, "/v1/notifications")
        .header("content-type", "application/json")
        .body("{\"category\": ")
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "malformed-json").await;
    let res = call(&app, &t, &boss, Method::POST, "/v1/notifications")
        .header("idempotency-key", "has space")
        .json(
            &json!({"category": "system", "audience": {"users": [member]}, "data": {"title": "x"}}),
        )
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-parameter").await;
    assert!(
        call(&app, &t, &boss, Method::GET, "/v1/notifications")
            .fetch_json()
            .await["items"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was stored"
    );

    // Templates: syntax errors and unknown variables are 422 at save.
    let put = |path: &str, body: Value| call(&app, &t, &boss, Method::PUT, path).json(&body).send();
    let res = put(
        "/v1/notification-templates/mention/email/en",
        json!({"subject": "{{ title", "body": "x"}),
    )
    .await
    .unwrap();
    let p = expect_problem(res, 422, "validation").await;
    assert_eq!(problem_pointers(&p), ["/subject"], "{p}");
    let res = put(
        "/v1/notification-templates/mention/email/en",
        json!({"subject": "Hi", "body": "{{ password }} {{ recipient.secret }}"}),
    )
    .await
    .unwrap();
    let p = expect_problem(res, 422, "validation").await;
    assert_eq!(p["errors"].as_array().unwrap().len(), 2, "{p}");
    let res = put(
        "/v1/notification-templates/mention/sms/en",
        json!({"body": "{{ title }}", "html": "<p>x</p>"}),
    )
    .await
    .unwrap();
    expect_problem(res, 422, "validation").await;
    let res = put(
        "/v1/notification-templates/mention/fax/en",
        json!({"body": "x"}),
    )
    .await
    .unwrap();
    expect_problem(res, 400, "invalid-parameter").await;
    let res = put(
        "/v1/notification-templates/mention/email/x_y!",
        json!({"body": "x"}),
    )
    .await
    .unwrap();
    expect_problem(res, 400, "invalid-parameter").await;
    let res = put(
        "/v1/notification-templates/nope/email/en",
        json!({"body": "x"}),
    )
    .await
    .unwrap();
    expect_problem(res, 404, "not-found").await;
    let res = put(
        "/v1/notification-templates/mention/email/de",
        json!({"subject": "Erwähnt: {{ title }}", "body": "{{ author }} schrieb {{ body }}", "html": "<p>{{ author }}: {{ body }}</p>"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);

    // Preview: the saved template for a locale (de-AT falls back to de), with data.
    let preview = call(
        &app,
        &t,
        &boss,
        Method::POST,
        "/v1/notification-templates/preview",
    )
    .json(
        &json!({"category": "mention", "channel": "email", "locale": "de-AT",
                      "data": {"title": "T", "author": "Ada", "body": "<script>"}}),
    )
    .fetch_json()
    .await;
    assert_eq!(preview["subject"], "Erwähnt: T", "{preview}");
    assert_eq!(preview["body"], "Ada schrieb <script>");
    assert_eq!(preview["html"], "<p>Ada: &lt;script&gt;</p>");
    // Without data: sample values of the declared types.
    let preview = call(&app, &t, &boss, Method::POST, "/v1/notification-templates/preview")
        .json(&json!({"category": "mention", "channel": "email", "template": {"subject": "{{ title }}", "body": "{{ link }}"}}))
        .fetch_json()
        .await;
    assert_eq!(preview["subject"], "sample title", "{preview}");
    assert_eq!(preview["body"], "https://example.com/sample");
    let res = call(
        &app,
        &t,
        &boss,
        Method::POST,
        "/v1/notification-templates/preview",
    )
    .json(&json!({"category": "mention", "channel": "email", "data": {"title": 1}}))
    .send()
    .await
    .unwrap();
    expect_problem(res, 422, "validation").await;

    // Categories: bad keys and shapes; a platform category's variables are fixed.
    let res = put(
        "/v1/notification-categories/Bad Key",
        json!({"name": "x", "channels": ["email"]}),
    )
    .await
    .unwrap();
    expect_problem(res, 422, "validation").await;
    let res = put(
        "/v1/notification-categories/mention",
        json!({"channels": ["email"], "variables": {}}),
    )
    .await
    .unwrap();
    expect_problem(res, 422, "validation").await;
    let res = put(
        "/v1/notification-categories/weekly",
        json!({"name": "Weekly", "channels": ["in_app"], "digest": {"window_secs": 60}}),
    )
    .await
    .unwrap();
    let p = expect_problem(res, 422, "validation").await;
    assert!(problem_pointers(&p).iter().any(|p| p == "/digest"), "{p}");
    let res = put("/v1/notification-categories/weekly", json!({"name": "Weekly", "channels": ["in_app"], "throttle": {"max": 1, "window_secs": 60, "key": "nope"}})).await.unwrap();
    expect_problem(res, 422, "validation").await;
    let res = call(
        &app,
        &t,
        &t.token,
        Method::PUT,
        "/v1/notification-categories/weekly",
    )
    .json(&json!({"name": "Weekly", "channels": ["in_app"]}))
    .send()
    .await
    .unwrap();
    expect_problem(res, 403, "forbidden").await;
    let res = put(
        "/v1/notification-categories/mention",
        json!({"channels": ["in_app"], "quiet_hours": "skip"}),
    )
    .await
    .unwrap();
    let c: Value = res.json().await.unwrap();
    assert_eq!(c["channels"], json!(["in_app"]));
    assert_eq!(c["platform"], true);
    assert_eq!(c["name"], "Mention");
    // Deleting the override restores the platform's.
    let res = call(
        &app,
        &t,
        &boss,
        Method::DELETE,
        "/v1/notification-categories/mention",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    let c = call(
        &app,
        &t,
        &boss,
        Method::GET,
        "/v1/notification-categories/mention",
    )
    .fetch_json()
    .await;
    assert_eq!(c["channels"], json!(["in_app", "email"]));
    app.cleanup().await;
}

#[tokio::test]
async fn idempotency_keys_replay_refuse_in_flight_and_reuse_and_store_only_successes() {
    let app = TestApp::start().await;
    let (t, member, boss, _) = tenant_with_admin(&app).await;
    let body =
        json!({"category": "system", "audience": {"users": [member]}, "data": {"title": "Once"}});
    let keyed = |key: &str, body: &Value| {
        call(&app, &t, &boss, Method::POST, "/v1/notifications")
            .header("idempotency-key", key)
            .json(body)
            .send()
    };
    let first = keyed("order-1", &body).await.unwrap();
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotency-replay").is_none());
    let first: Value = first.json().await.unwrap();
    let again = keyed("order-1", &body).await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotency-replay"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let other =
        json!({"category": "system", "audience": {"users": [member]}, "data": {"title": "Other"}});
    let res = keyed("order-1", &other).await.unwrap();
    expect_problem(res, 422, "idempotency-key-reused").await;

    // A failure stores nothing: the key still works for a good request.
    let bad = json!({"category": "nope", "audience": {"users": [member]}});
    expect_problem(keyed("order-2", &bad).await.unwrap(), 422, "validation").await;
    assert_eq!(keyed("order-2", &other).await.unwrap().status(), 202);

    // Concurrent requests with one key: one notification; the others wait their turn (409
    // with Retry-After) or get the replay.
    let body3 =
        json!({"category": "system", "audience": {"users": [member]}, "data": {"title": "Race"}});
    let results = futures::future::join_all((0..8).map(|_| keyed("order-3", &body3))).await;
    let mut ids = std::collections::BTreeSet::new();
    for res in results {
        let res = res.unwrap();
        match res.status().as_u16() {
            202 => {
                let v: Value = res.json().await.unwrap();
                ids.insert(v["id"].as_str().unwrap().to_string());
            }
            409 => {
                assert!(res.headers().contains_key("retry-after"));
                expect_problem(res, 409, "idempotency-in-flight").await;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(ids.len(), 1, "one notification for one key: {ids:?}");
    let list = call(&app, &t, &boss, Method::GET, "/v1/notifications")
        .fetch_json()
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3, "{list}");
    wait_inbox(&app, &t, &t.token, 3).await;
    app.cleanup().await;
}

fn hhmm(h: i64) -> String {
    format!("{:02}:00", h.rem_euclid(24))
}

#[tokio::test]
async fn preferences_critical_categories_and_quiet_hours() {
    let app = TestApp::start().await;
    let (t, member, boss, _) = tenant_with_admin(&app).await;
    let patch = |body: Value| {
        call(
            &app,
            &t,
            &t.token,
            Method::PATCH,
            "/v1/me/notification-preferences",
        )
        .json(&body)
        .send()
    };
    let res =
        patch(json!({"categories": {"mention": {"email": false}, "security": {"email": false}}}))
            .await
            .unwrap();
    assert_eq!(res.status(), 200);
    let view: Value = res.json().await.unwrap();
    let find = |cat: &str, ch: &str| {
        view["categories"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["category"] == cat)
            .unwrap()["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == ch)
            .unwrap()
            .clone()
    };
    assert_eq!(find("mention", "email")["enabled"], false);
    assert_eq!(
        find("security", "email")["enabled"],
        true,
        "critical ignores the choice"
    );
    assert_eq!(find("security", "email")["source"], "critical");
    assert_eq!(find("mention", "in_app")["source"], "platform");
    for (body, pointer) in [
        (
            json!({"categories": {"nope": {"email": true}}}),
            "/categories/nope",
        ),
        (
            json!({"categories": {"system": {"email": true}}}),
            "/categories/system/email",
        ),
        (json!({"phone": "0151 123"}), "/phone"),
        (
            json!({"quiet_hours": {"start": "25:00", "end": "07:00"}}),
            "/quiet_hours",
        ),
    ] {
        let p = expect_problem(patch(body.clone()).await.unwrap(), 422, "validation").await;
        assert!(
            problem_pointers(&p).iter().any(|x| x == pointer),
            "{body}: {p}"
        );
    }

    let mention =
        json!({"category": "mention", "audience": {"users": [member]}, "data": {"title": "Hi"}});
    let id = sent_id(&app, &t, &boss, mention.clone()).await;
    let ds = deliveries_until(&app, &t, &boss, &id, 10, settled).await;
    assert_eq!(of(&ds, "email")["status"], "skipped");
    assert_eq!(of(&ds, "email")["reason"], "preference");
    assert_eq!(of(&ds, "in_app")["status"], "delivered");
    let security = json!({"category": "security", "audience": {"users": [member]}, "data": {"title": "New sign-in"}});
    let id = sent_id(&app, &t, &boss, security.clone()).await;
    let ds = deliveries_until(&app, &t, &boss, &id, 10, settled).await;
    assert_eq!(
        of(&ds, "email")["status"],
        "sent",
        "critical mail goes out: {ds:?}"
    );

    // Quiet hours around now (UTC): mail is held until they end; critical mail is not.
    let h = chrono::Utc::now()
        .format("%H")
        .to_string()
        .parse::<i64>()
        .unwrap();
    let res = patch(json!({"categories": {"mention": {"email": null}}, "quiet_hours": {"start": hhmm(h - 1), "end": hhmm(h + 2)}})).await.unwrap();
    assert_eq!(res.status(), 200);
    let id = sent_id(&app, &t, &boss, mention.clone()).await;
    let ds = deliveries_until(&app, &t, &boss, &id, 10, |d| {
        d.iter()
            .any(|d| d["channel"] == "email" && d["status"] == "held")
    })
    .await;
    let held = of(&ds, "email");
    assert_eq!(held["reason"], "quiet hours");
    let next: chrono::DateTime<chrono::Utc> =
        held["next_attempt_at"].as_str().unwrap().parse().unwrap();
    assert!(
        next > chrono::Utc::now() + chrono::Duration::minutes(1),
        "{held}"
    );
    let id = sent_id(&app, &t, &boss, security).await;
    let ds = deliveries_until(&app, &t, &boss, &id, 10, settled).await;
    assert_eq!(of(&ds, "email")["status"], "sent");
    // A category that skips instead of holding.
    put_category(
        &app,
        &t,
        &boss,
        "mention",
        json!({"channels": ["in_app", "email"], "quiet_hours": "skip"}),
    )
    .await;
    let id = sent_id(&app, &t, &boss, mention).await;
    let ds = deliveries_until(&app, &t, &boss, &id, 10, settled).await;
    assert_eq!(of(&ds, "email")["status"], "skipped");
    assert_eq!(of(&ds, "email")["reason"], "quiet hours");
    app.cleanup().await;
}

#[tokio::test]
async fn sms_and_push_fail_over_retry_and_end_in_dead_letters() {
    let app = TestApp::start().await;
    let (t, member, boss, boss_id) = tenant_with_admin(&app).await;
    put_category(
        &app,
        &t,
        &boss,
        "alerts",
        json!({"name": "Alerts", "channels": ["sms", "push"],
                      "variables": {"title": {"type": "string", "required": true}}}),
    )
    .await;
    let prefs = |token: &str, body: Value| {
        call(
            &app,
            &t,
            token,
            Method::PATCH,
            "/v1/me/notification-preferences",
        )
        .json(&body)
        .send()
    };
    let tag = &t.slug;
    assert_eq!(
        prefs(
            &t.token,
            json!({"phone": "+4915112345678", "push_tokens": [format!("tok-primary-down-{tag}")]})
        )
        .await
        .unwrap()
        .status(),
        200
    );
    assert_eq!(
        prefs(
            &boss,
            json!({"push_tokens": [format!("tok-all-down-{tag}")]})
        )
        .await
        .unwrap()
        .status(),
        200
    );

    let id = sent_id(&app, &t, &boss, json!({"category": "alerts", "audience": {"users": [member, boss_id]}, "data": {"title": "Disk full"}})).await;
    let ds = deliveries_until(&app, &t, &boss, &id, 30, settled).await;
    let mine: Vec<Value> = ds
        .iter()
        .filter(|d| d["user_id"] == member.as_str())
        .cloned()
        .collect();
    let sms = of(&mine, "sms");
    assert_eq!(sms["status"], "sent", "{sms}");
    let push = of(&mine, "push");
    assert_eq!(push["status"], "sent", "{push}");
    assert_eq!(
        push["provider"], "secondary",
        "the failing primary was passed over: {push}"
    );
    let theirs: Vec<Value> = ds
        .iter()
        .filter(|d| d["user_id"] == boss_id.as_str())
        .cloned()
        .collect();
    assert_eq!(
        of(&theirs, "sms")["status"],
        "skipped",
        "the boss has no phone"
    );
    let dead = of(&theirs, "push");
    assert_eq!(dead["status"], "failed", "{dead}");
    assert_eq!(dead["attempts"], 3);
    assert!(
        dead["last_error"].as_str().unwrap().contains("503"),
        "{dead}"
    );
    assert!(dead["history"].as_array().unwrap().len() >= 3);
    assert!(dead["failed_at"].is_string());

    // What the provider saw: the delivery's id as idempotency key, the rendered message.
    let log = provider_log();
    let accepted: Vec<&Value> = log
        .iter()
        .filter(|m| m["key"] == push["id"] && m["status"] == 202)
        .collect();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0]["provider"], "secondary");
    assert_eq!(accepted[0]["message"]["title"], "Disk full");
    assert_eq!(
        accepted[0]["message"]["to"],
        format!("tok-primary-down-{tag}")
    );

    // The provider reports delivery with its own token; nobody else can.
    let push_id = push["id"].as_str().unwrap().to_string();
    let report = |token: &str, body: Value| {
        app.anonymous(
            Method::POST,
            &t.slug,
            &format!("/v1/notifications/deliveries/{push_id}/report"),
        )
        .bearer_auth(token)
        .json(&body)
        .send()
    };
    let delivered = json!({"provider": "secondary", "status": "delivered"});
    expect_problem(
        report("wrong", delivered.clone()).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    expect_problem(
        report(&boss, delivered.clone()).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    let by_primary = json!({"provider": "primary", "status": "delivered"});
    expect_problem(
        report("dev-provider-token-primary", by_primary)
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;
    let lost = json!({"provider": "secondary", "status": "lost"});
    expect_problem(
        report("dev-provider-token-secondary", lost).await.unwrap(),
        422,
        "validation",
    )
    .await;
    assert_eq!(
        report("dev-provider-token-secondary", delivered)
            .await
            .unwrap()
            .status(),
        204
    );
    let ds = deliveries_until(&app, &t, &boss, &id, 5, |d| {
        d.iter()
            .any(|d| d["id"] == push_id.as_str() && d["status"] == "delivered")
    })
    .await;
    assert!(
        ds.iter()
            .any(|d| d["id"] == push_id.as_str() && d["delivered_at"].is_string())
    );

    // A dead letter goes back in the queue by hand; a sent delivery cannot.
    let dead_id = dead["id"].as_str().unwrap();
    let res = call(
        &app,
        &t,
        &boss,
        Method::POST,
        &format!(
            "/v1/notifications/deliveries/{}/retry",
            push["id"].as_str().unwrap()
        ),
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 409, "conflict").await;
    assert_eq!(
        prefs(&boss, json!({"push_tokens": [format!("tok-ok-{tag}")]}))
            .await
            .unwrap()
            .status(),
        200
    );
    let res = call(
        &app,
        &t,
        &boss,
        Method::POST,
        &format!("/v1/notifications/deliveries/{dead_id}/retry"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    let ds = deliveries_until(&app, &t, &boss, &id, 30, |d| {
        d.iter()
            .any(|d| d["id"] == dead_id && d["status"] == "sent")
    })
    .await;
    assert!(
        ds.iter()
            .any(|d| d["id"] == dead_id && d["status"] == "sent")
    );

    // Refused for good (400): bounced after one attempt, no retry. A provider that hangs or
    // answers garbage: retried and recorded, and other mail keeps going meanwhile.
    assert_eq!(
        prefs(
            &t.token,
            json!({"push_tokens": [format!("tok-refuse-{tag}")], "phone": null})
        )
        .await
        .unwrap()
        .status(),
        200
    );
    assert_eq!(
        prefs(&boss, json!({"push_tokens": [format!("tok-hang-{tag}")]}))
            .await
            .unwrap()
            .status(),
        200
    );
    let id = sent_id(&app, &t, &boss, json!({"category": "alerts", "audience": {"users": [member, boss_id]}, "data": {"title": "Again"}, "channels": ["push"]})).await;
    let quick = sent_id(&app, &t, &boss, json!({"category": "system", "audience": {"users": [member]}, "data": {"title": "Meanwhile"}})).await;
    deliveries_until(&app, &t, &boss, &quick, 5, settled).await;
    let ds = deliveries_until(&app, &t, &boss, &id, 40, settled).await;
    let refused = ds.iter().find(|d| d["user_id"] == member.as_str()).unwrap();
    assert_eq!(refused["status"], "bounced", "{refused}");
    assert_eq!(refused["attempts"], 1);
    let hung = ds
        .iter()
        .find(|d| d["user_id"] == boss_id.as_str())
        .unwrap();
    assert_eq!(hung["status"], "failed", "{hung}");
    assert!(
        hung["last_error"].as_str().unwrap().contains("timed out"),
        "{hung}"
    );
    assert_eq!(
        prefs(
            &t.token,
            json!({"push_tokens": [format!("tok-garbage-{tag}")]})
        )
        .await
        .unwrap()
        .status(),
        200
    );
    let id = sent_id(&app, &t, &boss, json!({"category": "alerts", "audience": {"users": [member]}, "data": {"title": "Garbage"}, "channels": ["push"]})).await;
    let ds = deliveries_until(&app, &t, &boss, &id, 30, settled).await;
    assert_eq!(ds[0]["status"], "failed", "{ds:?}");
    assert!(ds[0]["last_error"].as_str().unwrap().contains("500"));
    app.cleanup().await;
}

/// Reads Server-Sent Events frames from a response: (id, event, data).
struct Sse {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl Sse {
    fn new(res: reqwest::Response) -> Self {
        Sse {
            stream: res.bytes_stream().boxed(),
            buf: String::new(),
        }
    }
    async fn next(&mut self) -> (Option<i64>, String, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), Value::Null);
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(v).unwrap();
                    }
                }
                if event.is_empty() {
                    continue; // a keepalive or the retry hint
                }
                return (id, event, data);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(15), self.stream.next())
                .await
                .expect("an event within 15 s")
                .expect("the stream is open")
                .unwrap();
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test]
async fn the_inbox_stream_never_skips_an_update_and_resumes() {
    let app = TestApp::start().await;
    let (t, member, boss, _) = tenant_with_admin(&app).await;
    let res = call(&app, &t, &t.token, Method::GET, "/v1/me/inbox/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut sse = Sse::new(res);
    let (_, event, data) = sse.next().await;
    assert_eq!(event, "unread");
    assert_eq!(data["unread"], 0);

    // Twenty concurrent sends to one user.
    const N: i64 = 20;
    let sends = (0..N).map(|i| {
        send(&app, &t, &boss, json!({"category": "system", "audience": {"users": [member]}, "data": {"title": format!("n{i}")}}))
    });
    for res in futures::future::join_all(sends).await {
        assert_eq!(res.status(), 202);
    }
    let mut seen = Vec::new();
    while seen.len() < N as usize {
        let (id, event, data) = sse.next().await;
        assert_eq!(event, "created", "{data}");
        assert!(data["item"]["title"].as_str().unwrap().starts_with('n'));
        seen.push((id.unwrap(), data["unread"].as_i64().unwrap()));
    }
    let counts: Vec<i64> = seen.iter().map(|s| s.1).collect();
    assert_eq!(counts, (1..=N).collect::<Vec<_>>(), "every count, in order");
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "ids increase: {seen:?}"
    );
    assert_eq!(unread(&app, &t, &t.token).await, N);

    // Resume after the tenth: the eleventh to the twentieth, then live changes.
    let res = call(&app, &t, &t.token, Method::GET, "/v1/me/inbox/stream")
        .header("last-event-id", seen[9].0.to_string())
        .send()
        .await
        .unwrap();
    let mut again = Sse::new(res);
    let (_, event, data) = again.next().await;
    assert_eq!(
        (event.as_str(), data["unread"].as_i64()),
        ("unread", Some(N))
    );
    for want in &seen[10..] {
        let (id, _, data) = again.next().await;
        assert_eq!((id.unwrap(), data["unread"].as_i64().unwrap()), *want);
    }
    call(&app, &t, &t.token, Method::POST, "/v1/me/inbox/read-all")
        .send()
        .await
        .unwrap();
    let (_, event, data) = again.next().await;
    assert_eq!(event, "all_read");
    assert_eq!(data["unread"], 0);
    let res = call(&app, &t, &t.token, Method::GET, "/v1/me/inbox/stream")
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-parameter").await;
    app.cleanup().await;
}

#[tokio::test]
async fn digests_batch_throttles_cap_and_scheduled_sends_wait() {
    let app = TestApp::start().await;
    let (t, member, boss, _) = tenant_with_admin(&app).await;
    let put = |key: &str, body: Value| {
        call(
            &app,
            &t,
            &boss,
            Method::PUT,
            &format!("/v1/notification-categories/{key}"),
        )
        .json(&body)
        .send()
    };
    let vars = json!({"title": {"type": "string", "required": true}});
    assert_eq!(put("digest", json!({"name": "Digest", "channels": ["email"], "variables": vars, "digest": {"window_secs": 4, "max_items": 2}})).await.unwrap().status(), 200);
    assert_eq!(put("capped", json!({"name": "Capped", "channels": ["in_app"], "variables": vars, "throttle": {"max": 2, "window_secs": 3600}})).await.unwrap().status(), 200);

    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(sent_id(&app, &t, &boss, json!({"category": "digest", "audience": {"users": [member]}, "data": {"title": format!("item {i}")}})).await);
    }
    let ds = deliveries_until(&app, &t, &boss, &ids[0], 10, |d| !d.is_empty()).await;
    assert_eq!(ds[0]["status"], "digested");
    let mails = await_mails(&member_email(&t), 1).await;
    assert_eq!(mails.len(), 1, "one digest mail");
    let mail = unfold(&mails[0]);
    assert!(
        mail.contains("Subject: 3 new Digest notifications"),
        "{mail}"
    );
    assert!(mail.contains("item 0") && mail.contains("item 1"), "{mail}");
    assert!(
        !mail.contains("item 2") && mail.contains("and 1 more"),
        "capped at two: {mail}"
    );
    for id in &ids {
        let ds = deliveries_until(&app, &t, &boss, id, 10, settled).await;
        assert_eq!(ds[0]["status"], "sent");
    }

    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(sent_id(&app, &t, &boss, json!({"category": "capped", "audience": {"users": [member]}, "data": {"title": format!("c{i}")}})).await);
    }
    let last = deliveries_until(&app, &t, &boss, &ids[2], 10, settled).await;
    assert_eq!(last[0]["status"], "throttled", "{last:?}");
    assert_eq!(wait_inbox(&app, &t, &t.token, 2).await.len(), 2);

    // A digest whose category is deleted meanwhile closes as failed (it does not linger).
    assert_eq!(
        put(
            "gone",
            json!({"name": "Gone", "channels": ["email"], "variables": vars,
                   "digest": {"window_secs": 3}})
        )
        .await
        .unwrap()
        .status(),
        200
    );
    let id = sent_id(
        &app,
        &t,
        &boss,
        json!({"category": "gone", "audience": {"users": [member]}, "data": {"title": "g"}}),
    )
    .await;
    deliveries_until(&app, &t, &boss, &id, 10, |d| {
        d.first().is_some_and(|d| d["status"] == "digested")
    })
    .await;
    let res = call(
        &app,
        &t,
        &boss,
        Method::DELETE,
        "/v1/notification-categories/gone",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    let ds = deliveries_until(&app, &t, &boss, &id, 15, settled).await;
    assert_eq!(ds[0]["status"], "failed", "{ds:?}");
    assert_eq!(ds[0]["last_error"], "the category no longer exists");

    // The first item of a quiet period may go at once; the rest wait for the digest.
    assert_eq!(
        put(
            "firstfast",
            json!({"name": "First fast", "channels": ["email"], "variables": vars,
                   "digest": {"window_secs": 3600, "send_first": true}})
        )
        .await
        .unwrap()
        .status(),
        200
    );
    let mut statuses = Vec::new();
    for i in 0..2 {
        let id = sent_id(
            &app,
            &t,
            &boss,
            json!({"category": "firstfast", "audience": {"users": [member]}, "data": {"title": format!("f{i}")}}),
        )
        .await;
        let ds = deliveries_until(&app, &t, &boss, &id, 10, |d| {
            d.iter()
                .any(|d| ["sent", "digested"].contains(&d["status"].as_str().unwrap()))
        })
        .await;
        statuses.push(ds[0]["status"].as_str().unwrap().to_string());
    }
    assert_eq!(statuses, ["sent", "digested"]);

    // The tenant's daily digest setting batches categories without a digest of their own;
    // critical ones still go at once.
    let res = call(&app, &t, &boss, Method::PATCH, "/v1/settings")
        .header("content-type", "application/merge-patch+json")
        .body(json!({"notifications": {"digest": "daily"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let id = sent_id(
        &app,
        &t,
        &boss,
        json!({"category": "mention", "audience": {"users": [member]}, "data": {"title": "later today"}}),
    )
    .await;
    let ds = deliveries_until(&app, &t, &boss, &id, 10, |d| d.len() == 2).await;
    assert_eq!(of(&ds, "email")["status"], "digested", "{ds:?}");
    let id = sent_id(
        &app,
        &t,
        &boss,
        json!({"category": "security", "audience": {"users": [member]}, "data": {"title": "now"}}),
    )
    .await;
    let ds = deliveries_until(&app, &t, &boss, &id, 10, settled).await;
    assert_eq!(of(&ds, "email")["status"], "sent");

    // Scheduled: waits for its time; a scheduled one can be cancelled.
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let res = send(&app, &t, &boss, json!({"category": "system", "audience": {"users": [member]}, "data": {"title": "later"}, "send_at": at})).await;
    let n: Value = res.json().await.unwrap();
    assert_eq!(n["status"], "scheduled");
    let id = n["id"].as_str().unwrap();
    let ds = deliveries_until(&app, &t, &boss, id, 10, settled).await;
    assert_eq!(ds[0]["status"], "delivered");
    let created: chrono::DateTime<chrono::Utc> =
        ds[0]["created_at"].as_str().unwrap().parse().unwrap();
    assert!(
        created >= at - chrono::Duration::milliseconds(5),
        "not before its time"
    );
    let far = chrono::Utc::now() + chrono::Duration::hours(1);
    let res = send(&app, &t, &boss, json!({"category": "system", "audience": {"users": [member]}, "data": {"title": "never"}, "send_at": far})).await;
    let n: Value = res.json().await.unwrap();
    let id = n["id"].as_str().unwrap();
    let res = call(
        &app,
        &t,
        &boss,
        Method::DELETE,
        &format!("/v1/notifications/{id}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    let res = call(
        &app,
        &t,
        &boss,
        Method::GET,
        &format!("/v1/notifications/{id}"),
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 404, "not-found").await;
    app.cleanup().await;
}

#[tokio::test]
async fn event_rules_turn_outbox_events_into_notifications() {
    let app = TestApp::start().await;
    let (t, member, boss, _) = tenant_with_admin(&app).await;
    let res = call(&app, &t, &boss, Method::POST, "/v1/notification-rules")
        .json(&json!({"topic": "settings.changed", "category": "system", "audience": {"users": [member]},
                      "data": {"title": {"value": "Settings changed"}, "body": {"from": "/aggregate_type"}, "nope": {"value": 1}}}))
        .send()
        .await
        .unwrap();
    let p = expect_problem(res, 422, "validation").await;
    assert_eq!(problem_pointers(&p), ["/data/nope"], "{p}");
    let res = call(&app, &t, &boss, Method::POST, "/v1/notification-rules")
        .json(&json!({"topic": "settings.changed", "category": "system", "audience": {"users": [member]},
                      "data": {"title": {"value": "Settings changed"}, "body": {"from": "/aggregate_type"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = call(&app, &t, &boss, Method::PATCH, "/v1/settings")
        .header("content-type", "application/merge-patch+json")
        .body(json!({"general": {"locale": "de"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let items = wait_inbox(&app, &t, &t.token, 1).await;
    assert_eq!(items[0]["title"], "Settings changed");
    assert_eq!(items[0]["body"], "settings");
    let list = call(&app, &t, &boss, Method::GET, "/v1/notifications")
        .fetch_json()
        .await;
    assert_eq!(list["items"][0]["source"], "event:settings.changed");
    // The category cannot go while a rule sends it.
    put_category(
        &app,
        &t,
        &boss,
        "ops",
        json!({"name": "Ops", "channels": ["in_app"], "variables": {"title": {"type": "string"}}}),
    )
    .await;
    let rule: Value = call(&app, &t, &boss, Method::POST, "/v1/notification-rules")
        .json(&json!({"topic": "team.created", "category": "ops", "audience": {"users": [member]}}))
        .fetch_json()
        .await;
    let res = call(
        &app,
        &t,
        &boss,
        Method::DELETE,
        "/v1/notification-categories/ops",
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 409, "conflict").await;
    let res = call(
        &app,
        &t,
        &boss,
        Method::DELETE,
        &format!("/v1/notification-rules/{}", rule["id"].as_str().unwrap()),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    let res = call(
        &app,
        &t,
        &boss,
        Method::DELETE,
        "/v1/notification-categories/ops",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    app.cleanup().await;
}

#[tokio::test]
async fn a_tenant_over_its_hourly_budget_gets_429() {
    let mut config = test_config();
    config.notifications.per_tenant_recipients_per_hour = 3;
    let app = TestApp::start_with(config).await;
    let (t, member, boss, boss_id) = tenant_with_admin(&app).await;
    let body = json!({"category": "system", "audience": {"users": [member, boss_id]}, "data": {"title": "x"}});
    assert_eq!(send(&app, &t, &boss, body.clone()).await.status(), 202);
    let res = send(&app, &t, &boss, body).await;
    assert!(res.headers().contains_key("retry-after"));
    expect_problem(res, 429, "send-limit").await;
    app.cleanup().await;
}
