//! Configuration: a TOML file overlaid by `NEOTENANT_*` environment variables, validated once
//! at start-up.
//!
//! Owns the shape of every setting, its default and its validation. A nested key maps to an
//! environment variable by upper-casing and joining sections with a double underscore:
//! `server.max_body_bytes` is `NEOTENANT_SERVER__MAX_BODY_BYTES`. A variable's text is parsed
//! as the type of the field it sets (a string field takes it as written). Every setting is
//! documented in `docs/CONFIGURATION.md`. This module never logs secret values: [`Secret`]
//! redacts itself, and it never guesses a variable's type from how its text looks.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::region::Region;

mod layer;

use layer::Layer;

/// A string that must never appear in logs or debug output.
#[derive(Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret value; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub log: LogConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub admin: AdminConfig,
    #[serde(default)]
    pub tenancy: TenancyConfig,
    pub keycloak: KeycloakConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    #[serde(default)]
    pub users: UsersConfig,
    #[serde(default)]
    pub smtp: SmtpConfig,
    #[serde(default)]
    pub account: AccountConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub search: SearchConfig,
    #[serde(default)]
    pub plugins: PluginsConfig,
    #[serde(default)]
    pub invitations: InvitationsConfig,
    #[serde(default)]
    pub flags: FlagsConfig,
    #[serde(default)]
    pub notifications: NotificationsConfig,
    pub secrets: SecretsConfig,
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// How many of the things a caller makes may exist at once (each further create is 409
/// `limit-reached`), so one user or tenant cannot grow them without bound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Live API keys per user.
    pub api_keys_per_user: usize,
    /// Live OAuth clients per user (each is a client in the tenant's Keycloak realm).
    pub oauth_clients_per_user: usize,
    /// Webhook endpoints per tenant.
    pub webhook_endpoints_per_tenant: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            api_keys_per_user: 50,
            oauth_clients_per_user: 20,
            webhook_endpoints_per_tenant: 50,
        }
    }
}

/// The master keys that seal stored secrets (envelope encryption, see `crypto`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// Name of the active master key; stored with every value it seals.
    pub master_key_id: String,
    /// The active master key: 64 hex digits (256 bits).
    pub master_key: Secret,
    /// Earlier master keys by name, still able to open what they sealed until
    /// `neotenant secrets rotate-master` has moved every value to the active key.
    #[serde(default)]
    pub retired_keys: BTreeMap<String, Secret>,
}

impl SecretsConfig {
    fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        let id_ok = |id: &str| {
            !id.is_empty()
                && id.len() <= 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !id_ok(&self.master_key_id) {
            return Err((
                "secrets.master_key_id",
                "must be 1-32 letters, digits, '-' or '_'",
            ));
        }
        let key_ok = |k: &Secret| hex::decode(k.expose().trim()).is_ok_and(|b| b.len() == 32);
        if !key_ok(&self.master_key) {
            return Err(("secrets.master_key", "must be 64 hex digits"));
        }
        if self
            .retired_keys
            .iter()
            .any(|(id, k)| !id_ok(id) || !key_ok(k) || *id == self.master_key_id)
        {
            return Err((
                "secrets.retired_keys",
                "each must be named like master_key_id (not the active one) and be 64 hex digits",
            ));
        }
        Ok(())
    }
}

/// Webhooks: where they may go, how long a receiver may take, the retry schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Whether this instance runs the webhook worker (routing and delivery).
    pub worker: bool,
    /// Hosts that may receive webhooks although they are or resolve to inside addresses:
    /// comma-separated `host` or `host:port` (e.g. a loopback receiver in development).
    pub allow_hosts: String,
    /// Waits before each attempt, comma-separated seconds (the first attempt's wait is
    /// usually 0); a message still failing after the last is a dead letter. ±10 % jitter.
    pub retry_schedule: String,
    /// How long one delivery may take in all (connect, send, answer).
    pub timeout_ms: u64,
    /// Bytes of a request and an answer kept in the delivery log (the rest is cut; an answer
    /// is not read further).
    pub log_body_bytes: usize,
    /// Requests in flight to one endpoint at once.
    pub per_endpoint_concurrency: usize,
    /// Endpoints one instance delivers to at once.
    pub endpoints_at_once: usize,
    /// Messages taken from one endpoint's queue per lease.
    pub batch: u32,
    /// How often the worker looks for due messages and new events.
    pub worker_interval_ms: u64,
    /// Seconds between sweeps of every tenant.
    pub sweep_interval_secs: u64,
    /// An endpoint failing without a success for this long is disabled (and the tenant told).
    pub disable_after_secs: u64,
    /// Most events one replay may queue.
    pub replay_max: u32,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            worker: true,
            allow_hosts: String::new(),
            retry_schedule: "0,5,300,1800,7200,18000,36000,36000".into(),
            timeout_ms: 15_000,
            log_body_bytes: 4096,
            per_endpoint_concurrency: 16,
            endpoints_at_once: 32,
            batch: 500,
            worker_interval_ms: 100,
            sweep_interval_secs: 10,
            disable_after_secs: 5 * 86_400,
            replay_max: 10_000,
        }
    }
}

impl WebhooksConfig {
    /// The retry schedule as durations (validated at start-up).
    pub fn schedule(&self) -> Vec<std::time::Duration> {
        self.retry_schedule
            .split(',')
            .filter_map(|s| s.trim().parse::<f64>().ok())
            .map(std::time::Duration::from_secs_f64)
            .collect()
    }

    fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        let parts: Vec<&str> = self.retry_schedule.split(',').collect();
        let ok = !parts.is_empty()
            && parts.len() <= 50
            && parts.iter().all(|p| {
                p.trim()
                    .parse::<f64>()
                    .is_ok_and(|v| (0.0..=7.0 * 86_400.0).contains(&v))
            });
        if !ok {
            return Err((
                "webhooks.retry_schedule",
                "must be 1-50 comma-separated seconds, each 0-604800",
            ));
        }
        let checks: [(bool, &'static str, &'static str); 7] = [
            (
                (100..=120_000).contains(&self.timeout_ms),
                "webhooks.timeout_ms",
                "must be between 100 and 120000",
            ),
            (
                (256..=1_048_576).contains(&self.log_body_bytes),
                "webhooks.log_body_bytes",
                "must be between 256 and 1048576",
            ),
            (
                (1..=256).contains(&self.per_endpoint_concurrency)
                    && (1..=1024).contains(&self.endpoints_at_once),
                "webhooks.per_endpoint_concurrency",
                "must be 1-256 (and endpoints_at_once 1-1024)",
            ),
            (
                (1..=10_000).contains(&self.batch),
                "webhooks.batch",
                "must be between 1 and 10000",
            ),
            (
                (10..=60_000).contains(&self.worker_interval_ms)
                    && (1..=3600).contains(&self.sweep_interval_secs),
                "webhooks.worker_interval_ms",
                "must be 10-60000 (and sweep_interval_secs 1-3600)",
            ),
            (
                self.disable_after_secs >= 1,
                "webhooks.disable_after_secs",
                "must be at least 1",
            ),
            (
                (1..=1_000_000).contains(&self.replay_max),
                "webhooks.replay_max",
                "must be between 1 and 1000000",
            ),
        ];
        if let Some((_, key, message)) = checks.iter().find(|(ok, _, _)| !ok) {
            return Err((key, message));
        }
        Ok(())
    }
}

