//! SQL for what ties a resource to others: shares with users and teams, and typed links
//! between resources (with the other end's type, for lists and delete rules).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Sql;
use crate::ids::{ResourceShareId, TeamId, UserId};
use crate::resources::{Share, ShareAccess};
use crate::schema::tenant::resource_shares;

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

/// The widest access a share of resource `id` gives `user` directly or through one of
/// `teams` (prepared statement; `None` when nothing is shared with them).
pub async fn share_access(
    mut conn: &AsyncPgConnection,
    id: Uuid,
    user: Uuid,
    teams: &[Uuid],
) -> QueryResult<Option<ShareAccess>> {
    let access: Vec<String> = resource_shares::table
        .filter(resource_shares::resource_id.eq(id))
        .filter(
            resource_shares::user_id
                .eq(user)
                .or(resource_shares::team_id.eq_any(teams)),
        )
        .select(resource_shares::access)
        .load(&mut conn)
        .await?;
    Ok(if access.iter().any(|a| a == "write") {
        Some(ShareAccess::Write)
    } else if access.is_empty() {
        None
    } else {
        Some(ShareAccess::Read)
    })
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
fn links_query(outgoing: bool, id: Uuid) -> Sql {
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

/// A resource's links, outgoing or incoming (of `kind`, if given), to live other ends that
/// `visible` lets through (it appends the caller's visibility predicate on `r`); at most
/// 1,000, by kind and age.
pub async fn links(
    conn: &mut AsyncPgConnection,
    outgoing: bool,
    id: Uuid,
    kind: Option<&str>,
    visible: impl FnOnce(Sql) -> Sql,
) -> QueryResult<Vec<LinkRow>> {
    let mut q = links_query(outgoing, id);
    if let Some(k) = kind {
        q = q.push(" AND l.kind = ").bind::<Text, _>(k.to_string());
    }
    let q = visible(q).push(" ORDER BY l.kind, l.created_at LIMIT 1000");
    q.load(conn).await
}

/// Every link into `to` from a live resource (for delete rules).
pub async fn incoming_live(conn: &mut AsyncPgConnection, to: Uuid) -> QueryResult<Vec<LinkRow>> {
    links_query(false, to)
        .push(" ORDER BY l.kind, l.from_id")
        .load(conn)
        .await
}
