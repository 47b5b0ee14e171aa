//! Shares of one resource, owned by a team, with another team: listing, adding (input checked
//! first) and removing, each audited in its transaction; and the access a user's teams have to
//! a resource through shares, the seam resource modules ask. Never runs SQL itself.

use diesel_async::AsyncPgConnection;
use serde_json::json;
use uuid::Uuid;

use super::rules::{field, record, require_on_team, the_team};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::ids::{ShareId, TeamId};
use crate::rbac::Caller;
use crate::teams::repo;
use crate::teams::{NewShare, Share};

pub async fn shares(db: &TenantDb, id: TeamId) -> ApiResult<Vec<Share>> {
    db.transaction(async |tx| {
        the_team(repo::get(tx.conn(), id.0).await?)?;
        Ok::<_, ApiError>(repo::shares_of(tx.conn(), id.0).await?)
    })
    .await
}

pub async fn add_share(caller: &Caller, id: TeamId, input: &NewShare) -> ApiResult<Share> {
    require_on_team(caller, "share", id.0)?;
    let mut errors = Vec::new();
    let rt = &input.resource_type;
    let rt_ok = rt.len() <= 63
        && rt.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && rt
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !rt_ok {
        errors.push(FieldError {
            pointer: "/resource_type".into(),
            message: "must be 1-63 of a-z, 0-9 and _".into(),
        });
    }
    if !(1..=200).contains(&input.resource_id.chars().count()) {
        errors.push(FieldError {
            pointer: "/resource_id".into(),
            message: "must be 1-200 characters".into(),
        });
    }
    if !matches!(input.access.as_str(), "read" | "write") {
        errors.push(FieldError {
            pointer: "/access".into(),
            message: "must be read or write".into(),
        });
    }
    if input.shared_with == id {
        errors.push(FieldError {
            pointer: "/shared_with".into(),
            message: "a team cannot share with itself".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            the_team(repo::get(conn, id.0).await?)?;
            if repo::get(conn, input.shared_with.0).await?.is_none() {
                return Err(field("/shared_with", "no such team"));
            }
            let sid = Uuid::now_v7();
            repo::insert_share(
                conn,
                sid,
                id.0,
                input.shared_with.0,
                &input.resource_type,
                &input.resource_id,
                &input.access,
                caller.user_id(),
            )
            .await?;
            record(
                conn,
                caller,
                "team.shared",
                id.0,
                json!({"share": ShareId(sid).to_string(), "with": input.shared_with.to_string(),
                       "resource_type": input.resource_type, "resource_id": input.resource_id, "access": input.access}),
            )
            .await?;
            Ok::<_, ApiError>(repo::share(conn, sid).await?)
        })
        .await
}

pub async fn remove_share(caller: &Caller, id: TeamId, share: ShareId) -> ApiResult<()> {
    require_on_team(caller, "share", id.0)?;
    caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            if repo::delete_share(conn, id.0, share.0).await? == 0 {
                return Err(ApiError::not_found("share"));
            }
            record(
                conn,
                caller,
                "team.unshared",
                id.0,
                json!({"share": share.to_string()}),
            )
            .await
        })
        .await
}

/// The access `user_teams` have to a resource through shares (for resource modules).
pub async fn shared_access(
    conn: &mut AsyncPgConnection,
    user_teams: &[Uuid],
    resource_type: &str,
    resource_id: &str,
) -> ApiResult<Option<String>> {
    Ok(repo::shared_access(conn, user_teams, resource_type, resource_id).await?)
}
