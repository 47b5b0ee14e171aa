//! Roles held by users directly: bulk assignment (all or nothing, re-assigning renews the
//! expiry), removal (never of the last owner), who holds a role and what a user holds, and the
//! platform admin's bootstrap assignment. Every change hands out nothing the caller does not
//! hold (except the platform's), is audited in its transaction and invalidates cached
//! permissions after commit. Never runs SQL itself.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::roles::{closure_perms, get_in};
use super::rules::{audit, existing_users};
use crate::audit::Actor;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::ids::{TenantId, UserId};
use crate::rbac::repo;
use crate::rbac::{Assigned, Caller, HeldRole, RbacState};

/// Assigns `key` to many users at once (all or nothing); re-assigning renews the expiry.
pub async fn assign(
    state: &RbacState,
    caller: &Caller,
    key: &str,
    user_ids: &[UserId],
    expires_at: Option<DateTime<Utc>>,
) -> ApiResult<Assigned> {
    if user_ids.is_empty() || user_ids.len() > 1000 {
        return Err(ApiError::validation(vec![FieldError {
            pointer: "/user_ids".into(),
            message: "must list 1-1000 users".into(),
        }]));
    }
    if expires_at.is_some_and(|e| e <= Utc::now()) {
        return Err(ApiError::validation(vec![FieldError {
            pointer: "/expires_at".into(),
            message: "must be in the future".into(),
        }]));
    }
    let mut ids: Vec<Uuid> = user_ids.iter().map(|u| u.0).collect();
    ids.sort();
    ids.dedup();
    let out = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let role = get_in(conn, key).await?;
            caller.require_delegable(&closure_perms(conn, &[role.id.0]).await?)?;
            existing_users(conn, &ids).await?;
            repo::assign(conn, role.id.0, &ids, caller.user_id(), expires_at).await?;
            audit(
                conn,
                &caller.actor,
                "role.assigned",
                "role",
                role.id.to_string(),
                json!({"role": role.key, "users": ids.iter().map(|u| UserId(*u).to_string()).collect::<Vec<_>>(),
                       "expires_at": expires_at}),
            )
            .await?;
            Ok::<_, ApiError>(Assigned {
                assigned: ids.len(),
            })
        })
        .await?;
    state.perms.invalidate(caller.tenant_id()).await;
    Ok(out)
}

pub async fn unassign(
    state: &RbacState,
    caller: &Caller,
    key: &str,
    user: UserId,
) -> ApiResult<()> {
    caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            repo::lock_roles(conn).await?;
            let role = get_in(conn, key).await?;
            caller.require_delegable(&closure_perms(conn, &[role.id.0]).await?)?;
            if role.protected && repo::holder_count(conn, role.id.0).await? <= 1 {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    "the last owner cannot be removed; make someone else owner first",
                ));
            }
            if repo::unassign(conn, role.id.0, user.0).await? == 0 {
                return Err(ApiError::not_found("role assignment"));
            }
            audit(
                conn,
                &caller.actor,
                "role.unassigned",
                "role",
                role.id.to_string(),
                json!({"role": role.key, "user": user.to_string()}),
            )
            .await
        })
        .await?;
    state.perms.invalidate(caller.tenant_id()).await;
    Ok(())
}

/// Users holding `key` directly.
pub async fn holders(db: &TenantDb, key: &str) -> ApiResult<Vec<(UserId, Option<DateTime<Utc>>)>> {
    db.transaction(async |tx| {
        let conn = tx.conn();
        let role = get_in(conn, key).await?;
        let rows = repo::holders(conn, role.id.0).await?;
        Ok(rows.into_iter().map(|(u, e)| (UserId(u), e)).collect())
    })
    .await
}

pub async fn roles_of(db: &TenantDb, user: UserId) -> ApiResult<Vec<HeldRole>> {
    let rows = db
        .transaction(async |tx| Ok::<_, ApiError>(repo::roles_of(tx.conn(), user.0).await?))
        .await?;
    Ok(rows
        .into_iter()
        .map(|(role, expires_at)| HeldRole { role, expires_at })
        .collect())
}

/// Platform-admin bootstrap: gives `user` the role `key` in a tenant, bypassing delegation
/// (the platform token outranks every tenant role). Audited as the platform.
pub async fn platform_assign(
    state: &RbacState,
    db: &TenantDb,
    tenant: TenantId,
    key: &str,
    user: UserId,
) -> ApiResult<()> {
    db.transaction(async |tx| {
        let conn = tx.conn();
        let role = get_in(conn, key).await?;
        existing_users(conn, &[user.0])
            .await
            .map_err(|_| ApiError::not_found("user"))?;
        repo::assign_without_expiry(conn, role.id.0, user.0).await?;
        audit(
            conn,
            &Actor::platform(&state.audit_recent, tenant, db),
            "role.assigned",
            "role",
            role.id.to_string(),
            json!({"role": role.key, "users": [user.to_string()]}),
        )
        .await
    })
    .await?;
    state.perms.invalidate(tenant).await;
    Ok(())
}
