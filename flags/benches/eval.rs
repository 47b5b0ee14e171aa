//! Benchmarks single-flag evaluation from a `Snapshot`: a flag with three rules (a segment
//! among them) that falls through to a 25/75 rollout, plus the early-match case.
//!
//! Owns only measurement; it must never assert behaviour (the tests do that) or do I/O beyond
//! criterion's own reports.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use neotenant_flags::{Context, Flag, Segment, Snapshot};
use serde_json::json;

fn snapshot() -> Snapshot {
    let flag: Flag = serde_json::from_value(json!({
        "key": "new-checkout",
        "kind": "string",
        "variants": {"on": "new", "off": "old"},
        "environments": {"production": {
            "enabled": true,
            "off_variant": "off",
            "rules": [
                {"conditions": [{"attribute": "email", "op": "ends_with", "values": ["@internal.example"]}],
                 "serve": {"variant": "on"}},
                {"conditions": [{"attribute": "plan", "op": "in", "values": ["enterprise", "business"]},
                                {"attribute": "app_version", "op": "semver_gt", "values": ["2.3.0"]}],
                 "serve": {"variant": "on"}},
                {"conditions": [{"attribute": "segment", "op": "in_segment", "values": ["beta"]}],
                 "serve": {"rollout": [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]}}
            ],
            "default": {"rollout": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}]}
        }}
    }))
    .expect("bench flag parses");
    let beta: Segment = serde_json::from_value(json!({
        "key": "beta",
        "conditions": [{"attribute": "roles", "op": "in", "values": ["beta-tester"]}]
    }))
    .expect("bench segment parses");
    Snapshot::new([flag], [beta])
}

fn bench(c: &mut Criterion) {
    let snap = snapshot();
    let fallthrough = Context::new("3f2b1c9e-8d4a-4e6f-9b7a-1c2d3e4f5a6b")
        .with("email", "alice@customer.example")
        .with("plan", "free")
        .with("app_version", "2.4.1")
        .with("roles", json!(["admin", "billing"]));
    c.bench_function("evaluate/3_rules_then_rollout", |b| {
        b.iter(|| {
            snap.evaluate(
                black_box("production"),
                black_box("new-checkout"),
                black_box(&fallthrough),
            )
        })
    });
    let first = Context::new("u-1").with("email", "bob@internal.example");
    c.bench_function("evaluate/first_rule_match", |b| {
        b.iter(|| {
            snap.evaluate(
                black_box("production"),
                black_box("new-checkout"),
                black_box(&first),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
