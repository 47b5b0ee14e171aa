//! The request and response bodies of the notification endpoints that are not part of the
//! model in `mod.rs` (inputs, views, merged preferences, analytics). Types only.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::policy::QuietHours;
use super::template::{Parts, Variables};
use super::{Audience, Channel, DigestRule, QuietBehaviour, ThrottleRule};

/// A category to create or change (`PUT /v1/notification-categories/{key}`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.notifications.CategoryInput"))]
pub struct CategoryInput {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub critical: Option<bool>,
    #[serde(default)]
    pub quiet_hours: Option<QuietBehaviour>,
    #[serde(default)]
    #[salvo(schema(value_type = Option<Object>))]
    pub variables: Option<Variables>,
    #[serde(default)]
    pub digest: Option<DigestRule>,
    #[serde(default)]
    pub throttle: Option<ThrottleRule>,
}

/// A stored template.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.notifications.Template"))]
pub struct TemplateView {
    pub category: String,
    pub channel: Channel,
    pub locale: String,
    pub subject: String,
    pub body: String,
    pub html: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /v1/notification-templates/preview`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.notifications.PreviewRequest"))]
pub struct PreviewRequest {
    pub category: String,
    pub channel: Channel,
    #[serde(default)]
    pub locale: Option<String>,
    /// A template to try; the saved one (or the built-in) when absent.
    #[serde(default)]
    pub template: Option<Parts>,
    /// Values; sample values of the declared types when absent.
    #[serde(default)]
    #[salvo(schema(value_type = Option<Object>))]
    pub data: Option<Value>,
}

/// One channel of one category for the caller.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.notifications.ChannelChoice"))]
pub struct ChannelChoice {
    pub channel: Channel,
    pub enabled: bool,
    /// `critical`, `recipient`, `recipient_default`, `tenant` or `platform`.
    pub source: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.notifications.CategoryChoices"))]
pub struct CategoryChoices {
    pub category: String,
    pub name: String,
    pub critical: bool,
    pub channels: Vec<ChannelChoice>,
}

/// The caller's notification preferences, merged.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.notifications.Preferences"))]
pub struct PreferencesView {
    pub categories: Vec<CategoryChoices>,
    /// The caller's own quiet hours (the tenant's apply when absent).
    pub quiet_hours: Option<QuietHours>,
    pub phone: Option<String>,
    pub push_tokens: usize,
}

/// `PATCH /v1/me/notification-preferences`: per category and channel `true`/`false`, or
/// `null` to follow the defaults again.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.notifications.PreferencesPatch"))]
pub struct PreferencesPatch {
    #[serde(default)]
    #[salvo(schema(value_type = Option<Object>))]
    pub categories: Option<BTreeMap<String, BTreeMap<String, Option<bool>>>>,
    #[serde(default, deserialize_with = "crate::patch::present")]
    #[salvo(schema(value_type = Option<QuietHours>))]
    pub quiet_hours: Option<Option<QuietHours>>,
    #[serde(default, deserialize_with = "crate::patch::present")]
    #[salvo(schema(value_type = Option<String>))]
    pub phone: Option<Option<String>>,
    /// Replaces the device tokens push messages go to (at most 10).
    #[serde(default)]
    pub push_tokens: Option<Vec<String>>,
}

/// Counts per category and channel over a time range.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.notifications.Stat"))]
pub struct Stat {
    pub category: String,
    pub channel: Channel,
    pub total: i64,
    pub sent: i64,
    pub delivered: i64,
    pub failed: i64,
    pub pending: i64,
    pub suppressed: i64,
    /// In-app: items read.
    pub read: i64,
    /// In-app: read / total.
    pub read_rate: Option<f64>,
}

/// The unread count and the newest event's number.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.notifications.InboxCount"))]
pub struct InboxCount {
    pub unread: i32,
    pub last_event: i64,
}

/// Turns outbox events of a topic into notifications.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.notifications.RuleInput"))]
pub struct RuleInput {
    /// The outbox topic, e.g. `resource.created` (plugins' events included).
    pub topic: String,
    pub category: String,
    /// Fixed recipients.
    #[serde(default)]
    pub audience: Audience,
    /// JSON pointers into the event (`/payload/…`, `/aggregate_id`) naming user ids.
    #[serde(default)]
    pub users_from: Vec<String>,
    /// Per variable: `{"from": "/payload/title"}` (a pointer into the event) or
    /// `{"value": …}`.
    #[serde(default)]
    #[salvo(schema(value_type = Object))]
    pub data: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.notifications.Rule"))]
pub struct RuleView {
    pub id: Uuid,
    #[serde(flatten)]
    pub rule: RuleInput,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
}

/// A provider's report on a message it accepted
/// (`POST /v1/notifications/deliveries/{id}/report`, with the provider's token as bearer).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.notifications.ProviderReport"))]
pub struct ProviderReport {
    /// The provider's configured name.
    pub provider: String,
    /// `delivered`, `failed` or `bounced`.
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
}
