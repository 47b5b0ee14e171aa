//! Tests for flag and segment validation and the prerequisite cycle check, through the public
//! API: one case per kind of problem, plus "every problem at once".
//!
//! Owns only assertions about `validate`, `validate_segment` and `prerequisite_cycle`; it must
//! never depend on crate internals.

use std::collections::{BTreeSet, HashMap};

use neotenant_flags::{
    Flag, Problem, Segment, ValidationContext, prerequisite_cycle, validate, validate_segment,
};
use serde_json::{Value, json};

struct World {
    attributes: BTreeSet<String>,
    segments: BTreeSet<String>,
    flags: HashMap<String, Vec<String>>,
    environments: Vec<String>,
}

impl World {
    fn new() -> Self {
        World {
            attributes: ["email", "plan", "age", "app_version", "roles", "org"]
                .map(String::from)
                .into(),
            segments: ["beta", "staff"].map(String::from).into(),
            flags: HashMap::from([
                ("parent".to_owned(), vec!["on".to_owned(), "off".to_owned()]),
                ("other".to_owned(), vec!["x".to_owned()]),
            ]),
            environments: vec!["production".to_owned(), "staging".to_owned()],
        }
    }

    fn ctx(&self) -> ValidationContext<'_> {
        ValidationContext {
            known_attributes: &self.attributes,
            segments: &self.segments,
            flags: &self.flags,
            environments: &self.environments,
        }
    }
}

fn env(rules: Value) -> Value {
    json!({"enabled": true, "off_variant": "off", "default": {"variant": "off"}, "rules": rules})
}

/// A valid flag exercising every feature.
fn good() -> Value {
    json!({
        "key": "new-checkout_v2.1",
        "kind": "boolean",
        "description": "the new checkout",
        "variants": {"on": true, "off": false},
        "prerequisites": [{"flag": "parent", "variants": ["on"]}],
        "environments": {
            "production": env(json!([
                {"description": "staff", "conditions": [
                    {"attribute": "email", "op": "ends_with", "values": ["@corp.example"]},
                    {"attribute": "segment", "op": "not_in_segment", "values": ["beta"]}],
                 "serve": {"variant": "on"}},
                {"conditions": [
                    {"attribute": "age", "op": "gte", "values": [18]},
                    {"attribute": "app_version", "op": "semver_gt", "values": ["v2.0.0-rc.1"]},
                    {"attribute": "roles", "op": "in", "values": ["admin", "ops"]},
                    {"attribute": "targetingKey", "op": "exists"},
                    {"attribute": "segment", "op": "in_segment", "values": ["staff"]}],
                 "serve": {"rollout": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}],
                           "bucket_by": "org"}}
            ])),
            "staging": {"enabled": false, "off_variant": "off",
                        "default": {"rollout": [{"variant": "on", "weight": 100}]}}
        }
    })
}

fn check(doc: Value) -> Vec<Problem> {
    let flag: Flag = serde_json::from_value(doc).expect("test flag parses");
    let world = World::new();
    validate(&flag, &world.ctx())
}

/// Validates `doc` and asserts exactly one problem, at `pointer`, whose message contains
/// `needle`.
fn one_problem(doc: Value, pointer: &str, needle: &str) {
    let problems = check(doc);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].pointer, pointer, "{problems:#?}");
    assert!(
        problems[0].message.contains(needle),
        "{:?} lacks {needle:?}",
        problems[0].message
    );
}

fn with(mut doc: Value, pointer: &str, value: Value) -> Value {
    *doc.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer}")) = value;
    doc
}

const RULE0: &str = "/environments/production/rules/0";
const RULE1: &str = "/environments/production/rules/1";

#[test]
fn a_good_flag_has_no_problems() {
    assert_eq!(check(good()), vec![]);
}

#[test]
fn bad_keys() {
    for key in [
        "",
        "Upper",
        "-lead",
        ".lead",
        "has space",
        "ü",
        &"a".repeat(129),
    ] {
        one_problem(with(good(), "/key", json!(key)), "/key", "flag key");
    }
    assert_eq!(check(with(good(), "/key", json!("a".repeat(128)))), vec![]);
    assert_eq!(check(with(good(), "/key", json!("0"))), vec![]);
}

