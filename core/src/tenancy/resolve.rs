//! Tenant resolution for tenant-scoped routes: from the Host subdomain
//! (`<slug>.<base-domain>`) or, where allowed, the `X-Tenant` header; checked against each
//! other; then looked up through the tenant cache.
//!
//! Owns the rule that a request reaches tenant data only with an `active` tenant in its depot,
//! through the [`CurrentTenant`] extractor. Unknown → 404 `tenant-not-found`, suspended → 403
//! `tenant-suspended`, still provisioning or being deleted → 503 `tenant-unavailable`. Later the
//! token issuer will be checked against the tenant resolved here.

use std::sync::Arc;

use super::TenancyState;
use super::cache::ResolvedTenant;
use super::model::{IdentityMode, Tenant};
use super::model::{TenantStatus, validate_slug};
use super::repo;
use crate::db::{self, TenantDb};
use crate::error::{ApiError, ApiResult, ErrorCode};

pub const X_TENANT: &str = "x-tenant";

/// The slug named by the Host header, if the host is `<slug>.<base_domain>` (any port).
pub fn slug_from_host<'a>(host: &'a str, base_domain: &str) -> Option<&'a str> {
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let prefix = host.strip_suffix(base_domain)?.strip_suffix('.')?;
    (!prefix.is_empty() && !prefix.contains('.')).then_some(prefix)
}

/// Which slug the request names; both sources must agree when both are present.
pub fn requested_slug<'a>(
    host: Option<&'a str>,
    header: Option<&'a str>,
    base_domain: &str,
    allow_header: bool,
) -> ApiResult<&'a str> {
    let from_host = host.and_then(|h| slug_from_host(h, base_domain));
    let from_header = if allow_header {
        header.map(str::trim)
    } else {
        None
    };
    match (from_host, from_header) {
        (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b) => Err(ApiError::new(
            ErrorCode::TenantMismatch,
            format!("Host names tenant {a:?} but X-Tenant names {b:?}"),
        )),
        (Some(slug), _) | (None, Some(slug)) => Ok(slug),
        (None, None) => Err(ApiError::new(
            ErrorCode::TenantRequired,
            if allow_header {
                "address the tenant as <slug>.<base-domain> or send an X-Tenant header"
            } else {
                "address the tenant as <slug>.<base-domain>"
            },
        )),
    }
}

/// Looks a tenant up (cache first) and checks that it may serve requests.
pub async fn resolve(state: &TenancyState, slug: &str) -> ApiResult<Arc<ResolvedTenant>> {
    let unknown = || ApiError::new(ErrorCode::TenantNotFound, format!("no tenant {slug:?}"));
    let slug = slug.to_ascii_lowercase();
    if validate_slug(&slug).is_err() {
        return Err(unknown());
    }
    let resolved = match state.tenant_cache.get(&slug) {
        Some(hit) => hit,
        None => {
            let mut conn = state.registry.get_owned().await?;
            let found = repo::find_by_slug(&mut conn, &slug)
                .await?
                .map(|tenant| Arc::new(resolved(state, tenant)));
            state.tenant_cache.put(&slug, found.clone());
            found
        }
    };
    let resolved = resolved.ok_or_else(unknown)?;
    match resolved.tenant.status {
        TenantStatus::Active => Ok(resolved),
        TenantStatus::Suspended => Err(ApiError::new(
            ErrorCode::TenantSuspended,
            format!("tenant {slug:?} is suspended"),
        )),
        TenantStatus::Provisioning | TenantStatus::Deleting => Err(ApiError::new(
            ErrorCode::TenantUnavailable,
            format!("tenant {slug:?} is {}", resolved.tenant.status),
        )),
    }
}

/// The active tenant of this request; only present behind the `ResolveTenant` hoop.
#[derive(Debug, Clone)]
pub struct CurrentTenant(pub Arc<ResolvedTenant>);

/// A tenant with everything a request needs precomputed: its database handle and what its
/// tokens must carry.
pub fn resolved(state: &TenancyState, tenant: Tenant) -> ResolvedTenant {
    let db = tenant_db(state, &tenant);
    let identity = &tenant.identity;
    let (issuer, org_alias) = match (
        identity.ready,
        identity.mode,
        &identity.realm,
        &identity.org_alias,
    ) {
        (true, IdentityMode::Realm, Some(realm), _) => (Some(state.keycloak.issuer(realm)), None),
        (true, IdentityMode::Organization, Some(realm), Some(alias)) => {
            (Some(state.keycloak.issuer(realm)), Some(alias.clone()))
        }
        (true, IdentityMode::Local, _, _) => (Some(crate::auth::local::issuer(&tenant.slug)), None),
        // Not provisioned (or inconsistent): no issuer, so every token is refused.
        _ => (None, None),
    };
    ResolvedTenant {
        tenant,
        db,
        issuer,
        org_alias,
    }
}

/// The scoped database handle of an active tenant.
pub fn tenant_db(state: &TenancyState, tenant: &Tenant) -> TenantDb {
    let pool = state
        .pools
        .get_or_create(tenant.connection_id, &tenant.database_name, || {
            db::database_url(
                state.config.region_server_url(tenant.region),
                &tenant.database_name,
            )
        });
    TenantDb::new(pool, &tenant.schema_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_parsing() {
        assert_eq!(slug_from_host("acme.localhost", "localhost"), Some("acme"));
        assert_eq!(
            slug_from_host("acme.localhost:8080", "localhost"),
            Some("acme")
        );
        assert_eq!(
            slug_from_host("acme.api.example.com", "api.example.com"),
            Some("acme")
        );
        assert_eq!(slug_from_host("localhost:8080", "localhost"), None);
        assert_eq!(slug_from_host("a.b.localhost", "localhost"), None);
        assert_eq!(slug_from_host("acmelocalhost", "localhost"), None);
        assert_eq!(slug_from_host("127.0.0.1:8080", "localhost"), None);
    }

    #[test]
    fn header_and_host_must_agree() {
        assert_eq!(
            requested_slug(Some("a-1.localhost"), None, "localhost", true).unwrap(),
            "a-1"
        );
        assert_eq!(
            requested_slug(Some("127.0.0.1"), Some("b-2"), "localhost", true).unwrap(),
            "b-2"
        );
        assert_eq!(
            requested_slug(Some("a-1.localhost"), Some("b-2"), "localhost", true)
                .unwrap_err()
                .code,
            ErrorCode::TenantMismatch
        );
        assert_eq!(
            requested_slug(Some("127.0.0.1"), Some("b-2"), "localhost", false)
                .unwrap_err()
                .code,
            ErrorCode::TenantRequired
        );
        assert_eq!(
            requested_slug(None, None, "localhost", true)
                .unwrap_err()
                .code,
            ErrorCode::TenantRequired
        );
    }
}
