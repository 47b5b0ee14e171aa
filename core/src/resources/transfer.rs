//! Export and import of a type's resources as JSON Lines or CSV, streamed both ways.
//!
//! Export walks the caller's visible resources page by page (each page its own short
//! transaction) and writes them as it goes; memory stays flat. Import reads the body line by
//! line (a CSV record may span lines inside quotes), validates each row as a create would,
//! and inserts valid rows in batches: one transaction per batch, one savepoint per row, so a
//! rejected row never takes others with it. The report lists every rejected row (up to
//! 1,000) with its line number and field errors. Exported files import back.

use std::sync::Arc;

use bytes::Bytes;
use diesel_async::{AnsiTransactionManager, TransactionManager};
use futures::StreamExt;
use salvo::http::ReqBody;
use salvo::oapi::ToSchema;
use serde::Serialize;
use serde_json::{Value, json};

use super::ResourcesState;
use super::service::{self, Ctx, ListCursor, ListQuery};
use super::{Resource, ResourceInput, ResourceType};
use crate::csv::csv_field;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::ids::TeamId;
use crate::rbac::Caller;

/// The file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Csv,
}

impl Format {
    pub fn parse(raw: Option<&str>) -> ApiResult<Self> {
        match raw {
            None | Some("jsonl") => Ok(Format::JsonLines),
            Some("csv") => Ok(Format::Csv),
            Some(_) => Err(ApiError::new(
                ErrorCode::InvalidParameter,
                "query parameter `format` must be jsonl or csv",
            )),
        }
    }
}

/// The columns every CSV file has before the data fields.
const CSV_FIXED: [&str; 8] = [
    "id",
    "version",
    "created_at",
    "updated_at",
    "owner_id",
    "team_id",
    "tags",
    "category",
];

/// The data fields of a type, as CSV columns (schema property order is alphabetical).
fn data_columns(t: &ResourceType) -> Vec<String> {
    t.schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn csv_line(r: &Resource, columns: &[String]) -> String {
    let mut out = String::new();
    let fixed = [
        r.id.to_string(),
        r.version.to_string(),
        r.created_at.to_rfc3339(),
        r.updated_at.to_rfc3339(),
        r.owner_id.to_string(),
        r.team_id.map(|t| t.to_string()).unwrap_or_default(),
        r.tags.join(";"),
        r.category.clone().unwrap_or_default(),
    ];
    for (i, v) in fixed.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(&mut out, v);
    }
    for c in columns {
        out.push(',');
        match r.data.get(c) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => csv_field(&mut out, s),
            // Numbers and booleans stay bare (a formula guard would corrupt negatives).
            Some(v @ (Value::Number(_) | Value::Bool(_))) => out.push_str(&v.to_string()),
            Some(v) => csv_field(&mut out, &v.to_string()),
        }
    }
    out.push('\n');
    out
}

/// The export stream: the header (CSV), then every visible resource matching `q`.
pub async fn export(
    state: Arc<ResourcesState>,
    caller: Caller,
    type_name: String,
    format: Format,
    mut q: ListQuery,
) -> ApiResult<futures::stream::BoxStream<'static, Result<Bytes, std::convert::Infallible>>> {
    let t = service::get_type(
        &Ctx {
            state: &state,
            caller: &caller,
        },
        &type_name,
    )
    .await?;
    let columns = data_columns(&t);
    let header = (format == Format::Csv).then(|| {
        let mut h = CSV_FIXED.join(",");
        for c in &columns {
            h.push(',');
            csv_field(&mut h, c);
        }
        h.push('\n');
        Bytes::from(h)
    });
    q.limit = 500;
    q.sort = None;
    let pages = futures::stream::unfold(
        (state, caller, q, false),
        move |(state, caller, mut q, done)| {
            let type_name = type_name.clone();
            let columns = columns.clone();
            async move {
                if done {
                    return None;
                }
                let ctx = Ctx {
                    state: &state,
                    caller: &caller,
                };
                match service::list(&ctx, &type_name, &q).await {
                    Ok((rows, next)) if !rows.is_empty() => {
                        let mut chunk = String::with_capacity(rows.len() * 256);
                        for r in &rows {
                            match format {
                                Format::JsonLines => {
                                    chunk.push_str(&serde_json::to_string(r).unwrap_or_default());
                                    chunk.push('\n');
                                }
                                Format::Csv => chunk.push_str(&csv_line(r, &columns)),
                            }
                        }
                        let done = next.is_none();
                        q.after = rows.last().map(|r| ListCursor {
                            v: None,
                            id: r.id.0,
                        });
                        Some((Ok(Bytes::from(chunk)), (state, caller, q, done)))
                    }
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(error = %e.detail, "resource export stopped");
                        None
                    }
                }
            }
        },
    );
    Ok(futures::stream::iter(header.map(Ok)).chain(pages).boxed())
}

