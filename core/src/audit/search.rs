//! Search and export: filters over actor, action, target, time and request id, keyset pages by
//! id (UUIDv7, so id order is time order and the time filter becomes an id range on the same
//! indexes), and streamed CSV / JSON Lines exports.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use salvo::oapi::ToSchema;
use serde::Serialize;
use uuid::Uuid;

use super::chain::Entry;
use crate::csv::{Cell, CsvRows};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ids::AuditId;
use crate::schema::tenant::audit_log;

/// What to look for; every field optional.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub actor: Option<String>,
    /// An exact action, or a prefix ending in `.` (`role.` matches `role.created`, …).
    pub action: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub request_id: Option<String>,
}

/// The smallest UUIDv7 of the millisecond `t`.
pub fn id_floor(t: DateTime<Utc>) -> Uuid {
    let ms = t.timestamp_millis().max(0) as u64;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70;
    b[8] = 0x80;
    Uuid::from_bytes(b)
}

fn bad(name: &str, message: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidParameter,
        format!("query parameter `{name}` {message}"),
    )
}

impl Filter {
    /// Reads the filter from query parameters, refusing malformed values.
    pub fn from_query(req: &salvo::Request) -> ApiResult<Self> {
        let text = |name: &str, max: usize| -> ApiResult<Option<String>> {
            match req.query::<String>(name) {
                None => Ok(None),
                Some(v) if v.is_empty() || v.chars().count() > max => {
                    Err(bad(name, &format!("must be 1-{max} characters")))
                }
                Some(v) => Ok(Some(v)),
            }
        };
        let time = |name: &str| -> ApiResult<Option<DateTime<Utc>>> {
            match req.query::<String>(name) {
                None => Ok(None),
                Some(v) => DateTime::parse_from_rfc3339(&v)
                    .map(|t| Some(t.with_timezone(&Utc)))
                    .map_err(|_| bad(name, "must be an RFC 3339 time")),
            }
        };
        let f = Filter {
            actor: text("actor", 200)?,
            action: text("action", 100)?,
            target_type: text("target_type", 100)?,
            target_id: text("target_id", 200)?,
            from: time("from")?,
            to: time("to")?,
            request_id: text("request_id", 128)?,
        };
        if let (Some(from), Some(to)) = (f.from, f.to)
            && from > to
        {
            return Err(bad("from", "must not be after `to`"));
        }
        Ok(f)
    }

    fn query(&self) -> audit_log::BoxedQuery<'static, diesel::pg::Pg> {
        let mut q = audit_log::table.into_boxed();
        if let Some(a) = &self.actor {
            q = q.filter(audit_log::actor_id.eq(a.clone()));
        }
        if let Some(a) = &self.action {
            if let Some(prefix) = a.strip_suffix('.') {
                let escaped = prefix
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                q = q.filter(audit_log::action.like(format!("{escaped}.%")));
            } else {
                q = q.filter(audit_log::action.eq(a.clone()));
            }
        }
        if let Some(t) = &self.target_type {
            q = q.filter(audit_log::target_type.eq(t.clone()));
        }
        if let Some(t) = &self.target_id {
            q = q.filter(audit_log::target_id.eq(t.clone()));
        }
        if let Some(r) = &self.request_id {
            q = q.filter(audit_log::request_id.eq(r.clone()));
        }
        if let Some(from) = self.from {
            q = q.filter(audit_log::id.ge(id_floor(from)));
        }
        if let Some(to) = self.to {
            q = q.filter(audit_log::id.lt(id_floor(to + chrono::Duration::milliseconds(1))));
        }
        q
    }
}

/// An audit entry as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: AuditId,
    /// Position in the tenant's chain; absent until sealed (within a second or so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub at: DateTime<Utc>,
    /// `user`, `api_key`, `system` or `platform`.
    pub actor_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    pub action: String,
    pub target_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    #[salvo(schema(value_type = Object))]
    pub data: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Hex of the chain hash, once sealed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

impl From<Entry> for AuditEntry {
    fn from(e: Entry) -> Self {
        AuditEntry {
            id: AuditId(e.id),
            seq: e.seq,
            at: e.at,
            actor_type: e.actor_type,
            actor_id: e.actor_id,
            action: e.action,
            target_type: e.target_type,
            target_id: e.target_id,
            data: e.data,
            request_id: e.request_id,
            ip: e.ip,
            user_agent: e.user_agent,
            hash: e.hash.map(hex::encode),
        }
    }
}

/// Orders by id, spelled so that PostgreSQL walks the index of the most selective equality
/// filter backwards (`ORDER BY actor_id DESC, id DESC` equals `ORDER BY id DESC` when the
/// actor is fixed, and matches the `(actor_id, id)` index) instead of scanning the primary key
/// and filtering.
fn newest_first(
    q: audit_log::BoxedQuery<'static, diesel::pg::Pg>,
    f: &Filter,
) -> audit_log::BoxedQuery<'static, diesel::pg::Pg> {
    let exact_action = f.action.as_deref().is_some_and(|a| !a.ends_with('.'));
    if f.request_id.is_some() {
        q.order((audit_log::request_id.desc(), audit_log::id.desc()))
    } else if f.target_type.is_some() && f.target_id.is_some() {
        q.order((
            audit_log::target_type.desc(),
            audit_log::target_id.desc(),
            audit_log::id.desc(),
        ))
    } else if f.actor.is_some() {
        q.order((audit_log::actor_id.desc(), audit_log::id.desc()))
    } else if exact_action {
        q.order((audit_log::action.desc(), audit_log::id.desc()))
    } else {
        q.order(audit_log::id.desc())
    }
}

