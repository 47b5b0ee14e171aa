//! Authentication: Keycloak as the identity provider (realm per tenant, or an organization in
//! the region's shared realm), access-token validation against cached keys, and the hoop that
//! puts the authenticated caller on every tenant-scoped request.
//!
//! Owns the rule that a `/v1` handler runs only for a caller holding a valid token issued for
//! the tenant resolved from the request: the token's issuer must be that tenant's realm and, in
//! organization mode, its one organization that tenant's. Never makes a network call on the
//! request path when keys are cached; never logs tokens or passwords. The hoop itself (HTTP) is
//! `hoops`; `identity` is the authenticated user as the kernel knows it.

pub mod hoops;
pub mod identity;
pub mod jwks;
pub mod keycloak;
pub mod local;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::error::ErrorCode;
use token::{Principal, TokenError};

impl TokenError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Missing => ErrorCode::TokenMissing,
            TokenError::TooLarge => ErrorCode::TokenTooLarge,
            TokenError::Malformed(_) => ErrorCode::TokenMalformed,
            TokenError::Algorithm(_) => ErrorCode::TokenAlgorithm,
            TokenError::Issuer => ErrorCode::TokenIssuer,
            TokenError::UnknownKey => ErrorCode::TokenUnknownKey,
            TokenError::Signature => ErrorCode::TokenSignature,
            TokenError::Expired => ErrorCode::TokenExpired,
            TokenError::NotYetValid => ErrorCode::TokenNotYetValid,
            TokenError::Audience => ErrorCode::TokenAudience,
            TokenError::Type => ErrorCode::TokenType,
            TokenError::Tenant(_) => ErrorCode::TokenTenant,
            TokenError::KeysUnavailable(_) => ErrorCode::IdentityUnavailable,
            TokenError::SessionRevoked => ErrorCode::SessionRevoked,
        }
    }
}

/// Tokens already validated for a tenant, so a client's repeated requests cost a hash and a
/// map lookup instead of a signature check. An entry never outlives its token's `exp` (nor five
/// minutes), and is keyed by tenant and token digest, so a token cached for one tenant is
/// re-checked from scratch for any other.
pub struct TokenCache {
    entries: RwLock<HashMap<TokenDigest, CachedPrincipal>>,
}

/// sha256 of (tenant slug, token).
pub(crate) type TokenDigest = [u8; 32];
/// Valid until (unix seconds), and who.
type CachedPrincipal = (i64, Arc<Principal>);

const TOKEN_CACHE_MAX: usize = 50_000;
const TOKEN_CACHE_SECS: i64 = 300;
/// A machine client's principal carries its policy (rate, quota, version): kept a minute, so
/// a change made on another instance applies within it.
const CLIENT_CACHE_SECS: i64 = 60;

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
        }
    }
}

impl TokenCache {
    pub fn key(tenant: &str, token: &str) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(tenant.as_bytes());
        h.update([0u8]);
        h.update(token.as_bytes());
        h.finalize().into()
    }

    pub fn get(&self, key: &[u8; 32], now: i64) -> Option<Arc<Principal>> {
        let entries = self.entries.read().expect("token cache lock");
        let (until, principal) = entries.get(key)?;
        (now < *until).then(|| principal.clone())
    }

    pub fn put(&self, key: [u8; 32], principal: Arc<Principal>, now: i64) {
        let keep = if principal.client_policy.is_some() {
            CLIENT_CACHE_SECS
        } else {
            TOKEN_CACHE_SECS
        };
        let until = principal.expires_at.min(now + keep);
        let mut entries = self.entries.write().expect("token cache lock");
        if entries.len() >= TOKEN_CACHE_MAX {
            entries.retain(|_, (u, _)| *u > now);
            if entries.len() >= TOKEN_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(key, (until, principal));
    }

    /// Forgets the principals of a machine client (its policy changed here).
    pub fn evict_client(&self, client: &str) {
        self.entries
            .write()
            .expect("token cache lock")
            .retain(|_, (_, p)| p.client_policy.as_ref().is_none_or(|c| c.id != client));
    }
}

/// The authenticated caller of this request; only present behind the `Authenticate` hoop.
#[derive(Debug, Clone)]
pub struct CurrentPrincipal(pub Arc<Principal>);

/// What authentication uses on the request path, built once by `app`: the validated-token
/// cache, signing keys per realm, the rate limiter and the local-mode signing key.
pub struct AuthState {
    pub config: Arc<crate::config::Config>,
    /// Tokens already validated, per tenant.
    pub tokens: TokenCache,
    /// Signing keys per realm, for token validation.
    pub jwks: Arc<jwks::JwksCache>,
    pub limiter: Arc<crate::ratelimit::RateLimiter>,
    /// The key that signs local-mode tenants' tokens.
    pub local_keys: Arc<local::LocalKeys>,
}
