//! Roles: listing and reading them with their parents, creating (own permissions, parents or a
//! template's copy), changing and deleting them. Every change runs under the tenant's role
//! lock (cycle checks must see each other), hands out nothing the caller does not hold, is
//! audited in its transaction and invalidates cached permissions after commit. The protected
//! owner role is never changed or deleted. Never runs SQL itself.

use std::collections::BTreeSet;

use diesel_async::AsyncPgConnection;
use serde_json::json;
use uuid::Uuid;

use super::catalog::catalog;
use super::rules::{audit, is_key, text_field, validate_perms};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError, found};
use crate::ids::RoleId;
use crate::rbac::perm::{Perm, TEMPLATES};
use crate::rbac::repo::{self, NewRoleRow, RoleRow};
use crate::rbac::{Caller, NewRole, RbacState, Role, RolePatch};

fn role_view(row: RoleRow, parents: Vec<String>) -> Role {
    Role {
        id: RoleId(row.id),
        key: row.key,
        name: row.name,
        description: row.description,
        permissions: row.permissions,
        parents,
        template: row.template,
        is_default: row.is_default,
        protected: row.protected,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

async fn role_views(conn: &AsyncPgConnection, rows: Vec<RoleRow>) -> ApiResult<Vec<Role>> {
    Ok(with_parents(rows, &repo::parent_keys(conn).await?))
}

/// Role views from rows and every (role id, parent key) edge.
fn with_parents(rows: Vec<RoleRow>, edges: &[(Uuid, String)]) -> Vec<Role> {
    rows.into_iter()
        .map(|r| {
            let parents = edges
                .iter()
                .filter(|(id, _)| *id == r.id)
                .map(|(_, k)| k.clone())
                .collect();
            role_view(r, parents)
        })
        .collect()
}

/// Every role with its parents (one round trip: both reads are pipelined).
pub async fn list_roles(db: &TenantDb) -> ApiResult<Vec<Role>> {
    db.read(async |conn| {
        let (rows, edges) =
            futures::future::try_join(repo::list_roles(conn), repo::parent_keys(conn)).await?;
        Ok(with_parents(rows, &edges))
    })
    .await
}

/// The role `key` with its parents (one round trip); 404 when there is none.
pub async fn get_role(db: &TenantDb, key: &str) -> ApiResult<Role> {
    db.read(async |conn| {
        let (row, edges) =
            futures::future::try_join(repo::role_by_key(conn, key), repo::parent_keys(conn))
                .await?;
        Ok(with_parents(vec![found(row, "role")?], &edges).remove(0))
    })
    .await
}

/// The role `key` with its parents, in the caller's transaction; 404 when there is none.
pub(super) async fn get_in(conn: &mut AsyncPgConnection, key: &str) -> ApiResult<Role> {
    let row = found(repo::role_by_key(conn, key).await?, "role")?;
    Ok(role_views(conn, vec![row]).await?.remove(0))
}

/// Locks the role graph and loads the role `key` for a change; the protected owner role
/// answers 409 (it cannot be `what`).
async fn editable(conn: &mut AsyncPgConnection, key: &str, what: &str) -> ApiResult<Role> {
    repo::lock_roles(conn).await?;
    let role = get_in(conn, key).await?;
    if role.protected {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("the owner role cannot be {what}"),
        ));
    }
    Ok(role)
}

/// Resolves parent keys to ids, refusing unknown ones.
async fn parent_ids(conn: &mut AsyncPgConnection, keys: &[String]) -> ApiResult<Vec<RoleRow>> {
    let mut unique: Vec<String> = keys.to_vec();
    unique.sort();
    unique.dedup();
    let rows = repo::roles_by_keys(conn, &unique).await?;
    if let Some(missing) = unique.iter().find(|k| !rows.iter().any(|r| &r.key == *k)) {
        return Err(ApiError::validation(vec![FieldError {
            pointer: "/parents".into(),
            message: format!("no role {missing:?}"),
        }]));
    }
    Ok(rows)
}

