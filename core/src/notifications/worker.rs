//! The notification worker, per tenant: expands due notifications into deliveries and inbox
//! items (a chunk of recipients per transaction, the cursor moving with them), sends due
//! deliveries through the providers with retries (exponential backoff with jitter, failover,
//! a dead letter after the last attempt), sends due digests, and turns outbox events into
//! notifications by the tenant's rules (the outbox cursor moving with the notifications).
//!
//! Woken at once for a tenant that just sent; visits every tenant each sweep and keeps tenants
//! with work waiting on its list. Work is claimed with `FOR UPDATE SKIP LOCKED` and leases, so
//! instances share it and a crashed instance's claims pass to another when their lease ends.
//! Never logs a message body or an address.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use rand::Rng;
use uuid::Uuid;

use super::model::RuleView;
use super::policy::{self, Choices, QuietHours};
use super::provider::{Outgoing, SendError, clean};
use super::repo::{self, NewDelivery, NewItem, Outcome, Recipient};
use super::service;
use super::template::{self, Context};
use super::{Audience, Category, Channel, NotificationsState, QuietBehaviour};
use crate::error::{ApiError, ApiResult};
use crate::ids::TenantId;
use crate::tenancy::cache::ResolvedTenant;

/// Tenants one instance works on at once.
const TENANTS_AT_ONCE: usize = 8;

/// The wait before attempt `attempts + 1`: base × 2^(attempts−1), ±20 %, at most 6 hours.
pub fn backoff(base_ms: u64, attempts: u32) -> chrono::Duration {
    let exp = base_ms.saturating_mul(1u64 << attempts.saturating_sub(1).min(20));
    let jitter: f64 = rand::rng().random_range(0.8..1.2);
    let ms = ((exp as f64) * jitter).min(6.0 * 3_600_000.0) as i64;
    chrono::Duration::milliseconds(ms)
}

/// The lease of a claimed batch: at least long enough for every provider of every message of
/// the batch to time out (a batch is two rounds of `concurrency` messages).
fn lease_secs(state: &NotificationsState) -> i32 {
    let n = &state.config.notifications;
    let chain = state.providers.longest_chain().max(1) as u64;
    let worst = n.provider_timeout_ms * chain * 2 / 1000 + 1;
    i32::try_from(worst.max(n.lease_secs)).unwrap_or(3600)
}

/// Does the tenant's due work; returns whether work still waits.
pub async fn run_tenant(
    state: &NotificationsState,
    tenant: &Arc<ResolvedTenant>,
) -> ApiResult<bool> {
    // Work due later than the next sweep is left to the sweep.
    let horizon = i32::try_from(state.config.notifications.sweep_interval_secs).unwrap_or(60);
    let (now, soon) = tenant
        .db
        .read(async |conn| Ok::<_, ApiError>(repo::due(conn, horizon).await?))
        .await?;
    if !now {
        return Ok(soon);
    }
    rules_round(state, tenant).await?;
    while expand_one(state, tenant).await? {}
    loop {
        let n = deliver_batch(state, tenant).await?;
        if n == 0 {
            break;
        }
    }
    while digest_batch(state, tenant).await? > 0 {}
    tenant
        .db
        .read(async |conn| Ok::<_, ApiError>(repo::work_waiting(conn, horizon).await?))
        .await
}

// ---- expansion -------------------------------------------------------------------------

/// What the expansion of one notification knows once.
struct Plan {
    category: Category,
    only: Option<Vec<Channel>>,
    tenant_channels: Option<Vec<Channel>>,
    tenant_quiet: Option<QuietHours>,
    tenant_digest: Option<super::DigestRule>,
    templates: Vec<repo::TemplateRow>,
}

