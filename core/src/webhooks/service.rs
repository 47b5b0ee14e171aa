//! The rules of webhooks: endpoints (URL shape and reach, filters from the catalogue, limits),
//! their secrets (made here, sealed before they are stored, shown once, rotated with an
//! overlap), the delivery log, manual retries and replays. Each change is one tenant
//! transaction with its audit entry (never a secret in it).

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::model::{
    AttemptView, EndpointCreated, EndpointInput, EndpointPatch, EndpointView, EventTypeView,
    MessageView, Replayed, Rotated,
};
use super::repo::{self, EndpointRow, NewMessage};
use super::{WebhooksState, catalogue, signing};
use crate::audit::{self, Change};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::netguard as ssrf;
use crate::outbox::Event;
use crate::rbac::Caller;

/// The longest a previous secret may keep signing after a rotation.
const MAX_OVERLAP_SECS: u64 = 7 * 86_400;

fn field(pointer: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        pointer: pointer.to_string(),
        message: message.into(),
    }
}

/// The published event types.
pub fn event_types() -> Vec<EventTypeView> {
    catalogue::EVENT_TYPES
        .iter()
        .chain(std::iter::once(&catalogue::PLUGIN_EVENTS))
        .map(|t| EventTypeView {
            name: t.name.to_string(),
            description: t.description.to_string(),
            schema: (t.data)(),
        })
        .collect()
}

/// The message id as receivers see it (`webhook-id`).
pub fn message_id(id: Uuid) -> String {
    format!("msg_{}", id.simple())
}

fn parse_message_id(s: &str) -> ApiResult<Uuid> {
    s.strip_prefix("msg_")
        .and_then(|u| Uuid::parse_str(u).ok())
        .or_else(|| Uuid::parse_str(s).ok())
        .ok_or_else(|| ApiError::not_found("webhook message"))
}

/// The body sent for an outbox event (Standard Webhooks' recommended shape).
pub fn payload(ev: &Event) -> serde_json::Value {
    json!({
        "type": ev.topic,
        "timestamp": ev.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "id": format!("evt_{}_{}", ev.txid, ev.seq),
        "subject": {"type": ev.aggregate_type, "id": ev.aggregate_id},
        "data": ev.payload,
    })
}

/// The message an event makes for an endpoint.
pub fn message_for(endpoint: Uuid, ev: &Event) -> NewMessage {
    NewMessage {
        id: Uuid::now_v7(),
        endpoint,
        event_type: ev.topic.clone(),
        event_id: format!("{}:{}", ev.txid, ev.seq),
        event_at: ev.at,
        payload: payload(ev),
    }
}

fn view(e: &EndpointRow) -> EndpointView {
    EndpointView {
        id: e.id,
        url: e.url.clone(),
        description: e.description.clone(),
        event_types: e.event_types.clone(),
        rate_limit: e.rate_limit.map(|r| r as u32),
        enabled: e.enabled,
        disabled_reason: e.disabled_reason.clone(),
        failing_since: e.failing_since,
        public_key: e.public_key.clone(),
        previous_secret_until: e
            .previous_expires_at
            .filter(|at| *at > Utc::now() && e.previous_secret.is_some()),
        created_at: e.created_at,
        updated_at: e.updated_at,
    }
}

/// An endpoint URL as it may be saved: of the right shape, to a host the tenant's settings
/// list (when they list any), reaching only what the platform allows.
async fn check_url(state: &WebhooksState, caller: &Caller, raw: &str) -> ApiResult<String> {
    let url = ssrf::check_shape(raw)
        .map_err(|r| ApiError::validation(vec![field("/url", r.to_string())]))?;
    let host = url.host_str().unwrap_or_default();
    let settings = crate::settings::service::effective(&state.settings, &caller.tenant.0).await?;
    if !settings.integrations.host_allowed(host) {
        let why =
            format!("the tenant's settings (integrations.allowed_hosts) do not list `{host}`");
        let mut e = ApiError::new(ErrorCode::UrlRefused, why.clone());
        e.errors.push(field("/url", why));
        return Err(e);
    }
    ssrf::check(&url, &state.allow).await.map_err(|r| {
        let mut e = ApiError::new(ErrorCode::UrlRefused, r.to_string());
        e.errors.push(field("/url", r.to_string()));
        e
    })?;
    Ok(url.to_string())
}

