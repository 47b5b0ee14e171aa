//! HTTP endpoints of the event feed: `GET /v1/events` (pages of CloudEvents) and
//! `GET /v1/events/stream` (the same as Server-Sent Events, resumable). Parses, calls the
//! service, answers; no SQL.

use std::time::Duration;

use bytes::Bytes;
use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::EventPage;
use super::service;
use crate::error::ApiResult;
use crate::http::reply::{Reply, Streamed};
use crate::rbac::Can;
use crate::rbac::need::EventsRead;

/// How often an idle stream looks for new events.
const POLL: Duration = Duration::from_millis(500);
/// A comment line this often keeps idle connections (and proxies) open.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// A stream ends after this long; clients reconnect with `Last-Event-ID`.
const STREAM_MAX: Duration = Duration::from_secs(30 * 60);

/// The tenant's events after `?after=` (an event id; absent: from the beginning), oldest
/// first, as CloudEvents 1.0; `?types=resource.*,flag.changed` narrows. `next_cursor` is where
/// the next call continues, also when nothing matched. Needs `events.read`.
#[endpoint(
    operation_id = "neotenant.events.list",
    tags("events"),
    status_codes(200, 400, 401, 403)
)]
pub async fn list(can: Can<EventsRead>, req: &mut Request) -> ApiResult<Reply<EventPage>> {
    let after = service::parse_cursor(req.query::<String>("after").as_deref())?;
    let types = service::parse_types(req.query::<String>("types").as_deref())?;
    let limit = crate::http::extract::limit_param(req, 100, 1000)?;
    let t = &can.tenant.0;
    Ok(Reply::ok(
        service::page(&t.db, &t.tenant.slug, after, &types, limit).await?,
    ))
}

/// The same events as Server-Sent Events: `id:` is the event id, `event:` its type, `data:`
/// the CloudEvent. Resumes after `Last-Event-ID` (or `?after=`); without either it starts at
/// the events still to come. Ends after 30 minutes (reconnect with `Last-Event-ID`).
#[endpoint(
    operation_id = "neotenant.events.stream",
    tags("events"),
    status_codes(200, 400, 401, 403)
)]
pub async fn stream(can: Can<EventsRead>, req: &mut Request) -> ApiResult<Streamed> {
    let raw = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.query::<String>("after"));
    let types = service::parse_types(req.query::<String>("types").as_deref())?;
    let t = can.tenant.0.clone();
    let after = match raw {
        Some(r) => service::parse_cursor(Some(&r))?,
        None => service::head(&t.db).await?,
    };
    struct S {
        tenant: std::sync::Arc<crate::tenancy::cache::ResolvedTenant>,
        types: Vec<String>,
        at: crate::outbox::Cursor,
        queue: std::collections::VecDeque<Bytes>,
        started: tokio::time::Instant,
    }
    let s = S {
        tenant: t,
        types,
        at: after,
        queue: [Bytes::from_static(b"retry: 2000\n\n")].into(),
        started: tokio::time::Instant::now(),
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
            let t = &s.tenant;
            if let Ok(page) = service::page(&t.db, &t.tenant.slug, s.at, &s.types, 100).await {
                s.at = service::parse_cursor(Some(&page.next_cursor)).unwrap_or(s.at);
                for e in page.items {
                    let data = serde_json::to_string(&e).unwrap_or_default();
                    s.queue.push_back(Bytes::from(format!(
                        "id: {}\nevent: {}\ndata: {data}\n\n",
                        e.id, e.kind
                    )));
                }
                if !s.queue.is_empty() || page.has_more {
                    continue;
                }
            }
            if idle >= KEEPALIVE {
                return Some((Ok(Bytes::from_static(b": keepalive\n\n")), s));
            }
            tokio::time::sleep(POLL).await;
            idle += POLL;
        }
    });
    Ok(Streamed {
        content_type: "text/event-stream",
        filename: None,
        body: Box::pin(body),
    })
}

pub fn router() -> Router {
    Router::with_path("events")
        .get(list)
        .push(Router::with_path("stream").get(stream))
}
