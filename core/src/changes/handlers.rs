//! HTTP endpoint of the change feed: `GET /v1/changes?since=&limit=`. Parses, calls the
//! service, answers; no SQL.

use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::{ChangePage, ChangesState, service};
use crate::error::ApiResult;
use crate::http::extract::dep;
use crate::http::reply::Reply;
use crate::rbac::Can;
use crate::rbac::need::ChangesRead;

/// Resources and users changed after `?since=` (a cursor from an earlier page; absent: from
/// the beginning), in commit order, each once per page with its current state (`upsert`) or as
/// a tombstone (`delete`). Apply the items in order and continue from `next_cursor` to keep an
/// exact mirror. `?limit=` 1-1000 (default 100). Needs `changes.read`; resources appear only
/// with `resources.read` (tenant scope), users only with `users.read` (tenant scope).
#[endpoint(
    operation_id = "neotenant.changes.list",
    tags("changes"),
    status_codes(200, 400, 401, 403)
)]
pub async fn changes(
    can: Can<ChangesRead>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Reply<ChangePage>> {
    let state = dep::<ChangesState>(depot)?;
    let since = service::parse_cursor(req.query::<String>("since").as_deref())?;
    let limit = crate::http::extract::limit_param(req, 100, 1000)?;
    let sources = service::readable(&can, &state.sources)?;
    let t = &can.tenant.0;
    Ok(Reply::ok(
        service::page(&t.db, &sources, since, limit).await?,
    ))
}

pub fn router() -> Router {
    Router::with_path("changes").get(changes)
}
