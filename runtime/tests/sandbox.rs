//! The runtime against the first-party components in `plugins/dist` (built by
//! `make plugins`): world checks, the example plugins, and every sandbox limit.

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
    fn keys(&self, prefix: String, limit: u32) -> BoxFuture<'static, Result<Vec<String>, String>> {
        let mut k: Vec<String> = self
            .0
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        k.sort();
        k.truncate(limit as usize);
        Box::pin(async move { Ok(k) })
    }
}

fn dist(name: &str) -> Vec<u8> {
    std::fs::read(dist_dir().join(format!("{name}.wasm")))
        .unwrap_or_else(|e| panic!("{name}.wasm (run `make plugins`): {e}"))
}

fn runtime(pool: u32) -> (Arc<Runtime>, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    let limits = Limits {
        fuel: 200_000_000,
        timeout: Duration::from_millis(1500),
        ..Limits::default()
    };
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: dir.0.clone(),
        pool_instances: pool,
        limits,
    })
    .unwrap();
    (rt, dir)
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!("neotenant-rt-{}", uuid_like()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn uuid_like() -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }
}

fn ctx(grants: Grants, kv: Arc<MemKv>) -> CallCtx {
    CallCtx {
        tenant: "t1".into(),
        plugin: "p".into(),
        grants: Arc::new(grants),
        config: Arc::new(HashMap::new()),
        kv,
    }
}

fn all_grants() -> Grants {
    Grants {
        logging: true,
        kv: true,
        events: true,
        http: vec![],
    }
}

#[tokio::test]
async fn uploads_are_checked_against_the_worlds() {
    let (rt, _d) = runtime(0);
    assert!(matches!(
        rt.compile(b"hello world"),
        Err(LoadError::NotComponent(_))
    ));
    // A core module (the smallest valid one) is refused with a hint.
    let core = b"\0asm\x01\0\0\0";
    let e = rt.compile(core).unwrap_err();
    assert!(e.to_string().contains("core module"), "{e}");
    // A truncated component does not compile.
    let mut t = dist("ticket");
    t.truncate(t.len() / 2);
    assert!(matches!(rt.compile(&t), Err(LoadError::Invalid(_))));
    // A minimal valid component that exports nothing matches no world.
    let empty = b"\0asm\x0d\0\x01\0";
    let e = rt.compile(empty).unwrap_err();
    assert!(matches!(e, LoadError::World(_)), "{e}");

    let ticket = rt.compile(&dist("ticket")).unwrap();
    assert_eq!(ticket.kind, Kind::ResourceType);
    assert!(ticket.imports.contains(&"kv".to_string()));
    assert!(!ticket.imports.contains(&"http".to_string()));
    let hook = rt.compile(&dist("webhook")).unwrap();
    assert_eq!(hook.kind, Kind::Integration);
    assert!(hook.imports.contains(&"http".to_string()));
    assert_eq!(hook.hash, content_hash(&dist("webhook")));
}

#[tokio::test]
async fn compiled_components_are_cached_on_disk_by_hash() {
    let (rt, d) = runtime(0);
    let bytes = dist("ticket");
    let hash = content_hash(&bytes);
    assert!(rt.cached(&hash).is_none());
    rt.compile(&bytes).unwrap();
    // A second runtime (another process, a restart) loads it without compiling.
    let rt2 = Runtime::new(RuntimeConfig {
        cache_dir: d.0.clone(),
        pool_instances: 0,
        limits: Limits::default(),
    })
    .unwrap();
    let p = rt2.cached(&hash).expect("loaded from the disk cache");
    assert_eq!(p.kind, Kind::ResourceType);
    assert!(rt2.cached("../../etc/passwd").is_none());
}

