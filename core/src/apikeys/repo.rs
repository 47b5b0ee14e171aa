//! SQL for API keys: insert, list a user's live keys, revoke, find by visible prefix (with the
//! owner's subject, in one query: the request path's only round trip) and stamp last use. Runs
//! only inside a tenant `Tx`; holds no rules (key format, hashing, checks and audit are the
//! service's) and never sees a key's secret, only its keyed digest.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::ApiKeyView;
use super::policy::Stored;
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
    /// The key's policy columns.
    pub fn stored(&self) -> Stored {
        Stored {
            api_version: self.api_version.clone(),
            rate_per_sec: self.rate_per_sec,
            rate_burst: self.rate_burst,
            quota_credits: self.quota_credits,
            quota_refill_amount: self.quota_refill_amount,
            quota_refill_secs: self.quota_refill_secs,
            quota_left: self.quota_left,
            quota_period: self.quota_period,
        }
    }
}

/// The policy columns of a credential table, set from a `Stored` (not the snapshot columns).
macro_rules! policy_columns {
    ($table:ident, $stored:expr) => {{
        let s: $crate::apikeys::policy::Stored = $stored;
        (
            $table::api_version.eq(s.api_version),
            $table::rate_per_sec.eq(s.rate_per_sec),
            $table::rate_burst.eq(s.rate_burst),
            $table::quota_credits.eq(s.quota_credits),
            $table::quota_refill_amount.eq(s.quota_refill_amount),
            $table::quota_refill_secs.eq(s.quota_refill_secs),
        )
    }};
}
pub(crate) use policy_columns;

/// Stores the last known count of a credential's credits (a snapshot a lost count resumes
/// from), or clears it (`None`: a new quota starts afresh).
macro_rules! write_snapshot {
    ($table:ident, $conn:expr, $id:expr, $snapshot:expr) => {{
        let snapshot: Option<(i64, i64)> = $snapshot;
        let row = diesel::update($table::table.find($id));
        match snapshot {
            Some((left, period)) => {
                row.filter($table::quota_credits.is_not_null())
                    .set(($table::quota_left.eq(left), $table::quota_period.eq(period)))
                    .execute($conn)
                    .await
            }
            None => {
                row.set((
                    $table::quota_left.eq(None::<i64>),
                    $table::quota_period.eq(None::<i64>),
                ))
                .execute($conn)
                .await
            }
        }
    }};
}
pub(crate) use write_snapshot;

impl From<&KeyRow> for ApiKeyView {
    fn from(r: &KeyRow) -> Self {
        let policy = r.stored().policy();
        Self {
            id: ApiKeyId(r.id),
            name: r.name.clone(),
            prefix: r.prefix.clone(),
            scopes: r.scopes.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            api_version: policy.api_version.to_string(),
            rate_limit: policy.rate,
            quota: policy.quota,
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
    pub policy: Stored,
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
            policy_columns!(api_keys, key.policy),
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

/// How many live keys `owner` has.
pub async fn count_live(conn: &mut AsyncPgConnection, owner: Uuid) -> QueryResult<i64> {
    api_keys::table
        .filter(api_keys::owner_id.eq(owner))
        .filter(api_keys::revoked_at.is_null())
        .count()
        .get_result(conn)
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
    policy: Stored,
) -> QueryResult<Option<KeyRow>> {
    diesel::update(api_keys::table)
        .filter(api_keys::id.eq(id))
        .filter(api_keys::owner_id.eq(owner))
        .filter(api_keys::revoked_at.is_null())
        .set(policy_columns!(api_keys, policy))
        .returning(KeyRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// One of `owner`'s live keys; with `lock`, locked for a change.
pub async fn live(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    id: Uuid,
    lock: bool,
) -> QueryResult<Option<KeyRow>> {
    let query = api_keys::table
        .filter(api_keys::id.eq(id))
        .filter(api_keys::owner_id.eq(owner))
        .filter(api_keys::revoked_at.is_null())
        .select(KeyRow::as_select());
    if lock {
        query.for_update().first(conn).await.optional()
    } else {
        query.first(conn).await.optional()
    }
}

/// Stores the last known count of a key's credits, or clears it (`None`).
pub async fn snapshot_credits(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    snapshot: Option<(i64, i64)>,
) -> QueryResult<usize> {
    write_snapshot!(api_keys, conn, id, snapshot)
}

/// Stamps the key's `last_used_at` with the database's clock.
pub async fn touch(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::update(api_keys::table.find(id))
        .set(api_keys::last_used_at.eq(diesel::dsl::now))
        .execute(conn)
        .await
}
