//! Team use cases: validation, tree surgery under the tree lock, audit and permission
//! invalidation.

use std::collections::HashMap;

use chrono::{Datelike, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::json;
use uuid::Uuid;

use super::repo::{self, TeamRow};
use super::{
    AddMembers, ChartNode, Member, MonthGrowth, NewShare, NewTeam, Share, SplitTeam, Team,
    TeamAnalytics, TeamPatch, TeamTemplate, TemplateChild, TemplateSpec,
};
use crate::audit::{self, Change};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError, found};
use crate::ids::{ShareId, TeamId, UserId};
use crate::rbac::Caller;
use crate::rbac::RbacState;
use crate::rbac::perm::Scope;
use crate::schema::tenant::{
    roles, team_members, team_roles, team_shares, team_templates, teams, users,
};

/// Allowed `teams.<action>` on `team`: at tenant scope, or at team scope for a team the
/// caller belongs to or one below it.
pub fn require_on_team(caller: &Caller, action: &str, team: Uuid) -> ApiResult<()> {
    if caller.allows("teams", action, Scope::Tenant)
        || (caller.allows("teams", action, Scope::Team) && caller.effective.teams.contains(&team))
    {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("requires the permission teams.{action}.tenant (or .team for your own teams)"),
        ))
    }
}

/// The team, or a 404.
fn the_team<T>(v: Option<T>) -> ApiResult<T> {
    found(v, "team")
}

fn field(pointer: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(vec![FieldError {
        pointer: pointer.into(),
        message: message.into(),
    }])
}

fn check_name(name: &str, pointer: &str) -> ApiResult<String> {
    let n = name.trim();
    if (1..=100).contains(&n.chars().count()) && !n.chars().any(char::is_control) {
        Ok(n.to_string())
    } else {
        Err(field(
            pointer,
            "must be 1-100 characters without control characters",
        ))
    }
}

fn check_description(d: &str) -> ApiResult<String> {
    if d.chars().count() <= 1000 {
        Ok(d.trim().to_string())
    } else {
        Err(field("/description", "at most 1000 characters"))
    }
}

fn check_team_role(r: &str, pointer: &str) -> ApiResult<()> {
    let mut b = r.bytes();
    let ok = matches!(b.next(), Some(b'a'..=b'z'))
        && r.len() <= 32
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(field(
            pointer,
            "must be 1-32 of a-z, 0-9, _ and -, starting with a letter",
        ))
    }
}

async fn record(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    action: &str,
    team: Uuid,
    data: serde_json::Value,
) -> ApiResult<()> {
    audit::record(
        conn,
        &caller.actor,
        Change {
            action,
            target_type: "team",
            target_id: Some(TeamId(team).to_string()),
            data,
        },
    )
    .await?;
    Ok(())
}

/// The platform's team templates.
pub fn builtin_templates() -> Vec<TeamTemplate> {
    let child = |name: &str| TemplateChild {
        name: name.into(),
        roles: vec![],
        children: vec![],
    };
    vec![
        TeamTemplate {
            key: "department".into(),
            name: "Department".into(),
            description: "A department with leadership and operations teams".into(),
            spec: TemplateSpec {
                roles: vec![],
                children: vec![child("Leadership"), child("Operations")],
            },
            builtin: true,
        },
        TeamTemplate {
            key: "product-squad".into(),
            name: "Product squad".into(),
            description: "A cross-functional squad: engineering, design and product".into(),
            spec: TemplateSpec {
                roles: vec![],
                children: vec![child("Engineering"), child("Design"), child("Product")],
            },
            builtin: true,
        },
    ]
}

pub async fn templates(db: &TenantDb) -> ApiResult<Vec<TeamTemplate>> {
    let mut tx = db.begin().await?;
    let rows = team_templates::table
        .select((
            team_templates::key,
            team_templates::name,
            team_templates::description,
            team_templates::spec,
        ))
        .order(team_templates::key.asc())
        .load::<(String, String, String, serde_json::Value)>(tx.conn())
        .await;
    let rows = tx.finish(rows).await?;
    let mut out = builtin_templates();
    out.extend(
        rows.into_iter()
            .filter_map(|(key, name, description, spec)| {
                Some(TeamTemplate {
                    key,
                    name,
                    description,
                    spec: serde_json::from_value(spec).ok()?,
                    builtin: false,
                })
            }),
    );
    Ok(out)
}