/// One rejected row.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Rejected {
    /// 1-based line (CSV: where the record starts; the header is line 1).
    pub line: usize,
    pub errors: Vec<FieldError>,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ImportReport {
    pub rows: usize,
    pub imported: usize,
    pub rejected: usize,
    /// The first 1,000 rejected rows.
    pub errors: Vec<Rejected>,
}

/// Splits one CSV record (RFC 4180) into cells.
pub fn csv_cells(record: &str) -> Result<Vec<String>, String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = record.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => quoted = false,
                c => cell.push(c),
            }
        } else {
            match c {
                '"' if at_start => {
                    quoted = true;
                    at_start = false;
                }
                '"' => return Err("a quote inside an unquoted cell".into()),
                ',' => {
                    cells.push(std::mem::take(&mut cell));
                    at_start = true;
                }
                '\r' if chars.peek().is_none() => {}
                c => {
                    cell.push(c);
                    at_start = false;
                }
            }
        }
    }
    if quoted {
        return Err("an unterminated quoted cell".into());
    }
    cells.push(cell);
    Ok(cells)
}

/// Undoes the export's formula guard.
fn unguard(s: &str) -> &str {
    match s.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => s,
    }
}

/// A CSV row as a create input, cells typed as the schema declares.
fn csv_row(
    t: &ResourceType,
    header: &[String],
    cells: &[String],
) -> Result<ResourceInput, Vec<FieldError>> {
    let mut errors = Vec::new();
    if cells.len() != header.len() {
        return Err(vec![FieldError {
            pointer: String::new(),
            message: format!(
                "{} cells where the header has {}",
                cells.len(),
                header.len()
            ),
        }]);
    }
    let mut input = ResourceInput {
        data: Value::Object(Default::default()),
        tags: Vec::new(),
        category: None,
        team_id: None,
    };
    for (name, raw) in header.iter().zip(cells) {
        let raw = unguard(raw);
        match name.as_str() {
            "id" | "version" | "created_at" | "updated_at" | "owner_id" => {}
            "tags" => {
                input.tags = raw
                    .split(';')
                    .filter(|s| !s.trim().is_empty())
                    .map(String::from)
                    .collect()
            }
            "category" => input.category = (!raw.is_empty()).then(|| raw.to_string()),
            "team_id" if !raw.is_empty() => match raw.parse::<TeamId>() {
                Ok(t) => input.team_id = Some(t),
                Err(e) => errors.push(FieldError {
                    pointer: "/team_id".into(),
                    message: e.to_string(),
                }),
            },
            "team_id" => {}
            field => {
                if raw.is_empty() {
                    continue;
                }
                let ty = t
                    .schema
                    .pointer(&format!(
                        "/properties/{}/type",
                        field.replace('~', "~0").replace('/', "~1")
                    ))
                    .and_then(Value::as_str)
                    .unwrap_or("string");
                let value = match ty {
                    "integer" => raw
                        .parse::<i64>()
                        .map(|v| json!(v))
                        .map_err(|_| "an integer"),
                    "number" => raw.parse::<f64>().map(|v| json!(v)).map_err(|_| "a number"),
                    "boolean" => raw
                        .parse::<bool>()
                        .map(|v| json!(v))
                        .map_err(|_| "true or false"),
                    "object" | "array" => serde_json::from_str(raw).map_err(|_| "JSON"),
                    _ => Ok(json!(raw)),
                };
                match value {
                    Ok(v) => {
                        input.data[field] = v;
                    }
                    Err(expected) => errors.push(FieldError {
                        pointer: format!("/data/{field}"),
                        message: format!("must be {expected}"),
                    }),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(input)
    } else {
        Err(errors)
    }
}

/// A JSON Lines row: a create input, or an exported resource (its read-only members are
/// ignored).
fn json_row(line: &str) -> Result<ResourceInput, Vec<FieldError>> {
    let bad = |m: String| {
        vec![FieldError {
            pointer: String::new(),
            message: m,
        }]
    };
    let mut v: serde_json::Map<String, Value> = match serde_json::from_str(line) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(bad("must be a JSON object".into())),
        Err(e) => return Err(bad(format!("not JSON: {e}"))),
    };
    for k in [
        "id",
        "type",
        "version",
        "owner_id",
        "created_at",
        "updated_at",
        "deleted_at",
    ] {
        v.remove(k);
    }
    serde_json::from_value::<ResourceInput>(Value::Object(v)).map_err(|e| bad(e.to_string()))
}

/// Rows per transaction.
const BATCH: usize = 200;
/// Longest accepted line (or CSV record).
const LINE_MAX: usize = 1024 * 1024;

struct Importer<'a> {
    ctx: &'a Ctx<'a>,
    type_name: &'a str,
    report: ImportReport,
    batch: Vec<(usize, ResourceInput)>,
}

impl Importer<'_> {
    fn reject(&mut self, line: usize, errors: Vec<FieldError>) {
        self.report.rejected += 1;
        if self.report.errors.len() < 1000 {
            self.report.errors.push(Rejected { line, errors });
        }
    }

    async fn flush(&mut self) -> ApiResult<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.batch);
        let mut rejected = Vec::new();
        let mut imported = 0;
        let (ctx, type_name) = (self.ctx, self.type_name);
        ctx.caller
            .db()
            .transaction(async |tx| {
                for (line, input) in &rows {
                    let conn = tx.conn();
                    AnsiTransactionManager::begin_transaction(conn).await?;
                    match service::create_row(ctx, conn, type_name, input).await {
                        Ok(_) => {
                            AnsiTransactionManager::commit_transaction(conn).await?;
                            imported += 1;
                        }
                        Err(e) if e.code.is_client_error() => {
                            AnsiTransactionManager::rollback_transaction(conn).await?;
                            let errors = if e.errors.is_empty() {
                                vec![FieldError {
                                    pointer: String::new(),
                                    message: e.detail.to_string(),
                                }]
                            } else {
                                e.errors
                            };
                            rejected.push((*line, errors));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok::<_, ApiError>(())
            })
            .await?;
        self.report.imported += imported;
        for (line, errors) in rejected {
            self.reject(line, errors);
        }
        Ok(())
    }
}

/// Imports rows from `body`.
pub async fn import(
    ctx: &Ctx<'_>,
    type_name: &str,
    format: Format,
    mut body: ReqBody,
) -> ApiResult<ImportReport> {
    let t = service::get_type(ctx, type_name).await?;
    ctx.caller
        .require("resources", "create", crate::rbac::perm::Scope::Own)?;
    let mut imp = Importer {
        ctx,
        type_name,
        report: ImportReport::default(),
        batch: Vec::new(),
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut record = String::new();
    let mut record_start = 0usize;
    let mut header: Option<Vec<String>> = None;
    let mut line_no = 0usize;
    let mut ended = false;
    let max = ctx.state.config.server.max_import_bytes;
    let mut read: u64 = 0;
    while !ended {
        match body.next().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read += data.len() as u64;
                    if read > max {
                        return Err(ApiError::new(
                            ErrorCode::PayloadTooLarge,
                            format!("an import may be at most {max} bytes"),
                        ));
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!("cannot read the body: {e}"),
                ));
            }
            None => {
                ended = true;
                if !buf.is_empty() && buf.last() != Some(&b'\n') {
                    buf.push(b'\n');
                }
            }
        }
        if buf.len() > LINE_MAX && !buf.contains(&b'\n') {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("a line is longer than {LINE_MAX} bytes"),
            ));
        }
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = buf.drain(..=pos).collect();
            line_no += 1;
            let Ok(text) = std::str::from_utf8(&raw[..raw.len() - 1]) else {
                imp.report.rows += 1;
                imp.reject(
                    line_no,
                    vec![FieldError {
                        pointer: String::new(),
                        message: "not UTF-8".into(),
                    }],
                );
                continue;
            };
            match format {
                Format::JsonLines => {
                    if text.trim().is_empty() {
                        continue;
                    }
                    imp.report.rows += 1;
                    match json_row(text) {
                        Ok(input) => imp.batch.push((line_no, input)),
                        Err(errors) => imp.reject(line_no, errors),
                    }
                }
                Format::Csv => {
                    if record.is_empty() {
                        record_start = line_no;
                    } else {
                        record.push('\n');
                    }
                    record.push_str(text);
                    if record.len() > LINE_MAX {
                        return Err(ApiError::new(
                            ErrorCode::PayloadTooLarge,
                            format!("a record is longer than {LINE_MAX} bytes"),
                        ));
                    }
                    if record.matches('"').count() % 2 == 1 {
                        continue; // a quoted cell goes on
                    }
                    let rec = std::mem::take(&mut record);
                    if rec.trim().is_empty() {
                        continue;
                    }
                    let cells = csv_cells(&rec);
                    match (&header, cells) {
                        (None, Ok(cells)) => {
                            let unknown: Vec<&String> = cells
                                .iter()
                                .filter(|c| {
                                    !CSV_FIXED.contains(&c.as_str())
                                        && !data_columns(&t).contains(c)
                                })
                                .collect();
                            if !unknown.is_empty() {
                                return Err(ApiError::validation(vec![FieldError {
                                    pointer: "/header".into(),
                                    message: format!("unknown columns: {unknown:?}"),
                                }]));
                            }
                            header = Some(cells);
                        }
                        (None, Err(e)) => {
                            return Err(ApiError::validation(vec![FieldError {
                                pointer: "/header".into(),
                                message: e,
                            }]));
                        }
                        (Some(h), cells) => {
                            imp.report.rows += 1;
                            match cells
                                .map_err(|e| {
                                    vec![FieldError {
                                        pointer: String::new(),
                                        message: e,
                                    }]
                                })
                                .and_then(|c| csv_row(&t, h, &c))
                            {
                                Ok(input) => imp.batch.push((record_start, input)),
                                Err(errors) => imp.reject(record_start, errors),
                            }
                        }
                    }
                }
            }
            if imp.batch.len() >= BATCH {
                imp.flush().await?;
            }
        }
    }
    if !record.is_empty() {
        imp.report.rows += 1;
        imp.reject(
            record_start,
            vec![FieldError {
                pointer: String::new(),
                message: "an unterminated quoted cell".into(),
            }],
        );
    }
    imp.flush().await?;
    imp.report.errors.sort_by_key(|r| r.line);
    Ok(imp.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_follow_rfc_4180() {
        assert_eq!(
            csv_cells("a,\"b,c\",\"d\"\"e\",").unwrap(),
            ["a", "b,c", "d\"e", ""]
        );
        assert_eq!(
            csv_cells("\"multi\nline\",x\r").unwrap(),
            ["multi\nline", "x"]
        );
        assert!(csv_cells("\"open").is_err());
        assert!(csv_cells("a\"b").is_err());
        assert_eq!(unguard("'=SUM(A1)"), "=SUM(A1)");
        assert_eq!(unguard("'plain"), "'plain");
    }
}
