//! Session registry and revocation, in Redis, keyed by the token's session id (`sid`).
//!
//! Owns: recording each session's device (user agent, client hints, coarse IP) and last-seen
//! time — written at most once a minute per session per instance; spotting a device a user has
//! not used before; revoking one session or all of a user's, which also ends them in Keycloak.
//! **Invariant:** revocation is checked from an in-process set, refreshed by a Redis pub/sub
//! broadcast on every change and reloaded whole whenever the listener reconnects, so a revoked
//! session is refused by every instance within about a second and the check costs no network
//! call. Never stores a token.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};

use crate::ids::TenantId;

/// Channel carrying `<tenant id>:<sid>` of every revoked session.
pub const CHANNEL: &str = "neotenant:session-revoked";
/// How long a revocation is remembered: longer than any access token lives.
const REVOKED_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long an idle session stays listed.
const SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// One session as listed to its user.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct SessionView {
    /// The identity provider's session id.
    pub id: String,
    pub user_agent: String,
    /// Client hints (`Sec-CH-UA-Platform`), when the browser sent them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The client network, coarsened (/24 for IPv4, /48 for IPv6).
    pub network: String,
    pub first_seen: i64,
    pub last_seen: i64,
    /// Whether this is the session of the request listing it.
    #[serde(default)]
    pub current: bool,
}

/// What a request tells about its device.
#[derive(Debug, Clone)]
pub struct Device {
    pub user_agent: String,
    pub platform: Option<String>,
    pub network: String,
}

impl Device {
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!(
            "{}\u{0}{}\u{0}{}",
            self.user_agent,
            self.platform.as_deref().unwrap_or(""),
            self.network
        ));
        hex::encode(&digest[..12])
    }
}

/// Coarse network of an address: /24 (IPv4) or /48 (IPv6).
pub fn coarse_network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// Instants per (tenant, session id), looked up without allocating on the request path.
#[derive(Default)]
struct PerSession {
    map: RwLock<HashMap<TenantId, HashMap<String, Instant>>>,
}

impl PerSession {
    const MAX: usize = 100_000;

    fn get(&self, tenant: TenantId, sid: &str) -> Option<Instant> {
        self.map
            .read()
            .expect("session map lock")
            .get(&tenant)?
            .get(sid)
            .copied()
    }

    /// Inserts; when the map is full, first drops entries `expired` says are stale.
    fn insert(
        &self,
        tenant: TenantId,
        sid: String,
        at: Instant,
        expired: impl Fn(&Instant) -> bool,
    ) {
        let mut map = self.map.write().expect("session map lock");
        if map.values().map(HashMap::len).sum::<usize>() >= Self::MAX {
            map.retain(|_, sids| {
                sids.retain(|_, t| !expired(t));
                !sids.is_empty()
            });
        }
        map.entry(tenant).or_default().insert(sid, at);
    }
}

pub struct Sessions {
    redis: redis::aio::ConnectionManager,
    /// Revoked sessions and until when that is remembered.
    revoked: PerSession,
    /// When this instance last recorded each session.
    touched: PerSession,
    pub new_devices: prometheus::IntCounter,
}

fn key(tenant: TenantId, sid: &str) -> String {
    format!("neotenant:sess:{tenant}:{sid}")
}
fn user_key(tenant: TenantId, subject: &str) -> String {
    format!("neotenant:sess-user:{tenant}:{subject}")
}
fn devices_key(tenant: TenantId, subject: &str) -> String {
    format!("neotenant:devices:{tenant}:{subject}")
}
fn revoked_key(tenant: TenantId, sid: &str) -> String {
    format!("neotenant:revoked:{tenant}:{sid}")
}
fn member(tenant: TenantId, sid: &str) -> String {
    format!("{tenant}:{sid}")
}

impl Sessions {
    pub fn new(redis: redis::aio::ConnectionManager, new_devices: prometheus::IntCounter) -> Self {
        Self {
            redis,
            revoked: PerSession::default(),
            touched: PerSession::default(),
            new_devices,
        }
    }

