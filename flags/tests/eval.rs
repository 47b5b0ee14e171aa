//! Behaviour tests for evaluation through the public API: every op, rule order, the kill
//! switch, prerequisites, segments, rollouts and error cases.
//!
//! Owns only assertions about `Snapshot::evaluate`/`evaluate_all`; it must never depend on
//! crate internals or on anything outside this crate.

use neotenant_flags::{Context, EvalError, Evaluation, Flag, Reason, Segment, Snapshot, bucket};
use serde_json::{Map, Value, json};

const ENV: &str = "production";

fn flag(doc: Value) -> Flag {
    serde_json::from_value(doc).expect("test flag parses")
}

fn segment(doc: Value) -> Segment {
    serde_json::from_value(doc).expect("test segment parses")
}

/// A boolean flag whose single rule serves `on` when `condition` matches; default `off`.
fn one_rule(key: &str, condition: Value) -> Flag {
    flag(json!({
        "key": key, "kind": "boolean",
        "variants": {"on": true, "off": false},
        "environments": {ENV: {
            "enabled": true, "off_variant": "off", "default": {"variant": "off"},
            "rules": [{"conditions": [condition], "serve": {"variant": "on"}}]
        }}
    }))
}

/// A boolean flag with no targeting that serves `serve` by default.
fn plain(key: &str, serve: &str) -> Flag {
    flag(json!({
        "key": key, "kind": "boolean",
        "variants": {"on": true, "off": false},
        "environments": {ENV: {"enabled": true, "off_variant": "off", "default": {"variant": serve}}}
    }))
}

fn eval(snap: &Snapshot, key: &str, ctx: &Context) -> Evaluation {
    snap.evaluate(ENV, key, ctx).expect("evaluates")
}

fn user() -> Context {
    Context::new("user-42")
        .with("email", "alice@example.com")
        .with("plan", "pro")
        .with("age", 30)
        .with("score", 7.5)
        .with("beta", true)
        .with("app_version", "v2.4.0-rc.1")
        .with("roles", json!(["admin", "billing"]))
        .with("nothing", Value::Null)
}

