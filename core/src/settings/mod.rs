//! Tenant settings: the platform's typed catalogue (general, branding, notifications,
//! integrations, API limits, compliance, invitations, flags) plus the tenant's own custom
//! settings under their own JSON Schema, stored as one versioned state per tenant.
//!
//! Shape: `catalogue` (what a setting is: schema, defaults, checks), `diff` (what changed),
//! `repo` (SQL), `service` (merge patch, validation, versions, rollback, logo; each change
//! audited with an outbox event), `handlers` (HTTP). The effective settings of each tenant
//! are cached for an hour in a [`crate::versioned_cache`], dropped on every instance when a
//! change is published.
//!
//! Other modules read what they obey from [`Effective`] — the rate limiter's per-tenant rate
//! and quota, invitation lifetime and domains, audit retention — so a change here changes
//! behaviour. Never stores a secret: settings are readable by anyone allowed
//! `settings.read`.

pub mod catalogue;
pub mod diff;
pub mod handlers;
pub mod repo;
pub mod service;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::audit::recent::Recent;
use crate::config::Config;
use crate::ids::UserId;

/// How long a tenant's settings are served from memory without a broadcast.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// What settings need: the catalogue, the cache and its broadcast.
pub struct SettingsState {
    pub config: Arc<Config>,
    pub catalogue: Arc<catalogue::Catalogue>,
    pub cache: Arc<crate::versioned_cache::VersionedCache<Effective>>,
    pub audit_recent: Arc<Recent>,
}

/// A tenant's settings as the system obeys them: the merged document and the typed values
/// other modules read.
#[derive(Debug, Clone)]
pub struct Effective {
    pub version: i32,
    /// Defaults with the tenant's values laid over them, read-only keys filled in.
    pub merged: Value,
    /// The tenant's own values only.
    pub values: Value,
    pub custom_schema: Option<Value>,
    pub updated_at: Option<DateTime<Utc>>,
    pub updated_by: Option<Uuid>,
    pub api: ApiLimits,
    pub integrations: IntegrationSettings,
    pub invitations: InvitationSettings,
    pub audit_retention_days: Option<i32>,
    pub flag_environments: Vec<String>,
    /// Context attributes flag rules may name, besides the built-in ones.
    pub flag_attributes: Vec<String>,
}

/// The tenant's API limits; `None` leaves the platform's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiLimits {
    pub per_user_per_sec: Option<f64>,
    pub per_user_burst: Option<u32>,
    pub requests_per_day: Option<u64>,
}

impl ApiLimits {
    /// The per-user rate and burst the tenant's callers get: its own where set, but never
    /// above the platform's (a tenant can only lower them); `None` when it sets neither.
    pub fn user_rate(&self, platform: &crate::config::RateLimitConfig) -> Option<(f64, u32)> {
        if self.per_user_per_sec.is_none() && self.per_user_burst.is_none() {
            return None;
        }
        Some(self.user_ceiling(platform))
    }

    /// [`Self::user_rate`], the platform's where the tenant sets nothing.
    pub fn user_ceiling(&self, platform: &crate::config::RateLimitConfig) -> (f64, u32) {
        (
            self.per_user_per_sec
                .map_or(platform.per_user_per_sec, |r| {
                    r.min(platform.per_user_per_sec)
                }),
            self.per_user_burst
                .map_or(platform.per_user_burst, |b| b.min(platform.per_user_burst)),
        )
    }
}

/// What the tenant asks of its outgoing calls (webhook deliveries, plugin HTTP). Each value can
/// only make them shorter, gentler or narrower than the platform's `[webhooks]`, never more:
/// `None` and an empty list leave the platform's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntegrationSettings {
    pub webhook_timeout_ms: Option<u64>,
    pub webhook_max_attempts: Option<u32>,
    pub webhook_retry_base_ms: Option<u64>,
    /// The only hosts (and their subdomains) its webhooks and plugins may call; empty: any
    /// the platform lets them reach.
    pub allowed_hosts: Vec<String>,
}

