//! HTTP endpoints of notifications: sending and tracking (`/v1/notifications`), categories,
//! templates and event rules (`/v1/notification-categories`, `/v1/notification-templates`,
//! `/v1/notification-rules`), the caller's inbox with its live stream (`/v1/me/inbox`) and
//! preferences (`/v1/me/notification-preferences`), and one-click unsubscribe. Parses, calls
//! one service function, answers; no SQL.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use salvo::oapi::endpoint;
use salvo::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use super::model::{
    CategoryInput, InboxCount, PreferencesPatch, PreferencesView, PreviewRequest, ProviderReport,
    RuleInput, RuleView, Stat, TemplateView,
};
use super::service;
use super::template::{Parts, Rendered};
use super::{Category, Channel, DeliveryView, InboxItem, NotificationView, NotificationsState};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::extract::{JsonBody, ListParams, Page, Path, dep};
use crate::http::reply::{NoContent, Reply, Streamed};
use crate::rbac::need::{NotificationsConfigure, NotificationsRead, NotificationsSend};
use crate::rbac::{Caller, Can};
use crate::tenancy::resolve::CurrentTenant;

// ---- sending and tracking --------------------------------------------------------------

/// Send a notification to users, teams (with every team below them), roles or everyone, now
/// or at `send_at`. With an `Idempotency-Key` (kept 24 h) a repeat answers the stored result
/// with `Idempotency-Replay: true`; a repeat while the first runs answers 409 with
/// `Retry-After`; the key with another body answers 422. Beyond the tenant's hourly recipient
/// budget: 429 with `Retry-After`.
#[endpoint(
    operation_id = "neotenant.notifications.send",
    tags("notifications"),
    status_codes(202, 400, 401, 403, 409, 422, 429)
)]
pub async fn send(
    can: Can<NotificationsSend>,
    body: JsonBody<Value>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Reply<Value>> {
    let state = dep::<NotificationsState>(depot)?;
    let key = req
        .headers()
        .get("idempotency-key")
        .map(|v| {
            v.to_str().map(str::to_string).map_err(|_| {
                ApiError::new(ErrorCode::InvalidParameter, "Idempotency-Key must be ASCII")
            })
        })
        .transpose()?;
    let sent = service::send(&state, &can, body.0, key.as_deref()).await?;
    let id = sent
        .body
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut reply = Reply::accepted(sent.body).with_location(format!("/v1/notifications/{id}"));
    if sent.replay {
        reply = reply.with_header("idempotency-replay", "true".into());
    }
    Ok(reply)
}

/// Notifications, newest first.
#[endpoint(
    operation_id = "neotenant.notifications.list",
    tags("notifications"),
    status_codes(200, 400, 401, 403)
)]
pub async fn list(
    can: Can<NotificationsRead>,
    page: ListParams<Uuid>,
) -> ApiResult<Reply<Page<NotificationView>>> {
    let rows = service::list(&can.tenant.0.db, page.after, i64::from(page.limit) + 1).await?;
    Ok(Reply::ok(Page::from_rows(rows, page.limit, |n| n.id)))
}

/// One notification.
#[endpoint(
    operation_id = "neotenant.notifications.get",
    tags("notifications"),
    status_codes(200, 400, 401, 403, 404)
)]
pub async fn get(
    can: Can<NotificationsRead>,
    id: Path<Uuid>,
) -> ApiResult<Reply<NotificationView>> {
    Ok(Reply::ok(service::get(&can.tenant.0.db, id.0).await?))
}

/// Cancel a scheduled notification (409 once sending began).
#[endpoint(
    operation_id = "neotenant.notifications.cancel",
    tags("notifications"),
    status_codes(204, 400, 401, 403, 404, 409)
)]
pub async fn cancel(can: Can<NotificationsSend>, id: Path<Uuid>) -> ApiResult<NoContent> {
    service::cancel(&can, id.0).await?;
    Ok(NoContent)
}

/// Per recipient and channel: status (queued → sent → delivered | failed | bounced; held,
/// digested, skipped, throttled), attempts with their provider and error, timestamps.
#[endpoint(
    operation_id = "neotenant.notifications.deliveries",
    tags("notifications"),
    status_codes(200, 400, 401, 403, 404)
)]
pub async fn deliveries(
    can: Can<NotificationsRead>,
    id: Path<Uuid>,
    page: ListParams<Uuid>,
) -> ApiResult<Reply<Page<DeliveryView>>> {
    let rows = service::deliveries(
        &can.tenant.0.db,
        id.0,
        page.after,
        i64::from(page.limit) + 1,
    )
    .await?;
    Ok(Reply::ok(Page::from_rows(rows, page.limit, |d| d.id)))
}

