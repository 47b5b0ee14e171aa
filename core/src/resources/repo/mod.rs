//! SQL for resource types and resources, on a connection inside a tenant `Tx` (unqualified
//! names resolve to the tenant's schema): the row types, types and their lock, and single
//! resources here; versions, lists (with the sort indexes behind them) and relations (shares,
//! links) in the files below. Dynamic queries (filters, sorts, visibility) are assembled with
//! [`Sql`], which runs as a prepared statement cached by its text. Values are always bound;
//! the only names spliced into SQL text are a type's name and sortable fields (sort
//! expressions and sort indexes, `lists`), which `types::is_name` / `types::is_field` passed
//! when the type was stored. Never decide here who may see what: visibility comes in as a predicate from
//! `access`.

mod lists;
mod relations;
mod versions;

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::HasSqlType;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use serde_json::Value;
use uuid::Uuid;

use super::{RelationshipKind, Resource, ResourceType};
use crate::ids::{ResourceId, TeamId, UserId};
use crate::schema::tenant::{resource_type_versions, resource_types, resources};

pub use lists::{
    CountRow, Page, counts, drop_sort_indexes, list, live_ids, page, sync_sort_indexes,
};
pub use relations::{
    LinkRow, delete_link, delete_share, incoming_live, insert_link, links, share_access, shares,
    upsert_share,
};
pub use versions::{insert_version, version, versions};

/// A dynamic query: SQL text with bound values, run as a prepared statement that the
/// connection caches by its text (the same filters and sorts reuse one plan; values never
/// enter the text). PostgreSQL numbers the placeholders as values are bound.
pub struct Sql {
    parts: Vec<Part>,
}

enum Part {
    Text(String),
    Value(Box<dyn BindValue>),
}

/// One bound value with its SQL type.
trait BindValue: Send + Sync {
    fn walk<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

struct Bound<ST, V>(V, std::marker::PhantomData<fn() -> ST>);

impl<ST, V> BindValue for Bound<ST, V>
where
    Pg: HasSqlType<ST>,
    V: ToSql<ST, Pg> + Send + Sync,
{
    fn walk<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_bind_param::<ST, V>(&self.0)
    }
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Self {
            parts: vec![Part::Text(text.to_string())],
        }
    }

    pub fn push(mut self, text: &str) -> Self {
        self.parts.push(Part::Text(text.to_string()));
        self
    }

    pub fn bind<ST, V>(mut self, value: V) -> Self
    where
        Pg: HasSqlType<ST>,
        V: ToSql<ST, Pg> + Send + Sync + 'static,
        ST: 'static,
    {
        self.parts.push(Part::Value(Box::new(Bound::<ST, V>(
            value,
            std::marker::PhantomData,
        ))));
        self
    }
}

impl QueryFragment<Pg> for Sql {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_sql(text),
                Part::Value(value) => value.walk(out.reborrow())?,
            }
        }
        Ok(())
    }
}