fn spec_size(children: &[TemplateChild], depth: usize) -> Option<usize> {
    if depth > 10 {
        return None;
    }
    let mut n = 0;
    for c in children {
        n += 1 + spec_size(&c.children, depth + 1)?;
    }
    Some(n)
}

pub async fn create_template(caller: &Caller, input: &TeamTemplate) -> ApiResult<TeamTemplate> {
    let mut b = input.key.bytes();
    if !(matches!(b.next(), Some(b'a'..=b'z'))
        && input.key.len() <= 63
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-'))
    {
        return Err(field("/key", "must be 1-63 of a-z, 0-9, _ and -"));
    }
    if builtin_templates().iter().any(|t| t.key == input.key) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "a platform template has this key",
        ));
    }
    let name = check_name(&input.name, "/name")?;
    let description = check_description(&input.description)?;
    match spec_size(&input.spec.children, 1) {
        Some(n) if n <= 200 => {}
        _ => {
            return Err(field(
                "/spec",
                "at most 200 sub-teams, nested at most 10 deep",
            ));
        }
    }
    let mut tx = caller.db().begin().await?;
    let result = async {
        let conn = tx.conn();
        let spec = serde_json::to_value(&input.spec).expect("serialisable");
        diesel::insert_into(team_templates::table)
            .values((
                team_templates::key.eq(&input.key),
                team_templates::name.eq(&name),
                team_templates::description.eq(&description),
                team_templates::spec.eq(&spec),
            ))
            .execute(conn)
            .await?;
        audit::record(
            conn,
            &caller.actor,
            Change {
                action: "team_template.created",
                target_type: "team_template",
                target_id: Some(input.key.clone()),
                data: json!({"name": name, "spec": spec}),
            },
        )
        .await?;
        Ok::<_, ApiError>(())
    }
    .await;
    tx.finish(result).await?;
    Ok(TeamTemplate {
        key: input.key.clone(),
        name,
        description,
        spec: input.spec.clone(),
        builtin: false,
    })
}

/// Inserts one team under `parent` (whose path is `parent_path`).
async fn insert_team(
    conn: &mut AsyncPgConnection,
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
    diesel::insert_into(teams::table)
        .values((
            teams::id.eq(id),
            teams::parent_id.eq(parent.map(|p| p.id)),
            teams::path.eq(&path),
            teams::name.eq(name),
            teams::description.eq(description),
            teams::template.eq(template),
        ))
        .execute(conn)
        .await?;
    the_team(repo::get(conn, id).await?)
}

/// Gives `team` the roles `keys`, checking the caller could hand each out.
async fn grant_team_roles(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    team: Uuid,
    keys: &[String],
) -> ApiResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    caller.require("roles", "assign", Scope::Tenant)?;
    let found: Vec<(Uuid, String)> = roles::table
        .filter(roles::key.eq_any(keys))
        .select((roles::id, roles::key))
        .load(conn)
        .await?;
    if let Some(missing) = keys.iter().find(|k| !found.iter().any(|(_, f)| f == *k)) {
        return Err(field("/role", format!("no role {missing:?}")));
    }
    let ids: Vec<Uuid> = found.iter().map(|(id, _)| *id).collect();
    caller.require_delegable(&crate::rbac::service::closure_perms(conn, &ids).await?)?;
    let rows: Vec<_> = ids
        .iter()
        .map(|r| {
            (
                team_roles::team_id.eq(team),
                team_roles::role_id.eq(*r),
                team_roles::granted_by.eq(Some(caller.user_id())),
            )
        })
        .collect();
    diesel::insert_into(team_roles::table)
        .values(rows)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

fn instantiate<'a>(
    conn: &'a mut AsyncPgConnection,
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
    let mut tx = caller.db().begin().await?;
    let result = async {
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
    }
    .await;
    let team = tx.finish(result).await?;
    if template.is_some() {
        state.perms.invalidate(caller.tenant_id().0).await;
    }
    Ok(team)
}

pub async fn get(db: &TenantDb, id: TeamId) -> ApiResult<Team> {
    let mut tx = db.begin().await?;
    let result = async {
        let row = the_team(repo::get(tx.conn(), id.0).await?)?;
        Ok::<_, ApiError>(repo::views(tx.conn(), vec![row]).await?.remove(0))
    }
    .await;
    tx.finish(result).await
}

