//! Account self-service before a caller holds an access token: sign-in for local-mode
//! tenants, token refresh (Keycloak or local), password reset (Keycloak's mail, or for
//! local-mode tenants our own token, mail and confirmation), and the public key of local-mode
//! tokens.
//!
//! Shape: `handlers` (HTTP, rate limits by client address) → `service` (rules, Keycloak,
//! refresh-token records in Redis) → `repo` (reset-token digests) and `users::repo` for
//! password hashes; `reset` is the pure token and mail rules; mail goes out through the
//! foundation's [`crate::mail::Mailer`] port. **Invariants:** a refresh token works exactly once; a
//! password-reset request never reveals whether the account exists, by its answer or its
//! timing; a reset token works once, before its expiry, and is stored only as a digest; no
//! password or token is logged.

pub mod handlers;
pub mod repo;
pub mod reset;
pub mod service;

use std::sync::Arc;

use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};

use crate::audit::Recent;
use crate::auth::keycloak::KeycloakAdmin;
use crate::auth::local::LocalKeys;
use crate::config::Config;
use crate::ratelimit::RateLimiter;
use crate::sessions::Sessions;

/// What the account endpoints use, built once by `app`.
pub struct AccountState {
    pub config: Arc<Config>,
    /// Keycloak: refresh, user lookup and reset mails.
    pub keycloak: Arc<KeycloakAdmin>,
    /// Sign-in attempts count against the client address.
    pub limiter: Arc<RateLimiter>,
    /// The key that signs local-mode tenants' tokens.
    pub local_keys: Arc<LocalKeys>,
    /// Local refresh tokens and the reset-mail throttle.
    pub redis: crate::redis_link::Link,
    /// A revoked session's refresh token is refused; a password reset ends every session.
    pub sessions: Arc<Sessions>,
    /// Local-mode tenants' password-reset mail.
    pub mailer: Arc<dyn crate::mail::Mailer>,
    /// Audit entries of password resets mark their tenant for the sealer.
    pub audit_recent: Arc<Recent>,
}

/// A refresh token to exchange.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.sessions.handlers.RefreshRequest"))]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// New tokens from Keycloak.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[salvo(schema(name = "neotenant.sessions.handlers.TokenResponse"))]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    pub token_type: String,
}

/// Who asks for a password reset.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.sessions.handlers.PasswordResetRequest"))]
pub struct PasswordResetRequest {
    /// Username or email address.
    pub login: String,
}

/// A password-reset token from the mail and the new password (local-mode tenants).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.sessions.handlers.PasswordResetConfirmRequest"))]
pub struct PasswordResetConfirmRequest {
    /// The token from the reset mail (`ntp_…`).
    pub token: String,
    /// The new password: 12-256 characters, without NUL.
    pub password: String,
}

/// The answer never says whether the account exists.
#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.sessions.handlers.Accepted"))]
pub struct Accepted {
    pub status: &'static str,
}

/// Username and password of a local-mode tenant's user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.sessions.handlers.LoginRequest"))]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}