/// Notifications: delivery retries, worker pacing, send limits and the channel providers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// Whether this instance runs the notification worker (expansion, sending, digests,
    /// event rules); API-only instances turn it off. At least one instance must run it.
    pub worker: bool,
    /// Attempts of one delivery before it is marked failed (dead letter).
    pub max_attempts: u32,
    /// The wait before the first retry; each further one waits twice as long, ±20 % jitter
    /// (15 s and 8 attempts span about 32 minutes).
    pub retry_base_ms: u64,
    /// Messages sent at once by one instance.
    pub concurrency: usize,
    /// How often the worker looks for due deliveries, digests and retries.
    pub worker_interval_ms: u64,
    /// Seconds between sweeps of every tenant (scheduled sends, event rules, purges).
    pub sweep_interval_secs: u64,
    /// Recipients written per transaction while a notification is expanded.
    pub expand_chunk: u32,
    /// Recipients a tenant may address per rolling hour (the send API answers 429 beyond it).
    pub per_tenant_recipients_per_hour: u32,
    /// Messages one recipient may get per rolling hour and channel (beyond: throttled).
    pub per_recipient_per_hour: u32,
    /// The largest `data` object of one notification, in bytes of JSON.
    pub max_data_bytes: usize,
    /// Consecutive failures after which a provider is passed over for the channel's next one.
    pub failover_after: u32,
    /// How long a failing provider is passed over before it is tried again.
    pub provider_cooldown_secs: u64,
    /// Timeout of one call to an HTTP provider.
    pub provider_timeout_ms: u64,
    /// How long a claimed batch of deliveries is kept from other workers (at least long enough
    /// for every provider of the batch to time out): after a crash its messages are sent again
    /// this much later.
    pub lease_secs: u64,
    /// One-click unsubscribe endpoint put in every mail's `List-Unsubscribe` (`{tenant}` is
    /// replaced by the slug); the signed token is appended as `?token=…`.
    pub unsubscribe_url: String,
    /// A second mail relay, used when the first keeps failing.
    pub email_fallback: Option<SmtpConfig>,
    /// SMS providers in order of preference.
    pub sms: Vec<HttpProviderConfig>,
    /// Push providers in order of preference.
    pub push: Vec<HttpProviderConfig>,
}

impl NotificationsConfig {
    fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        let n = self;
        let checks: [(bool, &'static str, &'static str); 10] = [
            (
                (1..=50).contains(&n.max_attempts),
                "notifications.max_attempts",
                "must be between 1 and 50",
            ),
            (
                (10..=3_600_000).contains(&n.retry_base_ms),
                "notifications.retry_base_ms",
                "must be between 10 and 3600000",
            ),
            (
                (1..=256).contains(&n.concurrency),
                "notifications.concurrency",
                "must be between 1 and 256",
            ),
            (
                (10..=60_000).contains(&n.worker_interval_ms),
                "notifications.worker_interval_ms",
                "must be between 10 and 60000",
            ),
            (
                (1..=3600).contains(&n.sweep_interval_secs),
                "notifications.sweep_interval_secs",
                "must be between 1 and 3600",
            ),
            (
                (10..=10_000).contains(&n.expand_chunk),
                "notifications.expand_chunk",
                "must be between 10 and 10000",
            ),
            (
                n.per_tenant_recipients_per_hour > 0 && n.per_recipient_per_hour > 0,
                "notifications.per_tenant_recipients_per_hour",
                "hourly limits must be at least 1",
            ),
            (
                (256..=1_048_576).contains(&n.max_data_bytes),
                "notifications.max_data_bytes",
                "must be between 256 and 1048576",
            ),
            (
                (1..=3600).contains(&n.lease_secs),
                "notifications.lease_secs",
                "must be between 1 and 3600",
            ),
            (
                (100..=120_000).contains(&n.provider_timeout_ms) && n.failover_after > 0,
                "notifications.provider_timeout_ms",
                "must be between 100 and 120000 (and failover_after at least 1)",
            ),
        ];
        if let Some((_, key, message)) = checks.iter().find(|(ok, _, _)| !ok) {
            return Err((key, message));
        }
        match url::Url::parse(&n.unsubscribe_url.replace("{tenant}", "tenant")) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() => {}
            _ => {
                return Err((
                    "notifications.unsubscribe_url",
                    "must be an http(s) URL without a query",
                ));
            }
        }
        for p in n.sms.iter().chain(&n.push) {
            let ok = url::Url::parse(&p.url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok || p.name.is_empty() || p.name.len() > 64 {
                return Err((
                    "notifications.sms/push",
                    "each provider needs a name (1-64) and an http(s) url",
                ));
            }
        }
        Ok(())
    }
}

/// An HTTP message provider: `POST url` with a JSON message, `Authorization: Bearer token`
/// and `Idempotency-Key`; 2xx is accepted, 4xx (but 408/429) refused for good, anything else
/// retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProviderConfig {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub token: Secret,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            worker: true,
            max_attempts: 8,
            retry_base_ms: 15_000,
            concurrency: 16,
            worker_interval_ms: 250,
            sweep_interval_secs: 10,
            expand_chunk: 1_000,
            per_tenant_recipients_per_hour: 200_000,
            per_recipient_per_hour: 300,
            max_data_bytes: 16_384,
            failover_after: 3,
            provider_cooldown_secs: 30,
            provider_timeout_ms: 5_000,
            lease_secs: 60,
            unsubscribe_url: "http://{tenant}.localhost:8080/v1/notifications/unsubscribe".into(),
            email_fallback: None,
            sms: Vec::new(),
            push: Vec::new(),
        }
    }
}