/// Teams in creation order after `after`; only children of `parent` when given (`Some(None)`:
/// root teams).
pub async fn list(
    db: &TenantDb,
    parent: Option<Option<Uuid>>,
    after: Option<Uuid>,
    limit: i64,
) -> ApiResult<Vec<Team>> {
    let mut tx = db.begin().await?;
    let result = async {
        let mut q = teams::table
            .select(repo::TeamRow::as_select())
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
        let rows = q.load(tx.conn()).await?;
        Ok::<_, ApiError>(repo::views(tx.conn(), rows).await?)
    }
    .await;
    tx.finish(result).await
}

pub async fn subtree(db: &TenantDb, id: TeamId) -> ApiResult<Vec<Team>> {
    let mut tx = db.begin().await?;
    let result = async {
        the_team(repo::get(tx.conn(), id.0).await?)?;
        let rows = repo::subtree(tx.conn(), id.0).await?;
        Ok::<_, ApiError>(repo::views(tx.conn(), rows).await?)
    }
    .await;
    tx.finish(result).await
}

pub async fn ancestors(db: &TenantDb, id: TeamId) -> ApiResult<Vec<Team>> {
    let mut tx = db.begin().await?;
    let result = async {
        let row = the_team(repo::get(tx.conn(), id.0).await?)?;
        let rows = repo::ancestors(tx.conn(), &row.path).await?;
        Ok::<_, ApiError>(repo::views(tx.conn(), rows).await?)
    }
    .await;
    tx.finish(result).await
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
    let mut tx = caller.db().begin().await?;
    let result = async {
        let conn = tx.conn();
        let before = the_team(repo::get(conn, id.0).await?)?;
        diesel::update(teams::table.find(id.0))
            .set((
                name.as_ref().map(|n| teams::name.eq(n)),
                description.as_ref().map(|d| teams::description.eq(d)),
                teams::updated_at.eq(Utc::now()),
            ))
            .execute(conn)
            .await?;
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
        Ok::<_, ApiError>(repo::views(conn, vec![after]).await?.remove(0))
    }
    .await;
    tx.finish(result).await
}

