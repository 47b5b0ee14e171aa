//! Feature flags of a tenant: definitions (the `neotenant-flags` model: variants, per
//! environment a kill switch, rules on context attributes, roles, teams and segments, sticky
//! rollouts compatible with flagd, prerequisites), segments, scheduled changes, SDK keys per
//! environment, and evaluation — over REST and over the OpenFeature Remote Evaluation Protocol
//! (`handlers/ofrep.rs`).
//!
//! Shape: `repo` (SQL), `service` (validation against the tenant's environments and known
//! attributes, every change a version with author, time and diff, audited, with an outbox
//! event, announced to every instance; rollback; kill switch; segments; SDK keys;
//! evaluation), `schedule` (scheduled changes applied by a background worker through the same
//! write path), `handlers/` (HTTP: REST under `/v1/flags`, `/v1/flag-segments`,
//! `/v1/flag-environments`; OFREP under `/ofrep/v1`).
//!
//! Evaluation reads a [`FlagSet`] per tenant (every flag, segment and SDK key, at one
//! generation) from a [`crate::versioned_cache`]: no database round trip while it is cached.
//! Nothing changes a flag except a new version — scheduled changes and kill switches included.
//! Never stores an SDK key, only its SHA-256.

pub mod handlers;
pub mod repo;
pub mod schedule;
pub mod service;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::audit::recent::Recent;
use crate::config::Config;
use crate::settings::SettingsState;
use crate::tenancy::TenancyState;

/// Prefix of SDK keys.
pub const SDK_KEY_PREFIX: &str = "ntf_";
/// How long a tenant's flag set is served from memory without a broadcast.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Context attributes every rule may use, besides the tenant's declared ones and its users'
/// attribute schema: filled in from the caller when a user evaluates.
pub const BUILT_IN_ATTRIBUTES: &[&str] = &["email", "roles", "teams", "user_id", "environment"];

/// What flags need.
pub struct FlagsState {
    pub config: Arc<Config>,
    pub cache: Arc<crate::versioned_cache::VersionedCache<FlagSet>>,
    pub settings: Arc<SettingsState>,
    pub tenancy: Arc<TenancyState>,
    pub audit_recent: Arc<Recent>,
}

/// Every flag, segment and live SDK key of a tenant at one generation, ready to evaluate.
#[derive(Debug)]
pub struct FlagSet {
    pub generation: i64,
    pub snapshot: neotenant_flags::Snapshot,
    /// SHA-256 of each live SDK key → its environment.
    pub sdk_keys: HashMap<[u8; 32], String>,
}

impl crate::versioned_cache::Versioned for FlagSet {
    fn version(&self) -> i64 {
        self.generation
    }
}

/// A flag as answered.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.flags.Flag"))]
pub struct FlagView {
    pub key: String,
    /// Increases with every change; the ETag is `"f<version>"`.
    pub version: i32,
    /// The definition: kind, variants, prerequisites and, per environment, kill switch,
    /// off variant, rules and default.
    pub definition: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<crate::ids::UserId>,
}

impl FlagView {
    pub fn etag(&self) -> String {
        format!("\"f{}\"", self.version)
    }
}

/// A segment as answered.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.flags.Segment"))]
pub struct SegmentView {
    pub key: String,
    pub version: i32,
    /// Description and conditions (all must match).
    pub definition: Value,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<crate::ids::UserId>,
}

/// One version of a flag or segment.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.flags.Version"))]
pub struct VersionView {
    pub version: i32,
    pub author: crate::settings::Author,
    pub at: DateTime<Utc>,
    /// Empty for an edit; `rollback to N`, `kill switch`, `scheduled change <id>`, `deleted`.
    pub reason: String,
    /// What changed from the version before (JSON pointers into the definition).
    pub diff: Vec<crate::settings::diff::Change>,
    /// The definition it set (`null` for a deletion; absent in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<Value>,
}

/// A scheduled change.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.flags.Schedule"))]
pub struct ScheduleView {
    pub id: Uuid,
    pub flag_key: String,
    pub apply_at: DateTime<Utc>,
    /// A JSON merge patch on the flag's definition.
    pub patch: Value,
    pub reason: String,
    /// `pending`, `applied`, `failed` or `cancelled`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_version: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A change to make later.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.flags.NewSchedule"))]
pub struct NewSchedule {
    /// When to apply it (in the future, within a year).
    pub apply_at: DateTime<Utc>,
    /// A JSON merge patch on the flag's definition; it must give a valid flag today.
    pub patch: Value,
    #[serde(default)]
    pub reason: String,
}

/// An SDK key (its secret only when created).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.flags.SdkKey"))]
pub struct SdkKeyView {
    pub id: Uuid,
    pub environment: String,
    pub name: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    /// The whole key: shown once, when created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Input for an SDK key.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.flags.NewSdkKey"))]
pub struct NewSdkKey {
    /// 1-100 characters.
    pub name: String,
}

/// The kill switch of one environment.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.flags.Switch"))]
pub struct Switch {
    /// `false` serves the off variant to everyone in the environment.
    pub enabled: bool,
}

/// A REST evaluation request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.flags.EvaluationRequest"))]
pub struct EvaluationRequest {
    /// The environment (default: the first of the tenant's environments).
    #[serde(default)]
    pub environment: Option<String>,
    /// `targetingKey` and attributes, used as given.
    #[serde(default)]
    pub context: serde_json::Map<String, Value>,
}

/// One flag's evaluation as answered (OFREP's shape).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[salvo(schema(name = "neotenant.flags.Evaluation"))]
pub struct EvaluationView {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub reason: String,
    /// `FLAG_NOT_FOUND`, `TARGETING_KEY_MISSING`, `INVALID_CONTEXT` or `GENERAL` on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_details: Option<String>,
    pub metadata: Value,
}
