//! The tenant's user directory as files: export (CSV or JSON Lines, streamed page by page) and
//! import (the same formats, read as the body arrives, applied in chunks of up to 1,000 rows)
//! that either creates accounts or invites the addresses, answering every row.
//!
//! Shape: `handlers` (HTTP) → `service` (formats, chunking, the per-row report) → `repo`
//! (roles and teams of a page of users). Accounts are created through `users::service` (with
//! roles through `rbac`, teams through `teams`, attributes through `users::profile`) and
//! invitations through `invitations::service`, so every rule of a single call applies to each
//! row. Never buffers a whole export; an import holds at most one chunk of rows.

pub mod handlers;
pub mod repo;
pub mod service;

use salvo::oapi::ToSchema;
use serde::Serialize;

/// The file formats and their `format=` parameter: the same as resources' import and export.
pub use crate::resources::transfer::Format;

/// What an import does with each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Create the account (Keycloak and row), then roles, teams and attributes.
    Create,
    /// Invite the address into the roles and teams.
    Invite,
}

/// One row's outcome.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.directory.RowResult"))]
pub struct RowResult {
    /// The row's line in the file (CSV: the record's first line).
    pub line: usize,
    /// The status a single call would have answered (201, 409, 422…).
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The created user (`usr_…`) or invitation (`inv_…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The problem type, when refused.
    #[serde(skip_serializing_if = "Option::is_none", rename = "type")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<crate::error::FieldError>,
}

/// An import's outcome: every row answered.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.directory.ImportReport"))]
pub struct ImportReport {
    pub rows: usize,
    /// Accounts created or invitations made.
    pub created: usize,
    pub refused: usize,
    pub items: Vec<RowResult>,
}
