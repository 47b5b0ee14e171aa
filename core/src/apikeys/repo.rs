//! SQL for API keys: insert, list a user's live keys, revoke, find by visible prefix (with the
//! owner's subject, in one query: the request path's only round trip) and stamp last use. Runs
//! only inside a tenant `Tx`; holds no rules (key format, hashing, checks and audit are the
//! service's) and never sees a key's secret, only its keyed digest.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::ApiKeyView;
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

/// The columns of a new key.
pub struct NewKeyRow<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub prefix: &'a str,
    pub secret_hash: Vec<u8>,
    pub owner: Uuid,
    pub scopes: &'a [String],
    pub expires_at: Option<DateTime<Utc>>,
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

/// Stamps the key's `last_used_at` with the database's clock.
pub async fn touch(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::update(api_keys::table.find(id))
        .set(api_keys::last_used_at.eq(diesel::dsl::now))
        .execute(conn)
        .await
}
