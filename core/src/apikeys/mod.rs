//! API keys: long-lived credentials a user makes for scripts and integrations, accepted as
//! `Authorization: Bearer ntk_…` or `X-Api-Key: ntk_…` in place of an access token.
//!
//! Owns key format, storage and verification. **Invariants:** the full key is shown exactly
//! once, at creation; the database holds only its visible prefix and an HMAC-SHA256 of the
//! secret under a server-side key (`auth.api_key_secret`), compared in constant time; a key
//! acts as its owner, never as more (scopes only narrow it; enforcing them is RBAC's); a
//! revoked key is refused by every instance at once, through the session revocation broadcast.
//! Never logs a key.

pub mod handlers;

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use hmac::{KeyInit, Mac};
use rand::Rng;
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::token::{Principal, TokenError};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::ids::{ApiKeyId, UserId};
use crate::schema::tenant::{api_keys, users};

pub const KEY_PREFIX: &str = "ntk_";
const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// Whether a bearer credential is an API key rather than a JWT.
pub fn is_api_key(credential: &str) -> bool {
    credential.starts_with(KEY_PREFIX)
}

/// `ntk_<8 hex>_<40 alphanumerics>` → (visible prefix `ntk_<8 hex>`, secret).
fn split(key: &str) -> Option<(&str, &str)> {
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

/// A key as listed (never with its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub name: String,
    /// The visible start of the key, to recognise it.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A new key: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// The full key. Store it now: it cannot be shown again.
    pub secret: String,
}

/// Input for a new key.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// 1-100 characters.
    pub name: String,
    /// Permissions (`resource.action.scope`) the key is limited to; empty means the owner's.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Days until the key stops working (1-3650); absent means it does not expire.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = api_keys)]
