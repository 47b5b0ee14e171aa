//! `neotenant audit verify|seal` against the local services (`make up`): the operator's view
//! of a tenant's chain, and its exit code when the chain is broken.

use std::process::Command;

use diesel_async::SimpleAsyncConnection;

fn neotenant(args: &[&str]) -> (bool, String) {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../neotenant.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_neotenant"))
        .args(["--config", config])
        .args(args)
        .env("NEOTENANT_LOG__LEVEL", "warn")
        .output()
        .expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn verify_reports_the_chain_and_fails_when_it_is_broken() {
    let slug = format!("cli-{:x}", rand::random::<u32>());
    // On a fresh machine nothing exists yet: the operator migrates first.
    let (ok, out) = neotenant(&["migrate"]);
    assert!(ok, "{out}");
    let (ok, out) = neotenant(&[
        "tenant",
        "create",
        &slug,
        "--name",
        "CLI audit",
        "--region",
        "eu",
        "--identity",
        "local",
    ]);
    assert!(ok, "{out}");

    // Three audited changes, written the way every module writes them.
    let config = neotenant::config::Config::load(
        Some(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../neotenant.toml"
        ))),
        std::env::vars(),
    )
    .unwrap();
    let state = neotenant::app::AppState::connect(config).await.unwrap();
    let tenant = neotenant::tenancy::resolve::resolve(&state.tenancy, &slug)
        .await
        .unwrap();
    let actor = neotenant::audit::Actor::system(&state.audit_recent, tenant.tenant.id, &tenant.db);
    for i in 0..3 {
        let mut tx = tenant.db.begin().await.unwrap();
        let r = neotenant::audit::record(
            tx.conn(),
            &actor,
            neotenant::audit::Change {
                action: "cli.tested",
                target_type: "tenant",
                target_id: None,
                data: serde_json::json!({ "n": i }),
            },
        )
        .await;
        tx.finish(r).await.unwrap();
    }

    let (ok, out) = neotenant(&["audit", "seal", "--tenant", &slug]);
    assert!(ok && out.contains("sealed 3 entries"), "{out}");
    let (ok, out) = neotenant(&["audit", "verify", "--tenant", &slug]);
    assert!(ok, "{out}");
    let report: serde_json::Value = serde_json::from_str(
        out.lines()
            .take_while(|l| !l.starts_with("neotenant:"))
            .collect::<Vec<_>>()
            .join("\n")
            .trim(),
    )
    .unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["entries"], 3);

    // Edited behind the platform's back: the command says where, and exits non-zero.
    let mut tx = tenant.db.begin().await.unwrap();
    tx.conn()
        .batch_execute("UPDATE audit_log SET data = '{\"n\": 42}' WHERE seq = 2")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (ok, out) = neotenant(&["audit", "verify", "--tenant", &slug]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("\"seq\": 2") && out.contains("the audit chain is broken"),
        "{out}"
    );

    let (ok, out) = neotenant(&["tenant", "delete", &slug, "--confirm", &slug]);
    assert!(ok, "{out}");
}
