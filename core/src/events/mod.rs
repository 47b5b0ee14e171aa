//! The tenant's event feed: every outbox event as a CloudEvents 1.0 JSON object, in commit
//! order, as pages (`GET /v1/events?after=`) and as a Server-Sent Events stream
//! (`GET /v1/events/stream`, resumable with `Last-Event-ID`), filtered by event type with the
//! webhook catalogue's filters.
//!
//! Shape: `handlers` → `service` (cursor parsing, the bounded scan of the outbox, the
//! CloudEvents shape). The SQL is the kernel's `outbox::read_after`, which only returns events
//! of finished transactions, so a cursor never skips an event committed later. Who may read:
//! `events.read` (tenant scope) — the feed carries every event of the tenant. This module never
//! writes.

pub mod handlers;
pub mod service;

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::Serialize;
use serde_json::Value;

/// One event in CloudEvents 1.0 JSON format.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.events.CloudEvent"))]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: &'static str,
    /// `evt_<txid>_<seq>`: unique in the tenant, the same as in webhook bodies; a cursor.
    pub id: String,
    /// `/tenants/<slug>`.
    pub source: String,
    /// The event type (`resource.created`, …; see `GET /v1/event-types`).
    #[serde(rename = "type")]
    pub kind: String,
    /// `<aggregate type>/<id>` of what changed.
    pub subject: String,
    pub time: DateTime<Utc>,
    /// Always `application/json`.
    pub datacontenttype: &'static str,
    #[salvo(schema(value_type = Object))]
    pub data: Value,
}

/// A page of the feed: events after the cursor, and the cursor to continue from (always
/// given: the position the scan reached, so a client polls with it even when nothing matched).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.events.EventPage"))]
pub struct EventPage {
    pub items: Vec<CloudEvent>,
    pub next_cursor: String,
    /// Whether more events are waiting already (ask again at once).
    pub has_more: bool,
}