/// Feature flags: how often scheduled changes are looked for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlagsConfig {
    /// Seconds between sweeps of every tenant for scheduled flag changes that are due (a
    /// change applies at most this long after its time).
    pub schedule_interval_secs: u64,
}

impl Default for FlagsConfig {
    fn default() -> Self {
        Self {
            schedule_interval_secs: 10,
        }
    }
}

/// Invitations: their links, default lifetime, abuse limits and mail delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvitationsConfig {
    /// The page an invitation mail links to (an http(s) URL; `{tenant}` is replaced by the
    /// tenant's slug); the token is appended as the fragment `#token=…`.
    pub accept_url: String,
    /// How long an invitation stays open unless the tenant's policy says otherwise.
    pub default_expiry_hours: u32,
    /// Invitations one user may send per rolling hour.
    pub per_inviter_per_hour: u32,
    /// Invitations a tenant may send per rolling hour.
    pub per_tenant_per_hour: u32,
    /// Delivery attempts of one mail before it is marked failed.
    pub mail_max_attempts: u32,
    /// The wait before the first retry of a failed mail; each further retry waits twice as long
    /// (at most an hour).
    pub mail_retry_base_ms: u64,
    /// Mails sent at once by one instance.
    pub mail_concurrency: usize,
    /// Seconds between sweeps of every tenant for due mails and expired invitations.
    pub sweep_interval_secs: u64,
}

impl Default for InvitationsConfig {
    fn default() -> Self {
        Self {
            accept_url: "http://{tenant}.localhost:8080/accept-invitation".into(),
            default_expiry_hours: 168,
            per_inviter_per_hour: 1_000,
            per_tenant_per_hour: 5_000,
            mail_max_attempts: 6,
            mail_retry_base_ms: 2_000,
            mail_concurrency: 8,
            sweep_interval_secs: 30,
        }
    }
}

/// The plugin runtime: compiled-code cache, per-call limits, circuit breaker, delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Directory of compiled components, by engine version and content hash (created if
    /// missing; safe to delete, components are recompiled from the registry).
    pub cache_dir: std::path::PathBuf,
    /// Largest component an upload may carry.
    pub max_component_bytes: usize,
    /// Instances the pooling allocator keeps slots for (concurrent plugin calls beyond it
    /// answer 503); 0 allocates on demand.
    pub pool_instances: u32,
    /// CPU budget of one call, in fuel units (about one per WebAssembly instruction).
    pub fuel: u64,
    /// Memory one call may grow to, in MiB.
    pub memory_mib: usize,
    /// Wall-clock bound of one call, host calls included.
    pub timeout_ms: u64,
    /// Largest answer of one call.
    pub output_bytes: usize,
    /// Consecutive failed calls that disable an installation.
    pub breaker_threshold: u32,
    /// Milliseconds between delivery rounds to integrations.
    pub delivery_interval_ms: u64,
    /// Deliveries of one event before it is set aside as a dead letter.
    pub delivery_max_attempts: u32,
    /// First retry delay; it doubles with each attempt (at most 5 minutes).
    pub retry_base_ms: u64,
}

impl From<&DatabaseConfig> for crate::db::PoolSettings {
    fn from(c: &DatabaseConfig) -> Self {
        Self {
            max_size: c.pool_max_size,
            timeout: std::time::Duration::from_millis(c.pool_timeout_ms),
            statement_timeout_ms: c.statement_timeout_ms,
        }
    }
}

impl PluginsConfig {
    /// The largest plugin upload body: a component of the largest size plus room for the
    /// manifest and the multipart framing.
    pub fn upload_limit(&self) -> usize {
        self.max_component_bytes + (1 << 20)
    }
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            cache_dir: "data/plugins".into(),
            max_component_bytes: 32 << 20,
            pool_instances: 100,
            fuel: 50_000_000,
            memory_mib: 32,
            timeout_ms: 2_000,
            output_bytes: 1 << 20,
            breaker_threshold: 5,
            delivery_interval_ms: 250,
            delivery_max_attempts: 5,
            retry_base_ms: 1_000,
        }
    }
}

/// The per-tenant full-text indexes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Directory holding one index directory per tenant (created if missing).
    pub data_dir: std::path::PathBuf,
    /// Indexes open at once (each holds a writer); idle ones are closed, least recently used
    /// first, and reopened on demand.
    pub max_open_indexes: usize,
    /// Milliseconds between indexing rounds of tenants written to recently: how far search
    /// trails writes while the instance runs.
    pub index_interval_ms: u64,
    /// Seconds between catch-up rounds over every tenant (after a restart, or writes made by
    /// another instance).
    pub sweep_interval_secs: u64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            data_dir: "data/search".into(),
            max_open_indexes: 50,
            index_interval_ms: 250,
            sweep_interval_secs: 30,
        }
    }
}

/// The audit log's sealing, forwarding and retention jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Master key of the per-tenant checkpoint signing keys (HMAC-SHA256); at least 32
    /// characters. Kept out of every tenant database; changing it makes old checkpoints fail
    /// verification.
    pub signing_key: Secret,
    /// Milliseconds between sealing rounds: how long a new entry waits, at most, before it is
    /// chained and signed (plus the round's own time).
    pub seal_interval_ms: u64,
    /// Seconds between sweeps of every tenant for unsealed entries written by another
    /// (perhaps crashed) instance.
    pub sweep_interval_secs: u64,
    /// Milliseconds between forwarding rounds to tenants' syslog collectors.
    pub forward_interval_ms: u64,
    /// Seconds between retention rounds (pruning by each tenant's policy).
    pub retention_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            signing_key: Secret::default(),
            seal_interval_ms: 250,
            sweep_interval_secs: 30,
            forward_interval_ms: 1000,
            retention_interval_secs: 3600,
        }
    }
}

/// The mail relay account mail (password reset) goes through: the platform's own mail to
/// local-mode tenants' users, and Keycloak's, set on every realm the platform manages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// How the connection to the relay is protected.
    pub security: SmtpSecurity,
    pub from: String,
    pub from_display_name: String,
}

/// Transport security towards the mail relay.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// No encryption: only for a relay on loopback (the devstack's sink, a local sidecar).
    Plain,
    /// Plain connection upgraded with STARTTLS (required; the relay's certificate is verified).
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 18025,
            security: SmtpSecurity::Starttls,
            from: "no-reply@neotenant.test".into(),
            from_display_name: "NeoTenantApi".into(),
        }
    }
}