/// Expands one chunk of one due notification; whether it did anything.
async fn expand_one(state: &NotificationsState, tenant: &Arc<ResolvedTenant>) -> ApiResult<bool> {
    let settings = crate::settings::service::effective(&state.settings, tenant).await?;
    let chunk = i64::from(state.config.notifications.expand_chunk);
    let per_recipient = i64::from(state.config.notifications.per_recipient_per_hour);
    let tenant_name = tenant.tenant.display_name.clone();
    let (did, inbox_users) = tenant
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            if !repo::try_expansion_lock(conn).await? {
                // Another instance is expanding this tenant's notifications; its turn.
                return Ok::<_, ApiError>((false, Vec::new()));
            }
            let Some(n) = repo::claim_due_notification(conn).await? else {
                return Ok::<_, ApiError>((false, Vec::new()));
            };
            let audience: Audience = serde_json::from_value(n.audience.clone()).unwrap_or_default();
            let Some(category) = service::category_in(conn, &n.category).await? else {
                // The category went away: nothing to send.
                repo::advance_expansion(conn, n.id, n.expand_after, true).await?;
                return Ok((true, Vec::new()));
            };
            let plan = Plan {
                only: n
                    .channels
                    .as_ref()
                    .map(|c| c.iter().filter_map(|c| Channel::parse(c)).collect()),
                tenant_channels: service::tenant_default(&settings),
                tenant_quiet: service::tenant_quiet_hours(&settings),
                tenant_digest: service::tenant_digest(&settings),
                templates: repo::templates(conn, Some(&category.key)).await?,
                category,
            };
            let recipients = repo::audience_page(conn, &audience, n.expand_after, chunk).await?;
            let users: Vec<Uuid> = recipients.iter().map(|r| r.id).collect();
            let prefs = repo::prefs(conn, &users, Some(&plan.category.key)).await?;
            let hour =
                repo::recent_counts(conn, &users, Utc::now() - chrono::Duration::hours(1)).await?;
            let throttled = match &plan.category.throttle {
                Some(t) if t.window_secs != 3_600 => {
                    let since = Utc::now() - chrono::Duration::seconds(i64::from(t.window_secs));
                    repo::recent_counts(conn, &users, since).await?
                }
                _ => hour.clone(),
            };
            let now = Utc::now();
            let mut deliveries = Vec::new();
            let mut items = Vec::new();
            let throttle_key = plan
                .category
                .throttle
                .as_ref()
                .and_then(|t| t.key.as_ref())
                .map(|k| n.data.get(k).map(|v| v.to_string()).unwrap_or_default());
            for r in &recipients {
                let choices = Choices {
                    per_category: prefs
                        .iter()
                        .filter(|p| p.user_id == r.id)
                        .filter_map(|p| Channel::parse(&p.channel).map(|c| (c, p.enabled)))
                        .collect(),
                    defaults: service::account_defaults(&r.preferences),
                };
                let tz = policy::zone(
                    r.preferences
                        .get("time_zone")
                        .and_then(|v| v.as_str())
                        .unwrap_or("UTC"),
                );
                let quiet = r
                    .quiet_hours
                    .as_ref()
                    .and_then(|q| serde_json::from_value::<QuietHours>(q.clone()).ok())
                    .or_else(|| plan.tenant_quiet.clone());
                for (channel, on, _) in policy::channels(
                    &plan.category,
                    plan.only.as_deref(),
                    &choices,
                    plan.tenant_channels.as_deref(),
                ) {
                    let mut d = NewDelivery {
                        id: Uuid::now_v7(),
                        user_id: r.id,
                        channel: channel.as_str().into(),
                        status: "queued".into(),
                        reason: None,
                        due_at: Some(now),
                        digest_id: None,
                        throttle_key: throttle_key.clone(),
                    };
                    let skip = |d: &mut NewDelivery, status: &str, why: &str| {
                        d.status = status.into();
                        d.reason = Some(why.into());
                        d.due_at = None;
                    };
                    let critical = plan.category.critical;
                    let address_missing = match channel {
                        Channel::Email => r.email.as_deref().is_none_or(str::is_empty),
                        Channel::Sms => r.phone.is_none(),
                        Channel::Push => r.push_tokens.is_empty(),
                        Channel::InApp => false,
                    };
                    let sent_within = |counts: &[repo::CountRow],
                                       pred: &dyn Fn(&repo::CountRow) -> bool|
                     -> i64 {
                        counts
                            .iter()
                            .filter(|c| c.user_id == r.id && pred(c))
                            .map(|c| c.n)
                            .sum()
                    };
                    if !on {
                        skip(&mut d, "skipped", "preference");
                    } else if address_missing {
                        skip(&mut d, "skipped", "no address for this channel");
                    } else if channel != Channel::InApp && !state.providers.serves(channel) {
                        skip(&mut d, "skipped", "no provider for this channel");
                    } else if !critical
                        && sent_within(&hour, &|c| c.channel == channel.as_str()) >= per_recipient
                    {
                        skip(&mut d, "throttled", "recipient hourly limit");
                    } else if !critical
                        && plan.category.throttle.as_ref().is_some_and(|t| {
                            sent_within(&throttled, &|c| {
                                c.category == plan.category.key
                                    && c.channel == channel.as_str()
                                    && c.throttle_key == throttle_key
                            }) >= i64::from(t.max)
                        })
                    {
                        skip(&mut d, "throttled", "category throttle");
                    } else if channel == Channel::InApp {
                        d.status = "delivered".into();
                        d.due_at = None;
                    } else if let Some(until) = (!critical)
                        .then(|| quiet.as_ref().and_then(|q| policy::quiet_until(now, tz, q)))
                        .flatten()
                    {
                        match plan.category.quiet_hours {
                            QuietBehaviour::Hold => {
                                d.status = "held".into();
                                d.reason = Some("quiet hours".into());
                                d.due_at = Some(until);
                            }
                            QuietBehaviour::Skip => skip(&mut d, "skipped", "quiet hours"),
                        }
                    } else if let Some(rule) = plan
                        .category
                        .digest
                        .as_ref()
                        .or(plan.tenant_digest.as_ref())
                        .filter(|_| !critical)
                    {
                        let (digest, opened) = repo::open_digest(
                            conn,
                            r.id,
                            &plan.category.key,
                            channel.as_str(),
                            policy::digest_due(now, tz, rule),
                        )
                        .await?;
                        if !(opened && rule.send_first) {
                            d.status = "digested".into();
                            d.due_at = None;
                            d.digest_id = Some(digest);
                        }
                    }
                    if channel == Channel::InApp && d.status == "delivered" {
                        let parts = service::pick(
                            &plan.templates,
                            "in_app",
                            r.preferences
                                .get("locale")
                                .and_then(|v| v.as_str())
                                .unwrap_or("en"),
                        );
                        let ctx = Context {
                            data: &n.data,
                            recipient_name: &r.name,
                            recipient_email: r.email.as_deref().unwrap_or(""),
                            tenant_name: &tenant_name,
                            category_key: &plan.category.key,
                            category_name: &plan.category.name,
                            unsubscribe_url: "",
                        };
                        match template::render(&parts, &ctx)
                            .or_else(|_| template::render(&template::builtin(), &ctx))
                        {
                            Ok(out) => items.push(NewItem {
                                user_id: r.id,
                                title: out.subject,
                                body: out.body,
                            }),
                            Err(e) => {
                                d.status = "failed".into();
                                d.reason = Some(format!("template: {e}"));
                            }
                        }
                    }
                    deliveries.push(d);
                }
            }
            repo::insert_deliveries(conn, n.id, &plan.category.key, &deliveries).await?;
            let changed =
                repo::insert_items(conn, n.id, &plan.category.key, &n.data, &items).await?;
            let done = (recipients.len() as i64) < chunk;
            let last = recipients.last().map(|r| r.id).or(n.expand_after);
            repo::advance_expansion(conn, n.id, last, done).await?;
            Ok((true, changed))
        })
        .await?;
    if !inbox_users.is_empty() {
        state.announce(tenant.tenant.id, &inbox_users).await;
    }
    Ok(did)
}

