//! Notifications: telling a tenant's users what happened, in the channels each prefers, and
//! keeping track of what was delivered.
//!
//! Shape: `handlers` (`/v1/notifications…`, `/v1/notification-*`, `/v1/me/inbox…`,
//! `/v1/me/notification-preferences`) → `service` (categories, templates, preferences, the
//! idempotent send API, the inbox, deliveries and analytics) → `repo` (SQL). `template`
//! (typed variables, checking and rendering; pure), `policy` (which channels a recipient gets
//! and when: preferences, quiet hours, digest windows, throttles; pure), `provider` (the
//! channel adapters: SMTP for email, an HTTP provider shape for SMS and push, failover between
//! a channel's providers), `worker` (expands notifications into deliveries, sends them with
//! retries, sends digests, and turns outbox events into notifications by the tenant's rules).
//!
//! **Invariants:** a notification is a row written in the transaction of the request or event
//! that causes it; its deliveries are written in the same transactions as the inbox items and
//! counters they imply, and the expansion cursor moves with them, so a crash repeats nothing
//! and loses nothing. A delivery is sent at least once: a crash after the provider accepted a
//! message and before it was recorded sends it again, with the same `Message-ID` (email) or
//! `Idempotency-Key` (HTTP providers). One user's inbox changes are ordered by the row lock on
//! their counter, so the stream's events carry every unread count in order. Critical
//! categories ignore preferences, quiet hours, digests and throttles. Never logs a message
//! body.

pub mod handlers;
pub mod model;
pub mod policy;
pub mod provider;
pub mod repo;
pub mod service;
pub mod template;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::audit::Recent;
use crate::config::Config;
use crate::ids::{TeamId, TenantId, UserId};
use crate::settings::SettingsState;
use crate::tenancy::TenancyState;
use crate::tenancy::cache::ResolvedTenant;

/// A delivery channel.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[salvo(schema(name = "neotenant.notifications.Channel"))]
pub enum Channel {
    Email,
    InApp,
    Sms,
    Push,
}

impl std::str::FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Channel::parse(s).ok_or_else(|| "one of email, in_app, sms, push".to_string())
    }
}

impl Channel {
    pub const ALL: [Channel; 4] = [Channel::Email, Channel::InApp, Channel::Sms, Channel::Push];
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::InApp => "in_app",
            Channel::Sms => "sms",
            Channel::Push => "push",
        }
    }
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// What quiet hours do to a category's messages: hold them until the window ends, or drop
/// that channel for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
#[salvo(schema(name = "neotenant.notifications.QuietBehaviour"))]
pub enum QuietBehaviour {
    #[default]
    Hold,
    Skip,
}

impl QuietBehaviour {
    pub fn as_str(self) -> &'static str {
        match self {
            QuietBehaviour::Hold => "hold",
            QuietBehaviour::Skip => "skip",
        }
    }
}

/// Batching a category's messages per recipient and channel (not in-app): a window of
/// `window_secs` from the first item (or, with `fixed`, the fixed windows of that length from
/// the Unix epoch, so every recipient's digest goes out at the same boundary), or until the
/// next `at` ("HH:MM", the recipient's time zone); at most `max_items` listed; `send_first`
/// sends the first item of a quiet period at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.notifications.DigestRule"))]
pub struct DigestRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(default = "default_max_items")]
    pub max_items: u32,
    #[serde(default)]
    pub send_first: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fixed: bool,
}

fn default_max_items() -> u32 {
    50
}