/// Account self-service of local-mode tenants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountConfig {
    /// How long a password-reset token works, in seconds.
    pub password_reset_ttl_secs: u64,
    /// The page a password-reset mail links to (an http(s) URL; `{tenant}` is replaced by the
    /// tenant's slug); the token is appended as the fragment `#token=…`, which browsers do not
    /// send to servers.
    pub password_reset_url: String,
}

impl Default for AccountConfig {
    fn default() -> Self {
        Self {
            password_reset_ttl_secs: 1800,
            password_reset_url: "http://{tenant}.localhost:8080/reset-password".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsersConfig {
    /// Seconds between reconciliations of every tenant's users with Keycloak (0 disables the
    /// background job; `POST /admin/v1/tenants/{slug}/reconcile-users` still runs one).
    pub reconcile_interval_secs: u64,
    /// Seconds between writes of users' last-seen times: requests only note the time in
    /// memory, and each instance writes what it noted in one statement per tenant this often.
    pub seen_flush_secs: u64,
}

impl Default for UsersConfig {
    fn default() -> Self {
        Self {
            reconcile_interval_secs: 300,
            seen_flush_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Tenants are addressed as `<slug>.<base_domain>`.
    pub base_domain: String,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest accepted body of a streamed import (`…/import`), in bytes.
    pub max_import_bytes: u64,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// Directory of static assets (the Scalar script for `/docs`).
    pub assets_dir: PathBuf,
    /// Whether the `X-Tenant` header may select a tenant (local use; the Host subdomain always can).
    pub allow_tenant_header: bool,
    /// The bearer token `/metrics` requires. Empty: `/metrics` answers loopback clients only
    /// (its labels name tenants' databases).
    pub metrics_token: Secret,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".parse().expect("valid default address"),
            base_domain: "localhost".into(),
            max_body_bytes: 1024 * 1024,
            max_import_bytes: 100 * 1024 * 1024,
            shutdown_grace_secs: 20,
            assets_dir: PathBuf::from(".devstack/assets"),
            allow_tenant_header: true,
            metrics_token: Secret::new(""),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` (one object per line) or `pretty`.
    pub format: LogFormat,
    /// A tracing filter directive, e.g. `info` or `neotenant=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Server URL without a database name: `postgres://user:password@host:port`.
    /// Used for the registry database and as the default server of every region.
    pub url: Secret,
    /// Name of the platform registry database.
    #[serde(default = "default_registry_db")]
    pub registry_database: String,
    /// Per-region server URL overrides (`regions.eu = "postgres://…"`); absent regions use `url`.
    #[serde(default)]
    pub regions: BTreeMap<String, Secret>,
    /// Maximum connections per physical database pool.
    #[serde(default = "default_pool_max")]
    pub pool_max_size: u32,
    /// Milliseconds to wait for a pooled connection before answering 503.
    #[serde(default = "default_pool_timeout")]
    pub pool_timeout_ms: u64,
    /// Server-side statement timeout for pooled connections, in milliseconds.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout_ms: u64,
}

fn default_registry_db() -> String {
    "neofast_admin".into()
}
fn default_pool_max() -> u32 {
    16
}
fn default_pool_timeout() -> u64 {
    5_000
}
fn default_statement_timeout() -> u64 {
    15_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`.
    pub url: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token for the platform-admin API (`/admin/v1/...`); at least 32 characters.
    pub token: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenancyConfig {
    /// Seconds a resolved tenant stays in the in-process cache (changes are also broadcast).
    pub cache_ttl_secs: u64,
}

impl Default for TenancyConfig {
    fn default() -> Self {
        Self { cache_ttl_secs: 30 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeycloakConfig {
    /// Base URL of Keycloak, e.g. `http://127.0.0.1:18180`; realms live under `/realms/<name>`.
    pub url: String,
    /// Realm of the administrator account used to provision tenants.
    #[serde(default = "default_admin_realm")]
    pub admin_realm: String,
    /// Client the administrator logs in with (`admin-cli`).
    #[serde(default = "default_admin_client")]
    pub admin_client_id: String,
    pub admin_username: String,
    pub admin_password: Secret,
    /// Seconds a Keycloak admin call may take before it counts as failed.
    #[serde(default = "default_kc_timeout")]
    pub timeout_secs: u64,
}

fn default_admin_realm() -> String {
    "master".into()
}
fn default_admin_client() -> String {
    "admin-cli".into()
}
fn default_kc_timeout() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The audience every access token must carry (the API's client id in each realm).
    pub audience: String,
    /// Client that end users log in through; tokens it issues carry `audience`.
    pub app_client_id: String,
    /// Clock leeway for `exp`/`nbf`, in seconds.
    pub leeway_secs: u64,
    /// Largest accepted bearer token, in bytes.
    pub max_token_bytes: usize,
    /// Seconds after which a realm's signing keys are refreshed (in the background).
    pub jwks_refresh_secs: u64,
    /// Seconds cached keys keep validating while Keycloak cannot be reached.
    pub jwks_max_staleness_secs: u64,
    /// Minimum milliseconds between two key fetches of one realm triggered by unknown `kid`s.
    pub unknown_kid_refetch_ms: u64,
    /// Server-side key of the API-key hashes (HMAC-SHA256); at least 32 characters. Changing it
    /// invalidates every API key.
    pub api_key_secret: Secret,
    /// Seed of the Ed25519 key that signs local-mode tenants' tokens: 64 hex digits.
    pub local_signing_seed: Secret,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            audience: "neotenant-api".into(),
            app_client_id: "neotenant-app".into(),
            leeway_secs: 30,
            max_token_bytes: 8192,
            jwks_refresh_secs: 300,
            jwks_max_staleness_secs: 86_400,
            unknown_kid_refetch_ms: 10_000,
            api_key_secret: Secret::default(),
            local_signing_seed: Secret::default(),
        }
    }
}

/// A configuration problem that stops start-up; names the offending setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid setting `{key}`: {message}")]
    Setting { key: String, message: String },
}

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Setting {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Loads `path` (if it exists; a missing file that was asked for explicitly is an error)
    /// and overlays `NEOTENANT_*` variables from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.into(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse {
                        path: path.into(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        let mut layers = Layer::from_file(table);
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("NEOTENANT_") else {
                continue;
            };
            if rest == "CONFIG" {
                continue;
            }
            let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
            layers
                .set(&keys, value)
                .map_err(|m| bad(&format!("NEOTENANT_{rest}"), m))?;
        }
        let config: Config = serde_path_to_error::deserialize(layers).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().0;
            if key == "." {
                ConfigError::Invalid(message)
            } else {
                bad(&key, message)
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Semantic checks that the types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.max_body_bytes < 1024 || self.server.max_body_bytes > 256 * 1024 * 1024 {
            return Err(bad(
                "server.max_body_bytes",
                "must be between 1024 and 268435456",
            ));
        }
        let domain = &self.server.base_domain;
        if domain.is_empty()
            || !domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(bad("server.base_domain", "must be a DNS name"));
        }
        if self.server.shutdown_grace_secs > 600 {
            return Err(bad("server.shutdown_grace_secs", "must be at most 600"));
        }
        for (key, n) in [
            ("limits.api_keys_per_user", self.limits.api_keys_per_user),
            (
                "limits.oauth_clients_per_user",
                self.limits.oauth_clients_per_user,
            ),
            (
                "limits.webhook_endpoints_per_tenant",
                self.limits.webhook_endpoints_per_tenant,
            ),
        ] {
            if !(1..=100_000).contains(&n) {
                return Err(bad(key, "must be between 1 and 100000"));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| bad("log.level", e.to_string()))?;
        check_pg_url("database.url", self.database.url.expose())?;
        for (region, url) in &self.database.regions {
            let key = format!("database.regions.{region}");
            if region.parse::<Region>().is_err() {
                return Err(bad(&key, "unknown region (known: us, eu)"));
            }
            check_pg_url(&key, url.expose())?;
        }
        if !crate::db::is_identifier(&self.database.registry_database) {
            return Err(bad(
                "database.registry_database",
                "must be a lower-case identifier",
            ));
        }
        if !(1..=1000).contains(&self.database.pool_max_size) {
            return Err(bad("database.pool_max_size", "must be between 1 and 1000"));
        }
        if !(10..=120_000).contains(&self.database.pool_timeout_ms) {
            return Err(bad(
                "database.pool_timeout_ms",
                "must be between 10 and 120000",
            ));
        }
        if !(100..=3_600_000).contains(&self.database.statement_timeout_ms) {
            return Err(bad(
                "database.statement_timeout_ms",
                "must be between 100 and 3600000",
            ));
        }
        let redis = url::Url::parse(self.redis.url.expose())
            .map_err(|e| bad("redis.url", e.to_string()))?;
        if !matches!(redis.scheme(), "redis" | "rediss") {
            return Err(bad("redis.url", "scheme must be redis:// or rediss://"));
        }
        if self.admin.token.expose().len() < 32 {
            return Err(bad("admin.token", "must be at least 32 characters"));
        }
        let kc =
            url::Url::parse(&self.keycloak.url).map_err(|e| bad("keycloak.url", e.to_string()))?;
        if !matches!(kc.scheme(), "http" | "https") || kc.host_str().is_none() {
            return Err(bad("keycloak.url", "must be an http(s) URL with a host"));
        }
        if self.keycloak.admin_username.is_empty() {
            return Err(bad("keycloak.admin_username", "must not be empty"));
        }
        if !(1..=120).contains(&self.keycloak.timeout_secs) {
            return Err(bad("keycloak.timeout_secs", "must be between 1 and 120"));
        }
        for (key, value) in [
            ("auth.audience", &self.auth.audience),
            ("auth.app_client_id", &self.auth.app_client_id),
        ] {
            if value.is_empty() || value.len() > 100 {
                return Err(bad(key, "must be 1-100 characters"));
            }
        }
        if !(1024..=16 * 1024 * 1024 * 1024).contains(&self.server.max_import_bytes) {
            return Err(bad("server.max_import_bytes", "must be 1 KiB to 16 GiB"));
        }
        if self.search.data_dir.as_os_str().is_empty() {
            return Err(bad("search.data_dir", "must name a directory"));
        }
        if !(1..=100_000).contains(&self.search.max_open_indexes) {
            return Err(bad("search.max_open_indexes", "must be 1-100000"));
        }
        if !(10..=60_000).contains(&self.search.index_interval_ms) {
            return Err(bad("search.index_interval_ms", "must be 10-60000"));
        }
        let p = &self.plugins;
        if p.cache_dir.as_os_str().is_empty() {
            return Err(bad("plugins.cache_dir", "must name a directory"));
        }
        if !(1024..=(256 << 20)).contains(&p.max_component_bytes) {
            return Err(bad("plugins.max_component_bytes", "must be 1 KiB-256 MiB"));
        }
        if p.pool_instances > 10_000 {
            return Err(bad("plugins.pool_instances", "must be 0-10000"));
        }
        if !(100_000..=10_000_000_000).contains(&p.fuel) {
            return Err(bad("plugins.fuel", "must be 100000-10000000000"));
        }
        if !(1..=4096).contains(&p.memory_mib) {
            return Err(bad("plugins.memory_mib", "must be 1-4096"));
        }
        if !(10..=60_000).contains(&p.timeout_ms) {
            return Err(bad("plugins.timeout_ms", "must be 10-60000"));
        }
        if !(1024..=(64 << 20)).contains(&p.output_bytes) {
            return Err(bad("plugins.output_bytes", "must be 1 KiB-64 MiB"));
        }
        if !(1..=1000).contains(&p.breaker_threshold) {
            return Err(bad("plugins.breaker_threshold", "must be 1-1000"));
        }
        if !(10..=60_000).contains(&p.delivery_interval_ms) {
            return Err(bad("plugins.delivery_interval_ms", "must be 10-60000"));
        }
        if !(1..=100).contains(&p.delivery_max_attempts) {
            return Err(bad("plugins.delivery_max_attempts", "must be 1-100"));
        }
        if !(10..=600_000).contains(&p.retry_base_ms) {
            return Err(bad("plugins.retry_base_ms", "must be 10-600000"));
        }
        if !(1..=86_400).contains(&self.search.sweep_interval_secs) {
            return Err(bad("search.sweep_interval_secs", "must be 1-86400"));
        }
        if self.audit.signing_key.expose().len() < 32 {
            return Err(bad("audit.signing_key", "must be at least 32 characters"));
        }
        if !(10..=60_000).contains(&self.audit.seal_interval_ms) {
            return Err(bad(
                "audit.seal_interval_ms",
                "must be between 10 and 60000",
            ));
        }
        if !(1..=86_400).contains(&self.audit.sweep_interval_secs) {
            return Err(bad(
                "audit.sweep_interval_secs",
                "must be between 1 and 86400",
            ));
        }
        if !(10..=600_000).contains(&self.audit.forward_interval_ms) {
            return Err(bad(
                "audit.forward_interval_ms",
                "must be between 10 and 600000",
            ));
        }
        if !(1..=604_800).contains(&self.audit.retention_interval_secs) {
            return Err(bad(
                "audit.retention_interval_secs",
                "must be between 1 and 604800",
            ));
        }
        if self.auth.api_key_secret.expose().len() < 32 {
            return Err(bad("auth.api_key_secret", "must be at least 32 characters"));
        }
        // Any 32 bytes are an Ed25519 seed: the check is the encoding.
        if hex::decode(self.auth.local_signing_seed.expose()).map(|b| b.len()) != Ok(32) {
            return Err(bad("auth.local_signing_seed", "must be 64 hex digits"));
        }
        if self.auth.leeway_secs > 300 {
            return Err(bad("auth.leeway_secs", "must be at most 300"));
        }
        if !(1024..=65536).contains(&self.auth.max_token_bytes) {
            return Err(bad(
                "auth.max_token_bytes",
                "must be between 1024 and 65536",
            ));
        }
        if !(10..=86_400).contains(&self.auth.jwks_refresh_secs) {
            return Err(bad(
                "auth.jwks_refresh_secs",
                "must be between 10 and 86400",
            ));
        }
        if self.auth.jwks_max_staleness_secs < self.auth.jwks_refresh_secs {
            return Err(bad(
                "auth.jwks_max_staleness_secs",
                "must be at least auth.jwks_refresh_secs",
            ));
        }
        if !(100..=3_600_000).contains(&self.auth.unknown_kid_refetch_ms) {
            return Err(bad(
                "auth.unknown_kid_refetch_ms",
                "must be between 100 and 3600000",
            ));
        }
        self.rate_limit
            .validate()
            .map_err(|(key, message)| bad(key, message))?;
        if !(1..=3600).contains(&self.users.seen_flush_secs) {
            return Err(bad("users.seen_flush_secs", "must be 1-3600"));
        }
        if self.users.reconcile_interval_secs != 0 && self.users.reconcile_interval_secs < 10 {
            return Err(bad(
                "users.reconcile_interval_secs",
                "must be 0 (off) or at least 10",
            ));
        }
        if self.smtp.host.is_empty() || self.smtp.port == 0 {
            return Err(bad("smtp.host", "host and port must be set"));
        }
        if !self.smtp.from.contains('@') {
            return Err(bad("smtp.from", "must be an email address"));
        }
        if !(60..=86_400).contains(&self.account.password_reset_ttl_secs) {
            return Err(bad(
                "account.password_reset_ttl_secs",
                "must be between 60 and 86400",
            ));
        }
        let reset_url = self
            .account
            .password_reset_url
            .replace("{tenant}", "tenant");
        match url::Url::parse(&reset_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.fragment().is_none() => {}
            _ => {
                return Err(bad(
                    "account.password_reset_url",
                    "must be an http(s) URL without a fragment",
                ));
            }
        }
        let inv = &self.invitations;
        match url::Url::parse(&inv.accept_url.replace("{tenant}", "tenant")) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.fragment().is_none() => {}
            _ => {
                return Err(bad(
                    "invitations.accept_url",
                    "must be an http(s) URL without a fragment",
                ));
            }
        }
        if !(1..=2160).contains(&inv.default_expiry_hours) {
            return Err(bad(
                "invitations.default_expiry_hours",
                "must be between 1 and 2160",
            ));
        }
        if inv.per_inviter_per_hour == 0 || inv.per_tenant_per_hour == 0 {
            return Err(bad(
                "invitations.per_inviter_per_hour",
                "hourly limits must be at least 1",
            ));
        }
        if !(1..=50).contains(&inv.mail_max_attempts) {
            return Err(bad(
                "invitations.mail_max_attempts",
                "must be between 1 and 50",
            ));
        }
        if !(10..=3_600_000).contains(&inv.mail_retry_base_ms) {
            return Err(bad(
                "invitations.mail_retry_base_ms",
                "must be between 10 and 3600000",
            ));
        }
        if !(1..=64).contains(&inv.mail_concurrency) {
            return Err(bad(
                "invitations.mail_concurrency",
                "must be between 1 and 64",
            ));
        }
        if !(1..=3600).contains(&inv.sweep_interval_secs) {
            return Err(bad(
                "invitations.sweep_interval_secs",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=3600).contains(&self.flags.schedule_interval_secs) {
            return Err(bad(
                "flags.schedule_interval_secs",
                "must be between 1 and 3600",
            ));
        }
        if self.tenancy.cache_ttl_secs > 3600 {
            return Err(bad("tenancy.cache_ttl_secs", "must be at most 3600"));
        }
        self.notifications.validate().map_err(|(k, m)| bad(k, m))?;
        self.secrets.validate().map_err(|(k, m)| bad(k, m))?;
        self.webhooks.validate().map_err(|(k, m)| bad(k, m))?;
        Ok(())
    }

    /// Server URL (no database name) of a region.
    pub fn region_server_url(&self, region: Region) -> &str {
        self.database
            .regions
            .get(region.as_str())
            .unwrap_or(&self.database.url)
            .expose()
    }
}

fn check_pg_url(key: &str, raw: &str) -> Result<(), ConfigError> {
    let url = url::Url::parse(raw).map_err(|e| bad(key, e.to_string()))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(bad(key, "scheme must be postgres://"));
    }
    if url.host_str().is_none() {
        return Err(bad(key, "needs a host"));
    }
    if !matches!(url.path(), "" | "/") {
        return Err(bad(
            key,
            "must not name a database (databases are chosen per tenant)",
        ));
    }
    Ok(())
}

/// Rate-limit settings (`[rate_limit]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Sustained requests per second per client IP, and the burst above it.
    pub per_ip_per_sec: f64,
    pub per_ip_burst: u32,
    /// Sustained requests per second per user (token subject), and the burst above it.
    pub per_user_per_sec: f64,
    pub per_user_burst: u32,
    /// Failed authentications of one credential or account from one IP within
    /// `failure_window_secs` that lock that pair out (and, for a password login, the account
    /// from every address, as Keycloak's brute-force detection does).
    pub max_auth_failures: u32,
    /// Failed authentications from one IP, whatever they name, within `failure_window_secs`
    /// that lock the whole address out (spraying); much higher, so users behind one NAT
    /// address do not lock one another out. Never below `max_auth_failures`.
    pub max_auth_failures_per_ip: u32,
    pub failure_window_secs: u64,
    /// How long a lockout lasts.
    pub lockout_secs: u64,
    /// Prefix of every Redis key (deployments sharing one Redis use different ones).
    pub namespace: String,
    /// Take the client IP from the first `X-Forwarded-For` entry (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
    /// How long an instance may spend tokens it took from Redis in advance (a lease of up to
    /// this long at the bucket's rate, at most a quarter of its burst and 1,024). 0 asks
    /// Redis on every request. The shared budget stays exact either way; a lease only moves
    /// when its tokens are spent, and a lockout set by another instance is seen within it.
    pub lease_ms: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_ip_per_sec: 200.0,
            per_ip_burst: 400,
            per_user_per_sec: 100.0,
            per_user_burst: 200,
            max_auth_failures: 20,
            max_auth_failures_per_ip: 200,
            failure_window_secs: 60,
            lockout_secs: 300,
            namespace: "neotenant:rl".into(),
            trust_forwarded_for: false,
            lease_ms: 50,
        }
    }
}