// ---- sending ---------------------------------------------------------------------------

/// The address a claimed message goes to on its channel.
fn address(channel: Channel, to: &Recipient) -> Option<String> {
    match channel {
        Channel::Email => to.email.clone().filter(|e| !e.is_empty()),
        Channel::Sms => to.phone.clone(),
        // The newest device token.
        Channel::Push => to.push_tokens.last().cloned(),
        Channel::InApp => None,
    }
}

/// The template a claimed delivery or digest renders with: the category's own for the
/// channel and the recipient's locale, else the fallbacks of [`service::pick`].
fn parts_for(
    templates: &[repo::TemplateRow],
    category: &str,
    channel: Channel,
    to: &Recipient,
) -> template::Parts {
    let own: Vec<_> = templates
        .iter()
        .filter(|t| t.category == category)
        .cloned()
        .collect();
    service::pick(&own, channel.as_str(), &to.locale)
}

/// What a template sees when rendering one item for one recipient.
fn context<'a>(
    to: &'a Recipient,
    data: &'a serde_json::Value,
    tenant: &'a ResolvedTenant,
    category: (&'a str, &'a str),
    unsubscribe: Option<&'a str>,
) -> Context<'a> {
    Context {
        data,
        recipient_name: &to.name,
        recipient_email: to.email.as_deref().unwrap_or(""),
        tenant_name: &tenant.tenant.display_name,
        category_key: category.0,
        category_name: category.1,
        unsubscribe_url: unsubscribe.unwrap_or(""),
    }
}

