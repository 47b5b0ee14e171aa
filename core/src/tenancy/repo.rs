//! Registry queries (database `neofast_admin`, schema `admin`): tenants and database
//! connections. Knows SQL, never HTTP; every function takes the connection it runs on so the
//! caller decides the transaction.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::model::{Identity, Isolation, Region, Tenant, TenantStatus};
use crate::ids::{ConnectionId, TenantId};
use crate::schema::admin::{database_connections as dc, tenants as t};

/// A physical database in the registry.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = dc)]
pub struct ConnectionRow {
    pub id: Uuid,
    pub region: String,
    pub kind: String,
    pub host: String,
    pub port: i32,
    pub database_name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = t)]
struct TenantRow {
    id: Uuid,
    slug: String,
    display_name: String,
    region: String,
    isolation: String,
    status: String,
    connection_id: Uuid,
    schema_name: String,
    schema_version: i64,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    suspended_at: Option<DateTime<Utc>>,
    identity_mode: String,
    identity_realm: Option<String>,
    identity_org_alias: Option<String>,
    identity_org_id: Option<String>,
    identity_linked: bool,
    identity_created: Vec<String>,
    identity_ready: bool,
}

#[derive(Insertable)]
#[diesel(table_name = t)]
pub struct NewTenantRow<'a> {
    pub id: Uuid,
    pub slug: &'a str,
    pub display_name: &'a str,
    pub region: &'a str,
    pub isolation: &'a str,
    pub status: &'a str,
    pub connection_id: Uuid,
    pub schema_name: &'a str,
    pub identity_mode: &'a str,
    pub identity_realm: Option<&'a str>,
    pub identity_org_alias: Option<&'a str>,
    pub identity_linked: bool,
}

fn corrupt(what: &str, e: String) -> diesel::result::Error {
    diesel::result::Error::DeserializationError(format!("registry {what}: {e}").into())
}

fn to_tenant((row, database_name): (TenantRow, String)) -> QueryResult<Tenant> {
    Ok(Tenant {
        id: TenantId(row.id),
        slug: row.slug,
        display_name: row.display_name,
        region: row.region.parse().map_err(|e| corrupt("region", e))?,
        isolation: row.isolation.parse().map_err(|e| corrupt("isolation", e))?,
        status: row.status.parse().map_err(|e| corrupt("status", e))?,
        connection_id: ConnectionId(row.connection_id),
        database_name,
        schema_name: row.schema_name,
        schema_version: row.schema_version,
        last_error: row.last_error,
        created_at: row.created_at,
        updated_at: row.updated_at,
        suspended_at: row.suspended_at,
        identity: Identity {
            mode: row
                .identity_mode
                .parse()
                .map_err(|e| corrupt("identity_mode", e))?,
            realm: row.identity_realm,
            org_alias: row.identity_org_alias,
            org_id: row.identity_org_id,
            linked: row.identity_linked,
            created: row.identity_created,
            ready: row.identity_ready,
        },
    })
}

fn with_database() -> diesel::dsl::InnerJoin<t::table, dc::table> {
    t::table.inner_join(dc::table)
}

pub async fn find_by_slug(conn: &mut AsyncPgConnection, slug: &str) -> QueryResult<Option<Tenant>> {
    with_database()
        .filter(t::slug.eq(slug))
        .select((TenantRow::as_select(), dc::database_name))
        .first::<(TenantRow, String)>(conn)
        .await
        .optional()?
        .map(to_tenant)
        .transpose()
}