/// At most `max` messages of the category to one recipient per `window_secs` (per value of
/// the data variable `key`, when given); the rest are recorded as throttled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.notifications.ThrottleRule"))]
pub struct ThrottleRule {
    pub max: u32,
    pub window_secs: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A category as the tenant sees it: the platform's (possibly overridden) or its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[salvo(schema(name = "neotenant.notifications.Category"))]
pub struct Category {
    pub key: String,
    pub name: String,
    pub description: String,
    /// The channels it is sent on unless a recipient or the tenant chose otherwise.
    pub channels: Vec<Channel>,
    /// Ignores preferences, quiet hours, digests and throttles.
    pub critical: bool,
    pub quiet_hours: QuietBehaviour,
    /// The variables its messages carry, by name.
    #[salvo(schema(value_type = Object))]
    pub variables: BTreeMap<String, template::VarSpec>,
    pub digest: Option<DigestRule>,
    pub throttle: Option<ThrottleRule>,
    /// Defined by the platform (a tenant may override channels, quiet hours, digest and
    /// throttle, not variables or criticality).
    pub platform: bool,
}

/// Who receives a notification: the union of users, members of teams (and of every team
/// below them), holders of roles, or everyone active.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.notifications.Audience"))]
pub struct Audience {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<TeamId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub everyone: bool,
}

impl Audience {
    pub fn user_ids(&self) -> Vec<Uuid> {
        self.users.iter().map(|u| u.0).collect()
    }
    pub fn team_ids(&self) -> Vec<Uuid> {
        self.teams.iter().map(|t| t.0).collect()
    }
    pub fn is_empty(&self) -> bool {
        !self.everyone && self.users.is_empty() && self.teams.is_empty() && self.roles.is_empty()
    }
}

/// `POST /v1/notifications`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.notifications.SendRequest"))]
pub struct SendRequest {
    pub category: String,
    pub audience: Audience,
    /// Values of the category's variables.
    #[serde(default)]
    #[salvo(schema(value_type = Object))]
    pub data: Value,
    /// Only these of the category's channels.
    #[serde(default)]
    pub channels: Option<Vec<Channel>>,
    /// Send later (at most a year ahead).
    #[serde(default)]
    pub send_at: Option<DateTime<Utc>>,
}

/// A notification as stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[salvo(schema(name = "neotenant.notifications.Notification"))]
pub struct NotificationView {
    pub id: Uuid,
    pub category: String,
    pub audience: Audience,
    #[salvo(schema(value_type = Object))]
    pub data: Value,
    pub channels: Option<Vec<Channel>>,
    /// `api`, or `event:<topic>` for one made by a rule.
    pub source: String,
    pub created_by: Option<UserId>,
    pub send_at: DateTime<Utc>,
    /// `scheduled`, `sending` (being expanded into deliveries) or `expanded`.
    pub status: String,
    pub recipients: i32,
    pub created_at: DateTime<Utc>,
}

/// One recipient and channel of a notification.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.notifications.Delivery"))]
pub struct DeliveryView {
    pub id: Uuid,
    pub user_id: UserId,
    pub channel: Channel,
    /// queued → sent → delivered | failed | bounced; or held (quiet hours), digested,
    /// skipped, throttled.
    pub status: String,
    pub reason: Option<String>,
    pub attempts: i32,
    pub provider: Option<String>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub history: Vec<AttemptView>,
}

/// One try of a delivery.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.notifications.Attempt"))]
pub struct AttemptView {
    pub n: i32,
    pub provider: String,
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub error: Option<String>,
}

/// An in-app message.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.notifications.InboxItem"))]
pub struct InboxItem {
    pub id: Uuid,
    pub notification_id: Uuid,
    pub category: String,
    pub title: String,
    pub body: String,
    #[salvo(schema(value_type = Object))]
    pub data: Value,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
    pub archived_at: Option<DateTime<Utc>>,
}

/// One change of a user's inbox, as the stream sends it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.notifications.InboxEvent"))]
pub struct InboxEvent {
    pub seq: i64,
    /// `created`, `read`, `unread`, `archived`, `unarchived` or `all_read`.
    pub kind: String,
    pub item_id: Option<Uuid>,
    /// The unread count after this change.
    pub unread: i32,
    pub at: DateTime<Utc>,
    /// The item, for `created`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<InboxItem>,
}

/// Sends an in-process wake-up to the inbox streams of one user (every instance hears it
/// through Redis).
#[derive(Debug)]
pub struct Live {
    tx: tokio::sync::broadcast::Sender<(Uuid, Uuid)>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            tx: tokio::sync::broadcast::channel(4096).0,
        }
    }
}

impl Live {
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(Uuid, Uuid)> {
        self.tx.subscribe()
    }
    /// Wakes this instance's streams of `user` in `tenant`.
    pub fn wake(&self, tenant: Uuid, user: Uuid) {
        let _ = self.tx.send((tenant, user));
    }
    /// A message of the inbox channel (`<tenant>:<user>`), from any instance.
    pub fn on_message(&self, payload: &str) {
        if let Some((t, u)) = payload.split_once(':')
            && let (Ok(t), Ok(u)) = (t.parse(), u.parse())
        {
            self.wake(t, u);
        }
    }
}

/// What the notification endpoints and workers use, built once by `app`.
pub struct NotificationsState {
    pub config: Arc<Config>,
    pub tenancy: Arc<TenancyState>,
    pub settings: Arc<SettingsState>,
    pub audit_recent: Arc<Recent>,
    pub providers: Arc<provider::Providers>,
    pub redis: crate::redis_link::Link,
    pub live: Arc<Live>,
    /// Wakes the worker for a tenant with work now.
    pub nudge: tokio::sync::mpsc::UnboundedSender<Arc<ResolvedTenant>>,
}

impl NotificationsState {
    /// Tells every instance's streams of these users that their inbox changed.
    pub async fn announce(&self, tenant: TenantId, users: &[Uuid]) {
        for user in users {
            self.live.wake(tenant.0, *user);
        }
        let mut redis = self.redis.clone();
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("PUBLISH")
                .arg(crate::keys::channel::INBOX)
                .arg(format!("{}:{user}", tenant.0))
                .ignore();
        }
        let sent: redis::RedisResult<()> = pipe.query_async(&mut redis).await;
        if let Err(error) = sent {
            // Streams also poll; a lost wake-up only delays them.
            tracing::debug!(%error, "inbox wake-ups not published");
        }
    }
}
