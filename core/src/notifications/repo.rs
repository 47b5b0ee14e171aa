//! SQL of notifications: categories, templates, preferences and contacts, notifications and
//! their audiences, deliveries and attempts, the inbox (items, counters, events), digests,
//! event rules and analytics. Every function runs on the caller's connection (inside its
//! transaction); none decides anything.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use super::Audience;

#[derive(Debug, Clone, QueryableByName)]
pub struct CategoryRow {
    #[diesel(sql_type = Text)]
    pub key: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub description: String,
    #[diesel(sql_type = Array<Text>)]
    pub channels: Vec<String>,
    #[diesel(sql_type = Bool)]
    pub critical: bool,
    #[diesel(sql_type = Text)]
    pub quiet_hours: String,
    #[diesel(sql_type = Jsonb)]
    pub variables: Value,
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub digest: Option<Value>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub throttle: Option<Value>,
}

const CATEGORY_COLS: &str =
    "key, name, description, channels, critical, quiet_hours, variables, digest, throttle";

pub async fn categories(mut conn: &AsyncPgConnection) -> QueryResult<Vec<CategoryRow>> {
    diesel::sql_query(format!(
        "SELECT {CATEGORY_COLS} FROM notification_categories ORDER BY key"
    ))
    .load(&mut conn)
    .await
}

pub async fn category(mut conn: &AsyncPgConnection, key: &str) -> QueryResult<Option<CategoryRow>> {
    diesel::sql_query(format!(
        "SELECT {CATEGORY_COLS} FROM notification_categories WHERE key = $1"
    ))
    .bind::<Text, _>(key)
    .get_result(&mut conn)
    .await
    .optional()
}

pub async fn put_category(mut conn: &AsyncPgConnection, c: &CategoryRow) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO notification_categories \
           (key, name, description, channels, critical, quiet_hours, variables, digest, throttle) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (key) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description, \
           channels = EXCLUDED.channels, critical = EXCLUDED.critical, \
           quiet_hours = EXCLUDED.quiet_hours, variables = EXCLUDED.variables, \
           digest = EXCLUDED.digest, throttle = EXCLUDED.throttle, updated_at = now()",
    )
    .bind::<Text, _>(&c.key)
    .bind::<Text, _>(&c.name)
    .bind::<Text, _>(&c.description)
    .bind::<Array<Text>, _>(&c.channels)
    .bind::<Bool, _>(c.critical)
    .bind::<Text, _>(&c.quiet_hours)
    .bind::<Jsonb, _>(&c.variables)
    .bind::<Nullable<Jsonb>, _>(&c.digest)
    .bind::<Nullable<Jsonb>, _>(&c.throttle)
    .execute(&mut conn)
    .await?;
    Ok(())
}

pub async fn delete_category(mut conn: &AsyncPgConnection, key: &str) -> QueryResult<bool> {
    let n = diesel::sql_query("DELETE FROM notification_categories WHERE key = $1")
        .bind::<Text, _>(key)
        .execute(&mut conn)
        .await?;
    Ok(n > 0)
}

/// Whether anything still refers to a category (templates, rules).
pub async fn category_in_use(mut conn: &AsyncPgConnection, key: &str) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Bool)]
        used: bool,
    }
    let r: R = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM notification_rules WHERE category = $1) AS used",
    )
    .bind::<Text, _>(key)
    .get_result(&mut conn)
    .await?;
    Ok(r.used)
}