impl RateLimitConfig {
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if !(0.01..=1_000_000.0).contains(&self.per_ip_per_sec) {
            return Err((
                "rate_limit.per_ip_per_sec",
                "must be between 0.01 and 1000000",
            ));
        }
        if !(0.01..=1_000_000.0).contains(&self.per_user_per_sec) {
            return Err((
                "rate_limit.per_user_per_sec",
                "must be between 0.01 and 1000000",
            ));
        }
        if self.per_ip_burst == 0 || self.per_user_burst == 0 {
            return Err(("rate_limit.per_ip_burst", "bursts must be at least 1"));
        }
        if self.max_auth_failures == 0 {
            return Err(("rate_limit.max_auth_failures", "must be at least 1"));
        }

        if !(1..=86_400).contains(&self.failure_window_secs)
            || !(1..=86_400).contains(&self.lockout_secs)
        {
            return Err((
                "rate_limit.lockout_secs",
                "windows must be between 1 and 86400 seconds",
            ));
        }
        if self.namespace.is_empty() || self.namespace.len() > 64 {
            return Err(("rate_limit.namespace", "must be 1-64 characters"));
        }
        if self.lease_ms > 1_000 {
            return Err(("rate_limit.lease_ms", "must be between 0 and 1000"));
        }
        Ok(())
    }
}