#[test]
fn every_op() {
    let cases: Vec<(Value, bool)> = vec![
        (
            json!({"attribute": "plan", "op": "eq", "values": ["pro"]}),
            true,
        ),
        (
            json!({"attribute": "plan", "op": "eq", "values": ["free"]}),
            false,
        ),
        (
            json!({"attribute": "age", "op": "eq", "values": [30.0]}),
            true,
        ),
        (
            json!({"attribute": "beta", "op": "eq", "values": [true]}),
            true,
        ),
        (
            json!({"attribute": "age", "op": "eq", "values": ["30"]}),
            false,
        ),
        (
            json!({"attribute": "targetingKey", "op": "eq", "values": ["user-42"]}),
            true,
        ),
        (
            json!({"attribute": "plan", "op": "neq", "values": ["free"]}),
            true,
        ),
        (
            json!({"attribute": "plan", "op": "neq", "values": ["pro"]}),
            false,
        ),
        (
            json!({"attribute": "plan", "op": "in", "values": ["free", "pro"]}),
            true,
        ),
        (
            json!({"attribute": "plan", "op": "in", "values": ["free"]}),
            false,
        ),
        (
            json!({"attribute": "age", "op": "in", "values": [29, 30]}),
            true,
        ),
        (
            json!({"attribute": "roles", "op": "in", "values": ["billing", "ops"]}),
            true,
        ),
        (
            json!({"attribute": "roles", "op": "in", "values": ["ops"]}),
            false,
        ),
        (
            json!({"attribute": "targetingKey", "op": "in", "values": ["user-1", "user-42"]}),
            true,
        ),
        (
            json!({"attribute": "plan", "op": "not_in", "values": ["free"]}),
            true,
        ),
        (
            json!({"attribute": "plan", "op": "not_in", "values": ["pro"]}),
            false,
        ),
        (
            json!({"attribute": "roles", "op": "not_in", "values": ["ops"]}),
            true,
        ),
        (
            json!({"attribute": "roles", "op": "not_in", "values": ["admin"]}),
            false,
        ),
        (
            json!({"attribute": "email", "op": "contains", "values": ["@example"]}),
            true,
        ),
        (
            json!({"attribute": "email", "op": "contains", "values": ["@other"]}),
            false,
        ),
        (
            json!({"attribute": "roles", "op": "contains", "values": ["admin"]}),
            true,
        ),
        (
            json!({"attribute": "roles", "op": "contains", "values": ["adm"]}),
            false,
        ),
        (
            json!({"attribute": "age", "op": "contains", "values": ["3"]}),
            false,
        ),
        (
            json!({"attribute": "email", "op": "starts_with", "values": ["alice@"]}),
            true,
        ),
        (
            json!({"attribute": "email", "op": "starts_with", "values": ["bob@"]}),
            false,
        ),
        (
            json!({"attribute": "email", "op": "ends_with", "values": [".com"]}),
            true,
        ),
        (
            json!({"attribute": "email", "op": "ends_with", "values": [".org"]}),
            false,
        ),
        (
            json!({"attribute": "targetingKey", "op": "starts_with", "values": ["user-"]}),
            true,
        ),
        (
            json!({"attribute": "age", "op": "starts_with", "values": ["3"]}),
            false,
        ),
        (
            json!({"attribute": "age", "op": "gt", "values": [29]}),
            true,
        ),
        (
            json!({"attribute": "age", "op": "gt", "values": [30]}),
            false,
        ),
        (
            json!({"attribute": "age", "op": "gte", "values": [30]}),
            true,
        ),
        (
            json!({"attribute": "age", "op": "gte", "values": [30.5]}),
            false,
        ),
        (
            json!({"attribute": "score", "op": "lt", "values": [7.6]}),
            true,
        ),
        (
            json!({"attribute": "score", "op": "lt", "values": [7.5]}),
            false,
        ),
        (
            json!({"attribute": "score", "op": "lte", "values": [7.5]}),
            true,
        ),
        (
            json!({"attribute": "score", "op": "lte", "values": [7]}),
            false,
        ),
        (
            json!({"attribute": "plan", "op": "gt", "values": [1]}),
            false,
        ),
        (
            json!({"attribute": "app_version", "op": "semver_eq", "values": ["2.4.0-rc.1"]}),
            true,
        ),
        (
            json!({"attribute": "app_version", "op": "semver_eq", "values": ["2.4.0"]}),
            false,
        ),
        (
            json!({"attribute": "app_version", "op": "semver_gt", "values": ["2.4.0-beta.9"]}),
            true,
        ),
        (
            json!({"attribute": "app_version", "op": "semver_gt", "values": ["2.4.0"]}),
            false,
        ),
        (
            json!({"attribute": "app_version", "op": "semver_lt", "values": ["2.4.0"]}),
            true,
        ),
        (
            json!({"attribute": "app_version", "op": "semver_lt", "values": ["2.3.99"]}),
            false,
        ),
        (
            json!({"attribute": "email", "op": "semver_gt", "values": ["0.0.1"]}),
            false,
        ),
        (json!({"attribute": "email", "op": "exists"}), true),
        (
            json!({"attribute": "targetingKey", "op": "exists", "values": []}),
            true,
        ),
        (json!({"attribute": "phone", "op": "exists"}), false),
        (json!({"attribute": "nothing", "op": "exists"}), false),
    ];
    for (i, (condition, expected)) in cases.into_iter().enumerate() {
        let snap = Snapshot::new([one_rule("f", condition.clone())], []);
        let got = eval(&snap, "f", &user());
        assert_eq!(got.value, json!(expected), "case {i}: {condition}");
        let reason = if expected {
            Reason::TargetingMatch
        } else {
            Reason::Default
        };
        assert_eq!(got.reason, reason, "case {i}: {condition}");
    }
}

#[test]
fn missing_or_null_attribute_makes_every_attribute_op_false() {
    for op in [
        "eq",
        "neq",
        "in",
        "not_in",
        "contains",
        "starts_with",
        "ends_with",
        "gt",
        "gte",
        "lt",
        "lte",
        "semver_eq",
        "semver_gt",
        "semver_lt",
        "exists",
    ] {
        let value = match op {
            "gt" | "gte" | "lt" | "lte" => json!(1),
            op if op.starts_with("semver") => json!("1.0.0"),
            _ => json!("x"),
        };
        for attribute in ["phone", "nothing"] {
            let c = json!({"attribute": attribute, "op": op, "values": [value]});
            let snap = Snapshot::new([one_rule("f", c)], []);
            assert_eq!(
                eval(&snap, "f", &user()).variant,
                "off",
                "{op} on {attribute}"
            );
        }
    }
    // No targeting key at all: `targetingKey` is a missing attribute.
    let c = json!({"attribute": "targetingKey", "op": "neq", "values": ["x"]});
    let snap = Snapshot::new([one_rule("f", c)], []);
    assert_eq!(eval(&snap, "f", &Context::default()).variant, "off");
}

