//! RBAC: permissions `resource.action.scope`, hierarchical roles, per-user grants and denies,
//! roles through teams, and the typed extractor every endpoint states its access with.
//!
//! Shape: `handlers` → `service` (validation, delegation, audit, invalidation) → `repo`;
//! `perm` is the pure model and resolution, `cache` the L1/L2 caches. **Invariants:** a
//! handler that takes [`Can<P>`] runs only for a caller allowed `P`; nobody hands out (as a
//! role, grant, team role or API-key scope) a permission they do not hold themselves; every
//! change is audited in its own transaction and invalidates the tenant's cached permissions on
//! every instance after commit. Identity-provider roles count only from a tenant's own realm
//! (a shared realm's roles would reach across tenants). Never trusts a permission from input.

pub mod cache;
pub mod handlers;
pub mod hoops;
pub mod perm;
pub mod repo;
pub mod service;

use std::marker::PhantomData;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};

use crate::audit::Actor;
use crate::auth::identity::CurrentUser;
use crate::error::{ApiError, ErrorCode};
use crate::ids::{GrantId, RoleId, UserId};
use crate::tenancy::resolve::CurrentTenant;
use perm::{Effective, Perm, Scope};

/// The caller of a tenant request with their resolved permissions.
#[derive(Clone)]
pub struct Caller {
    pub user: CurrentUser,
    pub tenant: CurrentTenant,
    pub effective: Arc<Effective>,
    /// An API key's scopes: the key can do only what both its owner and these allow.
    pub key_scopes: Option<Arc<[Perm]>>,
    pub actor: Actor,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("user", &self.user.user.id)
            .finish_non_exhaustive()
    }
}

impl Caller {
    pub fn allows(&self, resource: &str, action: &str, scope: Scope) -> bool {
        self.effective.allows(resource, action, scope)
            && self.key_scopes.as_ref().is_none_or(|scopes| {
                let wanted = Perm::new(resource, action, scope);
                scopes.iter().any(|s| s.covers(&wanted))
            })
    }

    /// 403 unless allowed.
    pub fn require(&self, resource: &str, action: &str, scope: Scope) -> Result<(), ApiError> {
        if self.allows(resource, action, scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "requires the permission {resource}.{action}.{}",
                    scope.as_str()
                ),
            ))
        }
    }

    /// Whether the caller may hand `pattern` to someone else.
    pub fn can_delegate(&self, pattern: &Perm) -> bool {
        self.effective.covers(pattern)
            && self
                .key_scopes
                .as_ref()
                .is_none_or(|scopes| scopes.iter().any(|s| s.covers(pattern)))
    }

    /// 403 naming the first of `patterns` the caller may not hand out.
    pub fn require_delegable<'a>(
        &self,
        patterns: impl IntoIterator<Item = &'a Perm>,
    ) -> Result<(), ApiError> {
        for p in patterns {
            if !self.can_delegate(p) {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!("you cannot hand out {p}: you do not hold it yourself"),
                ));
            }
        }
        Ok(())
    }

    pub fn user_id(&self) -> uuid::Uuid {
        self.user.user.id.0
    }

    /// The caller's tenant, resolved for this request.
    pub fn tenant(&self) -> &crate::tenancy::cache::ResolvedTenant {
        &self.tenant.0
    }

    /// The caller's tenant's id.
    pub fn tenant_id(&self) -> crate::ids::TenantId {
        self.tenant.0.tenant.id
    }

    /// The caller's tenant's database: every query of a tenant-scoped service runs here.
    pub fn db(&self) -> &crate::db::TenantDb {
        &self.tenant.0.db
    }
}

/// A permission an endpoint requires, as a type.
pub trait Requirement: Send + Sync + 'static {
    const RESOURCE: &'static str;
    const ACTION: &'static str;
    const SCOPE: Scope;
}

