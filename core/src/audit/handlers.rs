//! HTTP endpoints under `/v1/audit`: search, verify, export, a live stream and settings.
//! Every read is permissioned and itself audited.

use std::time::{Duration, Instant};

use bytes::Bytes;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use salvo::oapi::{ToSchema, endpoint};
use salvo::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::chain::Signer;
use super::seal::{self, VerifyReport};
use super::search::{self, AuditEntry, Filter, Format};
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::http::extract::state;
use crate::http::extract::{JsonBody, ListParams, Page};
use crate::http::reply::{Reply, Streamed};
use crate::ids::AuditId;
use crate::rbac::Caller;
use crate::rbac::Can;
use crate::rbac::need::{AuditConfigure, AuditExport, AuditRead};
use crate::schema::tenant::audit_settings;

/// Audits an access to the audit log (in its own transaction).
async fn record_access(caller: &Caller, action: &str, data: serde_json::Value) -> ApiResult<()> {
    super::record_alone(
        &caller.tenant.0.db,
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
        &can.tenant.0.db,
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
    let state = state(depot)?;
    let signer = Signer::new(state.config.audit.signing_key.expose());
    let report = seal::verify_tenant(
        &signer,
        &state.registry,
        can.tenant.0.tenant.id.0,
        &can.tenant.0.db,
    )
    .await?;
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
    let db = can.tenant.0.db.clone();
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
                    let mut chunk = String::with_capacity(rows.len() * 300);
                    for e in &rows {
                        chunk.push_str(&search::line(format, e));
                    }
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
    let db = can.tenant.0.db.clone();
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
        None => {
            let mut tx = db.begin().await?;
            let head = crate::schema::tenant::audit_log::table
                .select(diesel::dsl::max(crate::schema::tenant::audit_log::seq))
                .first::<Option<i64>>(tx.conn())
                .await;
            tx.finish(head).await?.unwrap_or(0)
        }
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

/// Where to forward the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Syslog {
    /// The collector's host name or IP address.
    pub host: String,
    pub port: u16,
    /// Use TLS (RFC 5425); the collector's certificate must match `host`.
    #[serde(default)]
    pub tls: bool,
    /// A CA certificate (PEM) to trust for the collector, besides the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

/// The tenant's audit settings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// Keep entries this many days (1-36500); `null` keeps them forever.
    pub retention_days: Option<i32>,
    /// Forward every entry to this syslog collector (RFC 5424 over TCP); `null` turns it off.
    pub syslog: Option<Syslog>,
}

/// Forwarding progress, shown with the settings.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditSettingsView {
    #[serde(flatten)]
    pub settings: AuditSettings,
    /// The last entry (seq) the collector accepted.
    pub forwarded_seq: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Why the last forwarding attempt failed, if it did (it is retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_error: Option<String>,
}

type SettingsRow = (
    Option<i32>,
    Option<String>,
    Option<i32>,
    i64,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<String>,
    bool,
    Option<String>,
);

async fn load_settings(db: &crate::db::TenantDb) -> ApiResult<AuditSettingsView> {
    let mut tx = db.begin().await?;
    let row = audit_settings::table
        .select((
            audit_settings::retention_days,
            audit_settings::syslog_host,
            audit_settings::syslog_port,
            audit_settings::forwarded_seq,
            audit_settings::forwarded_at,
            audit_settings::forward_error,
            audit_settings::syslog_tls,
            audit_settings::syslog_ca_pem,
        ))
        .first::<SettingsRow>(tx.conn())
        .await;
    let (retention_days, host, port, forwarded_seq, forwarded_at, forward_error, tls, ca_pem) =
        tx.finish(row).await?;
    Ok(AuditSettingsView {
        settings: AuditSettings {
            retention_days,
            syslog: match (host, port) {
                (Some(host), Some(port)) => Some(Syslog {
                    host,
                    port: port as u16,
                    tls,
                    ca_pem,
                }),
                _ => None,
            },
        },
        forwarded_seq,
        forwarded_at,
        forward_error,
    })
}

/// The tenant's audit settings and forwarding progress.
#[endpoint(tags("audit"), status_codes(200, 401, 403))]
pub async fn get_settings(can: Can<AuditRead>) -> ApiResult<Reply<AuditSettingsView>> {
    Ok(Reply::ok(load_settings(&can.tenant.0.db).await?))
}

fn valid_host(h: &str) -> bool {
    (1..=253).contains(&h.len())
        && h.parse::<std::net::IpAddr>().is_ok()
            | h.split('.').all(|l| {
                (1..=63).contains(&l.len())
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
}

/// Set retention and forwarding. Forwarding starts from the first entry not yet forwarded.
#[endpoint(tags("audit"), status_codes(200, 400, 401, 403, 422))]
pub async fn put_settings(
    can: Can<AuditConfigure>,
    body: JsonBody<AuditSettings>,
) -> ApiResult<Reply<AuditSettingsView>> {
    let s = &body.0;
    let mut errors = Vec::new();
    if s.retention_days.is_some_and(|d| !(1..=36500).contains(&d)) {
        errors.push(FieldError {
            pointer: "/retention_days".into(),
            message: "must be between 1 and 36500, or null".into(),
        });
    }
    if let Some(sys) = &s.syslog {
        if !valid_host(&sys.host) {
            errors.push(FieldError {
                pointer: "/syslog/host".into(),
                message: "must be a host name or IP address".into(),
            });
        }
        if sys.port == 0 {
            errors.push(FieldError {
                pointer: "/syslog/port".into(),
                message: "must be 1-65535".into(),
            });
        }
        if let Some(pem) = &sys.ca_pem {
            if !sys.tls {
                errors.push(FieldError {
                    pointer: "/syslog/ca_pem".into(),
                    message: "only used with tls: true".into(),
                });
            } else if pem.len() > 20_000 {
                errors.push(FieldError {
                    pointer: "/syslog/ca_pem".into(),
                    message: "at most 20000 characters".into(),
                });
            } else if let Err(e) = super::forward::tls_config(Some(pem)) {
                errors.push(FieldError {
                    pointer: "/syslog/ca_pem".into(),
                    message: e,
                });
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let before = load_settings(&can.tenant.0.db).await?;
    let mut tx = can.tenant.0.db.begin().await?;
    let result = async {
        let conn = tx.conn();
        diesel::update(audit_settings::table)
            .set((
                audit_settings::retention_days.eq(s.retention_days),
                audit_settings::syslog_host.eq(s.syslog.as_ref().map(|x| x.host.clone())),
                audit_settings::syslog_port.eq(s.syslog.as_ref().map(|x| i32::from(x.port))),
                audit_settings::syslog_tls.eq(s.syslog.as_ref().is_some_and(|x| x.tls)),
                audit_settings::syslog_ca_pem.eq(s.syslog.as_ref().and_then(|x| x.ca_pem.clone())),
                audit_settings::updated_at.eq(chrono::Utc::now()),
            ))
            .execute(conn)
            .await?;
        super::record(
            conn,
            &can.actor,
            super::Change {
                action: "audit.settings_changed",
                target_type: "audit_log",
                target_id: None,
                data: json!({"before": before.settings, "after": s}),
            },
        )
        .await?;
        Ok::<_, ApiError>(())
    }
    .await;
    tx.finish(result).await?;
    Ok(Reply::ok(load_settings(&can.tenant.0.db).await?))
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
    let state = state(depot)?;
    let signer = Signer::new(state.config.audit.signing_key.expose());
    let pruned = seal::prune_tenant(&signer, can.tenant.0.tenant.id.0, &can.tenant.0.db).await?;
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