/// Put a failed delivery (a dead letter) back in the queue.
#[endpoint(
    operation_id = "neotenant.notifications.retry_delivery",
    tags("notifications"),
    status_codes(204, 400, 401, 403, 409)
)]
pub async fn retry_delivery(
    can: Can<NotificationsSend>,
    id: Path<Uuid>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<NotificationsState>(depot)?;
    service::retry_delivery(&state, &can, id.0).await?;
    Ok(NoContent)
}

fn time_query(req: &Request, name: &str, default: DateTime<Utc>) -> ApiResult<DateTime<Utc>> {
    match req.query::<String>(name) {
        None => Ok(default),
        Some(raw) => raw.parse::<DateTime<Utc>>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidParameter,
                format!("query parameter `{name}` must be an RFC 3339 time"),
            )
        }),
    }
}

/// Sent, delivered, failed, pending and suppressed counts per category and channel, and the
/// in-app read rate, for deliveries created in `[from, to)` (default: the last 7 days).
#[endpoint(
    operation_id = "neotenant.notifications.analytics",
    tags("notifications"),
    status_codes(200, 400, 401, 403)
)]
pub async fn analytics(
    can: Can<NotificationsRead>,
    req: &mut Request,
) -> ApiResult<Reply<Vec<Stat>>> {
    let now = Utc::now();
    let from = time_query(req, "from", now - chrono::Duration::days(7))?;
    let to = time_query(req, "to", now + chrono::Duration::seconds(1))?;
    Ok(Reply::ok(
        service::analytics(&can.tenant.0.db, from, to).await?,
    ))
}

/// One-click unsubscribe (RFC 8058) from a mail's `List-Unsubscribe` link: turns email off
/// for the link's category. No credential: the signed token is the authority.
#[endpoint(
    operation_id = "neotenant.notifications.unsubscribe",
    tags("notifications"),
    status_codes(204, 400)
)]
pub async fn unsubscribe(
    tenant: CurrentTenant,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<NotificationsState>(depot)?;
    let token = req.query::<String>("token").unwrap_or_default();
    service::unsubscribe(&state, &tenant.0, &token).await?;
    Ok(NoContent)
}

// ---- categories, templates, rules ------------------------------------------------------

/// The platform's categories (with the tenant's overrides) and the tenant's own.
#[endpoint(
    operation_id = "neotenant.notifications.categories",
    tags("notifications"),
    status_codes(200, 401, 403)
)]
pub async fn categories(can: Can<NotificationsRead>) -> ApiResult<Reply<Vec<Category>>> {
    Ok(Reply::ok(service::categories(&can.tenant.0.db).await?))
}

#[endpoint(
    operation_id = "neotenant.notifications.category",
    tags("notifications"),
    status_codes(200, 401, 403, 404)
)]
pub async fn get_category(
    can: Can<NotificationsRead>,
    key: Path<String>,
) -> ApiResult<Reply<Category>> {
    Ok(Reply::ok(
        service::category(&can.tenant.0.db, &key.0).await?,
    ))
}

/// Create or replace a tenant category (name, channels, variables, criticality, quiet-hours
/// behaviour, digest, throttle), or override a platform category's channels, quiet hours,
/// digest and throttle.
#[endpoint(
    operation_id = "neotenant.notifications.put_category",
    tags("notifications"),
    status_codes(200, 400, 401, 403, 422)
)]
pub async fn put_category(
    can: Can<NotificationsConfigure>,
    key: Path<String>,
    body: JsonBody<CategoryInput>,
) -> ApiResult<Reply<Category>> {
    Ok(Reply::ok(
        service::put_category(&can, &key.0, body.0).await?,
    ))
}

/// Delete a tenant category, or a platform category's override (409 while a rule sends it).
#[endpoint(
    operation_id = "neotenant.notifications.delete_category",
    tags("notifications"),
    status_codes(204, 401, 403, 404, 409)
)]
pub async fn delete_category(
    can: Can<NotificationsConfigure>,
    key: Path<String>,
) -> ApiResult<NoContent> {
    service::delete_category(&can, &key.0).await?;
    Ok(NoContent)
}

/// Saved templates (`?category=` narrows).
#[endpoint(
    operation_id = "neotenant.notifications.templates",
    tags("notifications"),
    status_codes(200, 401, 403)
)]
pub async fn templates(
    can: Can<NotificationsRead>,
    req: &mut Request,
) -> ApiResult<Reply<Vec<TemplateView>>> {
    let category = req.query::<String>("category");
    Ok(Reply::ok(
        service::templates(&can.tenant.0.db, category.as_deref()).await?,
    ))
}

