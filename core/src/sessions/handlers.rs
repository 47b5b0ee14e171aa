//! `/v1/sessions` and `/v1/users/{id}/sessions`: list and end sessions. HTTP only; the rules
//! are `sessions::service`.

use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::{SessionView, SessionsState, service};
use crate::auth::identity::CurrentUser;
use crate::error::ApiResult;
use crate::http::extract::{Path, dep};
use crate::http::reply::{NoContent, Reply};
use crate::ids::UserId;
use crate::tenancy::resolve::CurrentTenant;

/// My sessions, most recently active first.
#[endpoint(tags("sessions"), status_codes(200, 401, 503))]
pub async fn list_sessions(
    me: CurrentUser,
    tenant: CurrentTenant,
    depot: &mut Depot,
) -> ApiResult<Reply<Vec<SessionView>>> {
    let state = dep::<SessionsState>(depot)?;
    let current = me.principal.0.session_id.as_deref();
    Ok(Reply::ok(
        service::list(&state, &tenant.0, &me.user.subject, current).await?,
    ))
}

/// End one of my sessions, everywhere.
#[endpoint(tags("sessions"), status_codes(204, 401, 404, 503))]
pub async fn revoke_session(
    caller: crate::rbac::Caller,
    tenant: CurrentTenant,
    id: Path<String>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<SessionsState>(depot)?;
    let subject = &caller.user.user.subject;
    service::revoke_one(&state, &tenant.0, &caller.actor, subject, id.0).await?;
    Ok(NoContent)
}

/// End all my sessions, this one included.
#[endpoint(tags("sessions"), status_codes(204, 401, 503))]
pub async fn revoke_my_sessions(
    caller: crate::rbac::Caller,
    tenant: CurrentTenant,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<SessionsState>(depot)?;
    let me = &caller.user;
    service::revoke_all(
        &state,
        &tenant.0,
        &caller.actor,
        &me.user,
        me.principal.0.session_id.as_deref(),
    )
    .await?;
    Ok(NoContent)
}

/// End all sessions of a user of this tenant.
#[endpoint(tags("sessions"), status_codes(204, 400, 401, 403, 404, 503))]
pub async fn revoke_user_sessions(
    can: crate::rbac::Can<crate::rbac::need::SessionsRevokeAny>,
    tenant: CurrentTenant,
    id: Path<UserId>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<SessionsState>(depot)?;
    let user = crate::users::service::by_id(&tenant.0.db, id.0).await?;
    service::revoke_all(&state, &tenant.0, &can.actor, &user, None).await?;
    Ok(NoContent)
}

/// Authenticated session routes (mounted behind `Authenticate` and `LoadUser`).
pub fn router() -> Router {
    Router::new()
        .push(
            Router::with_path("sessions")
                .get(list_sessions)
                .delete(revoke_my_sessions)
                .push(Router::with_path("{id}").delete(revoke_session)),
        )
        .push(Router::with_path("users/{id}/sessions").delete(revoke_user_sessions))
}
