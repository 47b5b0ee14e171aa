//! Single-use secret tokens sent by mail (password resets, invitations): making one and the
//! digest it is stored under, and recognising a presented token's shape.
//!
//! **Invariants:** a token holds 256 bits from the operating system's randomness (through the
//! thread's CSPRNG) behind a short prefix naming its kind (so that a leak scanner recognises
//! it); only its SHA-256 is ever stored, and a token is looked up by that digest, so no stored
//! secret is compared byte by byte. Never stores, logs or decides the validity of a token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};

/// Random bytes in a token.
const SECRET_BYTES: usize = 32;

/// Characters of a token with `prefix`: the prefix and the base64url (unpadded) secret.
pub const fn token_chars(prefix: &str) -> usize {
    prefix.len() + (SECRET_BYTES * 4).div_ceil(3)
}

/// A fresh token (for the mail) and its digest (for the database).
pub struct NewToken {
    pub token: String,
    pub digest: [u8; 32],
}

/// Makes a token of the kind `prefix`.
pub fn new_token(prefix: &str) -> NewToken {
    let secret: [u8; SECRET_BYTES] = rand::random();
    let token = format!("{prefix}{}", B64.encode(secret));
    let digest = digest(&token);
    NewToken { token, digest }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The digest a presented token of the kind `prefix` is looked up by; `None` when it cannot be
/// such a token at all (another kind, any other length, NUL or other byte), so nothing of that
/// shape reaches the database.
pub fn digest_of(prefix: &str, presented: &str) -> Option<[u8; 32]> {
    let secret = presented.strip_prefix(prefix)?;
    let well_formed = presented.len() == token_chars(prefix)
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| digest(presented))
}

/// A mail link: the configured page (`{tenant}` → slug) with the token in the fragment, which
/// browsers keep out of requests and `Referer` headers.
pub fn link(template: &str, slug: &str, token: &str) -> String {
    format!("{}#token={token}", template.replace("{tenant}", slug))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_stored_by_digest() {
        let (a, b) = (new_token("nti_"), new_token("nti_"));
        assert_ne!(a.token, b.token);
        assert_eq!(a.token.len(), token_chars("nti_"));
        assert_eq!(a.token.len() - 4, 43);
        assert_eq!(digest_of("nti_", &a.token), Some(a.digest));
        assert_eq!(
            a.digest,
            <[u8; 32]>::from(Sha256::digest(a.token.as_bytes()))
        );
        // A token of one kind is not a token of another.
        assert_eq!(digest_of("ntp_", &a.token), None);
    }

    #[test]
    fn malformed_tokens_have_no_digest() {
        let good = new_token("ntp_").token;
        let secret = &good[4..];
        for bad in [
            String::new(),
            "ntp_".to_string(),
            secret.to_string(),
            format!("{good}A"),
            good[..good.len() - 1].to_string(),
            format!("ntp_{}\0", &secret[1..]),
            format!("ntp_{}+", &secret[1..]),
            format!("NTP_{secret}"),
        ] {
            assert_eq!(digest_of("ntp_", &bad), None, "{bad:?}");
        }
    }

    #[test]
    fn links_carry_the_token_in_the_fragment() {
        assert_eq!(
            link("https://app.test/{tenant}/join", "acme", "nti_x"),
            "https://app.test/acme/join#token=nti_x"
        );
    }
}
