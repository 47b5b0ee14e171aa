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
pub struct NewApiKey {
    /// 1-100 characters.
    pub name: String,
    /// Permissions (`resource.action.scope`) the key is limited to; empty means the owner's.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Days until the key stops working (1-3650); absent means it does not expire.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
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
