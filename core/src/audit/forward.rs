//! SIEM forwarding: sealed entries go to the tenant's syslog collector as RFC 5424 messages
//! over TCP, or TLS (RFC 5425), with octet-counting framing (RFC 6587), in chain order. TLS
//! verifies the collector's certificate against the public roots plus an optional CA the
//! tenant supplies.
//!
//! **Invariant:** the tenant's `forwarded_seq` moves only after the collector accepted the
//! whole batch, so a collector that is down delays forwarding and loses nothing (delivery is
//! at least once: a connection that breaks after a partial write repeats those entries).
//! One instance at a time forwards for a tenant (a try-lock), so instances do not duplicate.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use super::chain::Entry;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult};
use crate::schema::tenant::{audit_log, audit_settings};

/// Facility 13 (log audit), severity 6 (informational).
const PRI: u8 = 13 * 8 + 6;
const BATCH: i64 = 1000;

fn sd_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace(']', "\\]")
}

/// One RFC 5424 message for `e` of `tenant` (its `ten_…` id), framed with its octet count.
pub fn frame(tenant: &str, e: &Entry) -> Vec<u8> {
    let msgid: String = e
        .action
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect();
    let target = match &e.target_id {
        Some(id) => format!("{}/{id}", e.target_type),
        None => e.target_type.clone(),
    };
    let body = serde_json::json!({
        "id": crate::ids::AuditId(e.id).to_string(), "seq": e.seq, "at": e.at,
        "actor": {"type": e.actor_type, "id": e.actor_id}, "action": e.action,
        "target": {"type": e.target_type, "id": e.target_id}, "data": e.data,
        "request_id": e.request_id, "ip": e.ip, "user_agent": e.user_agent,
    });
    let msg = format!(
        "<{PRI}>1 {} neotenant neotenant - {} [audit@32473 tenant=\"{}\" seq=\"{}\" actor=\"{}\" target=\"{}\"] {}",
        e.at.to_rfc3339_opts(SecondsFormat::Micros, true),
        if msgid.is_empty() {
            "-".to_string()
        } else {
            msgid
        },
        sd_escape(tenant),
        e.seq.unwrap_or(0),
        sd_escape(&format!(
            "{}:{}",
            e.actor_type,
            e.actor_id.as_deref().unwrap_or("-")
        )),
        sd_escape(&target),
        body
    );
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}

/// Sends the next batch of sealed, not yet forwarded entries of one tenant, if it has a
/// collector configured; records success (cursor) or the error.
pub async fn forward_tenant(
    tenant: Uuid,
    db: &TenantDb,
    allow: &crate::netguard::AllowList,
) -> ApiResult<u64> {
    db.transaction(async |tx| {
        let conn = tx.conn();
        #[derive(QueryableByName)]
        struct Locked {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            locked: bool,
        }
        let locked: Locked = diesel::sql_query(
            "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || ':audit-forward')) AS locked",
        )
        .get_result(conn)
        .await?;
        if !locked.locked {
            return Ok::<_, ApiError>(0);
        }
        type Target = (Option<String>, Option<i32>, i64, bool, Option<String>);
        let settings: Option<Target> = audit_settings::table
            .select((
                audit_settings::syslog_host,
                audit_settings::syslog_port,
                audit_settings::forwarded_seq,
                audit_settings::syslog_tls,
                audit_settings::syslog_ca_pem,
            ))
            .first(conn)
            .await
            .optional()?;
        let Some((Some(host), Some(port), from, tls, ca_pem)) = settings else {
            return Ok(0);
        };
        let entries: Vec<Entry> = audit_log::table
            .filter(audit_log::seq.gt(from))
            .select(Entry::as_select())
            .order(audit_log::seq.asc())
            .limit(BATCH)
            .load(conn)
            .await?;
        let Some(last) = entries.last().and_then(|e| e.seq) else {
            return Ok(0);
        };
        let name = crate::ids::TenantId(tenant).to_string();
        let mut payload = Vec::new();
        for e in &entries {
            payload.extend(frame(&name, e));
        }
        let sent = send(&host, port as u16, tls, ca_pem.as_deref(), &payload, allow).await;
        match sent {
            Ok(()) => {
                diesel::update(audit_settings::table)
                    .set((
                        audit_settings::forwarded_seq.eq(last),
                        audit_settings::forwarded_at.eq(Utc::now()),
                        audit_settings::forward_error.eq(None::<String>),
                    ))
                    .execute(conn)
                    .await?;
                Ok(entries.len() as u64)
            }
            Err(error) => {
                tracing::debug!(tenant = %tenant, %error, "syslog collector unreachable; will retry");
                diesel::update(audit_settings::table)
                    .set(audit_settings::forward_error.eq(Some(error)))
                    .execute(conn)
                    .await?;
                Ok(0)
            }
        }
    })
    .await
}

/// The TLS settings for a collector: public roots plus `ca_pem`'s certificates.
pub fn tls_config(ca_pem: Option<&str>) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("the CA is not valid PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("the CA certificate is not usable: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("the CA holds no certificate".into());
        }
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())
    .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// Connects (TCP, or TLS verifying the collector's name) and writes `payload`.
async fn send(
    host: &str,
    port: u16,
    tls: bool,
    ca_pem: Option<&str>,
    payload: &[u8],
    allow: &crate::netguard::AllowList,
) -> Result<(), String> {
    // Only addresses the platform may reach for a tenant, resolved now (a name that changed
    // its answer since it was saved reaches nothing inside).
    let addrs = crate::netguard::resolve(host, port, allow)
        .await
        .map_err(|r| r.to_string())?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(&addrs[..]),
    )
    .await
    .map_err(|_| "connection timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let mut stream: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if tls {
        let config = tls_config(ca_pem)?;
        let name = rustls_pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("not a TLS server name: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        Box::new(
            tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| format!("TLS: {e}"))?,
        )
    } else {
        Box::new(tcp)
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        stream.write_all(payload).await?;
        stream.flush().await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| "sending timed out".to_string())?
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_octet_counted_rfc5424() {
        let e = Entry {
            id: Uuid::now_v7(),
            at: Utc::now(),
            actor_type: "user".into(),
            actor_id: Some("usr_1".into()),
            action: "role.created".into(),
            target_type: "role".into(),
            target_id: Some("rol_1\"]".into()),
            data: serde_json::json!({"k": "v"}),
            request_id: None,
            ip: None,
            user_agent: None,
            seq: Some(7),
            hash: None,
        };
        let f = String::from_utf8(frame("acme", &e)).unwrap();
        let (len, msg) = f.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        assert!(msg.starts_with("<110>1 "));
        assert!(msg.contains(" role.created [audit@32473 tenant=\"acme\" seq=\"7\""));
        assert!(msg.contains("target=\"role/rol_1\\\"\\]\""));
        assert!(msg.ends_with('}'));
    }
}