impl IntegrationSettings {
    /// How long one delivery may take: the tenant's timeout, at most the platform's.
    pub fn timeout(&self, platform_ms: u64) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.webhook_timeout_ms
                .map_or(platform_ms, |t| t.min(platform_ms)),
        )
    }

    /// Attempts a message gets before it is a dead letter: the tenant's number, at most the
    /// platform schedule's.
    pub fn attempts(&self, schedule_len: usize) -> usize {
        self.webhook_max_attempts
            .map_or(schedule_len, |n| (n as usize).min(schedule_len))
    }

    /// The wait before a retry: the platform's, but never shorter than the tenant's base.
    pub fn retry_wait(&self, platform: std::time::Duration) -> std::time::Duration {
        self.webhook_retry_base_ms.map_or(platform, |b| {
            platform.max(std::time::Duration::from_millis(b))
        })
    }

    /// Whether the tenant lets its integrations call `host` (compared in lower case; a listed
    /// name covers its subdomains).
    pub fn host_allowed(&self, host: &str) -> bool {
        if self.allowed_hosts.is_empty() {
            return true;
        }
        let host = host
            .trim_matches(['[', ']'])
            .trim_end_matches('.')
            .to_ascii_lowercase();
        self.allowed_hosts.iter().any(|h| {
            let h = h.trim_end_matches('.').to_ascii_lowercase();
            host == h
                || host
                    .strip_suffix(h.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }
}

/// Invitation lifetime, the domains that may be invited (empty: any), and the tenant's own
/// hourly limits (`None`: the platform's; they can only lower it).
#[derive(Debug, Clone, PartialEq)]
pub struct InvitationSettings {
    pub expiry_hours: u32,
    pub allowed_domains: Vec<String>,
    pub per_inviter_per_hour: Option<u32>,
    pub per_tenant_per_hour: Option<u32>,
}

impl crate::versioned_cache::Versioned for Effective {
    fn version(&self) -> i64 {
        i64::from(self.version)
    }
}

impl Effective {
    /// The effective settings of a stored state (`None`: nothing stored yet) over the
    /// catalogue's defaults; `region` and `logo` fill the read-only keys.
    pub fn build(
        catalogue: &catalogue::Catalogue,
        stored: Option<&repo::Current>,
        logo: Option<&str>,
        region: &str,
    ) -> Self {
        let empty = serde_json::json!({});
        let values = stored
            .and_then(|c| c.state.get("values"))
            .filter(|v| v.is_object())
            .unwrap_or(&empty)
            .clone();
        let custom_schema = stored
            .and_then(|c| c.state.get("custom_schema"))
            .filter(|v| !v.is_null())
            .cloned();
        let mut merged = catalogue::overlay(catalogue.defaults(), &values);
        if let Some(b) = merged.get_mut("branding") {
            b["logo"] = match logo {
                Some(etag) => {
                    serde_json::json!({"url": "/v1/settings/branding/logo", "etag": format!("\"{etag}\"")})
                }
                None => Value::Null,
            };
        }
        if let Some(c) = merged.get_mut("compliance") {
            c["data_residency"] = Value::String(region.to_string());
        }
        let at = |p: &str| merged.pointer(p);
        let strings = |p: &str| -> Vec<String> {
            at(p)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let api = ApiLimits {
            per_user_per_sec: at("/api/rate_limit/per_user_per_sec").and_then(Value::as_f64),
            per_user_burst: at("/api/rate_limit/per_user_burst")
                .and_then(Value::as_u64)
                .and_then(|b| u32::try_from(b).ok()),
            requests_per_day: at("/api/quota/requests_per_day").and_then(Value::as_u64),
        };
        let integrations = IntegrationSettings {
            webhook_timeout_ms: at("/integrations/webhook_timeout_ms").and_then(Value::as_u64),
            webhook_max_attempts: at("/integrations/webhook_max_attempts")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok()),
            webhook_retry_base_ms: at("/integrations/webhook_retry_base_ms")
                .and_then(Value::as_u64),
            allowed_hosts: strings("/integrations/allowed_hosts"),
        };
        let invitations = InvitationSettings {
            expiry_hours: at("/invitations/expiry_hours")
                .and_then(Value::as_u64)
                .and_then(|h| u32::try_from(h).ok())
                .unwrap_or(168),
            allowed_domains: strings("/invitations/allowed_domains"),
            per_inviter_per_hour: at("/invitations/per_inviter_per_hour")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok()),
            per_tenant_per_hour: at("/invitations/per_tenant_per_hour")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok()),
        };
        let audit_retention_days = at("/compliance/audit_retention_days")
            .and_then(Value::as_i64)
            .and_then(|d| i32::try_from(d).ok());
        let flag_environments = strings("/flags/environments");
        let flag_attributes = at("/flags/context_attributes")
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        Effective {
            version: stored.map_or(0, |c| c.version),
            merged,
            values,
            custom_schema,
            updated_at: stored.map(|c| c.updated_at),
            updated_by: stored.and_then(|c| c.updated_by),
            api,
            integrations,
            invitations,
            audit_retention_days,
            flag_environments,
            flag_attributes,
        }
    }

    /// The settings' ETag: their version.
    pub fn etag(&self) -> String {
        format!("\"s{}\"", self.version)
    }
}

