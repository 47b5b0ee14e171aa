//! Users of a tenant as this API knows them: created just in time from the token on a user's
//! first authenticated request, then loaded from an in-process cache.
//!
//! Shape: `handlers` (`/v1/me`, `/v1/users`) → `service` (JIT, cache, reconciliation, and
//! management by tenant admins written to Keycloak and PostgreSQL together) → `repo`. Owns the rule that a request runs as
//! an *active* user of its tenant: a deactivated or deleted user is refused even with a valid
//! token. Never trusts anything but the validated token for identity.

pub mod activity;
pub mod avatar;
pub mod bulk;
pub mod changes;
pub mod handlers;
pub mod hoops;
pub mod profile;
pub mod repo;
pub mod service;

use std::sync::Arc;

use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};

pub use crate::auth::identity::{CurrentUser, User};
use crate::config::Config;
use crate::tenancy::TenancyState;

/// The caller: the user row plus what this request's token says.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Me {
    #[serde(flatten)]
    pub user: User,
    /// Realm roles from the token.
    pub roles: Vec<String>,
    /// The client the token was issued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// What user management uses, built once by `app`: the user cache, the session registry
/// (deactivation ends sessions), Keycloak (users sync both ways) and the tenant registry
/// (reconciliation visits every tenant).
pub struct UsersState {
    pub config: Arc<Config>,
    pub tenancy: Arc<TenancyState>,
    /// Users by (tenant, subject).
    pub users: Arc<service::UserCache>,
    pub sessions: Arc<crate::sessions::Sessions>,
    /// Keycloak admin API (users); never used on the request path.
    pub keycloak: Arc<crate::auth::keycloak::KeycloakAdmin>,
    pub redis: crate::redis_link::Link,
    /// Last-seen times noted by requests, written in batches.
    pub seen: Arc<activity::Seen>,
}

/// What a reconciliation changed.
#[derive(Debug, Default, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.users.service.ReconcileReport"))]
pub struct ReconcileReport {
    /// Users listed by the identity provider.
    pub seen: usize,
    /// Users created or whose profile or status changed.
    pub changed: usize,
    /// Users deactivated because the identity provider no longer lists them.
    pub removed: usize,
}

/// A user to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.users.admin.NewUser"))]
pub struct NewUser {
    /// 3-64 characters of a-z, 0-9, `.`, `_`, `-`.
    pub username: String,
    pub email: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// An initial password; the user must change it at first login unless `temporary` is false.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default = "yes")]
    pub temporary: bool,
}

fn yes() -> bool {
    true
}

/// The tenant's attribute schema.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.users.AttributeSchema"))]
pub struct AttributeSchema {
    /// A JSON Schema of `"type": "object"`; `{}` (any object) when none was saved.
    pub schema: serde_json::Value,
    /// Top-level attributes a user may edit on themself.
    pub self_editable: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Which users to list: every given condition holds.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// A substring of the email, username or display name (case-insensitive).
    pub q: Option<String>,
    pub status: Option<String>,
    /// Holds this role directly (unexpired).
    pub role: Option<String>,
    /// Is a member of this team.
    pub team: Option<uuid::Uuid>,
    /// Attributes equal to these values (`attr.<name>=<value>`; a value that parses as JSON is
    /// compared as that JSON, otherwise as a string).
    pub attributes: Vec<(String, serde_json::Value)>,
}

/// Fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.users.admin.UserPatch"))]
pub struct UserPatch {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}
