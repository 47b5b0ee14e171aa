//! API key use cases: create (scopes checked against the catalog and the maker's own
//! permissions; the secret is shown once and stored only as a keyed digest), list, revoke (with
//! the broadcast that makes every instance refuse the key), and verification on the request
//! path: one query by visible prefix, a constant-time comparison of keyed digests, and a
//! throttled stamp of last use. Never runs SQL itself, never touches HTTP, never logs a key.

use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use rand::Rng;
use uuid::Uuid;

use super::policy;
use super::repo::{self, NewKeyRow};
use super::{
    ApiKeyView, CreatedApiKey, KEY_PREFIX, KeyPolicyPatch, KeyUsage, NewApiKey, UsageDay,
    UsageThrottle, revocation_id,
};
use crate::audit::{self, Change};
use crate::auth::token::{Principal, TokenError};
use crate::db::{DbError, TenantDb};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::ids::{ApiKeyId, UserId};
use crate::rbac::Caller;
use crate::sessions::Sessions;

/// `ntk_<8 hex>_<40 alphanumerics>` → (visible prefix `ntk_<8 hex>`, secret); `None` for
/// anything else.
pub fn split(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok = id.len() == 8
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && secret.len() == 40
        && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then(|| (&key[..KEY_PREFIX.len() + 8], secret))
}

fn digest(server_key: &str, secret: &str) -> Vec<u8> {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(server_key.as_bytes()).expect("any key length");
    mac.update(secret.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

pub use super::policy::RateCeiling;

/// Checks what a machine credential (an API key, an OAuth client) is given: a name of 1-100
/// characters and 1-100 catalog permissions (`resource.action.scope`). Returns the trimmed
/// name and the parsed permissions; problems go to `errors`. Whether the maker holds them is
/// the caller's to check (`Caller::require_delegable`) once `errors` is empty.
pub async fn checked_grant<'a>(
    caller: &Caller,
    name: &'a str,
    requested: &[String],
    errors: &mut Vec<FieldError>,
) -> ApiResult<(&'a str, Vec<crate::rbac::perm::Perm>)> {
    let catalog = crate::rbac::service::load_catalog(caller.db()).await?;
    let name = name.trim();
    if !(1..=100).contains(&name.chars().count()) {
        errors.push(FieldError {
            pointer: "/name".into(),
            message: "must be 1-100 characters".into(),
        });
    }
    // Scopes: catalog permissions the maker holds (a credential never outranks its maker).
    if requested.is_empty() {
        errors.push(FieldError {
            pointer: "/scopes".into(),
            message: "list at least one permission it may use".into(),
        });
    }
    let mut scopes = Vec::new();
    for (i, scope) in requested.iter().enumerate() {
        match catalog.validate(scope) {
            Ok(p) => scopes.push(p),
            Err(e) => errors.push(FieldError {
                pointer: format!("/scopes/{i}"),
                message: e.to_string(),
            }),
        }
    }
    if requested.len() > 100 {
        errors.push(FieldError {
            pointer: "/scopes".into(),
            message: "at most 100 scopes".into(),
        });
    }
    Ok((name, scopes))
}

/// `resource.action.scope`, each part `[a-z*][a-z0-9_*-]*`, scope one of own/team/tenant/*.
/// Makes a key for the caller (who must hold every scope, and has fewer than `max_live` live
/// keys) and returns it with its secret.
pub async fn create(
    caller: &Caller,
    server_key: &str,
    input: &NewApiKey,
    ceiling: RateCeiling,
    max_live: usize,
) -> ApiResult<CreatedApiKey> {
    let mut errors = Vec::new();
    let (name, scopes) = checked_grant(caller, &input.name, &input.scopes, &mut errors).await?;
    if input
        .expires_in_days
        .is_some_and(|d| !(1..=3650).contains(&d))
    {
        errors.push(FieldError {
            pointer: "/expires_in_days".into(),
            message: "must be between 1 and 3650".into(),
        });
    }
    let policy = policy::check_new(
        input.api_version.as_deref(),
        input.rate_limit,
        input.quota,
        ceiling,
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    caller.require_delegable(&scopes)?;
    let (id_part, secret) = {
        let mut rng = rand::rng();
        let id_part = format!("{:08x}", rng.random::<u32>());
        let secret: String = (0..40)
            .map(|_| rng.sample(rand::distr::Alphanumeric) as char)
            .collect();
        (id_part, secret)
    };
    let prefix = format!("{KEY_PREFIX}{id_part}");
    let full = format!("{prefix}_{secret}");
    let expires_at = input
        .expires_in_days
        .map(|d| Utc::now() + chrono::Duration::days(i64::from(d)));
    let row = caller
        .db()
        .transaction(async |tx| {
            let owner = caller.user_id();
            crate::db::lock_named(tx.conn(), &format!("api-keys:{owner}")).await?;
            if repo::count_live(tx.conn(), owner).await? >= max_live as i64 {
                return Err(ApiError::limit_reached("live API keys per user", max_live));
            }
            let row = repo::insert(
                tx.conn(),
                NewKeyRow {
                    id: Uuid::now_v7(),
                    name,
                    prefix: &prefix,
                    secret_hash: digest(server_key, &secret),
                    owner: caller.user_id(),
                    scopes: &input.scopes,
                    expires_at,
                    policy: policy.stored(),
                },
            )
            .await?;
            audit::record(
                tx.conn(),
                &caller.actor,
                Change {
                    action: "api_key.created",
                    target_type: "api_key",
                    target_id: Some(ApiKeyId(row.id).to_string()),
                    data: serde_json::json!({"name": row.name, "prefix": row.prefix,
                                             "scopes": row.scopes, "expires_at": row.expires_at,
                                             "policy": policy.json()}),
                },
            )
            .await?;
            Ok::<_, ApiError>(row)
        })
        .await?;
    Ok(CreatedApiKey {
        key: ApiKeyView::from(&row),
        secret: full,
    })
}

/// Replaces the policy of one of the caller's live keys (404 if none): each field present in
/// `patch` replaces the key's. Returns the key, and whether its quota was set (its credits
/// start again from the quota's).
pub async fn update_policy(
    caller: &Caller,
    id: ApiKeyId,
    patch: &KeyPolicyPatch,
    ceiling: RateCeiling,
) -> ApiResult<(ApiKeyView, bool)> {
    let owner = caller.user_id();
    caller
        .db()
        .transaction(async |tx| {
            let Some(row) = repo::live(tx.conn(), owner, id.0, true).await? else {
                return Err(ApiError::not_found("API key"));
            };
            let change = policy::merge(&row.stored(), patch, ceiling)?;
            let updated = repo::set_policy(tx.conn(), owner, id.0, change.policy.stored())
                .await?
                .ok_or_else(|| ApiError::not_found("API key"))?;
            if change.quota_set {
                repo::snapshot_credits(tx.conn(), id.0, None).await?;
            }
            audit::record(
                tx.conn(),
                &caller.actor,
                Change {
                    action: "api_key.policy_changed",
                    target_type: "api_key",
                    target_id: Some(id.to_string()),
                    data: change.policy.json(),
                },
            )
            .await?;
            Ok((ApiKeyView::from(&updated), change.quota_set))
        })
        .await
}

/// One of the caller's live keys (404 if none).
async fn live(caller: &Caller, id: ApiKeyId) -> ApiResult<repo::KeyRow> {
    let owner = caller.user_id();
    caller
        .db()
        .transaction(async |tx| Ok::<_, ApiError>(repo::live(tx.conn(), owner, id.0, false).await?))
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))
}

