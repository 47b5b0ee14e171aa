//! Outgoing mail: the [`Mailer`] port features send through (password resets, invitations),
//! and its SMTP implementation (lettre, to the relay in `[smtp]`). Tests put an in-process
//! fake behind the same trait.
//!
//! Owns building a MIME message (multipart text + HTML) and talking to the relay; never decides
//! who gets mail or what it says, and never logs a message body (it carries secrets such as
//! reset tokens).

use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpConfig, SmtpSecurity};

/// One mail to one recipient, in a plain-text and an HTML version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The `Message-ID` (with its angle brackets); the relay's own when `None`. A retried
    /// mail keeps its id, so a receiver can tell a repeat from a new mail.
    pub message_id: Option<String>,
    /// A one-click unsubscribe URL (RFC 8058): `List-Unsubscribe` and
    /// `List-Unsubscribe-Post` headers.
    pub unsubscribe: Option<String>,
}

/// A mail that could not be built or delivered (the message says why, never what it held).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MailError(pub String, pub bool);

impl MailError {
    /// A failure that may pass (a retry can succeed).
    pub fn transient(message: impl Into<String>) -> Self {
        MailError(message.into(), false)
    }
    /// Whether the relay refused for good (a 5xx answer: a retry would fail the same way).
    pub fn is_permanent(&self) -> bool {
        self.1
    }
}

/// Sends account mail.
#[async_trait::async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, mail: &Mail) -> Result<(), MailError>;
}

/// Delivers through the configured SMTP relay.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// How long one conversation with the relay may take.
const TIMEOUT: Duration = Duration::from_secs(30);

impl SmtpMailer {
    pub fn new(config: &SmtpConfig) -> Result<Self, MailError> {
        let from = sender(config)?;
        let builder = match config.security {
            SmtpSecurity::Plain => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            }
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                    .map_err(|e| MailError::transient(format!("smtp.host: {e}")))?
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
                .map_err(|e| MailError::transient(format!("smtp.host: {e}")))?,
        };
        Ok(Self {
            transport: builder.port(config.port).timeout(Some(TIMEOUT)).build(),
            from,
        })
    }
}

fn sender(config: &SmtpConfig) -> Result<Mailbox, MailError> {
    let address = config
        .from
        .parse()
        .map_err(|e| MailError::transient(format!("smtp.from: {e}")))?;
    let name = Some(config.from_display_name.clone()).filter(|n| !n.is_empty());
    Ok(Mailbox::new(name, address))
}

/// The MIME message of `mail` from `from`: multipart/alternative, text first.
pub fn message(from: &Mailbox, mail: &Mail) -> Result<Message, MailError> {
    let to: Mailbox = mail
        .to
        .parse()
        .map_err(|e| MailError(format!("recipient address: {e}"), true))?;
    let mut builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.as_str());
    if let Some(id) = &mail.message_id {
        builder = builder.message_id(Some(id.clone()));
    }
    if let Some(url) = &mail.unsubscribe {
        if url.contains(['\r', '\n', '<', '>']) {
            return Err(MailError::transient("unsubscribe URL: invalid characters"));
        }
        builder = builder
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{url}>"),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".into(),
            ));
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            mail.text.clone(),
            mail.html.clone(),
        ))
        .map_err(|e| MailError::transient(format!("message: {e}")))
}

#[async_trait::async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let message = message(&self.from, mail)?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| {
            MailError(
                format!("the mail relay refused or failed: {e}"),
                e.is_permanent(),
            )
        })
    }
}

/// Records mail instead of sending it, for tests.
#[cfg(test)]
#[derive(Default)]
pub struct FakeMailer {
    pub sent: std::sync::Mutex<Vec<Mail>>,
}

#[cfg(test)]
#[async_trait::async_trait]
impl Mailer for FakeMailer {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        self.sent.lock().expect("fake mailer").push(mail.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail() -> Mail {
        Mail {
            to: "ada@example.test".into(),
            subject: "Reset your password".into(),
            text: "plain body".into(),
            html: "<p>html body</p>".into(),
            message_id: None,
            unsubscribe: None,
        }
    }

    #[test]
    fn messages_are_multipart_text_and_html() {
        let from = sender(&SmtpConfig::default()).unwrap();
        let raw = String::from_utf8(message(&from, &mail()).unwrap().formatted()).unwrap();
        assert!(raw.contains("To: ada@example.test"), "{raw}");
        assert!(
            raw.contains("From: NeoTenantApi <no-reply@neotenant.test>"),
            "{raw}"
        );
        assert!(raw.contains("Subject: Reset your password"), "{raw}");
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("text/plain"), "{raw}");
        assert!(raw.contains("text/html"), "{raw}");
        assert!(raw.contains("plain body") && raw.contains("<p>html body</p>"));
    }

    #[test]
    fn message_ids_and_unsubscribe_headers_are_set() {
        let from = sender(&SmtpConfig::default()).unwrap();
        let m = Mail {
            message_id: Some("<d-1@neotenant>".into()),
            unsubscribe: Some("https://x.test/u?t=1".into()),
            ..mail()
        };
        let raw = String::from_utf8(message(&from, &m).unwrap().formatted()).unwrap();
        assert!(raw.contains("Message-ID: <d-1@neotenant>"), "{raw}");
        assert!(
            raw.contains("List-Unsubscribe: <https://x.test/u?t=1>"),
            "{raw}"
        );
        assert!(
            raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            "{raw}"
        );
        let bad = Mail {
            unsubscribe: Some("https://x.test/\r\nBcc: a@b".into()),
            ..mail()
        };
        assert!(message(&from, &bad).is_err());
    }

    #[test]
    fn bad_recipients_are_errors_not_panics() {
        let from = sender(&SmtpConfig::default()).unwrap();
        for to in ["", "no-at-sign", "a@b\r\nBcc: x@y"] {
            let m = Mail {
                to: to.into(),
                ..mail()
            };
            assert!(message(&from, &m).is_err(), "{to:?}");
        }
    }

    // Building a pooled transport spawns its pool's task: it needs a runtime.
    #[tokio::test]
    async fn every_security_mode_builds() {
        for security in [
            SmtpSecurity::Plain,
            SmtpSecurity::Starttls,
            SmtpSecurity::Tls,
        ] {
            let config = SmtpConfig {
                security,
                ..SmtpConfig::default()
            };
            assert!(SmtpMailer::new(&config).is_ok(), "{security:?}");
        }
    }

    #[tokio::test]
    async fn the_fake_records_what_is_sent() {
        let fake = FakeMailer::default();
        let mailer: &dyn Mailer = &fake;
        mailer.send(&mail()).await.unwrap();
        assert_eq!(fake.sent.lock().unwrap().as_slice(), &[mail()]);
    }
}