/// Which way a page goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Newest first, before the cursor (search).
    Older,
    /// Oldest first, after the cursor (exports).
    Newer,
}

/// One page of entries matching `filter`, at most `limit`, from `cursor` in `direction`.
pub async fn page(
    db: &TenantDb,
    filter: &Filter,
    cursor: Option<Uuid>,
    limit: i64,
    direction: Direction,
) -> ApiResult<Vec<AuditEntry>> {
    let mut q = match direction {
        Direction::Older => newest_first(filter.query(), filter),
        Direction::Newer => filter.query().order(audit_log::id.asc()),
    }
    .select(Entry::as_select())
    .limit(limit);
    if let Some(c) = cursor {
        q = match direction {
            Direction::Older => q.filter(audit_log::id.lt(c)),
            Direction::Newer => q.filter(audit_log::id.gt(c)),
        };
    }
    // A generic plan cannot see which filter is selective (nor the limit) and walks the
    // primary key; plan each page for its actual values. One round trip: the setting is
    // pipelined with the query.
    let rows: Vec<Entry> = db
        .read(async |conn| {
            use diesel_async::SimpleAsyncConnection;
            let (mut setter, mut reader) = (conn, conn);
            let (_, rows) = futures::future::try_join(
                setter.batch_execute("SET LOCAL plan_cache_mode = force_custom_plan"),
                q.load(&mut reader),
            )
            .await?;
            Ok::<_, ApiError>(rows)
        })
        .await?;
    Ok(rows.into_iter().map(AuditEntry::from).collect())
}

/// Newest first, before `before`, at most `limit`.
pub async fn search(
    db: &TenantDb,
    filter: &Filter,
    before: Option<Uuid>,
    limit: i64,
) -> ApiResult<Vec<AuditEntry>> {
    page(db, filter, before, limit, Direction::Older).await
}

/// The highest sequence number sealed so far (0 for an empty log).
pub async fn head_seq(db: &TenantDb) -> ApiResult<i64> {
    db.transaction(async |tx| {
        Ok::<_, ApiError>(
            crate::schema::tenant::audit_log::table
                .select(diesel::dsl::max(crate::schema::tenant::audit_log::seq))
                .first::<Option<i64>>(tx.conn())
                .await?
                .unwrap_or(0),
        )
    })
    .await
}

/// Sealed entries after `seq`, in chain order (streaming).
pub async fn sealed_after(db: &TenantDb, seq: i64, limit: i64) -> ApiResult<Vec<AuditEntry>> {
    let rows: Vec<Entry> = db
        .transaction(async |tx| {
            let rows = audit_log::table
                .filter(audit_log::seq.gt(seq))
                .select(Entry::as_select())
                .order(audit_log::seq.asc())
                .limit(limit)
                .load(tx.conn())
                .await?;
            Ok::<_, ApiError>(rows)
        })
        .await?;
    Ok(rows.into_iter().map(AuditEntry::from).collect())
}

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

pub const CSV_HEADER: &str = "id,seq,at,actor_type,actor_id,action,target_type,target_id,request_id,ip,user_agent,data,hash\n";

/// Entries as a piece of the export: a line each (JSON Lines), or a CSV row each with every
/// cell guarded against spreadsheet formulas.
pub fn export_chunk(format: Format, entries: &[AuditEntry]) -> Vec<u8> {
    match format {
        Format::JsonLines => {
            let mut out = String::with_capacity(entries.len() * 300);
            for e in entries {
                out.push_str(&serde_json::to_string(e).unwrap_or_default());
                out.push('\n');
            }
            out.into_bytes()
        }
        Format::Csv => {
            let mut rows = CsvRows::new();
            for e in entries {
                let fields = [
                    e.id.to_string(),
                    e.seq.map(|s| s.to_string()).unwrap_or_default(),
                    e.at.to_rfc3339(),
                    e.actor_type.clone(),
                    e.actor_id.clone().unwrap_or_default(),
                    e.action.clone(),
                    e.target_type.clone(),
                    e.target_id.clone().unwrap_or_default(),
                    e.request_id.clone().unwrap_or_default(),
                    e.ip.clone().unwrap_or_default(),
                    e.user_agent.clone().unwrap_or_default(),
                    e.data.to_string(),
                    e.hash.clone().unwrap_or_default(),
                ];
                rows.row(fields.iter().map(|f| Cell::Text(f)));
            }
            rows.take()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_order_like_ids() {
        let t = Utc::now();
        let floor = id_floor(t);
        let id = Uuid::now_v7();
        assert!(floor <= id);
        assert!(id_floor(t + chrono::Duration::seconds(1)) > id);
        assert_eq!(floor.get_version_num(), 7);
    }

    fn sample_entry() -> AuditEntry {
        AuditEntry {
            id: AuditId(Uuid::now_v7()),
            seq: Some(7),
            at: Utc::now(),
            actor_type: "user".into(),
            actor_id: Some("u-1".into()),
            action: "role.created".into(),
            target_type: "role".into(),
            target_id: Some("-editor".into()),
            data: serde_json::json!({"name": "editor"}),
            request_id: None,
            ip: Some("127.0.0.1".into()),
            user_agent: None,
            hash: None,
        }
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let entry = AuditEntry {
            user_agent: Some("=HYPERLINK(\"x\")".into()),
            ..sample_entry()
        };
        let csv = String::from_utf8(export_chunk(Format::Csv, &[entry])).unwrap();
        assert!(csv.contains(",\"'=HYPERLINK(\"\"x\"\")\","), "{csv}");
        assert!(csv.contains(",\"'-editor\","), "{csv}");
        assert!(csv.ends_with('\n') && csv.lines().count() == 1, "{csv}");
    }
}