/// Deletes a team; with `recursive`, its whole subtree, else only a team without sub-teams.
pub async fn delete(
    state: &RbacState,
    caller: &Caller,
    id: TeamId,
    recursive: bool,
) -> ApiResult<()> {
    require_on_team(caller, "delete", id.0)?;
    let mut tx = caller.db().begin().await?;
    let result = async {
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
            diesel::delete(teams::table.find(t.id)).execute(conn).await?;
        }
        record(
            conn,
            caller,
            "team.deleted",
            id.0,
            json!({"teams": sub.iter().map(|t| json!({"id": TeamId(t.id).to_string(), "name": t.name})).collect::<Vec<_>>()}),
        )
        .await
    }
    .await;
    tx.finish(result).await?;
    state.perms.invalidate(caller.tenant_id().0).await;
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
    let mut tx = caller.db().begin().await?;
    let result = async {
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
        diesel::update(teams::table.find(team.id))
            .set(teams::parent_id.eq(new_parent.as_ref().map(|p| p.id)))
            .execute(conn)
            .await?;
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
        Ok::<_, ApiError>(repo::views(conn, vec![after]).await?.remove(0))
    }
    .await;
    let team = tx.finish(result).await?;
    state.perms.invalidate(caller.tenant_id().0).await;
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
    let mut tx = caller.db().begin().await?;
    let result = async {
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
        let role_keys: Vec<String> = team_roles::table
            .inner_join(roles::table)
            .filter(team_roles::team_id.eq(source.id))
            .select(roles::key)
            .load(conn)
            .await?;
        grant_team_roles(conn, caller, target.id, &role_keys).await?;
        // Members.
        let members: Vec<(Uuid, String)> = team_members::table
            .filter(team_members::team_id.eq(source.id))
            .select((team_members::user_id, team_members::team_role))
            .load(conn)
            .await?;
        let existing: Vec<Uuid> = team_members::table
            .filter(team_members::team_id.eq(target.id))
            .select(team_members::user_id)
            .load(conn)
            .await?;
        for (user, role) in &members {
            if existing.contains(user) {
                if role == "lead" {
                    diesel::update(
                        team_members::table
                            .filter(team_members::team_id.eq(target.id))
                            .filter(team_members::user_id.eq(user)),
                    )
                    .set(team_members::team_role.eq("lead"))
                    .execute(conn)
                    .await?;
                }
            } else {
                repo::add_members(conn, target.id, &[*user], role).await?;
            }
        }
        // Sub-teams.
        let children: Vec<TeamRow> = teams::table
            .filter(teams::parent_id.eq(source.id))
            .select(TeamRow::as_select())
            .load(conn)
            .await?;
        for child in &children {
            diesel::update(teams::table.find(child.id))
                .set(teams::parent_id.eq(target.id))
                .execute(conn)
                .await?;
            repo::repath(conn, child.id, child.path.len(), &target.path).await?;
        }
        // Shares: re-point to the target, dropping duplicates and self-shares.
        diesel::sql_query(
            "DELETE FROM team_shares s WHERE s.shared_with = $1 AND (s.team_id = $2 OR EXISTS (
               SELECT 1 FROM team_shares o WHERE o.shared_with = $2
               AND o.resource_type = s.resource_type AND o.resource_id = s.resource_id))",
        )
        .bind::<diesel::sql_types::Uuid, _>(source.id)
        .bind::<diesel::sql_types::Uuid, _>(target.id)
        .execute(conn)
        .await?;
        diesel::sql_query("DELETE FROM team_shares WHERE team_id = $1 AND shared_with = $2")
            .bind::<diesel::sql_types::Uuid, _>(source.id)
            .bind::<diesel::sql_types::Uuid, _>(target.id)
            .execute(conn)
            .await?;
        diesel::update(team_shares::table.filter(team_shares::shared_with.eq(source.id)))
            .set(team_shares::shared_with.eq(target.id))
            .execute(conn)
            .await?;
        diesel::update(team_shares::table.filter(team_shares::team_id.eq(source.id)))
            .set(team_shares::team_id.eq(target.id))
            .execute(conn)
            .await?;
        repo::remove_members(conn, source.id, None).await?;
        diesel::delete(teams::table.find(source.id))
            .execute(conn)
            .await?;
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
        Ok::<_, ApiError>(repo::views(conn, vec![after]).await?.remove(0))
    }
    .await;
    let team = tx.finish(result).await?;
    state.perms.invalidate(caller.tenant_id().0).await;
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
    let mut tx = caller.db().begin().await?;
    let result = async {
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
        let members: Vec<(Uuid, String)> = team_members::table
            .filter(team_members::team_id.eq(source.id))
            .filter(team_members::user_id.eq_any(&wanted))
            .select((team_members::user_id, team_members::team_role))
            .load(conn)
            .await?;
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
            let keys: Vec<String> = team_roles::table
                .inner_join(roles::table)
                .filter(team_roles::team_id.eq(source.id))
                .select(roles::key)
                .load(conn)
                .await?;
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
        Ok::<_, ApiError>(repo::views(conn, vec![row]).await?.remove(0))
    }
    .await;
    let team = tx.finish(result).await?;
    state.perms.invalidate(caller.tenant_id().0).await;
    Ok(team)
}

pub async fn members(db: &TenantDb, id: TeamId) -> ApiResult<Vec<Member>> {
    let mut tx = db.begin().await?;
    let result = async {
        the_team(repo::get(tx.conn(), id.0).await?)?;
        Ok::<_, ApiError>(repo::members(tx.conn(), id.0).await?)
    }
    .await;
    tx.finish(result).await
}