#[test]
fn variants() {
    // None at all: also makes every referenced variant unknown.
    let problems = check(with(good(), "/variants", json!({})));
    assert_eq!(problems[0].pointer, "/variants");
    assert!(problems[0].message.contains("at least one variant"));
    assert!(
        problems
            .iter()
            .skip(1)
            .all(|p| p.message.contains("unknown variant"))
    );

    let many: serde_json::Map<String, Value> = (0..51)
        .map(|i| (format!("v{i}"), json!(i % 2 == 0)))
        .chain([
            ("on".to_owned(), json!(true)),
            ("off".to_owned(), json!(false)),
        ])
        .collect();
    one_problem(
        with(good(), "/variants", Value::Object(many)),
        "/variants",
        "at most 50",
    );

    let mut dash = good();
    dash["variants"]["-bad"] = json!(true);
    one_problem(dash, "/variants/-bad", "variant name");
    let mut slashy = good();
    slashy["variants"]["a/b~c"] = json!(true);
    one_problem(slashy, "/variants/a~1b~0c", "variant name");
    let mut long = good();
    long["variants"]["V".repeat(65)] = json!(true);
    assert_eq!(check(long).len(), 1);

    one_problem(
        with(good(), "/variants/on", json!("yes")),
        "/variants/on",
        "must be a boolean (the flag's kind), found string",
    );
}

#[test]
fn values_must_match_the_kind() {
    let doc = |kind: &str, on: Value, off: Value| {
        let mut d = good();
        d["kind"] = json!(kind);
        d["variants"] = json!({"on": on, "off": off});
        d
    };
    assert_eq!(check(doc("string", json!("a"), json!(""))), vec![]);
    assert_eq!(check(doc("number", json!(1), json!(-2.5))), vec![]);
    assert_eq!(check(doc("object", json!({"a": [1]}), json!({}))), vec![]);
    one_problem(
        doc("number", json!(1), json!("2")),
        "/variants/off",
        "number",
    );
    one_problem(
        doc("object", json!([1]), json!({})),
        "/variants/on",
        "found array",
    );
    one_problem(
        doc("string", json!(null), json!("x")),
        "/variants/on",
        "found null",
    );
}

#[test]
fn unknown_variants_everywhere() {
    one_problem(
        with(
            good(),
            "/environments/production/off_variant",
            json!("nope"),
        ),
        "/environments/production/off_variant",
        "unknown variant `nope`",
    );
    one_problem(
        with(
            good(),
            "/environments/production/default",
            json!({"variant": "nope"}),
        ),
        "/environments/production/default/variant",
        "unknown variant `nope`",
    );
    one_problem(
        with(good(), &format!("{RULE0}/serve/variant"), json!("nope")),
        &format!("{RULE0}/serve/variant"),
        "unknown variant `nope`",
    );
    one_problem(
        with(
            good(),
            &format!("{RULE1}/serve/rollout/1/variant"),
            json!("nope"),
        ),
        &format!("{RULE1}/serve/rollout/1/variant"),
        "unknown variant `nope`",
    );
    one_problem(
        with(good(), "/prerequisites/0/variants", json!(["on", "maybe"])),
        "/prerequisites/0/variants/1",
        "unknown variant `maybe` of flag `parent`",
    );
}

#[test]
fn rollouts() {
    let at = format!("{RULE1}/serve/rollout");
    let set = |rollout: Value| with(good(), &at, rollout);
    one_problem(
        set(json!([{"variant": "on", "weight": 60}, {"variant": "off", "weight": 50}])),
        &at,
        "rollout weights add up to 110%, above 100%",
    );
    one_problem(
        set(
            json!([{"variant": "on", "weight": 4294967295u32}, {"variant": "off", "weight": 4294967295u32}]),
        ),
        &at,
        "add up to 8589934590%, above 100%",
    );
    one_problem(
        set(json!([{"variant": "on", "weight": 30}, {"variant": "off", "weight": 60}])),
        &at,
        "rollout weights add up to 90%, below 100%",
    );
    one_problem(set(json!([])), &at, "at least one variant");
    one_problem(
        set(json!([{"variant": "on", "weight": 50}, {"variant": "on", "weight": 50}])),
        &format!("{at}/1/variant"),
        "appears more than once",
    );
    one_problem(
        with(
            good(),
            &format!("{RULE1}/serve/bucket_by"),
            json!("shoe_size"),
        ),
        &format!("{RULE1}/serve/bucket_by"),
        "unknown attribute `shoe_size`",
    );
    assert_eq!(
        check(with(
            good(),
            &format!("{RULE1}/serve/bucket_by"),
            json!("targetingKey")
        )),
        vec![]
    );
}