#[test]
fn all_conditions_of_a_rule_must_match_and_the_first_matching_rule_wins() {
    let f = flag(json!({
        "key": "colour", "kind": "string",
        "variants": {"red": "#f00", "green": "#0f0", "blue": "#00f", "grey": "#888"},
        "environments": {ENV: {
            "enabled": true, "off_variant": "grey", "default": {"variant": "grey"},
            "rules": [
                {"conditions": [{"attribute": "plan", "op": "eq", "values": ["pro"]},
                                {"attribute": "age", "op": "lt", "values": [18]}],
                 "serve": {"variant": "red"}},
                {"conditions": [{"attribute": "plan", "op": "eq", "values": ["pro"]}],
                 "serve": {"variant": "green"}},
                {"conditions": [{"attribute": "email", "op": "exists"}],
                 "serve": {"variant": "blue"}}
            ]
        }}
    }));
    let snap = Snapshot::new([f], []);
    let got = eval(&snap, "colour", &user());
    assert_eq!(
        (got.variant.as_str(), &got.value),
        ("green", &json!("#0f0"))
    );
    assert_eq!(got.reason, Reason::TargetingMatch);
    assert_eq!(got.key, "colour");
    let minor = user().with("age", 12);
    assert_eq!(eval(&snap, "colour", &minor).variant, "red");
    let free = user().with("plan", "free");
    assert_eq!(eval(&snap, "colour", &free).variant, "blue");
    let got = eval(&snap, "colour", &Context::new("anon"));
    assert_eq!(
        (got.variant.as_str(), got.reason),
        ("grey", Reason::Default)
    );
}

#[test]
fn kill_switch_serves_off_variant_whatever_the_rules() {
    let mut f = one_rule(
        "f",
        json!({"attribute": "plan", "op": "eq", "values": ["pro"]}),
    );
    let env = f.environments.get_mut(ENV).unwrap();
    env.default = serde_json::from_value(json!({"variant": "on"})).unwrap();
    env.enabled = false;
    let snap = Snapshot::new([f], []);
    let got = eval(&snap, "f", &user());
    assert_eq!(
        (got.variant.as_str(), got.value, got.reason),
        ("off", json!(false), Reason::Disabled)
    );
}

#[test]
fn static_reason_only_without_any_targeting() {
    let snap = Snapshot::new([plain("f", "on")], []);
    let got = eval(&snap, "f", &Context::default());
    assert_eq!(
        (got.variant.as_str(), got.value, got.reason),
        ("on", json!(true), Reason::Static)
    );
}

#[test]
fn prerequisites_pass_fail_and_chain() {
    let mut gated = one_rule(
        "gated",
        json!({"attribute": "plan", "op": "eq", "values": ["pro"]}),
    );
    gated.prerequisites =
        serde_json::from_value(json!([{"flag": "parent", "variants": ["on"]}])).unwrap();
    let mut parent = plain("parent", "on");
    parent.prerequisites =
        serde_json::from_value(json!([{"flag": "root", "variants": ["on"]}])).unwrap();

    // Chain holds: gated's own rules decide.
    let snap = Snapshot::new([gated.clone(), parent.clone(), plain("root", "on")], []);
    let got = eval(&snap, "gated", &user());
    assert_eq!(
        (got.variant.as_str(), got.reason),
        ("on", Reason::TargetingMatch)
    );
    // A flag with prerequisites but no rules is not STATIC.
    assert_eq!(eval(&snap, "parent", &user()).reason, Reason::Default);

    // Root serves off → parent fails → gated fails.
    let snap = Snapshot::new([gated.clone(), parent.clone(), plain("root", "off")], []);
    let got = eval(&snap, "gated", &user());
    assert_eq!(
        (got.variant.as_str(), got.reason),
        ("off", Reason::PrerequisiteFailed)
    );
    assert_eq!(
        eval(&snap, "parent", &user()).reason,
        Reason::PrerequisiteFailed
    );

    // A disabled prerequisite serves its off variant, which may be listed.
    let mut root = plain("root", "on");
    root.environments.get_mut(ENV).unwrap().enabled = false;
    let snap = Snapshot::new([gated.clone(), parent.clone(), root], []);
    assert_eq!(
        eval(&snap, "gated", &user()).reason,
        Reason::PrerequisiteFailed
    );
    let mut lenient = parent.clone();
    lenient.prerequisites[0].variants.push("off".into());
    let mut root = plain("root", "on");
    root.environments.get_mut(ENV).unwrap().enabled = false;
    let snap = Snapshot::new([gated.clone(), lenient, root], []);
    assert_eq!(eval(&snap, "gated", &user()).reason, Reason::TargetingMatch);

    // An unknown prerequisite flag does not hold.
    let snap = Snapshot::new([gated.clone()], []);
    assert_eq!(
        eval(&snap, "gated", &user()).reason,
        Reason::PrerequisiteFailed
    );

    // The kill switch wins over prerequisites.
    let mut off = gated;
    off.environments.get_mut(ENV).unwrap().enabled = false;
    let snap = Snapshot::new([off], []);
    assert_eq!(eval(&snap, "gated", &user()).reason, Reason::Disabled);
}

