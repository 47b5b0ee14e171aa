//! SQL of tenant settings: the current state (one row), its versions, and the branding logo.
//! Runs on the caller's tenant transaction; never validates and never caches.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use crate::schema::tenant::{settings, settings_logo, settings_versions};

/// The current state.
#[derive(Debug, Clone, Queryable)]
pub struct Current {
    pub version: i32,
    pub state: Value,
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<Uuid>,
}

/// One version.
#[derive(Debug, Clone, Queryable)]
pub struct VersionRow {
    pub version: i32,
    pub state: Value,
    pub diff: Value,
    pub author_id: Option<Uuid>,
    pub author_name: Option<String>,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// The current state and the logo's ETag; `lock` takes the row for a read-modify-write.
pub async fn current(
    mut conn: &AsyncPgConnection,
    lock: bool,
) -> QueryResult<(Option<Current>, Option<String>)> {
    let q = settings::table.select((
        settings::version,
        settings::state,
        settings::updated_at,
        settings::updated_by,
    ));
    let current = if lock {
        q.for_update().first(&mut conn).await.optional()?
    } else {
        q.first(&mut conn).await.optional()?
    };
    let logo = settings_logo::table
        .select(settings_logo::etag)
        .first(&mut conn)
        .await
        .optional()?;
    Ok((current, logo))
}

/// Writes version `row.version` as the current state and appends it to the history.
pub async fn save(mut conn: &AsyncPgConnection, row: &VersionRow) -> QueryResult<()> {
    diesel::insert_into(settings_versions::table)
        .values((
            settings_versions::version.eq(row.version),
            settings_versions::state.eq(&row.state),
            settings_versions::diff.eq(&row.diff),
            settings_versions::author_id.eq(row.author_id),
            settings_versions::author_name.eq(&row.author_name),
            settings_versions::reason.eq(&row.reason),
            settings_versions::at.eq(row.at),
        ))
        .execute(&mut conn)
        .await?;
    diesel::insert_into(settings::table)
        .values((
            settings::singleton.eq(true),
            settings::version.eq(row.version),
            settings::state.eq(&row.state),
            settings::updated_at.eq(row.at),
            settings::updated_by.eq(row.author_id),
        ))
        .on_conflict(settings::singleton)
        .do_update()
        .set((
            settings::version.eq(row.version),
            settings::state.eq(&row.state),
            settings::updated_at.eq(row.at),
            settings::updated_by.eq(row.author_id),
        ))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Versions newest first, before `before` when given.
pub async fn versions(
    mut conn: &AsyncPgConnection,
    before: Option<i32>,
    limit: i64,
) -> QueryResult<Vec<VersionRow>> {
    let mut q = settings_versions::table
        .select((
            settings_versions::version,
            settings_versions::state,
            settings_versions::diff,
            settings_versions::author_id,
            settings_versions::author_name,
            settings_versions::reason,
            settings_versions::at,
        ))
        .order(settings_versions::version.desc())
        .limit(limit)
        .into_boxed();
    if let Some(b) = before {
        q = q.filter(settings_versions::version.lt(b));
    }
    q.load(&mut conn).await
}

pub async fn version(mut conn: &AsyncPgConnection, v: i32) -> QueryResult<Option<VersionRow>> {
    settings_versions::table
        .select((
            settings_versions::version,
            settings_versions::state,
            settings_versions::diff,
            settings_versions::author_id,
            settings_versions::author_name,
            settings_versions::reason,
            settings_versions::at,
        ))
        .filter(settings_versions::version.eq(v))
        .first(&mut conn)
        .await
        .optional()
}

/// The logo: ETag and WebP bytes.
pub async fn logo(mut conn: &AsyncPgConnection) -> QueryResult<Option<(String, Vec<u8>)>> {
    settings_logo::table
        .select((settings_logo::etag, settings_logo::image))
        .first(&mut conn)
        .await
        .optional()
}

pub async fn put_logo(mut conn: &AsyncPgConnection, etag: &str, image: &[u8]) -> QueryResult<()> {
    diesel::insert_into(settings_logo::table)
        .values((
            settings_logo::singleton.eq(true),
            settings_logo::etag.eq(etag),
            settings_logo::image.eq(image),
        ))
        .on_conflict(settings_logo::singleton)
        .do_update()
        .set((
            settings_logo::etag.eq(etag),
            settings_logo::image.eq(image),
            settings_logo::updated_at.eq(Utc::now()),
        ))
        .execute(&mut conn)
        .await?;
    Ok(())
}

pub async fn delete_logo(mut conn: &AsyncPgConnection) -> QueryResult<usize> {
    diesel::delete(settings_logo::table)
        .execute(&mut conn)
        .await
}

/// The audit retention in days, straight from the stored values (the retention job's read).
pub async fn audit_retention_days(mut conn: &AsyncPgConnection) -> QueryResult<Option<i32>> {
    let state: Option<Value> = settings::table
        .select(settings::state)
        .first(&mut conn)
        .await
        .optional()?;
    Ok(state
        .and_then(|s| {
            s.pointer("/values/compliance/audit_retention_days")
                .cloned()
        })
        .and_then(|v| v.as_i64())
        .and_then(|d| i32::try_from(d).ok()))
}