/// The outcome of one check.
#[cfg(test)]
mod tests {
    use super::*;

    fn base_env() -> Vec<(String, String)> {
        vec![
            (
                "NEOTENANT_DATABASE__URL".into(),
                "postgres://u:p@127.0.0.1:5432".into(),
            ),
            (
                "NEOTENANT_REDIS__URL".into(),
                "redis://127.0.0.1:6379".into(),
            ),
            ("NEOTENANT_ADMIN__TOKEN".into(), "x".repeat(40)),
            (
                "NEOTENANT_KEYCLOAK__URL".into(),
                "http://127.0.0.1:1".into(),
            ),
            ("NEOTENANT_KEYCLOAK__ADMIN_USERNAME".into(), "admin".into()),
            ("NEOTENANT_AUTH__API_KEY_SECRET".into(), "k".repeat(40)),
            ("NEOTENANT_AUTH__LOCAL_SIGNING_SEED".into(), "ab".repeat(32)),
            ("NEOTENANT_AUDIT__SIGNING_KEY".into(), "a".repeat(40)),
            ("NEOTENANT_SECRETS__MASTER_KEY_ID".into(), "k1".into()),
            ("NEOTENANT_SECRETS__MASTER_KEY".into(), "cd".repeat(32)),
            (
                "NEOTENANT_KEYCLOAK__ADMIN_PASSWORD".into(),
                "kc-secret".into(),
            ),
        ]
    }