#[test]
fn prerequisite_that_cannot_evaluate_does_not_hold() {
    let mut gated = plain("gated", "on");
    gated.prerequisites =
        serde_json::from_value(json!([{"flag": "split", "variants": ["on", "off"]}])).unwrap();
    let mut split = plain("split", "on");
    split.environments.get_mut(ENV).unwrap().default = serde_json::from_value(
        json!({"rollout": [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]}),
    )
    .unwrap();
    let snap = Snapshot::new([gated, split], []);
    assert_eq!(
        eval(&snap, "gated", &Context::default()).reason,
        Reason::PrerequisiteFailed
    );
    assert_eq!(
        eval(&snap, "gated", &Context::new("u")).reason,
        Reason::Default
    );
}

#[test]
fn prerequisite_cycles_and_depth_are_errors() {
    let with_pre = |key: &str, pre: &str| {
        let mut f = plain(key, "on");
        f.prerequisites =
            serde_json::from_value(json!([{"flag": pre, "variants": ["on"]}])).unwrap();
        f
    };
    let snap = Snapshot::new(
        [with_pre("a", "b"), with_pre("b", "c"), with_pre("c", "a")],
        [],
    );
    for key in ["a", "b", "c"] {
        assert_eq!(
            snap.evaluate(ENV, key, &user()),
            Err(EvalError::PrerequisiteCycle)
        );
    }
    let snap = Snapshot::new([with_pre("a", "a")], []);
    assert_eq!(
        snap.evaluate(ENV, "a", &user()),
        Err(EvalError::PrerequisiteCycle)
    );

    // f0 → f1 → ... → fN: ten levels below the top are fine, eleven are not.
    let chain = |n: usize| {
        let mut flags: Vec<Flag> = (0..n)
            .map(|i| with_pre(&format!("f{i}"), &format!("f{}", i + 1)))
            .collect();
        flags.push(plain(&format!("f{n}"), "on"));
        Snapshot::new(flags, [])
    };
    let ok = chain(10);
    assert_eq!(eval(&ok, "f0", &user()).reason, Reason::Default);
    let deep = chain(11);
    match deep.evaluate(ENV, "f0", &user()) {
        Err(EvalError::General(msg)) => assert!(msg.contains("deeper than 10"), "{msg}"),
        other => panic!("expected a depth error, got {other:?}"),
    }
    assert_eq!(eval(&deep, "f1", &user()).reason, Reason::Default);
}

