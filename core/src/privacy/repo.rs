//! SQL for the data-subject export and the erasure, on a tenant transaction. The export reads
//! every table that names a user; the erasure empties or pseudonymises each of them.

use diesel::prelude::*;
use diesel::sql_types::{Jsonb, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

#[derive(QueryableByName)]
struct Doc {
    #[diesel(sql_type = Jsonb)]
    doc: Value,
}

/// Everything the tenant database holds about user `id` (`$2`: the id as entries name it), as
/// one JSON object of sections; secrets (key hashes, token hashes, password hashes) are left
/// out, their existence is not.
pub async fn export(conn: &mut AsyncPgConnection, id: Uuid, named: &str) -> QueryResult<Value> {
    diesel::sql_query(
        "SELECT jsonb_build_object(\
          'profile', (SELECT to_jsonb(u) FROM users u WHERE u.id = $1), \
          'has_password', EXISTS (SELECT 1 FROM credentials c WHERE c.user_id = $1), \
          'has_avatar', EXISTS (SELECT 1 FROM user_avatars a WHERE a.user_id = $1), \
          'teams', (SELECT coalesce(jsonb_agg(jsonb_build_object('team_id', m.team_id, 'team', t.name, \
              'team_role', m.team_role, 'joined_at', m.joined_at) ORDER BY m.joined_at), '[]') \
              FROM team_members m JOIN teams t ON t.id = m.team_id WHERE m.user_id = $1), \
          'team_history', (SELECT coalesce(jsonb_agg(to_jsonb(l) ORDER BY l.id), '[]') \
              FROM team_membership_log l WHERE l.user_id = $1), \
          'roles', (SELECT coalesce(jsonb_agg(jsonb_build_object('role', r.key, 'name', r.name, \
              'granted_by', ur.granted_by, 'created_at', ur.created_at, 'expires_at', ur.expires_at) \
              ORDER BY ur.created_at), '[]') FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
              WHERE ur.user_id = $1), \
          'grants', (SELECT coalesce(jsonb_agg(to_jsonb(g) ORDER BY g.created_at), '[]') \
              FROM user_grants g WHERE g.user_id = $1), \
          'api_keys', (SELECT coalesce(jsonb_agg(to_jsonb(k) - 'secret_hash' ORDER BY k.created_at), '[]') \
              FROM api_keys k WHERE k.owner_id = $1), \
          'invitations', (SELECT coalesce(jsonb_agg(to_jsonb(i) - 'token_hash' ORDER BY i.created_at), '[]') \
              FROM invitations i WHERE i.accepted_by = $1 OR i.invited_by = $1 \
                 OR lower(i.email) = (SELECT lower(email) FROM users WHERE id = $1)), \
          'resources', (SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY r.created_at), '[]') \
              FROM resources r WHERE r.owner_id = $1 AND r.deleted_at IS NULL), \
          'resource_shares', (SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.created_at), '[]') \
              FROM resource_shares s WHERE s.user_id = $1), \
          'audit', (SELECT coalesce(jsonb_agg(to_jsonb(a) - 'hash' ORDER BY a.id), '[]') \
              FROM audit_log a WHERE a.actor_id = $2 OR a.target_id = $2) \
         ) AS doc",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(named)
    .get_result::<Doc>(conn)
    .await
    .map(|d| d.doc)
}

/// The user's row with every personal field emptied: no email, name, username, attributes or
/// preferences; the identity provider's subject replaced so the row no longer points at an
/// account (its digest stays, so a token issued before now cannot recreate the row); status
/// `deleted`; `erased_at` set.
pub async fn erase_row(conn: &mut AsyncPgConnection, id: Uuid, pseudonym: &str) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE users SET email = NULL, display_name = NULL, username = NULL, \
           attributes = '{}', preferences = '{}', status = 'deleted', \
           erased_subject = sha256(convert_to(subject, 'UTF8')), subject = $2, \
           erased_at = now(), updated_at = now() WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(pseudonym)
    .execute(conn)
    .await?;
    Ok(())
}

/// What the erasure removed outright: credentials, reset tokens, avatar, memberships, direct
/// roles and grants, their name on settings versions; the user's API keys are revoked and
/// renamed. Returns rows touched.
pub async fn remove_belongings(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<u64> {
    let mut n = 0;
    for sql in [
        "DELETE FROM credentials WHERE user_id = $1",
        "DELETE FROM password_resets WHERE user_id = $1",
        "DELETE FROM user_avatars WHERE user_id = $1",
        "DELETE FROM team_members WHERE user_id = $1",
        "DELETE FROM user_roles WHERE user_id = $1",
        "DELETE FROM user_grants WHERE user_id = $1",
        "DELETE FROM resource_shares WHERE user_id = $1",
        "UPDATE api_keys SET name = 'erased', revoked_at = coalesce(revoked_at, now()) WHERE owner_id = $1",
        // The author of settings versions keeps only the id (a pseudonym once the row is
        // emptied).
        "UPDATE settings_versions SET author_name = NULL WHERE author_id = $1",
    ] {
        n += diesel::sql_query(sql)
            .bind::<SqlUuid, _>(id)
            .execute(conn)
            .await? as u64;
    }
    Ok(n)
}

/// Invitations to any of `emails`: open ones are revoked; all lose the address and message.
pub async fn pseudonymise_invitations(
    conn: &mut AsyncPgConnection,
    emails: &[String],
    pseudonym: &str,
) -> QueryResult<u64> {
    let lower: Vec<String> = emails.iter().map(|e| e.to_lowercase()).collect();
    diesel::sql_query(
        "UPDATE invitations SET email = $2, message = NULL, mail_error = NULL, token_hash = NULL, \
           status = CASE WHEN status IN ('pending', 'sent', 'opened') THEN 'revoked' ELSE status END, \
           revoked_at = CASE WHEN status IN ('pending', 'sent', 'opened') THEN now() ELSE revoked_at END, \
           mail_due_at = NULL, updated_at = now() \
         WHERE lower(email) = ANY($1)",
    )
    .bind::<diesel::sql_types::Array<Text>, _>(&lower)
    .bind::<Text, _>(pseudonym)
    .execute(conn)
    .await
    .map(|n| n as u64)
}

/// Outbox events whose payload quotes one of `emails`: (seq, payload).
pub async fn outbox_quoting(
    conn: &mut AsyncPgConnection,
    patterns: &[String],
) -> QueryResult<Vec<(i64, Value)>> {
    use crate::schema::tenant::outbox;
    outbox::table
        .filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("payload::text ILIKE ANY(")
                .bind::<diesel::sql_types::Array<Text>, _>(patterns)
                .sql(")"),
        )
        .select((outbox::seq, outbox::payload))
        .load(conn)
        .await
}

pub async fn set_outbox_payload(
    conn: &mut AsyncPgConnection,
    seq: i64,
    payload: &Value,
) -> QueryResult<()> {
    use crate::schema::tenant::outbox;
    diesel::update(outbox::table.find(seq))
        .set(outbox::payload.eq(payload))
        .execute(conn)
        .await?;
    Ok(())
}

/// The addresses of invitations the user accepted, as `{"email": …}` objects.
pub async fn accepted_invitation_emails(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Vec<Value>> {
    use crate::schema::tenant::invitations;
    Ok(invitations::table
        .filter(invitations::accepted_by.eq(id))
        .select(invitations::email)
        .load::<String>(conn)
        .await?
        .into_iter()
        .map(|email| serde_json::json!({ "email": email }))
        .collect())
}
