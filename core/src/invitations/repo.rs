//! SQL for invitations, their templates and the tenant's policy, on a tenant transaction
//! (unqualified tables). No rules here: callers decide who may do what.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Bytea, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{Counts, Delivery, Filter, Invitation, Status, Template};
use crate::ids::{InvitationId, TeamId, UserId};
use crate::schema::tenant::{invitation_templates, invitations, users};

/// The statuses an invitation is open in, as SQL.
const OPEN: [&str; 3] = ["pending", "sent", "opened"];

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = invitations)]
pub struct Row {
    pub id: Uuid,
    pub email: String,
    pub roles: Vec<String>,
    pub teams: Vec<Uuid>,
    pub message: Option<String>,
    pub locale: String,
    pub status: String,
    pub invited_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub opened_at: Option<DateTime<Utc>>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub accepted_by: Option<Uuid>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub mail_status: String,
    pub mail_attempts: i32,
    pub mail_error: Option<String>,
}

impl Row {
    /// The status as the API shows it: an open invitation past its expiry is `expired`.
    pub fn status_at(&self, now: DateTime<Utc>) -> Status {
        let stored = Status::parse(&self.status).unwrap_or(Status::Expired);
        if stored.is_open() && self.expires_at <= now {
            Status::Expired
        } else {
            stored
        }
    }

    pub fn view(self, now: DateTime<Utc>) -> Invitation {
        Invitation {
            id: InvitationId(self.id),
            status: self.status_at(now),
            email: self.email,
            roles: self.roles,
            teams: self.teams.into_iter().map(TeamId).collect(),
            message: self.message,
            locale: self.locale,
            invited_by: self.invited_by.map(UserId),
            created_at: self.created_at,
            expires_at: self.expires_at,
            sent_at: self.sent_at,
            opened_at: self.opened_at,
            accepted_at: self.accepted_at,
            accepted_by: self.accepted_by.map(UserId),
            revoked_at: self.revoked_at,
            delivery: Delivery {
                status: self.mail_status,
                attempts: self.mail_attempts,
                error: self.mail_error,
            },
        }
    }
}

/// A row to insert.
pub struct NewRow<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub roles: &'a [String],
    pub teams: &'a [Uuid],
    pub message: Option<&'a str>,
    pub locale: &'a str,
    pub invited_by: Uuid,
    pub expires_at: DateTime<Utc>,
}

/// Inserts invitations, queued for mail now.
pub async fn insert(mut conn: &AsyncPgConnection, rows: &[NewRow<'_>]) -> QueryResult<Vec<Row>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let now = Utc::now();
    let values: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                invitations::id.eq(r.id),
                invitations::email.eq(r.email),
                invitations::roles.eq(r.roles),
                invitations::teams.eq(r.teams),
                invitations::message.eq(r.message),
                invitations::locale.eq(r.locale),
                invitations::invited_by.eq(Some(r.invited_by)),
                invitations::expires_at.eq(r.expires_at),
                invitations::mail_due_at.eq(Some(now)),
            )
        })
        .collect();
    diesel::insert_into(invitations::table)
        .values(values)
        .returning(Row::as_returning())
        .get_results(&mut conn)
        .await
}

/// Serialises invitation creation in this tenant until the transaction ends (so that two
/// calls cannot both pass the hourly limits or both invite one address).
pub async fn lock_creation(mut conn: &AsyncPgConnection) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':invitations'))")
        .execute(&mut conn)
        .await
        .map(|_| ())
}

/// Invitations made in the last hour: (by `inviter`, its oldest), (by anyone, its oldest).
pub async fn last_hour(
    mut conn: &AsyncPgConnection,
    inviter: Uuid,
) -> QueryResult<((i64, Option<DateTime<Utc>>), (i64, Option<DateTime<Utc>>))> {
    #[derive(QueryableByName)]
    struct Counted {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        mine: i64,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        my_oldest: Option<DateTime<Utc>>,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        all: i64,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        oldest: Option<DateTime<Utc>>,
    }
    let c: Counted = diesel::sql_query(
        "SELECT count(*) FILTER (WHERE invited_by = $1) AS mine, \
                min(created_at) FILTER (WHERE invited_by = $1) AS my_oldest, \
                count(*) AS all, min(created_at) AS oldest \
         FROM invitations WHERE created_at > now() - interval '1 hour'",
    )
    .bind::<SqlUuid, _>(inviter)
    .get_result(&mut conn)
    .await?;
    Ok(((c.mine, c.my_oldest), (c.all, c.oldest)))
}

