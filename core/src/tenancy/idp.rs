//! Per-tenant social and enterprise login: identity providers configured through the
//! platform-admin API and passed to Keycloak.
//!
//! Owns the mapping of a tenant's provider alias to Keycloak: in realm mode the provider lives
//! in the tenant's realm under its own alias; in organization mode it lives in the shared realm
//! as `<slug>--<alias>` (so tenants never collide) and is linked to the tenant's organization
//! only. Client secrets are write-only: never returned, never logged.

use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::TenancyState;
use super::cache::ResolvedTenant;
use super::model::IdentityMode;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};

/// Providers Keycloak ships that make sense for tenant login.
pub const PROVIDERS: &[&str] = &[
    "google",
    "github",
    "microsoft",
    "gitlab",
    "facebook",
    "linkedin-openid-connect",
    "oidc",
    "saml",
];

/// A provider as configured (without its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IdentityProviderView {
    pub alias: String,
    pub provider: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// A provider to create or replace.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderInput {
    /// One of google, github, microsoft, gitlab, facebook, linkedin-openid-connect, oidc, saml.
    pub provider: String,
    pub client_id: String,
    /// Write-only.
    pub client_secret: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Extra Keycloak provider settings (e.g. `authorizationUrl`, `tokenUrl` for `oidc`).
    #[serde(default)]
    pub settings: std::collections::BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

fn placement(tenant: &ResolvedTenant) -> ApiResult<(&str, Option<&str>, String)> {
    let identity = &tenant.tenant.identity;
    if identity.mode == IdentityMode::Local {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "local-mode tenants sign in with passwords only; login providers need a Keycloak identity mode",
        ));
    }
    let realm = identity
        .realm
        .as_deref()
        .filter(|_| identity.is_complete())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::IdentityUnavailable,
                "the tenant's identity home is not provisioned",
            )
        })?;
    let (org, prefix) = match identity.mode {
        IdentityMode::Local => unreachable!("refused above"),
        IdentityMode::Realm => (None, String::new()),
        IdentityMode::Organization => (
            identity.org_id.as_deref(),
            format!("{}--", tenant.tenant.slug),
        ),
    };
    Ok((realm, org, prefix))
}

fn unavailable(e: crate::auth::keycloak::IdpError) -> ApiError {
    ApiError::new(ErrorCode::IdentityUnavailable, "Keycloak is unavailable").with_source(e)
}

/// Validates an alias: 1-40 of `a-z`, `0-9`, `-`.
pub fn valid_alias(alias: &str) -> bool {
    (1..=40).contains(&alias.len())
        && alias
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !alias.contains("--")
}

pub async fn list(
    state: &TenancyState,
    tenant: &ResolvedTenant,
) -> ApiResult<Vec<IdentityProviderView>> {
    let (realm, org, prefix) = placement(tenant)?;
    let found = state
        .keycloak
        .list_identity_providers(realm, org)
        .await
        .map_err(unavailable)?;
    Ok(found
        .iter()
        .filter_map(|p| {
            let alias = p["alias"]
                .as_str()?
                .strip_prefix(prefix.as_str())?
                .to_string();
            Some(IdentityProviderView {
                alias,
                provider: p["providerId"].as_str().unwrap_or_default().to_string(),
                display_name: p["displayName"].as_str().map(str::to_string),
                enabled: p["enabled"].as_bool().unwrap_or(false),
                client_id: p["config"]["clientId"].as_str().map(str::to_string),
            })
        })
        .collect())
}

pub async fn put(
    state: &TenancyState,
    tenant: &ResolvedTenant,
    alias: &str,
    input: &IdentityProviderInput,
) -> ApiResult<IdentityProviderView> {
    let mut errors = Vec::new();
    if !PROVIDERS.contains(&input.provider.as_str()) {
        errors.push(FieldError {
            pointer: "/provider".into(),
            message: format!("must be one of {}", PROVIDERS.join(", ")),
        });
    }
    if input.client_id.is_empty() || input.client_id.len() > 255 {
        errors.push(FieldError {
            pointer: "/client_id".into(),
            message: "must be 1-255 characters".into(),
        });
    }
    if input.client_secret.is_empty() || input.client_secret.len() > 1024 {
        errors.push(FieldError {
            pointer: "/client_secret".into(),
            message: "must be 1-1024 characters".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let (realm, org, prefix) = placement(tenant)?;
    let mut config = json!({"clientId": input.client_id, "clientSecret": input.client_secret});
    for (k, v) in &input.settings {
        if k != "clientId" && k != "clientSecret" {
            config[k] = Value::String(v.clone());
        }
    }
    let representation = json!({
        "alias": format!("{prefix}{alias}"),
        "providerId": input.provider,
        "enabled": input.enabled,
        "displayName": input.display_name,
        "config": config,
    });
    state
        .keycloak
        .put_identity_provider(realm, org, &representation)
        .await
        .map_err(unavailable)?;
    Ok(IdentityProviderView {
        alias: alias.to_string(),
        provider: input.provider.clone(),
        display_name: input.display_name.clone(),
        enabled: input.enabled,
        client_id: Some(input.client_id.clone()),
    })
}

pub async fn delete(state: &TenancyState, tenant: &ResolvedTenant, alias: &str) -> ApiResult<()> {
    let (realm, org, prefix) = placement(tenant)?;
    state
        .keycloak
        .delete_identity_provider(realm, org, &format!("{prefix}{alias}"))
        .await
        .map_err(unavailable)
}