#[derive(Debug, Clone, QueryableByName)]
pub struct TemplateRow {
    #[diesel(sql_type = Text)]
    pub category: String,
    #[diesel(sql_type = Text)]
    pub channel: String,
    #[diesel(sql_type = Text)]
    pub locale: String,
    #[diesel(sql_type = Text)]
    pub subject: String,
    #[diesel(sql_type = Text)]
    pub body: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub html: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

/// Templates, of one category or all.
pub async fn templates(
    mut conn: &AsyncPgConnection,
    category: Option<&str>,
) -> QueryResult<Vec<TemplateRow>> {
    diesel::sql_query(
        "SELECT category, channel, locale, subject, body, html, updated_at \
         FROM notification_templates WHERE $1::text IS NULL OR category = $1 \
         ORDER BY category, channel, locale",
    )
    .bind::<Nullable<Text>, _>(category)
    .load(&mut conn)
    .await
}

pub async fn put_template(
    mut conn: &AsyncPgConnection,
    t: &TemplateRow,
    by: Option<Uuid>,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO notification_templates (category, channel, locale, subject, body, html, updated_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (category, channel, locale) DO UPDATE SET subject = EXCLUDED.subject, \
           body = EXCLUDED.body, html = EXCLUDED.html, updated_by = EXCLUDED.updated_by, \
           updated_at = now()",
    )
    .bind::<Text, _>(&t.category)
    .bind::<Text, _>(&t.channel)
    .bind::<Text, _>(&t.locale)
    .bind::<Text, _>(&t.subject)
    .bind::<Text, _>(&t.body)
    .bind::<Nullable<Text>, _>(&t.html)
    .bind::<Nullable<SqlUuid>, _>(by)
    .execute(&mut conn)
    .await?;
    Ok(())
}

pub async fn delete_template(
    mut conn: &AsyncPgConnection,
    category: &str,
    channel: &str,
    locale: &str,
) -> QueryResult<bool> {
    let n = diesel::sql_query(
        "DELETE FROM notification_templates WHERE category = $1 AND channel = $2 AND locale = $3",
    )
    .bind::<Text, _>(category)
    .bind::<Text, _>(channel)
    .bind::<Text, _>(locale)
    .execute(&mut conn)
    .await?;
    Ok(n > 0)
}

#[derive(Debug, Clone, QueryableByName)]
pub struct PrefRow {
    #[diesel(sql_type = SqlUuid)]
    pub user_id: Uuid,
    #[diesel(sql_type = Text)]
    pub category: String,
    #[diesel(sql_type = Text)]
    pub channel: String,
    #[diesel(sql_type = Bool)]
    pub enabled: bool,
}

/// The choices of `users` (for one category, or all).
pub async fn prefs(
    mut conn: &AsyncPgConnection,
    users: &[Uuid],
    category: Option<&str>,
) -> QueryResult<Vec<PrefRow>> {
    diesel::sql_query(
        "SELECT user_id, category, channel, enabled FROM notification_preferences \
         WHERE user_id = ANY($1) AND ($2::text IS NULL OR category = $2)",
    )
    .bind::<Array<SqlUuid>, _>(users)
    .bind::<Nullable<Text>, _>(category)
    .load(&mut conn)
    .await
}

/// Sets (or with `None` forgets) one choice.
pub async fn set_pref(
    mut conn: &AsyncPgConnection,
    user: Uuid,
    category: &str,
    channel: &str,
    enabled: Option<bool>,
) -> QueryResult<()> {
    match enabled {
        Some(on) => diesel::sql_query(
            "INSERT INTO notification_preferences (user_id, category, channel, enabled) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, category, channel) \
             DO UPDATE SET enabled = EXCLUDED.enabled",
        )
        .bind::<SqlUuid, _>(user)
        .bind::<Text, _>(category)
        .bind::<Text, _>(channel)
        .bind::<Bool, _>(on)
        .execute(&mut conn)
        .await?,
        None => diesel::sql_query(
            "DELETE FROM notification_preferences WHERE user_id = $1 AND category = $2 AND channel = $3",
        )
        .bind::<SqlUuid, _>(user)
        .bind::<Text, _>(category)
        .bind::<Text, _>(channel)
        .execute(&mut conn)
        .await?,
    };
    Ok(())
}

#[derive(Debug, Clone, Default, QueryableByName)]
pub struct UserSettingsRow {
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub quiet_hours: Option<Value>,
    #[diesel(sql_type = Nullable<Text>)]
    pub phone: Option<String>,
    #[diesel(sql_type = Array<Text>)]
    pub push_tokens: Vec<String>,
}

pub async fn user_settings(
    mut conn: &AsyncPgConnection,
    user: Uuid,
) -> QueryResult<UserSettingsRow> {
    Ok(diesel::sql_query(
        "SELECT quiet_hours, phone, push_tokens FROM notification_user_settings WHERE user_id = $1",
    )
    .bind::<SqlUuid, _>(user)
    .get_result(&mut conn)
    .await
    .optional()?
    .unwrap_or_default())
}

pub async fn put_user_settings(
    mut conn: &AsyncPgConnection,
    user: Uuid,
    s: &UserSettingsRow,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO notification_user_settings (user_id, quiet_hours, phone, push_tokens) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET \
           quiet_hours = EXCLUDED.quiet_hours, phone = EXCLUDED.phone, \
           push_tokens = EXCLUDED.push_tokens, updated_at = now()",
    )
    .bind::<SqlUuid, _>(user)
    .bind::<Nullable<Jsonb>, _>(&s.quiet_hours)
    .bind::<Nullable<Text>, _>(&s.phone)
    .bind::<Array<Text>, _>(&s.push_tokens)
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// A user's stored preferences JSON (`{}` when none).
pub async fn raw_preferences(mut conn: &AsyncPgConnection, user: Uuid) -> QueryResult<Value> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Jsonb)]
        preferences: Value,
    }
    let r: Option<R> = diesel::sql_query("SELECT preferences FROM users WHERE id = $1")
        .bind::<SqlUuid, _>(user)
        .get_result(&mut conn)
        .await
        .optional()?;
    Ok(r.map_or_else(|| serde_json::json!({}), |r| r.preferences))
}

// ---- notifications and audiences -------------------------------------------------------

#[derive(Debug, Clone, QueryableByName)]
pub struct NotificationRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub category: String,
    #[diesel(sql_type = Jsonb)]
    pub data: Value,
    #[diesel(sql_type = Jsonb)]
    pub audience: Value,
    #[diesel(sql_type = Nullable<Array<Text>>)]
    pub channels: Option<Vec<String>>,
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub created_by: Option<Uuid>,
    #[diesel(sql_type = Timestamptz)]
    pub send_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub expand_after: Option<Uuid>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub expanded_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Integer)]
    pub recipients: i32,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

const NOTIFICATION_COLS: &str = "id, category, data, audience, channels, source, created_by, \
     send_at, expand_after, expanded_at, recipients, created_at";

pub async fn insert_notification(
    mut conn: &AsyncPgConnection,
    n: &NotificationRow,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO notifications (id, category, data, audience, channels, source, created_by, \
            send_at, recipients) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind::<SqlUuid, _>(n.id)
    .bind::<Text, _>(&n.category)
    .bind::<Jsonb, _>(&n.data)
    .bind::<Jsonb, _>(&n.audience)
    .bind::<Nullable<Array<Text>>, _>(&n.channels)
    .bind::<Text, _>(&n.source)
    .bind::<Nullable<SqlUuid>, _>(n.created_by)
    .bind::<Timestamptz, _>(n.send_at)
    .bind::<Integer, _>(n.recipients)
    .execute(&mut conn)
    .await?;
    Ok(())
}

pub async fn notification(
    mut conn: &AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<NotificationRow>> {
    diesel::sql_query(format!(
        "SELECT {NOTIFICATION_COLS} FROM notifications WHERE id = $1"
    ))
    .bind::<SqlUuid, _>(id)
    .get_result(&mut conn)
    .await
    .optional()
}

/// Newest first, a page after `after`.
pub async fn notifications(
    mut conn: &AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<NotificationRow>> {
    diesel::sql_query(format!(
        "SELECT {NOTIFICATION_COLS} FROM notifications \
         WHERE $1::uuid IS NULL OR id < $1 ORDER BY id DESC LIMIT $2"
    ))
    .bind::<Nullable<SqlUuid>, _>(after)
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await
}

/// Deletes a notification not yet sent; whether it was.
pub async fn cancel(mut conn: &AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    let n = diesel::sql_query(
        "DELETE FROM notifications WHERE id = $1 AND expanded_at IS NULL AND expand_after IS NULL",
    )
    .bind::<SqlUuid, _>(id)
    .execute(&mut conn)
    .await?;
    Ok(n > 0)
}

/// Recipients the tenant addressed in the last hour.
pub async fn recipients_last_hour(mut conn: &AsyncPgConnection) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let r: R = diesel::sql_query(
        "SELECT coalesce(sum(recipients), 0)::bigint AS n FROM notifications \
         WHERE created_at > now() - interval '1 hour'",
    )
    .get_result(&mut conn)
    .await?;
    Ok(r.n)
}

/// The oldest `created_at` within the last hour (when the hourly budget frees up).
pub async fn oldest_in_last_hour(
    mut conn: &AsyncPgConnection,
) -> QueryResult<Option<DateTime<Utc>>> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Nullable<Timestamptz>)]
        at: Option<DateTime<Utc>>,
    }
    let r: R = diesel::sql_query(
        "SELECT min(created_at) AS at FROM notifications WHERE created_at > now() - interval '1 hour'",
    )
    .get_result(&mut conn)
    .await?;
    Ok(r.at)
}

