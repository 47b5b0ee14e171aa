//! HTTP endpoints of webhooks: endpoints (`/v1/webhooks/endpoints`), their secrets, messages
//! and attempts (the delivery log), retries and replays, and the event-type catalogue
//! (`/v1/event-types`). Parses, calls one service function, answers; no SQL.

use salvo::oapi::endpoint;
use salvo::prelude::*;
use uuid::Uuid;

use super::WebhooksState;
use super::model::{
    AttemptView, EndpointCreated, EndpointInput, EndpointPatch, EndpointView, EventTypeView,
    MessageView, ReplayInput, Replayed, Rotated,
};
use super::service;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::extract::{JsonBody, ListParams, Page, Path, dep};
use crate::http::reply::{NoContent, Reply};
use crate::rbac::Can;
use crate::rbac::need::{WebhooksConfigure, WebhooksRead};

/// The event types an endpoint can subscribe to, each with the JSON Schema of its `data`.
/// Every message's body is `{"type", "timestamp", "id", "subject": {"type", "id"}, "data"}`.
#[endpoint(
    operation_id = "neotenant.webhooks.event_types",
    tags("webhooks"),
    status_codes(200, 401, 403)
)]
pub async fn event_types(_can: Can<WebhooksRead>) -> ApiResult<Reply<Vec<EventTypeView>>> {
    Ok(Reply::ok(service::event_types()))
}

/// Register an endpoint. Its `whsec_` secret (and with `asymmetric`, an Ed25519 key whose
/// public half is in the endpoint) signs every message per the Standard Webhooks
/// specification; the secret is in this answer only. A URL that is or resolves to a loopback,
/// private, link-local, metadata, multicast or reserved address is refused (`url-refused`).
#[endpoint(
    operation_id = "neotenant.webhooks.create_endpoint",
    tags("webhooks"),
    status_codes(201, 400, 401, 403, 409, 422)
)]
pub async fn create_endpoint(
    can: Can<WebhooksConfigure>,
    body: JsonBody<EndpointInput>,
    depot: &mut Depot,
) -> ApiResult<Reply<EndpointCreated>> {
    let state = dep::<WebhooksState>(depot)?;
    let created = service::create(&state, &can, body.0).await?;
    let location = format!("/v1/webhooks/endpoints/{}", created.endpoint.id);
    Ok(Reply::created(created, location))
}

/// The tenant's endpoints.
#[endpoint(
    operation_id = "neotenant.webhooks.list_endpoints",
    tags("webhooks"),
    status_codes(200, 401, 403)
)]
pub async fn list_endpoints(can: Can<WebhooksRead>) -> ApiResult<Reply<Vec<EndpointView>>> {
    Ok(Reply::ok(service::list(&can.tenant.0.db).await?))
}

/// One endpoint.
#[endpoint(
    operation_id = "neotenant.webhooks.get_endpoint",
    tags("webhooks"),
    status_codes(200, 400, 401, 403, 404)
)]
pub async fn get_endpoint(
    can: Can<WebhooksRead>,
    id: Path<Uuid>,
) -> ApiResult<Reply<EndpointView>> {
    Ok(Reply::ok(service::get(&can.tenant.0.db, id.0).await?))
}

/// Change an endpoint: URL (checked again), description, filters, rate limit, enabled.
/// `enabled: true` re-enables an endpoint the platform disabled; its queued messages follow.
#[endpoint(
    operation_id = "neotenant.webhooks.update_endpoint",
    tags("webhooks"),
    status_codes(200, 400, 401, 403, 404, 422)
)]
pub async fn update_endpoint(
    can: Can<WebhooksConfigure>,
    id: Path<Uuid>,
    body: JsonBody<EndpointPatch>,
    depot: &mut Depot,
) -> ApiResult<Reply<EndpointView>> {
    let state = dep::<WebhooksState>(depot)?;
    Ok(Reply::ok(
        service::update(&state, &can, id.0, body.0).await?,
    ))
}

/// Delete an endpoint with its queue and log.
#[endpoint(
    operation_id = "neotenant.webhooks.delete_endpoint",
    tags("webhooks"),
    status_codes(204, 400, 401, 403, 404)
)]
pub async fn delete_endpoint(can: Can<WebhooksConfigure>, id: Path<Uuid>) -> ApiResult<NoContent> {
    service::delete(&can, id.0).await?;
    Ok(NoContent)
}