#[test]
fn conditions() {
    let cond = |i: usize| format!("{RULE1}/conditions/{i}");
    let set = |i: usize, c: Value| with(good(), &cond(i), c);

    one_problem(
        set(
            0,
            json!({"attribute": "shoe_size", "op": "gt", "values": [40]}),
        ),
        &format!("{}/attribute", cond(0)),
        "unknown attribute `shoe_size`",
    );
    one_problem(
        set(0, json!({"attribute": "age", "op": "gt", "values": ["18"]})),
        &format!("{}/values/0", cond(0)),
        "`gt` needs a number, found string",
    );
    one_problem(
        set(
            0,
            json!({"attribute": "age", "op": "lte", "values": [1, 2]}),
        ),
        &format!("{}/values", cond(0)),
        "`lte` takes exactly one value, found 2",
    );
    one_problem(
        set(
            1,
            json!({"attribute": "app_version", "op": "semver_lt", "values": ["1.2"]}),
        ),
        &format!("{}/values/0", cond(1)),
        "semantic version",
    );
    one_problem(
        set(
            1,
            json!({"attribute": "app_version", "op": "semver_eq", "values": [3]}),
        ),
        &format!("{}/values/0", cond(1)),
        "semantic version",
    );
    one_problem(
        set(2, json!({"attribute": "roles", "op": "in", "values": []})),
        &format!("{}/values", cond(2)),
        "`in` needs at least one value",
    );
    one_problem(
        set(2, json!({"attribute": "roles", "op": "not_in"})),
        &format!("{}/values", cond(2)),
        "`not_in` needs at least one value",
    );
    one_problem(
        set(
            2,
            json!({"attribute": "email", "op": "starts_with", "values": [1]}),
        ),
        &format!("{}/values/0", cond(2)),
        "`starts_with` needs a string",
    );
    one_problem(
        set(2, json!({"attribute": "email", "op": "eq", "values": []})),
        &format!("{}/values", cond(2)),
        "`eq` takes exactly one value, found 0",
    );
    one_problem(
        set(
            3,
            json!({"attribute": "email", "op": "exists", "values": [true]}),
        ),
        &format!("{}/values", cond(3)),
        "`exists` takes no values",
    );
    one_problem(
        set(
            4,
            json!({"attribute": "segment", "op": "in_segment", "values": ["staff", "ghosts"]}),
        ),
        &format!("{}/values/1", cond(4)),
        "unknown segment `ghosts`",
    );
    one_problem(
        set(
            4,
            json!({"attribute": "segment", "op": "not_in_segment", "values": []}),
        ),
        &format!("{}/values", cond(4)),
        "at least one segment key",
    );
    one_problem(
        set(
            4,
            json!({"attribute": "segment", "op": "in_segment", "values": [7]}),
        ),
        &format!("{}/values/0", cond(4)),
        "must be a string",
    );
}

#[test]
fn rule_and_condition_counts() {
    one_problem(
        with(good(), &format!("{RULE0}/conditions"), json!([])),
        &format!("{RULE0}/conditions"),
        "at least one condition",
    );
    let c = json!({"attribute": "plan", "op": "eq", "values": ["pro"]});
    one_problem(
        with(
            good(),
            &format!("{RULE0}/conditions"),
            json!(vec![c.clone(); 21]),
        ),
        &format!("{RULE0}/conditions"),
        "at most 20 conditions",
    );
    assert_eq!(
        check(with(
            good(),
            &format!("{RULE0}/conditions"),
            json!(vec![c.clone(); 20])
        )),
        vec![]
    );
    let rule = json!({"conditions": [c], "serve": {"variant": "on"}});
    one_problem(
        with(
            good(),
            "/environments/production/rules",
            json!(vec![rule.clone(); 101]),
        ),
        "/environments/production/rules",
        "at most 100 rules, found 101",
    );
    assert_eq!(
        check(with(
            good(),
            "/environments/production/rules",
            json!(vec![rule; 100])
        )),
        vec![]
    );
}

