//! Plugin calls in a release build, with the first-party components (`make plugins`):
//! - instantiate (from the pre-instantiated component) + `validate` call of the `ticket`
//!   plugin, with the pooling allocator and allocating on demand, p50/p99;
//! - a before-change hook call (the same path with a larger argument);
//! - compiling a component at upload, and loading it from the compiled cache;
//! - memory per idle installed plugin: 200 distinct components loaded and ready to
//!   instantiate, resident memory before and after.
//!
//! Plain timing harness.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use neotenant_runtime::*;
use serde_json::json;

#[derive(Default)]
struct MemKv(Mutex<HashMap<String, Vec<u8>>>);

impl Kv for MemKv {
    fn get(&self, key: String) -> BoxFuture<'static, Result<Option<Vec<u8>>, String>> {
        let v = self.0.lock().unwrap().get(&key).cloned();
        Box::pin(async move { Ok(v) })
    }
    fn set(&self, key: String, value: Vec<u8>) -> BoxFuture<'static, Result<(), String>> {
        self.0.lock().unwrap().insert(key, value);
        Box::pin(async { Ok(()) })
    }
    fn delete(&self, key: String) -> BoxFuture<'static, Result<(), String>> {
        self.0.lock().unwrap().remove(&key);
        Box::pin(async { Ok(()) })
    }
    fn keys(&self, _: String, _: u32) -> BoxFuture<'static, Result<Vec<String>, String>> {
        Box::pin(async { Ok(vec![]) })
    }
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{name:<58} n={:<5} p50 {:>9.2?}  p99 {:>9.2?}",
        samples.len(),
        at(0.5),
        at(0.99)
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The same component with a custom section appended: another content hash.
fn variant(wasm: &[u8], i: usize) -> Vec<u8> {
    let name = b"bench";
    let payload = i.to_string();
    let mut out = wasm.to_vec();
    out.extend_from_slice(&[0, (1 + name.len() + payload.len()) as u8, name.len() as u8]);
    out.extend_from_slice(name);
    out.extend_from_slice(payload.as_bytes());
    out
}

fn runtime(dir: &std::path::Path, pool: u32) -> Arc<Runtime> {
    Runtime::new(RuntimeConfig {
        cache_dir: dir.to_path_buf(),
        pool_instances: pool,
        limits: Limits::default(),
    })
    .unwrap()
}

fn ctx(kv: Arc<MemKv>) -> CallCtx {
    CallCtx {
        tenant: "bench".into(),
        plugin: "ticket".into(),
        grants: Arc::new(Grants {
            logging: true,
            kv: true,
            events: true,
            http: vec![],
        }),
        config: Arc::new(HashMap::new()),
        kv,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let ticket = std::fs::read(dist_dir().join("ticket.wasm")).expect("run `make plugins`");
    let dir = std::env::temp_dir().join(format!("neotenant-bench-plugins-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "plugin runtime (release, wasmtime 48), ticket.wasm = {} KiB",
        ticket.len() / 1024
    );

    let started = Instant::now();
    let rt = runtime(&dir, 100);
    let p = rt.compile(&ticket).unwrap();
    println!(
        "{:<58} {:>9.2?}",
        "compile + type-check at upload (ticket)",
        started.elapsed()
    );
    let started = Instant::now();
    let cold = runtime(&dir, 0);
    cold.cached(&p.hash).unwrap();
    println!(
        "{:<58} {:>9.2?}",
        "load from the compiled cache (new instance)",
        started.elapsed()
    );

    let kv = Arc::new(MemKv::default());
    let data = json!({"title": "  Printer on fire  ", "status": "OPEN", "body": "x".repeat(200)});
    for (name, r) in [("pooling allocator", &rt), ("on-demand allocation", &cold)] {
        let p = r.cached(&p.hash).unwrap();
        for _ in 0..200 {
            r.validate(&p, ctx(kv.clone()), &data)
                .await
                .unwrap()
                .0
                .unwrap();
        }
        let mut samples = Vec::with_capacity(3000);
        for _ in 0..3000 {
            let t = Instant::now();
            r.validate(&p, ctx(kv.clone()), &data)
                .await
                .unwrap()
                .0
                .unwrap();
            samples.push(t.elapsed());
        }
        report(&format!("instantiate + validate call ({name})"), samples);
    }
    let change = Change {
        operation: Operation::Update,
        type_name: "ticket".into(),
        resource_id: "res_0192".into(),
        before: Some(data.clone()),
        after: data.clone(),
        actor: "user".into(),
    };
    let mut samples = Vec::with_capacity(3000);
    for _ in 0..3000 {
        let t = Instant::now();
        rt.hook(&p, ctx(kv.clone()), false, &change)
            .await
            .unwrap()
            .0
            .unwrap();
        samples.push(t.elapsed());
    }
    report("instantiate + before-change hook (pooling)", samples);

    // Memory per idle installed plugin: distinct components compiled, loaded, pre-instantiated.
    let n = 200;
    let mem_rt = runtime(&dir.join("mem"), 0);
    let variants: Vec<Vec<u8>> = (0..n).map(|i| variant(&ticket, i)).collect();
    let before = rss_kib();
    for v in &variants {
        mem_rt.compile(v).unwrap();
    }
    let compiled = rss_kib();
    // A fresh runtime loading the same n from the disk cache: what an idle install costs
    // after a restart.
    let loaded_rt = runtime(&dir.join("mem"), 0);
    let before_load = rss_kib();
    for v in &variants {
        loaded_rt.cached(&content_hash(v)).unwrap();
    }
    let after_load = rss_kib();
    let disk: u64 = std::fs::read_dir(dir.join("mem"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter_map(|f| f.metadata().ok().map(|m| m.len()))
        .sum();
    println!(
        "memory per idle installed plugin ({n} loaded from cache): {:.0} KiB resident \
         (compiling them: +{} KiB total); compiled code on disk {:.0} KiB each",
        (after_load.saturating_sub(before_load)) as f64 / n as f64,
        compiled.saturating_sub(before),
        disk as f64 / 1024.0 / n as f64,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