#[tokio::test]
async fn the_ticket_plugin_describes_validates_hooks_and_acts() {
    let (rt, _d) = runtime(8);
    let p = rt.compile(&dist("ticket")).unwrap();
    let kv = Arc::new(MemKv::default());
    let t = rt
        .describe(&p, ctx(all_grants(), kv.clone()))
        .await
        .unwrap();
    assert_eq!(t.name, "ticket");
    assert_eq!(t.schema["type"], "object");
    assert_eq!(t.actions[0].0, "close");

    let (r, _) = rt
        .validate(
            &p,
            ctx(all_grants(), kv.clone()),
            &json!({"title": "  Printer  ", "status": "OPEN"}),
        )
        .await
        .unwrap();
    assert_eq!(
        r.unwrap(),
        json!({"title": "Printer", "status": "open", "priority": 3})
    );
    let (r, _) = rt
        .validate(
            &p,
            ctx(all_grants(), kv.clone()),
            &json!({"title": "x", "status": "closed"}),
        )
        .await
        .unwrap();
    assert_eq!(r.unwrap_err()[0].pointer, "/resolution");

    let change = Change {
        operation: Operation::Delete,
        type_name: "ticket".into(),
        resource_id: "res_1".into(),
        before: Some(json!({"title": "x", "status": "open"})),
        after: json!({"title": "x", "status": "open"}),
        actor: "u".into(),
    };
    let (veto, _) = rt
        .hook(&p, ctx(all_grants(), kv.clone()), false, &change)
        .await
        .unwrap();
    assert!(veto.unwrap_err().contains("cannot be deleted"));
    let create = Change {
        operation: Operation::Create,
        before: None,
        ..change
    };
    rt.hook(&p, ctx(all_grants(), kv.clone()), true, &create)
        .await
        .unwrap()
        .0
        .unwrap();
    rt.hook(&p, ctx(all_grants(), kv.clone()), true, &create)
        .await
        .unwrap()
        .0
        .unwrap();
    assert_eq!(kv.0.lock().unwrap().get("created").unwrap(), b"2");

    // Without the kv grant the hook's storage call fails, and the hook reports it.
    let no_kv = Grants {
        kv: false,
        ..all_grants()
    };
    let (r, _) = rt
        .hook(&p, ctx(no_kv, kv.clone()), true, &create)
        .await
        .unwrap();
    assert!(r.unwrap_err().contains("not granted"));

    let (r, fx) = rt
        .action(
            &p,
            ctx(all_grants(), kv.clone()),
            "close",
            "res_1",
            &json!({"title": "x", "status": "open"}),
            &json!({"resolution": " fixed "}),
        )
        .await
        .unwrap();
    let r = r.unwrap();
    assert_eq!(r.data.unwrap()["status"], "closed");
    assert_eq!(r.output, json!({"closed": true}));
    assert_eq!(
        fx.emitted,
        vec![Emitted {
            kind: "closed".into(),
            subject: "res_1".into(),
            data: json!({"resolution": "fixed"})
        }]
    );
    // Without the events grant the emit fails and so does the action.
    let no_events = Grants {
        events: false,
        ..all_grants()
    };
    let (r, fx) = rt
        .action(
            &p,
            ctx(no_events, kv.clone()),
            "close",
            "res_1",
            &json!({}),
            &json!({"resolution": "x"}),
        )
        .await
        .unwrap();
    assert!(r.unwrap_err().contains("not granted"));
    assert!(fx.emitted.is_empty());
}

async fn hostile(
    rt: &Runtime,
    p: &Plugin,
    data: serde_json::Value,
) -> Result<serde_json::Value, CallError> {
    let g = Grants {
        http: vec!["127.0.0.1".into()],
        ..all_grants()
    };
    rt.validate(p, ctx(g, Arc::new(MemKv::default())), &data)
        .await
        .map(|(r, _)| r.unwrap())
}

#[tokio::test]
async fn every_limit_stops_only_the_call_that_broke_it() {
    for pool in [0, 4] {
        let (rt, _d) = runtime(pool);
        let p = rt.compile(&dist("hostile")).unwrap();
        let ok = json!({"mode": "ok"});
        assert_eq!(hostile(&rt, &p, ok.clone()).await.unwrap(), ok);

        let started = Instant::now();
        assert_eq!(
            hostile(&rt, &p, json!({"mode": "loop"})).await.unwrap_err(),
            CallError::Cpu
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            hostile(&rt, &p, json!({"mode": "alloc"}))
                .await
                .unwrap_err(),
            CallError::Memory
        );
        assert_eq!(
            hostile(&rt, &p, json!({"mode": "recurse"}))
                .await
                .unwrap_err(),
            CallError::Stack
        );
        assert!(matches!(
            hostile(&rt, &p, json!({"mode": "trap"})).await.unwrap_err(),
            CallError::Trap(_)
        ));
        assert!(matches!(
            hostile(&rt, &p, json!({"mode": "garbage"}))
                .await
                .unwrap_err(),
            CallError::Output(_)
        ));
        let huge = hostile(&rt, &p, json!({"mode": "huge"})).await;
        assert!(
            matches!(huge, Err(CallError::Output(ref m)) if m.contains("exceeds")),
            "{huge:?}"
        );
        // Log lines beyond the limit are dropped; the call itself succeeds if it finishes.
        let flood = hostile(&rt, &p, json!({"mode": "log-flood"})).await;
        assert!(matches!(flood, Ok(_) | Err(CallError::Cpu)), "{flood:?}");

        // A slow host call is cut by the wall clock.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://127.0.0.1:{}/slow",
            listener.local_addr().unwrap().port()
        );
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (s, _) = listener.accept().await.unwrap();
                held.push(s);
            }
        });
        let started = Instant::now();
        let e = hostile(&rt, &p, json!({"mode": "slow", "url": url}))
            .await
            .unwrap_err();
        assert!(matches!(e, CallError::Timeout(_)), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        hold.abort();

        // After all that, the same component still answers.
        assert_eq!(hostile(&rt, &p, ok.clone()).await.unwrap(), ok);
    }
}

