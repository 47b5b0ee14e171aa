//! SQL for teams, members, team roles, shares, templates and analytics. Runs only inside a
//! tenant `Tx`; holds no rules (validation, permission checks, audit and invalidation are the
//! service's) and never opens or finishes a transaction itself.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{Member, Share, Team};
use crate::ids::{ShareId, TeamId, UserId};
use crate::schema::tenant::{
    roles, team_members, team_membership_log, team_roles, team_shares, team_templates, teams, users,
};

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

pub async fn get(mut conn: &AsyncPgConnection, id: Uuid) -> QueryResult<Option<TeamRow>> {
    teams::table
        .find(id)
        .select(TeamRow::as_select())
        .first(&mut conn)
        .await
        .optional()
}

/// Direct member counts of `ids`.
pub async fn member_counts(
    mut conn: &AsyncPgConnection,
    ids: &[Uuid],
) -> QueryResult<std::collections::HashMap<Uuid, i64>> {
    let rows: Vec<(Uuid, i64)> = team_members::table
        .filter(team_members::team_id.eq_any(ids))
        .group_by(team_members::team_id)
        .select((team_members::team_id, diesel::dsl::count_star()))
        .load(&mut conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// One team's view (with its member count).
pub async fn view(conn: &AsyncPgConnection, row: TeamRow) -> QueryResult<Team> {
    let n = member_counts(conn, &[row.id]).await?.get(&row.id).copied();
    Ok(row.view(n.unwrap_or(0)))
}

pub async fn views(conn: &AsyncPgConnection, rows: Vec<TeamRow>) -> QueryResult<Vec<Team>> {
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

/// A page of teams in creation order after `after`; only children of `parent` when given
/// (`Some(None)`: root teams).
pub async fn list(
    mut conn: &AsyncPgConnection,
    parent: Option<Option<Uuid>>,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<TeamRow>> {
    let mut q = teams::table
        .select(TeamRow::as_select())
        .order(teams::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        q = q.filter(teams::id.gt(after));
    }
    match parent {
        Some(Some(p)) => q = q.filter(teams::parent_id.eq(p)),
        Some(None) => q = q.filter(teams::parent_id.is_null()),
        None => {}
    }
    q.load(&mut conn).await
}

/// The direct children of `parent`.
pub async fn children(conn: &mut AsyncPgConnection, parent: Uuid) -> QueryResult<Vec<TeamRow>> {
    teams::table
        .filter(teams::parent_id.eq(parent))
        .select(TeamRow::as_select())
        .load(conn)
        .await
}

/// Inserts a team row as given (`path` ends with `id`).
pub async fn insert(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    parent: Option<Uuid>,
    path: &[Uuid],
    name: &str,
    description: &str,
    template: Option<&str>,
) -> QueryResult<()> {
    diesel::insert_into(teams::table)
        .values((
            teams::id.eq(id),
            teams::parent_id.eq(parent),
            teams::path.eq(path),
            teams::name.eq(name),
            teams::description.eq(description),
            teams::template.eq(template),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets the given fields of a team (absent ones stay) and stamps `updated_at`.
pub async fn update(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    name: Option<&str>,
    description: Option<&str>,
) -> QueryResult<usize> {
    diesel::update(teams::table.find(id))
        .set((
            name.map(|n| teams::name.eq(n)),
            description.map(|d| teams::description.eq(d)),
            teams::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await
}

/// Sets a team's parent column only; its paths are [`repath`]'s.
pub async fn set_parent(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    parent: Option<Uuid>,
) -> QueryResult<usize> {
    diesel::update(teams::table.find(id))
        .set(teams::parent_id.eq(parent))
        .execute(conn)
        .await
}

/// Deletes one team row (its members are removed first by the caller).
pub async fn delete(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::delete(teams::table.find(id)).execute(conn).await
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

/// (user, team role) of `team`'s members, only those among `among` when given.
pub async fn member_roles(
    conn: &mut AsyncPgConnection,
    team: Uuid,
    among: Option<&[Uuid]>,
) -> QueryResult<Vec<(Uuid, String)>> {
    let mut q = team_members::table
        .filter(team_members::team_id.eq(team))
        .select((team_members::user_id, team_members::team_role))
        .into_boxed();
    if let Some(users) = among {
        q = q.filter(team_members::user_id.eq_any(users));
    }
    q.load(conn).await
}

/// The user ids of `team`'s members.
pub async fn member_ids(conn: &mut AsyncPgConnection, team: Uuid) -> QueryResult<Vec<Uuid>> {
    team_members::table
        .filter(team_members::team_id.eq(team))
        .select(team_members::user_id)
        .load(conn)
        .await
}

/// Changes one member's team role; 0 when `user` is not a member.
pub async fn set_member_role(
    conn: &mut AsyncPgConnection,
    team: Uuid,
    user: Uuid,
    role: &str,
) -> QueryResult<usize> {
    diesel::update(
        team_members::table
            .filter(team_members::team_id.eq(team))
            .filter(team_members::user_id.eq(user)),
    )
    .set(team_members::team_role.eq(role))
    .execute(conn)
    .await
}

/// Which of `ids` are active users.
pub async fn active_users(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> QueryResult<Vec<Uuid>> {
    users::table
        .filter(users::id.eq_any(ids))
        .filter(users::status.eq("active"))
        .select(users::id)
        .load(conn)
        .await
}

/// (team, display name, username) of every `lead` member, by username.
pub async fn leads(
    conn: &mut AsyncPgConnection,
) -> QueryResult<Vec<(Uuid, Option<String>, Option<String>)>> {
    team_members::table
        .inner_join(users::table)
        .filter(team_members::team_role.eq("lead"))
        .select((team_members::team_id, users::display_name, users::username))
        .order(users::username.asc())
        .load(conn)
        .await
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

/// Keys of the roles given to `team`, by key.
pub async fn role_keys(conn: &mut AsyncPgConnection, team: Uuid) -> QueryResult<Vec<String>> {
    team_roles::table
        .inner_join(roles::table)
        .filter(team_roles::team_id.eq(team))
        .select(roles::key)
        .order(roles::key.asc())
        .load(conn)
        .await
}

/// (id, key) of the roles among `keys` that exist.
pub async fn roles_by_keys(
    conn: &mut AsyncPgConnection,
    keys: &[String],
) -> QueryResult<Vec<(Uuid, String)>> {
    roles::table
        .filter(roles::key.eq_any(keys))
        .select((roles::id, roles::key))
        .load(conn)
        .await
}

/// The id of the role `key`.
pub async fn role_id(conn: &mut AsyncPgConnection, key: &str) -> QueryResult<Option<Uuid>> {
    roles::table
        .filter(roles::key.eq(key))
        .select(roles::id)
        .first(conn)
        .await
        .optional()
}

/// Gives `team` the roles `role_ids` (those it has already stay as they are).
pub async fn grant_roles(
    conn: &mut AsyncPgConnection,
    team: Uuid,
    role_ids: &[Uuid],
    granted_by: Uuid,
) -> QueryResult<usize> {
    let rows: Vec<_> = role_ids
        .iter()
        .map(|r| {
            (
                team_roles::team_id.eq(team),
                team_roles::role_id.eq(*r),
                team_roles::granted_by.eq(Some(granted_by)),
            )
        })
        .collect();
    diesel::insert_into(team_roles::table)
        .values(rows)
        .on_conflict_do_nothing()
        .execute(conn)
        .await
}

/// Takes the role `role` from `team`; 0 when the team did not have it.
pub async fn revoke_role(
    conn: &mut AsyncPgConnection,
    team: Uuid,
    role: Uuid,
) -> QueryResult<usize> {
    diesel::delete(
        team_roles::table
            .filter(team_roles::team_id.eq(team))
            .filter(team_roles::role_id.eq(role)),
    )
    .execute(conn)
    .await
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

/// Inserts a share owned by `team`.
#[allow(clippy::too_many_arguments)]
pub async fn insert_share(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    team: Uuid,
    shared_with: Uuid,
    resource_type: &str,
    resource_id: &str,
    access: &str,
    created_by: Uuid,
) -> QueryResult<()> {
    diesel::insert_into(team_shares::table)
        .values((
            team_shares::id.eq(id),
            team_shares::team_id.eq(team),
            team_shares::shared_with.eq(shared_with),
            team_shares::resource_type.eq(resource_type),
            team_shares::resource_id.eq(resource_id),
            team_shares::access.eq(access),
            team_shares::created_by.eq(Some(created_by)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn share(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Share> {
    Ok(team_shares::table
        .find(id)
        .select(ShareRow::as_select())
        .first(conn)
        .await?
        .into())
}

/// Deletes a share `team` owns; 0 when it owns no such share.
pub async fn delete_share(
    conn: &mut AsyncPgConnection,
    team: Uuid,
    share: Uuid,
) -> QueryResult<usize> {
    diesel::delete(
        team_shares::table
            .filter(team_shares::id.eq(share))
            .filter(team_shares::team_id.eq(team)),
    )
    .execute(conn)
    .await
}

/// Re-points every share of `from` (owned or received) to `into`, dropping those that would
/// duplicate one of `into`'s or become a share of `into` with itself.
pub async fn move_shares(conn: &mut AsyncPgConnection, from: Uuid, into: Uuid) -> QueryResult<()> {
    diesel::sql_query(
        "DELETE FROM team_shares s WHERE s.shared_with = $1 AND (s.team_id = $2 OR EXISTS (
           SELECT 1 FROM team_shares o WHERE o.shared_with = $2
           AND o.resource_type = s.resource_type AND o.resource_id = s.resource_id))",
    )
    .bind::<SqlUuid, _>(from)
    .bind::<SqlUuid, _>(into)
    .execute(conn)
    .await?;
    diesel::sql_query("DELETE FROM team_shares WHERE team_id = $1 AND shared_with = $2")
        .bind::<SqlUuid, _>(from)
        .bind::<SqlUuid, _>(into)
        .execute(conn)
        .await?;
    diesel::update(team_shares::table.filter(team_shares::shared_with.eq(from)))
        .set(team_shares::shared_with.eq(into))
        .execute(conn)
        .await?;
    diesel::update(team_shares::table.filter(team_shares::team_id.eq(from)))
        .set(team_shares::team_id.eq(into))
        .execute(conn)
        .await?;
    Ok(())
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

/// The tenant's own team templates: (key, name, description, spec), by key.
pub async fn templates(
    conn: &mut AsyncPgConnection,
) -> QueryResult<Vec<(String, String, String, serde_json::Value)>> {
    team_templates::table
        .select((
            team_templates::key,
            team_templates::name,
            team_templates::description,
            team_templates::spec,
        ))
        .order(team_templates::key.asc())
        .load(conn)
        .await
}

pub async fn insert_template(
    conn: &mut AsyncPgConnection,
    key: &str,
    name: &str,
    description: &str,
    spec: &serde_json::Value,
) -> QueryResult<()> {
    diesel::insert_into(team_templates::table)
        .values((
            team_templates::key.eq(key),
            team_templates::name.eq(name),
            team_templates::description.eq(description),
            team_templates::spec.eq(spec),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// One team's counts for analytics.
#[derive(QueryableByName)]
pub struct AnalyticsRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub name: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub members: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub members_in_subtree: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub sub_teams: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub active: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub actions: i64,
}

/// Joins and leaves of one team in one month (`YYYY-MM`).
#[derive(QueryableByName)]
pub struct GrowthRow {
    #[diesel(sql_type = SqlUuid)]
    pub team_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub month: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub joined: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub left: i64,
}

/// Counts of `only` (or of the first 2,000 teams): members, members in the subtree, sub-teams,
/// members seen and their audited actions in the last 30 days.
pub async fn analytics(
    conn: &mut AsyncPgConnection,
    only: Option<Uuid>,
) -> QueryResult<Vec<AnalyticsRow>> {
    diesel::sql_query(
        r#"
SELECT t.id, t.name,
  (SELECT count(*) FROM team_members m WHERE m.team_id = t.id) AS members,
  (SELECT count(DISTINCT m.user_id) FROM teams s JOIN team_members m ON m.team_id = s.id
     WHERE s.path @> ARRAY[t.id]) AS members_in_subtree,
  (SELECT count(*) - 1 FROM teams s WHERE s.path @> ARRAY[t.id]) AS sub_teams,
  (SELECT count(*) FROM team_members m JOIN users u ON u.id = m.user_id
     WHERE m.team_id = t.id AND u.last_seen_at > now() - interval '30 days') AS active,
  (SELECT count(*) FROM team_members m JOIN audit_log a
     ON a.actor_id = 'usr_' || replace(m.user_id::text, '-', '')
     WHERE m.team_id = t.id AND a.at > now() - interval '30 days') AS actions
FROM teams t WHERE ($1::uuid IS NULL OR t.id = $1) ORDER BY t.id LIMIT 2000
"#,
    )
    .bind::<diesel::sql_types::Nullable<SqlUuid>, _>(only)
    .load(conn)
    .await
}

/// Joins and leaves per team and month, from the start of the month `months_back` months ago
/// (only `only`'s when given); months without changes are absent.
pub async fn growth(
    conn: &mut AsyncPgConnection,
    only: Option<Uuid>,
    months_back: i32,
) -> QueryResult<Vec<GrowthRow>> {
    diesel::sql_query(
        r#"
SELECT team_id, to_char(date_trunc('month', at), 'YYYY-MM') AS month,
  count(*) FILTER (WHERE change = 'joined') AS joined,
  count(*) FILTER (WHERE change = 'left') AS left
FROM team_membership_log
WHERE at >= date_trunc('month', now()) - make_interval(months => $2)
  AND ($1::uuid IS NULL OR team_id = $1)
GROUP BY 1, 2
"#,
    )
    .bind::<diesel::sql_types::Nullable<SqlUuid>, _>(only)
    .bind::<diesel::sql_types::Integer, _>(months_back)
    .load(conn)
    .await
}
