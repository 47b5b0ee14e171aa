//! Export and import of a type's resources as JSON Lines or CSV, streamed both ways.
//!
//! Export walks the caller's visible resources page by page (each page its own short
//! transaction) and writes them as it goes; memory stays flat. CSV is written by
//! [`crate::csv::CsvRows`] (formula guard included). Import reads JSON Lines line by line and
//! CSV record by record with the `csv_async` reader (a record may span lines inside quotes; no
//! record may exceed 1 MiB), validates each row as a create would, and inserts valid rows in
//! batches: one transaction per batch, one savepoint per row, so a rejected row never takes
//! others with it. The report lists every rejected row (up to 1,000) with its line number and
//! field errors. Exported files import back exactly. Never buffers the whole body.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use diesel_async::{AnsiTransactionManager, TransactionManager};
use futures::{StreamExt, TryStreamExt};
use salvo::http::ReqBody;
use salvo::oapi::ToSchema;
use serde::Serialize;
use serde_json::{Value, json};

use super::ResourcesState;
use super::service::{self, Ctx, ListCursor, ListQuery};
use super::{Resource, ResourceInput, ResourceType};
use crate::csv::{Cell, CsvRows, unguard};
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

/// One resource as a CSV row: the fixed columns, then a cell per data column (text guarded,
/// numbers and booleans bare, absent and null empty).
fn csv_row_of(rows: &mut CsvRows, r: &Resource, columns: &[String]) {
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
    let data: Vec<(bool, std::borrow::Cow<'_, str>)> = columns
        .iter()
        .map(|c| match r.data.get(c) {
            None | Some(Value::Null) => (false, "".into()),
            Some(Value::String(s)) => (true, s.as_str().into()),
            // Numbers and booleans stay bare (a formula guard would corrupt negatives).
            Some(v @ (Value::Number(_) | Value::Bool(_))) => (false, v.to_string().into()),
            Some(v) => (true, v.to_string().into()),
        })
        .collect();
    rows.row(
        fixed
            .iter()
            .map(|s| Cell::Text(s))
            .chain(data.iter().map(
                |(text, s)| {
                    if *text { Cell::Text(s) } else { Cell::Plain(s) }
                },
            )),
    );
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
        Bytes::from(CsvRows::header(
            CSV_FIXED
                .iter()
                .copied()
                .chain(columns.iter().map(String::as_str)),
        ))
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
                        let chunk = match format {
                            Format::JsonLines => {
                                let mut chunk = String::with_capacity(rows.len() * 256);
                                for r in &rows {
                                    chunk.push_str(&serde_json::to_string(r).unwrap_or_default());
                                    chunk.push('\n');
                                }
                                chunk.into_bytes()
                            }
                            Format::Csv => {
                                let mut out = CsvRows::new();
                                for r in &rows {
                                    csv_row_of(&mut out, r, &columns);
                                }
                                out.take()
                            }
                        };
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

/// A CSV row as a create input, cells typed as the schema declares.
fn csv_row(
    t: &ResourceType,
    header: &[String],
    cells: &[&str],
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

/// Where parsed rows go, in file order: the importer writes them in batches; a caller that
/// only wants the rows (a dry run, a fuzzer) collects them.
pub trait RowSink {
    /// Data row `line` (1-based, of the file): a create input, or why it cannot be one.
    fn row(&mut self, line: usize, row: Result<ResourceInput, Vec<FieldError>>);
    /// Called after every row: a sink holding a full batch writes it out here.
    fn flush_if_full(&mut self) -> impl std::future::Future<Output = ApiResult<()>> + Send;
}

impl RowSink for Importer<'_> {
    fn row(&mut self, line: usize, row: Result<ResourceInput, Vec<FieldError>>) {
        self.report.rows += 1;
        match row {
            Ok(input) => self.batch.push((line, input)),
            Err(errors) => self.reject(line, errors),
        }
    }

    async fn flush_if_full(&mut self) -> ApiResult<()> {
        if self.batch.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }
}

/// Reads the rows of `body` (at most `max` bytes) in `format` into `sink`: JSON Lines line
/// by line, CSV record by record against the columns of `t`. Problems with the file as a
/// whole (too large, a record too long, an unknown CSV column, an unreadable body) end it
/// with an error; a bad row goes to the sink as that row's errors.
pub async fn read_rows<S: RowSink + Send>(
    sink: &mut S,
    t: &ResourceType,
    format: Format,
    body: ReqBody,
    max: u64,
) -> ApiResult<()> {
    match format {
        Format::JsonLines => import_lines(sink, body, max).await,
        Format::Csv => import_csv(sink, t, body, max).await,
    }
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
    body: ReqBody,
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
    let max = ctx.state.config.server.max_import_bytes;
    read_rows(&mut imp, &t, format, body, max).await?;
    imp.flush().await?;
    imp.report.errors.sort_by_key(|r| r.line);
    Ok(imp.report)
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("an import may be at most {max} bytes"),
    )
}

fn record_too_long() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("a record is longer than {LINE_MAX} bytes"),
    )
}

