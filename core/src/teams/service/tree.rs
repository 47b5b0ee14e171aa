//! The shape of the tree: creating teams (from templates too), reading them, changing their
//! name and description, deleting, moving, merging and splitting. Every change of shape runs
//! under the tenant's tree lock so `path` stays exact, is audited in its transaction and, when
//! it can change who holds what, invalidates cached permissions after commit. Never runs SQL
//! itself.

use serde_json::json;
use uuid::Uuid;

use super::members::grant_team_roles;
use super::rules::{check_description, check_name, field, record, require_on_team, the_team};
use super::templates::templates;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ids::{TeamId, UserId};
use crate::rbac::perm::Scope;
use crate::rbac::{Caller, RbacState};
use crate::teams::repo::{self, TeamRow};
use crate::teams::{NewTeam, SplitTeam, Team, TeamPatch, TemplateChild};

/// Inserts one team under `parent` (whose path is `parent_path`).
async fn insert_team(
    conn: &mut diesel_async::AsyncPgConnection,
    parent: Option<&TeamRow>,
    name: &str,
    description: &str,
    template: Option<&str>,
) -> ApiResult<TeamRow> {
    let id = Uuid::now_v7();
    let mut path = parent.map(|p| p.path.clone()).unwrap_or_default();
    path.push(id);
    let depth_ok = path.len() <= 64;
    if !depth_ok {
        return Err(field("/parent_id", "teams nest at most 64 deep"));
    }
    repo::insert(
        conn,
        id,
        parent.map(|p| p.id),
        &path,
        name,
        description,
        template,
    )
    .await?;
    the_team(repo::get(conn, id).await?)
}

fn instantiate<'a>(
    conn: &'a mut diesel_async::AsyncPgConnection,
    caller: &'a Caller,
    parent: &'a TeamRow,
    children: &'a [TemplateChild],
    template: &'a str,
) -> futures::future::BoxFuture<'a, ApiResult<()>> {
    Box::pin(async move {
        for c in children {
            let name = check_name(&c.name, "/template")?;
            let row = insert_team(conn, Some(parent), &name, "", Some(template)).await?;
            grant_team_roles(conn, caller, row.id, &c.roles).await?;
            instantiate(conn, caller, &row, &c.children, template).await?;
        }
        Ok(())
    })
}

pub async fn create(state: &RbacState, caller: &Caller, input: &NewTeam) -> ApiResult<Team> {
    let name = check_name(&input.name, "/name")?;
    let description = check_description(&input.description)?;
    let template = match &input.template {
        Some(key) => Some(
            templates(caller.db())
                .await?
                .into_iter()
                .find(|t| &t.key == key)
                .ok_or_else(|| field("/template", format!("no team template {key:?}")))?,
        ),
        None => None,
    };
    match input.parent_id {
        Some(p) => require_on_team(caller, "create", p.0)?,
        None => caller.require("teams", "create", Scope::Tenant)?,
    }
    let team = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            repo::lock_tree(conn).await?;
            let parent = match input.parent_id {
                Some(p) => Some(
                    repo::get(conn, p.0)
                        .await?
                        .ok_or_else(|| field("/parent_id", "no such team"))?,
                ),
                None => None,
            };
            let row = insert_team(
                conn,
                parent.as_ref(),
                &name,
                &description,
                template.as_ref().map(|t| t.key.as_str()),
            )
            .await?;
            if let Some(t) = &template {
                grant_team_roles(conn, caller, row.id, &t.spec.roles).await?;
                instantiate(conn, caller, &row, &t.spec.children, &t.key).await?;
            }
            record(
                conn,
                caller,
                "team.created",
                row.id,
                json!({"name": row.name, "parent": row.parent_id.map(|p| TeamId(p).to_string()),
                       "template": row.template}),
            )
            .await?;
            Ok::<_, ApiError>(row.view(0))
        })
        .await?;
    // A template grants roles; a team under another widens the team reach of everyone in the
    // teams above it (cached with their permissions).
    if template.is_some() || input.parent_id.is_some() {
        state.perms.invalidate(caller.tenant_id()).await;
    }
    Ok(team)
}

/// One team with its member count (one round trip: both reads are pipelined).
pub async fn get(db: &TenantDb, id: TeamId) -> ApiResult<Team> {
    db.read(async |conn| {
        let (row, counts) =
            futures::future::try_join(repo::get(conn, id.0), repo::member_counts(conn, &[id.0]))
                .await?;
        let row = the_team(row)?;
        let n = counts.get(&row.id).copied().unwrap_or(0);
        Ok::<_, ApiError>(row.view(n))
    })
    .await
}

/// Teams in creation order after `after`; only children of `parent` when given (`Some(None)`:
/// root teams).
pub async fn list(
    db: &TenantDb,
    parent: Option<Option<Uuid>>,
    after: Option<Uuid>,
    limit: i64,
) -> ApiResult<Vec<Team>> {
    db.read(async |conn| {
        let rows = repo::list(conn, parent, after, limit).await?;
        Ok::<_, ApiError>(repo::views(conn, rows).await?)
    })
    .await
}