/// Which of `emails` (lowercased) have an open, unexpired invitation.
pub async fn open_for(mut conn: &AsyncPgConnection, emails: &[String]) -> QueryResult<Vec<String>> {
    #[derive(QueryableByName)]
    struct E {
        #[diesel(sql_type = Text)]
        e: String,
    }
    let rows: Vec<E> = diesel::sql_query(
        "SELECT lower(email) AS e FROM invitations \
         WHERE lower(email) = ANY($1) AND status = ANY($2) AND expires_at > now()",
    )
    .bind::<Array<Text>, _>(emails)
    .bind::<Array<Text>, _>(&OPEN[..])
    .load(&mut conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.e).collect())
}

/// Which of `emails` (lowercased) belong to a user of the tenant who is not deleted.
pub async fn member_emails(
    mut conn: &AsyncPgConnection,
    emails: &[String],
) -> QueryResult<Vec<String>> {
    #[derive(QueryableByName)]
    struct E {
        #[diesel(sql_type = Text)]
        e: String,
    }
    let rows: Vec<E> = diesel::sql_query(
        "SELECT lower(email) AS e FROM users WHERE lower(email) = ANY($1) AND status <> 'deleted'",
    )
    .bind::<Array<Text>, _>(emails)
    .load(&mut conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.e).collect())
}

/// The user (id, status) with this address, not deleted, if any.
pub async fn user_by_email(
    mut conn: &AsyncPgConnection,
    email: &str,
) -> QueryResult<Option<(Uuid, String)>> {
    users::table
        .filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("lower(email) = lower(")
                .bind::<Text, _>(email.to_string())
                .sql(")"),
        )
        .filter(users::status.ne("deleted"))
        .select((users::id, users::status))
        .order(users::created_at.asc())
        .first(&mut conn)
        .await
        .optional()
}

pub async fn get(mut conn: &AsyncPgConnection, id: Uuid) -> QueryResult<Option<Row>> {
    invitations::table
        .find(id)
        .select(Row::as_select())
        .first(&mut conn)
        .await
        .optional()
}

/// The invitation whose current token has this digest; with `lock`, row-locked until the
/// transaction ends.
pub async fn by_digest(
    mut conn: &AsyncPgConnection,
    digest: &[u8; 32],
    lock: bool,
) -> QueryResult<Option<Row>> {
    let query = invitations::table
        .filter(invitations::token_hash.eq(&digest[..]))
        .select(Row::as_select());
    if lock {
        query.for_update().first(&mut conn).await.optional()
    } else {
        query.first(&mut conn).await.optional()
    }
}

/// A page of invitations by id (creation order), filtered.
pub async fn page(
    mut conn: &AsyncPgConnection,
    filter: &Filter,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<Row>> {
    let mut q = invitations::table
        .select(Row::as_select())
        .order(invitations::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        q = q.filter(invitations::id.gt(after));
    }
    if let Some(email) = &filter.email {
        q = q.filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("lower(email) = lower(")
                .bind::<Text, _>(email.clone())
                .sql(")"),
        );
    }
    if let Some(by) = filter.invited_by {
        q = q.filter(invitations::invited_by.eq(by.0));
    }
    let now = Utc::now();
    match filter.status {
        None => {}
        Some(Status::Expired) => {
            q = q.filter(
                invitations::status.eq("expired").or(invitations::status
                    .eq_any(OPEN)
                    .and(invitations::expires_at.le(now))),
            )
        }
        Some(s) if s.is_open() => {
            q = q
                .filter(invitations::status.eq(s.as_str()))
                .filter(invitations::expires_at.gt(now))
        }
        Some(s) => q = q.filter(invitations::status.eq(s.as_str())),
    }
    q.load(&mut conn).await
}