macro_rules! requirements {
    ($( $(#[$meta:meta])* $name:ident => ($resource:literal, $action:literal, $scope:ident); )*) => {
        $( $(#[$meta])* pub struct $name;
           impl Requirement for $name {
               const RESOURCE: &'static str = $resource;
               const ACTION: &'static str = $action;
               const SCOPE: Scope = Scope::$scope;
           } )*
    };
}

/// The permissions endpoints require.
pub mod need {
    use super::{Requirement, Scope};
    requirements! {
        NotesCreate => ("notes", "create", Tenant);
        NotesRead => ("notes", "read", Tenant);
        NotesDelete => ("notes", "delete", Tenant);
        UsersCreate => ("users", "create", Tenant);
        UsersRead => ("users", "read", Tenant);
        UsersUpdate => ("users", "update", Tenant);
        UsersDeactivate => ("users", "deactivate", Tenant);
        UsersDelete => ("users", "delete", Tenant);
        UsersExport => ("users", "export", Tenant);
        UsersErase => ("users", "erase", Tenant);
        SessionsRevokeAny => ("sessions", "revoke", Tenant);
        SessionsReadOwn => ("sessions", "read", Own);
        SessionsRevokeOwn => ("sessions", "revoke", Own);
        ApiKeysCreateOwn => ("api_keys", "create", Own);
        ApiKeysReadOwn => ("api_keys", "read", Own);
        ApiKeysRevokeOwn => ("api_keys", "revoke", Own);
        RolesRead => ("roles", "read", Tenant);
        RolesCreate => ("roles", "create", Tenant);
        RolesUpdate => ("roles", "update", Tenant);
        RolesDelete => ("roles", "delete", Tenant);
        RolesAssign => ("roles", "assign", Tenant);
        PermissionsRead => ("permissions", "read", Tenant);
        PermissionsGrant => ("permissions", "grant", Tenant);
        TeamsCreate => ("teams", "create", Tenant);
        TeamsRead => ("teams", "read", Tenant);
        TeamsUpdate => ("teams", "update", Tenant);
        TeamsDelete => ("teams", "delete", Tenant);
        TeamsManageMembers => ("teams", "manage_members", Tenant);
        TeamsShare => ("teams", "share", Tenant);
        AuditRead => ("audit", "read", Tenant);
        AuditExport => ("audit", "export", Tenant);
        AuditConfigure => ("audit", "configure", Tenant);
        IdentityProvidersRead => ("identity_providers", "read", Tenant);
        IdentityProvidersUpdate => ("identity_providers", "update", Tenant);
        ResourceTypesRead => ("resource_types", "read", Tenant);
        ResourceTypesCreate => ("resource_types", "create", Tenant);
        ResourceTypesUpdate => ("resource_types", "update", Tenant);
        ResourceTypesDelete => ("resource_types", "delete", Tenant);
        ResourcesCreateOwn => ("resources", "create", Own);
        ResourcesReadOwn => ("resources", "read", Own);
        ResourcesUpdateOwn => ("resources", "update", Own);
        ResourcesDeleteOwn => ("resources", "delete", Own);
        ResourcesShareOwn => ("resources", "share", Own);
        PluginsRead => ("plugins", "read", Tenant);
        PluginsUpload => ("plugins", "upload", Tenant);
        PluginsManage => ("plugins", "manage", Tenant);
        InvitationsCreate => ("invitations", "create", Tenant);
        InvitationsRead => ("invitations", "read", Tenant);
        InvitationsRevoke => ("invitations", "revoke", Tenant);
        InvitationsConfigure => ("invitations", "configure", Tenant);
        SettingsRead => ("settings", "read", Tenant);
        SettingsUpdate => ("settings", "update", Tenant);
        FlagsRead => ("flags", "read", Tenant);
        FlagsUpdate => ("flags", "update", Tenant);
        NotificationsRead => ("notifications", "read", Tenant);
        NotificationsSend => ("notifications", "send", Tenant);
        NotificationsConfigure => ("notifications", "configure", Tenant);
        WebhooksRead => ("webhooks", "read", Tenant);
        WebhooksConfigure => ("webhooks", "configure", Tenant);
        EventsRead => ("events", "read", Tenant);
        ChangesRead => ("changes", "read", Tenant);
    }
}

/// Access to a handler for callers allowed `P`: the handler's signature states what it needs,
/// and the check cannot be forgotten.
pub struct Can<P: Requirement> {
    pub caller: Caller,
    pub(crate) _need: PhantomData<fn() -> P>,
}

impl<P: Requirement> std::ops::Deref for Can<P> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.caller
    }
}

/// A role of the tenant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Role {
    pub id: RoleId,
    /// Stable name, used in paths and references.
    pub key: String,
    pub name: String,
    pub description: String,
    /// Permission patterns the role carries itself.
    pub permissions: Vec<String>,
    /// Keys of the roles this one inherits from.
    pub parents: Vec<String>,
    /// The platform template it was copied from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Held by every active user of the tenant.
    pub is_default: bool,
    /// The owner role: cannot be edited or deleted.
    pub protected: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Input for creating a role: own permissions and parents, or a copy of a template.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    /// 1-63 of `a-z 0-9 _ -`, starting with a letter; unique.
    pub key: String,
    /// Defaults to the template's name or the key.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Permission patterns (`resource.action.scope`, `*` for any resource or action).
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
    /// Keys of roles to inherit from.
    #[serde(default)]
    pub parents: Vec<String>,
    /// Copy this template's permissions (see `GET /v1/role-templates`).
    #[serde(default)]
    pub from_template: Option<String>,
    #[serde(default)]
    pub is_default: bool,
}