/// What became of one attempt.
fn judge(
    state: &NotificationsState,
    id: Uuid,
    attempts: i32,
    tries: Vec<super::provider::Try>,
    all: &mut Vec<repo::NewAttempt>,
) -> Outcome {
    let max = state.config.notifications.max_attempts as i32;
    for t in &tries {
        all.push(repo::NewAttempt {
            delivery: id,
            n: attempts,
            provider: t.provider.clone(),
            ok: t.result.is_ok(),
            error: t.result.as_ref().err().map(|e| clean(e.message())),
        });
    }
    let last = tries.last();
    let provider = last.map(|t| t.provider.clone());
    match last.map(|t| &t.result) {
        Some(Ok(())) => Outcome {
            id,
            status: "sent".into(),
            provider,
            due_at: None,
            error: None,
        },
        Some(Err(SendError::Permanent(e))) => Outcome {
            id,
            status: "bounced".into(),
            provider,
            due_at: None,
            error: Some(clean(e)),
        },
        other => {
            let error = match other {
                Some(Err(e)) => clean(e.message()),
                _ => "no provider answered".to_string(),
            };
            if attempts >= max {
                Outcome {
                    id,
                    status: "failed".into(),
                    provider,
                    due_at: None,
                    error: Some(error),
                }
            } else {
                Outcome {
                    id,
                    status: "queued".into(),
                    provider,
                    due_at: Some(
                        Utc::now()
                            + backoff(state.config.notifications.retry_base_ms, attempts as u32),
                    ),
                    error: Some(error),
                }
            }
        }
    }
}

