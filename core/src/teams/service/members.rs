//! Members of a team (add in bulk, change their team role, remove) and the roles given to a
//! team, which reach its members and every team below it. Every change is audited in its
//! transaction; those that change who holds what invalidate cached permissions after commit.
//! Never grants a role the caller could not grant directly; never runs SQL itself.

use diesel_async::AsyncPgConnection;
use serde_json::json;
use uuid::Uuid;

use super::rules::{check_team_role, field, record, require_on_team, the_team};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult};
use crate::ids::{TeamId, UserId};
use crate::rbac::perm::Scope;
use crate::rbac::{Caller, RbacState};
use crate::teams::repo;
use crate::teams::{AddMembers, Member};

/// Gives `team` the roles `keys`, checking the caller could hand each out.
pub(super) async fn grant_team_roles(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    team: Uuid,
    keys: &[String],
) -> ApiResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    caller.require("roles", "assign", Scope::Tenant)?;
    let found = repo::roles_by_keys(conn, keys).await?;
    if let Some(missing) = keys.iter().find(|k| !found.iter().any(|(_, f)| f == *k)) {
        return Err(field("/role", format!("no role {missing:?}")));
    }
    let ids: Vec<Uuid> = found.iter().map(|(id, _)| *id).collect();
    caller.require_delegable(&crate::rbac::service::closure_perms(conn, &ids).await?)?;
    repo::grant_roles(conn, team, &ids, caller.user_id()).await?;
    Ok(())
}

pub async fn members(db: &TenantDb, id: TeamId) -> ApiResult<Vec<Member>> {
    db.transaction(async |tx| {
        the_team(repo::get(tx.conn(), id.0).await?)?;
        Ok::<_, ApiError>(repo::members(tx.conn(), id.0).await?)
    })
    .await
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
    let out = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            the_team(repo::get(conn, id.0).await?)?;
            let live = repo::active_users(conn, &ids).await?;
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
        })
        .await?;
    state.perms.invalidate(caller.tenant_id()).await;
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
    caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            if repo::set_member_role(conn, id.0, user.0, role).await? == 0 {
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
        })
        .await
}

pub async fn remove_member(
    state: &RbacState,
    caller: &Caller,
    id: TeamId,
    user: UserId,
) -> ApiResult<()> {
    require_on_team(caller, "manage_members", id.0)?;
    caller
        .db()
        .transaction(async |tx| {
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
        })
        .await?;
    state.perms.invalidate(caller.tenant_id()).await;
    Ok(())
}

pub async fn team_roles(db: &TenantDb, id: TeamId) -> ApiResult<Vec<String>> {
    db.transaction(async |tx| {
        the_team(repo::get(tx.conn(), id.0).await?)?;
        Ok::<_, ApiError>(repo::role_keys(tx.conn(), id.0).await?)
    })
    .await
}

pub async fn add_team_role(
    state: &RbacState,
    caller: &Caller,
    id: TeamId,
    key: &str,
) -> ApiResult<Vec<String>> {
    caller
        .db()
        .transaction(async |tx| {
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
            .await
        })
        .await?;
    state.perms.invalidate(caller.tenant_id()).await;
    team_roles(caller.db(), id).await
}

pub async fn remove_team_role(
    state: &RbacState,
    caller: &Caller,
    id: TeamId,
    key: &str,
) -> ApiResult<()> {
    caller.require("roles", "assign", Scope::Tenant)?;
    caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let Some(role) = repo::role_id(conn, key).await? else {
                return Err(ApiError::not_found("role"));
            };
            caller.require_delegable(&crate::rbac::service::closure_perms(conn, &[role]).await?)?;
            if repo::revoke_role(conn, id.0, role).await? == 0 {
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
        })
        .await?;
    state.perms.invalidate(caller.tenant_id()).await;
    Ok(())
}