pub async fn subtree(db: &TenantDb, id: TeamId) -> ApiResult<Vec<Team>> {
    db.transaction(async |tx| {
        the_team(repo::get(tx.conn(), id.0).await?)?;
        let rows = repo::subtree(tx.conn(), id.0).await?;
        Ok::<_, ApiError>(repo::views(tx.conn(), rows).await?)
    })
    .await
}

pub async fn ancestors(db: &TenantDb, id: TeamId) -> ApiResult<Vec<Team>> {
    db.transaction(async |tx| {
        let row = the_team(repo::get(tx.conn(), id.0).await?)?;
        let rows = repo::ancestors(tx.conn(), &row.path).await?;
        Ok::<_, ApiError>(repo::views(tx.conn(), rows).await?)
    })
    .await
}

pub async fn patch(caller: &Caller, id: TeamId, input: &TeamPatch) -> ApiResult<Team> {
    require_on_team(caller, "update", id.0)?;
    let name = input
        .name
        .as_deref()
        .map(|n| check_name(n, "/name"))
        .transpose()?;
    let description = input
        .description
        .as_deref()
        .map(check_description)
        .transpose()?;
    caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let before = the_team(repo::get(conn, id.0).await?)?;
            repo::update(conn, id.0, name.as_deref(), description.as_deref()).await?;
            let after = the_team(repo::get(conn, id.0).await?)?;
            record(
                conn,
                caller,
                "team.updated",
                id.0,
                json!({"before": {"name": before.name, "description": before.description},
                       "after": {"name": after.name, "description": after.description}}),
            )
            .await?;
            Ok::<_, ApiError>(repo::view(conn, after).await?)
        })
        .await
}

/// Deletes a team; with `recursive`, its whole subtree, else only a team without sub-teams.
pub async fn delete(
    state: &RbacState,
    caller: &Caller,
    id: TeamId,
    recursive: bool,
) -> ApiResult<()> {
    require_on_team(caller, "delete", id.0)?;
    caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            repo::lock_tree(conn).await?;
            the_team(repo::get(conn, id.0).await?)?;
            let sub = repo::subtree(conn, id.0).await?;
            if sub.len() > 1 && !recursive {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    "the team has sub-teams: move them, or delete with recursive=true",
                ));
            }
            // Deepest first, so no team outlives its parent.
            for t in sub.iter().rev() {
                repo::remove_members(conn, t.id, None).await?;
                repo::delete(conn, t.id).await?;
            }
            record(
                conn,
                caller,
                "team.deleted",
                id.0,
                json!({"teams": sub.iter().map(|t| json!({"id": TeamId(t.id).to_string(), "name": t.name})).collect::<Vec<_>>()}),
            )
            .await
        })
        .await?;
    state.perms.invalidate(caller.tenant_id()).await;
    Ok(())
}

/// Moves a team (with its subtree) under another team, or to the root.
pub async fn move_team(
    state: &RbacState,
    caller: &Caller,
    id: TeamId,
    parent: Option<TeamId>,
) -> ApiResult<Team> {
    require_on_team(caller, "update", id.0)?;
    if let Some(p) = parent {
        require_on_team(caller, "update", p.0)?;
    }
    let team = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            repo::lock_tree(conn).await?;
            let team = the_team(repo::get(conn, id.0).await?)?;
            let new_parent = match parent {
                Some(p) => Some(
                    repo::get(conn, p.0)
                        .await?
                        .ok_or_else(|| field("/parent_id", "no such team"))?,
                ),
                None => None,
            };
            if let Some(np) = &new_parent {
                if np.path.contains(&team.id) {
                    return Err(field(
                        "/parent_id",
                        "a team cannot move under itself or one of its sub-teams",
                    ));
                }
                if np.path.len()
                    + (repo::subtree(conn, team.id)
                        .await?
                        .iter()
                        .map(|t| t.path.len())
                        .max()
                        .unwrap_or(0)
                        - team.path.len()
                        + 1)
                    > 64
                {
                    return Err(field("/parent_id", "teams nest at most 64 deep"));
                }
            }
            let prefix = new_parent
                .as_ref()
                .map(|p| p.path.clone())
                .unwrap_or_default();
            repo::set_parent(conn, team.id, new_parent.as_ref().map(|p| p.id)).await?;
            repo::repath(conn, team.id, team.path.len(), &prefix).await?;
            let after = the_team(repo::get(conn, team.id).await?)?;
            record(
                conn,
                caller,
                "team.moved",
                team.id,
                json!({"from": team.parent_id.map(|p| TeamId(p).to_string()),
                       "to": after.parent_id.map(|p| TeamId(p).to_string())}),
            )
            .await?;
            Ok::<_, ApiError>(repo::view(conn, after).await?)
        })
        .await?;
    state.perms.invalidate(caller.tenant_id()).await;
    Ok(team)
}

