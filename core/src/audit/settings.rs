//! A tenant's audit settings: retention and syslog forwarding. Validation (one 422 listing
//! every problem), and changes audited in their own transaction. SQL is `repo`. Retention is
//! a tenant setting (`compliance.audit_retention_days`): read from and written to the
//! settings, with their history.

use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Change, repo};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};

/// Where to forward the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.audit.handlers.Syslog"))]
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
#[salvo(schema(name = "neotenant.audit.handlers.AuditSettings"))]
pub struct AuditSettings {
    /// Keep entries this many days (1-36500); `null` keeps them forever.
    pub retention_days: Option<i32>,
    /// Forward every entry to this syslog collector (RFC 5424 over TCP); `null` turns it off.
    pub syslog: Option<Syslog>,
}

/// Forwarding progress, shown with the settings.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.audit.handlers.AuditSettingsView"))]
pub struct AuditSettingsView {
    /// As in [`AuditSettings`] (not flattened: that schema admits no other property).
    pub retention_days: Option<i32>,
    pub syslog: Option<Syslog>,
    /// The last entry (seq) the collector accepted.
    pub forwarded_seq: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Why the last forwarding attempt failed, if it did (it is retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_error: Option<String>,
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

/// Every problem with `s`, at once.
fn check(s: &AuditSettings) -> ApiResult<()> {
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
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errors))
    }
}

/// The settings and forwarding progress.
pub async fn get(db: &TenantDb) -> ApiResult<AuditSettingsView> {
    let (row, retention_days) = db
        .transaction(async |tx| {
            let conn = tx.conn();
            let row = repo::settings(conn).await?;
            let days = crate::settings::repo::audit_retention_days(conn).await?;
            Ok::<_, ApiError>((row, days))
        })
        .await?;
    Ok(AuditSettingsView {
        retention_days,
        syslog: match (row.syslog_host, row.syslog_port) {
            (Some(host), Some(port)) => Some(Syslog {
                host,
                port: port as u16,
                tls: row.syslog_tls,
                ca_pem: row.syslog_ca_pem,
            }),
            _ => None,
        },
        forwarded_seq: row.forwarded_seq,
        forwarded_at: row.forwarded_at,
        forward_error: row.forward_error,
    })
}

/// Replaces the settings (audited with before and after) and answers them.
pub async fn put(
    settings: &crate::settings::SettingsState,
    caller: &crate::rbac::Caller,
    s: &AuditSettings,
    allow: &crate::netguard::AllowList,
) -> ApiResult<AuditSettingsView> {
    check(s)?;
    // The collector must be somewhere the platform may connect for a tenant.
    if let Some(sys) = &s.syslog
        && let Err(refusal) = crate::netguard::check_host(&sys.host, sys.port, allow).await
    {
        let mut e = ApiError::new(ErrorCode::UrlRefused, refusal.to_string());
        e.errors.push(FieldError {
            pointer: "/syslog/host".into(),
            message: refusal.to_string(),
        });
        return Err(e);
    }
    let (db, actor) = (caller.db(), &caller.actor);
    let before = get(db).await?;
    if before.retention_days != s.retention_days {
        crate::settings::service::patch_for(
            settings,
            caller,
            &json!({"compliance": {"audit_retention_days": s.retention_days}}),
            "audit settings",
        )
        .await?;
    }
    db.transaction(async |tx| {
        let conn = tx.conn();
        let syslog = s.syslog.as_ref();
        repo::set_settings(
            conn,
            syslog.map(|x| x.host.as_str()),
            syslog.map(|x| i32::from(x.port)),
            syslog.is_some_and(|x| x.tls),
            syslog.and_then(|x| x.ca_pem.as_deref()),
        )
        .await?;
        super::record(
            conn,
            actor,
            Change {
                action: "audit.settings_changed",
                target_type: "audit_log",
                target_id: None,
                data: json!({"before": {"retention_days": before.retention_days, "syslog": before.syslog},
                             "after": s}),
            },
        )
        .await?;
        Ok::<_, ApiError>(())
    })
    .await?;
    get(db).await
}
