//! Export and import of the user directory.
//!
//! Export: pages of 500 users (the list's filters apply), each page with its roles, teams and
//! attributes read in one short read-only transaction, written out as it is read. Import: the
//! body is read as it arrives (JSON Lines line by line; CSV record by record with
//! `csv_async`), rows are validated one by one and applied in chunks of up to 1,000 — a chunk
//! of invitations is one bulk invitation (one transaction, the hourly limits counted once), a
//! chunk of accounts is created row by row. Every row gets its result, refused rows with the
//! problem a single call would have answered.

use std::convert::Infallible;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Format, ImportReport, Mode, RowResult, repo};
use crate::csv::{Cell, CsvRows, unguard};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::ids::{TeamId, UserId};
use crate::rbac::Caller;
use crate::users::{User, UserFilter};

/// The CSV columns of an export (an import reads the same header; `id`, `status`,
/// `created_at` and `last_seen_at` are ignored there).
pub const COLUMNS: [&str; 10] = [
    "id",
    "username",
    "email",
    "display_name",
    "status",
    "created_at",
    "last_seen_at",
    "roles",
    "teams",
    "attributes",
];
/// Columns an import may carry (besides the ignored export ones).
const IMPORTED: [&str; 7] = [
    "email",
    "username",
    "display_name",
    "roles",
    "teams",
    "attributes",
    "locale",
];
const PAGE: i64 = 500;
/// Rows applied at once.
pub const CHUNK: usize = 1000;
/// Rows one import may hold.
pub const MAX_ROWS: usize = 10_000;
/// Bytes one import may hold.
pub const MAX_BYTES: u64 = 16 * 1024 * 1024;

struct Enriched {
    user: User,
    roles: Vec<String>,
    teams: Vec<String>,
    attributes: Value,
}

async fn page(
    db: &TenantDb,
    filter: &UserFilter,
    after: Option<UserId>,
) -> ApiResult<Vec<Enriched>> {
    let users = crate::users::service::list(db, filter, after, PAGE).await?;
    let ids: Vec<uuid::Uuid> = users.iter().map(|u| u.id.0).collect();
    let (mut roles, mut teams, mut attributes) = db
        .read(async |conn| {
            Ok::<_, ApiError>((
                repo::roles_of(conn, &ids).await?,
                repo::teams_of(conn, &ids).await?,
                repo::attributes_of(conn, &ids).await?,
            ))
        })
        .await?;
    Ok(users
        .into_iter()
        .map(|user| Enriched {
            roles: roles.remove(&user.id.0).unwrap_or_default(),
            teams: teams
                .remove(&user.id.0)
                .unwrap_or_default()
                .into_iter()
                .map(|t| TeamId(t).to_string())
                .collect(),
            attributes: attributes.remove(&user.id.0).unwrap_or_else(|| json!({})),
            user,
        })
        .collect())
}

fn render(format: Format, rows: &[Enriched]) -> Vec<u8> {
    match format {
        Format::JsonLines => {
            let mut out = Vec::with_capacity(rows.len() * 200);
            for r in rows {
                let line = json!({
                    "id": r.user.id, "username": r.user.username, "email": r.user.email,
                    "display_name": r.user.display_name, "status": r.user.status,
                    "created_at": r.user.created_at, "last_seen_at": r.user.last_seen_at,
                    "roles": r.roles, "teams": r.teams, "attributes": r.attributes,
                });
                out.extend_from_slice(line.to_string().as_bytes());
                out.push(b'\n');
            }
            out
        }
        Format::Csv => {
            let mut csv = CsvRows::new();
            for r in rows {
                let fields = [
                    r.user.id.to_string(),
                    r.user.username.clone().unwrap_or_default(),
                    r.user.email.clone().unwrap_or_default(),
                    r.user.display_name.clone().unwrap_or_default(),
                    r.user.status.clone(),
                    r.user.created_at.to_rfc3339(),
                    r.user.last_seen_at.to_rfc3339(),
                    r.roles.join(";"),
                    r.teams.join(";"),
                    r.attributes.to_string(),
                ];
                csv.row(fields.iter().map(|f| Cell::Text(f)));
            }
            csv.take()
        }
    }
}

