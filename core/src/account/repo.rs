//! SQL for password-reset tokens (`password_resets`), on a tenant transaction.
//!
//! One row per user at most: a new token replaces the user's previous one, so an older mail's
//! link stops working and the table never grows beyond the users who asked. Holds digests
//! only, never a token.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::reset::Stored;
use crate::ids::UserId;
use crate::schema::tenant::password_resets;

/// Stores `digest` as the user's one reset token, replacing any earlier one (used or not).
pub async fn replace(
    conn: &mut AsyncPgConnection,
    user: UserId,
    digest: &[u8; 32],
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::insert_into(password_resets::table)
        .values((
            password_resets::user_id.eq(user.0),
            password_resets::token_hash.eq(digest.as_slice()),
            password_resets::created_at.eq(created_at),
            password_resets::expires_at.eq(expires_at),
            password_resets::used_at.eq(None::<DateTime<Utc>>),
        ))
        .on_conflict(password_resets::user_id)
        .do_update()
        .set((
            password_resets::token_hash.eq(excluded(password_resets::token_hash)),
            password_resets::created_at.eq(excluded(password_resets::created_at)),
            password_resets::expires_at.eq(excluded(password_resets::expires_at)),
            password_resets::used_at.eq(None::<DateTime<Utc>>),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// The token stored under `digest` and its user, row-locked until the transaction ends (so two
/// concurrent uses of one token are serialised and the second sees it used).
pub async fn lock(
    conn: &mut AsyncPgConnection,
    digest: &[u8; 32],
) -> QueryResult<Option<(UserId, Stored)>> {
    let row: Option<(uuid::Uuid, DateTime<Utc>, Option<DateTime<Utc>>)> = password_resets::table
        .filter(password_resets::token_hash.eq(digest.as_slice()))
        .select((
            password_resets::user_id,
            password_resets::expires_at,
            password_resets::used_at,
        ))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(|(user, expires_at, used_at)| {
        (
            UserId(user),
            Stored {
                expires_at,
                used_at,
            },
        )
    }))
}

/// Marks the user's token used at `at`.
pub async fn mark_used(
    conn: &mut AsyncPgConnection,
    user: UserId,
    at: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::update(password_resets::table.find(user.0))
        .set(password_resets::used_at.eq(Some(at)))
        .execute(conn)
        .await?;
    Ok(())
}
