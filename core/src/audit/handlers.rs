//! HTTP endpoints under `/v1/audit`: search, verify, export, a live stream and settings.
//! Every read is permissioned and itself audited.

use std::time::{Duration, Instant};

use bytes::Bytes;
use salvo::oapi::{ToSchema, endpoint};
use salvo::prelude::*;
use serde::Serialize;
use serde_json::json;

use super::chain::Signer;
use super::seal::{self, VerifyReport};
use super::search::{self, AuditEntry, Filter, Format};
use super::settings::{self, AuditSettings, AuditSettingsView};
use crate::audit::AuditState;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::extract::dep;
use crate::http::extract::{JsonBody, ListParams, Page};
use crate::http::reply::{Reply, Streamed};
use crate::ids::AuditId;
use crate::rbac::Caller;
use crate::rbac::Can;
use crate::rbac::need::{AuditConfigure, AuditExport, AuditRead};

/// Audits an access to the audit log (in its own transaction).
async fn record_access(caller: &Caller, action: &str, data: serde_json::Value) -> ApiResult<()> {
    super::record_alone(
        caller.db(),
        &caller.actor,
        super::Change {
            action,
            target_type: "audit_log",
            target_id: None,
            data,
        },
    )
    .await
}

fn filter_json(f: &Filter) -> serde_json::Value {
    json!({"actor": f.actor, "action": f.action, "target_type": f.target_type,
           "target_id": f.target_id, "from": f.from, "to": f.to, "request_id": f.request_id})
}

/// Search the audit log, newest first. Filters: `actor` (an actor id), `action` (exact, or a
/// prefix ending in `.`), `target_type`, `target_id`, `from`/`to` (RFC 3339), `request_id`.
#[endpoint(tags("audit"), status_codes(200, 400, 401, 403))]
pub async fn search_audit(
    can: Can<AuditRead>,
    page: ListParams<AuditId>,
    req: &mut Request,
) -> ApiResult<Reply<Page<AuditEntry>>> {
    let filter = Filter::from_query(req)?;
    let rows = search::search(
        can.db(),
        &filter,
        page.after.map(|a| a.0),
        i64::from(page.limit) + 1,
    )
    .await?;
    record_access(&can, "audit.searched", filter_json(&filter)).await?;
    Ok(Reply::ok(Page::from_rows(rows, page.limit, |e| e.id)))
}

/// Recompute the tenant's hash chain and check every signed checkpoint; reports the first
/// broken link.
#[endpoint(tags("audit"), status_codes(200, 401, 403))]
pub async fn verify_audit(
    can: Can<AuditRead>,
    depot: &mut Depot,
) -> ApiResult<Reply<VerifyReport>> {
    let state = dep::<AuditState>(depot)?;
    let signer = Signer::new(state.config.audit.signing_key.expose());
    let report = seal::verify_tenant(&signer, &state.registry, can.tenant_id().0, can.db()).await?;
    record_access(
        &can,
        "audit.verified",
        json!({"ok": report.ok, "entries": report.entries}),
    )
    .await?;
    Ok(Reply::ok(report))
}

/// Export the audit log (filtered like search), oldest first, streamed: `format=csv` or
/// `format=jsonl` (JSON Lines).
#[endpoint(tags("audit"), status_codes(200, 400, 401, 403))]
pub async fn export_audit(can: Can<AuditExport>, req: &mut Request) -> ApiResult<Streamed> {
    let format = match req.query::<String>("format").as_deref() {
        Some("csv") => Format::Csv,
        Some("jsonl") | None => Format::JsonLines,
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidParameter,
                "query parameter `format` must be csv or jsonl",
            ));
        }
    };
    let filter = Filter::from_query(req)?;
    record_access(
        &can,
        "audit.exported",
        json!({"format": if format == Format::Csv { "csv" } else { "jsonl" }, "filter": filter_json(&filter)}),
    )
    .await?;
    let db = can.db().clone();
    let header = (format == Format::Csv).then(|| Bytes::from_static(search::CSV_HEADER.as_bytes()));
    // Pages of 1000 rows, each read in its own short transaction; memory stays flat.
    let pages = futures::stream::unfold(
        (db, filter, None::<uuid::Uuid>, false),
        move |(db, filter, after, done)| async move {
            if done {
                return None;
            }
            match search::page(&db, &filter, after, 1000, search::Direction::Newer).await {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let last = rows.last().map(|e| e.id.0);
                    let done = rows.len() < 1000;
                    let chunk = search::export_chunk(format, &rows);
                    Some((Ok(Bytes::from(chunk)), (db, filter, last, done)))
                }
                Err(e) => {
                    // Headers are gone already: end the body early; the log says why.
                    tracing::warn!(error = %e.detail, "audit export stopped");
                    None
                }
            }
        },
    );
    let body = futures::stream::iter(header.map(Ok)).chain(pages);
    use futures::StreamExt;
    Ok(Streamed {
        content_type: if format == Format::Csv {
            "text/csv; charset=utf-8"
        } else {
            "application/x-ndjson"
        },
        filename: Some(if format == Format::Csv {
            "audit.csv"
        } else {
            "audit.jsonl"
        }),
        body: body.boxed(),
    })
}

