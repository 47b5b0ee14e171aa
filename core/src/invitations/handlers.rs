//! `/v1/invitations`: inviting (one or in bulk), listing, counting, revoking and resending
//! (authenticated, by permission), templates and policy, and the two routes an invitee uses
//! without an access token — `open` and `accept` — which spend from the client address's rate
//! budget and count a token that does not work as a failed authentication. HTTP only: parses,
//! calls one `invitations::service` function and answers; no SQL, no rules.

use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::{
    AcceptRequest, Accepted, BulkInvite, BulkResult, Counts, Filter, Invitation, InvitationsState,
    NewInvitation, Policy, Preview, Status, Template, TemplateInput, TokenRequest, Variable,
    service,
};
use crate::account::AccountState;
use crate::account::handlers::{admit, anonymous_actor};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::extract::{JsonBody, ListParams, Page, Path, dep};
use crate::http::reply::{NoContent, Reply};
use crate::ids::{InvitationId, UserId};
use crate::ratelimit::{Attempt, fingerprint};
use crate::rbac::Can;
use crate::rbac::need::{
    InvitationsConfigure, InvitationsCreate, InvitationsRead, InvitationsRevoke,
};
use crate::tenancy::resolve::CurrentTenant;

/// Invite one address (the mail goes out at once; `delivery` tracks it).
#[endpoint(
    operation_id = "neotenant.invitations.create",
    tags("invitations"),
    status_codes(201, 400, 401, 403, 409, 422, 429)
)]
pub async fn create(
    can: Can<InvitationsCreate>,
    _tenant: CurrentTenant,
    body: JsonBody<NewInvitation>,
    depot: &mut Depot,
) -> ApiResult<Reply<Invitation>> {
    let state = dep::<InvitationsState>(depot)?;
    let mut result = service::invite(&state, &can, std::slice::from_ref(&body.0)).await?;
    let item = result
        .items
        .pop()
        .ok_or_else(|| ApiError::internal("an invitation call answered nothing"))?;
    match item.invitation {
        Some(invitation) => {
            let location = format!("/v1/invitations/{}", invitation.id);
            Ok(Reply::created(invitation, location))
        }
        None => {
            let code = ErrorCode::ALL
                .iter()
                .copied()
                .find(|c| Some(c.type_uri()) == item.kind)
                .unwrap_or(ErrorCode::Internal);
            Err(ApiError {
                errors: item.errors,
                ..ApiError::new(code, item.detail.unwrap_or_default())
            })
        }
    }
}

/// Invite up to 1,000 addresses at once; each item is answered on its own (201, 409, 422…).
#[endpoint(
    operation_id = "neotenant.invitations.bulk",
    tags("invitations"),
    status_codes(200, 400, 401, 403, 413, 422, 429)
)]
pub async fn bulk(
    can: Can<InvitationsCreate>,
    _tenant: CurrentTenant,
    body: JsonBody<BulkInvite>,
    depot: &mut Depot,
) -> ApiResult<Reply<BulkResult>> {
    let state = dep::<InvitationsState>(depot)?;
    Ok(Reply::ok(
        service::invite(&state, &can, &body.0.items).await?,
    ))
}

fn filter_of(req: &Request) -> ApiResult<Filter> {
    let bad = |name: &str, what: &str| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("query parameter `{name}` must be {what}"),
        )
    };
    let status = match req.query::<String>("status") {
        None => None,
        Some(s) => Some(Status::parse(&s).ok_or_else(|| {
            bad(
                "status",
                "one of pending, sent, opened, accepted, expired, revoked",
            )
        })?),
    };
    let invited_by = match req.query::<String>("invited_by") {
        None => None,
        Some(s) => Some(
            s.parse::<UserId>()
                .map_err(|_| bad("invited_by", "a user id (usr_…)"))?,
        ),
    };
    let email = req.query::<String>("email");
    if email.as_ref().is_some_and(|e| e.len() > 254) {
        return Err(bad("email", "at most 254 characters"));
    }
    Ok(Filter {
        status,
        email,
        invited_by,
    })
}

/// The tenant's invitations, oldest first; filter by `status`, `email` and `invited_by`.
#[endpoint(
    operation_id = "neotenant.invitations.list",
    tags("invitations"),
    status_codes(200, 400, 401, 403)
)]
pub async fn list(
    _can: Can<InvitationsRead>,
    tenant: CurrentTenant,
    page: ListParams<InvitationId>,
    req: &mut Request,
) -> ApiResult<Reply<Page<Invitation>>> {
    let filter = filter_of(req)?;
    let rows = service::list(&tenant.0.db, &filter, page.after, i64::from(page.limit) + 1).await?;
    Ok(Reply::ok(Page::from_rows(rows, page.limit, |i| i.id)))
}

