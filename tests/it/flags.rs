//! Feature flags: validation of every problem at once, versions with diffs and rollback, the
//! kill switch, segments, prerequisites, sticky rollouts (the same buckets as flagd),
//! environments with their own values and SDK keys, scheduled changes, the cache another
//! instance drops on a change, and OFREP — driven by the OpenFeature Python SDK's OFREP
//! provider and compared with the REST API.

use neotenant_tests::{
    Fetch, TestApp, audit_actions, expect_problem, problem_pointers, tenant_with_admin, test_config,
};
use reqwest::Method;
use serde_json::{Value, json};

/// A boolean flag with a 30/70 rollout by default in production and `off` in staging.
fn checkout(key: &str) -> Value {
    json!({
        "key": key,
        "kind": "boolean",
        "description": "The new checkout",
        "variants": {"on": true, "off": false},
        "environments": {
            "production": {
                "enabled": true,
                "off_variant": "off",
                "rules": [{"conditions": [{"attribute": "email", "op": "ends_with", "values": ["@staff.example"]}],
                           "serve": {"variant": "on"}}],
                "default": {"rollout": [{"variant": "on", "weight": 30}, {"variant": "off", "weight": 70}]}
            },
            "staging": {"enabled": true, "off_variant": "off", "default": {"variant": "on"}}
        }
    })
}

fn req(app: &TestApp, slug: &str, token: &str, m: Method, path: &str) -> reqwest::RequestBuilder {
    app.anonymous(m, slug, path).bearer_auth(token)
}

async fn evaluate(app: &TestApp, slug: &str, token: &str, env: &str, ctx: Value) -> Value {
    let all: Value = req(app, slug, token, Method::POST, "/v1/flags/evaluate")
        .json(&json!({"environment": env, "context": ctx}))
        .fetch_json()
        .await;
    all
}

fn one<'a>(all: &'a Value, key: &str) -> &'a Value {
    all["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == key)
        .unwrap_or_else(|| panic!("{key} not in {all}"))
}