fn check_fields(
    description: &str,
    event_types: &[String],
    rate_limit: Option<u32>,
) -> ApiResult<()> {
    let mut errors = Vec::new();
    if description.chars().count() > 500 {
        errors.push(field("/description", "at most 500 characters"));
    }
    if event_types.len() > 100 {
        errors.push(field("/event_types", "at most 100 filters"));
    }
    for (i, t) in event_types.iter().enumerate() {
        if !catalogue::valid_filter(t) {
            errors.push(field(
                &format!("/event_types/{i}"),
                format!("`{t}` is not a published event type or family (see GET /v1/event-types)"),
            ));
        }
    }
    if rate_limit.is_some_and(|r| !(1..=10_000).contains(&r)) {
        errors.push(field(
            "/rate_limit",
            "must be between 1 and 10000 per second",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errors))
    }
}

fn change(action: &'static str, e: &EndpointRow) -> Change<'static> {
    Change {
        action,
        target_type: "webhook_endpoint",
        target_id: Some(e.id.to_string()),
        data: json!({"url": e.url, "event_types": e.event_types, "enabled": e.enabled}),
    }
}

pub async fn create(
    state: &WebhooksState,
    caller: &Caller,
    input: EndpointInput,
) -> ApiResult<EndpointCreated> {
    check_fields(&input.description, &input.event_types, input.rate_limit)?;
    let url = check_url(state, caller, &input.url).await?;
    let tenant = caller.tenant.0.tenant.id.0;
    let id = Uuid::now_v7();
    let secret = signing::new_secret();
    let seal = |what: &str, v: &str| {
        state
            .keyring
            .seal_str(&WebhooksState::seal_context(tenant, id, what), v)
    };
    let (signing_key, public_key) = if input.asymmetric {
        let (sk, pk) = signing::new_signing_key();
        (Some(seal("signing_key", &sk)), Some(pk))
    } else {
        (None, None)
    };
    let now = Utc::now();
    let row = EndpointRow {
        id,
        url,
        description: input.description,
        event_types: input.event_types,
        rate_limit: input.rate_limit.map(|r| r as i32),
        enabled: input.enabled,
        disabled_reason: (!input.enabled).then(|| "by request".to_string()),
        secret: seal("secret", &secret),
        previous_secret: None,
        previous_expires_at: None,
        signing_key,
        public_key,
        failing_since: None,
        created_at: now,
        updated_at: now,
    };
    let user = caller.user.user.id.0;
    let saved = caller
        .tenant
        .0
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            let max = state.config.limits.webhook_endpoints_per_tenant;
            if !repo::under_cap(conn, max).await? {
                return Err(ApiError::limit_reached("webhook endpoints per tenant", max));
            }
            let saved = repo::insert_endpoint(conn, &row, Some(user)).await?;
            audit::record(
                conn,
                &caller.actor,
                change("webhook.endpoint_created", &saved),
            )
            .await?;
            Ok::<_, ApiError>(saved)
        })
        .await?;
    Ok(EndpointCreated {
        endpoint: view(&saved),
        secret,
    })
}

pub async fn list(db: &TenantDb) -> ApiResult<Vec<EndpointView>> {
    let rows = db
        .transaction(async |tx| Ok::<_, ApiError>(repo::endpoints(tx.conn()).await?))
        .await?;
    Ok(rows.iter().map(view).collect())
}

pub async fn get(db: &TenantDb, id: Uuid) -> ApiResult<EndpointView> {
    let row = db
        .transaction(async |tx| Ok::<_, ApiError>(repo::endpoint(tx.conn(), id, false).await?))
        .await?;
    row.as_ref()
        .map(view)
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

pub async fn update(
    state: &WebhooksState,
    caller: &Caller,
    id: Uuid,
    patch: EndpointPatch,
) -> ApiResult<EndpointView> {
    let url = match &patch.url {
        Some(u) => Some(check_url(state, caller, u).await?),
        None => None,
    };
    let saved = caller
        .tenant
        .0
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            let mut row = repo::endpoint(conn, id, true)
                .await?
                .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
            if let Some(u) = &url {
                row.url = u.clone();
            }
            if let Some(d) = &patch.description {
                row.description = d.clone();
            }
            if let Some(t) = &patch.event_types {
                row.event_types = t.clone();
            }
            if let Some(r) = patch.rate_limit {
                row.rate_limit = r.map(|r| r as i32);
            }
            check_fields(
                &row.description,
                &row.event_types,
                row.rate_limit.map(|r| r as u32),
            )?;
            match patch.enabled {
                Some(true) => {
                    row.enabled = true;
                    row.disabled_reason = None;
                    row.failing_since = None;
                }
                Some(false) if row.enabled => {
                    row.enabled = false;
                    row.disabled_reason = Some("by request".into());
                }
                _ => {}
            }
            let saved = repo::update_endpoint(conn, &row).await?;
            audit::record(
                conn,
                &caller.actor,
                change("webhook.endpoint_updated", &saved),
            )
            .await?;
            Ok::<_, ApiError>(saved)
        })
        .await?;
    Ok(view(&saved))
}

