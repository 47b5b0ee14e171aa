//! Tenant settings: the catalogue with defaults, merge-patch writes validated all at once,
//! ETag/If-Match, versions with diffs and rollback, the custom schema, the logo, the cache
//! that another instance drops on a change, and the settings the system obeys (invitation
//! lifetime and domains, per-tenant rate and quota, audit retention).

use neotenant_tests::{
    Fetch, TestApp, audit_actions, direct, encode, expect_problem, lying_png, problem_pointers,
    tenant_with_admin, test_config, upload,
};
use reqwest::Method;
use serde_json::{Value, json};

fn patch(app: &TestApp, slug: &str, token: &str, body: Value) -> reqwest::RequestBuilder {
    app.anonymous(Method::PATCH, slug, "/v1/settings")
        .bearer_auth(token)
        .header("content-type", "application/merge-patch+json")
        .body(body.to_string())
}

async fn get(app: &TestApp, slug: &str, token: &str, path: &str) -> Value {
    app.anonymous(Method::GET, slug, path)
        .bearer_auth(token)
        .fetch_json()
        .await
}

#[tokio::test]
async fn settings_merge_validate_version_diff_and_roll_back() {
    let app = TestApp::start().await;
    let (t, _member, boss, boss_id) = tenant_with_admin(&app).await;

    let res = app
        .anonymous(Method::GET, &t.slug, "/v1/settings")
        .bearer_auth(&boss)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    let first: Value = res.json().await.unwrap();
    let v1 = first["version"].as_i64().unwrap();
    assert_eq!(etag, format!("\"s{v1}\""));
    assert_eq!(first["settings"]["branding"]["primary_color"], "#1f6feb");
    assert_eq!(first["settings"]["compliance"]["data_residency"], "eu");
    assert_eq!(first["settings"]["invitations"]["expiry_hours"], 168);

    // Every problem in one 422, nothing changed.
    let res = patch(
        &app,
        &t.slug,
        &boss,
        json!({
            "branding": {"primary_color": "blurple", "accent_color": 7},
            "general": {"timezone": "Mars/Olympus", "colour": "red"},
            "nope": true,
        }),
    )
    .send()
    .await
    .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    let pointers = problem_pointers(&problem);
    assert!(pointers.iter().any(|p| p == "/general/colour"), "{problem}");
    assert!(pointers.iter().any(|p| p == "/nope"), "{problem}");
    let res = patch(
        &app,
        &t.slug,
        &boss,
        json!({"branding": {"primary_color": "blurple", "accent_color": 7},
               "general": {"timezone": "Mars/Olympus"},
               "api": {"rate_limit": {"per_user_per_sec": -1}}}),
    )
    .send()
    .await
    .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    let pointers = problem_pointers(&problem);
    for p in [
        "/branding/primary_color",
        "/branding/accent_color",
        "/general/timezone",
        "/api/rate_limit/per_user_per_sec",
    ] {
        assert!(pointers.iter().any(|x| x == p), "{p} missing: {problem}");
    }
    let res = patch(
        &app,
        &t.slug,
        &boss,
        json!({"compliance": {"data_residency": "us"}}),
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 422, "validation").await;
    let res = patch(&app, &t.slug, &boss, json!([1, 2]))
        .send()
        .await
        .unwrap();
    expect_problem(res, 422, "validation").await;
    let res = app
        .anonymous(Method::PATCH, &t.slug, "/v1/settings")
        .bearer_auth(&boss)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "malformed-json").await;
    assert_eq!(
        get(&app, &t.slug, &boss, "/v1/settings").await["version"],
        v1
    );

    // If-Match: a stale version is 412.
    let res = patch(&app, &t.slug, &boss, json!({"branding": {"name": "Acme"}}))
        .header("if-match", "\"s999\"")
        .send()
        .await
        .unwrap();
    expect_problem(res, 412, "precondition-failed").await;
    let res = patch(
        &app,
        &t.slug,
        &boss,
        json!({"branding": {"name": "Acme", "primary_color": "rebeccapurple"},
               "general": {"timezone": "Europe/Berlin"}}),
    )
    .header("if-match", &etag)
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], format!("\"s{}\"", v1 + 1).as_str());
    let second: Value = res.json().await.unwrap();
    assert_eq!(second["settings"]["branding"]["name"], "Acme");
    assert_eq!(second["settings"]["branding"]["secondary_color"], "#6e7781");
    // The same patch again changes nothing: no new version.
    let same: Value = patch(&app, &t.slug, &boss, json!({"branding": {"name": "Acme"}}))
        .fetch_json()
        .await;
    assert_eq!(same["version"], v1 + 1);
    // null restores the default.
    let third: Value = patch(&app, &t.slug, &boss, json!({"branding": {"name": null}}))
        .fetch_json()
        .await;
    assert_eq!(third["version"], v1 + 2);
    assert_eq!(third["settings"]["branding"]["name"], "");
    assert_eq!(
        third["settings"]["branding"]["primary_color"],
        "rebeccapurple"
    );

    // History: newest first, with author and diff.
    let versions = get(&app, &t.slug, &boss, "/v1/settings/versions").await;
    let items = versions["items"].as_array().unwrap();
    assert_eq!(items[0]["version"], v1 + 2);
    assert_eq!(items[1]["version"], v1 + 1);
    assert_eq!(items[1]["author"]["id"], boss_id.as_str());
    let paths: Vec<&str> = items[1]["diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["/values/branding", "/values/general",],
        "{}",
        items[1]
    );
    let one = get(
        &app,
        &t.slug,
        &boss,
        &format!("/v1/settings/versions/{}", v1 + 1),
    )
    .await;
    assert_eq!(one["state"]["values"]["branding"]["name"], "Acme");
    let diff = get(
        &app,
        &t.slug,
        &boss,
        &format!("/v1/settings/diff?from={}&to={}", v1 + 1, v1 + 2),
    )
    .await;
    assert_eq!(
        diff["changes"],
        json!([{"path": "/values/branding/name", "from": "Acme"}])
    );
    let res = app
        .anonymous(Method::GET, &t.slug, "/v1/settings/diff?from=x&to=1")
        .bearer_auth(&boss)
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-parameter").await;
    let res = app
        .anonymous(Method::GET, &t.slug, "/v1/settings/versions/9999")
        .bearer_auth(&boss)
        .send()
        .await
        .unwrap();
    expect_problem(res, 404, "not-found").await;

    // Roll back to the named version: a new version with its values.
    let back: Value = app
        .anonymous(
            Method::POST,
            &t.slug,
            &format!("/v1/settings/versions/{}/rollback", v1 + 1),
        )
        .bearer_auth(&boss)
        .fetch_json()
        .await;
    assert_eq!(back["version"], v1 + 3);
    assert_eq!(back["settings"]["branding"]["name"], "Acme");
    let newest = get(&app, &t.slug, &boss, "/v1/settings/versions?limit=1").await;
    assert_eq!(
        newest["items"][0]["reason"],
        format!("rollback to {}", v1 + 1)
    );
    assert!(newest["next_cursor"].is_string());

    // Audited, and an event per change.
    let actions = audit_actions(&app, &t).await;
    assert_eq!(
        actions.iter().filter(|a| *a == "settings.changed").count(),
        3,
        "{actions:?}"
    );
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = direct(&test_config(), &t.database).await;
    let events: Count = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(format!(
            "SELECT count(*) AS n FROM {}.outbox WHERE topic = 'settings.changed'",
            t.schema
        )),
        &mut conn,
    )
    .await
    .unwrap();
    assert_eq!(events.n, 3);
    app.cleanup().await;
}

