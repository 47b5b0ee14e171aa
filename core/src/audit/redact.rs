//! Pseudonymisation of the log for an erasure: every entry by or about a person, or quoting
//! their email, loses the person's email, name, username, address and browser, which become a
//! pseudonym; the chain keeps verifying.
//!
//! How the chain survives: an unsealed entry is simply rewritten before the sealer chains it.
//! A sealed entry keeps its original hash (so its successor's link, the checkpoints and the
//! platform's head are untouched); a [`Redaction`] record, signed with the platform's key that
//! no tenant database holds, states "at `seq`, after `prev`, the chain hash is `hash`, and the
//! entry's content is now `content`". The verifier accepts a mismatching entry only through
//! such a record, so neither a forged record nor a later edit of the redacted entry passes.
//! Only an entry that verifies as it stands (or through its earlier redaction) is ever
//! redacted: a tampered entry is refused, never laundered by a signature.
//!
//! Runs inside the erasure's transaction, under the same advisory lock as sealing, so no entry
//! is chained from content that is being rewritten. Never deletes an entry.

use diesel::prelude::*;
use diesel::sql_types::{Array, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use super::chain::{Entry, GENESIS, Redaction, Signer, link};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::schema::tenant::{audit_anchors, audit_log, audit_redactions};

/// The person to pseudonymise.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The user id as entries name it (`actor_id`, `target_id`).
    pub id: String,
    /// Emails: replaced wherever they occur in a string (any case).
    pub emails: Vec<String>,
    /// Names and usernames: replaced where a whole string equals one (any case).
    pub names: Vec<String>,
    /// What replaces them.
    pub pseudonym: String,
    /// Actions whose whole `data` is the person's own (profile attributes, preferences): in
    /// entries about the person their data becomes `{"erased": true}`.
    pub wipe_actions: Vec<String>,
    /// Recorded on each redaction (e.g. `erasure of usr_…`).
    pub reason: String,
}

