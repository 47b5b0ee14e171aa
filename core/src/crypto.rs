//! Secrets at rest and small cryptographic helpers every layer shares.
//!
//! Owns envelope encryption: each sealed value gets its own random 256-bit data key; the value
//! is encrypted with AES-256-GCM under that key, and the data key is itself encrypted (wrapped)
//! with AES-256-GCM under a master key from configuration (`secrets.master_key`, named by
//! `secrets.master_key_id`). The sealed text names the master key that wrapped it, so a new
//! master key can be introduced while retired ones (`secrets.retired_keys`) still open older
//! values, and [`Keyring::rewrap`] moves a value to the active key without touching its data
//! (`neotenant secrets rotate-master`). Every seal is bound to a context string (tenant and
//! purpose) as associated data: a sealed value copied to another row, tenant or purpose does
//! not open. Also owns the constant-time comparison of presented and expected secrets.
//!
//! This module never logs, returns in errors or stores anything in clear; it never reads the
//! database.

use std::collections::BTreeMap;

use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;
/// The prefix of every sealed value (format version 1).
pub const SEALED_PREFIX: &str = "nts1:";

/// Equality of two byte strings in time independent of where they differ (the length is not
/// secret). Use for every comparison of a presented secret with an expected one.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Fills a fresh array with random bytes from the operating system.
pub fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .expect("the system random source works");
    out
}

/// Why a sealed value cannot be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("the master key `{0}` that sealed the value is not configured")]
    UnknownKey(String),
    #[error("the sealed value does not open (wrong key, context or tampered)")]
    Tampered,
}

/// The master keys: the active one seals, every one opens.
#[derive(Clone)]
pub struct Keyring {
    active: String,
    keys: BTreeMap<String, [u8; 32]>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Parses a 256-bit key written as 64 hex digits.
pub fn parse_key(hex_key: &str) -> Option<[u8; 32]> {
    hex::decode(hex_key.trim()).ok()?.try_into().ok()
}

fn seal_with(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte key"));
    let nonce = random::<NONCE_LEN>();
    let mut buf = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .expect("sealing cannot fail for in-range sizes");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    out
}

fn open_with(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(OpenError::Malformed);
    }
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte key"));
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Malformed)?;
    let mut buf = body.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| OpenError::Tampered)?;
    Ok(plain.to_vec())
}

impl Keyring {
    /// A keyring whose active key is `active` (id, key); `retired` keys only open.
    pub fn new(
        active: (&str, [u8; 32]),
        retired: impl IntoIterator<Item = (String, [u8; 32])>,
    ) -> Self {
        let mut keys: BTreeMap<String, [u8; 32]> = retired.into_iter().collect();
        keys.insert(active.0.to_string(), active.1);
        Self {
            active: active.0.to_string(),
            keys,
        }
    }

    /// The keyring `[secrets]` describes (validated at start-up).
    pub fn from_config(c: &crate::config::SecretsConfig) -> Self {
        let key = |s: &crate::config::Secret| parse_key(s.expose()).unwrap_or([0u8; 32]);
        Self::new(
            (&c.master_key_id, key(&c.master_key)),
            c.retired_keys.iter().map(|(id, k)| (id.clone(), key(k))),
        )
    }

    /// The id of the key new values are sealed with.
    pub fn active_id(&self) -> &str {
        &self.active
    }

    /// Seals `plain` for `context` (e.g. `tenant/<id>/webhook/<endpoint>`):
    /// `nts1:<key id>:<wrapped data key>:<ciphertext>`, both parts base64 of nonce ‖ sealed.
    pub fn seal(&self, context: &str, plain: &[u8]) -> String {
        let dek = random::<32>();
        let master = &self.keys[&self.active];
        let wrapped = seal_with(
            master,
            self.wrap_aad(&self.active, context).as_bytes(),
            &dek,
        );
        let body = seal_with(&dek, context.as_bytes(), plain);
        format!(
            "{SEALED_PREFIX}{}:{}:{}",
            self.active,
            B64.encode(wrapped),
            B64.encode(body)
        )
    }

    /// Seals a string (see [`Keyring::seal`]).
    pub fn seal_str(&self, context: &str, plain: &str) -> String {
        self.seal(context, plain.as_bytes())
    }

    fn wrap_aad(&self, key_id: &str, context: &str) -> String {
        format!("dek|{key_id}|{context}")
    }

