//! HTTP endpoints for notes under `/v1/notes`, tenant-scoped through `CurrentTenant`.

use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::{NewNote, NewNotes, Note, service};
use crate::error::ApiResult;
use crate::http::extract::{JsonBody, ListParams, Page, Path};
use crate::http::reply::{NoContent, Reply};
use crate::ids::NoteId;
use crate::rbac::Can;
use crate::rbac::need::{NotesCreate, NotesDelete, NotesRead};
use crate::tenancy::resolve::CurrentTenant;

/// Create a note.
#[endpoint(
    tags("notes"),
    status_codes(201, 400, 401, 403, 404, 409, 413, 415, 422)
)]
pub async fn create_note(
    can: Can<NotesCreate>,
    tenant: CurrentTenant,
    body: JsonBody<NewNote>,
) -> ApiResult<Reply<Note>> {
    let note = service::create(&tenant.0.db, &can.actor, &body.0).await?;
    let location = format!("/v1/notes/{}", note.id);
    Ok(Reply::created(note, location))
}

/// Create up to 100 notes at once; all or nothing.
#[endpoint(
    tags("notes"),
    status_codes(201, 400, 401, 403, 404, 409, 413, 415, 422)
)]
pub async fn create_notes(
    can: Can<NotesCreate>,
    tenant: CurrentTenant,
    body: JsonBody<NewNotes>,
) -> ApiResult<Reply<Vec<Note>>> {
    let notes = service::create_batch(&tenant.0.db, &can.actor, &body.0.items).await?;
    Ok(Reply::created(notes, "/v1/notes".into()))
}

/// List notes, oldest first.
#[endpoint(tags("notes"), status_codes(200, 400, 401, 403, 404))]
pub async fn list_notes(
    _can: Can<NotesRead>,
    tenant: CurrentTenant,
    page: ListParams<NoteId>,
) -> ApiResult<Reply<Page<Note>>> {
    let rows = service::list(&tenant.0.db, page.after, i64::from(page.limit) + 1).await?;
    Ok(Reply::ok(Page::from_rows(rows, page.limit, |n| n.id)))
}

/// Get one note.
#[endpoint(tags("notes"), status_codes(200, 400, 401, 403, 404))]
pub async fn get_note(
    _can: Can<NotesRead>,
    tenant: CurrentTenant,
    id: Path<NoteId>,
) -> ApiResult<Reply<Note>> {
    Ok(Reply::ok(service::get(&tenant.0.db, id.0).await?))
}

/// Delete one note.
#[endpoint(tags("notes"), status_codes(204, 400, 401, 403, 404))]
pub async fn delete_note(
    can: Can<NotesDelete>,
    tenant: CurrentTenant,
    id: Path<NoteId>,
) -> ApiResult<NoContent> {
    service::delete(&tenant.0.db, &can.actor, id.0).await?;
    Ok(NoContent)
}

/// The `/v1/notes` router (mounted behind tenant resolution).
pub fn router() -> Router {
    Router::with_path("notes")
        .get(list_notes)
        .post(create_note)
        .push(Router::with_path("batch").post(create_notes))
        .push(Router::with_path("{id}").get(get_note).delete(delete_note))
}
