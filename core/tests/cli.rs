//! The binary's start-up contract: a bad setting stops it with a message naming the setting.

use std::process::Command;

fn neotenant(envs: &[(&str, &str)]) -> (bool, String) {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../neotenant.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_neotenant"))
        .args(["--config", config, "check-config"])
        .envs(envs.iter().copied())
        .output()
        .expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn valid_configuration_is_printed_without_secrets() {
    let (ok, out) = neotenant(&[]);
    assert!(ok, "{out}");
    assert!(out.contains("max_body_bytes"));
    assert!(
        !out.contains("neotenant-dev"),
        "database password leaked: {out}"
    );
    assert!(
        !out.contains("dev-platform-token"),
        "admin token leaked: {out}"
    );
}

#[test]
fn bad_settings_stop_start_up_naming_the_setting() {
    for (var, value, named) in [
        (
            "NEOTENANT_SERVER__MAX_BODY_BYTES",
            "5",
            "server.max_body_bytes",
        ),
        ("NEOTENANT_SERVER__BIND", "nowhere", "server.bind"),
        (
            "NEOTENANT_DATABASE__POOL_MAX_SIZE",
            "0",
            "database.pool_max_size",
        ),
        ("NEOTENANT_ADMIN__TOKEN", "short", "admin.token"),
        ("NEOTENANT_LOG__FORMAT", "xml", "log.format"),
        ("NEOTENANT_SERVER__NO_SUCH_KEY", "1", "no_such_key"),
    ] {
        let (ok, out) = neotenant(&[(var, value)]);
        assert!(!ok, "{var}={value} must stop start-up");
        assert!(
            out.contains(named),
            "{var}={value}: message must name {named}: {out}"
        );
    }
    let (ok, out) = {
        let out = Command::new(env!("CARGO_BIN_EXE_neotenant"))
            .args(["--config", "/nonexistent/neotenant.toml", "check-config"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(!ok);
    assert!(out.contains("/nonexistent/neotenant.toml"), "{out}");
}
