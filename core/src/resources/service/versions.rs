//! A resource's history: its versions, one version, the difference between two, and
//! reverting to an old version (as a new version, validated against today's schema).

use chrono::Utc;
use serde_json::{Value, json};

use super::{Ctx, check_if_match, diff_states, locked_type, readable, record_change, require};
use crate::error::{ApiError, ApiResult, ErrorCode, found};
use crate::ids::ResourceId;
use crate::resources::access::{Access, Action};
use crate::resources::repo;
use crate::resources::types;
use crate::resources::{Diff, Resource, Version};

pub async fn versions(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    before: Option<i32>,
    limit: i64,
) -> ApiResult<Vec<Version>> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let access = Access::of(ctx.caller);
            readable(conn, &access, type_name, id, false).await?;
            Ok(repo::versions(conn, id.0, before, limit).await?)
        })
        .await
}

pub async fn version(ctx: &Ctx<'_>, type_name: &str, id: ResourceId, v: i32) -> ApiResult<Version> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let access = Access::of(ctx.caller);
            readable(conn, &access, type_name, id, false).await?;
            found(repo::version(conn, id.0, v).await?, "version")
        })
        .await
}

fn state_of_version(v: &Version) -> Value {
    json!({"data": v.data, "tags": v.tags, "category": v.category, "deleted": v.deleted})
}

pub async fn diff(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    from: Option<i32>,
    to: Option<i32>,
) -> ApiResult<Diff> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let access = Access::of(ctx.caller);
            let (r, _) = readable(conn, &access, type_name, id, false).await?;
            let to = to.unwrap_or(r.version);
            let from = from.unwrap_or(to - 1);
            if from < 1 || to < 1 || from > r.version || to > r.version {
                return Err(ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("versions run from 1 to {}", r.version),
                ));
            }
            let a = found(repo::version(conn, id.0, from).await?, "version")?;
            let b = found(repo::version(conn, id.0, to).await?, "version")?;
            Ok(Diff {
                from,
                to,
                changes: diff_states(&state_of_version(&a), &state_of_version(&b)),
            })
        })
        .await
}

/// Makes an old version current again, as a new version (validated against today's schema).
pub async fn revert(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    v: i32,
    if_match: Option<&str>,
) -> ApiResult<Resource> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let (_, validator) = locked_type(ctx, conn, type_name).await?;
            let access = Access::of(ctx.caller);
            let (before, rel) = readable(conn, &access, type_name, id, true).await?;
            if before.deleted_at.is_some() {
                return Err(ApiError::not_found("resource"));
            }
            require(&access, Action::Update, rel)?;
            check_if_match(&before, if_match)?;
            let old = found(repo::version(conn, id.0, v).await?, "version")?;
            let errors = types::validate(&validator, &old.data, "/data");
            if !errors.is_empty() {
                let mut e = ApiError::validation(errors);
                e.detail = format!("version {v} does not fit the type's current schema").into();
                return Err(e);
            }
            let mut after = before.clone();
            after.data = old.data;
            after.tags = old.tags;
            after.category = old.category;
            after.version += 1;
            after.updated_at = Utc::now();
            repo::update(conn, &after).await?;
            record_change(ctx, conn, &after, "reverted", Some(&before)).await?;
            Ok(after)
        })
        .await
}