/// Claims, renders, sends and records one batch of due deliveries; how many.
async fn deliver_batch(
    state: &NotificationsState,
    tenant: &Arc<ResolvedTenant>,
) -> ApiResult<usize> {
    let cfg = &state.config.notifications;
    // Small batches: a crash repeats at most one batch's sends.
    let limit = (cfg.concurrency * 2) as i64;
    let lease = lease_secs(state);
    let (claimed, templates, categories) = tenant
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            let claimed = repo::claim_deliveries(conn, limit, lease).await?;
            let templates = if claimed.is_empty() {
                Vec::new()
            } else {
                repo::templates(conn, None).await?
            };
            let categories = if claimed.is_empty() {
                Vec::new()
            } else {
                service::categories_in(conn).await?
            };
            Ok::<_, ApiError>((claimed, templates, categories))
        })
        .await?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let n = claimed.len();
    let mut outcomes = Vec::with_capacity(n);
    let mut ready = Vec::with_capacity(n);
    for c in &claimed {
        let channel = Channel::parse(&c.channel).unwrap_or(Channel::Email);
        let Some(to) = address(channel, &c.to) else {
            outcomes.push(Outcome {
                id: c.id,
                status: "bounced".into(),
                provider: None,
                due_at: None,
                error: Some("the recipient has no address for this channel".into()),
            });
            continue;
        };
        let cat = categories.iter().find(|k| k.key == c.category);
        let (cat_key, cat_name) = cat.map_or((c.category.as_str(), c.category.as_str()), |k| {
            (k.key.as_str(), k.name.as_str())
        });
        let unsubscribe = (channel == Channel::Email && !cat.is_some_and(|k| k.critical))
            .then(|| service::unsubscribe_link(state, tenant, c.to.user_id, cat_key));
        let parts = parts_for(&templates, &c.category, channel, &c.to);
        let ctx = context(
            &c.to,
            &c.data,
            tenant,
            (cat_key, cat_name),
            unsubscribe.as_deref(),
        );
        match template::render(&parts, &ctx) {
            Ok(out) => ready.push((
                c.id,
                c.attempts,
                Outgoing {
                    delivery: c.id,
                    channel,
                    to,
                    subject: out.subject,
                    body: out.body,
                    html: out.html,
                    unsubscribe,
                },
            )),
            Err(e) => outcomes.push(Outcome {
                id: c.id,
                status: "failed".into(),
                provider: None,
                due_at: None,
                error: Some(clean(&format!("template: {e}"))),
            }),
        }
    }
    let providers = state.providers.clone();
    let results: Vec<(Uuid, i32, Vec<super::provider::Try>)> = futures::stream::iter(ready)
        .map(|(id, attempts, m)| {
            let providers = providers.clone();
            async move { (id, attempts, providers.send(&m).await) }
        })
        .buffer_unordered(cfg.concurrency)
        .collect()
        .await;
    let mut attempts = Vec::new();
    for (id, n_attempt, tries) in results {
        outcomes.push(judge(state, id, n_attempt, tries, &mut attempts));
    }
    let recorded = tenant
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            repo::insert_attempts(conn, &attempts).await?;
            repo::record_outcomes(conn, &outcomes).await?;
            Ok::<_, ApiError>(())
        })
        .await;
    if let Err(e) = recorded {
        // One outcome the database refuses must not keep the whole batch unrecorded (and
        // resent): record them one by one, the outcome alone when its details are refused.
        tracing::warn!(tenant = %tenant.tenant.slug, error = %e, "a delivery batch could not be recorded at once");
        for o in &outcomes {
            let mine: Vec<repo::NewAttempt> = attempts
                .iter()
                .filter(|a| a.delivery == o.id)
                .cloned()
                .collect();
            let one = tenant
                .db
                .transaction(async |tx| {
                    let conn = tx.conn();
                    repo::insert_attempts(conn, &mine).await?;
                    repo::record_outcomes(conn, std::slice::from_ref(o)).await?;
                    Ok::<_, ApiError>(())
                })
                .await;
            if one.is_err() {
                let bare = Outcome {
                    error: Some("the provider's answer could not be stored".into()),
                    ..o.clone()
                };
                tenant
                    .db
                    .transaction(async |tx| {
                        repo::record_outcomes(tx.conn(), std::slice::from_ref(&bare)).await?;
                        Ok::<_, ApiError>(())
                    })
                    .await?;
            }
        }
    }
    for o in outcomes.iter().filter(|o| o.status != "sent") {
        tracing::info!(tenant = %tenant.tenant.slug, delivery = %o.id, status = o.status, error = o.error.as_deref().unwrap_or(""), "notification delivery not sent");
    }
    Ok(n)
}

