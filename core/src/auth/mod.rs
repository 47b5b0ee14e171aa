//! Authentication: Keycloak as the identity provider (realm per tenant, or an organization in
//! the region's shared realm), access-token validation against cached keys, and the hoop that
//! puts the authenticated caller on every tenant-scoped request.
//!
//! Owns the rule that a `/v1` handler runs only for a caller holding a valid token issued for
//! the tenant resolved from the request: the token's issuer must be that tenant's realm and, in
//! organization mode, its one organization that tenant's. Never makes a network call on the
//! request path when keys are cached; never logs tokens or passwords.

pub mod jwks;
pub mod keycloak;
pub mod local;
pub mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use salvo::http::HeaderValue;
use salvo::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use salvo::oapi::{self, Components, EndpointArgRegister, Operation};
use salvo::prelude::*;

use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::ratelimit::Decision;
use crate::tenancy::cache::ResolvedTenant;
use crate::tenancy::resolve::CurrentTenant;
use token::{Expected, Principal, TokenError};

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
type TokenDigest = [u8; 32];
/// Valid until (unix seconds), and who.
type CachedPrincipal = (i64, Arc<Principal>);

const TOKEN_CACHE_MAX: usize = 50_000;
const TOKEN_CACHE_SECS: i64 = 300;

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
        let until = principal.expires_at.min(now + TOKEN_CACHE_SECS);
        let mut entries = self.entries.write().expect("token cache lock");
        if entries.len() >= TOKEN_CACHE_MAX {
            entries.retain(|_, (u, _)| *u > now);
            if entries.len() >= TOKEN_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(key, (until, principal));
    }
}

/// Records a security event in the tenant's audit log, off the request path (the request
/// does not wait, and a failure to record is logged, not answered).
fn record_event(
    state: &AppState,
    tenant: &ResolvedTenant,
    req: &Request,
    action: &'static str,
    data: serde_json::Value,
) {
    let db = tenant.db.clone();
    let actor = crate::audit::Actor {
        user_agent: req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(300).collect()),
        ..crate::audit::Actor::system(state, tenant.tenant.id.0, &tenant.db)
    };
    tokio::spawn(async move {
        let change = crate::audit::Change {
            action,
            target_type: "tenant",
            target_id: None,
            data,
        };
        if let Err(error) = crate::audit::record_alone(&db, &actor, change).await {
            tracing::warn!(error = %error.detail, action, "security event not recorded");
        }
    });
}

/// The credential of a request: a bearer token (JWT or API key) or an `X-Api-Key` header.
fn bearer(req: &Request) -> Option<&str> {
    if let Some(key) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim());
    }
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The caller a token stands for at `tenant`: from the cache, or validated and cached.
async fn authenticate(
    state: &AppState,
    tenant: &ResolvedTenant,
    raw: &str,
    key: TokenDigest,
    now: i64,
) -> Result<Arc<Principal>, TokenError> {
    if let Some(principal) = state.tokens.get(&key, now) {
        return Ok(principal);
    }
    if crate::apikeys::is_api_key(raw) {
        let principal = Arc::new(
            crate::apikeys::authenticate(
                &tenant.db,
                state.config.auth.api_key_secret.expose(),
                &state.api_key_usage,
                raw,
                chrono::Utc::now(),
            )
            .await?,
        );
        state.tokens.put(key, principal.clone(), now);
        return Ok(principal);
    }
    let Some(issuer) = &tenant.issuer else {
        return Err(TokenError::KeysUnavailable(
            "the tenant's identity provider is not provisioned yet".into(),
        ));
    };
    let auth = &state.config.auth;
    let expected = Expected {
        issuer,
        audience: &auth.audience,
        organization: tenant.org_alias.as_deref(),
        tenant: &tenant.tenant.slug,
        leeway_secs: auth.leeway_secs,
        max_bytes: auth.max_token_bytes,
    };
    let local = (tenant.tenant.identity.mode == crate::tenancy::model::IdentityMode::Local)
        .then_some(&*state.local_keys);
    let principal = Arc::new(token::validate(raw, &expected, &state.jwks, local, now).await?);
    state.tokens.put(key, principal.clone(), now);
    Ok(principal)
}

/// A request header as text, truncated (device descriptions are display data, not identity).
fn header_text(req: &Request, name: &str, max: usize) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(max).collect())
        .unwrap_or_default()
}

fn set_header(res: &mut Response, name: &'static str, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        res.headers_mut().insert(name, value);
    }
}