#[test]
fn segments() {
    let beta = segment(json!({
        "key": "beta", "description": "beta testers on paid plans",
        "conditions": [{"attribute": "roles", "op": "contains", "values": ["beta-tester"]},
                       {"attribute": "plan", "op": "in", "values": ["pro", "enterprise"]}]
    }));
    let staff = segment(json!({
        "key": "staff",
        "conditions": [{"attribute": "email", "op": "ends_with", "values": ["@corp.example"]}]
    }));
    let nested = segment(json!({
        "key": "nested",
        "conditions": [{"attribute": "segment", "op": "in_segment", "values": ["staff"]}]
    }));
    let nested_not = segment(json!({
        "key": "nested-not",
        "conditions": [{"attribute": "segment", "op": "not_in_segment", "values": ["staff"]}]
    }));
    let flags = [
        one_rule(
            "in",
            json!({"attribute": "segment", "op": "in_segment", "values": ["beta", "staff"]}),
        ),
        one_rule(
            "not-in",
            json!({"attribute": "segment", "op": "not_in_segment", "values": ["beta"]}),
        ),
        one_rule(
            "unknown",
            json!({"attribute": "segment", "op": "in_segment", "values": ["ghost"]}),
        ),
        one_rule(
            "not-unknown",
            json!({"attribute": "segment", "op": "not_in_segment", "values": ["ghost"]}),
        ),
        one_rule(
            "nested",
            json!({"attribute": "segment", "op": "in_segment", "values": ["nested"]}),
        ),
        one_rule(
            "nested-not",
            json!({"attribute": "segment", "op": "in_segment", "values": ["nested-not"]}),
        ),
    ];
    let snap = Snapshot::new(flags, [beta, staff, nested, nested_not]);
    assert!(snap.segment("beta").is_some());

    let tester = user().with("roles", json!(["beta-tester"]));
    let outsider = user();
    let employee = Context::new("e-1").with("email", "eve@corp.example");
    let on = |key: &str, ctx: &Context| eval(&snap, key, ctx).value == json!(true);

    assert!(on("in", &tester));
    assert!(on("in", &employee));
    assert!(!on("in", &outsider));
    assert!(!on("not-in", &tester));
    assert!(on("not-in", &outsider));
    // not_in_segment ignores the attribute: a context without any attributes is not in beta.
    assert!(on("not-in", &Context::default()));
    assert!(!on("unknown", &tester));
    assert!(on("not-unknown", &tester));
    // Segment ops never match inside a segment.
    assert!(!on("nested", &employee));
    assert!(!on("nested-not", &outsider));
}

fn rollout_flag(key: &str, weights: &[(&str, u32)], bucket_by: Option<&str>) -> Flag {
    let rollout: Vec<Value> = weights
        .iter()
        .map(|(v, w)| json!({"variant": v, "weight": w}))
        .collect();
    let mut serve = json!({"rollout": rollout});
    if let Some(b) = bucket_by {
        serve["bucket_by"] = json!(b);
    }
    flag(json!({
        "key": key, "kind": "string",
        "variants": {"a": "A", "b": "B", "c": "C"},
        "environments": {ENV: {"enabled": true, "off_variant": "a", "default": serve}}
    }))
}

#[test]
fn rollout_is_sticky_and_matches_flagd_bucketing() {
    let f = rollout_flag("sticky", &[("a", 20), ("b", 30), ("c", 50)], None);
    let snap = Snapshot::new([f], []);
    let names = ["a", "b", "c"];
    for i in 0..500 {
        let ctx = Context::new(format!("user-{i}"));
        let first = eval(&snap, "sticky", &ctx);
        assert_eq!(first.reason, Reason::Split);
        for _ in 0..3 {
            assert_eq!(eval(&snap, "sticky", &ctx), first);
        }
        let expected = bucket::fractional("sticky", &format!("user-{i}"), &[20, 30, 50]).unwrap();
        assert_eq!(first.variant, names[expected]);
        let value = json!(names[expected].to_uppercase());
        assert_eq!(first.value, value);
    }
}

#[test]
fn rollout_distribution_25_75_within_two_percent() {
    let f = rollout_flag("dist", &[("a", 25), ("b", 75)], None);
    let snap = Snapshot::new([f], []);
    let n = 10_000;
    let a = (0..n)
        .filter(|i| eval(&snap, "dist", &Context::new(format!("user-{i}"))).variant == "a")
        .count();
    let share = a as f64 / n as f64;
    assert!((0.23..=0.27).contains(&share), "25% variant got {share}");
}

#[test]
fn rollout_bucket_by_attribute_and_missing_bucket_values() {
    let f = rollout_flag("org-split", &[("a", 50), ("b", 50)], Some("org"));
    let snap = Snapshot::new([f], []);
    // Everyone in the same org gets the same variant, whatever their targeting key.
    let expected = ["a", "b"][bucket::fractional("org-split", "acme", &[50, 50]).unwrap()];
    for i in 0..50 {
        let ctx = Context::new(format!("u{i}")).with("org", "acme");
        assert_eq!(eval(&snap, "org-split", &ctx).variant, expected);
    }
    // Numbers bucket by their JSON text.
    let by_number = eval(&snap, "org-split", &Context::default().with("org", 1234));
    let expected = ["a", "b"][bucket::fractional("org-split", "1234", &[50, 50]).unwrap()];
    assert_eq!(by_number.variant, expected);
    // No org: a general error (the targeting key is not a fallback).
    assert!(matches!(
        snap.evaluate(ENV, "org-split", &Context::new("u1")),
        Err(EvalError::General(_))
    ));

    let tk = Snapshot::new([rollout_flag("tk", &[("a", 50), ("b", 50)], None)], []);
    assert_eq!(
        tk.evaluate(ENV, "tk", &Context::default()),
        Err(EvalError::TargetingKeyMissing)
    );
    assert_eq!(
        tk.evaluate(ENV, "tk", &Context::new("")),
        Err(EvalError::TargetingKeyMissing)
    );
    assert_eq!(
        EvalError::TargetingKeyMissing.code(),
        "TARGETING_KEY_MISSING"
    );
}

