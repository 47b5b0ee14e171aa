//! Password-reset tokens of local-mode users, as pure rules: making a token and the digest it
//! is stored under, recognising a token's shape, deciding whether a stored token still works,
//! and writing the mail that carries it.
//!
//! No I/O here: `service` stores digests (`repo`) and sends the mail (`mail::Mailer`).
//! **Invariants:** a token holds 256 random bits and exists only in the mail; what is stored is
//! its SHA-256; a token works once, before its expiry. Never logs a token.

use chrono::{DateTime, Utc};

use crate::mail::Mail;
pub use crate::onetime::NewToken;

/// Every reset token starts with this (so that it is recognisable in a leak scanner).
pub const PREFIX: &str = "ntp_";
/// Characters of a token: the prefix and the base64url (unpadded) secret.
pub const TOKEN_CHARS: usize = crate::onetime::token_chars(PREFIX);

/// Makes a reset token.
pub fn new_token() -> NewToken {
    crate::onetime::new_token(PREFIX)
}

/// The digest a presented reset token is looked up by; `None` when it cannot be one.
pub fn digest_of(presented: &str) -> Option<[u8; 32]> {
    crate::onetime::digest_of(PREFIX, presented)
}

/// What the database holds about one token.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// Why a stored token no longer works (told to nobody: the answer is the same for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Used,
    Expired,
}

impl Stored {
    /// Whether the token works at `now`: never used, and `now` before its expiry.
    pub fn check(&self, now: DateTime<Utc>) -> Result<(), Refusal> {
        if self.used_at.is_some() {
            Err(Refusal::Used)
        } else if now >= self.expires_at {
            Err(Refusal::Expired)
        } else {
            Ok(())
        }
    }
}

/// The link of a reset mail (the token in the fragment).
pub fn link(template: &str, slug: &str, token: &str) -> String {
    crate::onetime::link(template, slug, token)
}

/// Who a reset mail goes to and what it offers.
pub struct ResetMail<'a> {
    pub to: &'a str,
    pub username: &'a str,
    pub tenant: &'a str,
    pub link: &'a str,
    pub token: &'a str,
    pub valid_minutes: u64,
}

/// The mail that carries a reset token, as text and as HTML.
pub fn mail(m: &ResetMail<'_>) -> Mail {
    let text = format!(
        "Hello {user},\n\n\
         someone asked to reset the password of your account \"{user}\" at {tenant}.\n\n\
         To choose a new password, open this link within {minutes} minutes:\n\n{link}\n\n\
         Or send this token with your new password to POST /v1/auth/password-reset/confirm:\n\n\
         {token}\n\n\
         The link works once. If you did not ask for it, ignore this mail: your password \
         stays as it is.\n",
        user = m.username,
        tenant = m.tenant,
        minutes = m.valid_minutes,
        link = m.link,
        token = m.token,
    );
    let html = format!(
        "<!DOCTYPE html>\n<html><body>\n\
         <p>Hello {user},</p>\n\
         <p>someone asked to reset the password of your account <b>{user}</b> at {tenant}.</p>\n\
         <p><a href=\"{link}\">Choose a new password</a> within {minutes} minutes.</p>\n\
         <p>Or send this token with your new password to \
         <code>POST /v1/auth/password-reset/confirm</code>:<br><code>{token}</code></p>\n\
         <p>The link works once. If you did not ask for it, ignore this mail: your password \
         stays as it is.</p>\n\
         </body></html>\n",
        user = escape(m.username),
        tenant = escape(m.tenant),
        minutes = m.valid_minutes,
        link = escape(m.link),
        token = escape(m.token),
    );
    Mail {
        to: m.to.to_string(),
        subject: format!("Reset your password at {}", m.tenant),
        text,
        html,
        message_id: None,
        unsubscribe: None,
    }
}

/// `s` safe inside HTML text and double-quoted attributes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use sha2::{Digest, Sha256};

    #[test]
    fn tokens_are_long_random_and_stored_by_digest() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a.token, b.token);
        assert_eq!(a.token.len(), TOKEN_CHARS);
        assert!(a.token.starts_with(PREFIX));
        // 256 bits of secret: 43 base64url characters.
        assert_eq!(a.token.len() - PREFIX.len(), 43);
        assert_eq!(digest_of(&a.token), Some(a.digest));
        assert_eq!(
            a.digest,
            <[u8; 32]>::from(Sha256::digest(a.token.as_bytes()))
        );
        assert!(!a.digest.iter().all(|b| *b == 0));
    }

    #[test]
    fn malformed_tokens_have_no_digest() {
        let good = new_token().token;
        let secret = &good[PREFIX.len()..];
        for bad in [
            String::new(),
            PREFIX.to_string(),
            secret.to_string(),
            format!("ntr_{secret}"),
            format!("{good}x"),
            good[..good.len() - 1].to_string(),
            format!("{}\0", &good[..good.len() - 1]),
            format!("{}=", &good[..good.len() - 1]),
            format!("{}é", &good[..good.len() - 2]),
            "x".repeat(100_000),
        ] {
            assert_eq!(digest_of(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_token_works_once_and_before_its_expiry() {
        let now = Utc::now();
        let fresh = Stored {
            expires_at: now + Duration::minutes(30),
            used_at: None,
        };
        assert_eq!(fresh.check(now), Ok(()));
        assert_eq!(fresh.check(now + Duration::minutes(29)), Ok(()));
        assert_eq!(
            fresh.check(now + Duration::minutes(30)),
            Err(Refusal::Expired)
        );
        assert_eq!(fresh.check(now + Duration::days(1)), Err(Refusal::Expired));
        let used = Stored {
            used_at: Some(now),
            ..fresh
        };
        assert_eq!(used.check(now), Err(Refusal::Used));
        assert_eq!(used.check(now + Duration::days(1)), Err(Refusal::Used));
    }

    #[test]
    fn the_mail_carries_the_link_and_the_token_escaped() {
        let token = new_token().token;
        let link = link(
            "https://{tenant}.example.com/reset?lang=en&x=1",
            "acme",
            &token,
        );
        assert_eq!(
            link,
            format!("https://acme.example.com/reset?lang=en&x=1#token={token}")
        );
        let m = mail(&ResetMail {
            to: "ada@example.test",
            username: "ada",
            tenant: "acme",
            link: &link,
            token: &token,
            valid_minutes: 30,
        });
        assert_eq!(m.to, "ada@example.test");
        assert!(m.text.contains(&link) && m.text.contains(&token));
        assert!(m.text.contains("30 minutes"));
        assert!(
            m.html.contains("reset?lang=en&amp;x=1#token="),
            "{}",
            m.html
        );
        assert!(m.html.contains(&token));
        assert!(!m.html.contains("&x=1"), "raw ampersand in HTML");
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
