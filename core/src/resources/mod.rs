//! Dynamic resources: tenant-defined resource types (a JSON Schema plus the fields search,
//! filters and sorts use) and their instances, with versions, soft delete, shares and
//! resource-level permissions.
//!
//! Shape: `types` validates type definitions and compiles/caches their schemas; `access`
//! decides what a caller may see and do (owner, team and tenant scopes from RBAC, plus
//! per-resource shares) and renders that as one SQL predicate; `repo` is the SQL; `service`
//! holds the rules and transactions; `handlers` is `/v1/resource-types` and `/v1/resources`;
//! `hooks` is the port a plugin-provided type is called through (implemented by `plugins`,
//! wired by `app`: resources never import the plugin feature).
//! **Invariants:** every change writes its version row, its audit entry and its outbox event
//! in the change's own transaction; a caller never learns of a resource it may not read (404,
//! never 403, and never in a list); stored data always validates against its type's current
//! schema (a type change that would break stored data is refused unless it carries a
//! migration that mends every row). This module never builds SQL from unvalidated names:
//! type and field names pass `types::is_name`/`types::is_field` first.

pub mod access;
pub mod changes;
pub mod handlers;
pub mod hooks;
pub mod indexer;
pub mod repo;
pub mod service;
pub mod transfer;
pub mod types;

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{ResourceId, ResourceShareId, TeamId, UserId};

/// What the resource feature uses, built once by `app`.
pub struct ResourcesState {
    pub config: std::sync::Arc<crate::config::Config>,
    /// Compiled resource-type schemas by (tenant, type, version).
    pub resource_validators: std::sync::Arc<types::ValidatorCache>,
    /// Per-tenant search indexes (an LRU of open ones).
    pub search: std::sync::Arc<neotenant_search::Registry>,
    /// Tenants written to recently: the indexer visits them first.
    pub audit_recent: std::sync::Arc<crate::audit::Recent>,
    /// Every tenant's database (the indexer's catch-up rounds).
    pub tenancy: std::sync::Arc<crate::tenancy::TenancyState>,
    /// The plugins behind plugin-provided types.
    pub hooks: std::sync::Arc<dyn hooks::TypeHooks>,
}

/// What deleting a link's target does to the link's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnDelete {
    /// Deleting the target is refused while links point at it.
    Refuse,
    /// Deleting the target deletes the linking resources too.
    Cascade,
    /// Deleting the target removes the links.
    Detach,
}

/// A relationship kind a type allows: links of `kind` from this type to `target` resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelationshipKind {
    pub kind: String,
    /// The target resource type (may be this type).
    pub target: String,
    pub on_delete: OnDelete,
}

/// A field-by-field change applied to every stored resource when a type changes.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Migration {
    /// Top-level fields to rename: `{"old": "new"}`.
    #[serde(default)]
    pub rename: std::collections::BTreeMap<String, String>,
    /// Values for top-level fields that are absent: `{"field": value}`.
    #[serde(default)]
    pub set_default: std::collections::BTreeMap<String, Value>,
    /// Top-level fields to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A resource type definition (input for create and replace).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(example = json!({"name": "ticket", "title": "Ticket",
    "schema": {"type": "object", "required": ["title"], "properties": {
        "title": {"type": "string", "maxLength": 200},
        "status": {"type": "string", "enum": ["open", "closed"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5}}},
    "searchable": ["title"], "filterable": ["status"], "sortable": ["priority"]})))]
pub struct TypeInput {
    /// `[a-z][a-z0-9_]{0,62}`; part of the URL. Ignored on replace (the URL names the type).
    #[serde(default)]
    pub name: String,
    /// 1-200 characters.
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// A JSON Schema (draft 2020-12 unless `$schema` says otherwise) describing an object.
    pub schema: Value,
    /// Top-level string fields indexed for full-text search.
    #[serde(default)]
    pub searchable: Vec<String>,
    /// Top-level scalar fields usable in `filter[field]=`.
    #[serde(default)]
    pub filterable: Vec<String>,
    /// Top-level scalar fields usable in `sort=`.
    #[serde(default)]
    pub sortable: Vec<String>,
    #[serde(default)]
    pub relationships: Vec<RelationshipKind>,
    /// On replace: how to mend stored data the new schema would refuse.
    #[serde(default)]
    pub migration: Option<Migration>,
}

/// A resource type.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ResourceType {
    pub name: String,
    pub title: String,
    pub description: String,
    /// Increases with every change of the definition.
    pub version: i32,
    pub schema: Value,
    pub searchable: Vec<String>,
    pub filterable: Vec<String>,
    pub sortable: Vec<String>,
    pub relationships: Vec<RelationshipKind>,
    /// `declarative` (defined through this API) or `plugin`.
    pub source: String,
    /// The installed plugin that provides the type (its validation and hooks run on every
    /// write; the type changes only with the plugin).
    pub plugin: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Input for creating or replacing a resource.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(example = json!({"data": {"title": "Printer on fire", "status": "open", "priority": 5},
    "tags": ["hardware"], "category": "facilities"})))]