/// One of the caller's live keys (404 if none).
pub async fn get(caller: &Caller, id: ApiKeyId) -> ApiResult<ApiKeyView> {
    Ok(ApiKeyView::from(&live(caller, id).await?))
}

/// A machine client's requests per UTC day over the last `days` (1-90).
pub async fn days_of_use(
    limiter: &crate::ratelimit::RateLimiter,
    tenant: crate::ids::TenantId,
    client: &str,
    days: u32,
) -> ApiResult<Vec<UsageDay>> {
    let counted = limiter
        .usage(tenant, client, days)
        .await
        .map_err(|e| ApiError::unavailable("the usage counters", e))?;
    Ok(counted
        .into_iter()
        .map(|d| UsageDay {
            date: d.date,
            requests: d.requests,
            refused: d.refused,
        })
        .collect())
}

/// One of the caller's keys' use: credits left (when it has a quota) and requests per UTC
/// day over the last `days` (1-90).
pub async fn usage(
    caller: &Caller,
    limiter: &crate::ratelimit::RateLimiter,
    id: ApiKeyId,
    days: u32,
) -> ApiResult<KeyUsage> {
    let stored = live(caller, id).await?.stored();
    let client = client_id(id);
    let tenant = caller.tenant_id();
    Ok(KeyUsage {
        id,
        quota: stored.quota(),
        credits_left: policy::credits_left(limiter, tenant, &client, &stored).await,
        days: days_of_use(limiter, tenant, &client, days).await?,
    })
}

/// The bucket, credits and usage name of a key.
pub fn client_id(id: ApiKeyId) -> String {
    format!("apikey:{}", id.0.simple())
}