/// Takes the tenant's expansion lock for this transaction, unless another holds it: one
/// expansion at a time per tenant, so per-recipient limits and throttles count every
/// delivery written before.
pub async fn try_expansion_lock(mut conn: &AsyncPgConnection) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Bool)]
        locked: bool,
    }
    let r: R = diesel::sql_query(
        "SELECT pg_try_advisory_xact_lock(hashtextextended('notifications-expand:' || current_schema(), 0)) AS locked",
    )
    .get_result(&mut conn)
    .await?;
    Ok(r.locked)
}

/// Notifications due for expansion, locked for this transaction (others skip them).
pub async fn claim_due_notification(
    mut conn: &AsyncPgConnection,
) -> QueryResult<Option<NotificationRow>> {
    diesel::sql_query(format!(
        "SELECT {NOTIFICATION_COLS} FROM notifications \
         WHERE expanded_at IS NULL AND send_at <= now() \
         ORDER BY send_at LIMIT 1 FOR UPDATE SKIP LOCKED"
    ))
    .get_result(&mut conn)
    .await
    .optional()
}

pub async fn advance_expansion(
    mut conn: &AsyncPgConnection,
    id: Uuid,
    after: Option<Uuid>,
    done: bool,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE notifications SET expand_after = $2, \
           expanded_at = CASE WHEN $3 THEN now() ELSE NULL END WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Nullable<SqlUuid>, _>(after)
    .bind::<Bool, _>(done)
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// The audience predicate on `users u`, binding $1 users, $2 teams, $3 roles, $4 everyone.
const AUDIENCE: &str = "u.status = 'active' AND ($4 OR u.id = ANY($1) \
    OR EXISTS (SELECT 1 FROM team_members m JOIN teams t ON t.id = m.team_id \
               WHERE m.user_id = u.id AND t.path && $2) \
    OR EXISTS (SELECT 1 FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
               WHERE ur.user_id = u.id AND r.key = ANY($3) \
                 AND (ur.expires_at IS NULL OR ur.expires_at > now())) \
    OR EXISTS (SELECT 1 FROM team_roles tr JOIN roles r ON r.id = tr.role_id \
               JOIN teams t ON t.path @> ARRAY[tr.team_id] \
               JOIN team_members m ON m.team_id = t.id \
               WHERE m.user_id = u.id AND r.key = ANY($3)) \
    OR EXISTS (SELECT 1 FROM roles r WHERE r.is_default AND r.key = ANY($3)))";

/// One recipient with what delivery needs to know.
#[derive(Debug, Clone, QueryableByName)]
pub struct RecipientRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Nullable<Text>)]
    pub email: Option<String>,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Jsonb)]
    pub preferences: Value,
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub quiet_hours: Option<Value>,
    #[diesel(sql_type = Nullable<Text>)]
    pub phone: Option<String>,
    #[diesel(sql_type = Array<Text>)]
    pub push_tokens: Vec<String>,
}

/// The next `limit` recipients of `audience` after `after`, by id.
pub async fn audience_page(
    mut conn: &AsyncPgConnection,
    audience: &Audience,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<RecipientRow>> {
    diesel::sql_query(format!(
        "SELECT u.id, u.email, coalesce(u.display_name, u.username, u.email, '') AS name, \
           u.preferences, s.quiet_hours, s.phone, coalesce(s.push_tokens, '{{}}') AS push_tokens \
         FROM users u LEFT JOIN notification_user_settings s ON s.user_id = u.id \
         WHERE {AUDIENCE} AND ($5::uuid IS NULL OR u.id > $5) ORDER BY u.id LIMIT $6"
    ))
    .bind::<Array<SqlUuid>, _>(audience.user_ids())
    .bind::<Array<SqlUuid>, _>(audience.team_ids())
    .bind::<Array<Text>, _>(&audience.roles)
    .bind::<Bool, _>(audience.everyone)
    .bind::<Nullable<SqlUuid>, _>(after)
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await
}

pub async fn audience_count(mut conn: &AsyncPgConnection, audience: &Audience) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let r: R = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM users u WHERE {AUDIENCE}"
    ))
    .bind::<Array<SqlUuid>, _>(audience.user_ids())
    .bind::<Array<SqlUuid>, _>(audience.team_ids())
    .bind::<Array<Text>, _>(&audience.roles)
    .bind::<Bool, _>(audience.everyone)
    .get_result(&mut conn)
    .await?;
    Ok(r.n)
}

#[derive(QueryableByName)]
struct Missing {
    #[diesel(sql_type = Text)]
    item: String,
}

/// Which of the audience's users, teams and roles do not exist (`users/…`, `teams/…`,
/// `roles/…`, with the index of each in its list).
pub async fn missing(mut conn: &AsyncPgConnection, a: &Audience) -> QueryResult<Vec<String>> {
    let rows: Vec<Missing> = diesel::sql_query(
        "SELECT 'users/' || (i - 1) AS item FROM unnest($1::uuid[]) WITH ORDINALITY AS x(id, i) \
           WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = x.id AND u.status = 'active') \
         UNION ALL \
         SELECT 'teams/' || (i - 1) FROM unnest($2::uuid[]) WITH ORDINALITY AS x(id, i) \
           WHERE NOT EXISTS (SELECT 1 FROM teams t WHERE t.id = x.id) \
         UNION ALL \
         SELECT 'roles/' || (i - 1) FROM unnest($3::text[]) WITH ORDINALITY AS x(key, i) \
           WHERE NOT EXISTS (SELECT 1 FROM roles r WHERE r.key = x.key)",
    )
    .bind::<Array<SqlUuid>, _>(a.user_ids())
    .bind::<Array<SqlUuid>, _>(a.team_ids())
    .bind::<Array<Text>, _>(&a.roles)
    .load(&mut conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.item).collect())
}

