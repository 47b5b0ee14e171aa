//! The request and response bodies of the webhook endpoints. Types only.

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// An endpoint to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.webhooks.EndpointInput",
    example = json!({"url": "https://hooks.example.com/neotenant", "description": "CRM",
        "event_types": ["resource.*", "user.created"], "rate_limit": 50})))]
pub struct EndpointInput {
    /// Where messages are POSTed: `http(s)`, a public address.
    pub url: String,
    #[serde(default)]
    pub description: String,
    /// Event types (`resource.created`), families (`resource.*`), plugin events
    /// (`plugin.<name>.*`) or `*`; empty: every type.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Most messages per second to this endpoint (absent: no limit of its own).
    #[serde(default)]
    pub rate_limit: Option<u32>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Also sign with an Ed25519 key (`v1a`); its public key (`whpk_…`) is in the endpoint.
    #[serde(default)]
    pub asymmetric: bool,
}

fn yes() -> bool {
    true
}

/// Changes to an endpoint; absent fields stay. `enabled: true` re-enables an endpoint the
/// platform disabled.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.webhooks.EndpointPatch"))]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::patch::present")]
    #[salvo(schema(value_type = Option<u32>))]
    pub rate_limit: Option<Option<u32>>,
    pub enabled: Option<bool>,
}

/// An endpoint as the API shows it (never its secrets).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.webhooks.Endpoint"))]
pub struct EndpointView {
    pub id: Uuid,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub rate_limit: Option<u32>,
    pub enabled: bool,
    /// Why it is disabled: `by request`, `gone` (the receiver answered 410) or `failing`.
    pub disabled_reason: Option<String>,
    /// Since when deliveries have failed without a success.
    pub failing_since: Option<DateTime<Utc>>,
    /// The Ed25519 public key (`whpk_…`) that verifies `v1a` signatures, if signing with one.
    pub public_key: Option<String>,
    /// Until when the previous secret also signs (after a rotation).
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A new endpoint with its signing secret, shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.webhooks.EndpointCreated"))]
pub struct EndpointCreated {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// The `whsec_…` secret that verifies `v1` signatures. It is not shown again.
    pub secret: String,
}

/// The new secret after a rotation, shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.webhooks.Rotated"))]
pub struct Rotated {
    pub secret: String,
    pub previous_secret_until: Option<DateTime<Utc>>,
}

/// A message: one event for one endpoint, and where its delivery stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.webhooks.Message"))]
pub struct MessageView {
    /// Sent as `webhook-id` (`msg_…`), the same on every attempt.
    pub id: String,
    pub endpoint_id: Uuid,
    pub event_type: String,
    pub event_id: String,
    pub event_at: DateTime<Utc>,
    /// `pending`, `succeeded` or `failed` (a dead letter: retry it by hand).
    pub status: String,
    pub attempts: i32,
    /// When the next attempt is due (pending messages).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    #[salvo(schema(value_type = Object))]
    pub payload: Value,
}

/// One attempt of a message: what was sent and what came back (both cut to
/// `webhooks.log_body_bytes`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.webhooks.Attempt"))]
pub struct AttemptView {
    pub n: i32,
    pub at: DateTime<Utc>,
    pub url: String,
    pub request_body: String,
    pub response_status: Option<i32>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i32,
}

/// A time range of events to send to an endpoint again.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.webhooks.ReplayInput"))]
pub struct ReplayInput {
    pub since: DateTime<Utc>,
    /// Default: now.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

/// How many messages a replay queued.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.webhooks.Replayed"))]
pub struct Replayed {
    pub queued: usize,
}

/// A published event type.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.webhooks.EventType"))]
pub struct EventTypeView {
    pub name: String,
    pub description: String,
    /// The JSON Schema of the message's `data`.
    #[salvo(schema(value_type = Object))]
    pub schema: Value,
}
