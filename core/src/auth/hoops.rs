//! The HTTP edge of authentication: the `Authenticate` hoop (credential, rate limit, lockout,
//! revocation, device tracking) and the extractors of the authenticated caller.
//!
//! Owns reading credentials from headers and answering 401/429 with a challenge; the rules it
//! applies live in `auth::token`, `apikeys`, `sessions` and `ratelimit`.

use std::net::IpAddr;
use std::sync::Arc;

use salvo::http::HeaderValue;
use salvo::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use salvo::oapi::{self, Components, EndpointArgRegister, Operation};
use salvo::prelude::*;

use super::identity::CurrentUser;
use super::token::{self, Expected, Principal, TokenError};
use super::{AuthState, CurrentPrincipal, TokenCache, TokenDigest};
use crate::auth::token::ClientKind;
use crate::error::{ApiError, ErrorCode};
use crate::http::extract::dep;
use crate::http::problem::Render;
use crate::ratelimit::{Attempt, Decision, fingerprint};
use crate::tenancy::cache::ResolvedTenant;
use crate::tenancy::resolve::CurrentTenant;

/// Records a security event in the tenant's audit log, off the request path (the request
/// does not wait, and a failure to record is logged, not answered).
fn record_event(
    state: &Deps,
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
        ..crate::audit::Actor::system(&state.audit_recent, tenant.tenant.id, &tenant.db)
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
    state: &Deps,
    tenant: &ResolvedTenant,
    raw: &str,
    key: TokenDigest,
    now: i64,
) -> Result<Arc<Principal>, TokenError> {
    if let Some(principal) = state.auth.tokens.get(&key, now) {
        return Ok(principal);
    }
    if crate::apikeys::is_api_key(raw) {
        let principal = Arc::new(
            crate::apikeys::service::authenticate(
                &tenant.db,
                state.auth.config.auth.api_key_secret.expose(),
                &state.api_key_usage,
                raw,
                chrono::Utc::now(),
            )
            .await?,
        );
        state.auth.tokens.put(key, principal.clone(), now);
        return Ok(principal);
    }
    let Some(issuer) = &tenant.issuer else {
        return Err(TokenError::KeysUnavailable(
            "the tenant's identity provider is not provisioned yet".into(),
        ));
    };
    let auth = &state.auth.config.auth;
    let expected = Expected {
        issuer,
        audience: &auth.audience,
        organization: tenant.org_alias.as_deref(),
        tenant: &tenant.tenant.slug,
        leeway_secs: auth.leeway_secs,
        max_bytes: auth.max_token_bytes,
    };
    let local = (tenant.tenant.identity.mode == crate::tenancy::model::IdentityMode::Local)
        .then_some(&*state.auth.local_keys);
    let validated = token::validate(raw, &expected, &state.auth.jwks, local, now).await?;
    // A token of one of this platform's OAuth clients acts as the client's maker, narrowed.
    let principal = if validated
        .client
        .as_deref()
        .is_some_and(|c| c.starts_with(token::MACHINE_CLIENT_PREFIX))
    {
        Arc::new(crate::oauthclients::service::authenticate(&tenant.db, &validated).await?)
    } else {
        Arc::new(validated)
    };
    state.auth.tokens.put(key, principal.clone(), now);
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

/// Adds a header line (policies of the rate-limit headers are a list: one line each).
fn add_header(res: &mut Response, name: &'static str, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        res.headers_mut().append(name, value);
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

/// Rate-limit headers of one policy: the IETF draft's structured `RateLimit-Policy` and
/// `RateLimit`, and the widely read `RateLimit-Limit/-Remaining/-Reset`.
fn rate_headers(res: &mut Response, policy: &str, limit: u32, remaining: u32, reset_secs: u64) {
    set_header(res, "ratelimit-limit", limit.to_string());
    set_header(res, "ratelimit-remaining", remaining.to_string());
    set_header(res, "ratelimit-reset", reset_secs.to_string());
    add_header(res, "ratelimit-policy", format!("\"{policy}\";q={limit}"));
    add_header(
        res,
        "ratelimit",
        format!("\"{policy}\";r={remaining};t={reset_secs}"),
    );
}

/// Counts a machine client's request and spends a credit of its quota, if it has one; false
/// when none is left (the headers then say when the next refill comes). Every 50 credits, and
/// at zero, the count is written back to the database off the request path.
async fn spend_client_credit(
    state: &Deps,
    tenant: &ResolvedTenant,
    client: &crate::auth::token::ClientPolicy,
    res: &mut Response,
) -> bool {
    let limiter = &state.auth.limiter;
    let Some(quota) = &client.quota else {
        limiter.count_use(tenant.tenant.id, &client.id, false);
        return true;
    };
    let credit = limiter
        .spend_credit(tenant.tenant.id, &client.id, quota)
        .await;
    limiter.count_use(tenant.tenant.id, &client.id, !credit.allowed);
    let limit = quota
        .refill
        .map_or(quota.credits, |(amount, _)| amount)
        .clamp(0, i64::from(u32::MAX)) as u32;
    let left = credit.left.clamp(0, i64::from(u32::MAX)) as u32;
    add_header(res, "ratelimit-policy", format!("\"credits\";q={limit}"));
    add_header(
        res,
        "ratelimit",
        format!("\"credits\";r={left};t={}", credit.reset_secs),
    );
    if !credit.allowed {
        set_header(res, "ratelimit-limit", limit.to_string());
        set_header(res, "ratelimit-remaining", "0".into());
        set_header(res, "ratelimit-reset", credit.reset_secs.to_string());
        if credit.reset_secs > 0 {
            set_header(res, "retry-after", credit.reset_secs.to_string());
        }
    }
    if credit.allowed && credit.left % 50 == 0 {
        let db = tenant.db.clone();
        let (kind, record) = (client.kind, client.record);
        tokio::spawn(async move {
            let (left, period) = (credit.left, credit.period);
            match kind {
                ClientKind::ApiKey => {
                    crate::apikeys::service::snapshot_credits(&db, record, left, period).await
                }
                ClientKind::OAuthClient => {
                    crate::oauthclients::service::snapshot_credits(&db, record, left, period).await
                }
            }
        });
    }
    credit.allowed
}

/// Hoop for tenant-scoped routers, after `ResolveTenant`: validates the bearer token.
pub struct Authenticate;

/// What the hoop uses, from the depot: authentication's state, the session registry
/// (revocation, devices), API keys' last-use stamps and the audit log's recent tenants.
struct Deps {
    auth: Arc<AuthState>,
    sessions: Arc<crate::sessions::Sessions>,
    api_key_usage: Arc<crate::apikeys::UsageThrottle>,
    audit_recent: Arc<crate::audit::Recent>,
    settings: Arc<crate::settings::SettingsState>,
}

impl Deps {
    fn from(depot: &Depot) -> Result<Self, ApiError> {
        Ok(Self {
            auth: dep(depot)?,
            sessions: dep(depot)?,
            api_key_usage: dep(depot)?,
            audit_recent: dep(depot)?,
            settings: dep(depot)?,
        })
    }
}

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
            Deps::from(depot),
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
        let too_large = raw.is_some_and(|r| r.len() > state.auth.config.auth.max_token_bytes);
        let key = raw
            .filter(|_| !too_large)
            .map(|r| TokenCache::key(&tenant.tenant.slug, r));
        // Who the caller is, if its token was validated before (no work yet for a new token).
        let known = key.as_ref().and_then(|k| state.auth.tokens.get(k, now));
        if key.is_some() {
            crate::metrics::TOKENS.record(known.is_some());
        }
        let ip = client_ip(req, state.auth.limiter.config().trust_forwarded_for);
        // A machine client has a bucket of its own, apart from its owner's.
        let user_key = known.as_ref().map(|p| match &p.client_policy {
            Some(client) => format!("{}:{}", tenant.tenant.id, client.id),
            None => format!("{}:{}", tenant.tenant.id, p.subject),
        });
        // The tenant's own limits (its settings, cached): a per-user rate and a daily quota.
        let limits = match crate::settings::service::effective(&state.settings, tenant).await {
            Ok(e) => e.api.clone(),
            Err(error) => {
                tracing::warn!(error = %error.detail, "tenant settings unreadable; platform limits apply");
                crate::settings::ApiLimits::default()
            }
        };
        // Either half of the tenant's pair may be set; the other is the platform's. Neither
        // exceeds the platform's.
        let tenant_rate = limits.user_rate(&state.auth.config.rate_limit);
        let known_client = known.as_ref().and_then(|p| p.client_policy.as_ref());
        // A credential not validated yet is an attempt: its failures lock it (at this
        // address), not the address — unless it sprays (`max_auth_failures_per_ip`).
        let who = raw
            .filter(|_| known.is_none())
            .map(|r| fingerprint(&[tenant.tenant.slug.as_bytes(), r.as_bytes()]));
        let user_rate = known_client.and_then(|c| c.rate).or(tenant_rate);
        if let Some(per_day) = limits.requests_per_day
            && let Decision::Limited {
                limit,
                retry_after_secs,
            } = state.auth.limiter.quota(tenant.tenant.id, per_day).await
        {
            set_header(res, "retry-after", retry_after_secs.to_string());
            rate_headers(res, "day", limit, 0, retry_after_secs);
            ApiError::new(
                ErrorCode::QuotaExceeded,
                format!("the tenant's quota of {per_day} requests a day is used up; retry in {retry_after_secs} s"),
            )
            .render(req, depot, res);
            ctrl.skip_rest();
            return;
        }
        match state
            .auth
            .limiter
            .check_with(
                ip,
                user_key.as_deref(),
                user_rate,
                who.as_deref().map(Attempt::Credential),
            )
            .await
        {
            Decision::Allowed {
                limit,
                remaining,
                reset_secs,
            } => {
                if limit > 0 {
                    rate_headers(res, "burst", limit, remaining, reset_secs);
                }
            }
            Decision::Limited {
                limit,
                retry_after_secs,
            } => {
                if let Some(client) = known_client {
                    state
                        .auth
                        .limiter
                        .count_use(tenant.tenant.id, &client.id, true);
                }
                set_header(res, "retry-after", retry_after_secs.to_string());
                rate_headers(res, "burst", limit, 0, retry_after_secs);
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
            && let Some(who) = &who
            && state
                .auth
                .limiter
                .record_failure(ip, Attempt::Credential(who))
                .await
        {
            record_event(
                &state,
                tenant,
                req,
                "auth.locked_out",
                serde_json::json!({"ip": ip.to_string(),
                    "lockout_secs": state.auth.config.rate_limit.lockout_secs,
                    "failures": state.auth.config.rate_limit.max_auth_failures}),
            );
        }
        if let Ok(principal) = &outcome
            && let Some(client) = &principal.client_policy
        {
            if !spend_client_credit(&state, tenant, client, res).await {
                ApiError::new(
                    ErrorCode::QuotaExceeded,
                    "this API key's credits are used up; see RateLimit-Reset for the next refill",
                )
                .render(req, depot, res);
                ctrl.skip_rest();
                return;
            }
            if let Some(pinned) = client.api_version
                && !depot.contains_key(crate::http::version::FROM_HEADER)
            {
                depot.insert_typed(pinned);
            }
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

crate::depot_extractor!(CurrentPrincipal, "Authenticate");

impl EndpointArgRegister for CurrentPrincipal {
    fn register(_components: &mut Components, operation: &mut Operation, _arg: &str) {
        // Either scheme (alternatives).
        let securities = operation.securities.get_or_insert_with(Vec::new);
        for scheme in ["bearer", "apiKey"] {
            let requirement = oapi::SecurityRequirement::new(scheme, Vec::<String>::new());
            if !securities.contains(&requirement) {
                securities.push(requirement);
            }
        }
    }
}

crate::depot_extractor!(CurrentUser, "LoadUser");

impl EndpointArgRegister for CurrentUser {
    fn register(components: &mut Components, operation: &mut Operation, arg: &str) {
        CurrentPrincipal::register(components, operation, arg);
    }
}