#[derive(Debug, Clone, QueryableByName)]
pub struct CountRow {
    #[diesel(sql_type = SqlUuid)]
    pub user_id: Uuid,
    #[diesel(sql_type = Text)]
    pub channel: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub throttle_key: Option<String>,
    #[diesel(sql_type = Text)]
    pub category: String,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// Messages counted against limits (not skipped or throttled) to `users` since `since`.
pub async fn recent_counts(
    mut conn: &AsyncPgConnection,
    users: &[Uuid],
    since: DateTime<Utc>,
) -> QueryResult<Vec<CountRow>> {
    diesel::sql_query(
        "SELECT user_id, channel, throttle_key, category, count(*) AS n FROM notification_deliveries \
         WHERE user_id = ANY($1) AND created_at > $2 AND status NOT IN ('skipped', 'throttled') \
         GROUP BY user_id, channel, throttle_key, category",
    )
    .bind::<Array<SqlUuid>, _>(users)
    .bind::<Timestamptz, _>(since)
    .load(&mut conn)
    .await
}

/// A delivery to write.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: Uuid,
    pub user_id: Uuid,
    pub channel: String,
    pub status: String,
    pub reason: Option<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub digest_id: Option<Uuid>,
    pub throttle_key: Option<String>,
}

/// Writes deliveries of one notification (a repeat of the same recipient and channel is
/// ignored).
pub async fn insert_deliveries(
    mut conn: &AsyncPgConnection,
    notification: Uuid,
    category: &str,
    rows: &[NewDelivery],
) -> QueryResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&NewDelivery) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let users: Vec<Uuid> = rows.iter().map(|r| r.user_id).collect();
    let channels: Vec<String> = rows.iter().map(|r| r.channel.clone()).collect();
    let statuses: Vec<String> = rows.iter().map(|r| r.status.clone()).collect();
    let dues: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.due_at).collect();
    let digests: Vec<Option<Uuid>> = rows.iter().map(|r| r.digest_id).collect();
    diesel::sql_query(
        "INSERT INTO notification_deliveries (id, notification_id, user_id, channel, category, \
            status, reason, due_at, digest_id, throttle_key, \
            delivered_at, sent_at) \
         SELECT id, $1, user_id, channel, $2, status, reason, due_at, digest_id, throttle_key, \
            CASE WHEN status = 'delivered' THEN now() END, CASE WHEN status = 'delivered' THEN now() END \
         FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], \
                     $8::timestamptz[], $9::uuid[], $10::text[]) \
              AS x(id, user_id, channel, status, reason, due_at, digest_id, throttle_key) \
         ON CONFLICT (notification_id, user_id, channel) DO NOTHING",
    )
    .bind::<SqlUuid, _>(notification)
    .bind::<Text, _>(category)
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<SqlUuid>, _>(&users)
    .bind::<Array<Text>, _>(&channels)
    .bind::<Array<Text>, _>(&statuses)
    .bind::<Array<Nullable<Text>>, _>(col(|r| r.reason.clone()))
    .bind::<Array<Nullable<Timestamptz>>, _>(&dues)
    .bind::<Array<Nullable<SqlUuid>>, _>(&digests)
    .bind::<Array<Nullable<Text>>, _>(col(|r| r.throttle_key.clone()))
    .execute(&mut conn)
    .await
}

/// An in-app item to write.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub user_id: Uuid,
    pub title: String,
    pub body: String,
}

/// Writes in-app items of one notification, raises each recipient's unread count (users in
/// id order, so two fan-outs never deadlock) and writes a `created` event per item carrying the
/// new count. Returns the users whose inbox changed.
pub async fn insert_items(
    mut conn: &AsyncPgConnection,
    notification: Uuid,
    category: &str,
    data: &Value,
    items: &[NewItem],
) -> QueryResult<Vec<Uuid>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut items = items.to_vec();
    items.sort_by_key(|i| i.user_id);
    let ids: Vec<Uuid> = items.iter().map(|_| Uuid::now_v7()).collect();
    let users: Vec<Uuid> = items.iter().map(|i| i.user_id).collect();
    let titles: Vec<String> = items.iter().map(|i| i.title.clone()).collect();
    let bodies: Vec<String> = items.iter().map(|i| i.body.clone()).collect();
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = SqlUuid)]
        user_id: Uuid,
    }
    let rows: Vec<R> = diesel::sql_query(
        "WITH ins AS ( \
           INSERT INTO inbox_items (id, user_id, notification_id, category, title, body, data) \
           SELECT id, user_id, $1, $2, title, body, $3 \
           FROM unnest($4::uuid[], $5::uuid[], $6::text[], $7::text[]) AS x(id, user_id, title, body) \
           ORDER BY user_id \
           ON CONFLICT (notification_id, user_id) DO NOTHING RETURNING id, user_id), \
         cnt AS ( \
           INSERT INTO inbox_counters (user_id, unread) SELECT user_id, 1 FROM ins ORDER BY user_id \
           ON CONFLICT (user_id) DO UPDATE SET unread = inbox_counters.unread + 1 \
           RETURNING user_id, unread) \
         INSERT INTO inbox_events (user_id, kind, item_id, unread) \
         SELECT ins.user_id, 'created', ins.id, cnt.unread FROM ins JOIN cnt USING (user_id) \
         ORDER BY ins.user_id RETURNING user_id",
    )
    .bind::<SqlUuid, _>(notification)
    .bind::<Text, _>(category)
    .bind::<Jsonb, _>(data)
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<SqlUuid>, _>(&users)
    .bind::<Array<Text>, _>(&titles)
    .bind::<Array<Text>, _>(&bodies)
    .load(&mut conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.user_id).collect())
}

/// Opens (or finds) the user's open digest of a category and channel; returns its id and
/// whether it was opened now.
pub async fn open_digest(
    mut conn: &AsyncPgConnection,
    user: Uuid,
    category: &str,
    channel: &str,
    due: DateTime<Utc>,
) -> QueryResult<(Uuid, bool)> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = Bool)]
        created: bool,
    }
    let r: R = diesel::sql_query(
        "INSERT INTO notification_digests (id, user_id, category, channel, due_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_id, category, channel) WHERE status = 'open' \
         DO UPDATE SET category = EXCLUDED.category \
         RETURNING id, (xmax = 0) AS created",
    )
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<SqlUuid, _>(user)
    .bind::<Text, _>(category)
    .bind::<Text, _>(channel)
    .bind::<Timestamptz, _>(due)
    .get_result(&mut conn)
    .await?;
    Ok((r.id, r.created))
}

// ---- sending --------------------------------------------------------------------------

