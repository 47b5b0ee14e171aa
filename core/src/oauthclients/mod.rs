//! OAuth2 machine clients: confidential clients for the client-credentials grant that a user
//! makes in the tenant's Keycloak realm (or its region's shared realm), for integrations that
//! want standard OAuth instead of an API key.
//!
//! Owns the client record and the mapping of its tokens to a caller. **Invariants:** a client
//! acts as its maker, narrowed to its scopes (each one the maker holds: the delegation rule, as
//! for API keys); its secret is shown once, at creation or rotation, and kept only by Keycloak;
//! its tokens carry the tenant's claim and its `clientId` (`ntc-<slug>-<hex>`), and are
//! accepted only while this tenant holds the client unrevoked — a token of an unknown or
//! revoked client is refused, never taken for a user; revocation deletes the Keycloak client
//! and is broadcast like an API key's, so every instance refuses its tokens at once; each
//! client has a rate-limit bucket of its own, and may have its own rate, a quota of credits
//! and a pinned API version (the policy API keys have, `apikeys::policy`). Never logs a
//! secret.
//!
//! Shape: `handlers` (`/v1/oauth-clients`) → `service` (Keycloak and the table together,
//! authentication on the request path) → `repo` (SQL).

pub mod handlers;
pub mod repo;
pub mod service;

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::apikeys::{KeyQuota, KeyRate};

/// A client as listed (never with its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.oauthclients.OAuthClient"))]
pub struct OAuthClientView {
    pub id: Uuid,
    /// The `client_id` to send to the token endpoint.
    pub client_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// Where to get tokens: `grant_type=client_credentials` with `client_id` and
    /// `client_secret`.
    pub token_endpoint: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<DateTime<Utc>>,
    /// The API version its requests get when they send no `NeoTenant-Version`.
    pub api_version: String,
    /// Its own rate limit; absent: the tenant's per-user rate (in a bucket of its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<KeyRate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<KeyQuota>,
}

/// A client with its secret: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.oauthclients.OAuthClientSecret"))]
pub struct OAuthClientSecret {
    #[serde(flatten)]
    pub client: OAuthClientView,
    /// Store it now: it cannot be shown again.
    pub client_secret: String,
}

/// A client to make.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.oauthclients.NewOAuthClient",
    example = json!({"name": "crm sync", "scopes": ["resources.read.tenant", "users.read.tenant"],
        "rate_limit": {"per_sec": 5.0, "burst": 20},
        "quota": {"credits": 100000, "refill": {"amount": 100000, "interval_secs": 2592000}}})))]
pub struct NewOAuthClient {
    /// 1-100 characters.
    pub name: String,
    /// 1-100 permissions (`resource.action.scope`), each one the maker holds: the client may do
    /// only what both they and its maker allow.
    pub scopes: Vec<String>,
    /// The version to pin the client to; absent: the newest (`GET /v1/api-versions`).
    #[serde(default)]
    pub api_version: Option<String>,
    /// Its own rate (at most the tenant's per-user rate); absent: the tenant's per-user rate,
    /// in a bucket of its own.
    #[serde(default)]
    pub rate_limit: Option<KeyRate>,
    /// Credits its requests spend, with an optional periodic refill.
    #[serde(default)]
    pub quota: Option<KeyQuota>,
}

/// A client's use: its quota's credits left and requests per UTC day.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.oauthclients.ClientUsage"))]
pub struct ClientUsage {
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<KeyQuota>,
    /// Credits left now (absent without a quota).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits_left: Option<i64>,
    /// Oldest first, today last.
    pub days: Vec<crate::apikeys::UsageDay>,
}

/// The session id under which a client's revocation is broadcast.
pub fn revocation_id(id: Uuid) -> String {
    format!("oauthclient:{}", id.simple())
}
