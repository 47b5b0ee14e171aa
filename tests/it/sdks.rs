//! The generated client SDKs (`make sdks`: TypeScript and Python from docs/openapi.json)
//! drive a real flow against the server — the caller, a resource type and a resource through
//! create, list, get, conditional update, a schema violation as a problem, delete, and an API
//! key used and revoked — so the published document is one real clients can be built from.

use neotenant_tests::{TestApp, tenant_with_admin};

/// Runs one flow script with the server's address, the tenant and an admin's token; returns
/// its one-line JSON summary.
async fn run_flow(
    program: &str,
    script: &str,
    app: &TestApp,
    slug: &str,
    token: &str,
) -> serde_json::Value {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python_path = format!(
        "{}:{}",
        root.join("sdks/build/python").display(),
        root.join(".devstack/sdk-tools/python-lib").display()
    );
    let out = tokio::process::Command::new(program)
        .arg(root.join(script))
        .env("BASE_URL", app.url(""))
        .env("TENANT", slug)
        .env("TOKEN", token)
        .env("PYTHONPATH", python_path)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program}: {e} (run `make sdks` first)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("a JSON summary");
    assert_eq!(summary["ok"], true, "{summary}");
    assert!(summary["checks"].as_u64().unwrap_or(0) >= 20, "{summary}");
    summary
}

#[tokio::test]
async fn the_typescript_and_python_sdks_drive_a_flow() {
    let app = TestApp::start().await;
    let (t, _member, boss, boss_id) = tenant_with_admin(&app).await;
    for (program, script, sdk) in [
        ("node", "tests/sdk/flow.mjs", "typescript"),
        ("python3", "tests/sdk/flow.py", "python"),
    ] {
        let summary = run_flow(program, script, &app, &t.slug, &boss).await;
        assert_eq!(summary["sdk"], sdk, "{summary}");
        assert_eq!(summary["user_id"], boss_id.as_str(), "{summary}");
    }
}