    #[test]
    fn env_overrides_and_types() {
        let mut env = base_env();
        env.push(("NEOTENANT_SERVER__MAX_BODY_BYTES".into(), "4096".into()));
        env.push((
            "NEOTENANT_SERVER__ALLOW_TENANT_HEADER".into(),
            "false".into(),
        ));
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.server.max_body_bytes, 4096);
        assert!(!c.server.allow_tenant_header);
        assert_eq!(
            c.region_server_url(Region::Eu),
            "postgres://u:p@127.0.0.1:5432"
        );
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases = [
            (
                "NEOTENANT_SERVER__MAX_BODY_BYTES",
                "12",
                "server.max_body_bytes",
            ),
            ("NEOTENANT_ADMIN__TOKEN", "short", "admin.token"),
            ("NEOTENANT_DATABASE__URL", "mysql://x", "database.url"),
            ("NEOTENANT_DATABASE__URL", "postgres://h/db", "database.url"),
            ("NEOTENANT_REDIS__URL", "http://x", "redis.url"),
            ("NEOTENANT_LOG__LEVEL", "[[[", "log.level"),
            (
                "NEOTENANT_DATABASE__REGIONS__MARS",
                "postgres://h",
                "database.regions.mars",
            ),
            ("NEOTENANT_KEYCLOAK__URL", "ftp://x", "keycloak.url"),
            (
                "NEOTENANT_AUTH__MAX_TOKEN_BYTES",
                "10",
                "auth.max_token_bytes",
            ),
            (
                "NEOTENANT_AUTH__JWKS_MAX_STALENESS_SECS",
                "20",
                "auth.jwks_max_staleness_secs",
            ),
            (
                "NEOTENANT_AUTH__API_KEY_SECRET",
                "short",
                "auth.api_key_secret",
            ),
            (
                "NEOTENANT_AUTH__LOCAL_SIGNING_SEED",
                "xyz",
                "auth.local_signing_seed",
            ),
            (
                "NEOTENANT_SECRETS__MASTER_KEY",
                "0123",
                "secrets.master_key",
            ),
            (
                "NEOTENANT_SECRETS__MASTER_KEY_ID",
                "a b",
                "secrets.master_key_id",
            ),
            (
                "NEOTENANT_WEBHOOKS__RETRY_SCHEDULE",
                "0,5,soon",
                "webhooks.retry_schedule",
            ),
            ("NEOTENANT_WEBHOOKS__TIMEOUT_MS", "5", "webhooks.timeout_ms"),
            (
                "NEOTENANT_RATE_LIMIT__PER_IP_PER_SEC",
                "0",
                "rate_limit.per_ip_per_sec",
            ),
            (
                "NEOTENANT_USERS__RECONCILE_INTERVAL_SECS",
                "3",
                "users.reconcile_interval_secs",
            ),
            ("NEOTENANT_SMTP__FROM", "nobody", "smtp.from"),
            ("NEOTENANT_SMTP__SECURITY", "ssl", "smtp.security"),
            (
                "NEOTENANT_ACCOUNT__PASSWORD_RESET_TTL_SECS",
                "5",
                "account.password_reset_ttl_secs",
            ),
            (
                "NEOTENANT_ACCOUNT__PASSWORD_RESET_URL",
                "ftp://x/reset",
                "account.password_reset_url",
            ),
            (
                "NEOTENANT_ACCOUNT__PASSWORD_RESET_URL",
                "https://{tenant}.example.com/reset#x",
                "account.password_reset_url",
            ),
            ("NEOTENANT_AUDIT__SIGNING_KEY", "short", "audit.signing_key"),
            (
                "NEOTENANT_SEARCH__MAX_OPEN_INDEXES",
                "0",
                "search.max_open_indexes",
            ),
            (
                "NEOTENANT_SEARCH__INDEX_INTERVAL_MS",
                "5",
                "search.index_interval_ms",
            ),
            (
                "NEOTENANT_AUDIT__SEAL_INTERVAL_MS",
                "0",
                "audit.seal_interval_ms",
            ),
            ("NEOTENANT_PLUGINS__FUEL", "5", "plugins.fuel"),
            ("NEOTENANT_PLUGINS__TIMEOUT_MS", "0", "plugins.timeout_ms"),
            (
                "NEOTENANT_PLUGINS__BREAKER_THRESHOLD",
                "0",
                "plugins.breaker_threshold",
            ),
        ];
        for (var, value, key) in cases {
            let mut env = base_env();
            env.push((var.into(), value.into()));
            let err = Config::load(None, env).unwrap_err().to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused() {
        let mut env = base_env();
        env.push(("NEOTENANT_SERVER__BINDD".into(), "x".into()));
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("bindd"), "{err}");
        let mut env = base_env();
        env.push(("NEOTENANT_SERVER__BIND".into(), "not an address".into()));
        assert!(Config::load(None, env).is_err());
    }