/// A claimed delivery with everything needed to render and send it.
#[derive(Debug, Clone, QueryableByName)]
pub struct ClaimedRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub notification_id: Uuid,
    #[diesel(sql_type = Text)]
    pub channel: String,
    #[diesel(sql_type = Text)]
    pub category: String,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Jsonb)]
    pub data: Value,
    #[diesel(embed)]
    pub to: Recipient,
}

/// Who a claimed delivery or digest goes to: the columns [`recipient_columns!`] selects over
/// the joins [`recipient_joins!`] adds to a claim `c` with a `user_id`.
#[derive(Debug, Clone, QueryableByName)]
pub struct Recipient {
    #[diesel(sql_type = SqlUuid)]
    pub user_id: Uuid,
    #[diesel(sql_type = Nullable<Text>)]
    pub email: Option<String>,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub locale: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub phone: Option<String>,
    #[diesel(sql_type = Array<Text>)]
    pub push_tokens: Vec<String>,
}

macro_rules! recipient_columns {
    () => {
        "c.user_id, u.email, coalesce(u.display_name, u.username, u.email, '') AS name, \
         coalesce(u.preferences->>'locale', 'en') AS locale, s.phone, \
         coalesce(s.push_tokens, '{}') AS push_tokens "
    };
}

macro_rules! recipient_joins {
    () => {
        " LEFT JOIN users u ON u.id = c.user_id \
         LEFT JOIN notification_user_settings s ON s.user_id = c.user_id"
    };
}

/// Claims up to `limit` due deliveries: each gets a lease (`due_at` moves `lease_secs` ahead,
/// so a crash hands it to another worker then) and its attempt is counted.
pub async fn claim_deliveries(
    mut conn: &AsyncPgConnection,
    limit: i64,
    lease_secs: i32,
) -> QueryResult<Vec<ClaimedRow>> {
    diesel::sql_query(concat!(
        "WITH c AS ( \
           UPDATE notification_deliveries d SET due_at = now() + make_interval(secs => $2), \
             attempts = d.attempts + 1, status = 'queued' \
           WHERE d.id IN (SELECT id FROM notification_deliveries \
                          WHERE status IN ('queued', 'held') AND due_at <= now() \
                          ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
           RETURNING d.id, d.notification_id, d.user_id, d.channel, d.category, d.attempts) \
         SELECT c.id, c.notification_id, c.channel, c.category, c.attempts, n.data, ",
        recipient_columns!(),
        "FROM c JOIN notifications n ON n.id = c.notification_id",
        recipient_joins!()
    ))
    .bind::<BigInt, _>(limit)
    .bind::<Integer, _>(lease_secs)
    .load(&mut conn)
    .await
}

/// One try to record.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub delivery: Uuid,
    pub n: i32,
    pub provider: String,
    pub ok: bool,
    pub error: Option<String>,
}

pub async fn insert_attempts(mut conn: &AsyncPgConnection, rows: &[NewAttempt]) -> QueryResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.delivery).collect();
    let ns: Vec<i32> = rows.iter().map(|r| r.n).collect();
    let providers: Vec<String> = rows.iter().map(|r| r.provider.clone()).collect();
    let oks: Vec<bool> = rows.iter().map(|r| r.ok).collect();
    let errors: Vec<Option<String>> = rows.iter().map(|r| r.error.clone()).collect();
    diesel::sql_query(
        "INSERT INTO notification_attempts (delivery_id, n, provider, ok, error) \
         SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::bool[], $5::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<Integer>, _>(&ns)
    .bind::<Array<Text>, _>(&providers)
    .bind::<Array<Bool>, _>(&oks)
    .bind::<Array<Nullable<Text>>, _>(&errors)
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// The outcome of one delivery's attempt.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: Uuid,
    /// `sent`, `queued` (a retry at `due_at`), `failed` or `bounced`.
    pub status: String,
    pub provider: Option<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

pub async fn record_outcomes(mut conn: &AsyncPgConnection, rows: &[Outcome]) -> QueryResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let statuses: Vec<String> = rows.iter().map(|r| r.status.clone()).collect();
    let providers: Vec<Option<String>> = rows.iter().map(|r| r.provider.clone()).collect();
    let dues: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.due_at).collect();
    let errors: Vec<Option<String>> = rows.iter().map(|r| r.error.clone()).collect();
    diesel::sql_query(
        "UPDATE notification_deliveries d SET status = x.status, \
           provider = coalesce(x.provider, d.provider), due_at = x.due_at, \
           last_error = CASE WHEN x.status = 'sent' THEN d.last_error ELSE x.error END, \
           sent_at = CASE WHEN x.status = 'sent' THEN now() ELSE d.sent_at END, \
           failed_at = CASE WHEN x.status IN ('failed', 'bounced') THEN now() ELSE d.failed_at END \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) \
              AS x(id, status, provider, due_at, error) \
         WHERE d.id = x.id AND d.status = 'queued'",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<Text>, _>(&statuses)
    .bind::<Array<Nullable<Text>>, _>(&providers)
    .bind::<Array<Nullable<Timestamptz>>, _>(&dues)
    .bind::<Array<Nullable<Text>>, _>(&errors)
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// A provider's report on a sent message: `delivered`, `failed` or `bounced`.
pub async fn report(
    mut conn: &AsyncPgConnection,
    id: Uuid,
    provider: &str,
    status: &str,
    error: Option<&str>,
) -> QueryResult<bool> {
    let n = diesel::sql_query(
        "UPDATE notification_deliveries SET status = $2, \
           delivered_at = CASE WHEN $2 = 'delivered' THEN now() ELSE delivered_at END, \
           failed_at = CASE WHEN $2 <> 'delivered' THEN now() ELSE failed_at END, \
           last_error = coalesce($3, last_error) \
         WHERE id = $1 AND provider = $4 AND status IN ('sent', 'delivered')",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(status)
    .bind::<Nullable<Text>, _>(error)
    .bind::<Text, _>(provider)
    .execute(&mut conn)
    .await?;
    Ok(n > 0)
}

/// Puts a failed delivery back in the queue (a manual retry of a dead letter).
pub async fn requeue(mut conn: &AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    let n = diesel::sql_query(
        "UPDATE notification_deliveries SET status = 'queued', due_at = now(), attempts = 0, \
           failed_at = NULL WHERE id = $1 AND status = 'failed'",
    )
    .bind::<SqlUuid, _>(id)
    .execute(&mut conn)
    .await?;
    Ok(n > 0)
}

/// Whether anything is due now (deliveries, digests, notifications, or outbox events the rules
/// have not seen), and whether anything falls due within `secs`: one query, so a sweep over
/// idle tenants costs one round trip each.
pub async fn due(mut conn: &AsyncPgConnection, secs: i32) -> QueryResult<(bool, bool)> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Bool)]
        now: bool,
    }
    let r: R = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM notification_deliveries WHERE status IN ('queued', 'held') \
                        AND due_at <= now()) \
             OR EXISTS (SELECT 1 FROM notification_digests WHERE status = 'open' AND due_at <= now()) \
             OR EXISTS (SELECT 1 FROM notifications WHERE expanded_at IS NULL AND send_at <= now()) \
             OR EXISTS (SELECT 1 FROM outbox o, notification_rule_cursor c \
                        WHERE (o.txid, o.seq) > (c.txid, c.seq)) AS now",
    )
    .get_result(&mut conn)
    .await?;
    if r.now {
        return Ok((true, true));
    }
    Ok((false, work_waiting(conn, secs).await?))
}

