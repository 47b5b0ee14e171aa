//! Tenancy domain types: regions, isolation modes, statuses, slugs and the tenant record.
//!
//! Owns the naming rules that turn a slug into a schema or database name. Pure data: no I/O.

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{ConnectionId, TenantId};
pub use crate::region::Region;
use crate::region::string_enum;

string_enum!(
    /// `schema`: a schema in the region's shared database; `database`: a database of its own.
    Isolation { Schema => "schema", Database => "database" }
);
string_enum!(
    /// Lifecycle: `provisioning` until its schema exists, then `active`/`suspended`;
    /// `deleting` while its data is being removed.
    TenantStatus {
        Provisioning => "provisioning",
        Active => "active",
        Suspended => "suspended",
        Deleting => "deleting",
    }
);

string_enum!(
    /// Where a tenant's users live: `realm` — a Keycloak realm of its own (strict isolation);
    /// `organization` — an organization in its region's shared realm (scales to many tenants).
    IdentityMode { Realm => "realm", Organization => "organization", Local => "local" }
);

/// The shared realm of a region (organization-mode tenants).
pub fn shared_realm_name(region: Region) -> String {
    format!("neotenant-{}", region.as_str())
}

/// The realm a realm-mode tenant gets when it does not link an existing one.
pub fn tenant_realm_name(slug: &str) -> String {
    format!("tenant-{slug}")
}

/// Where a tenant's identities live, as recorded in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub mode: IdentityMode,
    pub realm: Option<String>,
    pub org_alias: Option<String>,
    pub org_id: Option<String>,
    /// Linked to a realm or organization that existed before; we never delete it.
    pub linked: bool,
    /// What provisioning created in Keycloak (`realm`, `organization`, `client:<id>`, `role:<name>`).
    pub created: Vec<String>,
    /// Provisioning in Keycloak has finished.
    pub ready: bool,
}

impl Identity {
    /// Provisioning finished and recorded everything a token check needs.
    pub fn is_complete(&self) -> bool {
        self.ready
            && self.realm.is_some()
            && (self.mode == IdentityMode::Realm
                || (self.org_alias.is_some() && self.org_id.is_some()))
    }
}

/// Validates a tenant slug: 3–40 characters of `a-z`, `0-9` and single hyphens, starting with a
/// letter and not ending with a hyphen.
pub fn validate_slug(slug: &str) -> Result<(), String> {
    let ok_len = (3..=40).contains(&slug.len());
    let mut chars = slug.chars();
    let ok_first = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let ok_chars = slug
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let ok_end = !slug.ends_with('-');
    let ok_hyphens = !slug.contains("--");
    if ok_len && ok_first && ok_chars && ok_end && ok_hyphens {
        Ok(())
    } else {
        Err("must be 3-40 characters of a-z, 0-9 and single hyphens, start with a letter and not end with a hyphen".into())
    }
}

/// Schema holding a tenant's tables (in the shared or in its dedicated database).
pub fn schema_name(slug: &str) -> String {
    format!("t_{}", slug.replace('-', "_"))
}

/// Name of a tenant's dedicated database.
pub fn dedicated_database_name(slug: &str) -> String {
    format!("tenant_{}", slug.replace('-', "_"))
}

/// Name of a region's shared database.
pub fn shared_database_name(region: Region) -> String {
    format!("neofast_shared_{}", region.as_str())
}

/// A tenant as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: String,
    pub display_name: String,
    pub region: Region,
    pub isolation: Isolation,
    pub status: TenantStatus,
    pub connection_id: ConnectionId,
    pub database_name: String,
    pub schema_name: String,
    pub schema_version: i64,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub suspended_at: Option<DateTime<Utc>>,
    pub identity: Identity,
}

/// The public representation of a tenant (admin API and CLI output).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    pub id: TenantId,
    pub slug: String,
    pub display_name: String,
    pub region: Region,
    pub isolation: Isolation,
    pub status: TenantStatus,
    /// Database holding the tenant's schema.
    pub database: String,
    pub schema: String,
    /// Highest tenant-template migration applied.
    pub schema_version: i64,
    /// Why provisioning last failed, if it did (re-run create to resume).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspended_at: Option<DateTime<Utc>>,
    pub identity: IdentityView,
}

/// Where the tenant's users sign in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IdentityView {
    pub mode: IdentityMode,
    /// Keycloak realm holding the tenant's users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// Organization alias (organization mode): tokens must be requested with scope
    /// `organization:<alias>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    pub linked: bool,
    pub ready: bool,
}

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> Self {
        Self {
            id: t.id,
            slug: t.slug.clone(),
            display_name: t.display_name.clone(),
            region: t.region,
            isolation: t.isolation,
            status: t.status,
            database: t.database_name.clone(),
            schema: t.schema_name.clone(),
            schema_version: t.schema_version,
            last_error: t.last_error.clone(),
            created_at: t.created_at,
            updated_at: t.updated_at,
            suspended_at: t.suspended_at,
            identity: IdentityView {
                mode: t.identity.mode,
                realm: t.identity.realm.clone(),
                organization: t.identity.org_alias.clone(),
                linked: t.identity.linked,
                ready: t.identity.ready,
            },
        }
    }
}

/// Input for creating a tenant.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Lower-case DNS label used in `<slug>.<base-domain>`.
    pub slug: String,
    pub display_name: String,
    pub region: Region,
    #[serde(default = "default_isolation")]
    pub isolation: Isolation,
    #[serde(default)]
    pub identity: IdentityRequest,
}

/// Where the tenant's users should live.
#[derive(Debug, Clone, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct IdentityRequest {
    // `organization` (default), `realm` or `local`: the enum's schema says so (a description
    // here would wrap its reference in `allOf`, which client generators refuse).
    #[serde(default)]
    pub mode: IdentityMode,
    /// Link an existing realm (realm mode) or organization alias in the region's shared realm
    /// (organization mode) instead of creating one.
    #[serde(default)]
    pub link: Option<String>,
}

// The enum comes from `string_enum!`, which cannot mark a default variant.
#[allow(clippy::derivable_impls)]
impl Default for IdentityMode {
    fn default() -> Self {
        IdentityMode::Organization
    }
}

fn default_isolation() -> Isolation {
    Isolation::Schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["acme", "demo-us", "a1b", "x-2-y"] {
            assert!(validate_slug(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "1abc",
            "Acme",
            "acme-",
            "ac--me",
            "ac_me",
            "ac me",
            "ac.me",
            &"a".repeat(41),
            "ac\"me",
        ] {
            assert!(validate_slug(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_identifiers_and_injective() {
        assert_eq!(schema_name("demo-us"), "t_demo_us");
        assert_eq!(dedicated_database_name("demo-eu"), "tenant_demo_eu");
        let longest = "a-".repeat(20);
        let longest = longest.trim_end_matches('-');
        assert!(validate_slug(longest).is_ok());
        assert!(crate::db::is_identifier(&schema_name(longest)));
        assert!(crate::db::is_identifier(&dedicated_database_name(longest)));
        assert_eq!(shared_database_name(Region::Eu), "neofast_shared_eu");
    }

    #[test]
    fn enums_parse() {
        assert_eq!("eu".parse::<Region>().unwrap(), Region::Eu);
        assert!("EU".parse::<Region>().is_err());
        assert_eq!(
            "database".parse::<Isolation>().unwrap(),
            Isolation::Database
        );
    }
}