#[tokio::test]
async fn flags_are_checked_versioned_switched_and_rolled_back() {
    let app = TestApp::start().await;
    let (t, _member, boss, boss_id) = tenant_with_admin(&app).await;
    let post = |body: Value| req(&app, &t.slug, &boss, Method::POST, "/v1/flags").json(&body);

    // Every problem of a bad flag in one 422; nothing is created.
    let mut bad = checkout("checkout");
    bad["variants"]["maybe"] = json!("yes");
    bad["environments"]["production"]["default"] =
        json!({"rollout": [{"variant": "on", "weight": 70}, {"variant": "off", "weight": 50}]});
    bad["environments"]["production"]["rules"][0]["conditions"][0]["attribute"] =
        json!("shoe_size");
    bad["environments"]["production"]["rules"][0]["conditions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"attribute": "segment", "op": "in_segment", "values": ["ghosts"]}));
    bad["environments"]
        .as_object_mut()
        .unwrap()
        .remove("staging");
    let problem = expect_problem(post(bad).send().await.unwrap(), 422, "validation").await;
    let found = problem_pointers(&problem);
    let text = problem.to_string();
    assert!(
        found.iter().any(|p| p.starts_with("/variants/maybe")),
        "{problem}"
    );
    assert!(
        found.iter().any(|p| p.contains("/default/rollout")),
        "{problem}"
    );
    assert!(text.contains("above 100%"), "{problem}");
    assert!(text.contains("unknown attribute `shoe_size`"), "{problem}");
    assert!(text.contains("ghosts"), "{problem}");
    assert!(text.contains("missing environment `staging`"), "{problem}");
    let problem = expect_problem(
        post(json!({"key": "x", "kind": "boolean"}))
            .send()
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("variants"),
        "{problem}"
    );
    let mut upper = checkout("Bad Key");
    upper["key"] = json!("Bad Key");
    expect_problem(post(upper).send().await.unwrap(), 422, "validation").await;
    let res = req(&app, &t.slug, &boss, Method::POST, "/v1/flags")
        .header("content-type", "application/json")
        .body("{\"key\":")
        .send()
        .await
        .unwrap();
    expect_problem(res, 400, "malformed-json").await;
    let list: Value = req(&app, &t.slug, &boss, Method::GET, "/v1/flags")
        .fetch_json()
        .await;
    assert_eq!(list["items"], json!([]));

    // Created, then changed under If-Match.
    let res = post(checkout("checkout")).send().await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["etag"], "\"f1\"");
    let res = post(checkout("checkout")).send().await.unwrap();
    expect_problem(res, 409, "conflict").await;
    let patch = json!({"environments": {"staging": {"default": {"variant": "off"}}}});
    let res = req(&app, &t.slug, &boss, Method::PATCH, "/v1/flags/checkout")
        .header("if-match", "\"f9\"")
        .json(&patch)
        .send()
        .await
        .unwrap();
    expect_problem(res, 412, "precondition-failed").await;
    let changed: Value = req(&app, &t.slug, &boss, Method::PATCH, "/v1/flags/checkout")
        .header("if-match", "\"f1\"")
        .json(&patch)
        .fetch_json()
        .await;
    assert_eq!(changed["version"], 2);
    assert_eq!(
        one(
            &evaluate(
                &app,
                &t.slug,
                &boss,
                "staging",
                json!({"targetingKey": "u1"})
            )
            .await,
            "checkout"
        )["value"],
        false
    );

    // The kill switch: everyone gets the off variant in that environment only.
    let staff = json!({"targetingKey": "u1", "email": "a@staff.example"});
    assert_eq!(
        one(
            &evaluate(&app, &t.slug, &boss, "production", staff.clone()).await,
            "checkout"
        )["reason"],
        "TARGETING_MATCH"
    );
    let res = req(
        &app,
        &t.slug,
        &boss,
        Method::PUT,
        "/v1/flags/checkout/environments/production",
    )
    .json(&json!({"enabled": false}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let killed = evaluate(&app, &t.slug, &boss, "production", staff.clone()).await;
    assert_eq!(one(&killed, "checkout")["reason"], "DISABLED");
    assert_eq!(one(&killed, "checkout")["value"], false);
    let res = req(
        &app,
        &t.slug,
        &boss,
        Method::PUT,
        "/v1/flags/checkout/environments/qa",
    )
    .json(&json!({"enabled": false}))
    .send()
    .await
    .unwrap();
    expect_problem(res, 404, "not-found").await;

    // History: author, reason, diff; any two versions compared; a rollback is a version.
    let versions: Value = req(
        &app,
        &t.slug,
        &boss,
        Method::GET,
        "/v1/flags/checkout/versions",
    )
    .fetch_json()
    .await;
    let items = versions["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["reason"], "kill switch");
    assert_eq!(items[0]["author"]["id"], boss_id.as_str());
    assert_eq!(
        items[0]["diff"],
        json!([{"path": "/environments/production/enabled", "from": true, "to": false}])
    );
    let diff: Value = req(
        &app,
        &t.slug,
        &boss,
        Method::GET,
        "/v1/flags/checkout/diff?from=1&to=3",
    )
    .fetch_json()
    .await;
    assert_eq!(diff["changes"].as_array().unwrap().len(), 2, "{diff}");
    let back: Value = req(
        &app,
        &t.slug,
        &boss,
        Method::POST,
        "/v1/flags/checkout/versions/1/rollback",
    )
    .fetch_json()
    .await;
    assert_eq!(back["version"], 4);
    assert_eq!(
        back["definition"]["environments"]["production"]["enabled"],
        true
    );
    let v4: Value = req(
        &app,
        &t.slug,
        &boss,
        Method::GET,
        "/v1/flags/checkout/versions/4",
    )
    .fetch_json()
    .await;
    assert_eq!(v4["reason"], "rollback to 1");
    assert_eq!(
        v4["definition"],
        checkout_normalised(&app, &t.slug, &boss, 1).await
    );

    // A member evaluates over OFREP but reads no definitions and changes nothing.
    let res = app
        .tenant_req(Method::GET, &t.slug, "/v1/flags")
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;
    let res = app
        .tenant_req(Method::POST, &t.slug, "/v1/flags")
        .json(&checkout("mine"))
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;

    // Delete keeps the history.
    let res = req(&app, &t.slug, &boss, Method::DELETE, "/v1/flags/checkout")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = req(&app, &t.slug, &boss, Method::GET, "/v1/flags/checkout")
        .send()
        .await
        .unwrap();
    expect_problem(res, 404, "not-found").await;
    let versions: Value = req(
        &app,
        &t.slug,
        &boss,
        Method::GET,
        "/v1/flags/checkout/versions",
    )
    .fetch_json()
    .await;
    assert_eq!(versions["items"][0]["reason"], "deleted");
    assert!(versions["items"][0]["definition"].is_null());

    let actions = audit_actions(&app, &t).await;
    for a in ["flag.created", "flag.changed", "flag.deleted"] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
    app.cleanup().await;
}

async fn checkout_normalised(app: &TestApp, slug: &str, token: &str, v: i32) -> Value {
    let one: Value = req(
        app,
        slug,
        token,
        Method::GET,
        &format!("/v1/flags/checkout/versions/{v}"),
    )
    .fetch_json()
    .await;
    one["definition"].clone()
}

#[tokio::test]
async fn segments_prerequisites_and_rollouts_decide_like_flagd() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    // The tenant declares the context attribute its rules use.
    let res = app
        .anonymous(Method::PATCH, &t.slug, "/v1/settings")
        .bearer_auth(&boss)
        .json(&json!({"flags": {"context_attributes": {"plan": "string", "version": "string"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let segment = json!({"key": "beta", "conditions": [{"attribute": "plan", "op": "in", "values": ["beta", "pro"]}]});
    // If-Match names a version of a segment that does not exist yet: nothing is created.
    let res = req(&app, &t.slug, &boss, Method::PUT, "/v1/flag-segments/beta")
        .header("if-match", "\"s1\"")
        .json(&segment)
        .send()
        .await
        .unwrap();
    expect_problem(res, 412, "precondition-failed").await;
    let res = req(&app, &t.slug, &boss, Method::PUT, "/v1/flag-segments/beta")
        .json(&segment)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let banner = json!({
        "key": "banner",
        "kind": "string",
        "variants": {"blue": "#00f", "green": "#0f0", "red": "#f00"},
        "environments": {
            "production": {
                "enabled": true,
                "off_variant": "red",
                "rules": [
                    {"conditions": [{"attribute": "segment", "op": "in_segment", "values": ["beta"]},
                                    {"attribute": "version", "op": "semver_gt", "values": ["2.0.0"]}],
                     "serve": {"variant": "green"}}
                ],
                "default": {"rollout": [{"variant": "blue", "weight": 25}, {"variant": "green", "weight": 25}, {"variant": "red", "weight": 50}]}
            },
            "staging": {"enabled": true, "off_variant": "red", "default": {"variant": "green"}}
        }
    });
    assert_eq!(
        req(&app, &t.slug, &boss, Method::POST, "/v1/flags")
            .json(&banner)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let limits = json!({
        "key": "limits",
        "kind": "object",
        "variants": {"small": {"max": 10}, "large": {"max": 1000}},
        "prerequisites": [{"flag": "banner", "variants": ["green"]}],
        "environments": {
            "production": {"enabled": true, "off_variant": "small", "default": {"variant": "large"}},
            "staging": {"enabled": true, "off_variant": "small", "default": {"variant": "large"}}
        }
    });
    assert_eq!(
        req(&app, &t.slug, &boss, Method::POST, "/v1/flags")
            .json(&limits)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    // Lists page by key.
    let first: Value = req(&app, &t.slug, &boss, Method::GET, "/v1/flags?limit=1")
        .fetch_json()
        .await;
    assert_eq!(first["items"][0]["key"], "banner");
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let second: Value = req(
        &app,
        &t.slug,
        &boss,
        Method::GET,
        &format!("/v1/flags?limit=1&cursor={cursor}"),
    )
    .fetch_json()
    .await;
    assert_eq!(second["items"][0]["key"], "limits");
    assert!(second["next_cursor"].is_null(), "{second}");
    let segments: Value = req(&app, &t.slug, &boss, Method::GET, "/v1/flag-segments")
        .fetch_json()
        .await;
    assert_eq!(segments["items"][0]["key"], "beta");
    // A prerequisite cycle and a segment in use are refused.
    let mut cyclic = banner.clone();
    cyclic["prerequisites"] = json!([{"flag": "limits", "variants": ["large"]}]);
    let res = req(&app, &t.slug, &boss, Method::PUT, "/v1/flags/banner")
        .json(&cyclic)
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    assert!(problem.to_string().contains("cycle"), "{problem}");
    let res = req(
        &app,
        &t.slug,
        &boss,
        Method::DELETE,
        "/v1/flag-segments/beta",
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 409, "conflict").await;
    let res = req(&app, &t.slug, &boss, Method::DELETE, "/v1/flags/banner")
        .send()
        .await
        .unwrap();
    expect_problem(res, 409, "conflict").await;

    // Targeting: segment and semantic version; the prerequisite follows.
    let all = evaluate(
        &app,
        &t.slug,
        &boss,
        "production",
        json!({"targetingKey": "u-9", "plan": "pro", "version": "2.1.0"}),
    )
    .await;
    assert_eq!(one(&all, "banner")["variant"], "green");
    assert_eq!(one(&all, "banner")["reason"], "TARGETING_MATCH");
    assert_eq!(one(&all, "limits")["value"], json!({"max": 1000}));
    // Environments hold their own values.
    let staging = evaluate(
        &app,
        &t.slug,
        &boss,
        "staging",
        json!({"targetingKey": "u-9"}),
    )
    .await;
    assert_eq!(one(&staging, "banner")["reason"], "STATIC");
    assert_eq!(one(&staging, "banner")["value"], "#0f0");
    // A rollout without a targeting key says so.
    let anonymous = evaluate(&app, &t.slug, &boss, "production", json!({"plan": "free"})).await;
    assert_eq!(
        one(&anonymous, "banner")["errorCode"],
        "TARGETING_KEY_MISSING"
    );
    assert_eq!(one(&anonymous, "limits")["reason"], "PREREQUISITE_FAILED");

    // Sticky, and bucketed exactly as flagd buckets: MurmurHash3 of flag key + targeting key.
    let variants = ["blue", "green", "red"];
    for user in [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ] {
        let ctx = json!({"targetingKey": user, "plan": "free"});
        let first = evaluate(&app, &t.slug, &boss, "production", ctx.clone()).await;
        let again = evaluate(&app, &t.slug, &boss, "production", ctx).await;
        assert_eq!(one(&first, "banner"), one(&again, "banner"));
        assert_eq!(one(&first, "banner")["reason"], "SPLIT");
        let expected = neotenant_flags::bucket::fractional("banner", user, &[25, 25, 50]).unwrap();
        assert_eq!(
            one(&first, "banner")["variant"],
            variants[expected],
            "{user}"
        );
    }
    app.cleanup().await;
}

/// Runs the OpenFeature Python SDK with its OFREP provider against `base_url` (a child
/// process, awaited: the server runs on this test's runtime).
async fn sdk_evaluate(base_url: &str, tenant: &str, api_key: &str, evaluations: Value) -> Value {
    use tokio::io::AsyncWriteExt;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let lib = root.join("../.devstack/openfeature/lib");
    let mut child = tokio::process::Command::new("python3")
        .arg(root.join("ofrep_client.py"))
        .env("PYTHONPATH", &lib)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let input = json!({"base_url": base_url, "tenant": tenant, "api_key": api_key, "evaluations": evaluations});
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "the SDK failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn ofrep_answers_an_openfeature_sdk_as_the_rest_api_does() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    for flag in [
        checkout("checkout"),
        json!({
            "key": "greeting", "kind": "string", "variants": {"hi": "hello", "yo": "hey"},
            "environments": {
                "production": {"enabled": true, "off_variant": "hi", "default": {"variant": "yo"}},
                "staging": {"enabled": true, "off_variant": "hi", "default": {"variant": "hi"}}
            }
        }),
        json!({
            "key": "ratio", "kind": "number", "variants": {"low": 0.25, "high": 0.75},
            "environments": {
                "production": {"enabled": false, "off_variant": "low", "default": {"variant": "high"}},
                "staging": {"enabled": true, "off_variant": "low", "default": {"variant": "high"}}
            }
        }),
    ] {
        assert_eq!(
            req(&app, &t.slug, &boss, Method::POST, "/v1/flags")
                .json(&flag)
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
    }
    let key: Value = req(
        &app,
        &t.slug,
        &boss,
        Method::POST,
        "/v1/flag-environments/production/sdk-keys",
    )
    .json(&json!({"name": "web"}))
    .fetch_json()
    .await;
    let sdk_key = key["key"].as_str().unwrap().to_string();
    assert!(sdk_key.starts_with("ntf_"));
    let res = req(
        &app,
        &t.slug,
        &boss,
        Method::POST,
        "/v1/flag-environments/qa/sdk-keys",
    )
    .json(&json!({"name": "web"}))
    .send()
    .await
    .unwrap();
    expect_problem(res, 404, "not-found").await;

    let contexts = [
        json!({"targetingKey": "user-1"}),
        json!({"targetingKey": "user-2", "email": "x@staff.example"}),
        json!({"targetingKey": "user-3", "email": "y@example.com"}),
    ];
    let mut evaluations = Vec::new();
    for ctx in &contexts {
        evaluations
            .push(json!({"flag": "checkout", "type": "boolean", "default": true, "context": ctx}));
        evaluations
            .push(json!({"flag": "greeting", "type": "string", "default": "none", "context": ctx}));
        evaluations.push(json!({"flag": "ratio", "type": "float", "default": 9.0, "context": ctx}));
    }
    evaluations
        .push(json!({"flag": "ghost", "type": "boolean", "default": true, "context": contexts[0]}));
    evaluations.push(json!({"flag": "checkout", "type": "boolean", "default": true, "context": {"email": "z@example.com"}}));
    let got = sdk_evaluate(
        &app.url(""),
        &t.slug,
        &sdk_key,
        Value::Array(evaluations.clone()),
    )
    .await;
    let got = got.as_array().unwrap();
    for (i, e) in evaluations.iter().enumerate() {
        let rest = evaluate(&app, &t.slug, &boss, "production", e["context"].clone()).await;
        let flag = e["flag"].as_str().unwrap();
        match rest["flags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == flag)
        {
            Some(r) if r["errorCode"].is_null() => {
                assert_eq!(got[i]["value"], r["value"], "{e}: {} vs {r}", got[i]);
                assert_eq!(got[i]["variant"], r["variant"], "{e}");
                assert_eq!(got[i]["reason"], r["reason"], "{e}");
                assert!(got[i]["error_code"].is_null(), "{}", got[i]);
            }
            Some(r) => {
                assert_eq!(got[i]["error_code"], r["errorCode"], "{e}: {}", got[i]);
                assert_eq!(got[i]["value"], e["default"]);
            }
            None => {
                assert_eq!(got[i]["error_code"], "FLAG_NOT_FOUND", "{}", got[i]);
                assert_eq!(got[i]["value"], e["default"]);
            }
        }
    }

    // Bulk: an ETag that a repeat answers with 304, until a flag changes.
    let bulk = |etag: Option<&str>| {
        let mut r = app
            .anonymous(Method::POST, &t.slug, "/ofrep/v1/evaluate/flags")
            .header("x-api-key", &sdk_key)
            .json(&json!({"context": {"targetingKey": "user-1"}}));
        if let Some(e) = etag {
            r = r.header("if-none-match", e);
        }
        r
    };
    let res = bulk(None).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["flags"].as_array().unwrap().len(), 3);
    assert_eq!(bulk(Some(&etag)).send().await.unwrap().status(), 304);
    let res = req(
        &app,
        &t.slug,
        &boss,
        Method::PUT,
        "/v1/flags/greeting/environments/production",
    )
    .json(&json!({"enabled": false}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let res = bulk(Some(&etag)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_ne!(res.headers()["etag"].to_str().unwrap(), etag);

    // Bad input answers in OFREP's terms.
    let single = |body: &str| {
        app.anonymous(Method::POST, &t.slug, "/ofrep/v1/evaluate/flags/checkout")
            .header("x-api-key", &sdk_key)
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    for (body, status, code) in [
        ("{\"context\":", 400, "PARSE_ERROR"),
        ("{\"context\": [1]}", 400, "INVALID_CONTEXT"),
        (
            "{\"context\": {\"targetingKey\": 7}}",
            400,
            "INVALID_CONTEXT",
        ),
        (
            "{\"context\": {\"email\": \"a@b.c\"}}",
            400,
            "TARGETING_KEY_MISSING",
        ),
    ] {
        let res = single(body).send().await.unwrap();
        assert_eq!(res.status(), status, "{body}");
        let answer: Value = res.json().await.unwrap();
        assert_eq!(answer["errorCode"], code, "{body}: {answer}");
        assert_eq!(answer["key"], "checkout");
    }
    let res = app
        .anonymous(Method::POST, &t.slug, "/ofrep/v1/evaluate/flags/nope")
        .header("x-api-key", &sdk_key)
        .json(&json!({"context": {"targetingKey": "u"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["errorCode"],
        "FLAG_NOT_FOUND"
    );

    // A user token evaluates with its own identity, in the environment it names.
    let res = app
        .tenant_req(Method::POST, &t.slug, "/ofrep/v1/evaluate/flags/greeting")
        .header("x-flag-environment", "staging")
        .json(&json!({"context": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["value"], "hello");
    // Roles come from the caller, never from what the context claims.
    let admins = json!({
        "key": "admin-tools", "kind": "boolean", "variants": {"yes": true, "no": false},
        "environments": {
            "production": {"enabled": true, "off_variant": "no", "default": {"variant": "no"},
                           "rules": [{"conditions": [{"attribute": "roles", "op": "contains", "values": ["admin"]}],
                                      "serve": {"variant": "yes"}}]},
            "staging": {"enabled": true, "off_variant": "no", "default": {"variant": "no"}}
        }
    });
    assert_eq!(
        req(&app, &t.slug, &boss, Method::POST, "/v1/flags")
            .json(&admins)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let claim = json!({"context": {"targetingKey": "someone-else", "roles": ["admin"]}});
    let as_boss: Value = req(
        &app,
        &t.slug,
        &boss,
        Method::POST,
        "/ofrep/v1/evaluate/flags/admin-tools",
    )
    .json(&claim)
    .fetch_json()
    .await;
    assert_eq!(as_boss["value"], true, "{as_boss}");
    assert_eq!(as_boss["reason"], "TARGETING_MATCH");
    let as_member: Value = app
        .tenant_req(
            Method::POST,
            &t.slug,
            "/ofrep/v1/evaluate/flags/admin-tools",
        )
        .json(&claim)
        .fetch_json()
        .await;
    assert_eq!(as_member["value"], false, "{as_member}");

    // Credentials: another tenant's key, a made-up key and a revoked key are all 401.
    let (other, _, other_boss, _) = tenant_with_admin(&app).await;
    let theirs: Value = req(
        &app,
        &other.slug,
        &other_boss,
        Method::POST,
        "/v1/flag-environments/production/sdk-keys",
    )
    .json(&json!({"name": "theirs"}))
    .fetch_json()
    .await;
    for wrong in [
        theirs["key"].as_str().unwrap().to_string(),
        format!("ntf_{}", "A".repeat(43)),
    ] {
        let res = app
            .anonymous(Method::POST, &t.slug, "/ofrep/v1/evaluate/flags")
            .header("x-api-key", &wrong)
            .json(&json!({"context": {"targetingKey": "u"}}))
            .send()
            .await
            .unwrap();
        expect_problem(res, 401, "sdk-key-invalid").await;
    }
    let res = req(
        &app,
        &t.slug,
        &boss,
        Method::DELETE,
        &format!(
            "/v1/flag-environments/production/sdk-keys/{}",
            key["id"].as_str().unwrap()
        ),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    let res = bulk(None).send().await.unwrap();
    expect_problem(res, 401, "sdk-key-invalid").await;
    let res = app
        .anonymous(Method::POST, &t.slug, "/ofrep/v1/evaluate/flags")
        .json(&json!({"context": {"targetingKey": "u"}}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 401, "token-missing").await;
    app.cleanup().await;
}

#[tokio::test]
async fn changes_reach_another_instance_and_scheduled_changes_apply() {
    let mut config = test_config();
    config.flags.schedule_interval_secs = 1;
    let a = TestApp::start_with(config).await;
    let b = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&a).await;
    assert_eq!(
        req(&a, &t.slug, &boss, Method::POST, "/v1/flags")
            .json(&checkout("checkout"))
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let staff = json!({"targetingKey": "u1", "email": "s@staff.example"});
    assert_eq!(
        one(
            &evaluate(&b, &t.slug, &boss, "production", staff.clone()).await,
            "checkout"
        )["value"],
        true
    );
    let res = req(
        &a,
        &t.slug,
        &boss,
        Method::PUT,
        "/v1/flags/checkout/environments/production",
    )
    .json(&json!({"enabled": false}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let changed = std::time::Instant::now();
    let seen = loop {
        let now = evaluate(&b, &t.slug, &boss, "production", staff.clone()).await;
        if one(&now, "checkout")["reason"] == "DISABLED"
            || changed.elapsed() > std::time::Duration::from_secs(1)
        {
            break now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(one(&seen, "checkout")["reason"], "DISABLED", "{seen}");

    // A scheduled change: refused in the past or invalid, applied when due, as a version.
    let schedule = |body: Value| {
        req(
            &a,
            &t.slug,
            &boss,
            Method::POST,
            "/v1/flags/checkout/schedules",
        )
        .json(&body)
    };
    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let res = schedule(json!({"apply_at": past, "patch": {}}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 422, "validation").await;
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let res = schedule(json!({"apply_at": soon, "patch": {"environments": {"production": {"off_variant": "nope"}}}}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(res, 422, "validation").await;
    assert!(
        problem_pointers(&problem)[0].starts_with("/patch"),
        "{problem}"
    );
    let created: Value = schedule(json!({"apply_at": soon, "patch": {"environments": {"production": {"enabled": true}}}, "reason": "launch"}))
        .fetch_json()
        .await;
    assert_eq!(created["status"], "pending");
    let id = created["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let applied = loop {
        let list: Value = req(
            &a,
            &t.slug,
            &boss,
            Method::GET,
            "/v1/flags/checkout/schedules",
        )
        .fetch_json()
        .await;
        let s = list
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id.as_str())
            .unwrap()
            .clone();
        if s["status"] != "pending" || std::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(applied["status"], "applied", "{applied}");
    let version = applied["applied_version"].as_i64().unwrap();
    let v: Value = req(
        &a,
        &t.slug,
        &boss,
        Method::GET,
        &format!("/v1/flags/checkout/versions/{version}"),
    )
    .fetch_json()
    .await;
    assert_eq!(v["reason"], format!("scheduled change {id}"));
    assert_eq!(
        one(
            &evaluate(&b, &t.slug, &boss, "production", staff).await,
            "checkout"
        )["reason"],
        "TARGETING_MATCH"
    );
    let res = req(
        &a,
        &t.slug,
        &boss,
        Method::DELETE,
        &format!("/v1/flags/checkout/schedules/{id}"),
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 409, "conflict").await;
    b.cleanup().await;
    a.cleanup().await;
}

#[tokio::test]
async fn an_sdk_key_over_its_rate_gets_429_with_retry_after() {
    let mut config = test_config();
    config.rate_limit.per_user_per_sec = 0.5;
    config.rate_limit.per_user_burst = 2;
    config.rate_limit.namespace = neotenant_tests::random_slug("rl");
    let app = TestApp::start_with(config).await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let key: Value = req(
        &app,
        &t.slug,
        &boss,
        Method::POST,
        "/v1/flag-environments/staging/sdk-keys",
    )
    .json(&json!({"name": "busy"}))
    .fetch_json()
    .await;
    let sdk_key = key["key"].as_str().unwrap().to_string();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let res = app
            .anonymous(Method::POST, &t.slug, "/ofrep/v1/evaluate/flags")
            .header("x-api-key", &sdk_key)
            .json(&json!({"context": {"targetingKey": "u"}}))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        if res.status() == 429 {
            let retry: u64 = res.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&retry), "{retry}");
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    app.cleanup().await;
}
