//! SQL for resource versions: every change writes one row, and history reads them back.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use crate::resources::{Resource, Version};
use crate::schema::tenant::resource_versions;

pub async fn insert_version(
    mut conn: &AsyncPgConnection,
    r: &Resource,
    change: &str,
    actor: Option<&str>,
) -> QueryResult<()> {
    diesel::insert_into(resource_versions::table)
        .values((
            resource_versions::resource_id.eq(r.id.0),
            resource_versions::version.eq(r.version),
            resource_versions::data.eq(&r.data),
            resource_versions::tags.eq(&r.tags),
            resource_versions::category.eq(&r.category),
            resource_versions::deleted.eq(r.deleted_at.is_some()),
            resource_versions::change.eq(change),
            resource_versions::actor_id.eq(actor),
            resource_versions::at.eq(r.updated_at),
        ))
        .execute(&mut conn)
        .await?;
    Ok(())
}

type VersionTuple = (
    i32,
    String,
    Value,
    Vec<String>,
    Option<String>,
    bool,
    Option<String>,
    DateTime<Utc>,
);

fn version_of(t: VersionTuple) -> Version {
    Version {
        version: t.0,
        change: t.1,
        data: t.2,
        tags: t.3,
        category: t.4,
        deleted: t.5,
        actor_id: t.6,
        at: t.7,
    }
}

const VERSION_COLUMNS: (
    resource_versions::version,
    resource_versions::change,
    resource_versions::data,
    resource_versions::tags,
    resource_versions::category,
    resource_versions::deleted,
    resource_versions::actor_id,
    resource_versions::at,
) = (
    resource_versions::version,
    resource_versions::change,
    resource_versions::data,
    resource_versions::tags,
    resource_versions::category,
    resource_versions::deleted,
    resource_versions::actor_id,
    resource_versions::at,
);

/// Versions newest first, below `before` if given.
pub async fn versions(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    before: Option<i32>,
    limit: i64,
) -> QueryResult<Vec<Version>> {
    let mut q = resource_versions::table
        .filter(resource_versions::resource_id.eq(id))
        .select(VERSION_COLUMNS)
        .order(resource_versions::version.desc())
        .limit(limit)
        .into_boxed();
    if let Some(b) = before {
        q = q.filter(resource_versions::version.lt(b));
    }
    Ok(q.load::<VersionTuple>(conn)
        .await?
        .into_iter()
        .map(version_of)
        .collect())
}

pub async fn version(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    v: i32,
) -> QueryResult<Option<Version>> {
    Ok(resource_versions::table
        .filter(resource_versions::resource_id.eq(id))
        .filter(resource_versions::version.eq(v))
        .select(VERSION_COLUMNS)
        .first::<VersionTuple>(conn)
        .await
        .optional()?
        .map(version_of))
}
