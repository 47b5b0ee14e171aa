//! The export and the erasure. An erasure runs in this order: the identity side first (the
//! Keycloak account deleted, or the tenant's organization membership removed, exactly as a
//! user deletion does, and sessions ended), then one tenant transaction that pseudonymises the
//! audit log, the outbox and invitations, empties the user row and removes what belonged to
//! the person, and audits the erasure. If the transaction fails the identity side is already
//! gone, which is what a deletion leaves too; running the erasure again finishes it.

use serde_json::{Value, json};

use super::{Erasure, repo};
use crate::audit::redact::{self, Subject};
use crate::audit::{self, Actor, Change};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ids::UserId;
use crate::tenancy::cache::ResolvedTenant;
use crate::tenancy::model::IdentityMode;
use crate::users::UsersState;

/// The pseudonym of an erased user: their id, which nothing links to a person any more.
pub fn pseudonym(id: UserId) -> String {
    format!("erased:{id}")
}

/// Everything the tenant holds about user `id`, as one JSON document: profile, attributes,
/// preferences, memberships, roles, grants, sessions, API key metadata, invitations, owned
/// resources and the audit entries by or about them.
/// Reading it is audited (`user.exported`).
pub async fn export(
    state: &UsersState,
    tenant: &ResolvedTenant,
    actor: &Actor,
    id: UserId,
) -> ApiResult<Value> {
    let user = crate::users::service::by_id(&tenant.db, id).await?;
    let named = id.to_string();
    let mut doc = tenant
        .db
        .transaction(async |tx| Ok::<_, ApiError>(repo::export(tx.conn(), id.0, &named).await?))
        .await?;
    let sessions = state
        .sessions
        .list(tenant.tenant.id, &user.subject)
        .await
        .map_err(|e| {
            ApiError::new(ErrorCode::Unavailable, "sessions are unavailable").with_source(e)
        })?;
    doc["user_id"] = json!(named);
    doc["tenant"] = json!(tenant.tenant.slug);
    doc["exported_at"] = json!(chrono::Utc::now());
    doc["sessions"] = json!(sessions);
    audit::record_alone(
        &tenant.db,
        actor,
        Change {
            action: "user.exported",
            target_type: "user",
            target_id: Some(named),
            data: json!({}),
        },
    )
    .await?;
    Ok(doc)
}

/// Strings under `email`, `display_name` and `username` keys anywhere in `v`.
fn collect_identifiers(v: &Value, emails: &mut Vec<String>, names: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("email", Value::String(s)) => emails.push(s.clone()),
                    ("display_name" | "username", Value::String(s)) => names.push(s.clone()),
                    _ => collect_identifiers(v, emails, names),
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| collect_identifiers(v, emails, names)),
        _ => {}
    }
}

/// Erases user `id`: see the module's order. `actor` must not be the user.
pub async fn erase(
    state: &UsersState,
    tenant: &ResolvedTenant,
    actor: &Actor,
    id: UserId,
) -> ApiResult<Erasure> {
    let user = crate::users::service::by_id(&tenant.db, id).await?;
    let named = id.to_string();
    let pseudonym = pseudonym(id);
    let mut report = Erasure {
        user_id: named.clone(),
        pseudonym: pseudonym.clone(),
        ..Default::default()
    };
    if user.subject == pseudonym {
        report.already_erased = true;
        return Ok(report);
    }
    // The identity side, as a deletion does it (a deleted user's is gone already).
    if user.status != "deleted" {
        if tenant.tenant.identity.mode == IdentityMode::Local {
            crate::users::service::revoke_all(state, tenant, &user.subject).await;
        } else {
            crate::users::service::delete(state, tenant, actor, id).await?;
        }
    }
    // What identifies the person: the row, and what the log recorded of it (a deleted user's
    // row holds no email or name any more).
    let about = tenant
        .db
        .transaction(async |tx| {
            let mut about = redact::recorded_about(tx.conn(), "user", &named).await?;
            about.extend(repo::accepted_invitation_emails(tx.conn(), id.0).await?);
            Ok::<_, ApiError>(about)
        })
        .await?;
    let mut emails: Vec<String> = user.email.iter().cloned().collect();
    let mut names: Vec<String> = user
        .display_name
        .iter()
        .chain(user.username.iter())
        .cloned()
        .collect();
    for data in &about {
        collect_identifiers(data, &mut emails, &mut names);
    }
    emails.retain(|e| e.contains('@'));
    names.retain(|n| n.chars().count() >= 2);
    emails.sort_by_key(|e| e.to_lowercase());
    emails.dedup_by_key(|e| e.to_lowercase());
    names.sort();
    names.dedup();
    let subject = Subject {
        id: named.clone(),
        emails,
        names,
        pseudonym: pseudonym.clone(),
        wipe_actions: vec![
            "user.attributes_updated".into(),
            "user.preferences_updated".into(),
        ],
        reason: format!("erasure of {named}"),
    };
    let signer = audit::chain::Signer::new(state.config.audit.signing_key.expose());
    let tenant_id = tenant.tenant.id;
    let report = tenant
        .db
        .transaction(async move |tx| {
            let done = redact::pseudonymise(tx.conn(), &signer, tenant_id.0, &subject).await?;
            report.audit_unsealed = done.unsealed;
            report.audit_sealed = done.sealed;
            report.invitations =
                repo::pseudonymise_invitations(tx.conn(), &subject.emails, &pseudonym).await?;
            let patterns: Vec<String> = subject
                .emails
                .iter()
                .map(|e| redact::contains_pattern(e))
                .collect();
            for (seq, payload) in repo::outbox_quoting(tx.conn(), &patterns).await? {
                if let Some(scrubbed) = redact::scrub_value(&payload, &subject) {
                    repo::set_outbox_payload(tx.conn(), seq, &scrubbed).await?;
                    report.events += 1;
                }
            }
            report.belongings = repo::remove_belongings(tx.conn(), id.0).await?;
            repo::erase_row(tx.conn(), id.0, &pseudonym).await?;
            audit::record(
                tx.conn(),
                actor,
                Change {
                    action: "user.erased",
                    target_type: "user",
                    target_id: Some(named.clone()),
                    data: json!({
                        "audit_entries": done.unsealed + done.sealed,
                        "invitations": report.invitations,
                        "events": report.events,
                        "belongings": report.belongings,
                    }),
                },
            )
            .await?;
            crate::outbox::emit(
                tx.conn(),
                "user.erased",
                "user",
                &named,
                json!({"user_id": named}),
            )
            .await?;
            Ok::<_, ApiError>(report)
        })
        .await?;
    state.users.evict(tenant.tenant.id, &user.subject);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_collected_from_recorded_changes() {
        let data = json!({"before": {"email": "a@x.io", "display_name": "Ada", "status": "active"},
                          "after": [{"username": "ada"}]});
        let (mut e, mut n) = (Vec::new(), Vec::new());
        collect_identifiers(&data, &mut e, &mut n);
        n.sort();
        assert_eq!(e, ["a@x.io"]);
        assert_eq!(n, ["Ada", "ada"]);
    }
}