/// Sends due digests; how many were handled.
async fn digest_batch(
    state: &NotificationsState,
    tenant: &Arc<ResolvedTenant>,
) -> ApiResult<usize> {
    let lease = lease_secs(state);
    let (claimed, items, templates, categories) = tenant
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            let claimed = repo::claim_digests(conn, 50, lease).await?;
            let ids: Vec<Uuid> = claimed.iter().map(|d| d.id).collect();
            let items = repo::digest_items(conn, &ids).await?;
            let templates = if claimed.is_empty() {
                Vec::new()
            } else {
                repo::templates(conn, None).await?
            };
            let categories = if claimed.is_empty() {
                Vec::new()
            } else {
                service::categories_in(conn).await?
            };
            Ok::<_, ApiError>((claimed, items, templates, categories))
        })
        .await?;
    let max = state.config.notifications.max_attempts as i32;
    for d in &claimed {
        let list = items.get(&d.id).map(Vec::as_slice).unwrap_or_default();
        let channel = Channel::parse(&d.channel).unwrap_or(Channel::Email);
        let Some(cat) = categories.iter().find(|k| k.key == d.category) else {
            // The category went away: its digest closes as failed instead of coming back
            // after every lease.
            tenant
                .db
                .transaction(async |tx| {
                    repo::finish_digest(
                        tx.conn(),
                        d.id,
                        "failed",
                        None,
                        None,
                        Some("the category no longer exists"),
                    )
                    .await?;
                    Ok::<_, ApiError>(())
                })
                .await?;
            continue;
        };
        let to = address(channel, &d.to);
        let (outcome, provider, error, retry_at) = if list.is_empty() {
            ("sent", None, None, None)
        } else if let Some(to) = to {
            let cap = cat.digest.as_ref().map_or(50, |r| r.max_items) as usize;
            let parts = parts_for(&templates, &d.category, channel, &d.to);
            let unsubscribe = (channel == Channel::Email)
                .then(|| service::unsubscribe_link(state, tenant, d.to.user_id, &cat.key));
            let mut lines = Vec::new();
            let mut html = Vec::new();
            for item in list.iter().take(cap) {
                let ctx = context(
                    &d.to,
                    &item.data,
                    tenant,
                    (&cat.key, &cat.name),
                    unsubscribe.as_deref(),
                );
                let r = template::render(&parts, &ctx)
                    .or_else(|_| template::render(&template::builtin(), &ctx))
                    .unwrap_or_else(|_| template::Rendered {
                        subject: cat.name.clone(),
                        body: String::new(),
                        html: None,
                    });
                lines.push(format!(
                    "- {}\n  {}",
                    r.subject,
                    r.body.replace('\n', "\n  ")
                ));
                html.push(format!(
                    "<li><strong>{}</strong><br>{}</li>",
                    minijinja::HtmlEscape(&r.subject),
                    minijinja::HtmlEscape(&r.body)
                ));
            }
            let more = list.len().saturating_sub(cap);
            if more > 0 {
                lines.push(format!("... and {more} more"));
                html.push(format!("<li>... and {more} more</li>"));
            }
            let m = Outgoing {
                delivery: d.id,
                channel,
                to,
                subject: format!("{} new {} notifications", list.len(), cat.name),
                body: lines.join("\n"),
                html: Some(format!("<ul>{}</ul>", html.join(""))),
                unsubscribe,
            };
            let tries = state.providers.send(&m).await;
            let last = tries.last();
            let provider = last.map(|t| t.provider.clone());
            match last.map(|t| &t.result) {
                Some(Ok(())) => ("sent", provider, None, None),
                Some(Err(SendError::Permanent(e))) => ("failed", provider, Some(clean(e)), None),
                Some(Err(e)) if d.attempts < max => (
                    "open",
                    provider,
                    Some(clean(e.message())),
                    Some(
                        Utc::now()
                            + backoff(state.config.notifications.retry_base_ms, d.attempts as u32),
                    ),
                ),
                other => (
                    "failed",
                    provider,
                    other
                        .and_then(|r| r.as_ref().err())
                        .map(|e| clean(e.message())),
                    None,
                ),
            }
        } else {
            (
                "failed",
                None,
                Some("the recipient has no address for this channel".to_string()),
                None,
            )
        };
        tenant
            .db
            .transaction(async |tx| {
                repo::finish_digest(
                    tx.conn(),
                    d.id,
                    outcome,
                    retry_at,
                    provider.as_deref(),
                    error.as_deref(),
                )
                .await?;
                Ok::<_, ApiError>(())
            })
            .await?;
    }
    Ok(claimed.len())
}

// ---- event rules -----------------------------------------------------------------------

/// Applies the tenant's rules to outbox events after the rule cursor; the notifications and
/// the cursor commit together, so an event makes its notifications once.
async fn rules_round(state: &NotificationsState, tenant: &Arc<ResolvedTenant>) -> ApiResult<()> {
    let made = tenant
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            let Some((cursor, since)) = repo::rule_cursor(conn).await? else {
                return Ok::<_, ApiError>(0);
            };
            let mut rules: Vec<RuleView> = service::platform_rules(since);
            rules.extend(
                repo::rules(conn)
                    .await?
                    .into_iter()
                    .filter(|r| r.enabled)
                    .map(service::rule_view),
            );
            let events = crate::outbox::read_after(conn, cursor, 500).await?;
            crate::outbox::record_lag("notifications", &events);
            let Some(last) = events.last().map(|e| e.cursor()) else {
                return Ok(0);
            };
            let mut made = 0;
            for event in &events {
                for rule in rules.iter().filter(|r| r.rule.topic == event.topic && event.at >= r.created_at) {
                    let Some(req) = service::rule_request(rule, event) else { continue };
                    // A rule whose event does not fit (a deleted user, a wrong type) makes
                    // nothing; the event is not retried forever.
                    let saved = conn_savepoint(conn, async |c| {
                        service::create_in(state, c, &req, &format!("event:{}", event.topic), None).await
                    })
                    .await;
                    match saved {
                        Ok(_) => made += 1,
                        Err(e) => tracing::info!(tenant = %tenant.tenant.slug, topic = event.topic, rule = %rule.id, error = %e, "an event rule made no notification"),
                    }
                }
            }
            repo::set_rule_cursor(conn, last).await?;
            Ok(made)
        })
        .await?;
    if made > 0 {
        tracing::debug!(tenant = %tenant.tenant.slug, made, "event rules made notifications");
    }
    Ok(())
}