/// The client's address: the connection's peer, or the first `X-Forwarded-For` entry when
/// the deployment says a trusted proxy sets it.
pub fn client_ip(req: &Request, trust_forwarded_for: bool) -> IpAddr {
    let forwarded = trust_forwarded_for
        .then(|| {
            req.headers()
                .get("x-forwarded-for")?
                .to_str()
                .ok()?
                .split(',')
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .flatten();
    forwarded
        .or_else(|| req.remote_addr().clone().into_std().map(|a| a.ip()))
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// Hoop for tenant-scoped routers, after `ResolveTenant`: validates the bearer token.
pub struct Authenticate;

#[async_trait]
impl Handler for Authenticate {
    async fn handle(
        &self,
        req: &mut Request,
        depot: &mut Depot,
        res: &mut Response,
        ctrl: &mut FlowCtrl,
    ) {
        let (Ok(state), Ok(tenant)) = (
            depot.get_typed::<Arc<AppState>>().cloned(),
            depot.get_typed::<CurrentTenant>().cloned(),
        ) else {
            ApiError::internal("Authenticate mounted without ResolveTenant")
                .render(req, depot, res);
            ctrl.skip_rest();
            return;
        };
        let tenant = &tenant.0;
        let now = chrono::Utc::now().timestamp();
        let raw = bearer(req);
        let too_large = raw.is_some_and(|r| r.len() > state.config.auth.max_token_bytes);
        let key = raw
            .filter(|_| !too_large)
            .map(|r| TokenCache::key(&tenant.tenant.slug, r));
        // Who the caller is, if its token was validated before (no work yet for a new token).
        let known = key.as_ref().and_then(|k| state.tokens.get(k, now));
        let ip = client_ip(req, state.limiter.config().trust_forwarded_for);
        let user_key = known
            .as_ref()
            .map(|p| format!("{}:{}", tenant.tenant.id, p.subject));
        match state.limiter.check(ip, user_key.as_deref()).await {
            Decision::Allowed {
                limit,
                remaining,
                reset_secs,
            } => {
                if limit > 0 {
                    set_header(res, "ratelimit-limit", limit.to_string());
                    set_header(res, "ratelimit-remaining", remaining.to_string());
                    set_header(res, "ratelimit-reset", reset_secs.to_string());
                }
            }
            Decision::Limited {
                limit,
                retry_after_secs,
            } => {
                set_header(res, "retry-after", retry_after_secs.to_string());
                set_header(res, "ratelimit-limit", limit.to_string());
                set_header(res, "ratelimit-remaining", "0".into());
                set_header(res, "ratelimit-reset", retry_after_secs.to_string());
                ApiError::new(
                    ErrorCode::RateLimited,
                    format!("rate limit exceeded; retry in {retry_after_secs} s"),
                )
                .render(req, depot, res);
                ctrl.skip_rest();
                return;
            }
            Decision::Locked { retry_after_secs } => {
                set_header(res, "retry-after", retry_after_secs.to_string());
                ApiError::new(
                    ErrorCode::AuthLocked,
                    format!("too many failed authentications from this client; retry in {retry_after_secs} s"),
                )
                .render(req, depot, res);
                ctrl.skip_rest();
                return;
            }
        }
        let outcome = match (raw, key, known) {
            (None, _, _) => Err(TokenError::Missing),
            (Some(_), None, _) => Err(TokenError::TooLarge),
            (Some(_), Some(_), Some(principal)) => Ok(principal),
            (Some(raw), Some(key), None) => authenticate(&state, tenant, raw, key, now).await,
        }
        .and_then(|p| match &p.session_id {
            Some(sid) if state.sessions.is_revoked(tenant.tenant.id, sid) => {
                Err(TokenError::SessionRevoked)
            }
            _ => Ok(p),
        });
        if let Ok(principal) = &outcome
            && let Some(sid) = &principal.session_id
        {
            let device = crate::sessions::Device {
                user_agent: header_text(req, "user-agent", 300),
                platform: Some(header_text(req, "sec-ch-ua-platform", 60))
                    .filter(|p| !p.is_empty()),
                network: crate::sessions::coarse_network(ip),
            };
            let new_device = state
                .sessions
                .touch(tenant.tenant.id, &principal.subject, sid, &device)
                .await;
            if new_device {
                record_event(
                    &state,
                    tenant,
                    req,
                    "session.new_device",
                    serde_json::json!({"subject": principal.subject, "session": sid,
                        "user_agent": device.user_agent, "platform": device.platform,
                        "network": device.network}),
                );
            }
        }
        if let Err(e) = &outcome
            && !matches!(
                e,
                TokenError::Missing | TokenError::KeysUnavailable(_) | TokenError::SessionRevoked
            )
            && state.limiter.record_failure(ip).await
        {
            record_event(
                &state,
                tenant,
                req,
                "auth.locked_out",
                serde_json::json!({"ip": ip.to_string(),
                    "lockout_secs": state.config.rate_limit.lockout_secs,
                    "failures": state.config.rate_limit.max_auth_failures}),
            );
        }
        match outcome {
            Ok(principal) => {
                tracing::Span::current().record("user", principal.subject.as_str());
                depot.insert_typed(CurrentPrincipal(principal));
            }
            Err(error) => {
                let challenge = match &error {
                    TokenError::Missing => format!("Bearer realm=\"{}\"", tenant.tenant.slug),
                    other => format!(
                        "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{}\"",
                        tenant.tenant.slug,
                        other.to_string().replace('"', "'")
                    ),
                };
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    res.headers_mut().insert(WWW_AUTHENTICATE, value);
                }
                let detail = error.to_string();
                ApiError::new(error.code(), detail).render(req, depot, res);
                ctrl.skip_rest();
            }
        }
    }
}

/// The authenticated caller of this request; only present behind [`Authenticate`].
#[derive(Debug, Clone)]
pub struct CurrentPrincipal(pub Arc<Principal>);

crate::depot_extractor!(CurrentPrincipal, "Authenticate");

impl EndpointArgRegister for CurrentPrincipal {
    fn register(_components: &mut Components, operation: &mut Operation, _arg: &str) {
        let requirement = oapi::SecurityRequirement::new("bearer", Vec::<String>::new());
        let securities = operation.securities.get_or_insert_with(Vec::new);
        if !securities.contains(&requirement) {
            securities.push(requirement);
        }
    }
}