    fn parts<'a>(&self, sealed: &'a str) -> Result<(&'a str, Vec<u8>, Vec<u8>), OpenError> {
        let rest = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(OpenError::Malformed)?;
        let mut it = rest.splitn(3, ':');
        let (Some(kid), Some(wrapped), Some(body)) = (it.next(), it.next(), it.next()) else {
            return Err(OpenError::Malformed);
        };
        let wrapped = B64.decode(wrapped).map_err(|_| OpenError::Malformed)?;
        let body = B64.decode(body).map_err(|_| OpenError::Malformed)?;
        Ok((kid, wrapped, body))
    }

    fn data_key(&self, kid: &str, context: &str, wrapped: &[u8]) -> Result<[u8; 32], OpenError> {
        let master = self
            .keys
            .get(kid)
            .ok_or_else(|| OpenError::UnknownKey(kid.to_string()))?;
        let dek = open_with(master, self.wrap_aad(kid, context).as_bytes(), wrapped)?;
        dek.try_into().map_err(|_| OpenError::Malformed)
    }

    /// Opens a value sealed for `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let (kid, wrapped, body) = self.parts(sealed)?;
        let dek = self.data_key(kid, context, &wrapped)?;
        open_with(&dek, context.as_bytes(), &body)
    }

    /// Opens a sealed string.
    pub fn open_str(&self, context: &str, sealed: &str) -> Result<String, OpenError> {
        String::from_utf8(self.open(context, sealed)?).map_err(|_| OpenError::Malformed)
    }

    /// Whether a stored text is a sealed value (anything else is a legacy clear value).
    pub fn is_sealed(text: &str) -> bool {
        text.starts_with(SEALED_PREFIX)
    }

    /// The same value with its data key wrapped by the active master key (the data itself is
    /// not decrypted); `None` when it already is.
    pub fn rewrap(&self, context: &str, sealed: &str) -> Result<Option<String>, OpenError> {
        let (kid, wrapped, body) = self.parts(sealed)?;
        if kid == self.active {
            return Ok(None);
        }
        let dek = self.data_key(kid, context, &wrapped)?;
        let master = &self.keys[&self.active];
        let wrapped = seal_with(
            master,
            self.wrap_aad(&self.active, context).as_bytes(),
            &dek,
        );
        Ok(Some(format!(
            "{SEALED_PREFIX}{}:{}:{}",
            self.active,
            B64.encode(wrapped),
            B64.encode(body)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring2() -> (Keyring, Keyring) {
        let old = Keyring::new(("k1", [1u8; 32]), []);
        let new = Keyring::new(("k2", [2u8; 32]), [("k1".to_string(), [1u8; 32])]);
        (old, new)
    }

    #[test]
    fn seals_and_opens_only_in_its_context() {
        let (k, _) = ring2();
        let s = k.seal_str("tenant/a/webhook/1", "whsec_abc");
        assert!(s.starts_with("nts1:k1:"));
        assert!(!s.contains("whsec_abc"));
        assert_eq!(k.open_str("tenant/a/webhook/1", &s).unwrap(), "whsec_abc");
        assert_eq!(
            k.open_str("tenant/b/webhook/1", &s),
            Err(OpenError::Tampered)
        );
        // Two seals of one value differ (fresh data key and nonces).
        assert_ne!(s, k.seal_str("tenant/a/webhook/1", "whsec_abc"));
    }

    #[test]
    fn tampering_and_garbage_are_refused() {
        let (k, _) = ring2();
        let s = k.seal_str("c", "secret");
        let mut bytes = s.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bytes).unwrap();
        assert!(k.open_str("c", &bad).is_err());
        assert_eq!(k.open_str("c", "plain"), Err(OpenError::Malformed));
        assert_eq!(k.open_str("c", "nts1:k1:"), Err(OpenError::Malformed));
        assert_eq!(
            k.open_str("c", "nts1:zz:AAAA:AAAA"),
            Err(OpenError::UnknownKey("zz".into()))
        );
    }

    #[test]
    fn rotation_rewraps_without_changing_the_value() {
        let (old, new) = ring2();
        let s = old.seal_str("c", "value");
        // The new ring still opens the old value.
        assert_eq!(new.open_str("c", &s).unwrap(), "value");
        let moved = new.rewrap("c", &s).unwrap().expect("moved to k2");
        assert!(moved.starts_with("nts1:k2:"));
        assert_eq!(new.open_str("c", &moved).unwrap(), "value");
        assert_eq!(new.rewrap("c", &moved).unwrap(), None);
        // Once k1 is gone, only the rewrapped value opens.
        let only_new = Keyring::new(("k2", [2u8; 32]), []);
        assert!(only_new.open_str("c", &s).is_err());
        assert_eq!(only_new.open_str("c", &moved).unwrap(), "value");
    }

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
