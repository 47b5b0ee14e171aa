//! SQL for users, on a tenant transaction (unqualified `users`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::User;
use crate::ids::UserId;
use crate::schema::tenant::users;

#[derive(Queryable, Selectable, QueryableByName)]
#[diesel(table_name = users)]
pub struct UserRow {
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

/// What a token says about its user, and when it said it.
pub struct SeenUser<'a> {
    pub subject: &'a str,
    pub username: Option<&'a str>,
    pub email: Option<&'a str>,
    pub display_name: Option<&'a str>,
    /// The token's `iat`: profile claims older than the row's `updated_at` (a reconciliation
    /// from Keycloak, say) do not overwrite it.
    pub as_of: i64,
}

/// Creates the user on first sight, or refreshes `last_seen_at` and — if the token is newer
/// than what the row holds — its profile; one statement. `None` for a token issued before its
/// user was erased (it must not bring the person back).
pub async fn upsert_seen(
    conn: &mut AsyncPgConnection,
    seen: &SeenUser<'_>,
) -> QueryResult<Option<User>> {
    use diesel::sql_types::{BigInt, Nullable, Text, Uuid as SqlUuid};
    diesel::sql_query(
        "INSERT INTO users (id, subject, username, email, display_name, updated_at) \
         SELECT $1, $2, $3, $4, $5, to_timestamp($6) WHERE NOT EXISTS (SELECT 1 FROM users \
           WHERE erased_subject = sha256(convert_to($2, 'UTF8')) AND erased_at >= to_timestamp($6)) \
         ON CONFLICT (subject) DO UPDATE SET \
           username = CASE WHEN users.updated_at < EXCLUDED.updated_at AND users.status <> 'deleted' THEN EXCLUDED.username ELSE users.username END, \
           email = CASE WHEN users.updated_at < EXCLUDED.updated_at AND users.status <> 'deleted' THEN EXCLUDED.email ELSE users.email END, \
           display_name = CASE WHEN users.updated_at < EXCLUDED.updated_at AND users.status <> 'deleted' THEN EXCLUDED.display_name ELSE users.display_name END, \
           updated_at = GREATEST(users.updated_at, EXCLUDED.updated_at), \
           last_seen_at = now() \
         RETURNING id, subject, username, email, display_name, status, created_at, updated_at, last_seen_at",
    )
    .bind::<SqlUuid, _>(UserId::generate().0)
    .bind::<Text, _>(seen.subject)
    .bind::<Nullable<Text>, _>(seen.username)
    .bind::<Nullable<Text>, _>(seen.email)
    .bind::<Nullable<Text>, _>(seen.display_name)
    .bind::<BigInt, _>(seen.as_of)
    .get_result::<UserRow>(conn)
    .await
    .optional()
    .map(|row| row.map(User::from))
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

/// The users among `ids` that are not deleted, as the change feed shows them: identity,
/// profile, status and attributes; never activity (`last_seen_at`) or preferences.
pub async fn mirror_by_ids(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> QueryResult<Vec<(Uuid, serde_json::Value)>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: Uuid,
        #[diesel(sql_type = diesel::sql_types::Jsonb)]
        object: serde_json::Value,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT id, jsonb_build_object('id', id, 'subject', subject, 'username', username, \
           'email', email, 'display_name', display_name, 'status', status, \
           'attributes', attributes, 'created_at', created_at) AS object \
         FROM users WHERE id = ANY($1) AND status <> 'deleted'",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(ids)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.object)).collect())
}

/// A user as the identity provider has it, for reconciliation.
pub struct IdpUser<'a> {
    pub subject: &'a str,
    pub username: Option<&'a str>,
    pub email: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub enabled: bool,
}