/// Save the template of a category, channel and locale: syntax and variables (declared or
/// built in) are checked; an unknown variable is a 422. The HTML part (email) is
/// auto-escaped.
#[endpoint(
    operation_id = "neotenant.notifications.put_template",
    tags("notifications"),
    status_codes(200, 400, 401, 403, 404, 422)
)]
pub async fn put_template(
    can: Can<NotificationsConfigure>,
    category: Path<String>,
    channel: Path<Channel>,
    locale: Path<String>,
    body: JsonBody<Parts>,
) -> ApiResult<Reply<TemplateView>> {
    Ok(Reply::ok(
        service::put_template(&can, &category.0, channel.0, &locale.0, body.0).await?,
    ))
}

#[endpoint(
    operation_id = "neotenant.notifications.delete_template",
    tags("notifications"),
    status_codes(204, 400, 401, 403, 404)
)]
pub async fn delete_template(
    can: Can<NotificationsConfigure>,
    category: Path<String>,
    channel: Path<Channel>,
    locale: Path<String>,
) -> ApiResult<NoContent> {
    service::delete_template(&can, &category.0, channel.0, &locale.0).await?;
    Ok(NoContent)
}

/// Render a template (given, or the saved one for the locale, or the built-in) with the
/// given data or sample values of the declared types.
#[endpoint(
    operation_id = "neotenant.notifications.preview",
    tags("notifications"),
    status_codes(200, 400, 401, 403, 404, 422)
)]
pub async fn preview(
    can: Can<NotificationsConfigure>,
    body: JsonBody<PreviewRequest>,
) -> ApiResult<Reply<Rendered>> {
    Ok(Reply::ok(service::preview(&can, body.0).await?))
}

/// Event rules: outbox topics (features' and plugins' events) mapped to notifications.
#[endpoint(
    operation_id = "neotenant.notifications.rules",
    tags("notifications"),
    status_codes(200, 401, 403)
)]
pub async fn rules(can: Can<NotificationsConfigure>) -> ApiResult<Reply<Vec<RuleView>>> {
    Ok(Reply::ok(service::rules(&can.tenant.0.db).await?))
}

#[endpoint(
    operation_id = "neotenant.notifications.create_rule",
    tags("notifications"),
    status_codes(201, 400, 401, 403, 422)
)]
pub async fn create_rule(
    can: Can<NotificationsConfigure>,
    body: JsonBody<RuleInput>,
) -> ApiResult<Reply<RuleView>> {
    let rule = service::create_rule(&can, body.0).await?;
    let location = format!("/v1/notification-rules/{}", rule.id);
    Ok(Reply::created(rule, location))
}

#[endpoint(
    operation_id = "neotenant.notifications.delete_rule",
    tags("notifications"),
    status_codes(204, 400, 401, 403, 404)
)]
pub async fn delete_rule(can: Can<NotificationsConfigure>, id: Path<Uuid>) -> ApiResult<NoContent> {
    service::delete_rule(&can, id.0).await?;
    Ok(NoContent)
}

// ---- the caller's inbox and preferences ------------------------------------------------

/// The caller's in-app notifications, newest first (`?status=all|unread|read|archived`;
/// `all` leaves archived ones out).
#[endpoint(
    operation_id = "neotenant.notifications.inbox",
    tags("notifications"),
    status_codes(200, 400, 401)
)]
pub async fn inbox(
    caller: Caller,
    page: ListParams<Uuid>,
    req: &mut Request,
) -> ApiResult<Reply<Page<InboxItem>>> {
    let status = req
        .query::<String>("status")
        .unwrap_or_else(|| "all".into());
    let rows = service::inbox(
        &caller.tenant.0.db,
        caller.user.user.id.0,
        &status,
        page.after,
        i64::from(page.limit) + 1,
    )
    .await?;
    Ok(Reply::ok(Page::from_rows(rows, page.limit, |i| i.id)))
}

/// The caller's unread count and newest inbox event number.
#[endpoint(
    operation_id = "neotenant.notifications.inbox_count",
    tags("notifications"),
    status_codes(200, 401)
)]
pub async fn inbox_count(caller: Caller) -> ApiResult<Reply<InboxCount>> {
    Ok(Reply::ok(
        service::count(&caller.tenant.0.db, caller.user.user.id.0).await?,
    ))
}

async fn change(
    caller: Caller,
    id: Uuid,
    kind: &str,
    depot: &Depot,
) -> ApiResult<Reply<InboxCount>> {
    let state = dep::<NotificationsState>(depot)?;
    Ok(Reply::ok(service::change(&state, &caller, id, kind).await?))
}

