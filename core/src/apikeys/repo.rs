//! SQL for API keys: insert, list a user's live keys, revoke, find by visible prefix (with the
//! owner's subject, in one query: the request path's only round trip) and stamp last use. Runs
//! only inside a tenant `Tx`; holds no rules (key format, hashing, checks and audit are the
//! service's) and never sees a key's secret, only its keyed digest.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{ApiKeyView, KeyQuota, KeyRate, Refill};
use crate::apiversion::ApiVersion;
use crate::ids::ApiKeyId;
use crate::schema::tenant::{api_keys, users};

#[derive(Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct KeyRow {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub secret_hash: Vec<u8>,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub api_version: Option<String>,
    pub rate_per_sec: Option<f64>,
    pub rate_burst: Option<i32>,
    pub quota_credits: Option<i64>,
    pub quota_refill_amount: Option<i64>,
    pub quota_refill_secs: Option<i32>,
    pub quota_left: Option<i64>,
    pub quota_period: Option<i64>,
}

impl KeyRow {
    pub fn rate(&self) -> Option<KeyRate> {
        Some(KeyRate {
            per_sec: self.rate_per_sec?,
            burst: u32::try_from(self.rate_burst?).ok()?,
        })
    }

    pub fn quota(&self) -> Option<KeyQuota> {
        Some(KeyQuota {
            credits: self.quota_credits?,
            refill: self
                .quota_refill_amount
                .zip(self.quota_refill_secs)
                .map(|(amount, secs)| Refill {
                    amount,
                    interval_secs: i64::from(secs),
                }),
        })
    }

    /// The pinned version; the baseline for a key made before versions were pinned.
    pub fn api_version(&self) -> ApiVersion {
        self.api_version
            .as_deref()
            .and_then(ApiVersion::parse)
            .unwrap_or(ApiVersion::BASELINE)
    }
}

/// A key's policy columns, as written.
pub struct PolicyRow {
    pub api_version: String,
    pub rate: Option<KeyRate>,
    pub quota: Option<KeyQuota>,
}

type PolicyColumns = (
    diesel::dsl::Eq<api_keys::api_version, Option<String>>,
    diesel::dsl::Eq<api_keys::rate_per_sec, Option<f64>>,
    diesel::dsl::Eq<api_keys::rate_burst, Option<i32>>,
    diesel::dsl::Eq<api_keys::quota_credits, Option<i64>>,
    diesel::dsl::Eq<api_keys::quota_refill_amount, Option<i64>>,
    diesel::dsl::Eq<api_keys::quota_refill_secs, Option<i32>>,
    diesel::dsl::Eq<api_keys::quota_left, Option<i64>>,
    diesel::dsl::Eq<api_keys::quota_period, Option<i64>>,
);

impl PolicyRow {
    /// The columns; a (new) quota starts with no snapshot, so its count starts from `credits`.
    fn columns(&self) -> PolicyColumns {
        let refill = self.quota.and_then(|q| q.refill);
        (
            api_keys::api_version.eq(Some(self.api_version.clone())),
            api_keys::rate_per_sec.eq(self.rate.map(|r| r.per_sec)),
            api_keys::rate_burst.eq(self
                .rate
                .map(|r| i32::try_from(r.burst).unwrap_or(i32::MAX))),
            api_keys::quota_credits.eq(self.quota.map(|q| q.credits)),
            api_keys::quota_refill_amount.eq(refill.map(|r| r.amount)),
            api_keys::quota_refill_secs
                .eq(refill.map(|r| i32::try_from(r.interval_secs).unwrap_or(i32::MAX))),
            api_keys::quota_left.eq(None::<i64>),
            api_keys::quota_period.eq(None::<i64>),
        )
    }
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
            api_version: r.api_version().to_string(),
            rate_limit: r.rate(),
            quota: r.quota(),
        }
    }
}

/// The columns of a new key.
pub struct NewKeyRow<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub prefix: &'a str,
    pub secret_hash: Vec<u8>,
    pub owner: Uuid,
    pub scopes: &'a [String],
    pub expires_at: Option<DateTime<Utc>>,
    pub policy: PolicyRow,
}

pub async fn insert(conn: &mut AsyncPgConnection, key: NewKeyRow<'_>) -> QueryResult<KeyRow> {
    diesel::insert_into(api_keys::table)
        .values((
            api_keys::id.eq(key.id),
            api_keys::name.eq(key.name),
            api_keys::prefix.eq(key.prefix),
            api_keys::secret_hash.eq(key.secret_hash),
            api_keys::owner_id.eq(key.owner),
            api_keys::scopes.eq(key.scopes),
            api_keys::expires_at.eq(key.expires_at),
            key.policy.columns(),
        ))
        .returning(KeyRow::as_returning())
        .get_result(conn)
        .await
}

/// `owner`'s keys that are not revoked, oldest first.
pub async fn live_of(conn: &mut AsyncPgConnection, owner: Uuid) -> QueryResult<Vec<KeyRow>> {
    api_keys::table
        .filter(api_keys::owner_id.eq(owner))
        .filter(api_keys::revoked_at.is_null())
        .order(api_keys::id.asc())
        .select(KeyRow::as_select())
        .load(conn)
        .await
}

/// Marks one of `owner`'s live keys revoked; 0 when there is no such key.
pub async fn revoke(conn: &mut AsyncPgConnection, owner: Uuid, id: Uuid) -> QueryResult<usize> {
    diesel::update(api_keys::table)
        .filter(api_keys::id.eq(id))
        .filter(api_keys::owner_id.eq(owner))
        .filter(api_keys::revoked_at.is_null())
        .set(api_keys::revoked_at.eq(diesel::dsl::now))
        .execute(conn)
        .await
}

/// The key with this visible prefix (revoked and expired ones too) and its owner's subject.
pub async fn find(
    conn: &mut AsyncPgConnection,
    prefix: &str,
) -> QueryResult<Option<(KeyRow, String)>> {
    api_keys::table
        .inner_join(users::table.on(users::id.eq(api_keys::owner_id)))
        .filter(api_keys::prefix.eq(prefix))
        .select((KeyRow::as_select(), users::subject))
        .first(conn)
        .await
        .optional()
}

/// Replaces the policy of one of `owner`'s live keys; the row after, or `None`.
pub async fn set_policy(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    id: Uuid,
    policy: &PolicyRow,
) -> QueryResult<Option<KeyRow>> {
    diesel::update(api_keys::table)
        .filter(api_keys::id.eq(id))
        .filter(api_keys::owner_id.eq(owner))
        .filter(api_keys::revoked_at.is_null())
        .set(policy.columns())
        .returning(KeyRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// One of `owner`'s live keys.
pub async fn live(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    id: Uuid,
) -> QueryResult<Option<KeyRow>> {
    api_keys::table
        .filter(api_keys::id.eq(id))
        .filter(api_keys::owner_id.eq(owner))
        .filter(api_keys::revoked_at.is_null())
        .select(KeyRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Stores the last known count of a key's credits (a snapshot a lost count resumes from).
pub async fn snapshot_credits(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    left: i64,
    period: i64,
) -> QueryResult<usize> {
    diesel::update(api_keys::table.find(id))
        .filter(api_keys::quota_credits.is_not_null())
        .set((
            api_keys::quota_left.eq(left),
            api_keys::quota_period.eq(period),
        ))
        .execute(conn)
        .await
}

/// Stamps the key's `last_used_at` with the database's clock.
pub async fn touch(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::update(api_keys::table.find(id))
        .set(api_keys::last_used_at.eq(diesel::dsl::now))
        .execute(conn)
        .await
}