struct KeyRow {
    id: Uuid,
    name: String,
    prefix: String,
    secret_hash: Vec<u8>,
    scopes: Vec<String>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<&KeyRow> for ApiKeyView {
    fn from(r: &KeyRow) -> Self {
        Self {
            id: ApiKeyId(r.id),
            name: r.name.clone(),
            prefix: r.prefix.clone(),
            scopes: r.scopes.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
        }
    }
}

/// `resource.action.scope`, each part `[a-z*][a-z0-9_*-]*`, scope one of own/team/tenant/*.
/// Makes a key for `owner` and returns it with its secret.
pub async fn create(
    db: &TenantDb,
    server_key: &str,
    owner: UserId,
    input: &NewApiKey,
    catalog: &crate::rbac::perm::Catalog,
    maker: &crate::rbac::Caller,
) -> ApiResult<CreatedApiKey> {
    let mut errors = Vec::new();
    let name = input.name.trim();
    if !(1..=100).contains(&name.chars().count()) {
        errors.push(FieldError {
            pointer: "/name".into(),
            message: "must be 1-100 characters".into(),
        });
    }
    // Scopes: catalog permissions the maker holds (a key never outranks its maker).
    if input.scopes.is_empty() {
        errors.push(FieldError {
            pointer: "/scopes".into(),
            message: "list at least one permission the key may use".into(),
        });
    }
    let mut scopes = Vec::new();
    for (i, scope) in input.scopes.iter().enumerate() {
        match catalog.validate(scope) {
            Ok(p) => scopes.push(p),
            Err(e) => errors.push(FieldError {
                pointer: format!("/scopes/{i}"),
                message: e.to_string(),
            }),
        }
    }
    if input.scopes.len() > 100 {
        errors.push(FieldError {
            pointer: "/scopes".into(),
            message: "at most 100 scopes".into(),
        });
    }
    if input
        .expires_in_days
        .is_some_and(|d| !(1..=3650).contains(&d))
    {
        errors.push(FieldError {
            pointer: "/expires_in_days".into(),
            message: "must be between 1 and 3650".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    maker.require_delegable(&scopes)?;
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
    let id = Uuid::now_v7();
    let mut tx = db.begin().await?;
    let result = diesel::insert_into(api_keys::table)
        .values((
            api_keys::id.eq(id),
            api_keys::name.eq(name),
            api_keys::prefix.eq(&prefix),
            api_keys::secret_hash.eq(digest(server_key, &secret)),
            api_keys::owner_id.eq(owner.0),
            api_keys::scopes.eq(&input.scopes),
            api_keys::expires_at.eq(expires_at),
        ))
        .returning(KeyRow::as_returning())
        .get_result(tx.conn())
        .await
        .map_err(ApiError::from);
    let result = match result {
        Ok(row) => crate::audit::record(
            tx.conn(),
            &maker.actor,
            crate::audit::Change {
                action: "api_key.created",
                target_type: "api_key",
                target_id: Some(ApiKeyId(row.id).to_string()),
                data: serde_json::json!({"name": row.name, "prefix": row.prefix,
                                         "scopes": row.scopes, "expires_at": row.expires_at}),
            },
        )
        .await
        .map(|()| row)
        .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let row = tx.finish(result).await?;
    Ok(CreatedApiKey {
        key: ApiKeyView::from(&row),
        secret: full,
    })
}

pub async fn list(db: &TenantDb, owner: UserId) -> ApiResult<Vec<ApiKeyView>> {
    let mut tx = db.begin().await?;
    let result = api_keys::table
        .filter(api_keys::owner_id.eq(owner.0))
        .filter(api_keys::revoked_at.is_null())
        .order(api_keys::id.asc())
        .select(KeyRow::as_select())
        .load(tx.conn())
        .await
        .map_err(ApiError::from);
    Ok(tx
        .finish(result)
        .await?
        .iter()
        .map(ApiKeyView::from)
        .collect())
}

/// Revokes one of `owner`'s keys; `false` if it has no such live key.
pub async fn revoke(
    db: &TenantDb,
    actor: &crate::audit::Actor,
    owner: UserId,
    id: ApiKeyId,
) -> ApiResult<bool> {
    let mut tx = db.begin().await?;
    let result = async {
        let n = diesel::update(api_keys::table)
            .filter(api_keys::id.eq(id.0))
            .filter(api_keys::owner_id.eq(owner.0))
            .filter(api_keys::revoked_at.is_null())
            .set(api_keys::revoked_at.eq(diesel::dsl::now))
            .execute(tx.conn())
            .await?;
        if n == 1 {
            crate::audit::record(
                tx.conn(),
                actor,
                crate::audit::Change {
                    action: "api_key.revoked",
                    target_type: "api_key",
                    target_id: Some(id.to_string()),
                    data: serde_json::json!({"owner": owner.to_string()}),
                },
            )
            .await?;
        }
        Ok::<_, ApiError>(n)
    }
    .await;
    Ok(tx.finish(result).await? == 1)
}

/// The session id under which a key's revocation is broadcast.
pub fn revocation_id(id: ApiKeyId) -> String {
    format!("apikey:{id}")
}

/// When each key's `last_used_at` was last written by this instance.
#[derive(Default)]
pub struct UsageThrottle {
    written: RwLock<HashMap<Uuid, Instant>>,
}

async fn find(conn: &mut AsyncPgConnection, prefix: &str) -> QueryResult<Option<(KeyRow, String)>> {
    api_keys::table
        .inner_join(users::table.on(users::id.eq(api_keys::owner_id)))
        .filter(api_keys::prefix.eq(prefix))
        .select((KeyRow::as_select(), users::subject))
        .first(conn)
        .await
        .optional()
}

/// The principal an API key stands for at this tenant.
pub async fn authenticate(
    db: &TenantDb,
    server_key: &str,
    usage: &UsageThrottle,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Principal, TokenError> {
    let (prefix, secret) =
        split(key).ok_or(TokenError::Malformed("not an API key of this platform"))?;
    let mut tx = db
        .begin()
        .await
        .map_err(|e| TokenError::KeysUnavailable(e.to_string()))?;
    let found = find(tx.conn(), prefix).await;
    let found = tx
        .finish(found)
        .await
        .map_err(|e| TokenError::KeysUnavailable(e.to_string()))?;
    let Some((row, subject)) = found else {
        return Err(TokenError::Signature);
    };
    // Constant-time comparison of the keyed digests.
    let presented = digest(server_key, secret);
    let same = presented.len() == row.secret_hash.len()
        && presented
            .iter()
            .zip(&row.secret_hash)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(TokenError::Signature);
    }
    if row.revoked_at.is_some() {
        return Err(TokenError::SessionRevoked);
    }
    if row.expires_at.is_some_and(|e| e <= now) {
        return Err(TokenError::Expired);
    }
    let stale = usage
        .written
        .read()
        .expect("usage lock")
        .get(&row.id)
        .is_none_or(|t| t.elapsed() >= LAST_USED_EVERY);
    if stale {
        usage
            .written
            .write()
            .expect("usage lock")
            .insert(row.id, Instant::now());
        if let Ok(mut tx) = db.begin().await {
            let result = diesel::update(api_keys::table.find(row.id))
                .set(api_keys::last_used_at.eq(diesel::dsl::now))
                .execute(tx.conn())
                .await;
            let _ = tx.finish(result).await;
        }
    }
    Ok(Principal {
        subject,
        session_id: Some(revocation_id(ApiKeyId(row.id))),
        username: None,
        email: None,
        name: None,
        roles: Vec::new(),
        client: Some(format!("api-key:{}", row.prefix)),
        expires_at: row
            .expires_at
            .map_or(now.timestamp() + 300, |e| e.timestamp()),
        issued_at: 0,
        key_scopes: Some(row.scopes),
    })
}

#[cfg(test)]
mod tests {
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
