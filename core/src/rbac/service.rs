//! RBAC use cases: effective permissions through the caches, role and grant changes with
//! validation, delegation checks, audit and invalidation.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::json;
use sha2::Digest;
use uuid::Uuid;

use super::RbacState;
use super::perm::{Catalog, Effective, Perm, Scope, TEMPLATES};
use super::repo::{self, GrantRow, RoleRow};
use super::{
    Assigned, Caller, CatalogEntry, CheckItem, CheckOutcome, Explanation, Grant, NewGrant, NewRole,
    Role, RolePatch, RoleTemplate, UserPermissions,
};
use crate::audit::{self, Actor, Change};
use crate::auth::token::Principal;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError, found};
use crate::ids::{GrantId, RoleId, UserId};
use crate::schema::tenant::{roles, user_grants, user_roles, users};
use crate::tenancy::cache::ResolvedTenant;
use crate::tenancy::model::IdentityMode;

/// The identity-provider roles that count for this request: only a tenant's own realm speaks
/// for it (an organization's realm is shared by the region's tenants).
pub fn idp_roles<'a>(tenant: &ResolvedTenant, principal: &'a Principal) -> &'a [String] {
    if tenant.org_alias.is_none()
        && tenant.tenant.identity.mode == IdentityMode::Realm
        && principal.key_scopes.is_none()
    {
        &principal.roles
    } else {
        &[]
    }
}

fn idp_key(roles: &[String]) -> u64 {
    if roles.is_empty() {
        return 0;
    }
    let mut sorted: Vec<&String> = roles.iter().collect();
    sorted.sort();
    let mut h = sha2::Sha256::new();
    for r in sorted {
        h.update(r.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// `user`'s effective permissions: from L1, else L2, else the database (then cached).
pub async fn effective(
    state: &RbacState,
    tenant: &ResolvedTenant,
    user: Uuid,
    idp_roles: &[String],
) -> ApiResult<Arc<Effective>> {
    let tid = tenant.tenant.id.0;
    let idp = idp_key(idp_roles);
    let cache = &state.perms;
    if let Some(hit) = cache.l1(tid, user, idp) {
        state.metrics.permission_l1.inc();
        return Ok(hit);
    }
    let generation = match cache.l2(tid, user, idp).await {
        Ok((generation, Some(found))) => {
            state.metrics.permission_l2.inc();
            let found = Arc::new(found);
            cache.put_l1(tid, user, idp, generation, found.clone());
            return Ok(found);
        }
        Ok((generation, None)) => Some(generation),
        Err(e) => {
            cache.warn_degraded(&e);
            None
        }
    };
    state.metrics.permission_database.inc();
    let computed = Arc::new(compute(&tenant.db, user, idp_roles).await?);
    if let Some(generation) = generation {
        if let Err(e) = cache.put_l2(tid, user, idp, generation, &computed).await {
            cache.warn_degraded(&e);
        }
        cache.put_l1(tid, user, idp, generation, computed.clone());
    }
    Ok(computed)
}

/// Resolves from the database, bypassing every cache.
pub async fn compute(db: &TenantDb, user: Uuid, idp_roles: &[String]) -> ApiResult<Effective> {
    let mut tx = db.begin().await?;
    let inputs = repo::load_inputs(tx.conn(), user, idp_roles).await;
    let inputs = tx.finish(inputs).await?;
    Ok(Effective::resolve(&inputs))
}

/// Seeds the platform's role templates into a new tenant (nothing if it has roles already,
/// except that the protected owner role always exists).
pub async fn seed(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    let empty = roles::table.count().get_result::<i64>(conn).await? == 0;
    for (key, name, description, permissions, is_default) in TEMPLATES {
        if !empty && *key != "owner" {
            continue;
        }
        diesel::insert_into(roles::table)
            .values((
                roles::id.eq(Uuid::now_v7()),
                roles::key.eq(key),
                roles::name.eq(name),
                roles::description.eq(description),
                roles::permissions.eq(permissions
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()),
                roles::template.eq(Some(key)),
                roles::is_default.eq(is_default),
                roles::protected.eq(*key == "owner"),
            ))
            .on_conflict(roles::key)
            .do_nothing()
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// The tenant's catalog: the platform's resources plus its registered ones.
pub async fn catalog(conn: &mut AsyncPgConnection) -> ApiResult<Catalog> {
    let mut c = Catalog::platform();
    for (resource, actions) in repo::registered_resources(conn).await? {
        c.add(&resource, &actions);
    }
    Ok(c)
}

pub fn catalog_entries(c: &Catalog) -> Vec<CatalogEntry> {
    c.resources
        .iter()
        .map(|(r, a)| CatalogEntry {
            resource: r.clone(),
            actions: a.iter().cloned().collect(),
            scopes: Scope::ALL.iter().map(|s| s.as_str().to_string()).collect(),
        })
        .collect()
}

pub fn templates() -> Vec<RoleTemplate> {
    TEMPLATES
        .iter()
        .map(
            |(key, name, description, permissions, is_default)| RoleTemplate {
                key: key.to_string(),
                name: name.to_string(),
                description: description.to_string(),
                permissions: permissions.iter().map(|p| p.to_string()).collect(),
                is_default: *is_default,
            },
        )
        .collect()
}

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

async fn role_views(conn: &mut AsyncPgConnection, rows: Vec<RoleRow>) -> ApiResult<Vec<Role>> {
    let edges = repo::parent_keys(conn).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let parents = edges
                .iter()
                .filter(|(id, _)| *id == r.id)
                .map(|(_, k)| k.clone())
                .collect();
            role_view(r, parents)
        })
        .collect())
}

pub async fn list_roles(db: &TenantDb) -> ApiResult<Vec<Role>> {
    let mut tx = db.begin().await?;
    let result = async {
        let rows = repo::list_roles(tx.conn()).await?;
        role_views(tx.conn(), rows).await
    }
    .await;
    tx.finish(result).await
}

pub async fn get_role(db: &TenantDb, key: &str) -> ApiResult<Role> {
    let mut tx = db.begin().await?;
    let result = async {
        let row = found(repo::role_by_key(tx.conn(), key).await?, "role")?;
        Ok(role_views(tx.conn(), vec![row]).await?.remove(0))
    }
    .await;
    tx.finish(result).await
}

fn is_key(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(b'a'..=b'z'))
        && s.len() <= 63
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// Validates permission strings against the catalog, collecting field errors under `pointer`.
fn validate_perms(
    catalog: &Catalog,
    perms: &[String],
    pointer: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<Perm> {
    if perms.len() > 200 {
        errors.push(FieldError {
            pointer: pointer.into(),
            message: "at most 200 permissions".into(),
        });
    }
    perms
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match catalog.validate(p) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(FieldError {
                    pointer: format!("{pointer}/{i}"),
                    message: e.to_string(),
                });
                None
            }
        })
        .collect()
}

