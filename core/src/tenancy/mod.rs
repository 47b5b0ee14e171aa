//! TenancyState: the platform registry of tenants and their databases, provisioning, resolution
//! of the tenant of a request, and the platform-admin API.
//!
//! Shape: `handlers` (HTTP) → `service` (rules, provisioning) → `repo` (registry SQL);
//! `resolve` and `cache` put the current tenant on each tenant-scoped request.

pub mod cache;
pub mod handlers;
pub mod hoops;
pub mod idp;
pub mod model;
pub mod repo;
pub mod resolve;
pub mod service;

use std::sync::Arc;

use crate::config::Config;
use crate::db::{PgPool, Pools};

/// What tenancy's services use, built once by `app`: the registry and tenant pools, the
/// resolved-tenant cache, Keycloak provisioning, and what a tenant's deletion must clear.
pub struct TenancyState {
    pub config: Arc<Config>,
    /// The platform registry database.
    pub registry: PgPool,
    /// Tenant databases, one pool per physical database.
    pub pools: Arc<Pools>,
    pub tenant_cache: Arc<cache::TenantCache>,
    /// Keycloak admin API (provisioning); never used on the request path.
    pub keycloak: Arc<crate::auth::keycloak::KeycloakAdmin>,
    /// Per-tenant search indexes (a deleted tenant's index is removed).
    pub search: Arc<neotenant_search::Registry>,
    /// Tenants whose audit log this instance wrote recently (a deleted tenant is forgotten).
    pub audit_recent: Arc<crate::audit::recent::Recent>,
}
