//! API keys: long-lived credentials a user makes for scripts and integrations, accepted as
//! `Authorization: Bearer ntk_…` or `X-Api-Key: ntk_…` in place of an access token.
//!
//! Owns key format, storage and verification. **Invariants:** the full key is shown exactly
//! once, at creation; the database holds only its visible prefix and an HMAC-SHA256 of the
//! secret under a server-side key (`auth.api_key_secret`), compared in constant time; a key
//! acts as its owner, never as more (scopes only narrow it; enforcing them is RBAC's); a
//! revoked key is refused by every instance at once, through the session revocation broadcast.
//! Never logs a key.
//!
//! Shape: `handlers` → `service` (create with the secret shown once, the keyed digest,
//! verification on the request path in one query, revocation with its broadcast) → `repo`
//! (SQL). This file holds the models, the key prefix and the per-instance usage throttle.

pub mod handlers;
pub mod policy;
pub mod repo;
pub mod service;

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::ApiKeyId;

pub const KEY_PREFIX: &str = "ntk_";
const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// Whether a bearer credential is an API key rather than a JWT.
pub fn is_api_key(credential: &str) -> bool {
    credential.starts_with(KEY_PREFIX)
}

/// A key as listed (never with its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub name: String,
    /// The visible start of the key, to recognise it.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
    /// The API version requests with this key get when they send no `NeoTenant-Version`.
    pub api_version: String,
    /// The key's own rate limit; absent: the tenant's per-user rate (in a bucket of its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<KeyRate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<KeyQuota>,
}

/// A key's own rate: `per_sec` requests a second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.apikeys.KeyRate"))]
pub struct KeyRate {
    /// More than 0, at most the tenant's per-user rate.
    pub per_sec: f64,
    /// 1 to the tenant's per-user burst.
    pub burst: u32,
}

/// Credits: each request spends one; none left is 429 `quota-exceeded`. With `refill`, the
/// credits are set back to `refill.amount` every `refill.interval_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.apikeys.KeyQuota"))]
pub struct KeyQuota {
    /// Credits to start with (0 to 10^12).
    pub credits: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<Refill>,
}

/// A periodic refill of credits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.apikeys.Refill"))]
pub struct Refill {
    /// Credits after each refill (1 to 10^12).
    pub amount: i64,
    /// Seconds between refills (60 to 31,622,400), counted from the Unix epoch: a daily refill
    /// happens at midnight UTC.
    pub interval_secs: i64,
}

/// A change of a key's policy: each field present replaces the key's (`null` removes a rate
/// limit or quota). A quota given sets the credits left to its `credits`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.apikeys.KeyPolicyPatch"))]
pub struct KeyPolicyPatch {
    #[serde(default, deserialize_with = "crate::patch::present")]
    #[salvo(schema(value_type = Option<KeyRate>))]
    pub rate_limit: Option<Option<KeyRate>>,
    #[serde(default, deserialize_with = "crate::patch::present")]
    #[salvo(schema(value_type = Option<KeyQuota>))]
    pub quota: Option<Option<KeyQuota>>,
    #[serde(default)]
    pub api_version: Option<String>,
}

/// A key's use: its quota's credits left and requests per UTC day.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.apikeys.KeyUsage"))]
pub struct KeyUsage {
    pub id: ApiKeyId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<KeyQuota>,
    /// Credits left now (absent without a quota).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits_left: Option<i64>,
    /// Requests per day, oldest first, today last.
    pub days: Vec<UsageDay>,
}

/// Requests of one UTC day.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.apikeys.UsageDay"))]
pub struct UsageDay {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Requests let through.
    pub requests: u64,
    /// Requests refused by the key's rate limit or quota.
    pub refused: u64,
}

/// A new key: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// The full key. Store it now: it cannot be shown again.
    pub secret: String,
}

/// Input for a new key.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(example = json!({"name": "nightly export", "scopes": ["resources.read.tenant"],
    "expires_in_days": 90, "rate_limit": {"per_sec": 5.0, "burst": 20},
    "quota": {"credits": 10000, "refill": {"amount": 10000, "interval_secs": 86400}}})))]
pub struct NewApiKey {
    /// 1-100 characters.
    pub name: String,
    /// 1-100 permissions (`resource.action.scope`) the key is limited to, each one the maker
    /// holds: the key may do only what both they and its owner allow.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Days until the key stops working (1-3650); absent means it does not expire.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
    /// The version to pin the key to; absent: the newest (`GET /v1/api-versions`).
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub rate_limit: Option<KeyRate>,
    #[serde(default)]
    pub quota: Option<KeyQuota>,
}

/// The session id under which a key's revocation is broadcast.
pub fn revocation_id(id: ApiKeyId) -> String {
    format!("apikey:{id}")
}

/// When each key's `last_used_at` was last written by this instance.
#[derive(Default)]
pub struct UsageThrottle {
    written: RwLock<HashMap<Uuid, Instant>>,
}

impl UsageThrottle {
    /// Whether `key`'s last use is due to be written (not written by this instance in the last
    /// minute); if so, marks it written now.
    pub fn due(&self, key: Uuid) -> bool {
        let stale = self
            .written
            .read()
            .expect("usage lock")
            .get(&key)
            .is_none_or(|t| t.elapsed() >= LAST_USED_EVERY);
        if stale {
            self.written
                .write()
                .expect("usage lock")
                .insert(key, Instant::now());
        }
        stale
    }
}