    #[test]
    fn overrides_are_parsed_as_the_field_they_set() {
        let mut env = base_env();
        env.retain(|(k, _)| k != "NEOTENANT_KEYCLOAK__ADMIN_PASSWORD");
        env.extend(
            [
                ("NEOTENANT_KEYCLOAK__ADMIN_PASSWORD", "123456"),
                ("NEOTENANT_KEYCLOAK__ADMIN_USERNAME", "007"),
                ("NEOTENANT_SMTP__FROM_DISPLAY_NAME", "true"),
                ("NEOTENANT_RATE_LIMIT__NAMESPACE", "1.5"),
                ("NEOTENANT_RATE_LIMIT__PER_IP_PER_SEC", "0.5"),
                ("NEOTENANT_RATE_LIMIT__PER_USER_PER_SEC", "3"),
                ("NEOTENANT_RATE_LIMIT__ENABLED", "false"),
                ("NEOTENANT_RATE_LIMIT__TRUST_FORWARDED_FOR", "true"),
                ("NEOTENANT_SMTP__PORT", "2525"),
                ("NEOTENANT_LOG__FORMAT", "pretty"),
                ("NEOTENANT_SERVER__BIND", "127.0.0.1:9999"),
                (
                    "NEOTENANT_DATABASE__REGIONS__EU",
                    "postgres://eu:1@127.0.0.2:5432",
                ),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.keycloak.admin_password.expose(), "123456");
        assert_eq!(c.keycloak.admin_username, "007");
        assert_eq!(c.smtp.from_display_name, "true");
        assert_eq!(c.rate_limit.namespace, "1.5");
        assert_eq!(c.rate_limit.per_ip_per_sec, 0.5);
        assert_eq!(c.rate_limit.per_user_per_sec, 3.0);
        assert!(!c.rate_limit.enabled);
        assert!(c.rate_limit.trust_forwarded_for);
        assert_eq!(c.smtp.port, 2525);
        assert_eq!(c.log.format, LogFormat::Pretty);
        assert_eq!(c.server.bind.port(), 9999);
        assert_eq!(
            c.region_server_url(Region::Eu),
            "postgres://eu:1@127.0.0.2:5432"
        );
        assert!(
            !format!("{c:?}").contains("123456"),
            "the secret stays redacted"
        );
    }

    #[test]
    fn overrides_that_do_not_parse_name_the_setting() {
        for (var, value, key) in [
            ("NEOTENANT_RATE_LIMIT__ENABLED", "yes", "rate_limit.enabled"),
            (
                "NEOTENANT_RATE_LIMIT__PER_IP_PER_SEC",
                "fast",
                "rate_limit.per_ip_per_sec",
            ),
            ("NEOTENANT_SMTP__PORT", "70000", "smtp.port"),
            (
                "NEOTENANT_SERVER__MAX_BODY_BYTES",
                "-1",
                "server.max_body_bytes",
            ),
            ("NEOTENANT_PLUGINS__FUEL", "1.5", "plugins.fuel"),
            ("NEOTENANT_LOG__FORMAT", "xml", "log.format"),
            ("NEOTENANT_SERVER", "x", "server"),
        ] {
            let mut env = base_env();
            env.push((var.into(), value.into()));
            let err = Config::load(None, env).unwrap_err().to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
        }
        let mut env = base_env();
        env.push(("NEOTENANT_RATE_LIMIT__NAMESPACE__X".into(), "1".into()));
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("rate_limit.namespace"), "{err}");
    }

    #[test]
    fn the_file_stays_typed_as_toml() {
        let dir = std::env::temp_dir().join(format!("neotenant-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("typed.toml");
        std::fs::write(
            &path,
            "[smtp]\nport = 2526\n[rate_limit]\nper_ip_per_sec = 0.25\n",
        )
        .unwrap();
        let c = Config::load(Some(path.as_path()), base_env()).unwrap();
        assert_eq!((c.smtp.port, c.rate_limit.per_ip_per_sec), (2526, 0.25));
        let mut env = base_env();
        env.push(("NEOTENANT_SMTP__PORT".into(), "2527".into()));
        assert_eq!(
            Config::load(Some(path.as_path()), env).unwrap().smtp.port,
            2527
        );
        std::fs::write(&path, "[smtp]\nport = \"2526\"\n").unwrap();
        let err = Config::load(Some(path.as_path()), base_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("smtp.port"), "{err}");
        std::fs::write(&path, "[server]\nbindd = \"x\"\n").unwrap();
        let err = Config::load(Some(path.as_path()), base_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bindd"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let c = Config::load(None, base_env()).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("u:p@"), "{debug}");
        assert!(!debug.contains(&"x".repeat(40)));
        assert!(!debug.contains("kc-secret"));
        assert!(!debug.contains(&"k".repeat(40)), "API key secret redacted");
        assert!(!debug.contains(&"ab".repeat(32)), "signing seed redacted");
    }
}