/// Brings one user in line with the identity provider; returns whether anything changed.
/// A user deleted here stays deleted and keeps no profile; an enabled one becomes active, a
/// disabled one deactivated.
pub async fn reconcile_one(conn: &mut AsyncPgConnection, idp: &IdpUser<'_>) -> QueryResult<bool> {
    let status = if idp.enabled { "active" } else { "deactivated" };
    let changed = diesel::sql_query(
        "INSERT INTO users (id, subject, username, email, display_name, status) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (subject) DO UPDATE SET username = EXCLUDED.username, email = EXCLUDED.email, \
           display_name = EXCLUDED.display_name, status = EXCLUDED.status, updated_at = now() \
         WHERE users.status <> 'deleted' AND ( \
               (users.username, users.email, users.display_name) IS DISTINCT FROM \
               (EXCLUDED.username, EXCLUDED.email, EXCLUDED.display_name) \
            OR users.status <> EXCLUDED.status)",
    )
    .bind::<diesel::sql_types::Uuid, _>(UserId::generate().0)
    .bind::<diesel::sql_types::Text, _>(idp.subject)
    .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(idp.username)
    .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(idp.email)
    .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(idp.display_name)
    .bind::<diesel::sql_types::Text, _>(status)
    .execute(conn)
    .await?;
    Ok(changed > 0)
}

/// Deactivates active users whose subject the identity provider no longer lists; returns them.
pub async fn deactivate_missing(
    conn: &mut AsyncPgConnection,
    present: &[String],
) -> QueryResult<Vec<String>> {
    diesel::update(users::table)
        .filter(users::status.eq("active"))
        .filter(users::subject.ne_all(present))
        .set((
            users::status.eq("deactivated"),
            users::updated_at.eq(diesel::dsl::now),
        ))
        .returning(users::subject)
        .get_results(conn)
        .await
}

/// The columns of a user, for queries built elsewhere in this module's crate.
pub fn row_selection() -> diesel::dsl::AsSelect<UserRow, diesel::pg::Pg> {
    UserRow::as_select()
}

/// An active user by username, with its password hash if it has one (local mode).
pub async fn with_password(
    conn: &mut AsyncPgConnection,
    username: &str,
) -> QueryResult<Option<(User, Option<String>)>> {
    use crate::schema::tenant::credentials;
    let found: Option<(UserRow, Option<String>)> = users::table
        .left_join(credentials::table.on(credentials::user_id.eq(users::id)))
        .filter(users::username.eq(username))
        .filter(users::status.eq("active"))
        .select((UserRow::as_select(), credentials::password_hash.nullable()))
        .first(conn)
        .await
        .optional()?;
    Ok(found.map(|(row, hash)| (User::from(row), hash)))
}

/// The active local user (one with a password) to mail a password reset to: the one whose
/// username is `login`, else the oldest whose email is `login` (case-insensitive). Only users
/// with an email are found.
pub async fn local_by_login(
    conn: &mut AsyncPgConnection,
    login: &str,
) -> QueryResult<Option<User>> {
    use crate::schema::tenant::credentials;
    let local = || {
        users::table
            .inner_join(credentials::table.on(credentials::user_id.eq(users::id)))
            .filter(users::status.eq("active"))
            .filter(users::subject.like("local:%"))
            .filter(users::email.is_not_null())
            .select(UserRow::as_select())
    };
    let by_username = local()
        .filter(users::username.eq(login))
        .first(conn)
        .await
        .optional()?;
    if let Some(row) = by_username {
        return Ok(Some(User::from(row)));
    }
    Ok(local()
        .filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("lower(users.email) = ")
                .bind::<diesel::sql_types::Text, _>(login.to_lowercase()),
        )
        .order(users::created_at.asc())
        .first(conn)
        .await
        .optional()?
        .map(User::from))
}