pub async fn delete(caller: &Caller, id: Uuid) -> ApiResult<()> {
    caller
        .tenant
        .0
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            let row = repo::endpoint(conn, id, true)
                .await?
                .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
            repo::delete_endpoint(conn, id).await?;
            audit::record(
                conn,
                &caller.actor,
                change("webhook.endpoint_deleted", &row),
            )
            .await?;
            Ok(())
        })
        .await
}

/// A new secret; the previous one keeps signing beside it for `keep_previous_secs`.
pub async fn rotate(
    state: &WebhooksState,
    caller: &Caller,
    id: Uuid,
    keep_previous_secs: Option<u64>,
) -> ApiResult<Rotated> {
    let keep = keep_previous_secs.unwrap_or(86_400);
    if keep > MAX_OVERLAP_SECS {
        return Err(ApiError::validation(vec![field(
            "/keep_previous_secs",
            "at most 604800 (7 days)",
        )]));
    }
    let tenant = caller.tenant.0.tenant.id.0;
    let secret = signing::new_secret();
    let sealed = state
        .keyring
        .seal_str(&WebhooksState::seal_context(tenant, id, "secret"), &secret);
    let until = (keep > 0).then(|| Utc::now() + chrono::Duration::seconds(keep as i64));
    caller
        .tenant
        .0
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            let mut row = repo::endpoint(conn, id, true)
                .await?
                .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
            row.previous_secret = until.map(|_| row.secret.clone());
            row.previous_expires_at = until;
            row.secret = sealed.clone();
            repo::update_endpoint(conn, &row).await?;
            audit::record(
                conn,
                &caller.actor,
                Change {
                    action: "webhook.secret_rotated",
                    target_type: "webhook_endpoint",
                    target_id: Some(id.to_string()),
                    data: json!({"previous_secret_until": until}),
                },
            )
            .await?;
            Ok::<_, ApiError>(())
        })
        .await?;
    Ok(Rotated {
        secret,
        previous_secret_until: until,
    })
}

fn message_view(m: repo::MessageRow) -> MessageView {
    MessageView {
        id: message_id(m.id),
        endpoint_id: m.endpoint_id,
        event_type: m.event_type,
        event_id: m.event_id,
        event_at: m.event_at,
        next_attempt_at: (m.status == "pending").then_some(m.due_at),
        status: m.status,
        attempts: m.attempts,
        last_status: m.last_status,
        last_error: m.last_error,
        created_at: m.created_at,
        delivered_at: m.delivered_at,
        payload: m.payload,
    }
}

/// An endpoint's messages, newest first; `status` narrows (`failed` lists the dead letters).
pub async fn messages(
    db: &TenantDb,
    endpoint: Uuid,
    status: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> ApiResult<Vec<MessageView>> {
    if status.is_some_and(|s| !["pending", "succeeded", "failed"].contains(&s)) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "status must be pending, succeeded or failed",
        ));
    }
    let rows = db
        .transaction(async |tx| {
            let conn = tx.conn();
            if repo::endpoint(conn, endpoint, false).await?.is_none() {
                return Err(ApiError::not_found("webhook endpoint"));
            }
            let after = match after {
                Some(a) => {
                    let m = repo::message(conn, parse_message_id(a)?)
                        .await?
                        .ok_or_else(|| {
                            ApiError::new(ErrorCode::InvalidParameter, "the cursor is unknown")
                        })?;
                    Some((m.created_at, m.id))
                }
                None => None,
            };
            Ok(repo::messages(conn, endpoint, status, after, limit).await?)
        })
        .await?;
    Ok(rows.into_iter().map(message_view).collect())
}

