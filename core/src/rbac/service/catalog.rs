//! The permission catalog of a tenant (the platform's resources plus its registered ones), the
//! platform's role templates, and seeding them into a new tenant. Changes nothing but the
//! seeded roles; never runs SQL itself.

use diesel::QueryResult;
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::db::TenantDb;
use crate::error::ApiResult;
use crate::rbac::perm::{Catalog, Scope, TEMPLATES};
use crate::rbac::repo::{self, NewRoleRow};
use crate::rbac::{CatalogEntry, RoleTemplate};

/// Seeds the platform's role templates into a new tenant (nothing if it has roles already,
/// except that the protected owner role always exists).
pub async fn seed(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    let empty = repo::role_count(conn).await? == 0;
    for (key, name, description, permissions, is_default) in TEMPLATES {
        if !empty && *key != "owner" {
            continue;
        }
        let role = NewRoleRow {
            id: Uuid::now_v7(),
            key,
            name,
            description,
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
            template: Some(key),
            is_default: *is_default,
        };
        repo::insert_role_unless_key_exists(conn, &role, *key == "owner").await?;
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

/// [`catalog`] in a transaction of its own.
pub async fn load_catalog(db: &TenantDb) -> ApiResult<Catalog> {
    db.transaction(async |tx| catalog(tx.conn()).await).await
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