#[test]
fn rule_rollout_is_a_split() {
    let f = flag(json!({
        "key": "r", "kind": "number",
        "variants": {"low": 1, "high": 2.5},
        "environments": {ENV: {
            "enabled": true, "off_variant": "low", "default": {"variant": "low"},
            "rules": [{"conditions": [{"attribute": "plan", "op": "eq", "values": ["pro"]}],
                       "serve": {"rollout": [{"variant": "low", "weight": 0}, {"variant": "high", "weight": 100}]}}]
        }}
    }));
    let snap = Snapshot::new([f], []);
    let got = eval(&snap, "r", &user());
    assert_eq!(
        (got.variant.as_str(), got.value, got.reason),
        ("high", json!(2.5), Reason::Split)
    );
}

#[test]
fn errors_and_codes() {
    let snap = Snapshot::new([plain("f", "on")], []);
    assert_eq!(
        snap.evaluate(ENV, "nope", &user()),
        Err(EvalError::FlagNotFound)
    );
    assert_eq!(
        snap.evaluate("staging", "f", &user()),
        Err(EvalError::EnvironmentNotFound)
    );
    assert_eq!(EvalError::FlagNotFound.code(), "FLAG_NOT_FOUND");
    assert_eq!(EvalError::EnvironmentNotFound.code(), "GENERAL");
    assert_eq!(EvalError::PrerequisiteCycle.code(), "GENERAL");

    // An undefined served variant is an error, not a panic.
    let broken = plain("broken", "missing");
    let snap = Snapshot::new([broken], []);
    assert!(matches!(
        snap.evaluate(ENV, "broken", &user()),
        Err(EvalError::General(_))
    ));
}

#[test]
fn evaluate_all_is_sorted_and_keeps_errors_per_flag() {
    let snap = Snapshot::new(
        [
            plain("zeta", "on"),
            rollout_flag("mid", &[("a", 100)], None),
            plain("alpha", "off"),
        ],
        [],
    );
    let all = snap.evaluate_all(ENV, &Context::default());
    let keys: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["alpha", "mid", "zeta"]);
    assert_eq!(all[0].1.as_ref().unwrap().variant, "off");
    assert_eq!(all[1].1, Err(EvalError::TargetingKeyMissing));
    assert_eq!(all[2].1.as_ref().unwrap().reason, Reason::Static);
    assert!(
        snap.evaluate_all("nowhere", &Context::default())
            .iter()
            .all(|(_, r)| r.is_err())
    );
}

#[test]
fn evaluation_serializes_with_ofrep_reasons() {
    let snap = Snapshot::new([plain("f", "on")], []);
    let got = eval(&snap, "f", &Context::default());
    assert_eq!(
        serde_json::to_value(&got).unwrap(),
        json!({"key": "f", "value": true, "variant": "on", "reason": "STATIC"})
    );
    for (reason, text) in [
        (Reason::Static, "STATIC"),
        (Reason::TargetingMatch, "TARGETING_MATCH"),
        (Reason::Split, "SPLIT"),
        (Reason::Disabled, "DISABLED"),
        (Reason::Default, "DEFAULT"),
        (Reason::PrerequisiteFailed, "PREREQUISITE_FAILED"),
        (Reason::Error, "ERROR"),
    ] {
        assert_eq!(serde_json::to_value(reason).unwrap(), json!(text));
        assert_eq!(reason.as_str(), text);
    }
}

#[test]
fn context_from_an_ofrep_object() {
    let Value::Object(map) = json!({"targetingKey": "u-1", "plan": "pro"}) else {
        unreachable!()
    };
    let ctx = Context::from(map);
    assert_eq!(ctx.targeting_key.as_deref(), Some("u-1"));
    assert_eq!(ctx.attributes.len(), 1);
    assert_eq!(ctx.attributes["plan"], json!("pro"));

    let Value::Object(map) = json!({"targetingKey": 7}) else {
        unreachable!()
    };
    let ctx = Context::from(map);
    assert_eq!(ctx.targeting_key, None);
    assert_eq!(Context::from(Map::new()), Context::default());
}