/// The settings as answered.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.settings.Settings"))]
pub struct SettingsView {
    /// Increases with every change; the ETag is `"s<version>"`.
    pub version: i32,
    /// Every setting: the tenant's value, or the default.
    pub settings: Value,
    /// The JSON Schema of the tenant's `custom` settings, when it defined one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<UserId>,
}

impl From<&Effective> for SettingsView {
    fn from(e: &Effective) -> Self {
        SettingsView {
            version: e.version,
            settings: e.merged.clone(),
            custom_schema: e.custom_schema.clone(),
            updated_at: e.updated_at,
            updated_by: e.updated_by.map(UserId),
        }
    }
}

/// Who made a version.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.settings.Author"))]
pub struct Author {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Author {
    /// The user behind a caller (an API key's owner): id and display name, email or username.
    pub fn of(caller: &crate::rbac::Caller) -> Self {
        let user = &caller.user.user;
        Author {
            id: Some(user.id),
            name: user
                .display_name
                .clone()
                .or_else(|| user.email.clone())
                .or_else(|| user.username.clone()),
        }
    }
}

/// One version of the settings.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.settings.Version"))]
pub struct VersionView {
    pub version: i32,
    pub author: Author,
    pub at: DateTime<Utc>,
    /// Why it was made: empty for an edit, `rollback to N`, `initial`, or the route that made it.
    pub reason: String,
    /// What changed from the version before (pointers into the state:
    /// `/values/<group>/<key>` and `/custom_schema/…`).
    pub diff: Vec<diff::Change>,
    /// The state it set: the tenant's values and custom schema (absent in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
}

/// The catalogue as answered: its JSON Schema, defaults and read-only keys.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.settings.Catalogue"))]
pub struct CatalogueView {
    pub schema: Value,
    pub defaults: Value,
    pub read_only: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_schema: Option<Value>,
}

/// The difference between two versions.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.settings.Diff"))]
pub struct DiffView {
    pub from: i32,
    pub to: i32,
    pub changes: Vec<diff::Change>,
}

/// The logo just stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.settings.LogoSaved"))]
pub struct LogoSaved {
    pub etag: String,
    pub version: i32,
}

#[cfg(test)]
mod tests {
    use super::ApiLimits;

    #[test]
    fn a_tenant_can_only_lower_the_platforms_rate() {
        let platform = crate::config::RateLimitConfig {
            per_user_per_sec: 100.0,
            per_user_burst: 200,
            ..Default::default()
        };
        assert_eq!(ApiLimits::default().user_rate(&platform), None);
        let none = super::IntegrationSettings::default();
        assert_eq!(none.timeout(5000).as_millis(), 5000);
        assert_eq!(none.attempts(8), 8);
        assert!(none.host_allowed("anything.example"));
        let narrow = super::IntegrationSettings {
            webhook_timeout_ms: Some(60_000),
            webhook_max_attempts: Some(3),
            webhook_retry_base_ms: Some(2000),
            allowed_hosts: vec!["Example.com".into()],
        };
        assert_eq!(
            narrow.timeout(5000).as_millis(),
            5000,
            "never above the platform's"
        );
        assert_eq!(narrow.attempts(8), 3);
        assert_eq!(narrow.attempts(2), 2);
        let s = std::time::Duration::from_secs;
        assert_eq!(narrow.retry_wait(s(1)), s(2));
        assert_eq!(narrow.retry_wait(s(300)), s(300));
        for ok in ["example.com", "hooks.EXAMPLE.com", "example.com."] {
            assert!(narrow.host_allowed(ok), "{ok}");
        }
        for no in ["badexample.com", "example.com.evil.net", "com", "10.0.0.1"] {
            assert!(!narrow.host_allowed(no), "{no}");
        }
        assert_eq!(ApiLimits::default().user_ceiling(&platform), (100.0, 200));
        let higher = ApiLimits {
            per_user_per_sec: Some(100_000.0),
            per_user_burst: Some(1_000_000),
            ..Default::default()
        };
        assert_eq!(higher.user_rate(&platform), Some((100.0, 200)));
        let lower = ApiLimits {
            per_user_per_sec: Some(5.0),
            ..Default::default()
        };
        assert_eq!(lower.user_rate(&platform), Some((5.0, 200)));
    }
}