/// Whether deliveries, digests or notifications fall due within `secs` (later ones are found
/// by the worker's sweep).
pub async fn work_waiting(mut conn: &AsyncPgConnection, secs: i32) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Bool)]
        waiting: bool,
    }
    let r: R = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM notification_deliveries WHERE status IN ('queued', 'held') \
                        AND due_at <= now() + make_interval(secs => $1)) \
             OR EXISTS (SELECT 1 FROM notification_digests WHERE status = 'open' \
                        AND due_at <= now() + make_interval(secs => $1)) \
             OR EXISTS (SELECT 1 FROM notifications WHERE expanded_at IS NULL \
                        AND send_at <= now() + make_interval(secs => $1)) AS waiting",
    )
    .bind::<Integer, _>(secs)
    .get_result(&mut conn)
    .await?;
    Ok(r.waiting)
}

// ---- digests ---------------------------------------------------------------------------

#[derive(Debug, Clone, QueryableByName)]
pub struct DigestRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub category: String,
    #[diesel(sql_type = Text)]
    pub channel: String,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(embed)]
    pub to: Recipient,
}

/// Claims due open digests (lease as for deliveries).
pub async fn claim_digests(
    mut conn: &AsyncPgConnection,
    limit: i64,
    lease_secs: i32,
) -> QueryResult<Vec<DigestRow>> {
    diesel::sql_query(concat!(
        "WITH c AS ( \
           UPDATE notification_digests g SET due_at = now() + make_interval(secs => $2), \
             attempts = g.attempts + 1 \
           WHERE g.id IN (SELECT id FROM notification_digests WHERE status = 'open' AND due_at <= now() \
                          ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
           RETURNING g.id, g.user_id, g.category, g.channel, g.attempts) \
         SELECT c.id, c.category, c.channel, c.attempts, ",
        recipient_columns!(),
        "FROM c",
        recipient_joins!()
    ))
    .bind::<BigInt, _>(limit)
    .bind::<Integer, _>(lease_secs)
    .load(&mut conn)
    .await
}

#[derive(Debug, Clone, QueryableByName)]
pub struct DigestItem {
    #[diesel(sql_type = SqlUuid)]
    pub delivery: Uuid,
    #[diesel(sql_type = Jsonb)]
    pub data: Value,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

/// The items of digests, oldest first.
pub async fn digest_items(
    mut conn: &AsyncPgConnection,
    digests: &[Uuid],
) -> QueryResult<HashMap<Uuid, Vec<DigestItem>>> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = SqlUuid)]
        digest_id: Uuid,
        #[diesel(sql_type = SqlUuid)]
        delivery: Uuid,
        #[diesel(sql_type = Jsonb)]
        data: Value,
        #[diesel(sql_type = Timestamptz)]
        created_at: DateTime<Utc>,
    }
    let rows: Vec<R> = diesel::sql_query(
        "SELECT d.digest_id, d.id AS delivery, n.data, d.created_at FROM notification_deliveries d \
         JOIN notifications n ON n.id = d.notification_id \
         WHERE d.digest_id = ANY($1) AND d.status = 'digested' ORDER BY d.created_at, d.id",
    )
    .bind::<Array<SqlUuid>, _>(digests)
    .load(&mut conn)
    .await?;
    let mut out: HashMap<Uuid, Vec<DigestItem>> = HashMap::new();
    for r in rows {
        out.entry(r.digest_id).or_default().push(DigestItem {
            delivery: r.delivery,
            data: r.data,
            created_at: r.created_at,
        });
    }
    Ok(out)
}