/// One message with its attempts.
pub async fn message(db: &TenantDb, id: &str) -> ApiResult<(MessageView, Vec<AttemptView>)> {
    let id = parse_message_id(id)?;
    let (m, attempts) = db
        .transaction(async |tx| {
            let conn = tx.conn();
            let m = repo::message(conn, id)
                .await?
                .ok_or_else(|| ApiError::not_found("webhook message"))?;
            let a = repo::attempts(conn, id).await?;
            Ok::<_, ApiError>((m, a))
        })
        .await?;
    Ok((
        message_view(m),
        attempts
            .into_iter()
            .map(|a| AttemptView {
                n: a.n,
                at: a.at,
                url: a.url,
                request_body: a.request_body,
                response_status: a.response_status,
                response_body: a.response_body,
                error: a.error,
                duration_ms: a.duration_ms,
            })
            .collect(),
    ))
}

/// Sends a message again from the start of its schedule (a dead letter, or one that
/// succeeded and is wanted again).
pub async fn retry(caller: &Caller, id: &str) -> ApiResult<()> {
    let id = parse_message_id(id)?;
    let change = Change {
        action: "webhook.message_retried",
        target_type: "webhook_message",
        target_id: Some(message_id(id)),
        data: json!({}),
    };
    audit::record_with(&caller.tenant.0.db, &caller.actor, change, async |conn| {
        if repo::message(conn, id).await?.is_none() {
            return Err(ApiError::not_found("webhook message"));
        }
        if !repo::retry(conn, id).await? {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "the message is still being delivered",
            ));
        }
        Ok(())
    })
    .await
}

/// Queues again every event of `[since, until)` the endpoint's filters take, as new messages
/// (new ids; receivers deduplicate by the body's `id`). More than `webhooks.replay_max`
/// events is refused as a whole.
pub async fn replay(
    state: &WebhooksState,
    caller: &Caller,
    endpoint: Uuid,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
) -> ApiResult<Replayed> {
    let until = until.unwrap_or_else(Utc::now);
    if until <= since {
        return Err(ApiError::validation(vec![field(
            "/until",
            "must be after since",
        )]));
    }
    let max = i64::from(state.config.webhooks.replay_max);
    caller
        .tenant
        .0
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            let row = repo::endpoint(conn, endpoint, false)
                .await?
                .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
            let events = repo::replay_events(conn, since, until, max + 1).await?;
            if events.len() as i64 > max {
                return Err(ApiError::new(
                    ErrorCode::RangeTooLarge,
                    format!("the range holds more than {max} events; replay a shorter one"),
                ));
            }
            let msgs: Vec<NewMessage> = events
                .iter()
                .filter(|e| catalogue::wanted(&row.event_types, &e.topic))
                .map(|e| message_for(endpoint, e))
                .collect();
            repo::insert_messages(conn, &msgs).await?;
            audit::record(
                conn,
                &caller.actor,
                Change {
                    action: "webhook.replayed",
                    target_type: "webhook_endpoint",
                    target_id: Some(endpoint.to_string()),
                    data: json!({"since": since, "until": until, "queued": msgs.len()}),
                },
            )
            .await?;
            Ok(Replayed { queued: msgs.len() })
        })
        .await
}

/// Moves every endpoint's sealed secrets of a tenant to the active master key; how many
/// endpoints changed.
pub async fn reseal(
    keyring: &crate::crypto::Keyring,
    tenant: Uuid,
    db: &TenantDb,
) -> ApiResult<usize> {
    db.transaction(async |tx| {
        let conn = tx.conn();
        let mut changed = 0;
        for mut row in repo::endpoints(conn).await? {
            let ctx = |what: &str| WebhooksState::seal_context(tenant, row.id, what);
            let fail = |e: crate::crypto::OpenError| {
                ApiError::new(
                    ErrorCode::Internal,
                    format!("webhook endpoint {}: {e}", row.id),
                )
            };
            let mut moved = false;
            if let Some(s) = keyring.rewrap(&ctx("secret"), &row.secret).map_err(fail)? {
                row.secret = s;
                moved = true;
            }
            if let Some(prev) = &row.previous_secret
                && let Some(s) = keyring.rewrap(&ctx("secret"), prev).map_err(fail)?
            {
                row.previous_secret = Some(s);
                moved = true;
            }
            if let Some(k) = &row.signing_key
                && let Some(s) = keyring.rewrap(&ctx("signing_key"), k).map_err(fail)?
            {
                row.signing_key = Some(s);
                moved = true;
            }
            if moved {
                repo::update_endpoint(conn, &row).await?;
                changed += 1;
            }
        }
        Ok(changed)
    })
    .await
}