/// The users matching `filter`, oldest first, streamed page by page. A failure after the
/// first byte ends the stream early (logged); the file then lacks its last pages.
pub fn export(
    db: TenantDb,
    filter: UserFilter,
    format: Format,
) -> BoxStream<'static, Result<Bytes, Infallible>> {
    let header = match format {
        Format::Csv => Some(Bytes::from(CsvRows::header(COLUMNS))),
        Format::JsonLines => None,
    };
    let pages = futures::stream::unfold(Some(None), move |after: Option<Option<UserId>>| {
        let db = db.clone();
        let filter = filter.clone();
        async move {
            let after = after?;
            match page(&db, &filter, after).await {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let next = (rows.len() as i64 == PAGE).then(|| rows.last().map(|r| r.user.id));
                    Some((Ok(Bytes::from(render(format, &rows))), next))
                }
                Err(e) => {
                    tracing::warn!(error = %e.detail, "user export stopped early");
                    None
                }
            }
        }
    });
    futures::stream::iter(header.map(Ok)).chain(pages).boxed()
}

/// One row to import.
#[derive(Debug, Default, Deserialize)]
struct Row {
    email: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    teams: Vec<String>,
    #[serde(default)]
    attributes: Option<Value>,
    #[serde(default)]
    locale: Option<String>,
    // An export's columns, read back and ignored.
    #[serde(default, rename = "id")]
    _id: Option<Value>,
    #[serde(default, rename = "status")]
    _status: Option<Value>,
    #[serde(default, rename = "created_at")]
    _created_at: Option<Value>,
    #[serde(default, rename = "last_seen_at")]
    _last_seen_at: Option<Value>,
}

fn field(pointer: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        pointer: pointer.into(),
        message: message.into(),
    }
}

/// A row checked for shape: (email, the row, teams parsed).
fn check(row: Row) -> Result<(String, Row, Vec<TeamId>), Vec<FieldError>> {
    let mut errors = Vec::new();
    let email = row.email.clone().unwrap_or_default();
    if !crate::invitations::service::email_ok(&email) {
        errors.push(field("/email", "must be an email address"));
    }
    let mut teams = Vec::new();
    for (i, t) in row.teams.iter().enumerate() {
        match t.parse::<TeamId>() {
            Ok(id) => teams.push(id),
            Err(_) => errors.push(field(&format!("/teams/{i}"), "must be a team id (team_…)")),
        }
    }
    if row.attributes.as_ref().is_some_and(|a| !a.is_object()) {
        errors.push(field("/attributes", "must be a JSON object"));
    }
    if errors.is_empty() {
        Ok((email, row, teams))
    } else {
        Err(errors)
    }
}

fn refused(line: usize, email: Option<String>, e: &ApiError) -> RowResult {
    RowResult {
        line,
        status: e.code.status(),
        email,
        id: None,
        kind: Some(e.code.type_uri()),
        detail: Some(e.detail.to_string()),
        errors: e.errors.clone(),
    }
}

/// What an import needs besides the caller.
pub struct Ports<'a> {
    pub users: &'a crate::users::UsersState,
    pub rbac: &'a crate::rbac::RbacState,
    pub invitations: &'a crate::invitations::InvitationsState,
}

struct Importer<'a> {
    ports: &'a Ports<'a>,
    caller: &'a Caller,
    mode: Mode,
    report: ImportReport,
    chunk: Vec<(usize, String, Row, Vec<TeamId>)>,
}

