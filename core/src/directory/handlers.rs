//! `/v1/users/export` and `/v1/users/import`. HTTP only; the rules are `directory::service`.

use futures::StreamExt;
use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::{Format, ImportReport, Mode, service};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::extract::dep;
use crate::http::reply::{Reply, Streamed};
use crate::rbac::need::UsersExport;
use crate::rbac::perm::Scope;
use crate::rbac::{Caller, Can};

fn format(req: &Request) -> ApiResult<Format> {
    Format::parse(req.query::<String>("format").as_deref())
}

/// Export the tenant's users, streamed: `format=jsonl` (default) or `format=csv` (columns
/// `id, username, email, display_name, status, created_at, last_seen_at, roles, teams,
/// attributes`; lists joined with `;`, spreadsheet formulas defused). The list's filters
/// (`q`, `status`, `role`, `team`, `attr.<name>`) apply.
#[endpoint(
    operation_id = "neotenant.directory.export_users",
    tags("users"),
    status_codes(200, 400, 401, 403)
)]
pub async fn export_users(can: Can<UsersExport>, req: &mut Request) -> ApiResult<Streamed> {
    let format = format(req)?;
    let filter = crate::users::handlers::user_filter(req)?;
    let body = service::export(can.db().clone(), filter, format);
    Ok(Streamed {
        content_type: match format {
            Format::Csv => "text/csv; charset=utf-8",
            Format::JsonLines => "application/x-ndjson",
        },
        filename: Some(match format {
            Format::Csv => "users.csv",
            Format::JsonLines => "users.jsonl",
        }),
        body,
    })
}

/// Import users from `format=jsonl` (default; one object per line) or `format=csv` (a header
/// naming `email` and any of `username, display_name, roles, teams, attributes, locale`; an
/// export's other columns are ignored). `mode=create` (default) creates each account (with
/// `users.create.tenant`), then its roles, teams and attributes; `mode=invite` invites each
/// address into its roles and teams instead (with `invitations.create.tenant`). Up to 10,000
/// rows and 16 MiB; every row is answered with the status and problem a single call would
/// have got.
#[endpoint(
    operation_id = "neotenant.directory.import_users",
    tags("users"),
    status_codes(200, 400, 401, 403, 413, 422)
)]
pub async fn import_users(
    caller: Caller,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Reply<ImportReport>> {
    let format = format(req)?;
    let mode = match req.query::<String>("mode").as_deref() {
        None | Some("create") => Mode::Create,
        Some("invite") => Mode::Invite,
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidParameter,
                "query parameter `mode` must be create or invite",
            ));
        }
    };
    match mode {
        Mode::Create => caller.require("users", "create", Scope::Tenant)?,
        Mode::Invite => caller.require("invitations", "create", Scope::Tenant)?,
    }
    let body = req
        .take_body()
        .map(|frame| match frame {
            Ok(frame) => Ok(frame.into_data().unwrap_or_default()),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        })
        .boxed();
    let ports = service::Ports {
        users: &*dep::<crate::users::UsersState>(depot)?,
        rbac: &*dep::<crate::rbac::RbacState>(depot)?,
        invitations: &*dep::<crate::invitations::InvitationsState>(depot)?,
    };
    Ok(Reply::ok(
        service::import(&ports, &caller, format, mode, body).await?,
    ))
}

/// The directory routes (mounted before `/v1/users/{id}`).
pub fn router() -> Router {
    Router::new()
        .push(Router::with_path("users/export").get(export_users))
        .push(Router::with_path("users/import").post(import_users))
}
