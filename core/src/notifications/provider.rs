//! Channel adapters: a [`Provider`] sends one message of one channel. Email goes through the
//! foundation's [`crate::mail::Mailer`] (the `[smtp]` relay, and `notifications.email_fallback`
//! when set); SMS and push through [`HttpProvider`] (a JSON POST with a bearer token and an
//! `Idempotency-Key`). [`Providers`] holds each channel's providers in order with a breaker per
//! provider: after `failover_after` consecutive failures a provider is passed over for
//! `provider_cooldown_secs`, and an attempt that fails on one provider goes on to the next
//! healthy one at once.
//!
//! Owns talking to providers and judging their answers (accepted, retry, refused for good);
//! never decides who gets what, never logs a message body or a provider token.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use super::Channel;
use crate::config::{HttpProviderConfig, NotificationsConfig};
use crate::mail::{Mail, Mailer};

/// One message to one address.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The delivery's id: the message's idempotency key.
    pub delivery: Uuid,
    pub channel: Channel,
    /// Email address, E.164 phone number or push token.
    pub to: String,
    pub subject: String,
    pub body: String,
    pub html: Option<String>,
    pub unsubscribe: Option<String>,
}

/// Why a provider did not take a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// May pass: retried later.
    Retry(String),
    /// Refused for good (bad address, rejected content): not retried.
    Permanent(String),
}

impl SendError {
    pub fn message(&self) -> &str {
        match self {
            SendError::Retry(m) | SendError::Permanent(m) => m,
        }
    }
}

#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &str;
    async fn send(&self, message: &Outgoing) -> Result<(), SendError>;
}

/// Email through a [`Mailer`].
pub struct MailProvider {
    pub name: String,
    pub mailer: Arc<dyn Mailer>,
}

/// The `Message-ID` of a delivery's mail: the same on every attempt.
pub fn message_id(delivery: Uuid) -> String {
    format!("<{}@notifications.neotenant>", delivery.simple())
}

#[async_trait::async_trait]
impl Provider for MailProvider {
    fn name(&self) -> &str {
        &self.name
    }
    async fn send(&self, m: &Outgoing) -> Result<(), SendError> {
        let mail = Mail {
            to: m.to.clone(),
            subject: m.subject.clone(),
            text: m.body.clone(),
            html: m
                .html
                .clone()
                .unwrap_or_else(|| super::template::text_to_html(&m.body)),
            message_id: Some(message_id(m.delivery)),
            unsubscribe: m.unsubscribe.clone(),
        };
        self.mailer.send(&mail).await.map_err(|e| {
            if e.is_permanent() {
                SendError::Permanent(e.0)
            } else {
                SendError::Retry(e.0)
            }
        })
    }
}

/// An HTTP message provider (see [`HttpProviderConfig`]).
pub struct HttpProvider {
    config: HttpProviderConfig,
    client: reqwest::Client,
}

impl HttpProvider {
    pub fn new(config: HttpProviderConfig, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client builds");
        Self { config, client }
    }
}

/// A provider's words as they may be stored: printable, at most 500 characters (an answer
/// may carry NUL bytes or control characters, which PostgreSQL text refuses).
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect()
}

/// How an HTTP provider's status is judged.
pub fn judge(status: u16) -> Result<(), bool> {
    match status {
        200..=299 => Ok(()),
        408 | 425 | 429 => Err(false),
        400..=499 => Err(true),
        _ => Err(false),
    }
}

#[async_trait::async_trait]
impl Provider for HttpProvider {
    fn name(&self) -> &str {
        &self.config.name
    }
    async fn send(&self, m: &Outgoing) -> Result<(), SendError> {
        let body = json!({
            "id": m.delivery,
            "channel": m.channel,
            "to": m.to,
            "title": m.subject,
            "body": m.body,
        });
        let mut req = self
            .client
            .post(&self.config.url)
            .header("idempotency-key", m.delivery.to_string())
            .json(&body);
        if !self.config.token.expose().is_empty() {
            req = req.bearer_auth(self.config.token.expose());
        }
        let res = req
            .send()
            .await
            .map_err(|e| SendError::Retry(format!("{}: {}", self.config.name, short(&e))))?;
        let status = res.status().as_u16();
        // Read (a bounded part of) the answer so the connection can be reused.
        let text = res.text().await.unwrap_or_default();
        let snippet: String = text
            .chars()
            .take(200)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        match judge(status) {
            Ok(()) => Ok(()),
            Err(true) => Err(SendError::Permanent(format!(
                "{} refused it: HTTP {status} {snippet}",
                self.config.name
            ))),
            Err(false) => Err(SendError::Retry(format!(
                "{} failed: HTTP {status} {snippet}",
                self.config.name
            ))),
        }
    }
}