pub async fn add_members(
    state: &RbacState,
    caller: &Caller,
    id: TeamId,
    input: &AddMembers,
) -> ApiResult<Vec<Member>> {
    require_on_team(caller, "manage_members", id.0)?;
    let role = input.team_role.clone().unwrap_or_else(|| "member".into());
    check_team_role(&role, "/team_role")?;
    if input.user_ids.is_empty() || input.user_ids.len() > 1000 {
        return Err(field("/user_ids", "must list 1-1000 users"));
    }
    let mut ids: Vec<Uuid> = input.user_ids.iter().map(|u| u.0).collect();
    ids.sort();
    ids.dedup();
    let mut tx = caller.db().begin().await?;
    let result = async {
        let conn = tx.conn();
        the_team(repo::get(conn, id.0).await?)?;
        let live: Vec<Uuid> = users::table
            .filter(users::id.eq_any(&ids))
            .filter(users::status.eq("active"))
            .select(users::id)
            .load(conn)
            .await?;
        if let Some((i, _)) = input
            .user_ids
            .iter()
            .enumerate()
            .find(|(_, u)| !live.contains(&u.0))
        {
            return Err(field(&format!("/user_ids/{i}"), "no such active user"));
        }
        repo::add_members(conn, id.0, &ids, &role).await?;
        record(
            conn,
            caller,
            "team.members_added",
            id.0,
            json!({"users": ids.iter().map(|u| UserId(*u).to_string()).collect::<Vec<_>>(), "team_role": role}),
        )
        .await?;
        Ok::<_, ApiError>(repo::members(conn, id.0).await?)
    }
    .await;
    let out = tx.finish(result).await?;
    state.perms.invalidate(caller.tenant_id().0).await;
    Ok(out)
}

pub async fn set_member_role(
    caller: &Caller,
    id: TeamId,
    user: UserId,
    role: &str,
) -> ApiResult<Member> {
    require_on_team(caller, "manage_members", id.0)?;
    check_team_role(role, "/team_role")?;
    let mut tx = caller.db().begin().await?;
    let result = async {
        let conn = tx.conn();
        let n = diesel::update(
            team_members::table
                .filter(team_members::team_id.eq(id.0))
                .filter(team_members::user_id.eq(user.0)),
        )
        .set(team_members::team_role.eq(role))
        .execute(conn)
        .await?;
        if n == 0 {
            return Err(ApiError::not_found("team member"));
        }
        record(
            conn,
            caller,
            "team.member_role_changed",
            id.0,
            json!({"user": user.to_string(), "team_role": role}),
        )
        .await?;
        repo::members(conn, id.0)
            .await?
            .into_iter()
            .find(|m| m.user_id == user)
            .ok_or_else(|| ApiError::not_found("team member"))
    }
    .await;
    tx.finish(result).await
}

pub async fn remove_member(
    state: &RbacState,
    caller: &Caller,
    id: TeamId,
    user: UserId,
) -> ApiResult<()> {
    require_on_team(caller, "manage_members", id.0)?;
    let mut tx = caller.db().begin().await?;
    let result = async {
        let conn = tx.conn();
        if repo::remove_members(conn, id.0, Some(&[user.0]))
            .await?
            .is_empty()
        {
            return Err(ApiError::not_found("team member"));
        }
        record(
            conn,
            caller,
            "team.member_removed",
            id.0,
            json!({"user": user.to_string()}),
        )
        .await
    }
    .await;
    tx.finish(result).await?;
    state.perms.invalidate(caller.tenant_id().0).await;
    Ok(())
}

pub async fn team_roles(db: &TenantDb, id: TeamId) -> ApiResult<Vec<String>> {
    let mut tx = db.begin().await?;
    let result = async {
        the_team(repo::get(tx.conn(), id.0).await?)?;
        Ok::<_, ApiError>(
            team_roles::table
                .inner_join(roles::table)
                .filter(team_roles::team_id.eq(id.0))
                .select(roles::key)
                .order(roles::key.asc())
                .load(tx.conn())
                .await?,
        )
    }
    .await;
    tx.finish(result).await
}

pub async fn add_team_role(
    state: &RbacState,
    caller: &Caller,
    id: TeamId,
    key: &str,
) -> ApiResult<Vec<String>> {
    let mut tx = caller.db().begin().await?;
    let result = async {
        let conn = tx.conn();
        the_team(repo::get(conn, id.0).await?)?;
        grant_team_roles(conn, caller, id.0, &[key.to_string()]).await?;
        record(
            conn,
            caller,
            "team.role_granted",
            id.0,
            json!({"role": key}),
        )
        .await?;
        Ok::<_, ApiError>(())
    }
    .await;
    tx.finish(result).await?;
    state.perms.invalidate(caller.tenant_id().0).await;
    team_roles(caller.db(), id).await
}

