//! The invitation mail queue's worker: claims due mails of a tenant (row leases, so instances
//! share the work without sending one mail twice at once), makes each mail's token and stores
//! its digest, renders the tenant's template for the invitation's locale, sends through the
//! [`crate::mail::Mailer`] several at a time, and records each outcome: `sent` (audited, with
//! an `invitation.sent` event), or a retry after a doubling wait, or — after
//! `invitations.mail_max_attempts` — `failed` (audited). Also closes expired invitations.
//!
//! Woken at once for a tenant that just queued mail; visits every tenant each sweep, and keeps
//! tenants with retries pending on its list until their mail is out (a tenant whose round
//! fails leaves the list until the next sweep). A mail whose token changed
//! meanwhile (a resend) is not recorded as sent: the resend's mail is. Never logs a token or a
//! mail body.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

use super::repo::{self, Row};
use super::template::{self, Parts, Values};
use super::{InvitationsState, TOKEN_PREFIX, service};
use crate::audit::Actor;
use crate::error::{ApiError, ApiResult};
use crate::ids::{TenantId, UserId};
use crate::tenancy::cache::ResolvedTenant;

/// Mails claimed at once.
const CHUNK: i64 = 200;
/// How long a claim keeps other instances off a mail.
const LEASE_SECS: i32 = 120;

/// A claimed mail with the token it will carry.
struct Claimed {
    row: Row,
    token: String,
    digest: Vec<u8>,
}

/// Claims a chunk of due mails and gives each a fresh token.
async fn claim(tenant: &ResolvedTenant) -> ApiResult<Vec<Claimed>> {
    tenant
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            let rows = repo::claim_due(conn, CHUNK, LEASE_SECS).await?;
            let claimed: Vec<Claimed> = rows
                .into_iter()
                .map(|row| {
                    let t = crate::onetime::new_token(TOKEN_PREFIX);
                    Claimed {
                        row,
                        token: t.token,
                        digest: t.digest.to_vec(),
                    }
                })
                .collect();
            let ids: Vec<Uuid> = claimed.iter().map(|c| c.row.id).collect();
            let digests: Vec<Vec<u8>> = claimed.iter().map(|c| c.digest.clone()).collect();
            repo::set_tokens(conn, &ids, &digests).await?;
            Ok::<_, ApiError>(claimed)
        })
        .await
}

/// Sends every due mail of `tenant`; returns whether mail still waits (retries due later).
pub async fn deliver_tenant(state: &InvitationsState, tenant: &ResolvedTenant) -> ApiResult<bool> {
    let actor = Actor::system(&state.audit_recent, tenant.tenant.id, &tenant.db);
    tenant
        .db
        .transaction(async |tx| service::expire_in(tx.conn(), &actor, 1_000).await)
        .await?;
    loop {
        let claimed = claim(tenant).await?;
        if claimed.is_empty() {
            break;
        }
        let mails = render_all(state, tenant, &claimed).await?;
        let concurrency = state.config.invitations.mail_concurrency;
        let outcomes: Vec<(usize, Result<(), String>)> =
            futures::stream::iter(mails.into_iter().enumerate())
                .map(|(i, mail)| async move {
                    let sent = state.mailer.send(&mail).await.map_err(|e| e.0);
                    (i, sent)
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
        record_outcomes(state, tenant, &actor, &claimed, outcomes).await?;
        if (claimed.len() as i64) < CHUNK {
            break;
        }
    }
    tenant
        .db
        .transaction(async |tx| Ok::<_, ApiError>(repo::mail_waiting(tx.conn()).await?))
        .await
}

/// The mails of `claimed`, from the tenant's templates (the built-in one when a saved
/// template cannot be rendered).
async fn render_all(
    state: &InvitationsState,
    tenant: &ResolvedTenant,
    claimed: &[Claimed],
) -> ApiResult<Vec<crate::mail::Mail>> {
    let mut locales: Vec<String> = claimed.iter().map(|c| c.row.locale.clone()).collect();
    locales.push("en".into());
    locales.sort();
    locales.dedup();
    let mut inviters: Vec<Uuid> = claimed.iter().filter_map(|c| c.row.invited_by).collect();
    inviters.sort();
    inviters.dedup();
    let (templates, names) = tenant
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            let templates = repo::templates_for(conn, &locales).await?;
            let mut names = HashMap::new();
            for id in &inviters {
                if let Some(u) = crate::users::repo::get(conn, UserId(*id)).await? {
                    let name = u
                        .display_name
                        .or(u.username)
                        .or(u.email)
                        .unwrap_or_else(|| "A colleague".into());
                    names.insert(*id, name);
                }
            }
            Ok::<_, ApiError>((templates, names))
        })
        .await?;
    let link_base = &state.config.invitations.accept_url;
    let by_locale: HashMap<&str, super::Template> = locales
        .iter()
        .map(|l| (l.as_str(), service::pick(templates.clone(), l)))
        .collect();
    Ok(claimed
        .iter()
        .map(|c| {
            let chosen = &by_locale[c.row.locale.as_str()];
            let parts = Parts {
                subject: &chosen.subject,
                text: &chosen.text_body,
                html: chosen.html_body.as_deref(),
            };
            let values = Values {
                tenant_name: tenant.tenant.display_name.clone(),
                inviter_name: c
                    .row
                    .invited_by
                    .and_then(|i| names.get(&i).cloned())
                    .unwrap_or_else(|| "A colleague".into()),
                invitee_email: c.row.email.clone(),
                accept_url: crate::onetime::link(link_base, &tenant.tenant.slug, &c.token),
                token: c.token.clone(),
                message: c.row.message.clone().unwrap_or_default(),
                expires_at: c.row.expires_at.to_rfc3339(),
                roles: c.row.roles.join(", "),
            };
            template::render(&parts, &values, &c.row.email).unwrap_or_else(|error| {
                tracing::warn!(tenant = %tenant.tenant.slug, locale = c.row.locale, %error, "invitation template failed; the built-in one is used");
                template::render(&Parts::builtin(), &values, &c.row.email)
                    .expect("the built-in template renders")
            })
        })
        .collect())
}

