//! SQL for users, on a tenant transaction (unqualified `users`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::User;
use crate::ids::UserId;
use crate::schema::tenant::users;

#[derive(Queryable, Selectable)]
#[diesel(table_name = users)]
struct UserRow {
    id: Uuid,
    subject: String,
    username: Option<String>,
    email: Option<String>,
    display_name: Option<String>,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: UserId(r.id),
            subject: r.subject,
            username: r.username,
            email: r.email,
            display_name: r.display_name,
            status: r.status,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_seen_at: r.last_seen_at,
        }
    }
}

/// What a token says about its user.
#[derive(Insertable)]
#[diesel(table_name = users)]
pub struct SeenUser<'a> {
    pub id: Uuid,
    pub subject: &'a str,
    pub username: Option<&'a str>,
    pub email: Option<&'a str>,
    pub display_name: Option<&'a str>,
}

/// Creates the user on first sight, or refreshes its profile and `last_seen_at`; one statement.
pub async fn upsert_seen(conn: &mut AsyncPgConnection, seen: &SeenUser<'_>) -> QueryResult<User> {
    diesel::insert_into(users::table)
        .values(seen)
        .on_conflict(users::subject)
        .do_update()
        .set((
            users::username.eq(excluded(users::username)),
            users::email.eq(excluded(users::email)),
            users::display_name.eq(excluded(users::display_name)),
            users::last_seen_at.eq(diesel::dsl::now),
        ))
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await
        .map(User::from)
}

pub async fn get(conn: &mut AsyncPgConnection, id: UserId) -> QueryResult<Option<User>> {
    Ok(users::table
        .find(id.0)
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()?
        .map(User::from))
}
