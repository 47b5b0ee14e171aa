//! User profiles: custom attributes under the tenant's attribute schema (one 422 listing every
//! problem; users edit only self-editable attributes on themselves), typed preferences, and
//! activity (last seen written in batches, sessions, recent changes).

use neotenant_tests::{
    Fetch, TestApp, encode, expect_problem, lying_png, tenant_with_admin, upload,
};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn attributes_follow_the_schema_and_the_self_edit_rule() {
    let app = TestApp::start().await;
    let (t, member, boss, boss_id) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let as_member = |m: Method, path: &str| app.tenant_req(m, &t.slug, path);

    let res = as_boss(Method::PUT, "/v1/users/attribute-schema")
        .json(&json!({"schema": {"type": "object", "properties": {"age": {"type": "integr"}}}}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 422, "validation").await;
    let schema = json!({
        "type": "object",
        "properties": {
            "nickname": {"type": "string", "maxLength": 20},
            "department": {"type": "string", "enum": ["eng", "sales"]},
            "level": {"type": "integer", "minimum": 1}
        },
        "additionalProperties": false
    });
    let res = as_boss(Method::PUT, "/v1/users/attribute-schema")
        .json(&json!({"schema": schema, "self_editable": ["nickname", "ghost"]}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    assert_eq!(problem["errors"][0]["pointer"], "/self_editable/1");
    let res = as_boss(Method::PUT, "/v1/users/attribute-schema")
        .json(&json!({"schema": schema, "self_editable": ["nickname"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A member reads the schema only with users.read.
    let res = as_member(Method::GET, "/v1/users/attribute-schema")
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;

    let mine = format!("/v1/users/{member}/attributes");
    let res = as_member(Method::PATCH, &mine)
        .json(&json!({"nickname": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = as_member(Method::PATCH, &mine)
        .json(&json!({"department": "eng"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 403, "forbidden").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("department"),
        "{problem}"
    );
    let res = as_member(Method::PATCH, &format!("/v1/users/{boss_id}/attributes"))
        .json(&json!({"nickname": "Boss"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;

    let res = as_boss(Method::PATCH, &mine)
        .json(&json!({"department": "nope", "level": 0, "extra": 1}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    assert_eq!(
        problem["errors"].as_array().unwrap().len(),
        3,
        "every problem at once: {problem}"
    );
    let res = as_boss(Method::PATCH, &mine)
        .json(&json!({"department": "eng", "level": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let got: Value = as_member(Method::GET, &mine).fetch_json().await;
    assert_eq!(
        got["attributes"],
        json!({"nickname": "Ada", "department": "eng", "level": 2})
    );
    let got: Value = as_boss(Method::PATCH, &mine)
        .json(&json!({"nickname": null}))
        .fetch_json()
        .await;
    assert_eq!(got["attributes"], json!({"department": "eng", "level": 2}));
    for bad in [json!([1]), json!("x")] {
        let res = as_boss(Method::PATCH, &mine)
            .json(&bad)
            .send()
            .await
            .unwrap();
        expect_problem(res, 422, "validation").await;
    }
    let res = as_boss(
        Method::GET,
        "/v1/users/usr_0193a8c5e1f27b3c9d4e5f6a7b8c9d0e/attributes",
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 404, "not-found").await;
    // Searching and filtering users.
    let ids = |v: Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_string())
            .collect()
    };
    let found = ids(
        as_boss(Method::GET, "/v1/users?attr.department=eng&attr.level=2")
            .fetch_json()
            .await,
    );
    assert_eq!(found, vec![member.clone()]);
    let found = ids(as_boss(Method::GET, "/v1/users?attr.level=%222%22")
        .fetch_json()
        .await);
    assert!(found.is_empty(), "a JSON string \"2\" is not the number 2");
    let found = ids(as_boss(Method::GET, "/v1/users?role=admin")
        .fetch_json()
        .await);
    assert_eq!(found, vec![boss_id.clone()]);
    let found = ids(as_boss(Method::GET, "/v1/users?q=BOSS-&status=active")
        .fetch_json()
        .await);
    assert_eq!(found, vec![boss_id.clone()]);
    let found = ids(as_boss(Method::GET, "/v1/users?q=%25").fetch_json().await);
    assert!(found.is_empty(), "% is matched literally");
    for bad in [
        "/v1/users?status=zzz",
        "/v1/users?team=nope",
        "/v1/users?attr.=1",
    ] {
        let res = as_boss(Method::GET, bad).send().await.unwrap();
        expect_problem(res, 400, "invalid-parameter").await;
    }
    let actions = neotenant_tests::audit_actions(&app, &t).await;
    assert!(
        actions.iter().any(|a| a == "user.attributes_updated"),
        "{actions:?}"
    );
    assert!(actions.iter().any(|a| a == "user.attribute_schema_updated"));
    app.cleanup().await;
}

#[tokio::test]
async fn preferences_are_typed_and_default() {
    let app = TestApp::start().await;
    let t = app.with_tenant("us", "schema").await;
    let req = |m: Method| app.tenant_req(m, &t.slug, "/v1/me/preferences");
    let got: Value = req(Method::GET).fetch_json().await;
    assert_eq!(
        got,
        json!({"locale": "en", "time_zone": "UTC",
                           "notifications": {"email": true, "in_app": true}})
    );
    let res = req(Method::PATCH)
        .json(&json!({"time_zone": "Mars/Olympus", "locale": "english"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2);
    let res = req(Method::PATCH)
        .json(&json!({"theme": "dark"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 422, "validation").await;
    let got: Value = req(Method::PATCH)
        .json(&json!({"time_zone": "Europe/Berlin", "locale": "de"}))
        .fetch_json()
        .await;
    assert_eq!(got["time_zone"], "Europe/Berlin");
    let got: Value = req(Method::PATCH)
        .json(&json!({"notifications": {"email": false, "in_app": true}}))
        .fetch_json()
        .await;
    assert_eq!(got["locale"], "de", "earlier changes stay");
    assert_eq!(got["notifications"]["email"], false);
    app.cleanup().await;
}

#[tokio::test]
async fn bulk_user_changes_answer_each_user_and_spare_the_caller() {
    let app = TestApp::start().await;
    let (t, member, boss, boss_id) = tenant_with_admin(&app).await;
    let other_token = app
        .member_token(
            &t.realm,
            t.organization.as_deref(),
            &format!("o-{}", t.slug),
        )
        .await;
    let other = neotenant_tests::me(&app, &t.slug, &other_token).await;
    let bulk = |body: Value| {
        app.anonymous(Method::POST, &t.slug, "/v1/users/bulk")
            .bearer_auth(&boss)
            .json(&body)
            .send()
    };
    let res = bulk(json!({"action": "deactivate", "user_ids": [member, other, boss_id]}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let result: Value = res.json().await.unwrap();
    assert_eq!(result["succeeded"], 2, "{result}");
    assert_eq!(result["failed"], 1, "{result}");
    let mine = result["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["user_id"] == boss_id.as_str())
        .unwrap();
    assert_eq!(mine["status"], 409, "the caller is spared: {result}");
    // Deactivated users' sessions end at once.
    let res = app
        .tenant_req(Method::GET, &t.slug, "/v1/me")
        .send()
        .await
        .unwrap();
    expect_problem(res, 401, "session-revoked").await;
    let res = bulk(json!({"action": "reactivate", "user_ids": [member, other]}))
        .await
        .unwrap();
    let result: Value = res.json().await.unwrap();
    assert_eq!(result["succeeded"], 2, "{result}");
    let res = bulk(json!({"action": "assign_role", "user_ids": [member, other], "role": "viewer"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let holders: Value = app
        .anonymous(Method::GET, &t.slug, "/v1/roles/viewer/assignments")
        .bearer_auth(&boss)
        .fetch_json()
        .await;
    for id in [&member, &other] {
        assert!(holders.to_string().contains(id.as_str()), "{holders}");
    }
    let team: Value = app
        .anonymous(Method::POST, &t.slug, "/v1/teams")
        .bearer_auth(&boss)
        .json(&json!({"name": "Bulk"}))
        .fetch_json()
        .await;
    let res =
        bulk(json!({"action": "add_to_team", "user_ids": [member, other], "team": team["id"]}))
            .await
            .unwrap();
    assert_eq!(res.status(), 200);
    let members: Value = app
        .anonymous(
            Method::GET,
            &t.slug,
            &format!("/v1/teams/{}/members", team["id"].as_str().unwrap()),
        )
        .bearer_auth(&boss)
        .fetch_json()
        .await;
    assert_eq!(members.as_array().map(Vec::len), Some(2), "{members}");
    // Bad calls change nothing.
    for (body, status) in [
        (json!({"action": "deactivate", "user_ids": []}), 422),
        (json!({"action": "assign_role", "user_ids": [member]}), 422),
        (json!({"action": "add_to_team", "user_ids": [member]}), 422),
        (json!({"action": "explode", "user_ids": [member]}), 422),
        (
            json!({"action": "deactivate", "user_ids": ["usr_nope"]}),
            422,
        ),
    ] {
        let res = bulk(body.clone()).await.unwrap();
        assert_eq!(res.status(), status, "{body}");
    }
    let many: Vec<String> = (0..1001).map(|_| member.clone()).collect();
    let res = bulk(json!({"action": "deactivate", "user_ids": many}))
        .await
        .unwrap();
    expect_problem(res, 422, "validation").await;
    // A member may not deactivate anyone.
    let plain = app
        .member_token(
            &t.realm,
            t.organization.as_deref(),
            &format!("p-{}", t.slug),
        )
        .await;
    let res = app
        .anonymous(Method::POST, &t.slug, "/v1/users/bulk")
        .bearer_auth(&plain)
        .json(&json!({"action": "deactivate", "user_ids": [other]}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;
    app.cleanup().await;
}

#[tokio::test]
async fn activity_shows_last_seen_sessions_and_recent_changes_to_those_allowed() {
    let app = TestApp::start().await;
    let (t, member, boss, boss_id) = tenant_with_admin(&app).await;
    let as_boss = |m: Method, path: &str| app.anonymous(m, &t.slug, path).bearer_auth(&boss);
    let as_member = |m: Method, path: &str| app.tenant_req(m, &t.slug, path);
    let seen_at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v["last_seen_at"].as_str().unwrap()).unwrap()
    };
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let before = chrono::Utc::now();
    let res = as_member(Method::PATCH, "/v1/me/preferences")
        .json(&json!({"locale": "fr-CA"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The request's time reaches the database with the next batch, not before.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let later = loop {
        let v: Value = as_boss(Method::GET, &format!("/v1/users/{member}/activity"))
            .fetch_json()
            .await;
        if seen_at(&v) >= before {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last seen never moved: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        later["actions_30d"]["user.preferences_updated"], 1,
        "{later}"
    );
    let recent = later["recent"]
        .as_array()
        .expect("admins see recent changes");
    assert_eq!(recent[0]["action"], "user.preferences_updated");
    assert!(later["sessions"].is_array());
    // The member sees their own, not the admin's.
    let own: Value = as_member(Method::GET, &format!("/v1/users/{member}/activity"))
        .fetch_json()
        .await;
    assert_eq!(own["user_id"], member.as_str());
    assert!(own["recent"].is_array());
    expect_problem(
        as_member(Method::GET, &format!("/v1/users/{boss_id}/activity"))
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    expect_problem(
        as_boss(Method::GET, "/v1/users/usr_x/activity")
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
async fn avatars_are_sniffed_bounded_resized_and_served_with_an_etag() {
    let app = TestApp::start().await;
    let (t, member, boss, boss_id) = tenant_with_admin(&app).await;
    let as_member = |m: Method, path: &str| app.tenant_req(m, &t.slug, path);
    let put = |path: String, (ct, body): (String, Vec<u8>)| {
        as_member(Method::PUT, &path)
            .header("content-type", ct)
            .body(body)
    };
    let mine = format!("/v1/users/{member}/avatar");
    let picture = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(400, 300, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 77])
    }));
    // A JPEG sent under a PNG name and type: judged by its bytes, and accepted.
    let jpeg = encode(picture.clone(), image::ImageFormat::Jpeg);
    let res = put(mine.clone(), upload("me.png", "image/png", &jpeg))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let saved: Value = res.json().await.unwrap();
    assert_eq!(saved["sizes"], json!([64, 256]));

    for (query, side) in [("", 256), ("?size=64", 64), ("?size=256", 256)] {
        let res = as_member(Method::GET, &format!("{mine}{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "image/webp");
        assert!(
            res.headers()["cache-control"]
                .to_str()
                .unwrap()
                .starts_with("private")
        );
        let etag = res.headers()["etag"].to_str().unwrap().to_string();
        let bytes = res.bytes().await.unwrap();
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::WebP).unwrap();
        assert_eq!((img.width(), img.height()), (side, side));
        // Revalidation: 304 without a body.
        let res = as_member(Method::GET, &format!("{mine}{query}"))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 304);
        assert!(res.bytes().await.unwrap().is_empty());
    }
    // Another user sees it; a new picture changes the ETag.
    let res = app
        .anonymous(Method::GET, &t.slug, &mine)
        .bearer_auth(&boss)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let old = res.headers()["etag"].to_str().unwrap().to_string();
    let png = encode(picture.grayscale(), image::ImageFormat::Png);
    let res = put(mine.clone(), upload("me.png", "image/png", &png))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = as_member(Method::GET, &mine)
        .header("if-none-match", &old)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "a changed avatar is not 304");

    // Lies, floods, damage and wrong shapes: each its problem, nothing changes.
    let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
    let flood = lying_png();
    let mut broken = png.clone();
    broken.truncate(broken.len() / 2);
    for ((name, ct, data), status, slug) in [
        (
            ("a.png", "image/png", &gif[..]),
            415,
            "unsupported-media-type",
        ),
        (
            (
                "a.png",
                "image/png",
                &b"<svg xmlns='http://www.w3.org/2000/svg'/>"[..],
            ),
            415,
            "unsupported-media-type",
        ),
        (("a.png", "image/png", &flood[..]), 422, "image-too-large"),
        (("a.png", "image/png", &broken[..]), 422, "invalid-image"),
    ] {
        let res = put(mine.clone(), upload(name, ct, data))
            .send()
            .await
            .unwrap();
        expect_problem(res, status, slug).await;
    }
    let huge = vec![0u8; 6 * 1024 * 1024];
    let res = put(mine.clone(), upload("big.png", "image/png", &huge))
        .send()
        .await
        .unwrap();
    expect_problem(res, 413, "payload-too-large").await;
    let res = as_member(Method::PUT, &mine)
        .header("content-type", "image/png")
        .body(png.clone())
        .send()
        .await
        .unwrap();
    expect_problem(res, 415, "unsupported-media-type").await;
    let res = as_member(Method::GET, &mine)
        .header("if-none-match", &old)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the refused uploads changed nothing");

    // Not someone else's; bad sizes; delete; gone.
    let res = put(
        format!("/v1/users/{boss_id}/avatar"),
        upload("x.png", "image/png", &png),
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 403, "forbidden").await;
    let res = as_member(Method::GET, &format!("{mine}?size=1000"))
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "invalid-parameter").await;
    let res = as_member(Method::DELETE, &mine).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let res = as_member(Method::GET, &mine).send().await.unwrap();
    expect_problem(res, 404, "not-found").await;
    let actions = neotenant_tests::audit_actions(&app, &t).await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "user.avatar_updated")
            .count(),
        2
    );
    assert!(actions.contains(&"user.avatar_removed".to_string()));
    app.cleanup().await;
}
