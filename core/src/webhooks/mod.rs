//! Webhooks: a tenant's HTTP endpoints receive its events, signed per the Standard Webhooks
//! specification, at least once, with retries on a fixed schedule and a log of every attempt.
//!
//! Shape: `handlers` (`/v1/webhooks/…`, `/v1/event-types`) → `service` (endpoints, secrets and
//! their rotation, the delivery log, manual retry and replay) → `repo` (SQL). `signing`
//! (Standard Webhooks `v1` and `v1a` signatures; pure), `worker` (the router from the outbox into
//! per-endpoint queues, and delivery), `catalogue` (the published event types and the JSON
//! Schema of each one's data). Which addresses a webhook may reach is `crate::netguard`'s
//! rule, checked at save and at connect time.
//!
//! **Invariants:** messages are written in the transaction that moves the router's outbox
//! cursor, so every committed event reaches every endpoint subscribed to it exactly once as a
//! message, in commit order; a message is sent until it succeeds or its schedule ends (then it
//! is a dead letter kept for a manual retry), and a crash between a receiver's answer and its
//! record sends it again with the same `webhook-id`. Each endpoint's queue is held by one
//! worker at a time under a lease, and a slow or dead endpoint holds only its own queue.
//! Secrets are stored sealed (`crypto`), shown once when made, and never logged or audited.
//! Nothing is sent to an address inside the platform's network unless the operator lists it.

pub mod catalogue;
pub mod handlers;
pub mod model;
pub mod repo;
pub mod service;
pub mod signing;
pub mod worker;

use std::sync::Arc;

use crate::audit::Recent;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::netguard as ssrf;
use crate::tenancy::TenancyState;

/// What webhooks need from the rest of the host.
pub struct WebhooksState {
    pub config: Arc<Config>,
    pub tenancy: Arc<TenancyState>,
    pub audit_recent: Arc<Recent>,
    pub keyring: Arc<Keyring>,
    /// The tenant's `integrations` settings (timeout, attempts, retry base, allowed hosts).
    pub settings: Arc<crate::settings::SettingsState>,
    pub allow: ssrf::AllowList,
    /// The client every delivery uses: no redirects, the guarded resolver, the timeout.
    pub client: reqwest::Client,
    /// The retry schedule: the wait before each attempt (the first is normally 0).
    pub schedule: Arc<Vec<std::time::Duration>>,
}

impl WebhooksState {
    /// Builds the delivery client from `[webhooks]`.
    pub fn client(config: &Config, allow: &ssrf::AllowList) -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would connect past the guarded resolver.
            .no_proxy()
            .dns_resolver(Arc::new(ssrf::GuardedResolver {
                allow: allow.clone(),
            }))
            .timeout(std::time::Duration::from_millis(config.webhooks.timeout_ms))
            .connect_timeout(std::time::Duration::from_millis(
                config.webhooks.timeout_ms.min(10_000),
            ))
            .pool_max_idle_per_host(64)
            .user_agent("NeoTenantApi-Webhooks/1")
            .build()
            .expect("the webhook client builds")
    }

    /// The context a secret of an endpoint is sealed for.
    pub fn seal_context(tenant: uuid::Uuid, endpoint: uuid::Uuid, what: &str) -> String {
        format!("tenant/{tenant}/webhook/{endpoint}/{what}")
    }
}
