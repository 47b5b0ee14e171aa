//! `/v1/me`: the calling user.

use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::{CurrentUser, Me};
use crate::error::ApiResult;
use crate::http::reply::Reply;

/// The calling user (created on its first authenticated request from the token).
#[endpoint(tags("users"), status_codes(200, 401, 403, 404))]
pub async fn me(caller: CurrentUser) -> ApiResult<Reply<Me>> {
    let principal = &caller.principal.0;
    Ok(Reply::ok(Me {
        user: (*caller.user).clone(),
        roles: principal.roles.clone(),
        client: principal.client.clone(),
    }))
}

pub fn router() -> Router {
    Router::with_path("me").get(me)
}
