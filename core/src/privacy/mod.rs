//! Data-subject rights: the export of everything the tenant holds about one person
//! (`GET /v1/users/{id}/export`, `GET /v1/me/export`) and their erasure
//! (`POST /v1/users/{id}/erase`).
//!
//! Shape: `handlers` (HTTP) → `service` (what an export holds, the order of an erasure) →
//! `repo` (SQL over every table that names a user); the audit log's part is
//! `audit::redact`, which keeps the hash chain verifying. **Invariants:** an erasure leaves no
//! email, name, username, attribute, preference, address or browser of the person in the
//! tenant database, including its audit log, outbox and invitations; the user id stays as the
//! pseudonym (nothing links it to a person any more), so records the tenant keeps (resources
//! they owned, who changed what) stay consistent; the erasure itself is audited without
//! personal data; erasing twice changes nothing. Never reads or writes another tenant.

pub mod handlers;
pub mod repo;
pub mod service;

use salvo::oapi::ToSchema;
use serde::Serialize;

/// What an erasure did.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.privacy.Erasure"))]
pub struct Erasure {
    pub user_id: String,
    /// The pseudonym that replaced the person's email, names and identity-provider subject.
    pub pseudonym: String,
    /// The user had been erased before; nothing changed.
    pub already_erased: bool,
    /// Audit entries pseudonymised before sealing.
    pub audit_unsealed: u64,
    /// Sealed audit entries pseudonymised under a signed redaction (the chain still verifies).
    pub audit_sealed: u64,
    /// Invitations to the person's address (open ones revoked).
    pub invitations: u64,
    /// Outbox events that quoted the person.
    pub events: u64,
    /// Credentials, memberships, roles, grants, shares, avatar and API keys removed or revoked.
    pub belongings: u64,
}
