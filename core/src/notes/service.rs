//! Rules for notes: validation (every field error at once) and transactions. A batch is
//! all-or-nothing: one failing item rolls back the items inserted before it.

use chrono::Utc;

use super::repo::{self, NoteRow};
use super::{NewNote, Note};
use crate::audit::{self, Actor, Change};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::ids::NoteId;

pub const BATCH_MAX: usize = 100;

fn validate(note: &NewNote, prefix: &str, errors: &mut Vec<FieldError>) {
    let mut check = |field: &str, ok: bool, message: &str| {
        if !ok {
            errors.push(FieldError {
                pointer: format!("{prefix}/{field}"),
                message: message.into(),
            });
        }
    };
    let title = note.title.trim().chars().count();
    check(
        "title",
        (1..=200).contains(&title),
        "must be 1-200 characters",
    );
    check(
        "body",
        note.body.chars().count() <= 20_000,
        "must be at most 20000 characters",
    );
    if let Some(ext) = &note.external_id {
        check(
            "external_id",
            (1..=100).contains(&ext.chars().count()),
            "must be 1-100 characters",
        );
    }
}

fn row(note: &NewNote) -> NoteRow {
    let now = Utc::now();
    NoteRow {
        id: NoteId::generate().0,
        title: note.title.trim().to_string(),
        body: note.body.clone(),
        external_id: note.external_id.clone(),
        created_at: now,
        updated_at: now,
    }
}

fn note_change(action: &'static str, note: &Note) -> Change<'static> {
    Change {
        action,
        target_type: "note",
        target_id: Some(note.id.to_string()),
        data: serde_json::json!({"title": note.title, "external_id": note.external_id}),
    }
}

pub async fn create(db: &TenantDb, actor: &Actor, input: &NewNote) -> ApiResult<Note> {
    let mut errors = Vec::new();
    validate(input, "", &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let row = row(input);
    let id = NoteId(row.id);
    db.transaction(async |tx| {
        repo::insert(tx.conn(), &row).await?;
        let note = repo::get(tx.conn(), id)
            .await?
            .ok_or_else(|| ApiError::not_found("note"))?;
        audit::record(tx.conn(), actor, note_change("note.created", &note)).await?;
        Ok(note)
    })
    .await
}

/// Inserts all items or none. A duplicate `external_id` anywhere fails the whole batch
/// with 409, naming the item.
pub async fn create_batch(db: &TenantDb, actor: &Actor, items: &[NewNote]) -> ApiResult<Vec<Note>> {
    if items.is_empty() || items.len() > BATCH_MAX {
        return Err(ApiError::validation(vec![FieldError {
            pointer: "/items".into(),
            message: format!("must hold 1-{BATCH_MAX} notes"),
        }]));
    }
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        validate(item, &format!("/items/{i}"), &mut errors);
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let rows: Vec<NoteRow> = items.iter().map(row).collect();
    db.transaction(async |tx| {
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            repo::insert(tx.conn(), row).await.map_err(|e| {
                let mut err = ApiError::from(e);
                if err.code == ErrorCode::Conflict {
                    err.detail = format!("item {i}: {}; nothing was created", err.detail).into();
                }
                err
            })?;
            let note = repo::get(tx.conn(), NoteId(row.id))
                .await?
                .ok_or_else(|| ApiError::not_found("note"))?;
            audit::record(tx.conn(), actor, note_change("note.created", &note)).await?;
            out.push(note);
        }
        Ok(out)
    })
    .await
}

pub async fn get(db: &TenantDb, id: NoteId) -> ApiResult<Note> {
    db.read(async |conn| Ok::<_, ApiError>(repo::get(conn, id).await?))
        .await?
        .ok_or_else(|| ApiError::not_found("note"))
}

pub async fn list(db: &TenantDb, after: Option<NoteId>, limit: i64) -> ApiResult<Vec<Note>> {
    db.read(async |conn| Ok(repo::list(conn, after.map(|a| a.0), limit).await?))
        .await
}

pub async fn delete(db: &TenantDb, actor: &Actor, id: NoteId) -> ApiResult<()> {
    db.transaction(async |tx| {
        let note = repo::get(tx.conn(), id)
            .await?
            .ok_or_else(|| ApiError::not_found("note"))?;
        repo::delete(tx.conn(), id).await?;
        audit::record(tx.conn(), actor, note_change("note.deleted", &note)).await?;
        Ok(())
    })
    .await
}