impl Importer<'_> {
    fn push(&mut self, line: usize, row: Result<Row, Vec<FieldError>>) -> ApiResult<()> {
        self.report.rows += 1;
        if self.report.rows > MAX_ROWS {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("an import may hold at most {MAX_ROWS} rows"),
            ));
        }
        match row.and_then(check) {
            Ok((email, row, teams)) => self.chunk.push((line, email, row, teams)),
            Err(errors) => {
                let e = ApiError::validation(errors);
                self.report.items.push(refused(line, None, &e));
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> ApiResult<()> {
        let chunk = std::mem::take(&mut self.chunk);
        if chunk.is_empty() {
            return Ok(());
        }
        match self.mode {
            Mode::Invite => self.invite(chunk).await,
            Mode::Create => {
                for (line, email, row, teams) in chunk {
                    let result = self.create(&email, &row, &teams).await;
                    self.report.items.push(match result {
                        Ok(id) => RowResult {
                            line,
                            status: 201,
                            email: Some(email),
                            id: Some(id.to_string()),
                            kind: None,
                            detail: None,
                            errors: Vec::new(),
                        },
                        Err(e) => refused(line, Some(email), &e),
                    });
                }
                Ok(())
            }
        }
    }

    async fn invite(&mut self, chunk: Vec<(usize, String, Row, Vec<TeamId>)>) -> ApiResult<()> {
        let items: Vec<crate::invitations::NewInvitation> = chunk
            .iter()
            .map(|(_, email, row, teams)| crate::invitations::NewInvitation {
                email: email.clone(),
                roles: row.roles.clone(),
                teams: teams.clone(),
                message: None,
                locale: row.locale.clone(),
                expires_in_hours: None,
            })
            .collect();
        match crate::invitations::service::invite(self.ports.invitations, self.caller, &items).await
        {
            Ok(result) => {
                for item in result.items {
                    let (line, email, _, _) = &chunk[item.index];
                    self.report.items.push(RowResult {
                        line: *line,
                        status: item.status,
                        email: Some(email.clone()),
                        id: item.invitation.map(|i| i.id.to_string()),
                        kind: item.kind,
                        detail: item.detail,
                        errors: item.errors,
                    });
                }
            }
            // The whole chunk refused (an hourly limit): each row says so.
            Err(e) if e.code.is_client_error() => {
                for (line, email, _, _) in &chunk {
                    self.report
                        .items
                        .push(refused(*line, Some(email.clone()), &e));
                }
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Creates one account, then its roles, teams and attributes; a failure after the account
    /// exists is answered as the failure (the account stays, as a single call would leave it).
    async fn create(&self, email: &str, row: &Row, teams: &[TeamId]) -> ApiResult<UserId> {
        let username = row.username.clone().unwrap_or_else(|| {
            email
                .split('@')
                .next()
                .unwrap_or_default()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                .collect()
        });
        let new = crate::users::NewUser {
            username,
            email: email.to_string(),
            display_name: row.display_name.clone(),
            password: None,
            temporary: true,
        };
        let tenant = self.caller.tenant();
        let user =
            crate::users::service::create(self.ports.users, tenant, &self.caller.actor, &new)
                .await?;
        for role in &row.roles {
            crate::rbac::service::assign(self.ports.rbac, self.caller, role, &[user.id], None)
                .await?;
        }
        for team in teams {
            let members = crate::teams::AddMembers {
                user_ids: vec![user.id],
                team_role: None,
            };
            crate::teams::service::add_members(self.ports.rbac, self.caller, *team, &members)
                .await?;
        }
        if let Some(attributes) = &row.attributes
            && attributes.as_object().is_some_and(|a| !a.is_empty())
        {
            crate::users::profile::patch_attributes(
                self.caller.db(),
                &self.caller.actor,
                user.id,
                attributes,
                true,
            )
            .await?;
        }
        Ok(user.id)
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("an import may be at most {MAX_BYTES} bytes"),
    )
}

fn unreadable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, format!("cannot read the body: {e}"))
}

/// A CSV record as a row: cells by header name, guards removed; lists split on `;`, the
/// attributes cell parsed as JSON.
fn csv_row(header: &[String], cells: &[&str]) -> Result<Row, Vec<FieldError>> {
    let mut row = Row::default();
    let mut errors = Vec::new();
    for (name, raw) in header.iter().zip(cells) {
        let value = unguard(raw).trim();
        let text = (!value.is_empty()).then(|| value.to_string());
        let list = || -> Vec<String> {
            value
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        match name.as_str() {
            "email" => row.email = text,
            "username" => row.username = text,
            "display_name" => row.display_name = text,
            "locale" => row.locale = text,
            "roles" => row.roles = list(),
            "teams" => row.teams = list(),
            "attributes" if value.is_empty() => {}
            "attributes" => match serde_json::from_str::<Value>(value) {
                Ok(v) => row.attributes = Some(v),
                Err(_) => errors.push(field("/attributes", "must be a JSON object")),
            },
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(row)
    } else {
        Err(errors)
    }
}

/// Imports the rows of `body` in `format`, applying each with `mode`.
pub async fn import(
    ports: &Ports<'_>,
    caller: &Caller,
    format: Format,
    mode: Mode,
    body: BoxStream<'static, std::io::Result<Bytes>>,
) -> ApiResult<ImportReport> {
    let mut imp = Importer {
        ports,
        caller,
        mode,
        report: ImportReport::default(),
        chunk: Vec::new(),
    };
    let mut read = 0u64;
    let body = body
        .map(move |chunk| {
            let chunk = chunk?;
            read += chunk.len() as u64;
            if read > MAX_BYTES {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    "too large",
                ));
            }
            Ok(chunk)
        })
        .into_async_read();
    let io_error = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::FileTooLarge {
            too_large()
        } else {
            unreadable(e)
        }
    };
    match format {
        Format::JsonLines => {
            let mut lines = body.lines();
            let mut line_no = 0;
            while let Some(line) = lines.next().await {
                line_no += 1;
                let line = line.map_err(io_error)?;
                if line.trim().is_empty() {
                    continue;
                }
                let row = serde_json::from_str::<Row>(&line)
                    .map_err(|e| vec![field("", format!("not a row object: {e}"))]);
                imp.push(line_no, row)?;
                if imp.chunk.len() >= CHUNK {
                    imp.flush().await?;
                }
            }
        }
        Format::Csv => {
            let mut reader = csv_async::AsyncReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .create_reader(body);
            let mut header: Option<Vec<String>> = None;
            let mut record = csv_async::StringRecord::new();
            loop {
                let more = reader
                    .read_record(&mut record)
                    .await
                    .map_err(|e| match e.kind() {
                        csv_async::ErrorKind::Io(io)
                            if io.kind() == std::io::ErrorKind::FileTooLarge =>
                        {
                            too_large()
                        }
                        _ => unreadable(e),
                    })?;
                if !more {
                    break;
                }
                let line = record.position().map_or(0, |p| p.line() as usize);
                let cells: Vec<&str> = record.iter().collect();
                if cells.len() == 1 && cells[0].trim().is_empty() {
                    continue;
                }
                match &header {
                    None => {
                        let names: Vec<String> = cells
                            .iter()
                            .map(|c| unguard(c).trim().to_string())
                            .collect();
                        let unknown: Vec<&String> = names
                            .iter()
                            .filter(|n| {
                                !IMPORTED.contains(&n.as_str()) && !COLUMNS.contains(&n.as_str())
                            })
                            .collect();
                        if !names.iter().any(|n| n == "email") || !unknown.is_empty() {
                            return Err(ApiError::validation(vec![field(
                                "/header",
                                format!(
                                    "the header must name an `email` column and only known columns ({}); unknown: {unknown:?}",
                                    IMPORTED.join(", ")
                                ),
                            )]));
                        }
                        header = Some(names);
                    }
                    Some(names) => {
                        let row = csv_row(names, &cells);
                        imp.push(line, row)?;
                        if imp.chunk.len() >= CHUNK {
                            imp.flush().await?;
                        }
                    }
                }
            }
        }
    }
    imp.flush().await?;
    let mut report = imp.report;
    report.items.sort_by_key(|r| r.line);
    report.created = report.items.iter().filter(|r| r.status == 201).count();
    report.refused = report.items.len() - report.created;
    Ok(report)
}
