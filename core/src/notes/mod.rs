//! Notes: the first tenant-scoped record type, exercising the request path end to end
//! (tenant resolution → tenant transaction → problem responses → pagination).
//!
//! Shape: `handlers` (HTTP) → `service` (validation, transactions) → `repo` (SQL on the
//! tenant's schema). Every query runs inside a `Tx`, so it can only see the current
//! tenant's `notes` table.

pub mod handlers;
pub mod repo;
pub mod service;

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};

use crate::ids::NoteId;

/// A note.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Note {
    pub id: NoteId,
    pub title: String,
    pub body: String,
    /// Caller-chosen key, unique within the tenant (for idempotent imports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Input for creating a note.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNote {
    /// 1-200 characters.
    pub title: String,
    /// Up to 20,000 characters.
    #[serde(default)]
    pub body: String,
    /// 1-100 characters, unique within the tenant.
    #[serde(default)]
    pub external_id: Option<String>,
}

/// Input for creating many notes in one all-or-nothing transaction.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNotes {
    /// 1-100 notes.
    pub items: Vec<NewNote>,
}