pub struct ResourceInput {
    /// Validated against the type's schema.
    pub data: Value,
    /// Up to 50 tags of 1-100 characters.
    #[serde(default)]
    pub tags: Vec<String>,
    /// 1-100 characters.
    #[serde(default)]
    pub category: Option<String>,
    /// The team the resource belongs to (for team-scoped permissions); the caller must be
    /// in it unless they may act on the whole tenant.
    #[serde(default)]
    pub team_id: Option<TeamId>,
}

/// A partial change: `data` is a JSON merge patch (RFC 7396); absent members stay.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcePatch {
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// `null` clears it.
    #[serde(default, with = "double_option")]
    #[salvo(schema(value_type = Option<String>))]
    pub category: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    #[salvo(schema(value_type = Option<TeamId>))]
    pub team_id: Option<Option<TeamId>>,
}

/// `Some(None)` for an explicit `null`, `None` for an absent member.
mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// A resource.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Resource {
    pub id: ResourceId,
    #[serde(rename = "type")]
    pub type_name: String,
    pub data: Value,
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub owner_id: UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<TeamId>,
    /// Increases with every change; the `ETag` is `"<version>"`.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Resource {
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

/// One version of a resource: its full state after a change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Version {
    pub version: i32,
    /// `created`, `updated`, `deleted`, `restored`, `reverted`, `migrated`.
    pub change: String,
    pub data: Value,
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    pub at: DateTime<Utc>,
}

/// One difference between two versions, at a JSON pointer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct DiffEntry {
    /// `add`, `remove` or `replace`.
    pub op: String,
    /// JSON pointer into the resource (`/data/title`, `/tags`, `/category`, `/deleted`).
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
}

/// The differences between two versions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Diff {
    pub from: i32,
    pub to: i32,
    pub changes: Vec<DiffEntry>,
}

/// Access a share gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShareAccess {
    Read,
    Write,
}

impl ShareAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            ShareAccess::Read => "read",
            ShareAccess::Write => "write",
        }
    }
}

/// Input for sharing a resource with one user or one team (and the teams below it).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareInput {
    #[serde(default)]
    pub user_id: Option<UserId>,
    #[serde(default)]
    pub team_id: Option<TeamId>,
    pub access: ShareAccess,
}

/// A share of a resource.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Share {
    pub id: ResourceShareId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<TeamId>,
    pub access: ShareAccess,
    pub created_at: DateTime<Utc>,
}

/// Input for linking a resource to another.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkInput {
    /// A relationship kind the source's type declares.
    pub kind: String,
    /// The target, of the type the kind names.
    pub to_id: ResourceId,
}

/// A typed, directional link between two resources.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Link {
    pub kind: String,
    pub from_id: ResourceId,
    pub from_type: String,
    pub to_id: ResourceId,
    pub to_type: String,
    pub created_at: DateTime<Utc>,
}

/// One operation of a bulk request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum BulkOp {
    Create {
        data: Value,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        category: Option<String>,
        #[serde(default)]
        team_id: Option<TeamId>,
    },
    /// A partial change (`data` is a JSON merge patch), optionally only at `if_match`.
    Update {
        id: ResourceId,
        #[serde(default)]
        if_match: Option<String>,
        #[serde(default)]
        data: Option<Value>,
        #[serde(default)]
        tags: Option<Vec<String>>,
        #[serde(default, with = "double_option")]
        #[salvo(schema(value_type = Option<String>))]
        category: Option<Option<String>>,
    },
    /// A soft delete, optionally only at `if_match`.
    Delete {
        id: ResourceId,
        #[serde(default)]
        if_match: Option<String>,
    },
}

/// Many creates, updates and deletes in one request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// `true` (default): all or nothing, in one transaction; `false`: each operation on its
    /// own, whatever happens to the others.
    #[serde(default = "yes")]
    pub atomic: bool,
    /// 1-1000 operations, applied in order.
    pub operations: Vec<BulkOp>,
}

fn yes() -> bool {
    true
}

/// The problem an operation met.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BulkError {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<crate::error::FieldError>,
}

/// What became of one operation: `status` as its own request would have answered; 424 for
/// operations of an atomic request that were rolled back or not attempted.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BulkResult {
    pub index: usize,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<BulkError>,
}

/// The outcome of a bulk request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BulkResponse {
    pub atomic: bool,
    /// For atomic requests: whether everything was applied.
    pub committed: bool,
    pub results: Vec<BulkResult>,
}

/// What a custom action answers: the plugin's output and the resource after it.
#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.resources.service.ActionOutcome"))]
pub struct ActionOutcome {
    #[salvo(schema(value_type = Object))]
    pub output: Value,
    pub resource: Resource,
}
