//! Benchmarks single-flag evaluation from a `Snapshot`: a flag with three rules (a segment
//! among them) that falls through to a 25/75 rollout, plus the early-match case.
//!
//! Before criterion's runs it times 200,000 single evaluations one by one and prints their
//! p50/p99/p99.9 (criterion reports means and medians, not tails).
//!
//! Owns only measurement; it must never assert behaviour (the tests do that) or do I/O beyond
//! its reports.

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

/// Times `n` evaluations one by one (a different targeting key each) and prints percentiles.
fn tails(snap: &Snapshot, n: usize) {
    let contexts: Vec<Context> = (0..1024)
        .map(|i| {
            Context::new(format!("user-{i}"))
                .with("email", "alice@customer.example")
                .with("plan", "free")
                .with("app_version", "2.4.1")
                .with("roles", json!(["admin", "billing"]))
        })
        .collect();
    let mut ns: Vec<u128> = Vec::with_capacity(n);
    for i in 0..n {
        let ctx = &contexts[i % contexts.len()];
        let t = std::time::Instant::now();
        let _ = black_box(snap.evaluate(
            black_box("production"),
            black_box("new-checkout"),
            black_box(ctx),
        ));
        ns.push(t.elapsed().as_nanos());
    }
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)];
    println!(
        "evaluate/3_rules_then_rollout one by one ({n}): p50 {} ns, p99 {} ns, p99.9 {} ns",
        at(0.50),
        at(0.99),
        at(0.999)
    );
}

fn bench(c: &mut Criterion) {
    let snap = snapshot();
    tails(&snap, 200_000);
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