#[tokio::test]
async fn a_looping_plugin_does_not_stall_other_calls() {
    let (rt, _d) = runtime(8);
    let bad = rt.compile(&dist("hostile")).unwrap();
    let good = rt.compile(&dist("ticket")).unwrap();
    let rt2 = rt.clone();
    let bad2 = bad.clone();
    let looping = tokio::spawn(async move {
        let mut errors = 0;
        for _ in 0..3 {
            if hostile(&rt2, &bad2, json!({"mode": "loop"})).await.is_err() {
                errors += 1;
            }
        }
        errors
    });
    for _ in 0..20 {
        let (r, _) = rt
            .validate(
                &good,
                ctx(all_grants(), Arc::new(MemKv::default())),
                &json!({"title": "a"}),
            )
            .await
            .unwrap();
        assert!(r.is_ok());
    }
    assert_eq!(looping.await.unwrap(), 3);
}

/// The operator's rule in a test: no loopback literal, no name resolves.
struct NoInside;

impl NetGuard for NoInside {
    fn permits(&self, url: &url::Url) -> bool {
        !matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
    }
    fn resolver(&self) -> Arc<dyn reqwest::dns::Resolve> {
        struct Refuse;
        impl reqwest::dns::Resolve for Refuse {
            fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
                Box::pin(async { Err("inside".into()) })
            }
        }
        Arc::new(Refuse)
    }
}

/// Runs the hostile plugin's fetch of `url` with `grant` approved; whether `listener` saw a
/// connection.
async fn fetch_connects(
    rt: &Arc<Runtime>,
    grant: &str,
    url: &str,
    listener: &tokio::net::TcpListener,
) -> bool {
    let p = rt.compile(&dist("hostile")).unwrap();
    let g = Grants {
        http: vec![grant.to_string()],
        ..all_grants()
    };
    let (rt, url) = (rt.clone(), url.to_string());
    let call = tokio::spawn(async move {
        rt.validate(
            &p,
            ctx(g, Arc::new(MemKv::default())),
            &json!({"mode": "slow", "url": url}),
        )
        .await
    });
    let connected = tokio::time::timeout(Duration::from_millis(1200), listener.accept())
        .await
        .is_ok();
    call.abort();
    connected
}

#[tokio::test]
async fn outbound_http_reaches_only_approved_hosts_the_operator_permits() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}/x");
    let (rt, _d) = runtime(0);
    // Approved, no operator rule: it connects (so the checks below can see a refusal).
    assert!(fetch_connects(&rt, &addr.to_string(), &url, &listener).await);
    // Not approved by the tenant: no connection.
    assert!(!fetch_connects(&rt, "127.0.0.1:1", &url, &listener).await);
    // Approved by the tenant but inside the platform's network: no connection, by address
    // literal or by name.
    let dir = tempdir::Dir::new();
    let guarded = Runtime::guarded(
        RuntimeConfig {
            cache_dir: dir.0.clone(),
            pool_instances: 0,
            limits: Limits {
                timeout: Duration::from_millis(1500),
                ..Limits::default()
            },
        },
        Some(Arc::new(NoInside)),
    )
    .unwrap();
    assert!(!fetch_connects(&guarded, &addr.to_string(), &url, &listener).await);
    let by_name = format!("http://localhost:{}/x", addr.port());
    assert!(
        !fetch_connects(
            &guarded,
            &format!("localhost:{}", addr.port()),
            &by_name,
            &listener
        )
        .await
    );
}

#[tokio::test]
async fn a_full_pool_is_the_hosts_limit_not_the_plugins_fault() {
    let (rt, _d) = runtime(1);
    let p = rt.compile(&dist("hostile")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/slow",
        listener.local_addr().unwrap().port()
    );
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (s, _) = listener.accept().await.unwrap();
            held.push(s);
        }
    });
    // One call holds the only slot while it waits on a host call...
    let (rt2, p2) = (rt.clone(), p.clone());
    let slow =
        tokio::spawn(async move { hostile(&rt2, &p2, json!({"mode": "slow", "url": url})).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...so another is refused as unavailable, which does not count against the plugin.
    let e = hostile(&rt, &p, json!({"mode": "ok"})).await.unwrap_err();
    assert!(matches!(e, CallError::Unavailable(_)), "{e:?}");
    assert!(!e.is_plugin_fault());
    assert!(matches!(slow.await.unwrap(), Err(CallError::Timeout(_))));
    assert!(hostile(&rt, &p, json!({"mode": "ok"})).await.is_ok());
    hold.abort();
}
