//! SQL for teams, members, team roles and shares. Runs only inside a tenant `Tx`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{Member, Share, Team};
use crate::ids::{ShareId, TeamId, UserId};
use crate::schema::tenant::{team_members, team_membership_log, team_shares, teams, users};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = teams)]
pub struct TeamRow {
    pub id: Uuid,
    pub parent_id: Option<Uuid>,
    pub path: Vec<Uuid>,
    pub name: String,
    pub description: String,
    pub template: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TeamRow {
    pub fn view(self, member_count: i64) -> Team {
        Team {
            id: TeamId(self.id),
            parent_id: self.parent_id.map(TeamId),
            name: self.name,
            description: self.description,
            depth: self.path.len().saturating_sub(1),
            path: self.path.into_iter().map(TeamId).collect(),
            member_count,
            template: self.template,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// Serialises changes to the shape of one tenant's tree.
pub async fn lock_tree(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':teams'))")
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<TeamRow>> {
    teams::table
        .find(id)
        .select(TeamRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Direct member counts of `ids`.
pub async fn member_counts(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> QueryResult<std::collections::HashMap<Uuid, i64>> {
    let rows: Vec<(Uuid, i64)> = team_members::table
        .filter(team_members::team_id.eq_any(ids))
        .group_by(team_members::team_id)
        .select((team_members::team_id, diesel::dsl::count_star()))
        .load(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

pub async fn views(conn: &mut AsyncPgConnection, rows: Vec<TeamRow>) -> QueryResult<Vec<Team>> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let counts = member_counts(conn, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let n = counts.get(&r.id).copied().unwrap_or(0);
            r.view(n)
        })
        .collect())
}

/// The team and every team below it, shallowest first.
pub async fn subtree(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Vec<TeamRow>> {
    teams::table
        .filter(teams::path.contains(vec![id]))
        .select(TeamRow::as_select())
        .order((
            diesel::dsl::sql::<diesel::sql_types::Integer>("cardinality(path)"),
            teams::name,
        ))
        .load(conn)
        .await
}

/// The teams above `path`'s team, root first.
pub async fn ancestors(conn: &mut AsyncPgConnection, path: &[Uuid]) -> QueryResult<Vec<TeamRow>> {
    let above = &path[..path.len().saturating_sub(1)];
    let mut rows: Vec<TeamRow> = teams::table
        .filter(teams::id.eq_any(above))
        .select(TeamRow::as_select())
        .load(conn)
        .await?;
    rows.sort_by_key(|r| r.path.len());
    Ok(rows)
}

pub async fn all(conn: &mut AsyncPgConnection) -> QueryResult<Vec<TeamRow>> {
    teams::table
        .select(TeamRow::as_select())
        .order(teams::id.asc())
        .load(conn)
        .await
}

/// Replaces the prefix `old` of every path in `old`'s subtree by `new` (same last element):
/// one statement moves a whole subtree.
pub async fn repath(
    conn: &mut AsyncPgConnection,
    team: Uuid,
    old_len: usize,
    new_prefix: &[Uuid],
) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE teams SET path = $2 || path[$3:], updated_at = now() WHERE path @> ARRAY[$1]",
    )
    .bind::<SqlUuid, _>(team)
    .bind::<Array<SqlUuid>, _>(new_prefix)
    .bind::<diesel::sql_types::Integer, _>(old_len as i32)
    .execute(conn)
    .await
}

/// (user, username, display name, team role, joined).
type MemberRow = (Uuid, Option<String>, Option<String>, String, DateTime<Utc>);

pub async fn members(conn: &mut AsyncPgConnection, team: Uuid) -> QueryResult<Vec<Member>> {
    let rows: Vec<MemberRow> = team_members::table
        .inner_join(users::table)
        .filter(team_members::team_id.eq(team))
        .select((
            team_members::user_id,
            users::username,
            users::display_name,
            team_members::team_role,
            team_members::joined_at,
        ))
        .order(team_members::user_id.asc())
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(u, username, display_name, team_role, joined_at)| Member {
            user_id: UserId(u),
            username,
            display_name,
            team_role,
            joined_at,
        })
        .collect())
}

/// Adds (or re-roles) members; logs joins of those who were not members.
pub async fn add_members(
    conn: &mut AsyncPgConnection,
    team: Uuid,
    user_ids: &[Uuid],
    role: &str,
) -> QueryResult<usize> {
    let existing: Vec<Uuid> = team_members::table
        .filter(team_members::team_id.eq(team))
        .filter(team_members::user_id.eq_any(user_ids))
        .select(team_members::user_id)
        .load(conn)
        .await?;
    let rows: Vec<_> = user_ids
        .iter()
        .map(|u| {
            (
                team_members::team_id.eq(team),
                team_members::user_id.eq(*u),
                team_members::team_role.eq(role),
            )
        })
        .collect();
    diesel::insert_into(team_members::table)
        .values(rows)
        .on_conflict((team_members::team_id, team_members::user_id))
        .do_update()
        .set(team_members::team_role.eq(role))
        .execute(conn)
        .await?;
    let joined: Vec<_> = user_ids
        .iter()
        .filter(|u| !existing.contains(u))
        .map(|u| {
            (
                team_membership_log::team_id.eq(team),
                team_membership_log::user_id.eq(*u),
                team_membership_log::change.eq("joined"),
            )
        })
        .collect();
    let n = joined.len();
    if n > 0 {
        diesel::insert_into(team_membership_log::table)
            .values(joined)
            .execute(conn)
            .await?;
    }
    Ok(n)
}

/// Removes members (all of the team's when `users` is `None`); logs the leaves.
pub async fn remove_members(
    conn: &mut AsyncPgConnection,
    team: Uuid,
    users: Option<&[Uuid]>,
) -> QueryResult<Vec<Uuid>> {
    let removed: Vec<Uuid> = match users {
        Some(u) => {
            diesel::delete(
                team_members::table
                    .filter(team_members::team_id.eq(team))
                    .filter(team_members::user_id.eq_any(u)),
            )
            .returning(team_members::user_id)
            .get_results(conn)
            .await?
        }
        None => {
            diesel::delete(team_members::table.filter(team_members::team_id.eq(team)))
                .returning(team_members::user_id)
                .get_results(conn)
                .await?
        }
    };
    let left: Vec<_> = removed
        .iter()
        .map(|u| {
            (
                team_membership_log::team_id.eq(team),
                team_membership_log::user_id.eq(*u),
                team_membership_log::change.eq("left"),
            )
        })
        .collect();
    if !left.is_empty() {
        diesel::insert_into(team_membership_log::table)
            .values(left)
            .execute(conn)
            .await?;
    }
    Ok(removed)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = team_shares)]
pub struct ShareRow {
    pub id: Uuid,
    pub team_id: Uuid,
    pub shared_with: Uuid,
    pub resource_type: String,
    pub resource_id: String,
    pub access: String,
    pub created_at: DateTime<Utc>,
}

impl From<ShareRow> for Share {
    fn from(r: ShareRow) -> Self {
        Share {
            id: ShareId(r.id),
            team_id: TeamId(r.team_id),
            shared_with: TeamId(r.shared_with),
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            access: r.access,
            created_at: r.created_at,
        }
    }
}

/// Shares a team owns or receives.
pub async fn shares_of(conn: &mut AsyncPgConnection, team: Uuid) -> QueryResult<Vec<Share>> {
    Ok(team_shares::table
        .filter(
            team_shares::team_id
                .eq(team)
                .or(team_shares::shared_with.eq(team)),
        )
        .select(ShareRow::as_select())
        .order(team_shares::id.asc())
        .load(conn)
        .await?
        .into_iter()
        .map(Share::from)
        .collect())
}

/// The widest access any of `teams` was given to a resource through shares (`write` beats
/// `read`): the seam resource modules ask.
pub async fn shared_access(
    conn: &mut AsyncPgConnection,
    teams: &[Uuid],
    resource_type: &str,
    resource_id: &str,
) -> QueryResult<Option<String>> {
    let found: Vec<String> = team_shares::table
        .filter(team_shares::shared_with.eq_any(teams))
        .filter(team_shares::resource_type.eq(resource_type))
        .filter(team_shares::resource_id.eq(resource_id))
        .select(team_shares::access)
        .load(conn)
        .await?;
    Ok(if found.iter().any(|a| a == "write") {
        Some("write".into())
    } else {
        found.into_iter().next()
    })
}