/// Live audit entries as Server-Sent Events (`id:` is the entry's chain position). Resume with
/// `Last-Event-ID` (or `?last_event_id=`); without it, the stream starts with new entries.
#[endpoint(tags("audit"), status_codes(200, 400, 401, 403))]
pub async fn stream_audit(can: Can<AuditRead>, req: &mut Request) -> ApiResult<Streamed> {
    let raw = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.query::<String>("last_event_id"));
    let db = can.db().clone();
    let from = match raw {
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    "Last-Event-ID must be a non-negative integer (an entry's seq)",
                )
            })?,
        None => search::head_seq(&db).await?,
    };
    record_access(&can, "audit.stream_opened", json!({"from_seq": from})).await?;
    let events = futures::stream::unfold(
        (db, from, Instant::now(), true),
        |(db, seq, mut quiet_since, first)| async move {
            loop {
                match search::sealed_after(&db, seq, 200).await {
                    Ok(rows) if !rows.is_empty() => {
                        let mut out = String::new();
                        let mut last = seq;
                        for e in &rows {
                            last = e.seq.unwrap_or(last);
                            let data = serde_json::to_string(e).unwrap_or_default();
                            out.push_str(&format!("id: {last}\nevent: audit\ndata: {data}\n\n"));
                        }
                        return Some((Ok(Bytes::from(out)), (db, last, Instant::now(), false)));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e.detail, "audit stream stopped");
                        return None;
                    }
                }
                if first || quiet_since.elapsed() >= Duration::from_secs(15) {
                    quiet_since = Instant::now();
                    return Some((
                        Ok(Bytes::from_static(b": keep-alive\n\n")),
                        (db, seq, quiet_since, false),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        },
    );
    use futures::StreamExt;
    Ok(Streamed {
        content_type: "text/event-stream",
        filename: None,
        body: events.boxed(),
    })
}

/// The tenant's audit settings and forwarding progress.
#[endpoint(tags("audit"), status_codes(200, 401, 403))]
pub async fn get_settings(can: Can<AuditRead>) -> ApiResult<Reply<AuditSettingsView>> {
    Ok(Reply::ok(settings::get(can.db()).await?))
}

/// Set retention and forwarding. Forwarding starts from the first entry not yet forwarded.
#[endpoint(tags("audit"), status_codes(200, 400, 401, 403, 422))]
pub async fn put_settings(
    can: Can<AuditConfigure>,
    body: JsonBody<AuditSettings>,
    depot: &mut Depot,
) -> ApiResult<Reply<AuditSettingsView>> {
    let state = dep::<crate::settings::SettingsState>(depot)?;
    let audit = dep::<crate::audit::AuditState>(depot)?;
    let allow = crate::netguard::AllowList::parse(&audit.config.webhooks.allow_hosts);
    Ok(Reply::ok(
        settings::put(&state, &can, &body.0, &allow).await?,
    ))
}

/// What a retention run did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Pruned {
    pub pruned: u64,
}

/// Apply the retention policy now (it also runs periodically).
#[endpoint(tags("audit"), status_codes(200, 401, 403, 409))]
pub async fn apply_retention(
    can: Can<AuditConfigure>,
    depot: &mut Depot,
) -> ApiResult<Reply<Pruned>> {
    let state = dep::<AuditState>(depot)?;
    let signer = Signer::new(state.config.audit.signing_key.expose());
    let pruned = seal::prune_tenant(&signer, can.tenant_id().0, can.db()).await?;
    record_access(&can, "audit.pruned", json!({"pruned": pruned})).await?;
    Ok(Reply::ok(Pruned { pruned }))
}

/// The `/v1/audit` routes.
pub fn router() -> Router {
    Router::with_path("audit")
        .get(search_audit)
        .push(Router::with_path("verify").get(verify_audit))
        .push(Router::with_path("export").get(export_audit))
        .push(Router::with_path("stream").get(stream_audit))
        .push(
            Router::with_path("settings")
                .get(get_settings)
                .put(put_settings),
        )
        .push(Router::with_path("retention/apply").post(apply_retention))
}