impl QueryId for Sql {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Sql {
    type SqlType = diesel::sql_types::Untyped;
}

#[derive(Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = resources)]
pub struct ResourceRow {
    pub id: Uuid,
    pub type_: String,
    pub data: Value,
    pub tags: Vec<String>,
    pub category: Option<String>,
    pub owner_id: Uuid,
    pub team_id: Option<Uuid>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl From<ResourceRow> for Resource {
    fn from(r: ResourceRow) -> Self {
        Resource {
            id: ResourceId(r.id),
            type_name: r.type_,
            data: r.data,
            tags: r.tags,
            category: r.category,
            owner_id: UserId(r.owner_id),
            team_id: r.team_id.map(TeamId),
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
            deleted_at: r.deleted_at,
        }
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = resource_types)]
pub struct TypeRow {
    pub name: String,
    pub title: String,
    pub description: String,
    pub version: i32,
    pub schema: Value,
    pub searchable: Vec<String>,
    pub filterable: Vec<String>,
    pub sortable: Vec<String>,
    pub relationships: Value,
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub plugin: Option<String>,
}

impl From<TypeRow> for ResourceType {
    fn from(r: TypeRow) -> Self {
        ResourceType {
            name: r.name,
            title: r.title,
            description: r.description,
            version: r.version,
            schema: r.schema,
            searchable: r.searchable,
            filterable: r.filterable,
            sortable: r.sortable,
            relationships: serde_json::from_value::<Vec<RelationshipKind>>(r.relationships)
                .unwrap_or_default(),
            source: r.source,
            plugin: r.plugin,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

pub async fn types(conn: &mut AsyncPgConnection) -> QueryResult<Vec<ResourceType>> {
    Ok(resource_types::table
        .select(TypeRow::as_select())
        .order(resource_types::name.asc())
        .load(conn)
        .await?
        .into_iter()
        .map(ResourceType::from)
        .collect())
}

pub async fn get_type(
    mut conn: &AsyncPgConnection,
    name: &str,
) -> QueryResult<Option<ResourceType>> {
    Ok(resource_types::table
        .find(name)
        .select(TypeRow::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .map(ResourceType::from))
}

/// Takes the type's lock for the rest of the transaction: shared by writers of its resources,
/// exclusive for changes of the type. An advisory lock (per schema and type name), so
/// concurrent writers never write to the type's row (as `FOR SHARE` would). Read the type
/// in a later statement: a statement's snapshot predates its own lock wait. The lock is a
/// simple query, written to the connection as soon as the future is first polled, so a read
/// pipelined after it (polled after it) always runs after the lock is granted; a prepared
/// statement could go out after the read while it waits for its own preparation.
pub async fn lock_type(
    mut conn: &AsyncPgConnection,
    name: &str,
    exclusive: bool,
) -> QueryResult<()> {
    // The name is spliced into the text: only a valid type name ever gets here.
    if !crate::resources::types::is_name(name) {
        return Err(diesel::result::Error::NotFound);
    }
    let f = if exclusive {
        "pg_advisory_xact_lock"
    } else {
        "pg_advisory_xact_lock_shared"
    };
    conn.batch_execute(&format!(
        "SELECT {f}(hashtextextended(current_schema() || ':resource_type:{name}', 0))"
    ))
    .await
}

pub async fn insert_type(conn: &mut AsyncPgConnection, row: &TypeRow) -> QueryResult<()> {
    diesel::insert_into(resource_types::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn update_type(conn: &mut AsyncPgConnection, row: &TypeRow) -> QueryResult<()> {
    diesel::update(resource_types::table.find(&row.name))
        .set(row)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn insert_type_version(
    conn: &mut AsyncPgConnection,
    t: &ResourceType,
) -> QueryResult<()> {
    diesel::insert_into(resource_type_versions::table)
        .values((
            resource_type_versions::name.eq(&t.name),
            resource_type_versions::version.eq(t.version),
            resource_type_versions::definition.eq(serde_json::to_value(t).unwrap_or(Value::Null)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete_type(conn: &mut AsyncPgConnection, name: &str) -> QueryResult<bool> {
    Ok(diesel::delete(resource_types::table.find(name))
        .execute(conn)
        .await?
        == 1)
}

/// Resources of a type, live and deleted.
pub async fn count_of_type(conn: &mut AsyncPgConnection, name: &str) -> QueryResult<i64> {
    resources::table
        .filter(resources::type_.eq(name))
        .count()
        .get_result(conn)
        .await
}

/// Every resource of a type (live and deleted), in id order, locked for update.
pub async fn all_of_type_for_update(
    conn: &mut AsyncPgConnection,
    name: &str,
) -> QueryResult<Vec<Resource>> {
    Ok(resources::table
        .filter(resources::type_.eq(name))
        .order(resources::id.asc())
        .for_update()
        .select(ResourceRow::as_select())
        .load(conn)
        .await?
        .into_iter()
        .map(Resource::from)
        .collect())
}

pub async fn insert(conn: &mut AsyncPgConnection, row: &ResourceRow) -> QueryResult<()> {
    diesel::insert_into(resources::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn get(
    mut conn: &AsyncPgConnection,
    type_name: &str,
    id: Uuid,
    lock: bool,
) -> QueryResult<Option<Resource>> {
    let q = resources::table
        .filter(resources::id.eq(id))
        .filter(resources::type_.eq(type_name))
        .select(ResourceRow::as_select());
    let row = if lock {
        q.for_update().first(&mut conn).await.optional()?
    } else {
        q.first(&mut conn).await.optional()?
    };
    Ok(row.map(Resource::from))
}

/// The live (not deleted) resources among `ids`, of any type.
pub async fn live_by_ids(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> QueryResult<Vec<Resource>> {
    Ok(resources::table
        .filter(resources::id.eq_any(ids))
        .filter(resources::deleted_at.is_null())
        .select(ResourceRow::as_select())
        .load(conn)
        .await?
        .into_iter()
        .map(Resource::from)
        .collect())
}

/// Writes a resource's new state (the caller bumped `version`).
pub async fn update(conn: &mut AsyncPgConnection, r: &Resource) -> QueryResult<()> {
    diesel::update(resources::table.find(r.id.0))
        .set((
            resources::data.eq(&r.data),
            resources::tags.eq(&r.tags),
            resources::category.eq(&r.category),
            resources::team_id.eq(r.team_id.map(|t| t.0)),
            resources::version.eq(r.version),
            resources::updated_at.eq(r.updated_at),
            resources::deleted_at.eq(r.deleted_at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether a user exists (and is not deleted) in the tenant.
pub async fn user_exists(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    use crate::schema::tenant::users;
    Ok(users::table
        .filter(users::id.eq(id))
        .count()
        .get_result::<i64>(conn)
        .await?
        > 0)
}

/// Whether a team exists.
pub async fn team_exists(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    use crate::schema::tenant::teams;
    Ok(teams::table
        .filter(teams::id.eq(id))
        .count()
        .get_result::<i64>(conn)
        .await?
        > 0)
}