/// How many invitations are in each status.
#[endpoint(
    operation_id = "neotenant.invitations.counts",
    tags("invitations"),
    status_codes(200, 401, 403)
)]
pub async fn counts(_can: Can<InvitationsRead>, tenant: CurrentTenant) -> ApiResult<Reply<Counts>> {
    Ok(Reply::ok(service::counts(&tenant.0.db).await?))
}

/// One invitation.
#[endpoint(
    operation_id = "neotenant.invitations.get",
    tags("invitations"),
    status_codes(200, 400, 401, 403, 404)
)]
pub async fn get(
    _can: Can<InvitationsRead>,
    tenant: CurrentTenant,
    id: Path<InvitationId>,
) -> ApiResult<Reply<Invitation>> {
    Ok(Reply::ok(service::get(&tenant.0.db, id.0).await?))
}

/// Revoke an open invitation: its link stops working at once.
#[endpoint(
    operation_id = "neotenant.invitations.revoke",
    tags("invitations"),
    status_codes(200, 400, 401, 403, 404, 409)
)]
pub async fn revoke(
    can: Can<InvitationsRevoke>,
    _tenant: CurrentTenant,
    id: Path<InvitationId>,
) -> ApiResult<Reply<Invitation>> {
    Ok(Reply::ok(service::revoke(&can, id.0).await?))
}

/// Send an open or expired invitation again with a new link; the old link stops working.
#[endpoint(
    operation_id = "neotenant.invitations.resend",
    tags("invitations"),
    status_codes(200, 400, 401, 403, 404, 409)
)]
pub async fn resend(
    can: Can<InvitationsCreate>,
    _tenant: CurrentTenant,
    id: Path<InvitationId>,
    depot: &mut Depot,
) -> ApiResult<Reply<Invitation>> {
    let state = dep::<InvitationsState>(depot)?;
    Ok(Reply::ok(service::resend(&state, &can, id.0).await?))
}

/// The tenant's mail templates (the built-in English one when it has none for `en`).
#[endpoint(
    operation_id = "neotenant.invitations.templates",
    tags("invitations"),
    status_codes(200, 401, 403)
)]
pub async fn templates(
    _can: Can<InvitationsRead>,
    tenant: CurrentTenant,
) -> ApiResult<Reply<Vec<Template>>> {
    Ok(Reply::ok(service::templates(&tenant.0.db).await?))
}

/// The variables a template may use.
#[endpoint(
    operation_id = "neotenant.invitations.template_variables",
    tags("invitations"),
    status_codes(200, 401, 403)
)]
pub async fn variables(_can: Can<InvitationsRead>) -> Reply<Vec<Variable>> {
    Reply::ok(service::variables())
}

/// The template mails in this locale use (the tenant's, its English one, or the built-in).
#[endpoint(
    operation_id = "neotenant.invitations.get_template",
    tags("invitations"),
    status_codes(200, 400, 401, 403)
)]
pub async fn get_template(
    _can: Can<InvitationsRead>,
    tenant: CurrentTenant,
    locale: Path<String>,
) -> ApiResult<Reply<Template>> {
    Ok(Reply::ok(
        service::template_for(&tenant.0.db, &locale.0).await?,
    ))
}

/// Save the template for a locale (checked: syntax, and only the documented variables).
#[endpoint(
    operation_id = "neotenant.invitations.put_template",
    tags("invitations"),
    status_codes(200, 400, 401, 403, 422)
)]
pub async fn put_template(
    can: Can<InvitationsConfigure>,
    _tenant: CurrentTenant,
    locale: Path<String>,
    body: JsonBody<TemplateInput>,
) -> ApiResult<Reply<Template>> {
    Ok(Reply::ok(
        service::put_template(&can, &locale.0, &body.0).await?,
    ))
}

/// Delete the tenant's template for a locale (mails fall back to `en`, then the built-in).
#[endpoint(
    operation_id = "neotenant.invitations.delete_template",
    tags("invitations"),
    status_codes(204, 400, 401, 403, 404)
)]
pub async fn delete_template(
    can: Can<InvitationsConfigure>,
    _tenant: CurrentTenant,
    locale: Path<String>,
) -> ApiResult<NoContent> {
    service::delete_template(&can, &locale.0).await?;
    Ok(NoContent)
}