/// Tenants in id order (ids are time-ordered), after `after`, at most `limit`.
pub async fn list(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<Tenant>> {
    let mut query = with_database()
        .select((TenantRow::as_select(), dc::database_name))
        .order(t::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(t::id.gt(after));
    }
    query
        .load::<(TenantRow, String)>(conn)
        .await?
        .into_iter()
        .map(to_tenant)
        .collect()
}

pub async fn insert_tenant(
    conn: &mut AsyncPgConnection,
    row: &NewTenantRow<'_>,
) -> QueryResult<()> {
    diesel::insert_into(t::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves a tenant to `status`, optionally only from one of `from`; returns whether it changed.
pub async fn set_status(
    conn: &mut AsyncPgConnection,
    id: TenantId,
    status: TenantStatus,
    from: &[TenantStatus],
) -> QueryResult<bool> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let suspended_at: Option<DateTime<Utc>> = (status == TenantStatus::Suspended).then(Utc::now);
    let n = diesel::update(t::table)
        .filter(t::id.eq(id.0))
        .filter(t::status.eq_any(from))
        .set((
            t::status.eq(status.as_str()),
            t::suspended_at.eq(suspended_at),
            t::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Records that provisioning finished (or a migration ran) at `version`.
pub async fn mark_provisioned(
    conn: &mut AsyncPgConnection,
    id: TenantId,
    version: i64,
) -> QueryResult<()> {
    diesel::update(t::table)
        .filter(t::id.eq(id.0))
        .set((
            t::schema_version.eq(version),
            t::last_error.eq(None::<String>),
            t::status.eq(diesel::dsl::sql::<diesel::sql_types::Text>(
                "CASE WHEN status = 'provisioning' THEN 'active' ELSE status END",
            )),
            t::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Records what identity provisioning produced and whether it finished.
pub async fn set_identity(
    conn: &mut AsyncPgConnection,
    id: TenantId,
    realm: Option<&str>,
    org: Option<(&str, &str)>,
    created: &[String],
    ready: bool,
) -> QueryResult<()> {
    let (org_alias, org_id) = org.unzip();
    diesel::update(t::table)
        .filter(t::id.eq(id.0))
        .set((
            t::identity_realm.eq(realm),
            t::identity_org_alias.eq(org_alias),
            t::identity_org_id.eq(org_id),
            t::identity_created.eq(created),
            t::identity_ready.eq(ready),
            t::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_error(
    conn: &mut AsyncPgConnection,
    id: TenantId,
    message: &str,
) -> QueryResult<()> {
    diesel::update(t::table)
        .filter(t::id.eq(id.0))
        .set((
            t::last_error.eq(message),
            t::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete_tenant(conn: &mut AsyncPgConnection, id: TenantId) -> QueryResult<()> {
    diesel::delete(t::table.filter(t::id.eq(id.0)))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn connection(
    conn: &mut AsyncPgConnection,
    id: ConnectionId,
) -> QueryResult<ConnectionRow> {
    dc::table
        .find(id.0)
        .select(ConnectionRow::as_select())
        .first(conn)
        .await
}

pub async fn find_connection(
    conn: &mut AsyncPgConnection,
    region: Region,
    database_name: &str,
) -> QueryResult<Option<ConnectionRow>> {
    dc::table
        .filter(dc::region.eq(region.as_str()))
        .filter(dc::database_name.eq(database_name))
        .select(ConnectionRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Inserts a connection unless one for (region, database) exists; returns the stored one.
pub async fn upsert_connection(
    conn: &mut AsyncPgConnection,
    row: &ConnectionRow,
) -> QueryResult<ConnectionRow> {
    diesel::insert_into(dc::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    let region: Region = row.region.parse().map_err(|e| corrupt("region", e))?;
    find_connection(conn, region, &row.database_name)
        .await?
        .ok_or(diesel::result::Error::NotFound)
}

pub async fn delete_connection(conn: &mut AsyncPgConnection, id: ConnectionId) -> QueryResult<()> {
    diesel::delete(dc::table.filter(dc::id.eq(id.0)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Connection kind string for `isolation`.
pub fn kind_for(isolation: Isolation) -> &'static str {
    match isolation {
        Isolation::Schema => "shared",
        Isolation::Database => "dedicated",
    }
}

/// Takes the lock serialising lifecycle work on tenant `slug` until the transaction ends.
pub async fn lock_tenant(conn: &mut AsyncPgConnection, slug: &str) -> QueryResult<()> {
    diesel::sql_query(
        "SELECT pg_advisory_xact_lock(hashtextextended('neotenant-tenant:' || $1, 0))",
    )
    .bind::<diesel::sql_types::Text, _>(slug)
    .execute(conn)
    .await?;
    Ok(())
}
