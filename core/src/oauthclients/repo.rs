//! SQL for OAuth clients: insert, list a user's live clients, find one by its Keycloak
//! `clientId` with its maker's subject (the request path's one query), set its policy and
//! credits snapshot, mark rotated and revoked. Runs only inside a tenant `Tx`; holds no rules.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::apikeys::policy::Stored;
use crate::apikeys::repo::{policy_columns, write_snapshot};
use crate::schema::tenant::{oauth_clients, users};

#[derive(Queryable, Selectable)]
#[diesel(table_name = oauth_clients)]
pub struct ClientRow {
    pub id: Uuid,
    pub client_id: String,
    pub keycloak_id: String,
    pub name: String,
    pub owner_id: Uuid,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
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

impl ClientRow {
    /// The client's policy columns.
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

pub struct NewClientRow<'a> {
    pub id: Uuid,
    pub client_id: &'a str,
    pub keycloak_id: &'a str,
    pub name: &'a str,
    pub owner: Uuid,
    pub scopes: &'a [String],
    pub policy: Stored,
}

pub async fn insert(conn: &mut AsyncPgConnection, row: NewClientRow<'_>) -> QueryResult<ClientRow> {
    diesel::insert_into(oauth_clients::table)
        .values((
            oauth_clients::id.eq(row.id),
            oauth_clients::client_id.eq(row.client_id),
            oauth_clients::keycloak_id.eq(row.keycloak_id),
            oauth_clients::name.eq(row.name),
            oauth_clients::owner_id.eq(row.owner),
            oauth_clients::scopes.eq(row.scopes),
            policy_columns!(oauth_clients, row.policy),
        ))
        .returning(ClientRow::as_returning())
        .get_result(conn)
        .await
}

/// `owner`'s live clients, oldest first.
pub async fn live_of(conn: &mut AsyncPgConnection, owner: Uuid) -> QueryResult<Vec<ClientRow>> {
    oauth_clients::table
        .filter(oauth_clients::owner_id.eq(owner))
        .filter(oauth_clients::revoked_at.is_null())
        .order(oauth_clients::id.asc())
        .select(ClientRow::as_select())
        .load(conn)
        .await
}

/// Whether `owner` has fewer than `max` live clients, under a lock held until the
/// transaction ends (so concurrent creates cannot pass the cap together).
pub async fn under_cap(conn: &mut AsyncPgConnection, owner: Uuid, max: usize) -> QueryResult<bool> {
    crate::db::lock_named(conn, &format!("oauth-clients:{owner}")).await?;
    let n: i64 = oauth_clients::table
        .filter(oauth_clients::owner_id.eq(owner))
        .filter(oauth_clients::revoked_at.is_null())
        .count()
        .get_result(conn)
        .await?;
    Ok(n < max as i64)
}

/// One of `owner`'s live clients; with `lock`, locked for a change.
pub async fn live(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    id: Uuid,
    lock: bool,
) -> QueryResult<Option<ClientRow>> {
    let query = oauth_clients::table
        .filter(oauth_clients::id.eq(id))
        .filter(oauth_clients::owner_id.eq(owner))
        .filter(oauth_clients::revoked_at.is_null())
        .select(ClientRow::as_select());
    if lock {
        query.for_update().first(conn).await.optional()
    } else {
        query.first(conn).await.optional()
    }
}

/// Replaces the policy of one of `owner`'s live clients; the row after, or `None`.
pub async fn set_policy(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    id: Uuid,
    policy: Stored,
) -> QueryResult<Option<ClientRow>> {
    diesel::update(oauth_clients::table)
        .filter(oauth_clients::id.eq(id))
        .filter(oauth_clients::owner_id.eq(owner))
        .filter(oauth_clients::revoked_at.is_null())
        .set(policy_columns!(oauth_clients, policy))
        .returning(ClientRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// Stores the last known count of a client's credits, or clears it (`None`).
pub async fn snapshot_credits(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    snapshot: Option<(i64, i64)>,
) -> QueryResult<usize> {
    write_snapshot!(oauth_clients, conn, id, snapshot)
}

/// The client with this Keycloak `clientId` (revoked ones too) and its maker's subject.
pub async fn find(
    conn: &mut AsyncPgConnection,
    client_id: &str,
) -> QueryResult<Option<(ClientRow, String)>> {
    oauth_clients::table
        .inner_join(users::table.on(users::id.eq(oauth_clients::owner_id)))
        .filter(oauth_clients::client_id.eq(client_id))
        .select((ClientRow::as_select(), users::subject))
        .first(conn)
        .await
        .optional()
}

/// Marks one of `owner`'s live clients rotated; the row after, or `None`.
pub async fn mark_rotated(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    id: Uuid,
) -> QueryResult<Option<ClientRow>> {
    diesel::update(oauth_clients::table)
        .filter(oauth_clients::id.eq(id))
        .filter(oauth_clients::owner_id.eq(owner))
        .filter(oauth_clients::revoked_at.is_null())
        .set(oauth_clients::rotated_at.eq(diesel::dsl::now))
        .returning(ClientRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}

pub async fn mark_revoked(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::update(oauth_clients::table.find(id))
        .set(oauth_clients::revoked_at.eq(diesel::dsl::now))
        .execute(conn)
        .await
}