fn short(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        "request failed".into()
    }
}

/// A provider with its breaker.
pub struct Slot {
    pub provider: Arc<dyn Provider>,
    failures: AtomicU32,
    open_until: std::sync::Mutex<Option<Instant>>,
}

impl Slot {
    fn new(provider: Arc<dyn Provider>) -> Self {
        Self {
            provider,
            failures: AtomicU32::new(0),
            open_until: std::sync::Mutex::new(None),
        }
    }
    fn healthy(&self) -> bool {
        let open = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        open.is_none_or(|until| Instant::now() >= until)
    }
}

/// One provider's try in an attempt.
#[derive(Debug, Clone)]
pub struct Try {
    pub provider: String,
    pub result: Result<(), SendError>,
}

/// Every channel's providers in order of preference.
pub struct Providers {
    by_channel: HashMap<Channel, Vec<Slot>>,
    failover_after: u32,
    cooldown: Duration,
}

impl Providers {
    /// The providers the configuration names; `mailer` is the primary relay.
    pub fn from_config(
        config: &NotificationsConfig,
        mailer: Arc<dyn Mailer>,
        fallback: Option<Arc<dyn Mailer>>,
    ) -> Self {
        let mut by_channel: HashMap<Channel, Vec<Arc<dyn Provider>>> = HashMap::new();
        let email = by_channel.entry(Channel::Email).or_default();
        email.push(Arc::new(MailProvider {
            name: "smtp".into(),
            mailer,
        }));
        if let Some(fallback) = fallback {
            email.push(Arc::new(MailProvider {
                name: "smtp-fallback".into(),
                mailer: fallback,
            }));
        }
        let timeout = Duration::from_millis(config.provider_timeout_ms);
        for (channel, list) in [(Channel::Sms, &config.sms), (Channel::Push, &config.push)] {
            for p in list {
                by_channel
                    .entry(channel)
                    .or_default()
                    .push(Arc::new(HttpProvider::new(p.clone(), timeout)));
            }
        }
        Self::new(
            by_channel,
            config.failover_after,
            Duration::from_secs(config.provider_cooldown_secs),
        )
    }

    pub fn new(
        by_channel: HashMap<Channel, Vec<Arc<dyn Provider>>>,
        failover_after: u32,
        cooldown: Duration,
    ) -> Self {
        Self {
            by_channel: by_channel
                .into_iter()
                .map(|(c, list)| (c, list.into_iter().map(Slot::new).collect()))
                .collect(),
            failover_after: failover_after.max(1),
            cooldown,
        }
    }

    /// The most providers one channel has (an attempt may try them all).
    pub fn longest_chain(&self) -> usize {
        self.by_channel.values().map(Vec::len).max().unwrap_or(0)
    }

    /// Whether the channel has any provider.
    pub fn serves(&self, channel: Channel) -> bool {
        self.by_channel.get(&channel).is_some_and(|l| !l.is_empty())
    }

    /// Sends `m`: healthy providers in order (then the passed-over ones, if none is healthy)
    /// until one accepts or refuses for good. Returns every try.
    pub async fn send(&self, m: &Outgoing) -> Vec<Try> {
        let Some(slots) = self.by_channel.get(&m.channel) else {
            return vec![Try {
                provider: "none".into(),
                result: Err(SendError::Permanent(format!(
                    "no {} provider is configured",
                    m.channel.as_str()
                ))),
            }];
        };
        let mut order: Vec<&Slot> = slots.iter().filter(|s| s.healthy()).collect();
        if order.is_empty() {
            order = slots.iter().collect();
        }
        let mut tries = Vec::new();
        for slot in order {
            let result = slot.provider.send(m).await;
            let done = !matches!(result, Err(SendError::Retry(_)));
            self.note(slot, &result);
            tries.push(Try {
                provider: slot.provider.name().to_string(),
                result,
            });
            if done {
                break;
            }
        }
        tries
    }

