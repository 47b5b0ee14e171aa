//! An installation's secrets at rest: stored as `{"sealed": "nts1:…", "names": [...]}` (the
//! map sealed by `crypto` for this tenant and installation, the names in clear so views can
//! list them); opened only to hand them to the plugin's `config` interface. A plain JSON map
//! (stored before sealing existed) is still read, and sealed by
//! `neotenant secrets rotate-master`.
//!
//! Never logs, audits or returns a secret's value.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::crypto::Keyring;

fn context(tenant: Uuid, install: &str) -> String {
    format!("tenant/{tenant}/plugin/{install}/secrets")
}

/// The stored form of an installation's secrets.
pub fn seal(
    keyring: &Keyring,
    tenant: Uuid,
    install: &str,
    secrets: &BTreeMap<String, String>,
) -> Value {
    if secrets.is_empty() {
        return json!({});
    }
    let plain = serde_json::to_string(secrets).expect("a map of strings serialises");
    json!({
        "sealed": keyring.seal_str(&context(tenant, install), &plain),
        "names": secrets.keys().collect::<Vec<_>>(),
    })
}

/// The names of the secrets set.
pub fn names(stored: &Value) -> Vec<String> {
    match stored.get("sealed") {
        Some(_) => stored["names"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        None => stored
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default(),
    }
}

/// The secrets in clear, for the plugin; an unopenable value gives none (and is logged by
/// its installation, not its content).
pub fn open(
    keyring: &Keyring,
    tenant: Uuid,
    install: &str,
    stored: &Value,
) -> HashMap<String, String> {
    match stored.get("sealed").and_then(Value::as_str) {
        Some(sealed) => match keyring.open_str(&context(tenant, install), sealed) {
            Ok(plain) => serde_json::from_str(&plain).unwrap_or_default(),
            Err(e) => {
                tracing::error!(plugin = install, error = %e, "an installation's secrets cannot be opened");
                HashMap::new()
            }
        },
        None => serde_json::from_value(stored.clone()).unwrap_or_default(),
    }
}

/// The stored form under the active master key: a legacy plain map sealed, a value sealed by
/// a retired key re-wrapped; `None` when nothing changes.
pub fn reseal(
    keyring: &Keyring,
    tenant: Uuid,
    install: &str,
    stored: &Value,
) -> Result<Option<Value>, crate::crypto::OpenError> {
    match stored.get("sealed").and_then(Value::as_str) {
        Some(sealed) => Ok(keyring
            .rewrap(&context(tenant, install), sealed)?
            .map(|s| json!({"sealed": s, "names": stored["names"]}))),
        None => {
            let plain: BTreeMap<String, String> =
                serde_json::from_value(stored.clone()).unwrap_or_default();
            Ok((!plain.is_empty()).then(|| seal(keyring, tenant, install, &plain)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_keep_names_and_open_only_for_their_installation() {
        let k = Keyring::new(("k1", [7u8; 32]), []);
        let t = Uuid::from_u128(5);
        let secrets: BTreeMap<String, String> =
            [("token".to_string(), "s3cr3t".to_string())].into();
        let stored = seal(&k, t, "crm", &secrets);
        assert!(!stored.to_string().contains("s3cr3t"));
        assert_eq!(names(&stored), ["token"]);
        assert_eq!(open(&k, t, "crm", &stored)["token"], "s3cr3t");
        assert!(open(&k, t, "other", &stored).is_empty());
        assert!(open(&k, Uuid::from_u128(6), "crm", &stored).is_empty());
        // A legacy plain map is read, and sealed on reseal.
        let legacy = json!({"token": "old"});
        assert_eq!(open(&k, t, "crm", &legacy)["token"], "old");
        let moved = reseal(&k, t, "crm", &legacy).unwrap().unwrap();
        assert_eq!(open(&k, t, "crm", &moved)["token"], "old");
        assert_eq!(reseal(&k, t, "crm", &moved).unwrap(), None);
        assert_eq!(seal(&k, t, "crm", &BTreeMap::new()), json!({}));
    }
}