/// Replaces a local user's password hash; `false` when the user has no password row.
pub async fn set_password(
    conn: &mut AsyncPgConnection,
    id: UserId,
    password_hash: &str,
) -> QueryResult<bool> {
    use crate::schema::tenant::credentials;
    let n = diesel::update(credentials::table.find(id.0))
        .set((
            credentials::password_hash.eq(password_hash),
            credentials::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Creates a local user with its password hash.
pub async fn create_local(
    conn: &mut AsyncPgConnection,
    username: &str,
    email: &str,
    display_name: Option<&str>,
    password_hash: &str,
) -> QueryResult<User> {
    use crate::schema::tenant::credentials;
    let id = UserId::generate().0;
    let user = diesel::insert_into(users::table)
        .values((
            users::id.eq(id),
            users::subject.eq(format!("local:{}", id.simple())),
            users::username.eq(username),
            users::email.eq(email),
            users::display_name.eq(display_name),
        ))
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await
        .map(User::from)?;
    diesel::insert_into(credentials::table)
        .values((
            credentials::user_id.eq(id),
            credentials::password_hash.eq(password_hash),
        ))
        .execute(conn)
        .await?;
    Ok(user)
}

/// Inserts a user created through the admin API.
pub async fn insert(
    conn: &mut AsyncPgConnection,
    subject: &str,
    username: &str,
    email: &str,
    display_name: Option<&str>,
) -> QueryResult<User> {
    diesel::insert_into(users::table)
        .values((
            users::id.eq(UserId::generate().0),
            users::subject.eq(subject),
            users::username.eq(username),
            users::email.eq(email),
            users::display_name.eq(display_name),
        ))
        .returning(row_selection())
        .get_result(conn)
        .await
        .map(User::from)
}

/// A page of users by id, oldest first (`limit` rows after `after`), filtered.
pub async fn page(
    conn: &mut AsyncPgConnection,
    filter: &super::UserFilter,
    after: Option<UserId>,
    limit: i64,
) -> QueryResult<Vec<User>> {
    use diesel::sql_types::{Bool, Jsonb, Text, Uuid as SqlUuid};
    let mut query = users::table
        .select(row_selection())
        .order(users::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(users::id.gt(after.0));
    }
    if let Some(status) = &filter.status {
        query = query.filter(users::status.eq(status.clone()));
    }
    if let Some(q) = &filter.q {
        let pattern = format!(
            "%{}%",
            q.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        query = query.filter(
            diesel::dsl::sql::<Bool>("(email ILIKE ")
                .bind::<Text, _>(pattern.clone())
                .sql(" OR username ILIKE ")
                .bind::<Text, _>(pattern.clone())
                .sql(" OR display_name ILIKE ")
                .bind::<Text, _>(pattern)
                .sql(")"),
        );
    }
    if let Some(role) = &filter.role {
        query = query.filter(
            diesel::dsl::sql::<Bool>(
                "id IN (SELECT ur.user_id FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
                 WHERE r.key = ",
            )
            .bind::<Text, _>(role.clone())
            .sql(" AND (ur.expires_at IS NULL OR ur.expires_at > now()))"),
        );
    }
    if let Some(team) = filter.team {
        query = query.filter(
            diesel::dsl::sql::<Bool>("id IN (SELECT user_id FROM team_members WHERE team_id = ")
                .bind::<SqlUuid, _>(team)
                .sql(")"),
        );
    }
    for (key, value) in &filter.attributes {
        let mut wanted = serde_json::Map::new();
        wanted.insert(key.clone(), value.clone());
        query = query.filter(
            diesel::dsl::sql::<Bool>("attributes @> ")
                .bind::<Jsonb, _>(serde_json::Value::Object(wanted)),
        );
    }
    Ok(query
        .load(conn)
        .await?
        .into_iter()
        .map(User::from)
        .collect())
}

/// Sets a user's email, display name and status.
pub async fn set_profile(
    conn: &mut AsyncPgConnection,
    id: UserId,
    email: Option<&str>,
    display_name: Option<&str>,
    status: &str,
) -> QueryResult<User> {
    diesel::update(users::table.find(id.0))
        .set((
            users::email.eq(email),
            users::display_name.eq(display_name),
            users::status.eq(status),
            users::updated_at.eq(chrono::Utc::now()),
        ))
        .returning(row_selection())
        .get_result(conn)
        .await
        .map(User::from)
}

/// Marks the user `deleted`, empties every personal field of the row and removes the avatar.
pub async fn forget_profile(conn: &mut AsyncPgConnection, id: UserId) -> QueryResult<User> {
    use crate::schema::tenant::user_avatars;
    diesel::delete(user_avatars::table.find(id.0))
        .execute(conn)
        .await?;
    diesel::update(users::table.find(id.0))
        .set((
            users::email.eq(None::<String>),
            users::display_name.eq(None::<String>),
            users::username.eq(None::<String>),
            users::attributes.eq(serde_json::json!({})),
            users::preferences.eq(serde_json::json!({})),
            users::status.eq("deleted"),
            users::updated_at.eq(chrono::Utc::now()),
        ))
        .returning(row_selection())
        .get_result(conn)
        .await
        .map(User::from)
}

/// Ids of up to `limit` active users whose email is `email`, compared case-insensitively.
pub async fn active_by_email(
    mut conn: &AsyncPgConnection,
    email: &str,
    limit: i64,
) -> QueryResult<Vec<Uuid>> {
    users::table
        .filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("lower(email) = lower(")
                .bind::<diesel::sql_types::Text, _>(email.to_string())
                .sql(")"),
        )
        .filter(users::status.eq("active"))
        .select(users::id)
        .limit(limit)
        .load(&mut conn)
        .await
}

/// The tenant's attribute schema, if one was saved.
pub async fn attribute_schema(
    conn: &mut AsyncPgConnection,
) -> QueryResult<Option<super::AttributeSchema>> {
    use crate::schema::tenant::user_attribute_schema as s;
    s::table
        .select((s::schema, s::self_editable, s::updated_at))
        .first::<(serde_json::Value, Vec<String>, DateTime<Utc>)>(conn)
        .await
        .optional()
        .map(|row| {
            row.map(|(schema, self_editable, at)| super::AttributeSchema {
                schema,
                self_editable,
                updated_at: Some(at),
            })
        })
}

pub async fn put_attribute_schema(
    conn: &mut AsyncPgConnection,
    schema: &serde_json::Value,
    self_editable: &[String],
) -> QueryResult<super::AttributeSchema> {
    use crate::schema::tenant::user_attribute_schema as s;
    let now = Utc::now();
    diesel::insert_into(s::table)
        .values((
            s::singleton.eq(true),
            s::schema.eq(schema),
            s::self_editable.eq(self_editable),
            s::updated_at.eq(now),
        ))
        .on_conflict(s::singleton)
        .do_update()
        .set((
            s::schema.eq(schema),
            s::self_editable.eq(self_editable),
            s::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    Ok(super::AttributeSchema {
        schema: schema.clone(),
        self_editable: self_editable.to_vec(),
        updated_at: Some(now),
    })
}

/// A user's attributes (`None`: no such user); `lock` holds the row until the transaction
/// ends (for a read-modify-write).
pub async fn attributes(
    conn: &mut AsyncPgConnection,
    id: UserId,
    lock: bool,
) -> QueryResult<Option<serde_json::Value>> {
    let q = users::table
        .find(id.0)
        .filter(users::status.ne("deleted"))
        .select(users::attributes);
    if lock {
        q.for_update().first(conn).await.optional()
    } else {
        q.first(conn).await.optional()
    }
}

pub async fn set_attributes(
    conn: &mut AsyncPgConnection,
    id: UserId,
    attributes: &serde_json::Value,
) -> QueryResult<()> {
    diesel::update(users::table.find(id.0))
        .set((
            users::attributes.eq(attributes),
            users::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await
        .map(|_| ())
}

/// A user's stored preferences (`None`: no such user); `lock` as for [`attributes`].
pub async fn preferences(
    conn: &mut AsyncPgConnection,
    id: UserId,
    lock: bool,
) -> QueryResult<Option<serde_json::Value>> {
    let q = users::table.find(id.0).select(users::preferences);
    if lock {
        q.for_update().first(conn).await.optional()
    } else {
        q.first(conn).await.optional()
    }
}

pub async fn set_preferences(
    conn: &mut AsyncPgConnection,
    id: UserId,
    preferences: &serde_json::Value,
) -> QueryResult<()> {
    diesel::update(users::table.find(id.0))
        .set(users::preferences.eq(preferences))
        .execute(conn)
        .await
        .map(|_| ())
}

/// Moves `last_seen_at` forward to the given times (never back), in one statement.
pub async fn set_last_seen(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
    times: &[DateTime<Utc>],
) -> QueryResult<usize> {
    use diesel::sql_types::{Array, Timestamptz, Uuid as SqlUuid};
    diesel::sql_query(
        "UPDATE users u SET last_seen_at = v.at FROM unnest($1, $2) AS v(id, at) \
         WHERE u.id = v.id AND u.last_seen_at < v.at",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Timestamptz>, _>(times)
    .execute(conn)
    .await
}

/// How many audited changes the user (`actor`, as entries name it) made since `since`, by
/// action.
pub async fn actions_since(
    mut conn: &AsyncPgConnection,
    actor: &str,
    since: DateTime<Utc>,
) -> QueryResult<Vec<(String, i64)>> {
    use crate::schema::tenant::audit_log;
    audit_log::table
        .filter(audit_log::actor_id.eq(actor))
        .filter(audit_log::id.ge(crate::audit::search::id_floor(since)))
        .group_by(audit_log::action)
        .select((audit_log::action, diesel::dsl::count_star()))
        .load(&mut conn)
        .await
}

/// The user's latest audited changes: (at, action, target type, target id), newest first.
pub async fn recent_actions(
    mut conn: &AsyncPgConnection,
    actor: &str,
    limit: i64,
) -> QueryResult<Vec<(DateTime<Utc>, String, String, Option<String>)>> {
    use crate::schema::tenant::audit_log;
    audit_log::table
        .filter(audit_log::actor_id.eq(actor))
        .order(audit_log::id.desc())
        .limit(limit)
        .select((
            audit_log::at,
            audit_log::action,
            audit_log::target_type,
            audit_log::target_id,
        ))
        .load(&mut conn)
        .await
}

/// Stores (or replaces) the user's avatar variants.
pub async fn put_avatar(
    conn: &mut AsyncPgConnection,
    user: UserId,
    etag: &str,
    small: &[u8],
    large: &[u8],
) -> QueryResult<()> {
    use crate::schema::tenant::user_avatars;
    diesel::insert_into(user_avatars::table)
        .values((
            user_avatars::user_id.eq(user.0),
            user_avatars::etag.eq(etag),
            user_avatars::small.eq(small),
            user_avatars::large.eq(large),
        ))
        .on_conflict(user_avatars::user_id)
        .do_update()
        .set((
            user_avatars::etag.eq(etag),
            user_avatars::small.eq(small),
            user_avatars::large.eq(large),
            user_avatars::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// The user's avatar: (ETag base, the large or the small variant).
pub async fn avatar(
    mut conn: &AsyncPgConnection,
    user: UserId,
    large: bool,
) -> QueryResult<Option<(String, Vec<u8>)>> {
    use crate::schema::tenant::user_avatars;
    let q = user_avatars::table.find(user.0);
    if large {
        q.select((user_avatars::etag, user_avatars::large))
            .first(&mut conn)
            .await
            .optional()
    } else {
        q.select((user_avatars::etag, user_avatars::small))
            .first(&mut conn)
            .await
            .optional()
    }
}

/// Removes the user's avatar; whether there was one.
pub async fn delete_avatar(conn: &mut AsyncPgConnection, user: UserId) -> QueryResult<bool> {
    use crate::schema::tenant::user_avatars;
    Ok(diesel::delete(user_avatars::table.find(user.0))
        .execute(conn)
        .await?
        > 0)
}