#[endpoint(
    operation_id = "neotenant.notifications.read",
    tags("notifications"),
    status_codes(200, 400, 401, 404)
)]
pub async fn read(
    caller: Caller,
    id: Path<Uuid>,
    depot: &mut Depot,
) -> ApiResult<Reply<InboxCount>> {
    change(caller, id.0, "read", depot).await
}

#[endpoint(
    operation_id = "neotenant.notifications.unread",
    tags("notifications"),
    status_codes(200, 400, 401, 404)
)]
pub async fn unread(
    caller: Caller,
    id: Path<Uuid>,
    depot: &mut Depot,
) -> ApiResult<Reply<InboxCount>> {
    change(caller, id.0, "unread", depot).await
}

#[endpoint(
    operation_id = "neotenant.notifications.archive",
    tags("notifications"),
    status_codes(200, 400, 401, 404)
)]
pub async fn archive(
    caller: Caller,
    id: Path<Uuid>,
    depot: &mut Depot,
) -> ApiResult<Reply<InboxCount>> {
    change(caller, id.0, "archived", depot).await
}

#[endpoint(
    operation_id = "neotenant.notifications.unarchive",
    tags("notifications"),
    status_codes(200, 400, 401, 404)
)]
pub async fn unarchive(
    caller: Caller,
    id: Path<Uuid>,
    depot: &mut Depot,
) -> ApiResult<Reply<InboxCount>> {
    change(caller, id.0, "unarchived", depot).await
}

/// Mark every unread item read.
#[endpoint(
    operation_id = "neotenant.notifications.read_all",
    tags("notifications"),
    status_codes(200, 401)
)]
pub async fn read_all(caller: Caller, depot: &mut Depot) -> ApiResult<Reply<InboxCount>> {
    let state = dep::<NotificationsState>(depot)?;
    Ok(Reply::ok(service::read_all(&state, &caller).await?))
}

/// How long one stream stays open (the client reconnects with `Last-Event-ID`).
const STREAM_MAX: Duration = Duration::from_secs(30 * 60);
/// A comment line this often keeps proxies from closing an idle stream.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Streams look at the database this often even without a wake-up.
const POLL: Duration = Duration::from_secs(2);

/// The caller's inbox changes as Server-Sent Events: first `event: unread` with the current
/// count, then every change in order (`created` with the item, `read`, `unread`, `archived`,
/// `unarchived`, `all_read`), each with `id:` its number and the unread count after it.
/// Resumes after `Last-Event-ID` (or `?after=`) with nothing skipped.
#[endpoint(
    operation_id = "neotenant.notifications.inbox_stream",
    tags("notifications"),
    status_codes(200, 400, 401)
)]
pub async fn inbox_stream(
    caller: Caller,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Streamed> {
    let state = dep::<NotificationsState>(depot)?;
    let raw = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.query::<String>("after"));
    let db = caller.tenant.0.db.clone();
    let user = caller.user.user.id.0;
    let tenant = caller.tenant.0.tenant.id.0;
    let now = service::count(&db, user).await?;
    let after = match raw {
        None => now.last_event,
        Some(r) => r
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    "Last-Event-ID must be an event number",
                )
            })?,
    };
    let rx = state.live.subscribe();
    let hello = Bytes::from(format!(
        "retry: 2000\nevent: unread\ndata: {{\"unread\":{},\"last_event\":{}}}\n\n",
        now.unread, now.last_event
    ));
    let started = tokio::time::Instant::now();
    struct S {
        db: crate::db::TenantDb,
        user: Uuid,
        tenant: Uuid,
        seq: i64,
        rx: tokio::sync::broadcast::Receiver<(Uuid, Uuid)>,
        queue: std::collections::VecDeque<Bytes>,
        started: tokio::time::Instant,
    }
    let s = S {
        db,
        user,
        tenant,
        seq: after,
        rx,
        queue: [hello].into(),
        started,
    };
    let body = futures::stream::unfold(s, |mut s| async move {
        let mut idle = Duration::ZERO;
        loop {
            if let Some(frame) = s.queue.pop_front() {
                return Some((Ok(frame), s));
            }
            if s.started.elapsed() > STREAM_MAX {
                return None;
            }
            match service::events(&s.db, s.user, s.seq, 100).await {
                Ok(events) if !events.is_empty() => {
                    for e in events {
                        s.seq = e.seq;
                        let data = serde_json::to_string(&e).unwrap_or_default();
                        s.queue.push_back(Bytes::from(format!(
                            "id: {}\nevent: {}\ndata: {data}\n\n",
                            e.seq, e.kind
                        )));
                    }
                    continue;
                }
                Ok(_) => {}
                // The database is away: try again after the poll interval.
                Err(_) => {}
            }
            if idle >= KEEPALIVE {
                return Some((Ok(Bytes::from_static(b": keepalive\n\n")), s));
            }
            let wait = tokio::time::sleep(POLL);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => { idle += POLL; break; }
                    got = s.rx.recv() => match got {
                        Ok((t, u)) if t == s.tenant && u == s.user => break,
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => { idle += POLL; break; }
                    }
                }
            }
        }
    });
    Ok(Streamed {
        content_type: "text/event-stream",
        filename: None,
        body: Box::pin(body),
    })
}