pub async fn remove_team_role(
    state: &RbacState,
    caller: &Caller,
    id: TeamId,
    key: &str,
) -> ApiResult<()> {
    caller.require("roles", "assign", Scope::Tenant)?;
    let mut tx = caller.db().begin().await?;
    let result = async {
        let conn = tx.conn();
        let role: Option<Uuid> = roles::table
            .filter(roles::key.eq(key))
            .select(roles::id)
            .first(conn)
            .await
            .optional()?;
        let Some(role) = role else {
            return Err(ApiError::not_found("role"));
        };
        caller.require_delegable(&crate::rbac::service::closure_perms(conn, &[role]).await?)?;
        let n = diesel::delete(
            team_roles::table
                .filter(team_roles::team_id.eq(id.0))
                .filter(team_roles::role_id.eq(role)),
        )
        .execute(conn)
        .await?;
        if n == 0 {
            return Err(ApiError::not_found("team role"));
        }
        record(
            conn,
            caller,
            "team.role_revoked",
            id.0,
            json!({"role": key}),
        )
        .await
    }
    .await;
    tx.finish(result).await?;
    state.perms.invalidate(caller.tenant_id().0).await;
    Ok(())
}

pub async fn shares(db: &TenantDb, id: TeamId) -> ApiResult<Vec<Share>> {
    let mut tx = db.begin().await?;
    let result = async {
        the_team(repo::get(tx.conn(), id.0).await?)?;
        Ok::<_, ApiError>(repo::shares_of(tx.conn(), id.0).await?)
    }
    .await;
    tx.finish(result).await
}