    fn note(&self, slot: &Slot, result: &Result<(), SendError>) {
        match result {
            // A refusal of one message says nothing about the provider's health.
            Ok(()) | Err(SendError::Permanent(_)) => {
                slot.failures.store(0, Ordering::Relaxed);
                *slot.open_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            Err(SendError::Retry(_)) => {
                let n = slot.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= self.failover_after {
                    *slot.open_until.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(Instant::now() + self.cooldown);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    struct Scripted {
        name: &'static str,
        answers: Mutex<Vec<Result<(), SendError>>>,
        calls: AtomicU32,
    }

    #[async_trait::async_trait]
    impl Provider for Scripted {
        fn name(&self) -> &str {
            self.name
        }
        async fn send(&self, _m: &Outgoing) -> Result<(), SendError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.answers.lock().unwrap().pop().unwrap_or(Ok(()))
        }
    }

    fn scripted(name: &'static str, answers: Vec<Result<(), SendError>>) -> Arc<Scripted> {
        Arc::new(Scripted {
            name,
            answers: Mutex::new(answers),
            calls: AtomicU32::new(0),
        })
    }

    fn msg() -> Outgoing {
        Outgoing {
            delivery: Uuid::nil(),
            channel: Channel::Sms,
            to: "+4915112345678".into(),
            subject: String::new(),
            body: "hi".into(),
            html: None,
            unsubscribe: None,
        }
    }

    #[tokio::test]
    async fn a_failing_provider_hands_over_and_is_passed_over_after_the_threshold() {
        let fail = || Err(SendError::Retry("down".into()));
        let primary = scripted("a", vec![fail(), fail(), fail(), fail()]);
        let secondary = scripted("b", vec![]);
        let mut map: HashMap<Channel, Vec<Arc<dyn Provider>>> = HashMap::new();
        map.insert(Channel::Sms, vec![primary.clone(), secondary.clone()]);
        let p = Providers::new(map, 2, Duration::from_secs(60));
        let tries = p.send(&msg()).await;
        assert_eq!(tries.len(), 2);
        assert_eq!(tries[1].provider, "b");
        assert!(tries[1].result.is_ok());
        p.send(&msg()).await;
        // Two consecutive failures: the primary is passed over now.
        let tries = p.send(&msg()).await;
        assert_eq!(tries.len(), 1);
        assert_eq!(tries[0].provider, "b");
        assert_eq!(primary.calls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_permanent_refusal_stops_the_attempt() {
        let primary = scripted("a", vec![Err(SendError::Permanent("bad number".into()))]);
        let secondary = scripted("b", vec![]);
        let mut map: HashMap<Channel, Vec<Arc<dyn Provider>>> = HashMap::new();
        map.insert(Channel::Sms, vec![primary, secondary.clone()]);
        let p = Providers::new(map, 2, Duration::from_secs(60));
        let tries = p.send(&msg()).await;
        assert_eq!(tries.len(), 1);
        assert!(matches!(tries[0].result, Err(SendError::Permanent(_))));
        assert_eq!(secondary.calls.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_channel_without_providers_is_refused_for_good() {
        let p = Providers::new(HashMap::new(), 2, Duration::from_secs(1));
        let tries = p.send(&msg()).await;
        assert!(matches!(tries[0].result, Err(SendError::Permanent(_))));
        assert!(!p.serves(Channel::Sms));
    }

    #[test]
    fn statuses_are_judged() {
        assert_eq!(judge(202), Ok(()));
        assert_eq!(judge(400), Err(true));
        assert_eq!(judge(429), Err(false));
        assert_eq!(judge(503), Err(false));
        assert_eq!(judge(302), Err(false));
    }
}