#[tokio::test]
async fn custom_settings_follow_the_tenants_schema_and_members_only_read() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let res = patch(&app, &t.slug, &boss, json!({"custom": {"seats": 5}}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    assert_eq!(problem["errors"][0]["pointer"], "/custom/seats");
    let put_schema = |schema: Value| {
        app.anonymous(Method::PUT, &t.slug, "/v1/settings/custom-schema")
            .bearer_auth(&boss)
            .json(&json!({"schema": schema}))
    };
    let res = put_schema(json!({"type": "object", "properties": {"seats": {"type": "integr"}}}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 422, "validation").await;
    let res = put_schema(json!({
        "type": "object",
        "properties": {"seats": {"type": "integer", "minimum": 1}, "plan": {"enum": ["free", "pro"]}},
        "additionalProperties": false
    }))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let res = patch(
        &app,
        &t.slug,
        &boss,
        json!({"custom": {"seats": 0, "plan": "gold", "x": 1}}),
    )
    .send()
    .await
    .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    assert!(
        problem["errors"].as_array().unwrap().len() >= 3,
        "{problem}"
    );
    let ok: Value = patch(
        &app,
        &t.slug,
        &boss,
        json!({"custom": {"seats": 10, "plan": "pro"}}),
    )
    .fetch_json()
    .await;
    assert_eq!(ok["settings"]["custom"]["seats"], 10);
    // A schema the stored values break is refused.
    let res = put_schema(json!({"type": "object", "properties": {"seats": {"type": "string"}}}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 422, "validation").await;

    // Members read settings but change nothing.
    let catalogue: Value = app
        .tenant_req(Method::GET, &t.slug, "/v1/settings/catalogue")
        .fetch_json()
        .await;
    assert!(catalogue["schema"]["properties"]["branding"].is_object());
    assert_eq!(
        catalogue["custom_schema"]["properties"]["plan"]["enum"][1],
        "pro"
    );
    let res = app
        .tenant_req(Method::PATCH, &t.slug, "/v1/settings")
        .json(&json!({"branding": {"name": "Mine"}}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_change_reaches_another_instance_within_a_second() {
    let a = TestApp::start().await;
    let b = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&a).await;
    // B reads (and caches) the settings.
    let before = get(&b, &t.slug, &boss, "/v1/settings").await;
    assert_eq!(before["settings"]["branding"]["name"], "");
    // A write behind the service's back is not seen: B answers from its cache.
    let mut conn = direct(&test_config(), &t.database).await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "UPDATE {}.settings SET state = jsonb_set(state, '{{values}}', '{{\"branding\": {{\"name\": \"sneaky\"}}}}')",
            t.schema
        )),
        &mut conn,
    )
    .await
    .unwrap();
    assert_eq!(
        get(&b, &t.slug, &boss, "/v1/settings").await["settings"]["branding"]["name"],
        ""
    );
    // A change through A is announced; B answers it within a second.
    let res = patch(
        &a,
        &t.slug,
        &boss,
        json!({"branding": {"name": "Announced"}}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let changed = std::time::Instant::now();
    let seen = loop {
        let now = get(&b, &t.slug, &boss, "/v1/settings").await;
        if now["settings"]["branding"]["name"] == "Announced"
            || changed.elapsed() > std::time::Duration::from_secs(1)
        {
            break now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(seen["settings"]["branding"]["name"], "Announced", "{seen}");
    b.cleanup().await;
    a.cleanup().await;
}

#[tokio::test]
async fn the_system_obeys_invitation_audit_and_api_settings() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);

    // Invitations: allowed domains and lifetime come from the settings.
    let res = patch(
        &app,
        &t.slug,
        &boss,
        json!({"invitations": {"allowed_domains": ["allowed.example"], "expiry_hours": 5}}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let res = as_boss(Method::POST, "/v1/invitations")
        .json(&json!({"email": format!("x-{}@example.test", t.slug)}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 422, "validation").await;
    let created: Value = as_boss(Method::POST, "/v1/invitations")
        .json(&json!({"email": format!("x-{}@allowed.example", t.slug)}))
        .fetch_json()
        .await;
    let expires = chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let hours = (expires - chrono::Utc::now()).num_minutes() as f64 / 60.0;
    assert!((4.9..=5.0).contains(&hours), "{hours}");
    // The invitation policy route writes the same settings, with history.
    let res = as_boss(Method::PUT, "/v1/invitations/policy")
        .json(&json!({"expiry_hours": 48, "allowed_domains": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let now = get(&app, &t.slug, &boss, "/v1/settings").await;
    assert_eq!(now["settings"]["invitations"]["expiry_hours"], 48);
    let versions = get(&app, &t.slug, &boss, "/v1/settings/versions?limit=1").await;
    assert_eq!(versions["items"][0]["reason"], "invitation policy");
    // The tenant lowers its hourly invitation limit: one was sent, so the next is refused.
    let res = patch(
        &app,
        &t.slug,
        &boss,
        json!({"invitations": {"per_tenant_per_hour": 1}}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let res = as_boss(Method::POST, "/v1/invitations")
        .json(&json!({"email": format!("y-{}@example.test", t.slug)}))
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("retry-after"));
    let problem = expect_problem(res, 429, "rate-limited").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("1 invitations per hour"),
        "{problem}"
    );

    // Audit retention: one value, whichever route sets it.
    let res = patch(
        &app,
        &t.slug,
        &boss,
        json!({"compliance": {"audit_retention_days": 30}}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let audit = get(&app, &t.slug, &boss, "/v1/audit/settings").await;
    assert_eq!(audit["retention_days"], 30, "{audit}");

    // The tenant's own per-user rate: a burst of 2 at one request every 10 s.
    let res = patch(
        &app,
        &t.slug,
        &boss,
        json!({"api": {"rate_limit": {"per_user_per_sec": 0.1, "per_user_burst": 2}}}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let res = as_boss(Method::GET, "/v1/settings").send().await.unwrap();
        statuses.push(res.status().as_u16());
        if res.status() == 429 {
            assert!(res.headers().contains_key("retry-after"));
            expect_problem(res, 429, "rate-limited").await;
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    app.cleanup().await;
}

#[tokio::test]
async fn a_daily_quota_refuses_requests_beyond_it() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let res = patch(
        &app,
        &t.slug,
        &boss,
        json!({"api": {"quota": {"requests_per_day": 3}}}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let mut refused = None;
    for i in 0..5 {
        let res = app
            .anonymous(Method::GET, &t.slug, "/v1/settings")
            .bearer_auth(&boss)
            .send()
            .await
            .unwrap();
        if res.status() == 429 {
            refused = Some(i);
            let retry: u64 = res.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=86_400).contains(&retry), "{retry}");
            expect_problem(res, 429, "quota-exceeded").await;
            break;
        }
    }
    assert_eq!(refused, Some(3), "the fourth request of the day is refused");
    app.cleanup().await;
}

#[tokio::test]
async fn the_logo_is_checked_like_an_avatar_and_versioned() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let put = |(ct, body): (String, Vec<u8>)| {
        app.anonymous(Method::PUT, &t.slug, "/v1/settings/branding/logo")
            .bearer_auth(&boss)
            .header("content-type", ct)
            .body(body)
    };
    let before = get(&app, &t.slug, &boss, "/v1/settings").await;
    assert!(before["settings"]["branding"]["logo"].is_null());
    for ((name, ct, data), status, slug) in [
        (
            (
                "logo.png",
                "image/png",
                b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec(),
            ),
            415,
            "unsupported-media-type",
        ),
        (
            ("logo.png", "image/png", lying_png()),
            422,
            "image-too-large",
        ),
    ] {
        let res = put(upload(name, ct, &data)).send().await.unwrap();
        expect_problem(res, status, slug).await;
    }
    let res = put(upload("big.png", "image/png", &vec![0u8; 6 * 1024 * 1024]))
        .send()
        .await
        .unwrap();
    expect_problem(res, 413, "payload-too-large").await;
    assert_eq!(
        get(&app, &t.slug, &boss, "/v1/settings").await["version"],
        before["version"]
    );

    let wide = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(1200, 300, |x, _| {
        image::Rgb([(x % 256) as u8, 40, 90])
    }));
    let saved: Value = put(upload(
        "logo.png",
        "image/png",
        &encode(wide, image::ImageFormat::Png),
    ))
    .fetch_json()
    .await;
    assert_eq!(saved["version"], before["version"].as_i64().unwrap() + 1);
    let res = app
        .tenant_req(Method::GET, &t.slug, "/v1/settings/branding/logo")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/webp");
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, saved["etag"].as_str().unwrap());
    let bytes = res.bytes().await.unwrap();
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::WebP).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (512, 128),
        "kept within 512 px, aspect kept"
    );
    let res = app
        .tenant_req(Method::GET, &t.slug, "/v1/settings/branding/logo")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    let now = get(&app, &t.slug, &boss, "/v1/settings").await;
    assert_eq!(now["settings"]["branding"]["logo"]["etag"], etag.as_str());
    let versions = get(&app, &t.slug, &boss, "/v1/settings/versions?limit=1").await;
    assert_eq!(versions["items"][0]["reason"], "logo uploaded");
    let res = app
        .anonymous(Method::DELETE, &t.slug, "/v1/settings/branding/logo")
        .bearer_auth(&boss)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .tenant_req(Method::GET, &t.slug, "/v1/settings/branding/logo")
        .send()
        .await
        .unwrap();
    expect_problem(res, 404, "not-found").await;
    app.cleanup().await;
}