/// How many invitations are in each status (open ones past expiry count as expired).
pub async fn counts(mut conn: &AsyncPgConnection) -> QueryResult<Counts> {
    #[derive(QueryableByName)]
    struct C {
        #[diesel(sql_type = Text)]
        s: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let rows: Vec<C> = diesel::sql_query(
        "SELECT CASE WHEN status = ANY($1) AND expires_at <= now() THEN 'expired' ELSE status END \
                AS s, count(*) AS n \
         FROM invitations GROUP BY 1",
    )
    .bind::<Array<Text>, _>(&OPEN[..])
    .load(&mut conn)
    .await?;
    let mut c = Counts::default();
    for r in rows {
        let slot = match r.s.as_str() {
            "pending" => &mut c.pending,
            "sent" => &mut c.sent,
            "opened" => &mut c.opened,
            "accepted" => &mut c.accepted,
            "expired" => &mut c.expired,
            _ => &mut c.revoked,
        };
        *slot += r.n;
        c.total += r.n;
    }
    Ok(c)
}

/// Locks one invitation's row.
pub async fn lock(mut conn: &AsyncPgConnection, id: Uuid) -> QueryResult<Option<Row>> {
    invitations::table
        .find(id)
        .select(Row::as_select())
        .for_update()
        .first(&mut conn)
        .await
        .optional()
}

/// Closes an invitation as `status` (`revoked`, `accepted` or `expired`): its token stops
/// matching and nothing more is mailed.
pub async fn close(
    mut conn: &AsyncPgConnection,
    id: Uuid,
    status: Status,
    accepted_by: Option<Uuid>,
) -> QueryResult<Row> {
    let now = Utc::now();
    diesel::update(invitations::table.find(id))
        .set((
            invitations::status.eq(status.as_str()),
            invitations::token_hash.eq(None::<Vec<u8>>),
            invitations::mail_due_at.eq(None::<DateTime<Utc>>),
            invitations::updated_at.eq(now),
            invitations::revoked_at.eq((status == Status::Revoked).then_some(now)),
            invitations::accepted_at.eq((status == Status::Accepted).then_some(now)),
            invitations::accepted_by.eq(accepted_by),
        ))
        .returning(Row::as_returning())
        .get_result(&mut conn)
        .await
}

/// Queues a fresh mail: the old token stops matching at once, the new one is made when the
/// mail goes out; the invitation is open again until `expires_at`.
pub async fn requeue(
    mut conn: &AsyncPgConnection,
    id: Uuid,
    expires_at: DateTime<Utc>,
) -> QueryResult<Row> {
    let now = Utc::now();
    diesel::update(invitations::table.find(id))
        .set((
            invitations::status.eq("pending"),
            invitations::token_hash.eq(None::<Vec<u8>>),
            invitations::expires_at.eq(expires_at),
            invitations::mail_status.eq("queued"),
            invitations::mail_attempts.eq(0),
            invitations::mail_error.eq(None::<String>),
            invitations::mail_due_at.eq(Some(now)),
            invitations::updated_at.eq(now),
        ))
        .returning(Row::as_returning())
        .get_result(&mut conn)
        .await
}

/// Records that the link was opened (first time only); `pending`/`sent` become `opened`.
pub async fn mark_opened(mut conn: &AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    let n = diesel::sql_query(
        "UPDATE invitations SET status = 'opened', opened_at = now(), updated_at = now() \
         WHERE id = $1 AND status IN ('pending', 'sent')",
    )
    .bind::<SqlUuid, _>(id)
    .execute(&mut conn)
    .await?;
    Ok(n == 1)
}

/// Claims up to `limit` due mails of open invitations for `lease_secs` (another instance skips
/// them meanwhile), counting the attempt.
pub async fn claim_due(
    mut conn: &AsyncPgConnection,
    limit: i64,
    lease_secs: i32,
) -> QueryResult<Vec<Row>> {
    diesel::sql_query(
        "UPDATE invitations SET mail_due_at = now() + make_interval(secs => $2), \
                mail_attempts = mail_attempts + 1 \
         WHERE id IN (SELECT id FROM invitations \
                      WHERE mail_due_at <= now() AND status = ANY($3) AND expires_at > now() \
                      ORDER BY mail_due_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, email, roles, teams, message, locale, status, invited_by, created_at, \
                   expires_at, sent_at, opened_at, accepted_at, accepted_by, revoked_at, \
                   mail_status, mail_attempts, mail_error",
    )
    .bind::<diesel::sql_types::BigInt, _>(limit)
    .bind::<Integer, _>(lease_secs)
    .bind::<Array<Text>, _>(&OPEN[..])
    .load(&mut conn)
    .await
}

/// Gives claimed invitations the digests of the tokens their mails will carry.
pub async fn set_tokens(
    mut conn: &AsyncPgConnection,
    ids: &[Uuid],
    digests: &[Vec<u8>],
) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE invitations i SET token_hash = v.h \
         FROM unnest($1::uuid[], $2::bytea[]) AS v(id, h) WHERE i.id = v.id",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Bytea>, _>(digests)
    .execute(&mut conn)
    .await
}

