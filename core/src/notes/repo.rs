//! SQL for notes. Runs only on a connection inside a `Tx`: the table name is
//! unqualified and resolves to the current tenant's schema.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::Note;
use crate::ids::NoteId;
use crate::schema::tenant::notes;

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = notes)]
pub struct NoteRow {
    pub id: Uuid,
    pub title: String,
    pub body: String,
    pub external_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<NoteRow> for Note {
    fn from(r: NoteRow) -> Self {
        Note {
            id: NoteId(r.id),
            title: r.title,
            body: r.body,
            external_id: r.external_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

pub async fn insert(conn: &mut AsyncPgConnection, row: &NoteRow) -> QueryResult<()> {
    diesel::insert_into(notes::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn get(mut conn: &AsyncPgConnection, id: NoteId) -> QueryResult<Option<Note>> {
    Ok(notes::table
        .find(id.0)
        .select(NoteRow::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .map(Note::from))
}

/// Notes in id (creation) order after `after`, at most `limit`.
pub async fn list(
    mut conn: &AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<Note>> {
    let mut query = notes::table
        .select(NoteRow::as_select())
        .order(notes::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(notes::id.gt(after));
    }
    Ok(query
        .load(&mut conn)
        .await?
        .into_iter()
        .map(Note::from)
        .collect())
}

pub async fn delete(conn: &mut AsyncPgConnection, id: NoteId) -> QueryResult<bool> {
    let n = diesel::delete(notes::table.find(id.0))
        .execute(conn)
        .await?;
    Ok(n == 1)
}