/// Stores the last known count of a key's credits, so a count Redis lost resumes from it
/// (called off the request path, now and then).
pub async fn snapshot_credits(db: &TenantDb, id: Uuid, left: i64, period: i64) {
    let written = db
        .transaction(async |tx| {
            Ok::<_, DbError>(repo::snapshot_credits(tx.conn(), id, Some((left, period))).await?)
        })
        .await;
    if let Err(error) = written {
        tracing::warn!(%error, "a key's credits were not snapshotted");
    }
}

pub async fn list(db: &TenantDb, owner: UserId) -> ApiResult<Vec<ApiKeyView>> {
    let rows = db
        .transaction(async |tx| Ok::<_, ApiError>(repo::live_of(tx.conn(), owner.0).await?))
        .await?;
    Ok(rows.iter().map(ApiKeyView::from).collect())
}

/// Revokes one of the caller's keys (404 if they have no such live key), then broadcasts the
/// revocation so every instance refuses the key from now on.
pub async fn revoke(caller: &Caller, sessions: &Sessions, id: ApiKeyId) -> ApiResult<()> {
    let owner = caller.user.user.id;
    let n = caller
        .db()
        .transaction(async |tx| {
            let n = repo::revoke(tx.conn(), owner.0, id.0).await?;
            if n == 1 {
                audit::record(
                    tx.conn(),
                    &caller.actor,
                    Change {
                        action: "api_key.revoked",
                        target_type: "api_key",
                        target_id: Some(id.to_string()),
                        data: serde_json::json!({"owner": owner.to_string()}),
                    },
                )
                .await?;
            }
            Ok::<_, ApiError>(n)
        })
        .await?;
    if n != 1 {
        return Err(ApiError::not_found("API key"));
    }
    sessions
        .revoke(
            caller.tenant_id(),
            &caller.user.user.subject,
            &[revocation_id(id)],
        )
        .await
        .map_err(|e| ApiError::unavailable("the session store", e))?;
    Ok(())
}

/// The principal an API key stands for at this tenant: one query (the key by its visible
/// prefix, with its owner's subject), then checks in memory; at most once a minute per key
/// and instance, a second transaction stamps its last use.
pub async fn authenticate(
    db: &TenantDb,
    server_key: &str,
    usage: &UsageThrottle,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Principal, TokenError> {
    let (prefix, secret) =
        split(key).ok_or(TokenError::Malformed("not an API key of this platform"))?;
    let found = db
        .transaction(async |tx| Ok::<_, DbError>(repo::find(tx.conn(), prefix).await?))
        .await
        .map_err(|e| TokenError::KeysUnavailable(e.to_string()))?;
    let Some((row, subject)) = found else {
        return Err(TokenError::Signature);
    };
    // Constant-time comparison of the keyed digests.
    let presented = digest(server_key, secret);
    if !crate::crypto::ct_eq(&presented, &row.secret_hash) {
        return Err(TokenError::Signature);
    }
    if row.revoked_at.is_some() {
        return Err(TokenError::SessionRevoked);
    }
    if row.expires_at.is_some_and(|e| e <= now) {
        return Err(TokenError::Expired);
    }
    if usage.due(row.id) {
        // Best effort: a failed stamp never refuses the key.
        let _ = db
            .transaction(async |tx| Ok::<_, DbError>(repo::touch(tx.conn(), row.id).await?))
            .await;
    }
    Ok(Principal {
        subject,
        session_id: Some(revocation_id(ApiKeyId(row.id))),
        username: None,
        email: None,
        name: None,
        roles: Vec::new(),
        client: Some(format!("api-key:{}", row.prefix)),
        client_policy: Some(row.stored().client_policy(
            client_id(ApiKeyId(row.id)),
            crate::auth::token::ClientKind::ApiKey,
            row.id,
        )),
        expires_at: row
            .expires_at
            .map_or(now.timestamp() + 300, |e| e.timestamp()),
        issued_at: 0,
        key_scopes: Some(row.scopes),
    })
}

#[cfg(test)]
mod tests {
    use super::super::is_api_key;
    use super::*;

    #[test]
    fn key_shape() {
        let key = format!("ntk_0a1b2c3d_{}", "A".repeat(40));
        assert_eq!(split(&key), Some(("ntk_0a1b2c3d", "A".repeat(40).as_str())));
        for bad in [
            "ntk_",
            "ntk_0a1b2c3d",
            "ntk_0a1b2c3d_short",
            "ntk_zzzzzzzz_AAAA",
            "eyJhbGciOi.x.y",
        ] {
            assert!(split(bad).is_none(), "{bad}");
        }
        assert!(is_api_key(&key));
        assert!(!is_api_key("eyJhbGciOiJSUzI1NiJ9.e30.sig"));
    }

    #[test]
    fn digests_are_keyed() {
        assert_ne!(digest("k1", "s"), digest("k2", "s"));
        assert_eq!(digest("k1", "s"), digest("k1", "s"));
    }
}
