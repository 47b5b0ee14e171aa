//! Custom grants and denies on one user: listing, adding (checked against the catalog; both
//! need the permission in hand) and removing. Every change is audited in its transaction and
//! invalidates cached permissions after commit. Never runs SQL itself.

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::catalog::catalog;
use super::rules::{audit, existing_users, text_field, validate_perms};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, FieldError, found};
use crate::ids::{GrantId, UserId};
use crate::rbac::perm::Perm;
use crate::rbac::repo::{self, GrantRow, NewGrantRow};
use crate::rbac::{Caller, Grant, NewGrant, RbacState};

fn grant_view(r: GrantRow) -> Grant {
    Grant {
        id: GrantId(r.id),
        user_id: UserId(r.user_id),
        permission: r.permission,
        effect: r.effect,
        reason: r.reason,
        granted_by: r.granted_by.map(UserId),
        created_at: r.created_at,
        expires_at: r.expires_at,
    }
}

pub async fn grants_of(db: &TenantDb, user: UserId) -> ApiResult<Vec<Grant>> {
    let rows = db
        .transaction(async |tx| Ok::<_, ApiError>(repo::grants_of(tx.conn(), user.0).await?))
        .await?;
    Ok(rows.into_iter().map(grant_view).collect())
}

pub async fn add_grant(
    state: &RbacState,
    caller: &Caller,
    user: UserId,
    input: &NewGrant,
) -> ApiResult<Grant> {
    let grant = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let catalog = catalog(conn).await?;
            let mut errors = Vec::new();
            let perm = validate_perms(
                &catalog,
                std::slice::from_ref(&input.permission),
                "/permission",
                &mut errors,
            );
            if !matches!(input.effect.as_str(), "allow" | "deny") {
                errors.push(FieldError {
                    pointer: "/effect".into(),
                    message: "must be allow or deny".into(),
                });
            }
            let reason = text_field(&input.reason, 500, 0, "/reason", &mut errors);
            if input.expires_at.is_some_and(|e| e <= Utc::now()) {
                errors.push(FieldError {
                    pointer: "/expires_at".into(),
                    message: "must be in the future".into(),
                });
            }
            if !errors.is_empty() {
                return Err(ApiError::validation(errors));
            }
            // Granting and denying both need the permission in hand.
            caller.require_delegable(&perm)?;
            existing_users(conn, &[user.0])
                .await
                .map_err(|_| ApiError::not_found("user"))?;
            let id = Uuid::now_v7();
            repo::insert_grant(
                conn,
                &NewGrantRow {
                    id,
                    user: user.0,
                    permission: perm[0].to_string(),
                    effect: &input.effect,
                    reason: &reason,
                    granted_by: caller.user_id(),
                    expires_at: input.expires_at,
                },
            )
            .await?;
            let row = repo::grant(conn, id).await?;
            audit(
                conn,
                &caller.actor,
                if input.effect == "allow" { "permission.granted" } else { "permission.denied" },
                "user",
                user.to_string(),
                json!({"grant": GrantId(id).to_string(), "permission": row.permission, "effect": row.effect,
                       "reason": row.reason, "expires_at": row.expires_at}),
            )
            .await?;
            Ok(grant_view(row))
        })
        .await?;
    state.perms.invalidate(caller.tenant_id()).await;
    Ok(grant)
}

pub async fn remove_grant(
    state: &RbacState,
    caller: &Caller,
    user: UserId,
    grant: GrantId,
) -> ApiResult<()> {
    caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let row = found(repo::grant_of(conn, user.0, grant.0).await?, "grant")?;
            if let Ok(p) = row.permission.parse::<Perm>() {
                caller.require_delegable([&p])?;
            }
            repo::delete_grant(conn, grant.0).await?;
            audit(
                conn,
                &caller.actor,
                "permission.revoked",
                "user",
                user.to_string(),
                json!({"grant": grant.to_string(), "permission": row.permission, "effect": row.effect}),
            )
            .await
        })
        .await?;
    state.perms.invalidate(caller.tenant_id()).await;
    Ok(())
}