/// Closes a digest: `sent` (its items become sent with it) or `failed`, or leaves it open for
/// a retry at `retry_at`.
pub async fn finish_digest(
    mut conn: &AsyncPgConnection,
    id: Uuid,
    outcome: &str,
    retry_at: Option<DateTime<Utc>>,
    provider: Option<&str>,
    error: Option<&str>,
) -> QueryResult<()> {
    if let Some(at) = retry_at {
        diesel::sql_query(
            "UPDATE notification_digests SET due_at = $2, last_error = $3 WHERE id = $1",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<Timestamptz, _>(at)
        .bind::<Nullable<Text>, _>(error)
        .execute(&mut conn)
        .await?;
        return Ok(());
    }
    diesel::sql_query(
        "WITH g AS (UPDATE notification_digests SET status = $2, last_error = $4, \
                      sent_at = CASE WHEN $2 = 'sent' THEN now() END WHERE id = $1 RETURNING id) \
         UPDATE notification_deliveries d SET status = $2, provider = $3, last_error = $4, \
           sent_at = CASE WHEN $2 = 'sent' THEN now() END, \
           failed_at = CASE WHEN $2 = 'failed' THEN now() END \
         FROM g WHERE d.digest_id = g.id AND d.status = 'digested'",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(outcome)
    .bind::<Nullable<Text>, _>(provider)
    .bind::<Nullable<Text>, _>(error)
    .execute(&mut conn)
    .await?;
    Ok(())
}

// ---- inbox -----------------------------------------------------------------------------

#[derive(Debug, Clone, QueryableByName)]
pub struct ItemRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub notification_id: Uuid,
    #[diesel(sql_type = Text)]
    pub category: String,
    #[diesel(sql_type = Text)]
    pub title: String,
    #[diesel(sql_type = Text)]
    pub body: String,
    #[diesel(sql_type = Jsonb)]
    pub data: Value,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub read_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub archived_at: Option<DateTime<Utc>>,
}

const ITEM_COLS: &str =
    "id, notification_id, category, title, body, data, created_at, read_at, archived_at";

/// A page of a user's inbox, newest first; `filter` is `unread`, `read`, `archived` or `all`
/// (not archived).
pub async fn inbox_page(
    mut conn: &AsyncPgConnection,
    user: Uuid,
    filter: &str,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<ItemRow>> {
    let cond = match filter {
        "unread" => "archived_at IS NULL AND read_at IS NULL",
        "read" => "archived_at IS NULL AND read_at IS NOT NULL",
        "archived" => "archived_at IS NOT NULL",
        _ => "archived_at IS NULL",
    };
    diesel::sql_query(format!(
        "SELECT {ITEM_COLS} FROM inbox_items WHERE user_id = $1 AND {cond} \
         AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind::<SqlUuid, _>(user)
    .bind::<Nullable<SqlUuid>, _>(after)
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await
}

pub async fn items(
    mut conn: &AsyncPgConnection,
    user: Uuid,
    ids: &[Uuid],
) -> QueryResult<Vec<ItemRow>> {
    diesel::sql_query(format!(
        "SELECT {ITEM_COLS} FROM inbox_items WHERE user_id = $1 AND id = ANY($2)"
    ))
    .bind::<SqlUuid, _>(user)
    .bind::<Array<SqlUuid>, _>(ids)
    .load(&mut conn)
    .await
}

/// The user's unread count (locking the counter row with `lock`).
pub async fn unread(mut conn: &AsyncPgConnection, user: Uuid, lock: bool) -> QueryResult<i32> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Integer)]
        unread: i32,
    }
    if lock {
        diesel::sql_query(
            "INSERT INTO inbox_counters (user_id, unread) VALUES ($1, 0) ON CONFLICT DO NOTHING",
        )
        .bind::<SqlUuid, _>(user)
        .execute(&mut conn)
        .await?;
    }
    let r: Option<R> = diesel::sql_query(format!(
        "SELECT unread FROM inbox_counters WHERE user_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    ))
    .bind::<SqlUuid, _>(user)
    .get_result(&mut conn)
    .await
    .optional()?;
    Ok(r.map_or(0, |r| r.unread))
}

/// Changes one item (`read`, `unread`, `archived`, `unarchived`) with the counter row locked
/// by the caller; returns the unread delta, or `None` when nothing changed.
pub async fn change_item(
    mut conn: &AsyncPgConnection,
    user: Uuid,
    item: Uuid,
    kind: &str,
) -> QueryResult<Option<i32>> {
    // Unread means: not read and not archived.
    let (set, cond) = match kind {
        "read" => ("read_at = now()", "read_at IS NULL"),
        "unread" => ("read_at = NULL", "read_at IS NOT NULL"),
        "archived" => ("archived_at = now()", "archived_at IS NULL"),
        _ => ("archived_at = NULL", "archived_at IS NOT NULL"),
    };
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Bool)]
        counted: bool,
    }
    let before: Option<R> = diesel::sql_query(
        "SELECT read_at IS NULL AND archived_at IS NULL AS counted FROM inbox_items \
         WHERE id = $2 AND user_id = $1 FOR UPDATE",
    )
    .bind::<SqlUuid, _>(user)
    .bind::<SqlUuid, _>(item)
    .get_result(&mut conn)
    .await
    .optional()?;
    let Some(before) = before else {
        return Ok(None);
    };
    let after: Option<R> = diesel::sql_query(format!(
        "UPDATE inbox_items SET {set} WHERE id = $2 AND user_id = $1 AND {cond} \
         RETURNING (read_at IS NULL AND archived_at IS NULL) AS counted"
    ))
    .bind::<SqlUuid, _>(user)
    .bind::<SqlUuid, _>(item)
    .get_result(&mut conn)
    .await
    .optional()?;
    Ok(after.map(|a| i32::from(a.counted) - i32::from(before.counted)))
}

/// Whether the user has this item.
pub async fn has_item(mut conn: &AsyncPgConnection, user: Uuid, item: Uuid) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Bool)]
        e: bool,
    }
    let r: R = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM inbox_items WHERE id = $2 AND user_id = $1) AS e",
    )
    .bind::<SqlUuid, _>(user)
    .bind::<SqlUuid, _>(item)
    .get_result(&mut conn)
    .await?;
    Ok(r.e)
}

/// Marks every unread item read; how many.
pub async fn read_all(mut conn: &AsyncPgConnection, user: Uuid) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE inbox_items SET read_at = now() \
         WHERE user_id = $1 AND read_at IS NULL AND archived_at IS NULL",
    )
    .bind::<SqlUuid, _>(user)
    .execute(&mut conn)
    .await
}

/// Adds `delta` to the (locked) counter and writes the event; returns the new count.
pub async fn inbox_event(
    mut conn: &AsyncPgConnection,
    user: Uuid,
    kind: &str,
    item: Option<Uuid>,
    delta: i32,
    reset: bool,
) -> QueryResult<i32> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Integer)]
        unread: i32,
    }
    let r: R = diesel::sql_query(
        "WITH c AS (UPDATE inbox_counters SET unread = CASE WHEN $5 THEN 0 ELSE greatest(unread + $4, 0) END \
                    WHERE user_id = $1 RETURNING unread) \
         INSERT INTO inbox_events (user_id, kind, item_id, unread) \
         SELECT $1, $2, $3, c.unread FROM c RETURNING unread",
    )
    .bind::<SqlUuid, _>(user)
    .bind::<Text, _>(kind)
    .bind::<Nullable<SqlUuid>, _>(item)
    .bind::<Integer, _>(delta)
    .bind::<Bool, _>(reset)
    .get_result(&mut conn)
    .await?;
    Ok(r.unread)
}

#[derive(Debug, Clone, QueryableByName)]
pub struct EventRow {
    #[diesel(sql_type = BigInt)]
    pub seq: i64,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub item_id: Option<Uuid>,
    #[diesel(sql_type = Integer)]
    pub unread: i32,
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
}

