//! SQL for resource types and resources, on a connection inside a tenant `Tx` (unqualified
//! names resolve to the tenant's schema). Dynamic queries (filters, sorts, visibility) are
//! assembled with [`Sql`], which numbers bind parameters itself; field names reach SQL only
//! as bound values (`r.data ->> $n`), never spliced into the text.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use super::{RelationshipKind, Resource, ResourceType, Share, ShareAccess, Version};
use crate::ids::{ResourceId, ResourceShareId, TeamId, UserId};
use crate::schema::tenant::{
    resource_shares, resource_type_versions, resource_types, resource_versions, resources,
};

/// A SQL text with its binds, numbered as they are pushed.
pub struct Sql {
    query: BoxedSqlQuery<'static, Pg, SqlQuery>,
    next: usize,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Self {
            query: diesel::sql_query(text.to_string()).into_boxed(),
            next: 1,
        }
    }

    pub fn push(mut self, text: &str) -> Self {
        self.query = self.query.sql(text);
        self
    }

    pub fn bind<ST, V>(mut self, value: V) -> Self
    where
        Pg: HasSqlType<ST>,
        V: ToSql<ST, Pg> + Send + 'static,
        ST: Send + 'static,
    {
        let placeholder = format!("${}", self.next);
        self.next += 1;
        self.query = self.query.sql(placeholder).bind::<ST, V>(value);
        self
    }

    pub fn query(self) -> BoxedSqlQuery<'static, Pg, SqlQuery> {
        self.query
    }
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
    conn: &mut AsyncPgConnection,
    name: &str,
) -> QueryResult<Option<ResourceType>> {
    Ok(resource_types::table
        .find(name)
        .select(TypeRow::as_select())
        .first(conn)
        .await
        .optional()?
        .map(ResourceType::from))
}