fn text_field(
    value: &str,
    max: usize,
    min: usize,
    pointer: &str,
    errors: &mut Vec<FieldError>,
) -> String {
    let v = value.trim().to_string();
    let n = v.chars().count();
    if n < min || n > max {
        errors.push(FieldError {
            pointer: pointer.into(),
            message: format!("must be {min}-{max} characters"),
        });
    }
    v
}

/// Serialises role-graph changes of one tenant (cycle checks must see each other).
async fn lock_roles(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':roles'))")
        .execute(conn)
        .await?;
    Ok(())
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

async fn audit(
    conn: &mut AsyncPgConnection,
    actor: &Actor,
    action: &str,
    target_type: &str,
    target_id: String,
    data: serde_json::Value,
) -> ApiResult<()> {
    audit::record(
        conn,
        actor,
        Change {
            action,
            target_type,
            target_id: Some(target_id),
            data,
        },
    )
    .await?;
    Ok(())
}

pub async fn create_role(state: &RbacState, caller: &Caller, input: &NewRole) -> ApiResult<Role> {
    let db = caller.db();
    let mut tx = db.begin().await?;
    let result = async {
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
        lock_roles(conn).await?;
        let parents = parent_ids(conn, &input.parents).await?;
        let parent_ids: Vec<Uuid> = parents.iter().map(|r| r.id).collect();
        let mut handed = closure_perms(conn, &parent_ids).await?;
        handed.extend(perms.iter().cloned());
        caller.require_delegable(&handed)?;
        let id = Uuid::now_v7();
        diesel::insert_into(roles::table)
            .values((
                roles::id.eq(id),
                roles::key.eq(&input.key),
                roles::name.eq(&name),
                roles::description.eq(&description),
                roles::permissions.eq(perms.iter().map(|p| p.to_string()).collect::<Vec<_>>()),
                roles::template.eq(input.from_template.as_deref()),
                roles::is_default.eq(input.is_default),
            ))
            .execute(conn)
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
    }
    .await;
    let role = tx.finish(result).await?;
    state.perms.invalidate(caller.tenant_id().0).await;
    Ok(role)
}

fn role_json(r: &Role) -> serde_json::Value {
    json!({"key": r.key, "name": r.name, "permissions": r.permissions, "parents": r.parents,
           "is_default": r.is_default})
}