/// A user's inbox events after `seq`, in order.
pub async fn events_after(
    mut conn: &AsyncPgConnection,
    user: Uuid,
    seq: i64,
    limit: i64,
) -> QueryResult<Vec<EventRow>> {
    diesel::sql_query(
        "SELECT seq, kind, item_id, unread, at FROM inbox_events \
         WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind::<SqlUuid, _>(user)
    .bind::<BigInt, _>(seq)
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await
}

/// The newest event's number of a user (0 when none).
pub async fn last_event(mut conn: &AsyncPgConnection, user: Uuid) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = BigInt)]
        seq: i64,
    }
    let r: R = diesel::sql_query(
        "SELECT coalesce(max(seq), 0) AS seq FROM inbox_events WHERE user_id = $1",
    )
    .bind::<SqlUuid, _>(user)
    .get_result(&mut conn)
    .await?;
    Ok(r.seq)
}

// ---- tracking --------------------------------------------------------------------------

#[derive(Debug, Clone, QueryableByName)]
pub struct DeliveryRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub user_id: Uuid,
    #[diesel(sql_type = Text)]
    pub channel: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub reason: Option<String>,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    pub provider: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub due_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub sent_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub delivered_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub failed_at: Option<DateTime<Utc>>,
}

/// A notification's deliveries by id, a page after `after`.
pub async fn deliveries(
    mut conn: &AsyncPgConnection,
    notification: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<DeliveryRow>> {
    diesel::sql_query(
        "SELECT id, user_id, channel, status, reason, attempts, provider, last_error, due_at, \
           created_at, sent_at, delivered_at, failed_at FROM notification_deliveries \
         WHERE notification_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3",
    )
    .bind::<SqlUuid, _>(notification)
    .bind::<Nullable<SqlUuid>, _>(after)
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await
}

#[derive(Debug, Clone, QueryableByName)]
pub struct AttemptRow {
    #[diesel(sql_type = SqlUuid)]
    pub delivery_id: Uuid,
    #[diesel(sql_type = Integer)]
    pub n: i32,
    #[diesel(sql_type = Text)]
    pub provider: String,
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
    #[diesel(sql_type = Bool)]
    pub ok: bool,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
}

pub async fn attempts(mut conn: &AsyncPgConnection, ids: &[Uuid]) -> QueryResult<Vec<AttemptRow>> {
    diesel::sql_query(
        "SELECT delivery_id, n, provider, at, ok, error FROM notification_attempts \
         WHERE delivery_id = ANY($1) ORDER BY delivery_id, n, at",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .load(&mut conn)
    .await
}

#[derive(Debug, Clone, QueryableByName)]
pub struct StatRow {
    #[diesel(sql_type = Text)]
    pub category: String,
    #[diesel(sql_type = Text)]
    pub channel: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// Deliveries by category, channel and status created in `[from, to)`.
pub async fn stats(
    mut conn: &AsyncPgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> QueryResult<Vec<StatRow>> {
    diesel::sql_query(
        "SELECT category, channel, status, count(*) AS n FROM notification_deliveries \
         WHERE created_at >= $1 AND created_at < $2 GROUP BY category, channel, status \
         UNION ALL \
         SELECT category, 'in_app', 'read', count(*) FROM inbox_items \
         WHERE created_at >= $1 AND created_at < $2 AND read_at IS NOT NULL GROUP BY category \
         ORDER BY 1, 2, 3",
    )
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .load(&mut conn)
    .await
}

// ---- event rules -----------------------------------------------------------------------

#[derive(Debug, Clone, QueryableByName)]
pub struct RuleRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub topic: String,
    #[diesel(sql_type = Text)]
    pub category: String,
    #[diesel(sql_type = Jsonb)]
    pub audience: Value,
    #[diesel(sql_type = Jsonb)]
    pub data: Value,
    #[diesel(sql_type = Bool)]
    pub enabled: bool,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub created_by: Option<Uuid>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

pub async fn rules(mut conn: &AsyncPgConnection) -> QueryResult<Vec<RuleRow>> {
    diesel::sql_query(
        "SELECT id, topic, category, audience, data, enabled, created_by, created_at \
         FROM notification_rules ORDER BY created_at, id",
    )
    .load(&mut conn)
    .await
}

pub async fn insert_rule(mut conn: &AsyncPgConnection, r: &RuleRow) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO notification_rules (id, topic, category, audience, data, enabled, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind::<SqlUuid, _>(r.id)
    .bind::<Text, _>(&r.topic)
    .bind::<Text, _>(&r.category)
    .bind::<Jsonb, _>(&r.audience)
    .bind::<Jsonb, _>(&r.data)
    .bind::<Bool, _>(r.enabled)
    .bind::<Nullable<SqlUuid>, _>(r.created_by)
    .bind::<Timestamptz, _>(r.created_at)
    .execute(&mut conn)
    .await?;
    Ok(())
}

pub async fn delete_rule(mut conn: &AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    let n = diesel::sql_query("DELETE FROM notification_rules WHERE id = $1")
        .bind::<SqlUuid, _>(id)
        .execute(&mut conn)
        .await?;
    Ok(n > 0)
}

/// The rule consumer's cursor and the time the platform's rules apply from, locked for this
/// transaction (one consumer at a time).
pub async fn rule_cursor(
    mut conn: &AsyncPgConnection,
) -> QueryResult<Option<(crate::outbox::Cursor, DateTime<Utc>)>> {
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = BigInt)]
        txid: i64,
        #[diesel(sql_type = BigInt)]
        seq: i64,
        #[diesel(sql_type = Timestamptz)]
        since: DateTime<Utc>,
    }
    let r: Option<R> = diesel::sql_query(
        "SELECT txid, seq, since FROM notification_rule_cursor WHERE id = 1 FOR UPDATE SKIP LOCKED",
    )
    .get_result(&mut conn)
    .await
    .optional()?;
    Ok(r.map(|r| {
        (
            crate::outbox::Cursor {
                txid: r.txid,
                seq: r.seq,
            },
            r.since,
        )
    }))
}

pub async fn set_rule_cursor(
    mut conn: &AsyncPgConnection,
    cursor: crate::outbox::Cursor,
) -> QueryResult<()> {
    diesel::sql_query("UPDATE notification_rule_cursor SET txid = $1, seq = $2 WHERE id = 1")
        .bind::<BigInt, _>(cursor.txid)
        .bind::<BigInt, _>(cursor.seq)
        .execute(&mut conn)
        .await?;
    Ok(())
}