/// Every permission roles carry with their parents: what holding them hands out.
pub async fn closure_perms(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> ApiResult<Vec<Perm>> {
    let roles = repo::role_closure(conn, ids).await?;
    let mut all: BTreeSet<Perm> = BTreeSet::new();
    for r in roles.values() {
        all.extend(r.permissions.iter().cloned());
    }
    Ok(all.into_iter().collect())
}

fn role_json(r: &Role) -> serde_json::Value {
    json!({"key": r.key, "name": r.name, "permissions": r.permissions, "parents": r.parents,
           "is_default": r.is_default})
}

pub async fn create_role(state: &RbacState, caller: &Caller, input: &NewRole) -> ApiResult<Role> {
    let role = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let catalog = catalog(conn).await?;
            let mut errors = Vec::new();
            if !is_key(&input.key) {
                errors.push(FieldError {
                    pointer: "/key".into(),
                    message: "must be 1-63 of a-z, 0-9, _ and -, starting with a letter".into(),
                });
            }
            let template = match &input.from_template {
                Some(t) => match TEMPLATES.iter().find(|x| x.0 == t) {
                    Some(x) => Some(x),
                    None => {
                        errors.push(FieldError {
                            pointer: "/from_template".into(),
                            message: format!("no template {t:?}"),
                        });
                        None
                    }
                },
                None => None,
            };
            let perm_strings: Vec<String> = match (&input.permissions, template) {
                (Some(p), _) => p.clone(),
                (None, Some(t)) => t.3.iter().map(|s| s.to_string()).collect(),
                (None, None) => Vec::new(),
            };
            let perms = validate_perms(&catalog, &perm_strings, "/permissions", &mut errors);
            let name = text_field(
                input
                    .name
                    .as_deref()
                    .or(template.map(|t| t.1))
                    .unwrap_or(&input.key),
                100,
                1,
                "/name",
                &mut errors,
            );
            let description = text_field(
                input
                    .description
                    .as_deref()
                    .or(template.map(|t| t.2))
                    .unwrap_or(""),
                1000,
                0,
                "/description",
                &mut errors,
            );
            if !errors.is_empty() {
                return Err(ApiError::validation(errors));
            }
            repo::lock_roles(conn).await?;
            let parents = parent_ids(conn, &input.parents).await?;
            let parent_ids: Vec<Uuid> = parents.iter().map(|r| r.id).collect();
            let mut handed = closure_perms(conn, &parent_ids).await?;
            handed.extend(perms.iter().cloned());
            caller.require_delegable(&handed)?;
            let id = Uuid::now_v7();
            repo::insert_role(
                conn,
                &NewRoleRow {
                    id,
                    key: &input.key,
                    name: &name,
                    description: &description,
                    permissions: perms.iter().map(|p| p.to_string()).collect(),
                    template: input.from_template.as_deref(),
                    is_default: input.is_default,
                },
            )
            .await?;
            repo::set_parents(conn, id, &parent_ids).await?;
            let role = get_in(conn, &input.key).await?;
            audit(
                conn,
                &caller.actor,
                "role.created",
                "role",
                role.id.to_string(),
                json!({"after": role_json(&role)}),
            )
            .await?;
            Ok(role)
        })
        .await?;
    state.perms.invalidate(caller.tenant_id()).await;
    Ok(role)
}

pub async fn update_role(
    state: &RbacState,
    caller: &Caller,
    key: &str,
    patch: &RolePatch,
) -> ApiResult<Role> {
    let role = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let before = editable(conn, key, "changed").await?;
            let catalog = catalog(conn).await?;
            let mut errors = Vec::new();
            let perms = patch
                .permissions
                .as_ref()
                .map(|p| validate_perms(&catalog, p, "/permissions", &mut errors));
            let name = patch
                .name
                .as_deref()
                .map(|n| text_field(n, 100, 1, "/name", &mut errors));
            let description = patch
                .description
                .as_deref()
                .map(|d| text_field(d, 1000, 0, "/description", &mut errors));
            if !errors.is_empty() {
                return Err(ApiError::validation(errors));
            }
            // What the role hands out now, and will: the caller must hold both.
            let mut handed = closure_perms(conn, &[before.id.0]).await?;
            let new_parents = match &patch.parents {
                Some(keys) => {
                    let rows = parent_ids(conn, keys).await?;
                    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
                    for p in &ids {
                        if repo::reaches(conn, *p, before.id.0).await? {
                            return Err(ApiError::validation(vec![FieldError {
                                pointer: "/parents".into(),
                                message: "this parent would make the role inherit from itself"
                                    .into(),
                            }]));
                        }
                    }
                    handed.extend(closure_perms(conn, &ids).await?);
                    Some(ids)
                }
                None => None,
            };
            if let Some(p) = &perms {
                handed.extend(p.iter().cloned());
            }
            caller.require_delegable(&handed)?;
            repo::update_role(
                conn,
                before.id.0,
                name,
                description,
                perms.map(|p| p.iter().map(|x| x.to_string()).collect()),
                patch.is_default,
            )
            .await?;
            if let Some(ids) = new_parents {
                repo::set_parents(conn, before.id.0, &ids).await?;
            }
            let after = get_in(conn, key).await?;
            audit(
                conn,
                &caller.actor,
                "role.updated",
                "role",
                after.id.to_string(),
                json!({"before": role_json(&before), "after": role_json(&after)}),
            )
            .await?;
            Ok(after)
        })
        .await?;
    state.perms.invalidate(caller.tenant_id()).await;
    Ok(role)
}

pub async fn delete_role(state: &RbacState, caller: &Caller, key: &str) -> ApiResult<()> {
    caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let before = editable(conn, key, "deleted").await?;
            let handed = closure_perms(conn, &[before.id.0]).await?;
            caller.require_delegable(&handed)?;
            repo::delete_role(conn, before.id.0).await?;
            audit(
                conn,
                &caller.actor,
                "role.deleted",
                "role",
                before.id.to_string(),
                json!({"before": role_json(&before)}),
            )
            .await
        })
        .await?;
    state.perms.invalidate(caller.tenant_id()).await;
    Ok(())
}