async fn get_in(conn: &mut AsyncPgConnection, key: &str) -> ApiResult<Role> {
    let row = found(repo::role_by_key(conn, key).await?, "role")?;
    Ok(role_views(conn, vec![row]).await?.remove(0))
}

pub async fn update_role(
    state: &RbacState,
    caller: &Caller,
    key: &str,
    patch: &RolePatch,
) -> ApiResult<Role> {
    let db = caller.db();
    let mut tx = db.begin().await?;
    let result = async {
        let conn = tx.conn();
        lock_roles(conn).await?;
        let before = get_in(conn, key).await?;
        if before.protected {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "the owner role cannot be changed",
            ));
        }
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
                            message: "this parent would make the role inherit from itself".into(),
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
        diesel::update(roles::table.filter(roles::id.eq(before.id.0)))
            .set((
                name.map(|n| roles::name.eq(n)),
                description.map(|d| roles::description.eq(d)),
                perms.map(|p| {
                    roles::permissions.eq(p.iter().map(|x| x.to_string()).collect::<Vec<_>>())
                }),
                patch.is_default.map(|d| roles::is_default.eq(d)),
                roles::updated_at.eq(Utc::now()),
            ))
            .execute(conn)
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
    }
    .await;
    let role = tx.finish(result).await?;
    state.perms.invalidate(caller.tenant_id().0).await;
    Ok(role)
}

pub async fn delete_role(state: &RbacState, caller: &Caller, key: &str) -> ApiResult<()> {
    let db = caller.db();
    let mut tx = db.begin().await?;
    let result = async {
        let conn = tx.conn();
        lock_roles(conn).await?;
        let before = get_in(conn, key).await?;
        if before.protected {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "the owner role cannot be deleted",
            ));
        }
        let handed = closure_perms(conn, &[before.id.0]).await?;
        caller.require_delegable(&handed)?;
        diesel::delete(roles::table.filter(roles::id.eq(before.id.0)))
            .execute(conn)
            .await?;
        audit(
            conn,
            &caller.actor,
            "role.deleted",
            "role",
            before.id.to_string(),
            json!({"before": role_json(&before)}),
        )
        .await
    }
    .await;
    tx.finish(result).await?;
    state.perms.invalidate(caller.tenant_id().0).await;
    Ok(())
}

/// Checks every id names a user of the tenant who is not deleted.
async fn existing_users(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> ApiResult<()> {
    let found: Vec<Uuid> = users::table
        .filter(users::id.eq_any(ids))
        .filter(users::status.ne("deleted"))
        .select(users::id)
        .load(conn)
        .await?;
    if let Some((i, _)) = ids.iter().enumerate().find(|(_, id)| !found.contains(id)) {
        return Err(ApiError::validation(vec![FieldError {
            pointer: format!("/user_ids/{i}"),
            message: "no such user".into(),
        }]));
    }
    Ok(())
}

/// Assigns `key` to many users at once (all or nothing); re-assigning renews the expiry.
pub async fn assign(
    state: &RbacState,
    caller: &Caller,
    key: &str,
    user_ids: &[UserId],
    expires_at: Option<chrono::DateTime<Utc>>,
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
    let db = caller.db();
    let mut tx = db.begin().await?;
    let result = async {
        let conn = tx.conn();
        let role = get_in(conn, key).await?;
        caller.require_delegable(&closure_perms(conn, &[role.id.0]).await?)?;
        existing_users(conn, &ids).await?;
        let rows: Vec<_> = ids
            .iter()
            .map(|u| {
                (
                    user_roles::user_id.eq(*u),
                    user_roles::role_id.eq(role.id.0),
                    user_roles::granted_by.eq(Some(caller.user_id())),
                    user_roles::expires_at.eq(expires_at),
                )
            })
            .collect();
        diesel::insert_into(user_roles::table)
            .values(rows)
            .on_conflict((user_roles::user_id, user_roles::role_id))
            .do_update()
            .set((
                user_roles::expires_at.eq(expires_at),
                user_roles::granted_by.eq(Some(caller.user_id())),
            ))
            .execute(conn)
            .await?;
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
    }
    .await;
    let out = tx.finish(result).await?;
    state.perms.invalidate(caller.tenant_id().0).await;
    Ok(out)
}

pub async fn unassign(
    state: &RbacState,
    caller: &Caller,
    key: &str,
    user: UserId,
) -> ApiResult<()> {
    let db = caller.db();
    let mut tx = db.begin().await?;
    let result = async {
        let conn = tx.conn();
        lock_roles(conn).await?;
        let role = get_in(conn, key).await?;
        caller.require_delegable(&closure_perms(conn, &[role.id.0]).await?)?;
        if role.protected {
            let holders: i64 = user_roles::table
                .filter(user_roles::role_id.eq(role.id.0))
                .count()
                .get_result(conn)
                .await?;
            if holders <= 1 {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    "the last owner cannot be removed; make someone else owner first",
                ));
            }
        }
        let n = diesel::delete(
            user_roles::table
                .filter(user_roles::role_id.eq(role.id.0))
                .filter(user_roles::user_id.eq(user.0)),
        )
        .execute(conn)
        .await?;
        if n == 0 {
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
    }
    .await;
    tx.finish(result).await?;
    state.perms.invalidate(caller.tenant_id().0).await;
    Ok(())
}