/// Takes the type's lock for the rest of the transaction: shared by writers of its resources,
/// exclusive for changes of the type. An advisory lock (per schema and type name), so
/// concurrent writers never write to the type's row (as `FOR SHARE` would). Read the type
/// *after* this returns: a statement's snapshot predates its own lock wait.
pub async fn lock_type(
    conn: &mut AsyncPgConnection,
    name: &str,
    exclusive: bool,
) -> QueryResult<()> {
    let f = if exclusive {
        "pg_advisory_xact_lock"
    } else {
        "pg_advisory_xact_lock_shared"
    };
    diesel::sql_query(format!(
        "SELECT {f}(hashtextextended(current_schema() || ':resource_type:' || $1, 0))"
    ))
    .bind::<Text, _>(name)
    .execute(conn)
    .await?;
    Ok(())
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
    conn: &mut AsyncPgConnection,
    type_name: &str,
    id: Uuid,
    lock: bool,
) -> QueryResult<Option<Resource>> {
    let q = resources::table
        .filter(resources::id.eq(id))
        .filter(resources::type_.eq(type_name))
        .select(ResourceRow::as_select());
    let row = if lock {
        q.for_update().first(conn).await.optional()?
    } else {
        q.first(conn).await.optional()?
    };
    Ok(row.map(Resource::from))
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

pub async fn insert_version(
    conn: &mut AsyncPgConnection,
    r: &Resource,
    change: &str,
    actor: Option<&str>,
) -> QueryResult<()> {
    diesel::insert_into(resource_versions::table)
        .values((
            resource_versions::resource_id.eq(r.id.0),
            resource_versions::version.eq(r.version),
            resource_versions::data.eq(&r.data),
            resource_versions::tags.eq(&r.tags),
            resource_versions::category.eq(&r.category),
            resource_versions::deleted.eq(r.deleted_at.is_some()),
            resource_versions::change.eq(change),
            resource_versions::actor_id.eq(actor),
            resource_versions::at.eq(r.updated_at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

type VersionTuple = (
    i32,
    String,
    Value,
    Vec<String>,
    Option<String>,
    bool,
    Option<String>,
    DateTime<Utc>,
);

fn version_of(t: VersionTuple) -> Version {
    Version {
        version: t.0,
        change: t.1,
        data: t.2,
        tags: t.3,
        category: t.4,
        deleted: t.5,
        actor_id: t.6,
        at: t.7,
    }
}

const VERSION_COLUMNS: (
    resource_versions::version,
    resource_versions::change,
    resource_versions::data,
    resource_versions::tags,
    resource_versions::category,
    resource_versions::deleted,
    resource_versions::actor_id,
    resource_versions::at,
) = (
    resource_versions::version,
    resource_versions::change,
    resource_versions::data,
    resource_versions::tags,
    resource_versions::category,
    resource_versions::deleted,
    resource_versions::actor_id,
    resource_versions::at,
);

/// Versions newest first, below `before` if given.
pub async fn versions(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    before: Option<i32>,
    limit: i64,
) -> QueryResult<Vec<Version>> {
    let mut q = resource_versions::table
        .filter(resource_versions::resource_id.eq(id))
        .select(VERSION_COLUMNS)
        .order(resource_versions::version.desc())
        .limit(limit)
        .into_boxed();
    if let Some(b) = before {
        q = q.filter(resource_versions::version.lt(b));
    }
    Ok(q.load::<VersionTuple>(conn)
        .await?
        .into_iter()
        .map(version_of)
        .collect())
}

pub async fn version(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    v: i32,
) -> QueryResult<Option<Version>> {
    Ok(resource_versions::table
        .filter(resource_versions::resource_id.eq(id))
        .filter(resource_versions::version.eq(v))
        .select(VERSION_COLUMNS)
        .first::<VersionTuple>(conn)
        .await
        .optional()?
        .map(version_of))
}

/// Runs a list query built by the service.
pub async fn list(conn: &mut AsyncPgConnection, q: Sql) -> QueryResult<Vec<Resource>> {
    Ok(q.query()
        .load::<ResourceRow>(conn)
        .await?
        .into_iter()
        .map(Resource::from)
        .collect())
}

#[derive(QueryableByName)]
pub struct CountRow {
    #[diesel(sql_type = Text)]
    pub value: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub count: i64,
}

pub async fn counts(conn: &mut AsyncPgConnection, q: Sql) -> QueryResult<Vec<CountRow>> {
    q.query().load::<CountRow>(conn).await
}

pub async fn shares(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Vec<Share>> {
    type ShareTuple = (Uuid, Option<Uuid>, Option<Uuid>, String, DateTime<Utc>);
    let rows: Vec<ShareTuple> = resource_shares::table
        .filter(resource_shares::resource_id.eq(id))
        .order(resource_shares::id.asc())
        .select((
            resource_shares::id,
            resource_shares::user_id,
            resource_shares::team_id,
            resource_shares::access,
            resource_shares::created_at,
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, user, team, access, at)| Share {
            id: ResourceShareId(id),
            user_id: user.map(UserId),
            team_id: team.map(TeamId),
            access: if access == "write" {
                ShareAccess::Write
            } else {
                ShareAccess::Read
            },
            created_at: at,
        })
        .collect())
}

/// Adds or changes a share; returns its id.
pub async fn upsert_share(
    conn: &mut AsyncPgConnection,
    resource: Uuid,
    user: Option<Uuid>,
    team: Option<Uuid>,
    access: ShareAccess,
    by: Uuid,
) -> QueryResult<Uuid> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let conflict = if user.is_some() {
        "(resource_id, user_id) WHERE user_id IS NOT NULL"
    } else {
        "(resource_id, team_id) WHERE team_id IS NOT NULL"
    };
    let row: Row = diesel::sql_query(format!(
        "INSERT INTO resource_shares (id, resource_id, user_id, team_id, access, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT {conflict} DO UPDATE SET access = excluded.access \
         RETURNING id"
    ))
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<SqlUuid, _>(resource)
    .bind::<diesel::sql_types::Nullable<SqlUuid>, _>(user)
    .bind::<diesel::sql_types::Nullable<SqlUuid>, _>(team)
    .bind::<Text, _>(access.as_str())
    .bind::<SqlUuid, _>(by)
    .get_result(conn)
    .await?;
    Ok(row.id)
}

pub async fn delete_share(
    conn: &mut AsyncPgConnection,
    resource: Uuid,
    share: Uuid,
) -> QueryResult<bool> {
    Ok(diesel::delete(
        resource_shares::table
            .filter(resource_shares::id.eq(share))
            .filter(resource_shares::resource_id.eq(resource)),
    )
    .execute(conn)
    .await?
        == 1)
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

/// Adds a link; `false` if it existed.
pub async fn insert_link(
    conn: &mut AsyncPgConnection,
    from: Uuid,
    kind: &str,
    to: Uuid,
    by: Uuid,
) -> QueryResult<bool> {
    use crate::schema::tenant::resource_links as l;
    Ok(diesel::insert_into(l::table)
        .values((
            l::from_id.eq(from),
            l::kind.eq(kind),
            l::to_id.eq(to),
            l::created_by.eq(by),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?
        == 1)
}

pub async fn delete_link(
    conn: &mut AsyncPgConnection,
    from: Uuid,
    kind: &str,
    to: Uuid,
) -> QueryResult<bool> {
    use crate::schema::tenant::resource_links as l;
    Ok(diesel::delete(
        l::table
            .filter(l::from_id.eq(from))
            .filter(l::kind.eq(kind))
            .filter(l::to_id.eq(to)),
    )
    .execute(conn)
    .await?
        == 1)
}

/// A link with the other end's id and type.
#[derive(QueryableByName)]
pub struct LinkRow {
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = SqlUuid)]
    pub from_id: Uuid,
    #[diesel(sql_type = Text)]
    pub from_type: String,
    #[diesel(sql_type = SqlUuid)]
    pub to_id: Uuid,
    #[diesel(sql_type = Text)]
    pub to_type: String,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub created_at: DateTime<Utc>,
}

/// Links of a resource whose other end (aliased `r`) is live; `q` continues the `WHERE`.
pub fn links_query(outgoing: bool, id: Uuid) -> Sql {
    let (this, other) = if outgoing {
        ("from_id", "to_id")
    } else {
        ("to_id", "from_id")
    };
    Sql::new(&format!(
        "SELECT l.kind, l.from_id, f.type AS from_type, l.to_id, t.type AS to_type, l.created_at \
         FROM resource_links l JOIN resources f ON f.id = l.from_id JOIN resources t ON t.id = l.to_id \
         JOIN resources r ON r.id = l.{other} WHERE r.deleted_at IS NULL AND l.{this} = "
    ))
    .bind::<SqlUuid, _>(id)
}

pub async fn links(conn: &mut AsyncPgConnection, q: Sql) -> QueryResult<Vec<LinkRow>> {
    q.query().load(conn).await
}

/// Every link into `to` from a live resource (for delete rules).
pub async fn incoming_live(conn: &mut AsyncPgConnection, to: Uuid) -> QueryResult<Vec<LinkRow>> {
    links(
        conn,
        links_query(false, to).push(" ORDER BY l.kind, l.from_id"),
    )
    .await
}