#[test]
fn prerequisites() {
    one_problem(
        with(good(), "/prerequisites/0/flag", json!("ghost")),
        "/prerequisites/0/flag",
        "unknown flag `ghost`",
    );
    one_problem(
        with(good(), "/prerequisites/0/flag", json!("new-checkout_v2.1")),
        "/prerequisites/0/flag",
        "its own prerequisite",
    );
    one_problem(
        with(good(), "/prerequisites/0/variants", json!([])),
        "/prerequisites/0/variants",
        "at least one variant",
    );
    one_problem(
        with(
            good(),
            "/prerequisites",
            json!([{"flag": "parent", "variants": ["on"]}, {"flag": "parent", "variants": ["off"]}]),
        ),
        "/prerequisites/1/flag",
        "already a prerequisite",
    );
}

#[test]
fn environments() {
    let mut missing = good();
    missing["environments"]
        .as_object_mut()
        .unwrap()
        .remove("staging");
    one_problem(missing, "/environments", "missing environment `staging`");

    let mut extra = good();
    extra["environments"]["qa/eu"] = env(json!([]));
    one_problem(
        extra,
        "/environments/qa~1eu",
        "unknown environment `qa/eu` (allowed: production, staging)",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let doc = json!({
        "key": "Bad Key",
        "kind": "number",
        "variants": {"one": 1, "two": "2"},
        "prerequisites": [{"flag": "ghost", "variants": ["x"]}],
        "environments": {
            "production": {
                "enabled": true, "off_variant": "zero",
                "default": {"rollout": [{"variant": "one", "weight": 70}, {"variant": "two", "weight": 40}]},
                "rules": [{"conditions": [{"attribute": "shoe", "op": "gt", "values": ["big"]}],
                           "serve": {"variant": "three"}}]
            },
            "dev": {"enabled": true, "off_variant": "one", "default": {"variant": "one"}}
        }
    });
    let problems = check(doc);
    let pointers: Vec<&str> = problems.iter().map(|p| p.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/key",
            "/variants/two",
            "/prerequisites/0/flag",
            "/environments",
            "/environments/dev",
            "/environments/production/off_variant",
            "/environments/production/default/rollout",
            "/environments/production/rules/0/conditions/0/attribute",
            "/environments/production/rules/0/conditions/0/values/0",
            "/environments/production/rules/0/serve/variant",
        ],
        "{problems:#?}"
    );
    assert!(problems[6].message.contains("above 100%"));
    assert_eq!(
        problems[0].to_string(),
        format!("/key: {}", problems[0].message)
    );
}

fn seg(doc: Value) -> Vec<Problem> {
    let segment: Segment = serde_json::from_value(doc).expect("test segment parses");
    let world = World::new();
    validate_segment(&segment, &world.attributes, &world.segments)
}

#[test]
fn segment_validation() {
    let good = json!({"key": "beta-users", "description": "d",
        "conditions": [{"attribute": "roles", "op": "contains", "values": ["beta"]},
                       {"attribute": "targetingKey", "op": "starts_with", "values": ["u-"]}]});
    assert_eq!(seg(good.clone()), vec![]);

    let problems = seg(with(good.clone(), "/key", json!("Beta Users")));
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].pointer, "/key");

    let problems = seg(with(good.clone(), "/conditions", json!([])));
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].pointer, "/conditions");

    let problems = seg(with(
        good.clone(),
        "/conditions/1",
        json!({"attribute": "segment", "op": "in_segment", "values": ["staff"]}),
    ));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].pointer, "/conditions/1/op");
    assert!(problems[0].message.contains("not allowed inside a segment"));

    let problems = seg(with(
        good,
        "/conditions/0",
        json!({"attribute": "shoe", "op": "semver_gt", "values": ["x"]}),
    ));
    let pointers: Vec<&str> = problems.iter().map(|p| p.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        ["/conditions/0/attribute", "/conditions/0/values/0"]
    );
}

fn graph(edges: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
    edges
        .iter()
        .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
        .collect()
}

#[test]
fn prerequisite_cycles() {
    assert_eq!(prerequisite_cycle(&HashMap::new()), None);
    assert_eq!(
        prerequisite_cycle(&graph(&[
            ("a", &["b", "ghost"]),
            ("b", &["c"]),
            ("c", &[]),
            ("d", &["b"])
        ])),
        None
    );
    assert_eq!(
        prerequisite_cycle(&graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        prerequisite_cycle(&graph(&[("x", &["y"]), ("y", &["y"])])),
        Some(vec!["y".into(), "y".into()])
    );
    // The path is the cycle itself, not the way into it.
    assert_eq!(
        prerequisite_cycle(&graph(&[("a", &["m"]), ("m", &["n"]), ("n", &["m"])])),
        Some(vec!["m".into(), "n".into(), "m".into()])
    );
}