/// Users holding `key` directly.
pub async fn holders(
    db: &TenantDb,
    key: &str,
) -> ApiResult<Vec<(UserId, Option<chrono::DateTime<Utc>>)>> {
    let mut tx = db.begin().await?;
    let result = async {
        let conn = tx.conn();
        let role = get_in(conn, key).await?;
        let rows: Vec<(Uuid, Option<chrono::DateTime<Utc>>)> = user_roles::table
            .filter(user_roles::role_id.eq(role.id.0))
            .select((user_roles::user_id, user_roles::expires_at))
            .order(user_roles::user_id.asc())
            .load(conn)
            .await?;
        Ok(rows.into_iter().map(|(u, e)| (UserId(u), e)).collect())
    }
    .await;
    tx.finish(result).await
}

pub async fn roles_of(db: &TenantDb, user: UserId) -> ApiResult<Vec<super::HeldRole>> {
    let mut tx = db.begin().await?;
    let rows = repo::roles_of(tx.conn(), user.0).await;
    let rows = tx.finish(rows).await?;
    Ok(rows
        .into_iter()
        .map(|(role, expires_at)| super::HeldRole { role, expires_at })
        .collect())
}

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
    let mut tx = db.begin().await?;
    let rows = repo::grants_of(tx.conn(), user.0).await;
    Ok(tx.finish(rows).await?.into_iter().map(grant_view).collect())
}

pub async fn add_grant(
    state: &RbacState,
    caller: &Caller,
    user: UserId,
    input: &NewGrant,
) -> ApiResult<Grant> {
    let db = caller.db();
    let mut tx = db.begin().await?;
    let result = async {
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
        existing_users(conn, &[user.0]).await.map_err(|_| ApiError::not_found("user"))?;
        let id = Uuid::now_v7();
        diesel::insert_into(user_grants::table)
            .values((
                user_grants::id.eq(id),
                user_grants::user_id.eq(user.0),
                user_grants::permission.eq(perm[0].to_string()),
                user_grants::effect.eq(&input.effect),
                user_grants::reason.eq(&reason),
                user_grants::granted_by.eq(Some(caller.user_id())),
                user_grants::expires_at.eq(input.expires_at),
            ))
            .execute(conn)
            .await?;
        let row = user_grants::table
            .find(id)
            .select(GrantRow::as_select())
            .first(conn)
            .await?;
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
    }
    .await;
    let grant = tx.finish(result).await?;
    state.perms.invalidate(caller.tenant_id().0).await;
    Ok(grant)
}

pub async fn remove_grant(
    state: &RbacState,
    caller: &Caller,
    user: UserId,
    grant: GrantId,
) -> ApiResult<()> {
    let db = caller.db();
    let mut tx = db.begin().await?;
    let result = async {
        let conn = tx.conn();
        let row = found(
            user_grants::table
                .filter(user_grants::id.eq(grant.0))
                .filter(user_grants::user_id.eq(user.0))
                .select(GrantRow::as_select())
                .first(conn)
                .await
                .optional()?,
            "grant",
        )?;
        if let Ok(p) = row.permission.parse::<Perm>() {
            caller.require_delegable([&p])?;
        }
        diesel::delete(user_grants::table.find(grant.0))
            .execute(conn)
            .await?;
        audit(
            conn,
            &caller.actor,
            "permission.revoked",
            "user",
            user.to_string(),
            json!({"grant": grant.to_string(), "permission": row.permission, "effect": row.effect}),
        )
        .await
    }
    .await;
    tx.finish(result).await?;
    state.perms.invalidate(caller.tenant_id().0).await;
    Ok(())
}