pub async fn add_share(caller: &Caller, id: TeamId, input: &NewShare) -> ApiResult<Share> {
    require_on_team(caller, "share", id.0)?;
    let mut errors = Vec::new();
    let rt = &input.resource_type;
    let rt_ok = rt.len() <= 63
        && rt.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && rt
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !rt_ok {
        errors.push(FieldError {
            pointer: "/resource_type".into(),
            message: "must be 1-63 of a-z, 0-9 and _".into(),
        });
    }
    if !(1..=200).contains(&input.resource_id.chars().count()) {
        errors.push(FieldError {
            pointer: "/resource_id".into(),
            message: "must be 1-200 characters".into(),
        });
    }
    if !matches!(input.access.as_str(), "read" | "write") {
        errors.push(FieldError {
            pointer: "/access".into(),
            message: "must be read or write".into(),
        });
    }
    if input.shared_with == id {
        errors.push(FieldError {
            pointer: "/shared_with".into(),
            message: "a team cannot share with itself".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut tx = caller.db().begin().await?;
    let result = async {
        let conn = tx.conn();
        the_team(repo::get(conn, id.0).await?)?;
        if repo::get(conn, input.shared_with.0).await?.is_none() {
            return Err(field("/shared_with", "no such team"));
        }
        let sid = Uuid::now_v7();
        diesel::insert_into(team_shares::table)
            .values((
                team_shares::id.eq(sid),
                team_shares::team_id.eq(id.0),
                team_shares::shared_with.eq(input.shared_with.0),
                team_shares::resource_type.eq(&input.resource_type),
                team_shares::resource_id.eq(&input.resource_id),
                team_shares::access.eq(&input.access),
                team_shares::created_by.eq(Some(caller.user_id())),
            ))
            .execute(conn)
            .await?;
        record(
            conn,
            caller,
            "team.shared",
            id.0,
            json!({"share": ShareId(sid).to_string(), "with": input.shared_with.to_string(),
                   "resource_type": input.resource_type, "resource_id": input.resource_id, "access": input.access}),
        )
        .await?;
        Ok::<_, ApiError>(
            team_shares::table
                .find(sid)
                .select(repo::ShareRow::as_select())
                .first(conn)
                .await?
                .into(),
        )
    }
    .await;
    tx.finish(result).await
}

pub async fn remove_share(caller: &Caller, id: TeamId, share: ShareId) -> ApiResult<()> {
    require_on_team(caller, "share", id.0)?;
    let mut tx = caller.db().begin().await?;
    let result = async {
        let conn = tx.conn();
        let n = diesel::delete(
            team_shares::table
                .filter(team_shares::id.eq(share.0))
                .filter(team_shares::team_id.eq(id.0)),
        )
        .execute(conn)
        .await?;
        if n == 0 {
            return Err(ApiError::not_found("share"));
        }
        record(
            conn,
            caller,
            "team.unshared",
            id.0,
            json!({"share": share.to_string()}),
        )
        .await
    }
    .await;
    tx.finish(result).await
}

/// Analytics for `only` (or every team), growth over the last `months` months.
pub async fn analytics(
    db: &TenantDb,
    only: Option<TeamId>,
    months: u32,
) -> ApiResult<Vec<TeamAnalytics>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: Uuid,
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        members: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        members_in_subtree: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        sub_teams: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        active: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        actions: i64,
    }
    #[derive(QueryableByName)]
    struct Growth {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        team_id: Uuid,
        #[diesel(sql_type = diesel::sql_types::Text)]
        month: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        joined: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        left: i64,
    }
    let only = only.map(|t| t.0);
    let mut tx = db.begin().await?;
    let result = async {
        let conn = tx.conn();
        if let Some(t) = only {
            the_team(repo::get(conn, t).await?)?;
        }
        let rows: Vec<Row> = diesel::sql_query(
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
        .bind::<diesel::sql_types::Nullable<diesel::sql_types::Uuid>, _>(only)
        .load(conn)
        .await?;
        let growth: Vec<Growth> = diesel::sql_query(
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
        .bind::<diesel::sql_types::Nullable<diesel::sql_types::Uuid>, _>(only)
        .bind::<diesel::sql_types::Integer, _>(months.saturating_sub(1) as i32)
        .load(conn)
        .await?;
        Ok::<_, ApiError>((rows, growth))
    }
    .await;
    let (rows, growth) = tx.finish(result).await?;
    // Every month of the window, oldest first, zeros included.
    let now = Utc::now();
    let month_keys: Vec<String> = (0..months)
        .rev()
        .map(|back| {
            let total = now.year() * 12 + now.month0() as i32 - back as i32;
            format!(
                "{:04}-{:02}",
                total.div_euclid(12),
                total.rem_euclid(12) + 1
            )
        })
        .collect();
    let mut by_team: HashMap<Uuid, HashMap<String, (i64, i64)>> = HashMap::new();
    for g in growth {
        by_team
            .entry(g.team_id)
            .or_default()
            .insert(g.month, (g.joined, g.left));
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let g = by_team.get(&r.id);
            TeamAnalytics {
                team_id: TeamId(r.id),
                name: r.name,
                members: r.members,
                members_in_subtree: r.members_in_subtree,
                sub_teams: r.sub_teams,
                active_members_30d: r.active,
                actions_30d: r.actions,
                growth: month_keys
                    .iter()
                    .map(|m| {
                        let (joined, left) = g.and_then(|g| g.get(m)).copied().unwrap_or((0, 0));
                        MonthGrowth {
                            month: m.clone(),
                            joined,
                            left,
                        }
                    })
                    .collect(),
            }
        })
        .collect())
}

/// The whole tree with member counts and leads.
pub async fn chart(db: &TenantDb) -> ApiResult<Vec<ChartNode>> {
    let mut tx = db.begin().await?;
    let result = async {
        let conn = tx.conn();
        let rows = repo::all(conn).await?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let counts = repo::member_counts(conn, &ids).await?;
        let leads: Vec<(Uuid, Option<String>, Option<String>)> = team_members::table
            .inner_join(users::table)
            .filter(team_members::team_role.eq("lead"))
            .select((team_members::team_id, users::display_name, users::username))
            .order(users::username.asc())
            .load(conn)
            .await?;
        let mut lead_map: HashMap<Uuid, Vec<String>> = HashMap::new();
        for (team, display, username) in leads {
            lead_map
                .entry(team)
                .or_default()
                .push(display.or(username).unwrap_or_else(|| "?".into()));
        }
        Ok::<_, ApiError>(super::chart::build(&rows, &counts, &lead_map))
    }
    .await;
    tx.finish(result).await
}

/// The access `user_teams` have to a resource through shares (for resource modules).
pub async fn shared_access(
    conn: &mut AsyncPgConnection,
    user_teams: &[Uuid],
    resource_type: &str,
    resource_id: &str,
) -> ApiResult<Option<String>> {
    Ok(repo::shared_access(conn, user_teams, resource_type, resource_id).await?)
}