/// The caller's notification preferences merged with the tenant's and platform's defaults
/// (each channel says where its value came from), quiet hours and contacts.
#[endpoint(
    operation_id = "neotenant.notifications.preferences",
    tags("notifications"),
    status_codes(200, 401)
)]
pub async fn preferences(caller: Caller, depot: &mut Depot) -> ApiResult<Reply<PreferencesView>> {
    let state = dep::<NotificationsState>(depot)?;
    Ok(Reply::ok(service::preferences(&state, &caller).await?))
}

/// Change preferences: `{"categories": {"mention": {"email": false, "sms": null}}}` (`null`
/// follows the defaults again), quiet hours, phone (E.164), push tokens.
#[endpoint(
    operation_id = "neotenant.notifications.patch_preferences",
    tags("notifications"),
    status_codes(200, 400, 401, 422)
)]
pub async fn patch_preferences(
    caller: Caller,
    body: JsonBody<PreferencesPatch>,
    depot: &mut Depot,
) -> ApiResult<Reply<PreferencesView>> {
    let state = dep::<NotificationsState>(depot)?;
    Ok(Reply::ok(
        service::patch_preferences(&state, &caller, body.0).await?,
    ))
}

/// A provider reports what became of a message it accepted (`delivered`, `failed`,
/// `bounced`), authenticated by its configured token as bearer.
#[endpoint(
    operation_id = "neotenant.notifications.provider_report",
    tags("notifications"),
    status_codes(204, 400, 401, 409, 422)
)]
pub async fn provider_report(
    tenant: CurrentTenant,
    id: Path<Uuid>,
    body: JsonBody<ProviderReport>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<NotificationsState>(depot)?;
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    service::report(&state, &tenant.0, id.0, bearer.as_deref(), body.0).await?;
    Ok(NoContent)
}

/// Routes that need no user credential.
pub fn public_router() -> Router {
    Router::with_path("notifications")
        .push(Router::with_path("unsubscribe").post(unsubscribe))
        .push(Router::with_path("deliveries/{id}/report").post(provider_report))
}

/// The routes of authenticated users.
pub fn router() -> Router {
    Router::new()
        .push(
            Router::with_path("notifications")
                .get(list)
                .post(send)
                .push(Router::with_path("analytics").get(analytics))
                .push(Router::with_path("deliveries/{id}/retry").post(retry_delivery))
                .push(
                    Router::with_path("{id}")
                        .get(get)
                        .delete(cancel)
                        .push(Router::with_path("deliveries").get(deliveries)),
                ),
        )
        .push(
            Router::with_path("notification-categories")
                .get(categories)
                .push(
                    Router::with_path("{key}")
                        .get(get_category)
                        .put(put_category)
                        .delete(delete_category),
                ),
        )
        .push(
            Router::with_path("notification-templates")
                .get(templates)
                .push(Router::with_path("preview").post(preview))
                .push(
                    Router::with_path("{category}/{channel}/{locale}")
                        .put(put_template)
                        .delete(delete_template),
                ),
        )
        .push(
            Router::with_path("notification-rules")
                .get(rules)
                .post(create_rule)
                .push(Router::with_path("{id}").delete(delete_rule)),
        )
        .push(
            Router::with_path("me/inbox")
                .get(inbox)
                .push(Router::with_path("count").get(inbox_count))
                .push(Router::with_path("stream").get(inbox_stream))
                .push(Router::with_path("read-all").post(read_all))
                .push(
                    Router::with_path("{id}")
                        .push(Router::with_path("read").post(read))
                        .push(Router::with_path("unread").post(unread))
                        .push(Router::with_path("archive").post(archive))
                        .push(Router::with_path("unarchive").post(unarchive)),
                ),
        )
        .push(
            Router::with_path("me/notification-preferences")
                .get(preferences)
                .patch(patch_preferences),
        )
}