/// Another user's effective permissions (through the caches), refusing unknown users.
async fn effective_of(
    state: &RbacState,
    caller: &Caller,
    user: UserId,
) -> ApiResult<Arc<Effective>> {
    if user == caller.user.user.id {
        return Ok(caller.effective.clone());
    }
    caller.require("permissions", "read", Scope::Tenant)?;
    let tenant = &caller.tenant.0;
    let mut tx = tenant.db.begin().await?;
    let exists = users::table
        .filter(users::id.eq(user.0))
        .filter(users::status.ne("deleted"))
        .count()
        .get_result::<i64>(tx.conn())
        .await;
    if tx.finish(exists).await? == 0 {
        return Err(ApiError::not_found("user"));
    }
    // Identity-provider roles are known only from the user's own token.
    effective(state, tenant, user.0, &[]).await
}

pub async fn check(
    state: &RbacState,
    caller: &Caller,
    items: &[CheckItem],
) -> ApiResult<Vec<CheckOutcome>> {
    if items.is_empty() || items.len() > 100 {
        return Err(ApiError::validation(vec![FieldError {
            pointer: "/checks".into(),
            message: "must hold 1-100 checks".into(),
        }]));
    }
    let mut errors = Vec::new();
    let parsed: Vec<Option<Perm>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| match item.permission.parse::<Perm>() {
            Ok(p) if p.resource != "*" && p.action != "*" => Some(p),
            _ => {
                errors.push(FieldError {
                    pointer: format!("/checks/{i}/permission"),
                    message: "must be a concrete resource.action.scope".into(),
                });
                None
            }
        })
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut out = Vec::with_capacity(items.len());
    for (item, perm) in items.iter().zip(parsed) {
        let perm = perm.expect("validated");
        let user = item.user_id.unwrap_or(caller.user.user.id);
        let allowed = if user == caller.user.user.id {
            caller.allows(&perm.resource, &perm.action, perm.scope)
        } else {
            effective_of(state, caller, user).await?.allows_perm(&perm)
        };
        out.push(CheckOutcome {
            permission: item.permission.clone(),
            user_id: user,
            allowed,
        });
    }
    Ok(out)
}

pub async fn permissions_of(
    state: &RbacState,
    caller: &Caller,
    user: UserId,
    explain: bool,
) -> ApiResult<UserPermissions> {
    let eff = effective_of(state, caller, user).await?;
    let mut tx = caller.db().begin().await?;
    let cat = catalog(tx.conn()).await;
    let cat = tx.finish(cat).await?;
    let explain = explain.then(|| {
        eff.sources
            .iter()
            .flat_map(|(pattern, sources)| {
                [true, false].into_iter().filter_map(move |allow| {
                    let list: Vec<serde_json::Value> = sources
                        .iter()
                        .filter(|(a, _)| *a == allow)
                        .map(|(_, s)| serde_json::to_value(s).unwrap_or_default())
                        .collect();
                    (!list.is_empty()).then(|| Explanation {
                        pattern: pattern.clone(),
                        effect: if allow { "allow" } else { "deny" }.into(),
                        sources: list,
                    })
                })
            })
            .collect()
    });
    Ok(UserPermissions {
        user_id: user,
        roles: eff.roles.iter().cloned().collect(),
        permissions: eff.expand(&cat).iter().map(|p| p.to_string()).collect(),
        explain,
    })
}

/// Platform-admin bootstrap: gives `user` the role `key` in a tenant, bypassing delegation
/// (the platform token outranks every tenant role). Audited as the platform.
pub async fn platform_assign(
    state: &RbacState,
    db: &TenantDb,
    tenant: Uuid,
    key: &str,
    user: UserId,
) -> ApiResult<()> {
    let mut tx = db.begin().await?;
    let result = async {
        let conn = tx.conn();
        let role = get_in(conn, key).await?;
        existing_users(conn, &[user.0])
            .await
            .map_err(|_| ApiError::not_found("user"))?;
        diesel::insert_into(user_roles::table)
            .values((
                user_roles::user_id.eq(user.0),
                user_roles::role_id.eq(role.id.0),
            ))
            .on_conflict((user_roles::user_id, user_roles::role_id))
            .do_update()
            .set(user_roles::expires_at.eq(None::<chrono::DateTime<Utc>>))
            .execute(conn)
            .await?;
        audit(
            conn,
            &Actor::platform(&state.audit_recent, tenant, db),
            "role.assigned",
            "role",
            role.id.to_string(),
            json!({"role": role.key, "users": [user.to_string()]}),
        )
        .await
    }
    .await;
    tx.finish(result).await?;
    state.perms.invalidate(tenant).await;
    Ok(())
}