/// Records what became of each claimed mail, with audit entries and events.
async fn record_outcomes(
    state: &InvitationsState,
    tenant: &ResolvedTenant,
    actor: &Actor,
    claimed: &[Claimed],
    outcomes: Vec<(usize, Result<(), String>)>,
) -> ApiResult<()> {
    let cfg = &state.config.invitations;
    tenant
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            let (sent, failed): (Vec<_>, Vec<_>) = outcomes.iter().partition(|(_, r)| r.is_ok());
            let ids: Vec<Uuid> = sent.iter().map(|(i, _)| claimed[*i].row.id).collect();
            let digests: Vec<Vec<u8>> =
                sent.iter().map(|(i, _)| claimed[*i].digest.clone()).collect();
            let recorded = repo::mark_sent(conn, &ids, &digests).await?;
            for (i, _) in &sent {
                let row = &claimed[*i].row;
                if recorded.contains(&row.id) {
                    service::record_change(conn, actor, "invitation.sent", row, json!({"attempt": row.mail_attempts}))
                        .await?;
                }
            }
            for (i, result) in &failed {
                let c = &claimed[*i];
                let error: String = result
                    .as_ref()
                    .err()
                    .map(|e| e.chars().take(500).collect())
                    .unwrap_or_default();
                let attempts = c.row.mail_attempts.max(1) as u32;
                let retry_at = (attempts < cfg.mail_max_attempts).then(|| {
                    let wait = cfg
                        .mail_retry_base_ms
                        .saturating_mul(1u64 << (attempts - 1).min(20))
                        .min(3_600_000);
                    Utc::now() + chrono::Duration::milliseconds(wait as i64)
                });
                let marked = repo::mark_failed(conn, c.row.id, &c.digest, &error, retry_at).await?;
                if marked && retry_at.is_none() {
                    service::record_change(conn, actor, "invitation.delivery_failed", &c.row, json!({"attempts": attempts, "error": error}))
                        .await?;
                }
                tracing::info!(tenant = %tenant.tenant.slug, invitation = %crate::ids::InvitationId(c.row.id), attempts, %error, retry = retry_at.is_some(), "invitation mail failed");
            }
            Ok::<_, ApiError>(())
        })
        .await
}

/// The delivery loop; runs until `stop` changes.
pub async fn worker(
    state: Arc<InvitationsState>,
    mut nudges: tokio::sync::mpsc::UnboundedReceiver<Arc<ResolvedTenant>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut retry = tokio::time::interval(Duration::from_millis(500));
    let mut sweep = tokio::time::interval(Duration::from_secs(
        state.config.invitations.sweep_interval_secs,
    ));
    for t in [&mut retry, &mut sweep] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    // Tenants with mail still waiting (a retry due later).
    let mut waiting: HashMap<TenantId, Arc<ResolvedTenant>> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            Some(tenant) = nudges.recv() => {
                waiting.insert(tenant.tenant.id, tenant);
                while let Ok(more) = nudges.try_recv() {
                    waiting.insert(more.tenant.id, more);
                }
            }
            _ = retry.tick() => {}
            _ = sweep.tick() => {
                for tenant in crate::tenancy::service::active_tenants(&state.tenancy, "invitation").await {
                    waiting.entry(tenant.tenant.id).or_insert(tenant);
                }
            }
        }
        let mut keep = HashMap::new();
        for (id, tenant) in waiting.drain() {
            match deliver_tenant(&state, &tenant).await {
                Ok(false) => {}
                Ok(true) => {
                    keep.insert(id, tenant);
                }
                // Off the list until the next sweep finds it again (a deleted tenant never
                // comes back; a passing failure waits one sweep).
                Err(e) => {
                    tracing::debug!(tenant = %tenant.tenant.slug, error = %e, "invitation delivery round failed");
                }
            }
        }
        waiting = keep;
    }
}