    /// Whether the session was revoked (in-process; no network).
    pub fn is_revoked(&self, tenant: TenantId, sid: &str) -> bool {
        self.revoked
            .get(tenant, sid)
            .is_some_and(|until| Instant::now() < until)
    }

    fn mark_revoked(&self, tenant: TenantId, sid: &str) {
        let now = Instant::now();
        self.revoked
            .insert(tenant, sid.to_string(), now + REVOKED_TTL, |until| {
                *until <= now
            });
    }

    /// Applies a `<tenant id>:<sid>` revocation entry (broadcast or remembered in Redis).
    fn mark_revoked_entry(&self, entry: &str) {
        if let Some((tenant, sid)) = entry.split_once(':')
            && let Ok(tenant) = tenant.parse::<TenantId>()
        {
            self.mark_revoked(tenant, sid);
        }
    }

    /// Records the session's device and last-seen time (at most once a minute per session per
    /// instance). Returns whether the device is new for this user. Best effort: a Redis failure
    /// is logged and the request goes on.
    pub async fn touch(&self, tenant: TenantId, subject: &str, sid: &str, device: &Device) -> bool {
        if self
            .touched
            .get(tenant, sid)
            .is_some_and(|t| t.elapsed() < TOUCH_EVERY)
        {
            return false;
        }
        self.touched
            .insert(tenant, sid.to_string(), Instant::now(), |t| {
                t.elapsed() >= TOUCH_EVERY
            });
        let now = chrono::Utc::now().timestamp();
        let mut conn = self.redis.clone();
        let k = key(tenant, sid);
        let result: redis::RedisResult<i64> = async {
            let (_, _, _, _, added): ((), (), (), (), i64) = redis::pipe()
                .hset_nx(&k, "first_seen", now)
                .hset_multiple(
                    &k,
                    &[
                        ("user_agent", device.user_agent.clone()),
                        ("platform", device.platform.clone().unwrap_or_default()),
                        ("network", device.network.clone()),
                        ("last_seen", now.to_string()),
                        ("subject", subject.to_string()),
                    ],
                )
                .expire(&k, SESSION_TTL.as_secs() as i64)
                .sadd(user_key(tenant, subject), sid)
                .sadd(devices_key(tenant, subject), device.fingerprint())
                .query_async(&mut conn)
                .await?;
            Ok(added)
        }
        .await;
        match result {
            Ok(1) => {
                self.new_devices.inc();
                tracing::info!(tenant = %tenant, user = subject, network = %device.network, "new device for user");
                true
            }
            Ok(_) => false,
            Err(error) => {
                tracing::warn!(%error, "recording the session failed");
                false
            }
        }
    }