/// `LIKE` pattern matching `s` anywhere.
pub fn contains_pattern(s: &str) -> String {
    let mut p = String::with_capacity(s.len() + 2);
    p.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// Replaces every occurrence of `needle` in `s` (ASCII case-insensitive); a string that only
/// matches after Unicode case folding is replaced whole.
fn replace_ci(s: &str, needle: &str, with: &str) -> Option<String> {
    if needle.is_empty() {
        return None;
    }
    let lower = s.to_lowercase();
    let needle = needle.to_lowercase();
    if !lower.contains(&needle) {
        return None;
    }
    if lower.len() != s.len() {
        return Some(with.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = 0;
    for (at, _) in lower.match_indices(&needle) {
        out.push_str(&s[rest..at]);
        out.push_str(with);
        rest = at + needle.len();
    }
    out.push_str(&s[rest..]);
    Some(out)
}

/// `value` with the subject's data replaced; `None` when nothing changed.
pub fn scrub_value(value: &Value, subject: &Subject) -> Option<Value> {
    match value {
        Value::String(s) => {
            let mut current = s.clone();
            let mut changed = false;
            for email in &subject.emails {
                if let Some(next) = replace_ci(&current, email, &subject.pseudonym) {
                    current = next;
                    changed = true;
                }
            }
            if subject
                .names
                .iter()
                .any(|n| !n.is_empty() && n.to_lowercase() == current.to_lowercase())
            {
                current = subject.pseudonym.clone();
                changed = true;
            }
            changed.then_some(Value::String(current))
        }
        Value::Array(items) => {
            let mut changed = false;
            let out: Vec<Value> = items
                .iter()
                .map(|v| match scrub_value(v, subject) {
                    Some(n) => {
                        changed = true;
                        n
                    }
                    None => v.clone(),
                })
                .collect();
            changed.then_some(Value::Array(out))
        }
        Value::Object(map) => {
            let mut changed = false;
            let out = map
                .iter()
                .map(|(k, v)| {
                    let v = match scrub_value(v, subject) {
                        Some(n) => {
                            changed = true;
                            n
                        }
                        None => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect();
            changed.then_some(Value::Object(out))
        }
        _ => None,
    }
}

/// The entry with the subject's data replaced; `None` when nothing changed.
pub fn scrub_entry(e: &Entry, subject: &Subject) -> Option<Entry> {
    let mut out = e.clone();
    let mut changed = false;
    let wiped = serde_json::json!({"erased": true});
    if e.target_id.as_deref() == Some(subject.id.as_str())
        && subject.wipe_actions.contains(&e.action)
    {
        if e.data != wiped {
            out.data = wiped;
            changed = true;
        }
    } else if let Some(data) = scrub_value(&e.data, subject) {
        out.data = data;
        changed = true;
    }
    // The address and browser of the person's own requests are theirs.
    if e.actor_id.as_deref() == Some(subject.id.as_str())
        && (e.ip.is_some() || e.user_agent.is_some())
    {
        out.ip = None;
        out.user_agent = None;
        changed = true;
    }
    changed.then_some(out)
}

/// What a pseudonymisation changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Redacted {
    /// Unsealed entries rewritten before sealing.
    pub unsealed: u64,
    /// Sealed entries rewritten under a signed redaction.
    pub sealed: u64,
}

/// The chain hash before `seq`: the entry before it, the anchor of a pruned prefix that ends
/// right before it, or the genesis.
async fn prev_hash(conn: &mut AsyncPgConnection, seq: i64) -> QueryResult<Option<Vec<u8>>> {
    if seq == 1 {
        return Ok(Some(GENESIS.to_vec()));
    }
    let before: Option<Option<Vec<u8>>> = audit_log::table
        .filter(audit_log::seq.eq(seq - 1))
        .select(audit_log::hash)
        .first(conn)
        .await
        .optional()?;
    if let Some(hash) = before {
        return Ok(hash);
    }
    audit_anchors::table
        .filter(audit_anchors::seq.eq(seq - 1))
        .select(audit_anchors::hash)
        .first(conn)
        .await
        .optional()
}

/// Pseudonymises `subject` in the log of `tenant`, on the caller's transaction.
pub async fn pseudonymise(
    conn: &mut AsyncPgConnection,
    signer: &Signer,
    tenant: Uuid,
    subject: &Subject,
) -> ApiResult<Redacted> {
    super::seal::lock(conn).await?;
    let patterns: Vec<String> = subject
        .emails
        .iter()
        .filter(|e| !e.is_empty())
        .map(|e| contains_pattern(e))
        .collect();
    let entries: Vec<Entry> = audit_log::table
        .filter(
            audit_log::actor_id
                .eq(&subject.id)
                .or(audit_log::target_id.eq(&subject.id))
                .or(
                    diesel::dsl::sql::<diesel::sql_types::Bool>("data::text ILIKE ANY(")
                        .bind::<Array<Text>, _>(&patterns)
                        .sql(")"),
                ),
        )
        .select(Entry::as_select())
        .order(audit_log::id.asc())
        .load(conn)
        .await?;
    let mut done = Redacted::default();
    for e in &entries {
        let Some(new) = scrub_entry(e, subject) else {
            continue;
        };
        match (e.seq, e.hash.as_deref()) {
            (Some(seq), Some(hash)) => {
                let earlier: Option<(Vec<u8>, Vec<u8>)> = audit_redactions::table
                    .filter(audit_redactions::seq.eq(seq))
                    .select((audit_redactions::prev, audit_redactions::hash))
                    .first(conn)
                    .await
                    .optional()?;
                let prev = match earlier {
                    // Redacted before: its record says where it sits.
                    Some((prev, recorded)) if recorded == hash => prev,
                    Some(_) => return Err(tampered(seq)),
                    None => {
                        let prev = prev_hash(conn, seq).await?.ok_or_else(|| tampered(seq))?;
                        let prev32: [u8; 32] =
                            prev.as_slice().try_into().map_err(|_| tampered(seq))?;
                        if link(&prev32, seq, e).as_slice() != hash {
                            return Err(tampered(seq));
                        }
                        prev
                    }
                };
                let r = Redaction::sign(signer, tenant, seq, &prev, hash, &new);
                diesel::insert_into(audit_redactions::table)
                    .values((
                        audit_redactions::seq.eq(seq),
                        audit_redactions::entry_id.eq(e.id),
                        audit_redactions::prev.eq(&r.prev),
                        audit_redactions::hash.eq(&r.hash),
                        audit_redactions::content.eq(&r.content),
                        audit_redactions::signature.eq(&r.signature),
                        audit_redactions::reason.eq(&subject.reason),
                    ))
                    .on_conflict(audit_redactions::seq)
                    .do_update()
                    .set((
                        audit_redactions::content.eq(&r.content),
                        audit_redactions::signature.eq(&r.signature),
                        audit_redactions::reason.eq(&subject.reason),
                        audit_redactions::at.eq(diesel::dsl::now),
                    ))
                    .execute(conn)
                    .await?;
                done.sealed += 1;
            }
            _ => done.unsealed += 1,
        }
        diesel::update(audit_log::table.find(e.id))
            .set((
                audit_log::data.eq(&new.data),
                audit_log::ip.eq(&new.ip),
                audit_log::user_agent.eq(&new.user_agent),
            ))
            .execute(conn)
            .await?;
    }
    Ok(done)
}

fn tampered(seq: i64) -> ApiError {
    ApiError::new(
        ErrorCode::Conflict,
        format!(
            "the audit entry at {seq} does not verify; nothing was erased (verify the log with `neotenant audit verify`)"
        ),
    )
}

/// The data of every entry about `target_type`/`target_id` (what the log recorded of it).
pub async fn recorded_about(
    conn: &mut AsyncPgConnection,
    target_type: &str,
    target_id: &str,
) -> QueryResult<Vec<Value>> {
    audit_log::table
        .filter(audit_log::target_type.eq(target_type))
        .filter(audit_log::target_id.eq(target_id))
        .select(audit_log::data)
        .load(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Subject {
        Subject {
            id: "usr_1".into(),
            emails: vec!["Ada@Example.com".into()],
            names: vec!["Ada Lovelace".into(), "ada".into()],
            pseudonym: "erased:usr_1".into(),
            wipe_actions: vec!["user.attributes_updated".into()],
            reason: "erasure".into(),
        }
    }

    #[test]
    fn scrubbing_replaces_emails_anywhere_and_names_only_whole() {
        let v = serde_json::json!({
            "after": {"email": "ada@example.COM", "display_name": "ADA LOVELACE", "username": "ada"},
            "note": "invited ada@example.com and adam@example.com",
            "other": "adamant", "n": 3, "list": ["x", "Ada@example.com"]
        });
        let out = scrub_value(&v, &subject()).unwrap();
        assert_eq!(
            out,
            serde_json::json!({
                "after": {"email": "erased:usr_1", "display_name": "erased:usr_1", "username": "erased:usr_1"},
                "note": "invited erased:usr_1 and adam@example.com",
                "other": "adamant", "n": 3, "list": ["x", "erased:usr_1"]
            })
        );
        assert_eq!(
            scrub_value(&serde_json::json!({"a": "b"}), &subject()),
            None
        );
    }

    #[test]
    fn entries_of_the_persons_own_data_are_wiped_whole() {
        let entry = |action: &str, target: &str| Entry {
            id: Uuid::now_v7(),
            at: chrono::Utc::now(),
            actor_type: "user".into(),
            actor_id: Some("usr_2".into()),
            action: action.into(),
            target_type: "user".into(),
            target_id: Some(target.into()),
            data: serde_json::json!({"after": {"desk": "B-12"}}),
            request_id: None,
            ip: Some("10.0.0.9".into()),
            user_agent: None,
            seq: None,
            hash: None,
        };
        let wiped = scrub_entry(&entry("user.attributes_updated", "usr_1"), &subject()).unwrap();
        assert_eq!(wiped.data, serde_json::json!({"erased": true}));
        // The admin who made the change keeps their address; others' entries are untouched.
        assert_eq!(wiped.ip.as_deref(), Some("10.0.0.9"));
        assert!(scrub_entry(&entry("user.attributes_updated", "usr_3"), &subject()).is_none());
        assert!(scrub_entry(&entry("role.created", "usr_1"), &subject()).is_none());
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(contains_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }
}