/// Merges `id` into `into`: members (a `lead` stays lead), sub-teams, team roles and shares
/// move over; `id` is deleted.
pub async fn merge(
    state: &RbacState,
    caller: &Caller,
    id: TeamId,
    into: TeamId,
) -> ApiResult<Team> {
    require_on_team(caller, "delete", id.0)?;
    require_on_team(caller, "update", into.0)?;
    if id == into {
        return Err(field("/into", "a team cannot merge into itself"));
    }
    let team = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            repo::lock_tree(conn).await?;
            let source = the_team(repo::get(conn, id.0).await?)?;
            let target = repo::get(conn, into.0)
                .await?
                .ok_or_else(|| field("/into", "no such team"))?;
            if target.path.contains(&source.id) {
                return Err(field(
                    "/into",
                    "a team cannot merge into one of its sub-teams",
                ));
            }
            // Roles of the source now reach the target's members: the caller must be able to
            // grant them.
            let role_keys = repo::role_keys(conn, source.id).await?;
            grant_team_roles(conn, caller, target.id, &role_keys).await?;
            // Members.
            let members = repo::member_roles(conn, source.id, None).await?;
            let existing = repo::member_ids(conn, target.id).await?;
            for (user, role) in &members {
                if existing.contains(user) {
                    if role == "lead" {
                        repo::set_member_role(conn, target.id, *user, "lead").await?;
                    }
                } else {
                    repo::add_members(conn, target.id, &[*user], role).await?;
                }
            }
            // Sub-teams.
            let children = repo::children(conn, source.id).await?;
            for child in &children {
                repo::set_parent(conn, child.id, Some(target.id)).await?;
                repo::repath(conn, child.id, child.path.len(), &target.path).await?;
            }
            // Shares: re-point to the target, dropping duplicates and self-shares.
            repo::move_shares(conn, source.id, target.id).await?;
            repo::remove_members(conn, source.id, None).await?;
            repo::delete(conn, source.id).await?;
            record(
                conn,
                caller,
                "team.merged",
                target.id,
                json!({"merged": TeamId(source.id).to_string(), "name": source.name,
                       "members": members.len(), "sub_teams": children.len(), "roles": role_keys}),
            )
            .await?;
            let after = the_team(repo::get(conn, target.id).await?)?;
            Ok::<_, ApiError>(repo::view(conn, after).await?)
        })
        .await?;
    state.perms.invalidate(caller.tenant_id()).await;
    Ok(team)
}

/// Splits members of `id` off into a new sibling team.
pub async fn split(
    state: &RbacState,
    caller: &Caller,
    id: TeamId,
    input: &SplitTeam,
) -> ApiResult<Team> {
    require_on_team(caller, "manage_members", id.0)?;
    let name = check_name(&input.name, "/name")?;
    let description = check_description(&input.description)?;
    if input.member_ids.is_empty() || input.member_ids.len() > 1000 {
        return Err(field("/member_ids", "must list 1-1000 members"));
    }
    let team = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            repo::lock_tree(conn).await?;
            let source = the_team(repo::get(conn, id.0).await?)?;
            match source.parent_id {
                Some(p) => require_on_team(caller, "create", p)?,
                None => caller.require("teams", "create", Scope::Tenant)?,
            }
            let parent = match source.parent_id {
                Some(p) => repo::get(conn, p).await?,
                None => None,
            };
            let wanted: Vec<Uuid> = input.member_ids.iter().map(|u| u.0).collect();
            let members = repo::member_roles(conn, source.id, Some(&wanted)).await?;
            if let Some((i, _)) = wanted
                .iter()
                .enumerate()
                .find(|(_, u)| !members.iter().any(|(m, _)| m == *u))
            {
                return Err(field(
                    &format!("/member_ids/{i}"),
                    "not a member of this team",
                ));
            }
            let row = insert_team(conn, parent.as_ref(), &name, &description, None).await?;
            repo::remove_members(conn, source.id, Some(&wanted)).await?;
            for (user, role) in &members {
                repo::add_members(conn, row.id, &[*user], role).await?;
            }
            if input.copy_roles {
                let keys = repo::role_keys(conn, source.id).await?;
                grant_team_roles(conn, caller, row.id, &keys).await?;
            }
            record(
                conn,
                caller,
                "team.split",
                source.id,
                json!({"new_team": TeamId(row.id).to_string(), "name": row.name,
                       "members": wanted.iter().map(|u| UserId(*u).to_string()).collect::<Vec<_>>(),
                       "copy_roles": input.copy_roles}),
            )
            .await?;
            Ok::<_, ApiError>(repo::view(conn, row).await?)
        })
        .await?;
    state.perms.invalidate(caller.tenant_id()).await;
    Ok(team)
}
