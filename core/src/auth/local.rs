//! The `local` identity mode: tenants without Keycloak. Passwords are argon2id hashes in the
//! tenant's own `credentials` table; access tokens are EdDSA (Ed25519) JWTs signed by the
//! platform's key and published as a JWKS; refresh tokens are opaque, kept hashed in Redis, and
//! rotate on every use.
//!
//! Owns the local issuer, the signing key and the password and refresh-token rules.
//! **Invariants:** a local token names its tenant in `iss` (`urn:neotenant:tenant:<slug>`), so
//! it is refused by every other tenant; a refresh token works once; password checks run off the
//! async runtime and take the same time whether or not the user exists. Never logs a password
//! or a token.

use std::sync::Arc;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde_json::{Value, json};
use sha2::Digest;

/// Lifetime of a local access token.
pub const ACCESS_TTL_SECS: i64 = 900;
/// Lifetime of a local refresh token.
pub const REFRESH_TTL_SECS: u64 = 30 * 24 * 3600;

/// The issuer of a local tenant's tokens.
pub fn issuer(slug: &str) -> String {
    format!("urn:neotenant:tenant:{slug}")
}

/// The platform's Ed25519 key for local tokens.
pub struct LocalKeys {
    signing: SigningKey,
    verifying: VerifyingKey,
    pub kid: String,
}

impl LocalKeys {
    /// From the 32-byte seed in `auth.local_signing_seed` (64 hex digits).
    pub fn from_seed_hex(seed_hex: &str) -> Option<Self> {
        let bytes: [u8; 32] = hex::decode(seed_hex).ok()?.try_into().ok()?;
        let signing = SigningKey::from_bytes(&bytes);
        let verifying = signing.verifying_key();
        let kid = hex::encode(&sha2::Sha256::digest(verifying.as_bytes())[..8]);
        Some(Self {
            signing,
            verifying,
            kid,
        })
    }

    /// The public key as a JWKS.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
            "kid": self.kid, "x": B64.encode(self.verifying.as_bytes()),
        }]})
    }

    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            B64.encode(serde_json::to_vec(&header).unwrap_or_default()),
            B64.encode(serde_json::to_vec(claims).unwrap_or_default())
        );
        let signature = self.signing.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(signature.to_bytes()))
    }

    /// Whether `signature` signs `message` under the key `kid`.
    pub fn verify(&self, kid: &str, message: &[u8], signature: &[u8]) -> bool {
        kid == self.kid
            && Signature::from_slice(signature)
                .map(|s| self.verifying.verify(message, &s).is_ok())
                .unwrap_or(false)
    }
}

/// What a local access token says.
pub struct LocalClaims<'a> {
    pub slug: &'a str,
    pub audience: &'a str,
    pub subject: &'a str,
    pub session_id: &'a str,
    pub username: Option<&'a str>,
    pub email: Option<&'a str>,
}

pub fn access_token(keys: &LocalKeys, c: &LocalClaims<'_>, now: i64) -> String {
    keys.sign(&json!({
        "iss": issuer(c.slug), "aud": [c.audience], "sub": c.subject, "typ": "Bearer",
        "azp": "neotenant-local", "sid": c.session_id, "tenant": c.slug,
        "iat": now, "nbf": now, "exp": now + ACCESS_TTL_SECS,
        "preferred_username": c.username, "email": c.email,
    }))
}

/// The rule every local password meets (set by an operator or through a reset): 12-256
/// characters, none of them NUL. `Err` carries the message for a field error.
pub fn check_password_rule(password: &str) -> Result<(), &'static str> {
    const MESSAGE: &str = "must be 12-256 characters, without NUL";
    if (12..=256).contains(&password.chars().count()) && !password.contains('\0') {
        Ok(())
    } else {
        Err(MESSAGE)
    }
}

/// An argon2id PHC string for `password` (CPU-heavy: call off the async runtime).
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks `password` against `stored`; with no stored hash it still does the work of one check,
/// so that timing does not reveal whether the user exists.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    static DUMMY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| hash_password("dummy password for timing").unwrap_or_default());
    let hash = stored.unwrap_or(DUMMY.as_str());
    let ok = PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false);
    ok && stored.is_some()
}

/// A fresh opaque refresh token and the digest it is stored under.
pub fn new_refresh_token() -> (String, String) {
    use rand::Rng;
    let token: String = {
        let mut rng = rand::rng();
        (0..48)
            .map(|_| rng.sample(rand::distr::Alphanumeric) as char)
            .collect()
    };
    let digest = refresh_digest(&token);
    (format!("ntr_{token}"), digest)
}

pub fn refresh_digest(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(
        token.trim_start_matches("ntr_").as_bytes(),
    ))
}

pub use crate::keys::local_refresh_token as refresh_key;

/// The shared keys, if configured.
pub type SharedKeys = Arc<LocalKeys>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let keys = LocalKeys::from_seed_hex(&"11".repeat(32)).unwrap();
        let token = keys.sign(&json!({"sub": "x"}));
        let (input, sig) = token.rsplit_once('.').unwrap();
        assert!(keys.verify(&keys.kid, input.as_bytes(), &B64.decode(sig).unwrap()));
        assert!(!keys.verify("other", input.as_bytes(), &B64.decode(sig).unwrap()));
        assert!(!keys.verify(&keys.kid, b"tampered", &B64.decode(sig).unwrap()));
        assert!(LocalKeys::from_seed_hex("abc").is_none());
    }

    #[test]
    fn password_rule() {
        assert!(check_password_rule("twelve chars").is_ok());
        assert!(check_password_rule("eleven char").is_err());
        assert!(
            check_password_rule(&"é".repeat(256)).is_ok(),
            "characters, not bytes"
        );
        assert!(check_password_rule(&"x".repeat(257)).is_err());
        assert!(check_password_rule("a long password\0with NUL").is_err());
    }

    #[test]
    fn passwords() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", Some(&hash)));
        assert!(!verify_password("wrong", Some(&hash)));
        assert!(!verify_password("correct horse", None));
    }
}