/// Records delivered mails whose token is still the one mailed (a resend meanwhile wins);
/// `pending` becomes `sent`. Returns the ids recorded.
pub async fn mark_sent(
    mut conn: &AsyncPgConnection,
    ids: &[Uuid],
    digests: &[Vec<u8>],
) -> QueryResult<Vec<Uuid>> {
    #[derive(QueryableByName)]
    struct I {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let rows: Vec<I> = diesel::sql_query(
        "UPDATE invitations i SET mail_status = 'sent', mail_due_at = NULL, mail_error = NULL, \
                sent_at = now(), updated_at = now(), \
                status = CASE WHEN i.status = 'pending' THEN 'sent' ELSE i.status END \
         FROM unnest($1::uuid[], $2::bytea[]) AS v(id, h) \
         WHERE i.id = v.id AND i.token_hash = v.h RETURNING i.id",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Bytea>, _>(digests)
    .load(&mut conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// Records a failed attempt: retried at `retry_at`, or (with `None`) given up.
pub async fn mark_failed(
    mut conn: &AsyncPgConnection,
    id: Uuid,
    digest: &[u8],
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> QueryResult<bool> {
    let n = diesel::update(
        invitations::table
            .find(id)
            .filter(invitations::token_hash.eq(digest)),
    )
    .set((
        invitations::mail_status.eq(if retry_at.is_some() {
            "queued"
        } else {
            "failed"
        }),
        invitations::mail_due_at.eq(retry_at),
        invitations::mail_error.eq(error),
        invitations::updated_at.eq(Utc::now()),
    ))
    .execute(&mut conn)
    .await?;
    Ok(n == 1)
}

/// Whether any mail of an open invitation waits (due now or later).
pub async fn mail_waiting(mut conn: &AsyncPgConnection) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        invitations::table.filter(invitations::mail_due_at.is_not_null()),
    ))
    .get_result(&mut conn)
    .await
}

/// Closes up to `limit` open invitations past their expiry as `expired`; returns them.
pub async fn expire_due(mut conn: &AsyncPgConnection, limit: i64) -> QueryResult<Vec<Row>> {
    diesel::sql_query(
        "UPDATE invitations SET status = 'expired', token_hash = NULL, mail_due_at = NULL, \
                updated_at = now() \
         WHERE id IN (SELECT id FROM invitations WHERE status = ANY($2) AND expires_at <= now() \
                      ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, email, roles, teams, message, locale, status, invited_by, created_at, \
                   expires_at, sent_at, opened_at, accepted_at, accepted_by, revoked_at, \
                   mail_status, mail_attempts, mail_error",
    )
    .bind::<diesel::sql_types::BigInt, _>(limit)
    .bind::<Array<Text>, _>(&OPEN[..])
    .load(&mut conn)
    .await
}

// ---- templates and policy -------------------------------------------------------------

#[derive(Queryable, Selectable)]
#[diesel(table_name = invitation_templates)]
struct TemplateRow {
    locale: String,
    subject: String,
    text_body: String,
    html_body: Option<String>,
    updated_at: DateTime<Utc>,
}

impl From<TemplateRow> for Template {
    fn from(r: TemplateRow) -> Self {
        Template {
            locale: r.locale,
            subject: r.subject,
            text_body: r.text_body,
            html_body: r.html_body,
            updated_at: Some(r.updated_at),
            builtin: false,
        }
    }
}

pub async fn templates(mut conn: &AsyncPgConnection) -> QueryResult<Vec<Template>> {
    Ok(invitation_templates::table
        .select(TemplateRow::as_select())
        .order(invitation_templates::locale.asc())
        .load(&mut conn)
        .await?
        .into_iter()
        .map(Template::from)
        .collect())
}

/// The templates for any of `locales`, in no particular order.
pub async fn templates_for(
    mut conn: &AsyncPgConnection,
    locales: &[String],
) -> QueryResult<Vec<Template>> {
    Ok(invitation_templates::table
        .filter(invitation_templates::locale.eq_any(locales))
        .select(TemplateRow::as_select())
        .load(&mut conn)
        .await?
        .into_iter()
        .map(Template::from)
        .collect())
}

pub async fn put_template(
    mut conn: &AsyncPgConnection,
    locale: &str,
    subject: &str,
    text_body: &str,
    html_body: Option<&str>,
    by: Uuid,
) -> QueryResult<Template> {
    let now = Utc::now();
    diesel::insert_into(invitation_templates::table)
        .values((
            invitation_templates::locale.eq(locale),
            invitation_templates::subject.eq(subject),
            invitation_templates::text_body.eq(text_body),
            invitation_templates::html_body.eq(html_body),
            invitation_templates::updated_at.eq(now),
            invitation_templates::updated_by.eq(Some(by)),
        ))
        .on_conflict(invitation_templates::locale)
        .do_update()
        .set((
            invitation_templates::subject.eq(subject),
            invitation_templates::text_body.eq(text_body),
            invitation_templates::html_body.eq(html_body),
            invitation_templates::updated_at.eq(now),
            invitation_templates::updated_by.eq(Some(by)),
        ))
        .returning(TemplateRow::as_returning())
        .get_result(&mut conn)
        .await
        .map(Template::from)
}

pub async fn delete_template(mut conn: &AsyncPgConnection, locale: &str) -> QueryResult<bool> {
    let n = diesel::delete(invitation_templates::table.find(locale))
        .execute(&mut conn)
        .await?;
    Ok(n == 1)
}