/// The tenant's invitation policy: default lifetime and allowed domains.
#[endpoint(
    operation_id = "neotenant.invitations.policy",
    tags("invitations"),
    status_codes(200, 401, 403)
)]
pub async fn policy(
    _can: Can<InvitationsRead>,
    tenant: CurrentTenant,
    depot: &mut Depot,
) -> ApiResult<Reply<Policy>> {
    let state = dep::<InvitationsState>(depot)?;
    Ok(Reply::ok(service::policy(&state, &tenant.0.db).await?))
}

/// Replace the tenant's invitation policy.
#[endpoint(
    operation_id = "neotenant.invitations.put_policy",
    tags("invitations"),
    status_codes(200, 400, 401, 403, 422)
)]
pub async fn put_policy(
    can: Can<InvitationsConfigure>,
    _tenant: CurrentTenant,
    body: JsonBody<Policy>,
    depot: &mut Depot,
) -> ApiResult<Reply<Policy>> {
    let state = dep::<InvitationsState>(depot)?;
    Ok(Reply::ok(service::put_policy(&state, &can, &body.0).await?))
}

/// What an invitation link offers (no access token needed); the first call marks the
/// invitation `opened`. A token that does not work is 400 `invitation-token-invalid`.
#[endpoint(
    operation_id = "neotenant.invitations.open",
    tags("invitations"),
    status_codes(200, 400, 422, 429, 503)
)]
pub async fn open(
    req: &mut Request,
    tenant: CurrentTenant,
    body: JsonBody<TokenRequest>,
    depot: &mut Depot,
) -> ApiResult<Reply<Preview>> {
    let account = dep::<AccountState>(depot)?;
    let state = dep::<InvitationsState>(depot)?;
    let who = fingerprint(&[b"invitation", body.0.token.as_bytes()]);
    let attempt = Attempt::Credential(&who);
    let ip = admit(&account, req, Some(attempt)).await?;
    let actor = anonymous_actor(&account, req, depot, &tenant, ip);
    match service::open(&state, &tenant.0, &actor, &body.0.token).await {
        Err(e) if e.code == ErrorCode::InvitationTokenInvalid => {
            account.limiter.record_failure(ip, attempt).await;
            Err(e)
        }
        other => Ok(Reply::ok(other?)),
    }
}

/// Accept an invitation (no access token needed): the account is made (with `password`) or
/// linked, and gets the invitation's roles and teams. Works once.
#[endpoint(
    operation_id = "neotenant.invitations.accept",
    tags("invitations"),
    status_codes(201, 400, 403, 409, 422, 429, 503)
)]
pub async fn accept(
    req: &mut Request,
    tenant: CurrentTenant,
    body: JsonBody<AcceptRequest>,
    depot: &mut Depot,
) -> ApiResult<Reply<Accepted>> {
    let account = dep::<AccountState>(depot)?;
    let state = dep::<InvitationsState>(depot)?;
    let who = fingerprint(&[b"invitation", body.0.token.as_bytes()]);
    let attempt = Attempt::Credential(&who);
    let ip = admit(&account, req, Some(attempt)).await?;
    let actor = anonymous_actor(&account, req, depot, &tenant, ip);
    match service::accept(&state, &tenant.0, actor, body.0).await {
        Err(e) if e.code == ErrorCode::InvitationTokenInvalid => {
            account.limiter.record_failure(ip, attempt).await;
            Err(e)
        }
        other => {
            let accepted = other?;
            let location = format!("/v1/users/{}", accepted.user_id);
            Ok(Reply::created(accepted, location))
        }
    }
}

/// The routes an invitee uses without an access token.
pub fn public_router() -> Router {
    Router::with_path("invitations")
        .push(Router::with_path("open").post(open))
        .push(Router::with_path("accept").post(accept))
}

/// The routes of tenant members managing invitations.
pub fn router() -> Router {
    Router::with_path("invitations")
        .get(list)
        .post(create)
        .push(Router::with_path("bulk").post(bulk))
        .push(Router::with_path("counts").get(counts))
        .push(Router::with_path("policy").get(policy).put(put_policy))
        .push(
            Router::with_path("templates")
                .get(templates)
                .push(Router::with_path("variables").get(variables))
                .push(
                    Router::with_path("{locale}")
                        .get(get_template)
                        .put(put_template)
                        .delete(delete_template),
                ),
        )
        .push(
            Router::with_path("{id}")
                .get(get)
                .push(Router::with_path("revoke").post(revoke))
                .push(Router::with_path("resend").post(resend)),
        )
}