fn unreadable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, format!("cannot read the body: {e}"))
}

/// JSON Lines: one row per line, blank lines skipped.
async fn import_lines<S: RowSink + Send>(
    imp: &mut S,
    mut body: ReqBody,
    max: u64,
) -> ApiResult<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut line_no = 0usize;
    let mut ended = false;
    let mut read: u64 = 0;
    while !ended {
        match body.next().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read += data.len() as u64;
                    if read > max {
                        return Err(too_large(max));
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Err(unreadable(e)),
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
                imp.row(line_no, Err(not_utf8()));
                continue;
            };
            if text.trim().is_empty() {
                continue;
            }
            imp.row(line_no, json_row(text));
            imp.flush_if_full().await?;
        }
    }
    Ok(())
}

fn not_utf8() -> Vec<FieldError> {
    vec![FieldError {
        pointer: String::new(),
        message: "not UTF-8".into(),
    }]
}

/// Buffer of the CSV reader.
const CSV_BUFFER: usize = 64 * 1024;

/// Why the body feeding the CSV reader stopped early.
#[derive(Debug)]
enum Cut {
    TooLarge,
    RecordTooLong,
    Body(String),
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cut::TooLarge => f.write_str("the body is too large"),
            Cut::RecordTooLong => f.write_str("a record is too long"),
            Cut::Body(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for Cut {}

/// CSV: the first record is the header (the export's columns, guards removed), every other
/// record a row. Records are read as the body arrives; the reader holds at most one record
/// and its buffer.
async fn import_csv<S: RowSink + Send>(
    imp: &mut S,
    t: &ResourceType,
    body: ReqBody,
    max: u64,
) -> ApiResult<()> {
    // Bytes of the body up to the end of the last record read, so that the body stops feeding
    // a record that has grown past LINE_MAX (everything read beyond it is that record, or sits
    // in the reader's buffer).
    let parsed = Arc::new(AtomicU64::new(0));
    let seen = parsed.clone();
    let mut read: u64 = 0;
    let chunks = body.filter_map(move |frame| {
        let item = match frame {
            Ok(frame) => frame.into_data().ok().map(|data| {
                if read - seen.load(Ordering::Relaxed) > (LINE_MAX + CSV_BUFFER) as u64 {
                    return Err(std::io::Error::other(Cut::RecordTooLong));
                }
                read += data.len() as u64;
                if read > max {
                    return Err(std::io::Error::other(Cut::TooLarge));
                }
                Ok(data)
            }),
            Err(e) => Some(Err(std::io::Error::other(Cut::Body(e.to_string())))),
        };
        std::future::ready(item)
    });
    let mut reader = csv_async::AsyncReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(CSV_BUFFER)
        .create_reader(Box::pin(chunks).into_async_read());
    let read_error = |e: csv_async::Error| {
        let cut = match e.kind() {
            csv_async::ErrorKind::Io(io) => io.get_ref().and_then(|c| c.downcast_ref::<Cut>()),
            _ => None,
        };
        match cut {
            Some(Cut::TooLarge) => too_large(max),
            Some(Cut::RecordTooLong) => record_too_long(),
            Some(Cut::Body(e)) => unreadable(e),
            None => unreadable(e),
        }
    };
    let columns = data_columns(t);
    let mut header: Option<Vec<String>> = None;
    let mut record = csv_async::ByteRecord::new();
    while reader
        .read_byte_record(&mut record)
        .await
        .map_err(read_error)?
    {
        let (line, start) = record
            .position()
            .map(|p| (p.line() as usize, p.byte()))
            .unwrap_or_default();
        let end = reader.position().byte();
        parsed.store(end, Ordering::Relaxed);
        if end - start > LINE_MAX as u64 {
            return Err(record_too_long());
        }
        if record.len() == 1 && record[0].trim_ascii().is_empty() {
            continue; // a blank line
        }
        let cells: Result<Vec<&str>, _> = record.iter().map(std::str::from_utf8).collect();
        match (&header, cells) {
            (None, Ok(cells)) => {
                let cells: Vec<String> = cells.iter().map(|c| unguard(c).to_string()).collect();
                let unknown: Vec<&String> = cells
                    .iter()
                    .filter(|c| !CSV_FIXED.contains(&c.as_str()) && !columns.contains(c))
                    .collect();
                if !unknown.is_empty() {
                    return Err(ApiError::validation(vec![FieldError {
                        pointer: "/header".into(),
                        message: format!("unknown columns: {unknown:?}"),
                    }]));
                }
                header = Some(cells);
            }
            (None, Err(_)) => {
                return Err(ApiError::validation(vec![FieldError {
                    pointer: "/header".into(),
                    message: "not UTF-8".into(),
                }]));
            }
            (Some(h), cells) => {
                imp.row(
                    line,
                    cells
                        .map_err(|_| not_utf8())
                        .and_then(|c| csv_row(t, h, &c)),
                );
            }
        }
        imp.flush_if_full().await?;
    }
    Ok(())
}
