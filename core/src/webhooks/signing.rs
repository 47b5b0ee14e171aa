//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): the signed content is
//! `{webhook-id}.{webhook-timestamp}.{body}`; `v1,` signatures are HMAC-SHA256 under the
//! base64 key of a `whsec_` secret, `v1a,` signatures Ed25519 under a `whsk_` signing key whose
//! public half (`whpk_`) the receiver holds. Several signatures travel space-separated in one
//! `webhook-signature` header (both secrets while one is being rotated out).
//!
//! Pure functions: no I/O, no storage; secrets arrive opened and leave only as signatures.

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use hmac::{KeyInit, Mac};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A fresh symmetric secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    format!("whsec_{}", B64.encode(crate::crypto::random::<32>()))
}

/// A fresh asymmetric key: (`whsk_` signing key, `whpk_` public key).
pub fn new_signing_key() -> (String, String) {
    let seed = crate::crypto::random::<32>();
    let key = SigningKey::from_bytes(&seed);
    (
        format!("whsk_{}", B64.encode(seed)),
        format!("whpk_{}", B64.encode(key.verifying_key().to_bytes())),
    )
}

/// The public key (`whpk_…`) of a `whsk_` signing key.
pub fn public_key(signing: &str) -> Option<String> {
    let key = signing_key(signing)?;
    Some(format!(
        "whpk_{}",
        B64.encode(key.verifying_key().to_bytes())
    ))
}

fn signing_key(signing: &str) -> Option<SigningKey> {
    let seed: [u8; 32] = B64
        .decode(signing.strip_prefix("whsk_")?)
        .ok()?
        .try_into()
        .ok()?;
    Some(SigningKey::from_bytes(&seed))
}

fn content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(id.len() + body.len() + 24);
    c.extend_from_slice(id.as_bytes());
    c.push(b'.');
    c.extend_from_slice(timestamp.to_string().as_bytes());
    c.push(b'.');
    c.extend_from_slice(body);
    c
}

/// The `v1,` signature of a message under a `whsec_` secret (`None` for a malformed secret).
pub fn sign_v1(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = B64.decode(secret.strip_prefix("whsec_")?).ok()?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).ok()?;
    mac.update(&content(id, timestamp, body));
    Some(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
}

/// The `v1a,` signature of a message under a `whsk_` signing key.
pub fn sign_v1a(signing: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = signing_key(signing)?;
    let sig = key.sign(&content(id, timestamp, body));
    Some(format!("v1a,{}", B64.encode(sig.to_bytes())))
}

/// The `webhook-signature` header for a message: one signature per secret and signing key.
pub fn header(
    secrets: &[&str],
    signing: Option<&str>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut sigs: Vec<String> = secrets
        .iter()
        .filter_map(|s| sign_v1(s, id, timestamp, body))
        .collect();
    if let Some(k) = signing.and_then(|k| sign_v1a(k, id, timestamp, body)) {
        sigs.push(k);
    }
    sigs.join(" ")
}

/// Whether any signature in a header verifies under a `whsec_` secret or a `whpk_` public key
/// (what a receiver does; used by tests and the delivery log's self-check).
pub fn verify(header: &str, key: &str, id: &str, timestamp: i64, body: &[u8]) -> bool {
    if key.starts_with("whsec_") {
        let Some(want) = sign_v1(key, id, timestamp, body) else {
            return false;
        };
        return header
            .split(' ')
            .any(|s| crate::crypto::ct_eq(s.as_bytes(), want.as_bytes()));
    }
    let Some(public) = key
        .strip_prefix("whpk_")
        .and_then(|k| B64.decode(k).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
    else {
        return false;
    };
    let msg = content(id, timestamp, body);
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1a,"))
        .any(|s| {
            B64.decode(s)
                .ok()
                .and_then(|b| <[u8; 64]>::try_from(b).ok())
                .is_some_and(|b| {
                    public
                        .verify(&msg, &ed25519_dalek::Signature::from_bytes(&b))
                        .is_ok()
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_specifications_example() {
        // The example of the Standard Webhooks specification and its reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        let sig = sign_v1(secret, id, 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn both_secrets_sign_during_rotation_and_each_verifies() {
        let (a, b) = (new_secret(), new_secret());
        let (sk, pk) = new_signing_key();
        let h = header(&[&a, &b], Some(&sk), "msg_1", 1700000000, b"{}");
        assert_eq!(h.split(' ').count(), 3);
        assert!(verify(&h, &a, "msg_1", 1700000000, b"{}"));
        assert!(verify(&h, &b, "msg_1", 1700000000, b"{}"));
        assert!(verify(&h, &pk, "msg_1", 1700000000, b"{}"));
        assert_eq!(public_key(&sk).unwrap(), pk);
        // Any change of id, time or body breaks every signature.
        assert!(!verify(&h, &a, "msg_2", 1700000000, b"{}"));
        assert!(!verify(&h, &a, "msg_1", 1700000001, b"{}"));
        assert!(!verify(&h, &pk, "msg_1", 1700000000, b"{ }"));
        assert!(!verify(&h, &new_secret(), "msg_1", 1700000000, b"{}"));
    }

    #[test]
    fn malformed_keys_sign_nothing() {
        assert_eq!(sign_v1("nope", "m", 1, b""), None);
        assert_eq!(sign_v1("whsec_***", "m", 1, b""), None);
        assert_eq!(sign_v1a("whsk_AAAA", "m", 1, b""), None);
        assert!(!verify("v1,abc", "garbage", "m", 1, b""));
    }
}
