//! Shares: who else may read (or also update) one resource, given by those who may share it.

use serde_json::json;

use super::{Ctx, invalid, readable, require, resource_event};
use crate::error::{ApiError, ApiResult};
use crate::ids::{ResourceId, ResourceShareId};
use crate::resources::access::{Access, Action};
use crate::resources::repo;
use crate::resources::{Share, ShareInput};

pub async fn shares(ctx: &Ctx<'_>, type_name: &str, id: ResourceId) -> ApiResult<Vec<Share>> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let access = Access::of(ctx.caller);
            let (_, rel) = readable(conn, &access, type_name, id, false).await?;
            require(&access, Action::Share, rel)?;
            Ok(repo::shares(conn, id.0).await?)
        })
        .await
}

pub async fn share(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    input: &ShareInput,
) -> ApiResult<Share> {
    if input.user_id.is_some() == input.team_id.is_some() {
        return Err(invalid("/", "name exactly one of user_id and team_id"));
    }
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let access = Access::of(ctx.caller);
            let (r, rel) = readable(conn, &access, type_name, id, true).await?;
            if r.deleted_at.is_some() {
                return Err(ApiError::not_found("resource"));
            }
            require(&access, Action::Share, rel)?;
            if let Some(u) = input.user_id
                && !repo::user_exists(conn, u.0).await?
            {
                return Err(invalid("/user_id", "no such user in this tenant"));
            }
            if let Some(t) = input.team_id
                && !repo::team_exists(conn, t.0).await?
            {
                return Err(invalid("/team_id", "no such team"));
            }
            let sid = repo::upsert_share(
                conn,
                id.0,
                input.user_id.map(|u| u.0),
                input.team_id.map(|t| t.0),
                input.access,
                ctx.caller.user_id(),
            )
            .await?;
            let share = repo::shares(conn, id.0)
                .await?
                .into_iter()
                .find(|s| s.id.0 == sid)
                .ok_or_else(|| ApiError::internal("share vanished"))?;
            resource_event(
                ctx,
                conn,
                &r,
                "resource.shared",
                json!({"share": share.id, "user_id": share.user_id, "team_id": share.team_id,
                   "access": share.access}),
            )
            .await?;
            Ok(share)
        })
        .await
}

pub async fn unshare(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    share: ResourceShareId,
) -> ApiResult<()> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let access = Access::of(ctx.caller);
            let (r, rel) = readable(conn, &access, type_name, id, true).await?;
            require(&access, Action::Share, rel)?;
            if !repo::delete_share(conn, id.0, share.0).await? {
                return Err(ApiError::not_found("share"));
            }
            resource_event(ctx, conn, &r, "resource.unshared", json!({"share": share})).await
        })
        .await
}