/// A new signing secret (shown once). The previous one keeps signing beside it for
/// `?keep_previous_secs=` (default 86400, at most 604800; 0 ends it now), so receivers can
/// switch without losing a message.
#[endpoint(
    operation_id = "neotenant.webhooks.rotate_secret",
    tags("webhooks"),
    status_codes(200, 400, 401, 403, 404, 422)
)]
pub async fn rotate_secret(
    can: Can<WebhooksConfigure>,
    id: Path<Uuid>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Reply<Rotated>> {
    let state = dep::<WebhooksState>(depot)?;
    let keep = req
        .query::<String>("keep_previous_secs")
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    "keep_previous_secs must be a whole number of seconds",
                )
            })
        })
        .transpose()?;
    Ok(Reply::ok(service::rotate(&state, &can, id.0, keep).await?))
}

/// The endpoint's messages, newest first; `?status=failed` lists its dead letters.
#[endpoint(
    operation_id = "neotenant.webhooks.messages",
    tags("webhooks"),
    status_codes(200, 400, 401, 403, 404)
)]
pub async fn messages(
    can: Can<WebhooksRead>,
    id: Path<Uuid>,
    page: ListParams<String>,
    req: &mut Request,
) -> ApiResult<Reply<Page<MessageView>>> {
    let status = req.query::<String>("status");
    let rows = service::messages(
        &can.tenant.0.db,
        id.0,
        status.as_deref(),
        page.after.as_deref(),
        i64::from(page.limit) + 1,
    )
    .await?;
    Ok(Reply::ok(Page::from_rows(rows, page.limit, |m| {
        m.id.clone()
    })))
}

/// A message (with `attempts`, their count) and `attempt_log`, every attempt: the request body
/// sent and the answer (both cut), the status, the error, the time taken.
#[derive(Debug, serde::Serialize, salvo::oapi::ToSchema)]
#[salvo(schema(name = "neotenant.webhooks.MessageDetail"))]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: MessageView,
    pub attempt_log: Vec<AttemptView>,
}

/// One message and its attempts.
#[endpoint(
    operation_id = "neotenant.webhooks.message",
    tags("webhooks"),
    status_codes(200, 401, 403, 404)
)]
pub async fn message(can: Can<WebhooksRead>, id: Path<String>) -> ApiResult<Reply<MessageDetail>> {
    let (msg, attempts) = service::message(&can.tenant.0.db, &id.0).await?;
    Ok(Reply::ok(MessageDetail {
        message: msg,
        attempt_log: attempts,
    }))
}

/// Send a message again from the start of its schedule (a dead letter, or one that
/// succeeded); 409 while it is still being delivered.
#[endpoint(
    operation_id = "neotenant.webhooks.retry_message",
    tags("webhooks"),
    status_codes(204, 401, 403, 404, 409)
)]
pub async fn retry_message(can: Can<WebhooksConfigure>, id: Path<String>) -> ApiResult<NoContent> {
    service::retry(&can, &id.0).await?;
    Ok(NoContent)
}

/// Send every event of a time range that the endpoint's filters take again, as new messages.
/// A range with more than `webhooks.replay_max` events is refused (`range-too-large`).
#[endpoint(
    operation_id = "neotenant.webhooks.replay",
    tags("webhooks"),
    status_codes(202, 400, 401, 403, 404, 422)
)]
pub async fn replay(
    can: Can<WebhooksConfigure>,
    id: Path<Uuid>,
    body: JsonBody<ReplayInput>,
    depot: &mut Depot,
) -> ApiResult<Reply<Replayed>> {
    let state = dep::<WebhooksState>(depot)?;
    let input = body.0;
    Ok(Reply::accepted(
        service::replay(&state, &can, id.0, input.since, input.until).await?,
    ))
}

pub fn router() -> Router {
    Router::new()
        .push(Router::with_path("event-types").get(event_types))
        .push(
            Router::with_path("webhooks")
                .push(
                    Router::with_path("endpoints")
                        .get(list_endpoints)
                        .post(create_endpoint)
                        .push(
                            Router::with_path("{id}")
                                .get(get_endpoint)
                                .patch(update_endpoint)
                                .delete(delete_endpoint)
                                .push(Router::with_path("secret/rotate").post(rotate_secret))
                                .push(Router::with_path("messages").get(messages))
                                .push(Router::with_path("replay").post(replay)),
                        ),
                )
                .push(
                    Router::with_path("messages/{id}")
                        .get(message)
                        .push(Router::with_path("retry").post(retry_message)),
                ),
        )
}