/// Changes to a role; absent fields stay.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolePatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
    #[serde(default)]
    pub parents: Option<Vec<String>>,
    #[serde(default)]
    pub is_default: Option<bool>,
}

/// A role template shipped with the platform.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RoleTemplate {
    pub key: String,
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    pub is_default: bool,
}

/// Bulk role assignment.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// 1-1000 users.
    pub user_ids: Vec<UserId>,
    /// The assignment ends by itself at this time.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// The outcome of a bulk assignment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Assigned {
    /// Users who now hold the role (new or renewed).
    pub assigned: usize,
}

/// A role held by a user directly.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HeldRole {
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Input for a custom grant or deny.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGrant {
    pub permission: String,
    /// `allow` or `deny`; a deny beats any grant.
    pub effect: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A custom grant or deny on a user.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Grant {
    pub id: GrantId,
    pub user_id: UserId,
    pub permission: String,
    pub effect: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub granted_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A batch of permission checks.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// 1-100 checks.
    pub checks: Vec<CheckItem>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckItem {
    /// A concrete permission `resource.action.scope`.
    pub permission: String,
    /// Whose permission; the caller when absent (another user needs `permissions.read.tenant`).
    #[serde(default)]
    pub user_id: Option<UserId>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckOutcome {
    pub permission: String,
    pub user_id: UserId,
    pub allowed: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckResults {
    pub results: Vec<CheckOutcome>,
}

/// A user's effective permissions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserPermissions {
    pub user_id: UserId,
    /// Every role held, directly, by default, through teams or inherited.
    pub roles: Vec<String>,
    /// Every catalog permission allowed, at its widest scope.
    pub permissions: Vec<String>,
    /// With `explain=true`: each contributing pattern and where it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Vec<Explanation>>,
}

/// Why a pattern counts for a user.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Explanation {
    pub pattern: String,
    /// `allow` or `deny`.
    pub effect: String,
    /// Each source: `{"kind": "role", "path": [held role, …, carrying role], "via": {...}}`
    /// or `{"kind": "grant", "id": …}`.
    #[salvo(schema(value_type = Vec<Object>))]
    pub sources: Vec<serde_json::Value>,
}

/// One resource of the permission catalog.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CatalogEntry {
    pub resource: String,
    pub actions: Vec<String>,
    pub scopes: Vec<String>,
}

/// What RBAC's services use, built once by `app`: the effective-permission caches and the
/// counters of where checks were answered.
pub struct RbacState {
    pub config: Arc<crate::config::Config>,
    /// Effective permissions per (tenant, user).
    pub perms: Arc<cache::PermCache>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The caller's audit actor marks the tenant as recently written.
    pub audit_recent: Arc<crate::audit::Recent>,
}
