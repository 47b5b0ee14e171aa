//! SQL of the audit settings (a tenant's one `audit_settings` row). Entries themselves are
//! written by `audit::record` and read by `search` and `seal`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::schema::tenant::audit_settings;

/// The settings row.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = audit_settings, check_for_backend(diesel::pg::Pg))]
pub struct SettingsRow {
    pub syslog_host: Option<String>,
    pub syslog_port: Option<i32>,
    pub forwarded_seq: i64,
    pub forwarded_at: Option<DateTime<Utc>>,
    pub forward_error: Option<String>,
    pub syslog_tls: bool,
    pub syslog_ca_pem: Option<String>,
}

pub async fn settings(conn: &mut AsyncPgConnection) -> QueryResult<SettingsRow> {
    audit_settings::table
        .select(SettingsRow::as_select())
        .first(conn)
        .await
}

pub async fn set_settings(
    conn: &mut AsyncPgConnection,
    syslog_host: Option<&str>,
    syslog_port: Option<i32>,
    syslog_tls: bool,
    syslog_ca_pem: Option<&str>,
) -> QueryResult<usize> {
    diesel::update(audit_settings::table)
        .set((
            audit_settings::syslog_host.eq(syslog_host),
            audit_settings::syslog_port.eq(syslog_port),
            audit_settings::syslog_tls.eq(syslog_tls),
            audit_settings::syslog_ca_pem.eq(syslog_ca_pem),
            audit_settings::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await
}