    /// The user's sessions, newest activity first.
    pub async fn list(
        &self,
        tenant: TenantId,
        subject: &str,
    ) -> redis::RedisResult<Vec<SessionView>> {
        let mut conn = self.redis.clone();
        let sids: Vec<String> = conn.smembers(user_key(tenant, subject)).await?;
        let mut out = Vec::new();
        for sid in sids {
            let fields: HashMap<String, String> = conn.hgetall(key(tenant, &sid)).await?;
            if fields.is_empty() || self.is_revoked(tenant, &sid) {
                let _: i64 = conn.srem(user_key(tenant, subject), &sid).await?;
                continue;
            }
            let num = |f: &str| fields.get(f).and_then(|v| v.parse().ok()).unwrap_or(0);
            out.push(SessionView {
                id: sid,
                user_agent: fields.get("user_agent").cloned().unwrap_or_default(),
                platform: fields.get("platform").filter(|p| !p.is_empty()).cloned(),
                network: fields.get("network").cloned().unwrap_or_default(),
                first_seen: num("first_seen"),
                last_seen: num("last_seen"),
                current: false,
            });
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.last_seen));
        Ok(out)
    }

    /// Whether `sid` is a session of this user.
    pub async fn owns(
        &self,
        tenant: TenantId,
        subject: &str,
        sid: &str,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.redis.clone();
        conn.sismember(user_key(tenant, subject), sid).await
    }

    /// Revokes sessions everywhere: remembered in Redis (for instances that start later) and
    /// broadcast (for running ones), and applied here at once.
    pub async fn revoke(
        &self,
        tenant: TenantId,
        subject: &str,
        sids: &[String],
    ) -> redis::RedisResult<()> {
        let mut conn = self.redis.clone();
        for sid in sids {
            let entry = member(tenant, sid);
            self.mark_revoked(tenant, sid);
            let _: () = redis::pipe()
                .set_ex(revoked_key(tenant, sid), 1, REVOKED_TTL.as_secs())
                .del(key(tenant, sid))
                .srem(user_key(tenant, subject), sid)
                .publish(CHANNEL, &entry)
                .query_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Loads every remembered revocation (at start and after the listener reconnects).
    async fn reload(&self, conn: &mut redis::aio::ConnectionManager) -> redis::RedisResult<()> {
        let mut iter: redis::AsyncIter<String> = conn.scan_match("neotenant:revoked:*").await?;
        let mut found = Vec::new();
        while let Some(k) = iter.next_item().await {
            found.push(k?);
        }
        for k in found {
            if let Some(entry) = k.strip_prefix("neotenant:revoked:") {
                self.mark_revoked_entry(entry);
            }
        }
        Ok(())
    }
}

/// Applies revocations broadcast by any instance until `shutdown` fires.
pub async fn listen(
    client: redis::Client,
    sessions: Arc<Sessions>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let on_message = sessions.clone();
    crate::pubsub::listen(
        client,
        CHANNEL,
        "session revocations",
        shutdown,
        crate::pubsub::Subscriber {
            // Revocations broadcast while we were not listening are in Redis.
            on_connect: move || {
                let sessions = sessions.clone();
                Box::pin(async move {
                    let mut conn = sessions.redis.clone();
                    sessions.reload(&mut conn).await
                }) as futures::future::BoxFuture<'static, _>
            },
            on_message: move |entry: &str| on_message.mark_revoked_entry(entry),
            on_lost: || {},
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_coarse() {
        assert_eq!(
            coarse_network("203.0.113.77".parse().unwrap()),
            "203.0.113.0/24"
        );
        assert_eq!(
            coarse_network("2001:db8:1:2::5".parse().unwrap()),
            "2001:db8:1::/48"
        );
    }

    #[test]
    fn fingerprints_depend_on_the_device() {
        let a = Device {
            user_agent: "curl/8".into(),
            platform: None,
            network: "10.0.0.0/24".into(),
        };
        let mut b = a.clone();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.network = "10.0.1.0/24".into();
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}

/// HTTP endpoints: my sessions, revoking them, an admin revoking a user's, and token refresh.
pub mod handlers {

    use salvo::oapi::{ToSchema, endpoint};
    use salvo::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::SessionView;
    use crate::app::AppState;
    use crate::error::{ApiError, ApiResult, ErrorCode};
    use crate::http::extract::{JsonBody, Path};
    use crate::http::reply::{NoContent, Reply};
    use crate::ids::UserId;
    use crate::tenancy::resolve::CurrentTenant;
    use crate::users::CurrentUser;

    use crate::http::extract::state;

    fn redis_down(e: redis::RedisError) -> ApiError {
        ApiError::unavailable("the session store", e)
    }

    /// Ends sessions in Keycloak too; our own revocation already holds if Keycloak is down.
    async fn end_in_keycloak(state: &AppState, tenant: &CurrentTenant, sids: &[String]) {
        let Some(realm) = tenant.0.tenant.identity.realm.as_deref() else {
            return;
        };
        for sid in sids {
            if let Err(error) = state.keycloak.delete_session(realm, sid).await {
                tracing::warn!(%error, "ending a session in Keycloak failed; it stays revoked here");
            }
        }
    }

    /// My sessions, most recently active first.
    #[endpoint(tags("sessions"), status_codes(200, 401, 503))]
    pub async fn list_sessions(
        me: CurrentUser,
        tenant: CurrentTenant,
        depot: &mut Depot,
    ) -> ApiResult<Reply<Vec<SessionView>>> {
        let state = state(depot)?;
        let mut sessions = state
            .sessions
            .list(tenant.0.tenant.id, &me.user.subject)
            .await
            .map_err(redis_down)?;
        let current = me.principal.0.session_id.as_deref();
        for s in &mut sessions {
            s.current = Some(s.id.as_str()) == current;
        }
        Ok(Reply::ok(sessions))
    }

    /// End one of my sessions, everywhere.
    #[endpoint(tags("sessions"), status_codes(204, 401, 404, 503))]
    pub async fn revoke_session(
        caller: crate::rbac::Caller,
        tenant: CurrentTenant,
        id: Path<String>,
        depot: &mut Depot,
    ) -> ApiResult<NoContent> {
        let state = state(depot)?;
        let me = &caller.user;
        let tenant_id = tenant.0.tenant.id;
        let sid = id.0;
        if sid.len() > 128
            || !state
                .sessions
                .owns(tenant_id, &me.user.subject, &sid)
                .await
                .map_err(redis_down)?
        {
            return Err(ApiError::not_found("session"));
        }
        let sids = vec![sid];
        state
            .sessions
            .revoke(tenant_id, &me.user.subject, &sids)
            .await
            .map_err(redis_down)?;
        end_in_keycloak(&state, &tenant, &sids).await;
        crate::audit::record_alone(
            &tenant.0.db,
            &caller.actor,
            crate::audit::Change {
                action: "session.revoked",
                target_type: "session",
                target_id: Some(sids[0].clone()),
                data: serde_json::json!({}),
            },
        )
        .await?;
        Ok(NoContent)
    }

    /// Ends every session of `user` (plus `current`, if the registry missed it), here and in
    /// Keycloak, and records who did it.
    async fn revoke_all(
        state: &AppState,
        tenant: &CurrentTenant,
        actor: &crate::audit::Actor,
        user: &crate::users::User,
        current: Option<&str>,
    ) -> ApiResult<()> {
        let subject = user.subject.as_str();
        let tenant_id = tenant.0.tenant.id;
        let mut sids: Vec<String> = state
            .sessions
            .list(tenant_id, subject)
            .await
            .map_err(redis_down)?
            .into_iter()
            .map(|s| s.id)
            .collect();
        if let Some(current) = current
            && !sids.iter().any(|s| s == current)
        {
            sids.push(current.to_string());
        }
        state
            .sessions
            .revoke(tenant_id, subject, &sids)
            .await
            .map_err(redis_down)?;
        if let Some(realm) = tenant.0.tenant.identity.realm.as_deref()
            && let Err(error) = state.keycloak.logout_user(realm, subject).await
        {
            tracing::warn!(%error, "ending a user's sessions in Keycloak failed; they stay revoked here");
        }
        crate::audit::record_alone(
            &tenant.0.db,
            actor,
            crate::audit::Change {
                action: "sessions.revoked_all",
                target_type: "user",
                target_id: Some(user.id.to_string()),
                data: serde_json::json!({}),
            },
        )
        .await
    }

    /// End all my sessions, this one included.
    #[endpoint(tags("sessions"), status_codes(204, 401, 503))]
    pub async fn revoke_my_sessions(
        caller: crate::rbac::Caller,
        tenant: CurrentTenant,
        depot: &mut Depot,
    ) -> ApiResult<NoContent> {
        let state = state(depot)?;
        let me = &caller.user;
        revoke_all(
            &state,
            &tenant,
            &caller.actor,
            &me.user,
            me.principal.0.session_id.as_deref(),
        )
        .await?;
        Ok(NoContent)
    }

    /// End all sessions of a user of this tenant.
    #[endpoint(tags("sessions"), status_codes(204, 401, 403, 404, 503))]
    pub async fn revoke_user_sessions(
        can: crate::rbac::Can<crate::rbac::need::SessionsRevokeAny>,
        tenant: CurrentTenant,
        id: Path<UserId>,
        depot: &mut Depot,
    ) -> ApiResult<NoContent> {
        let state = state(depot)?;
        let user = crate::users::service::by_id(&tenant.0.db, id.0).await?;
        revoke_all(&state, &tenant, &can.actor, &user, None).await?;
        Ok(NoContent)
    }

    /// A refresh token to exchange.
    #[derive(Debug, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RefreshRequest {
        pub refresh_token: String,
    }

    /// New tokens from Keycloak.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    pub struct TokenResponse {
        pub access_token: String,
        pub refresh_token: String,
        pub expires_in: i64,
        pub token_type: String,
    }

    /// Exchange a refresh token for new tokens (the refresh token rotates: the old one is
    /// refused from then on).
    #[endpoint(tags("sessions"), status_codes(200, 400, 401, 422, 503))]
    pub async fn refresh(
        tenant: CurrentTenant,
        body: JsonBody<RefreshRequest>,
        depot: &mut Depot,
    ) -> ApiResult<Reply<TokenResponse>> {
        let state = state(depot)?;
        let identity = &tenant.0.tenant.identity;
        if identity.mode == crate::tenancy::model::IdentityMode::Local {
            return Ok(Reply::ok(
                local_refresh(&state, &tenant.0, &body.0.refresh_token).await?,
            ));
        }
        let realm = identity.realm.as_deref().ok_or_else(|| {
            ApiError::new(
                ErrorCode::IdentityUnavailable,
                "the tenant has no identity provider yet",
            )
        })?;
        if body.0.refresh_token.len() > 16_384 {
            return Err(ApiError::new(
                ErrorCode::RefreshTokenInvalid,
                "the refresh token is too large",
            ));
        }
        let scope = match &tenant.0.org_alias {
            Some(alias) => format!("openid organization:{alias}"),
            None => "openid".into(),
        };
        let tokens = state
            .keycloak
            .refresh(realm, &body.0.refresh_token, &scope)
            .await
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::IdentityUnavailable,
                    "the identity provider is unavailable",
                )
                .with_source(e)
            })?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::RefreshTokenInvalid,
                    "the refresh token is invalid, expired or already used",
                )
            })?;
        let tokens: TokenResponse = serde_json::from_value(tokens).map_err(ApiError::internal)?;
        Ok(Reply::ok(tokens))
    }

    /// Who asks for a password reset.
    #[derive(Debug, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct PasswordResetRequest {
        /// Username or email address.
        pub login: String,
    }

    /// The answer never says whether the account exists.
    #[derive(Debug, Serialize, ToSchema)]
    pub struct Accepted {
        pub status: &'static str,
    }

    /// Mail a password-reset link (through Keycloak) to the tenant user with this username or
    /// email. Always 202, whether or not such a user exists; one mail per user per minute.
    #[endpoint(tags("sessions"), status_codes(202, 400, 422, 429))]
    pub async fn password_reset(
        req: &mut Request,
        tenant: CurrentTenant,
        body: JsonBody<PasswordResetRequest>,
        depot: &mut Depot,
    ) -> ApiResult<Reply<Accepted>> {
        let state = state(depot)?;
        let login = body.0.login.trim().to_lowercase();
        if login.is_empty() || login.len() > 254 {
            return Err(ApiError::validation(vec![crate::error::FieldError {
                pointer: "/login".into(),
                message: "must be 1-254 characters".into(),
            }]));
        }
        let ip = crate::auth::client_ip(req, state.limiter.config().trust_forwarded_for);
        if let crate::ratelimit::Decision::Limited {
            retry_after_secs, ..
        }
        | crate::ratelimit::Decision::Locked { retry_after_secs } =
            state.limiter.check(ip, None).await
        {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!("retry in {retry_after_secs} s"),
            ));
        }
        let tenant = &tenant.0;
        // The lookup and the mail happen after the answer, so neither its content nor its
        // timing tells whether the account exists.
        let state_bg = state.clone();
        let identity = tenant.tenant.identity.clone();
        let tenant_id = tenant.tenant.id;
        tokio::spawn(async move {
            if let Err(error) = send_reset(&state_bg, tenant_id, &identity, &login).await {
                tracing::warn!(%error, "password reset mail not sent");
            }
        });
        Ok(Reply::accepted(Accepted { status: "accepted" }))
    }

    async fn send_reset(
        state: &AppState,
        tenant_id: crate::ids::TenantId,
        identity: &crate::tenancy::model::Identity,
        login: &str,
    ) -> Result<(), crate::auth::keycloak::IdpError> {
        let (Some(realm), true) = (identity.realm.as_deref(), identity.is_complete()) else {
            return Ok(());
        };
        let Some(user_id) = state.keycloak.find_user(realm, login).await? else {
            return Ok(());
        };
        if let Some(org_id) = identity.org_id.as_deref()
            && identity.mode == crate::tenancy::model::IdentityMode::Organization
            && !state.keycloak.is_member(realm, org_id, &user_id).await?
        {
            return Ok(());
        }
        // At most one mail per user and minute, however it is asked for.
        let mut redis = state.redis.clone();
        let first: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(format!("neotenant:pwreset:{tenant_id}:{user_id}"))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(60)
            .query_async(&mut redis)
            .await;
        if !matches!(first, Ok(Some(_))) {
            return Ok(());
        }
        state.keycloak.send_password_reset(realm, &user_id).await
    }

    /// Username and password of a local-mode tenant's user.
    #[derive(Debug, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct LoginRequest {
        pub username: String,
        pub password: String,
    }

    fn invalid() -> ApiError {
        ApiError::new(
            ErrorCode::InvalidCredentials,
            "the username or password is wrong",
        )
    }

    /// Issues an access token and a refresh token for a session of a local user.
    async fn issue(
        state: &AppState,
        tenant: &crate::tenancy::cache::ResolvedTenant,
        subject: &str,
        sid: &str,
        username: Option<&str>,
        email: Option<&str>,
    ) -> ApiResult<TokenResponse> {
        use crate::auth::local;
        let now = chrono::Utc::now().timestamp();
        let claims = local::LocalClaims {
            slug: &tenant.tenant.slug,
            audience: &state.config.auth.audience,
            subject,
            session_id: sid,
            username,
            email,
        };
        let access = local::access_token(&state.local_keys, &claims, now);
        let (refresh_token, digest) = local::new_refresh_token();
        let record = serde_json::json!({"subject": subject, "sid": sid, "username": username, "email": email});
        let mut redis = state.redis.clone();
        let _: () = redis::cmd("SET")
            .arg(local::refresh_key(tenant.tenant.id, &digest))
            .arg(record.to_string())
            .arg("EX")
            .arg(local::REFRESH_TTL_SECS)
            .query_async(&mut redis)
            .await
            .map_err(redis_down)?;
        Ok(TokenResponse {
            access_token: access,
            refresh_token,
            expires_in: local::ACCESS_TTL_SECS,
            token_type: "Bearer".into(),
        })
    }

    async fn local_refresh(
        state: &AppState,
        tenant: &crate::tenancy::cache::ResolvedTenant,
        token: &str,
    ) -> ApiResult<TokenResponse> {
        use crate::auth::local;
        let refused = || {
            ApiError::new(
                ErrorCode::RefreshTokenInvalid,
                "the refresh token is invalid, expired or already used",
            )
        };
        if !token.starts_with("ntr_") || token.len() > 100 {
            return Err(refused());
        }
        let mut redis = state.redis.clone();
        // GETDEL: a refresh token works exactly once.
        let record: Option<String> = redis::cmd("GETDEL")
            .arg(local::refresh_key(
                tenant.tenant.id,
                &local::refresh_digest(token),
            ))
            .query_async(&mut redis)
            .await
            .map_err(redis_down)?;
        let record: serde_json::Value = record
            .and_then(|r| serde_json::from_str(&r).ok())
            .ok_or_else(refused)?;
        let (Some(subject), Some(sid)) = (record["subject"].as_str(), record["sid"].as_str())
        else {
            return Err(refused());
        };
        if state.sessions.is_revoked(tenant.tenant.id, sid) {
            return Err(refused());
        }
        issue(
            state,
            tenant,
            subject,
            sid,
            record["username"].as_str(),
            record["email"].as_str(),
        )
        .await
    }

    /// Sign in to a local-mode tenant with a username and password.
    #[endpoint(tags("sessions"), status_codes(200, 401, 409, 422, 429))]
    pub async fn local_login(
        req: &mut Request,
        tenant: CurrentTenant,
        body: JsonBody<LoginRequest>,
        depot: &mut Depot,
    ) -> ApiResult<Reply<TokenResponse>> {
        let state = state(depot)?;
        let tenant = &tenant.0;
        if tenant.tenant.identity.mode != crate::tenancy::model::IdentityMode::Local {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "this tenant signs in through Keycloak",
            ));
        }
        let ip = crate::auth::client_ip(req, state.limiter.config().trust_forwarded_for);
        match state.limiter.check(ip, None).await {
            crate::ratelimit::Decision::Locked { retry_after_secs } => {
                return Err(ApiError::new(
                    ErrorCode::AuthLocked,
                    format!("retry in {retry_after_secs} s"),
                ));
            }
            crate::ratelimit::Decision::Limited {
                retry_after_secs, ..
            } => {
                return Err(ApiError::new(
                    ErrorCode::RateLimited,
                    format!("retry in {retry_after_secs} s"),
                ));
            }
            crate::ratelimit::Decision::Allowed { .. } => {}
        }
        let input = body.0;
        if input.username.len() > 64 || input.password.len() > 256 {
            return Err(invalid());
        }
        let mut tx = tenant.db.begin().await?;
        let found = crate::users::repo::with_password(tx.conn(), &input.username)
            .await
            .map_err(ApiError::from);
        let found = tx.finish(found).await?;
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, None),
        };
        let password = input.password;
        let ok = tokio::task::spawn_blocking(move || {
            crate::auth::local::verify_password(&password, hash.as_deref())
        })
        .await
        .map_err(ApiError::internal)?;
        let Some(user) = user.filter(|_| ok) else {
            state.limiter.record_failure(ip).await;
            return Err(invalid());
        };
        let sid = uuid::Uuid::now_v7().simple().to_string();
        Ok(Reply::ok(
            issue(
                &state,
                tenant,
                &user.subject,
                &sid,
                user.username.as_deref(),
                user.email.as_deref(),
            )
            .await?,
        ))
    }

    /// The public key of local-mode tokens (JWKS).
    #[endpoint(tags("sessions"), status_codes(200))]
    pub async fn jwks(depot: &mut Depot) -> ApiResult<Reply<serde_json::Value>> {
        Ok(Reply::ok(state(depot)?.local_keys.jwks()))
    }

    /// Authenticated session routes (mounted behind `Authenticate` and `LoadUser`).
    pub fn router() -> Router {
        Router::new()
            .push(
                Router::with_path("sessions")
                    .get(list_sessions)
                    .delete(revoke_my_sessions)
                    .push(Router::with_path("{id}").delete(revoke_session)),
            )
            .push(Router::with_path("users/{id}/sessions").delete(revoke_user_sessions))
    }
}