/// Runs `work` in a savepoint: its failure undoes only its own writes.
async fn conn_savepoint<T>(
    conn: &mut diesel_async::AsyncPgConnection,
    work: impl AsyncFnOnce(&diesel_async::AsyncPgConnection) -> ApiResult<T>,
) -> ApiResult<T> {
    use diesel_async::RunQueryDsl;
    diesel::sql_query("SAVEPOINT notification_rule")
        .execute(conn)
        .await?;
    match work(conn).await {
        Ok(v) => {
            diesel::sql_query("RELEASE SAVEPOINT notification_rule")
                .execute(conn)
                .await?;
            Ok(v)
        }
        Err(e) => {
            diesel::sql_query("ROLLBACK TO SAVEPOINT notification_rule")
                .execute(conn)
                .await?;
            Err(e)
        }
    }
}

// ---- the loop --------------------------------------------------------------------------

/// The worker loop; runs until `stop` changes.
pub async fn worker(
    state: Arc<NotificationsState>,
    mut nudges: tokio::sync::mpsc::UnboundedReceiver<Arc<ResolvedTenant>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let cfg = &state.config.notifications;
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.worker_interval_ms));
    let mut sweep = tokio::time::interval(Duration::from_secs(cfg.sweep_interval_secs));
    for t in [&mut tick, &mut sweep] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut waiting: HashMap<TenantId, Arc<ResolvedTenant>> = HashMap::new();
    let mut purge_at = Utc::now();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            Some(tenant) = nudges.recv() => {
                waiting.insert(tenant.tenant.id, tenant);
                while let Ok(more) = nudges.try_recv() {
                    waiting.insert(more.tenant.id, more);
                }
            }
            _ = tick.tick() => {}
            _ = sweep.tick() => {
                for tenant in crate::tenancy::service::active_tenants(&state.tenancy, "notification").await {
                    waiting.entry(tenant.tenant.id).or_insert(tenant);
                }
            }
        }
        let purge = Utc::now() >= purge_at;
        if purge {
            purge_at = Utc::now() + chrono::Duration::hours(1);
        }
        // Tenants side by side: one tenant's slow provider does not hold up another's mail.
        let state_ref = &state;
        let rounds: Vec<_> = futures::stream::iter(waiting.drain())
            .map(|(id, tenant)| async move {
                if purge {
                    let _ = tenant
                        .db
                        .transaction(async |tx| {
                            Ok::<_, ApiError>(crate::idempotency::purge(tx.conn()).await?)
                        })
                        .await;
                }
                let result = run_tenant(state_ref, &tenant).await;
                (id, tenant, result)
            })
            .buffer_unordered(TENANTS_AT_ONCE)
            .collect()
            .await;
        for (id, tenant, result) in rounds {
            match result {
                Ok(false) => {}
                Ok(true) => {
                    waiting.insert(id, tenant);
                }
                Err(e) => {
                    tracing::debug!(tenant = %tenant.tenant.slug, error = %e, "notification round failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_words_are_stored_printable_and_short() {
        let s = clean("bad\0answer\u{1b}[31m".repeat(100).as_str());
        assert!(!s.chars().any(char::is_control));
        assert_eq!(s.chars().count(), 500);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_spans_half_an_hour_by_default() {
        for attempt in 1..=7u32 {
            let d = backoff(15_000, attempt).num_milliseconds() as f64;
            let base = 15_000.0 * f64::from(1u32 << (attempt - 1));
            assert!((base * 0.8..=base * 1.2).contains(&d), "{attempt}: {d}");
        }
        let total: i64 = (1..=7u32).map(|a| backoff(15_000, a).num_seconds()).sum();
        assert!(
            (1_500..=2_300).contains(&total),
            "8 attempts span {total} s"
        );
        assert!(backoff(15_000, 40) <= chrono::Duration::hours(6));
    }
}
