//! Notification use cases: categories (the platform's in code, the tenant's and its overrides
//! in rows), templates (checked at save, previewed with sample data), preferences, the
//! idempotent send API with its limits, notifications and their deliveries, analytics, the
//! inbox and its event stream, event rules, and one-click unsubscribe. Rules and transactions
//! here; SQL in `repo`; no salvo.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use uuid::Uuid;

use super::model::{
    CategoryChoices, CategoryInput, ChannelChoice, InboxCount, PreferencesPatch, PreferencesView,
    PreviewRequest, ProviderReport, RuleInput, RuleView, Stat, TemplateView,
};
use super::policy::{self, Choices, QuietHours};
use super::repo::{self, CategoryRow, TemplateRow};
use super::template::{self, Parts, VarSpec, VarType, Variables};
use super::{
    AttemptView, Category, Channel, DeliveryView, InboxEvent, InboxItem, NotificationView,
    NotificationsState, QuietBehaviour, SendRequest,
};
use crate::audit::{self, Change};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::idempotency::{self, Stored};
use crate::rbac::Caller;
use crate::tenancy::cache::ResolvedTenant;

fn field(pointer: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        pointer: pointer.into(),
        message: message.into(),
    }
}

fn var(kind: VarType, required: bool) -> VarSpec {
    VarSpec { kind, required }
}

/// The platform's categories.
pub fn platform_categories() -> Vec<Category> {
    let text = |extra: &[(&str, VarSpec)]| -> Variables {
        let mut v: Variables = BTreeMap::new();
        v.insert("title".into(), var(VarType::String, true));
        v.insert("body".into(), var(VarType::String, false));
        v.insert("link".into(), var(VarType::Url, false));
        for (k, s) in extra {
            v.insert((*k).into(), s.clone());
        }
        v
    };
    let c = |key: &str,
             name: &str,
             description: &str,
             channels: &[Channel],
             critical: bool,
             variables: Variables| Category {
        key: key.into(),
        name: name.into(),
        description: description.into(),
        channels: channels.to_vec(),
        critical,
        quiet_hours: QuietBehaviour::Hold,
        variables,
        digest: None,
        throttle: None,
        platform: true,
    };
    vec![
        c(
            "security",
            "Security",
            "Sign-ins, credentials and account protection; always delivered.",
            &[Channel::Email, Channel::InApp],
            true,
            text(&[]),
        ),
        c(
            "invitation",
            "Invitation",
            "Invitations and their answers.",
            &[Channel::Email, Channel::InApp],
            false,
            text(&[]),
        ),
        c(
            "resource.assigned",
            "Assigned to you",
            "A record was assigned to the recipient.",
            &[Channel::InApp, Channel::Email],
            false,
            text(&[
                ("resource_type", var(VarType::String, false)),
                ("resource_id", var(VarType::String, false)),
                ("assigned_by", var(VarType::String, false)),
            ]),
        ),
        c(
            "mention",
            "Mention",
            "Someone mentioned the recipient.",
            &[Channel::InApp, Channel::Email],
            false,
            text(&[("author", var(VarType::String, false))]),
        ),
        c(
            "system",
            "System",
            "Announcements of the tenant's administrators.",
            &[Channel::InApp],
            false,
            text(&[]),
        ),
    ]
}

fn parse_channels(list: &[String]) -> Vec<Channel> {
    list.iter().filter_map(|c| Channel::parse(c)).collect()
}

fn from_row(row: CategoryRow, platform: Option<&Category>) -> Category {
    let digest = row.digest.and_then(|d| serde_json::from_value(d).ok());
    let throttle = row.throttle.and_then(|t| serde_json::from_value(t).ok());
    let quiet = if row.quiet_hours == "skip" {
        QuietBehaviour::Skip
    } else {
        QuietBehaviour::Hold
    };
    match platform {
        Some(p) => Category {
            channels: parse_channels(&row.channels),
            quiet_hours: quiet,
            digest,
            throttle,
            ..p.clone()
        },
        None => Category {
            key: row.key,
            name: row.name,
            description: row.description,
            channels: parse_channels(&row.channels),
            critical: row.critical,
            quiet_hours: quiet,
            variables: serde_json::from_value(row.variables).unwrap_or_default(),
            digest,
            throttle,
            platform: false,
        },
    }
}

/// Every category of the tenant, by key.
pub async fn categories_in(conn: &diesel_async::AsyncPgConnection) -> ApiResult<Vec<Category>> {
    let mut out: BTreeMap<String, Category> = platform_categories()
        .into_iter()
        .map(|c| (c.key.clone(), c))
        .collect();
    for row in repo::categories(conn).await? {
        let merged = from_row(row.clone(), out.get(&row.key));
        out.insert(merged.key.clone(), merged);
    }
    Ok(out.into_values().collect())
}

/// One category (platform or tenant), if it exists.
pub async fn category_in(
    conn: &diesel_async::AsyncPgConnection,
    key: &str,
) -> ApiResult<Option<Category>> {
    let platform = platform_categories().into_iter().find(|c| c.key == key);
    Ok(match repo::category(conn, key).await? {
        Some(row) => Some(from_row(row, platform.as_ref())),
        None => platform,
    })
}

pub async fn categories(db: &TenantDb) -> ApiResult<Vec<Category>> {
    db.read(async |conn| categories_in(conn).await).await
}

pub async fn category(db: &TenantDb, key: &str) -> ApiResult<Category> {
    let found = db.read(async |conn| category_in(conn, key).await).await?;
    crate::error::found(found, "notification category")
}

fn check_category(
    key: &str,
    input: &CategoryInput,
    platform: Option<&Category>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let key_ok = key.len() <= 63
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
    if !key_ok {
        errors.push(field("/key", "a key is [a-z][a-z0-9_.-]* (at most 63)"));
    }
    if input.channels.is_empty() {
        errors.push(field("/channels", "at least one channel"));
    }
    let mut seen = input.channels.clone();
    seen.sort();
    seen.dedup();
    if seen.len() != input.channels.len() {
        errors.push(field("/channels", "channels must be unique"));
    }
    match platform {
        Some(_) => {
            for (set, name) in [
                (input.variables.is_some(), "variables"),
                (input.critical.is_some(), "critical"),
                (input.name.is_some(), "name"),
            ] {
                if set {
                    errors.push(field(
                        format!("/{name}"),
                        "a platform category's name, variables and criticality cannot change",
                    ));
                }
            }
        }
        None => {
            let name = input.name.as_deref().unwrap_or("");
            if name.trim().is_empty() || name.chars().count() > 100 {
                errors.push(field("/name", "1 to 100 characters"));
            }
            if let Some(vars) = &input.variables {
                errors.extend(template::check_variables(vars, "/variables"));
            }
        }
    }
    if input
        .description
        .as_deref()
        .is_some_and(|d| d.chars().count() > 1000)
    {
        errors.push(field("/description", "at most 1000 characters"));
    }
    if let Some(d) = &input.digest {
        match (&d.window_secs, &d.at) {
            (Some(w), None) if (1..=7 * 86_400).contains(w) => {}
            (None, Some(at)) if policy::parse_hhmm(at).is_some() => {}
            _ => errors.push(field(
                "/digest",
                "either window_secs (1 to 604800) or at (HH:MM), not both",
            )),
        }
        if d.fixed && d.window_secs.is_none() {
            errors.push(field("/digest/fixed", "fixed windows need window_secs"));
        }
        if !(1..=500).contains(&d.max_items) {
            errors.push(field("/digest/max_items", "1 to 500"));
        }
        if !input.channels.iter().any(|c| *c != Channel::InApp) {
            errors.push(field(
                "/digest",
                "digests batch email, SMS or push; the category has none",
            ));
        }
    }
    if let Some(t) = &input.throttle {
        if t.max == 0 || !(1..=7 * 86_400).contains(&t.window_secs) {
            errors.push(field(
                "/throttle",
                "max at least 1, window_secs 1 to 604800",
            ));
        }
        let declared = input.variables.as_ref().or(platform.map(|p| &p.variables));
        if let Some(k) = &t.key
            && !declared.is_some_and(|v| v.contains_key(k))
        {
            errors.push(field(
                "/throttle/key",
                "must name a variable of the category",
            ));
        }
    }
    errors
}

/// Creates or replaces a tenant category, or overrides a platform one.
pub async fn put_category(caller: &Caller, key: &str, input: CategoryInput) -> ApiResult<Category> {
    let platform = platform_categories().into_iter().find(|c| c.key == key);
    let errors = check_category(key, &input, platform.as_ref());
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let row = CategoryRow {
        key: key.into(),
        name: input
            .name
            .clone()
            .or_else(|| platform.as_ref().map(|p| p.name.clone()))
            .unwrap_or_default(),
        description: input
            .description
            .clone()
            .or_else(|| platform.as_ref().map(|p| p.description.clone()))
            .unwrap_or_default(),
        channels: input
            .channels
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        critical: input.critical.unwrap_or(false),
        quiet_hours: input.quiet_hours.unwrap_or_default().as_str().into(),
        variables: serde_json::to_value(input.variables.clone().unwrap_or_default())
            .unwrap_or_else(|_| json!({})),
        digest: input
            .digest
            .as_ref()
            .and_then(|d| serde_json::to_value(d).ok()),
        throttle: input
            .throttle
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok()),
    };
    caller
        .tenant
        .0
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            repo::put_category(conn, &row).await?;
            audit::record(
                conn,
                &caller.actor,
                Change {
                    action: "notification.category_changed",
                    target_type: "notification_category",
                    target_id: Some(key.to_string()),
                    data: json!({"channels": row.channels, "critical": row.critical}),
                },
            )
            .await?;
            Ok::<_, ApiError>(())
        })
        .await?;
    category(&caller.tenant.0.db, key).await
}

/// Deletes a tenant category (or a platform category's override). 409 while a rule uses it.
/// One change by the caller and its audit entry (without data) in one transaction; `apply`
/// refuses with its own error, which rolls everything back.
async fn audited(
    caller: &Caller,
    action: &'static str,
    target_type: &'static str,
    target_id: String,
    apply: impl AsyncFnOnce(&diesel_async::AsyncPgConnection) -> ApiResult<()>,
) -> ApiResult<()> {
    let change = Change {
        action,
        target_type,
        target_id: Some(target_id),
        data: json!({}),
    };
    audit::record_with(&caller.tenant.0.db, &caller.actor, change, apply).await
}

pub async fn delete_category(caller: &Caller, key: &str) -> ApiResult<()> {
    let target = key.to_string();
    audited(
        caller,
        "notification.category_deleted",
        "notification_category",
        target,
        async |conn| {
            if repo::category_in_use(conn, key).await? {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    "an event rule sends this category; delete the rule first",
                ));
            }
            if !repo::delete_category(conn, key).await? {
                return Err(ApiError::not_found("notification category"));
            }
            Ok(())
        },
    )
    .await
}

// ---- templates -------------------------------------------------------------------------

fn template_view(t: TemplateRow) -> TemplateView {
    TemplateView {
        channel: Channel::parse(&t.channel).unwrap_or(Channel::Email),
        category: t.category,
        locale: t.locale,
        subject: t.subject,
        body: t.body,
        html: t.html,
        updated_at: t.updated_at,
    }
}

pub async fn templates(db: &TenantDb, category: Option<&str>) -> ApiResult<Vec<TemplateView>> {
    let rows = db
        .read(async |conn| Ok::<_, ApiError>(repo::templates(conn, category).await?))
        .await?;
    Ok(rows.into_iter().map(template_view).collect())
}

fn check_locale(locale: &str) -> ApiResult<()> {
    if !crate::users::profile::locale_ok(locale) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "the locale must be a language tag such as en, de or pt-BR",
        ));
    }
    Ok(())
}

/// Saves a template after checking it against its category's variables.
pub async fn put_template(
    caller: &Caller,
    category_key: &str,
    channel: Channel,
    locale: &str,
    parts: Parts,
) -> ApiResult<TemplateView> {
    check_locale(locale)?;
    let db = &caller.tenant.0.db;
    let cat = category(db, category_key).await?;
    let mut errors = template::check(&parts, &cat.variables);
    if parts.html.is_some() && channel != Channel::Email {
        errors.push(field("/html", "only email templates have an HTML part"));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let row = TemplateRow {
        category: category_key.into(),
        channel: channel.as_str().into(),
        locale: locale.into(),
        subject: parts.subject,
        body: parts.body,
        html: parts.html,
        updated_at: Utc::now(),
    };
    db.transaction(async |tx| {
        let conn = tx.conn();
        repo::put_template(conn, &row, Some(caller.user.user.id.0)).await?;
        audit::record(
            conn,
            &caller.actor,
            Change {
                action: "notification.template_changed",
                target_type: "notification_template",
                target_id: Some(format!("{category_key}/{}/{locale}", channel.as_str())),
                data: json!({}),
            },
        )
        .await?;
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(template_view(row))
}

pub async fn delete_template(
    caller: &Caller,
    category_key: &str,
    channel: Channel,
    locale: &str,
) -> ApiResult<()> {
    audited(
        caller,
        "notification.template_deleted",
        "notification_template",
        format!("{category_key}/{}/{locale}", channel.as_str()),
        async |conn| {
            if !repo::delete_template(conn, category_key, channel.as_str(), locale).await? {
                return Err(ApiError::not_found("notification template"));
            }
            Ok(())
        },
    )
    .await
}

/// Picks the template for a locale: exact, then its language, then `en`, then the built-in.
pub fn pick(templates: &[TemplateRow], channel: &str, locale: &str) -> Parts {
    let lang = locale.split('-').next().unwrap_or(locale);
    for want in [locale, lang, "en"] {
        if let Some(t) = templates
            .iter()
            .find(|t| t.channel == channel && t.locale == want)
        {
            return Parts {
                subject: t.subject.clone(),
                body: t.body.clone(),
                html: t.html.clone(),
            };
        }
    }
    template::builtin()
}

pub async fn preview(caller: &Caller, req: PreviewRequest) -> ApiResult<template::Rendered> {
    let db = &caller.tenant.0.db;
    let cat = category(db, &req.category).await?;
    let data = req
        .data
        .clone()
        .unwrap_or_else(|| template::sample(&cat.variables));
    let mut errors = template::check_data(&cat.variables, &data, "/data");
    let parts = match req.template {
        Some(p) => {
            errors.extend(
                template::check(&p, &cat.variables)
                    .into_iter()
                    .map(|e| field(format!("/template{}", e.pointer), e.message)),
            );
            p
        }
        None => {
            let rows = db
                .read(async |conn| {
                    Ok::<_, ApiError>(repo::templates(conn, Some(&req.category)).await?)
                })
                .await?;
            pick(
                &rows,
                req.channel.as_str(),
                req.locale.as_deref().unwrap_or("en"),
            )
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let user = &caller.user.user;
    let name = user
        .display_name
        .clone()
        .or(user.username.clone())
        .unwrap_or_default();
    let ctx = template::Context {
        data: &data,
        recipient_name: &name,
        recipient_email: user.email.as_deref().unwrap_or(""),
        tenant_name: &caller.tenant.0.tenant.display_name,
        category_key: &cat.key,
        category_name: &cat.name,
        unsubscribe_url: "https://example.com/unsubscribe",
    };
    template::render(&parts, &ctx).map_err(|e| ApiError::validation(vec![field("/template", e)]))
}

// ---- preferences -----------------------------------------------------------------------

/// The account-wide defaults a user set (`preferences.notifications`), if any.
pub fn account_defaults(preferences: &Value) -> std::collections::HashMap<Channel, bool> {
    let mut out = std::collections::HashMap::new();
    if let Some(n) = preferences.get("notifications") {
        for (k, c) in [("email", Channel::Email), ("in_app", Channel::InApp)] {
            if let Some(b) = n.get(k).and_then(Value::as_bool) {
                out.insert(c, b);
            }
        }
    }
    out
}

/// The tenant's default channels, when it set them.
pub fn tenant_default(settings: &crate::settings::Effective) -> Option<Vec<Channel>> {
    settings
        .values
        .pointer("/notifications/default_channels")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(Channel::parse)
                .collect()
        })
}

/// The tenant's default digest (settings `notifications.digest`) for categories without one of
/// their own: `daily` at 09:00 in each recipient's zone, `weekly` a week from the first item.
pub fn tenant_digest(settings: &crate::settings::Effective) -> Option<super::DigestRule> {
    let rule = |window_secs, at: Option<&str>| super::DigestRule {
        window_secs,
        at: at.map(str::to_string),
        max_items: 50,
        send_first: false,
        fixed: false,
    };
    match settings
        .merged
        .pointer("/notifications/digest")
        .and_then(Value::as_str)
    {
        Some("daily") => Some(rule(None, Some("09:00"))),
        Some("weekly") => Some(rule(Some(7 * 86_400), None)),
        _ => None,
    }
}

/// The tenant's default quiet hours, when it set them.
pub fn tenant_quiet_hours(settings: &crate::settings::Effective) -> Option<QuietHours> {
    settings
        .merged
        .pointer("/notifications/quiet_hours")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

pub async fn preferences(
    state: &NotificationsState,
    caller: &Caller,
) -> ApiResult<PreferencesView> {
    let tenant = &caller.tenant.0;
    let user = caller.user.user.id.0;
    let settings = crate::settings::service::effective(&state.settings, tenant).await?;
    let (cats, rows, own, prefs_json) = tenant
        .db
        .read(async |conn| {
            let cats = categories_in(conn).await?;
            let rows = repo::prefs(conn, &[user], None).await?;
            let own = repo::user_settings(conn, user).await?;
            let prefs = repo::raw_preferences(conn, user).await?;
            Ok::<_, ApiError>((cats, rows, own, prefs))
        })
        .await?;
    let defaults = account_defaults(&prefs_json);
    let tenant_channels = tenant_default(&settings);
    let categories = cats
        .iter()
        .map(|cat| {
            let choices = Choices {
                per_category: rows
                    .iter()
                    .filter(|r| r.category == cat.key)
                    .filter_map(|r| Channel::parse(&r.channel).map(|c| (c, r.enabled)))
                    .collect(),
                defaults: defaults.clone(),
            };
            CategoryChoices {
                category: cat.key.clone(),
                name: cat.name.clone(),
                critical: cat.critical,
                channels: policy::channels(cat, None, &choices, tenant_channels.as_deref())
                    .into_iter()
                    .map(|(channel, enabled, source)| ChannelChoice {
                        channel,
                        enabled,
                        source: serde_json::to_value(source)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(PreferencesView {
        categories,
        quiet_hours: own.quiet_hours.and_then(|q| serde_json::from_value(q).ok()),
        phone: own.phone,
        push_tokens: own.push_tokens.len(),
    })
}

pub async fn patch_preferences(
    state: &NotificationsState,
    caller: &Caller,
    patch: PreferencesPatch,
) -> ApiResult<PreferencesView> {
    let tenant = &caller.tenant.0;
    let user = caller.user.user.id.0;
    let mut errors = Vec::new();
    if let Some(Some(q)) = &patch.quiet_hours
        && (policy::parse_hhmm(&q.start).is_none() || policy::parse_hhmm(&q.end).is_none())
    {
        errors.push(field("/quiet_hours", "start and end are HH:MM"));
    }
    if let Some(Some(p)) = &patch.phone {
        let ok = p.starts_with('+')
            && (8..=16).contains(&p.len())
            && p[1..].chars().all(|c| c.is_ascii_digit())
            && !p[1..].starts_with('0');
        if !ok {
            errors.push(field("/phone", "an E.164 number such as +4915112345678"));
        }
    }
    if let Some(tokens) = &patch.push_tokens
        && (tokens.len() > 10 || tokens.iter().any(|t| t.is_empty() || t.len() > 4096))
    {
        errors.push(field(
            "/push_tokens",
            "at most 10 tokens of 1 to 4096 characters",
        ));
    }
    tenant
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            if let Some(cats) = &patch.categories {
                let known = categories_in(conn).await?;
                for (key, channels) in cats {
                    let Some(cat) = known.iter().find(|c| &c.key == key) else {
                        errors.push(field(format!("/categories/{key}"), "no such category"));
                        continue;
                    };
                    for (ch, on) in channels {
                        match Channel::parse(ch) {
                            Some(c) if cat.channels.contains(&c) => {
                                repo::set_pref(conn, user, key, c.as_str(), *on).await?;
                            }
                            _ => errors.push(field(
                                format!("/categories/{key}/{ch}"),
                                "not a channel of this category",
                            )),
                        }
                    }
                }
            }
            if !errors.is_empty() {
                return Err(ApiError::validation(std::mem::take(&mut errors)));
            }
            if patch.quiet_hours.is_some() || patch.phone.is_some() || patch.push_tokens.is_some() {
                let mut own = repo::user_settings(conn, user).await?;
                if let Some(q) = &patch.quiet_hours {
                    own.quiet_hours = q.as_ref().and_then(|q| serde_json::to_value(q).ok());
                }
                if let Some(p) = &patch.phone {
                    own.phone = p.clone();
                }
                if let Some(t) = &patch.push_tokens {
                    own.push_tokens = t.clone();
                }
                repo::put_user_settings(conn, user, &own).await?;
            }
            Ok::<_, ApiError>(())
        })
        .await?;
    preferences(state, caller).await
}

// ---- one-click unsubscribe -------------------------------------------------------------

fn unsubscribe_mac(secret: &str, tenant: Uuid, user: Uuid, category: &str) -> Vec<u8> {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(b"notifications-unsubscribe\0");
    mac.update(tenant.as_bytes());
    mac.update(user.as_bytes());
    mac.update(category.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The signed token of an unsubscribe link: user, category and a MAC (base64url).
pub fn unsubscribe_token(secret: &str, tenant: Uuid, user: Uuid, category: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload = user.as_bytes().to_vec();
    payload.extend_from_slice(category.as_bytes());
    format!(
        "{}.{}",
        b64.encode(payload),
        b64.encode(unsubscribe_mac(secret, tenant, user, category))
    )
}

/// The link put in a mail's `List-Unsubscribe`.
pub fn unsubscribe_link(
    state: &NotificationsState,
    tenant: &ResolvedTenant,
    user: Uuid,
    category: &str,
) -> String {
    let base = state
        .config
        .notifications
        .unsubscribe_url
        .replace("{tenant}", &tenant.tenant.slug);
    let token = unsubscribe_token(
        state.config.auth.api_key_secret.expose(),
        tenant.tenant.id.0,
        user,
        category,
    );
    format!("{base}?token={token}")
}

/// One-click unsubscribe (RFC 8058): turns email off for the token's user and category.
pub async fn unsubscribe(
    state: &NotificationsState,
    tenant: &ResolvedTenant,
    token: &str,
) -> ApiResult<()> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let invalid = || {
        ApiError::new(
            ErrorCode::InvalidParameter,
            "the unsubscribe token is invalid",
        )
    };
    let (payload, mac) = token.split_once('.').ok_or_else(invalid)?;
    let payload = b64.decode(payload).map_err(|_| invalid())?;
    let mac = b64.decode(mac).map_err(|_| invalid())?;
    if payload.len() < 17 {
        return Err(invalid());
    }
    let user = Uuid::from_slice(&payload[..16]).map_err(|_| invalid())?;
    let category = std::str::from_utf8(&payload[16..]).map_err(|_| invalid())?;
    let want = unsubscribe_mac(
        state.config.auth.api_key_secret.expose(),
        tenant.tenant.id.0,
        user,
        category,
    );
    if !crate::crypto::ct_eq(&want, &mac) {
        return Err(invalid());
    }
    let actor = crate::audit::Actor::system(&state.audit_recent, tenant.tenant.id, &tenant.db);
    tenant
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            repo::set_pref(conn, user, category, "email", Some(false)).await?;
            audit::record(
                conn,
                &actor,
                Change {
                    action: "notification.unsubscribed",
                    target_type: "user",
                    target_id: Some(user.to_string()),
                    data: json!({"category": category, "channel": "email"}),
                },
            )
            .await?;
            Ok(())
        })
        .await
}

// ---- provider reports ------------------------------------------------------------------

/// A provider reports what became of a message it accepted: `delivered`, `failed` or
/// `bounced`. Its bearer token must be the one configured for it (providers without a token
/// cannot report), and only a delivery it sent can be changed.
pub async fn report(
    state: &NotificationsState,
    tenant: &ResolvedTenant,
    id: Uuid,
    bearer: Option<&str>,
    report: ProviderReport,
) -> ApiResult<()> {
    let cfg = &state.config.notifications;
    let known = cfg
        .sms
        .iter()
        .chain(&cfg.push)
        .filter(|p| p.name == report.provider && !p.token.expose().is_empty())
        .any(|p| {
            crate::crypto::ct_eq(p.token.expose().as_bytes(), bearer.unwrap_or("").as_bytes())
        });
    if !known {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "the provider's token is missing or wrong",
        ));
    }
    if !["delivered", "failed", "bounced"].contains(&report.status.as_str()) {
        return Err(ApiError::validation(vec![field(
            "/status",
            "one of delivered, failed, bounced",
        )]));
    }
    let error = report.error.as_deref().map(super::provider::clean);
    tenant
        .db
        .transaction(async |tx| {
            if !repo::report(
                tx.conn(),
                id,
                &report.provider,
                &report.status,
                error.as_deref(),
            )
            .await?
            {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    "no delivery this provider sent has this id",
                ));
            }
            Ok(())
        })
        .await
}

// ---- sending ---------------------------------------------------------------------------

/// The most recipients one audience may list directly.
pub const MAX_LISTED: usize = 10_000;

fn notification_view(n: repo::NotificationRow) -> NotificationView {
    let status = if n.expanded_at.is_some() {
        "expanded"
    } else if n.expand_after.is_some() || n.send_at <= Utc::now() {
        "sending"
    } else {
        "scheduled"
    };
    NotificationView {
        id: n.id,
        category: n.category,
        audience: serde_json::from_value(n.audience).unwrap_or_default(),
        data: n.data,
        channels: n.channels.map(|c| parse_channels(&c)),
        source: n.source,
        created_by: n.created_by.map(crate::ids::UserId),
        send_at: n.send_at,
        status: status.into(),
        recipients: n.recipients,
        created_at: n.created_at,
    }
}

/// Checks a send (shape, category, data, audience) inside the transaction; returns the
/// category and the audience's size.
async fn check_send(
    state: &NotificationsState,
    conn: &diesel_async::AsyncPgConnection,
    req: &SendRequest,
) -> ApiResult<(Category, i64)> {
    let mut errors = Vec::new();
    let cat = category_in(conn, &req.category).await?;
    let a = &req.audience;
    if a.is_empty() {
        errors.push(field(
            "/audience",
            "name at least one user, team or role, or everyone",
        ));
    }
    if a.users.len() + a.teams.len() + a.roles.len() > MAX_LISTED {
        errors.push(field("/audience", format!("at most {MAX_LISTED} entries")));
    }
    let data_len = req.data.to_string().len();
    if data_len > state.config.notifications.max_data_bytes {
        errors.push(field(
            "/data",
            format!(
                "at most {} bytes of JSON",
                state.config.notifications.max_data_bytes
            ),
        ));
    }
    if let Some(at) = req.send_at
        && at > Utc::now() + Duration::days(366)
    {
        errors.push(field("/send_at", "at most a year ahead"));
    }
    match &cat {
        None => errors.push(field("/category", "no such category")),
        Some(cat) => {
            let data = if req.data.is_null() {
                json!({})
            } else {
                req.data.clone()
            };
            errors.extend(template::check_data(&cat.variables, &data, "/data"));
            if let Some(only) = &req.channels {
                for (i, c) in only.iter().enumerate() {
                    if !cat.channels.contains(c) {
                        errors.push(field(
                            format!("/channels/{i}"),
                            "not a channel of this category",
                        ));
                    }
                }
                if only.is_empty() {
                    errors.push(field("/channels", "at least one channel"));
                }
            }
        }
    }
    if errors.is_empty() {
        for item in repo::missing(conn, a).await? {
            errors.push(field(format!("/audience/{item}"), "does not exist"));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let count = repo::audience_count(conn, a).await?;
    if count == 0 {
        return Err(ApiError::validation(vec![field(
            "/audience",
            "the audience has no active user",
        )]));
    }
    Ok((cat.expect("checked"), count))
}

/// Writes a notification in the caller's transaction, checking it and the tenant's hourly
/// recipient budget. Used by the send API and the event rules.
pub async fn create_in(
    state: &NotificationsState,
    conn: &diesel_async::AsyncPgConnection,
    req: &SendRequest,
    source: &str,
    created_by: Option<Uuid>,
) -> ApiResult<repo::NotificationRow> {
    let (_, count) = check_send(state, conn, req).await?;
    let limit = i64::from(state.config.notifications.per_tenant_recipients_per_hour);
    let used = repo::recipients_last_hour(conn).await?;
    if used + count > limit {
        let oldest = repo::oldest_in_last_hour(conn)
            .await?
            .unwrap_or_else(Utc::now);
        let wait = (oldest + Duration::hours(1) - Utc::now())
            .num_seconds()
            .max(1);
        return Err(ApiError::new(
            ErrorCode::SendLimited,
            format!("the tenant may address {limit} recipients per hour; {used} were addressed"),
        )
        .retry_after(wait as u64));
    }
    let row = repo::NotificationRow {
        id: Uuid::now_v7(),
        category: req.category.clone(),
        data: if req.data.is_null() {
            json!({})
        } else {
            req.data.clone()
        },
        audience: serde_json::to_value(&req.audience).unwrap_or_else(|_| json!({})),
        channels: req
            .channels
            .as_ref()
            .map(|c| c.iter().map(|c| c.as_str().to_string()).collect()),
        source: source.into(),
        created_by,
        send_at: req
            .send_at
            .unwrap_or_else(Utc::now)
            .max(Utc::now() - Duration::seconds(1)),
        expand_after: None,
        expanded_at: None,
        recipients: i32::try_from(count).unwrap_or(i32::MAX),
        created_at: Utc::now(),
    };
    repo::insert_notification(conn, &row).await?;
    crate::outbox::emit(
        conn,
        "notification.created",
        "notification",
        &row.id.to_string(),
        json!({"category": row.category, "recipients": row.recipients, "source": source}),
    )
    .await?;
    Ok(row)
}

/// What a send answers: the notification, and whether it is a replay.
pub struct Sent {
    pub status: u16,
    pub body: Value,
    pub replay: bool,
}

/// `POST /v1/notifications`, idempotent under `Idempotency-Key`.
pub async fn send(
    state: &NotificationsState,
    caller: &Caller,
    raw: Value,
    key: Option<&str>,
) -> ApiResult<Sent> {
    if let Some(k) = key {
        idempotency::check_key(k)?;
    }
    let req: SendRequest = crate::error::from_json(raw.clone(), "")?;
    let tenant = caller.tenant.0.clone();
    let hash = idempotency::request_hash(&raw);
    let scope = format!("notifications.send:{}", caller.user.user.id.0);
    let sent = tenant
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            if let Some(k) = key
                && let Some(stored) = idempotency::begin(conn, &scope, k, &hash).await?
            {
                return Ok::<_, ApiError>(Sent {
                    status: stored.status,
                    body: stored.body,
                    replay: true,
                });
            }
            let row = create_in(state, conn, &req, "api", Some(caller.user.user.id.0)).await?;
            audit::record(
                conn,
                &caller.actor,
                Change {
                    action: "notification.sent",
                    target_type: "notification",
                    target_id: Some(row.id.to_string()),
                    data: json!({"category": row.category, "recipients": row.recipients}),
                },
            )
            .await?;
            let body = serde_json::to_value(notification_view(row)).map_err(ApiError::internal)?;
            if let Some(k) = key {
                idempotency::finish(
                    conn,
                    &scope,
                    k,
                    &hash,
                    &Stored {
                        status: 202,
                        body: body.clone(),
                    },
                )
                .await?;
            }
            Ok(Sent {
                status: 202,
                body,
                replay: false,
            })
        })
        .await?;
    if !sent.replay {
        let _ = state.nudge.send(tenant);
    }
    Ok(sent)
}

pub async fn list(
    db: &TenantDb,
    after: Option<Uuid>,
    limit: i64,
) -> ApiResult<Vec<NotificationView>> {
    let rows = db
        .read(async |conn| Ok::<_, ApiError>(repo::notifications(conn, after, limit).await?))
        .await?;
    Ok(rows.into_iter().map(notification_view).collect())
}

pub async fn get(db: &TenantDb, id: Uuid) -> ApiResult<NotificationView> {
    let row = db
        .read(async |conn| Ok::<_, ApiError>(repo::notification(conn, id).await?))
        .await?;
    crate::error::found(row, "notification").map(notification_view)
}

/// Cancels a scheduled notification (409 once sending began).
pub async fn cancel(caller: &Caller, id: Uuid) -> ApiResult<()> {
    audited(
        caller,
        "notification.cancelled",
        "notification",
        id.to_string(),
        async |conn| {
            if repo::notification(conn, id).await?.is_none() {
                return Err(ApiError::not_found("notification"));
            }
            if !repo::cancel(conn, id).await? {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    "the notification is being sent or was sent",
                ));
            }
            Ok(())
        },
    )
    .await
}

pub async fn deliveries(
    db: &TenantDb,
    id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> ApiResult<Vec<DeliveryView>> {
    db.read(async |conn| {
        if repo::notification(conn, id).await?.is_none() {
            return Err(ApiError::not_found("notification"));
        }
        let rows = repo::deliveries(conn, id, after, limit).await?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let attempts = repo::attempts(conn, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| DeliveryView {
                history: attempts
                    .iter()
                    .filter(|a| a.delivery_id == r.id)
                    .map(|a| AttemptView {
                        n: a.n,
                        provider: a.provider.clone(),
                        at: a.at,
                        ok: a.ok,
                        error: a.error.clone(),
                    })
                    .collect(),
                id: r.id,
                user_id: crate::ids::UserId(r.user_id),
                channel: Channel::parse(&r.channel).unwrap_or(Channel::Email),
                next_attempt_at: r
                    .due_at
                    .filter(|_| matches!(r.status.as_str(), "queued" | "held")),
                status: r.status,
                reason: r.reason,
                attempts: r.attempts,
                provider: r.provider,
                last_error: r.last_error,
                created_at: r.created_at,
                sent_at: r.sent_at,
                delivered_at: r.delivered_at,
                failed_at: r.failed_at,
            })
            .collect())
    })
    .await
}

/// Puts a failed delivery (a dead letter) back in the queue.
pub async fn retry_delivery(
    state: &NotificationsState,
    caller: &Caller,
    id: Uuid,
) -> ApiResult<()> {
    audited(
        caller,
        "notification.delivery_retried",
        "notification_delivery",
        id.to_string(),
        async |conn| {
            if !repo::requeue(conn, id).await? {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    "only a failed delivery can be retried",
                ));
            }
            Ok(())
        },
    )
    .await?;
    let _ = state.nudge.send(caller.tenant.0.clone());
    Ok(())
}

pub async fn analytics(
    db: &TenantDb,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ApiResult<Vec<Stat>> {
    if to <= from || to - from > Duration::days(366) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "`to` must follow `from`, at most 366 days apart",
        ));
    }
    let rows = db
        .read(async |conn| Ok::<_, ApiError>(repo::stats(conn, from, to).await?))
        .await?;
    let mut out: BTreeMap<(String, Channel), Stat> = BTreeMap::new();
    for r in rows {
        let Some(channel) = Channel::parse(&r.channel) else {
            continue;
        };
        let s = out
            .entry((r.category.clone(), channel))
            .or_insert_with(|| Stat {
                category: r.category.clone(),
                channel,
                total: 0,
                sent: 0,
                delivered: 0,
                failed: 0,
                pending: 0,
                suppressed: 0,
                read: 0,
                read_rate: None,
            });
        match r.status.as_str() {
            "read" => {
                s.read += r.n;
                continue;
            }
            "sent" => s.sent += r.n,
            "delivered" => s.delivered += r.n,
            "failed" | "bounced" => s.failed += r.n,
            "queued" | "held" | "digested" => s.pending += r.n,
            _ => s.suppressed += r.n,
        }
        s.total += r.n;
    }
    Ok(out
        .into_values()
        .map(|mut s| {
            if s.channel == Channel::InApp && s.total > 0 {
                s.read_rate = Some(s.read as f64 / s.total as f64);
            }
            s
        })
        .collect())
}

// ---- inbox -----------------------------------------------------------------------------

pub fn item_view(r: repo::ItemRow) -> InboxItem {
    InboxItem {
        id: r.id,
        notification_id: r.notification_id,
        category: r.category,
        title: r.title,
        body: r.body,
        data: r.data,
        created_at: r.created_at,
        read_at: r.read_at,
        archived_at: r.archived_at,
    }
}

pub async fn inbox(
    db: &TenantDb,
    user: Uuid,
    filter: &str,
    after: Option<Uuid>,
    limit: i64,
) -> ApiResult<Vec<InboxItem>> {
    if !["all", "unread", "read", "archived"].contains(&filter) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "status is one of all, unread, read, archived",
        ));
    }
    let rows = db
        .read(async |conn| {
            Ok::<_, ApiError>(repo::inbox_page(conn, user, filter, after, limit).await?)
        })
        .await?;
    Ok(rows.into_iter().map(item_view).collect())
}

pub async fn count(db: &TenantDb, user: Uuid) -> ApiResult<InboxCount> {
    db.read(async |conn| {
        Ok::<_, ApiError>(InboxCount {
            unread: repo::unread(conn, user, false).await?,
            last_event: repo::last_event(conn, user).await?,
        })
    })
    .await
}

/// Marks one item `read`, `unread`, `archived` or `unarchived`; answers the new count.
pub async fn change(
    state: &NotificationsState,
    caller: &Caller,
    item: Uuid,
    kind: &str,
) -> ApiResult<InboxCount> {
    let tenant = &caller.tenant.0;
    let user = caller.user.user.id.0;
    let count = tenant
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            // The counter's lock orders this user's inbox changes.
            let before = repo::unread(conn, user, true).await?;
            if !repo::has_item(conn, user, item).await? {
                return Err(ApiError::not_found("inbox item"));
            }
            let unread = match repo::change_item(conn, user, item, kind).await? {
                Some(delta) => {
                    repo::inbox_event(conn, user, kind, Some(item), delta, false).await?
                }
                None => before,
            };
            Ok::<_, ApiError>(InboxCount {
                unread,
                last_event: repo::last_event(conn, user).await?,
            })
        })
        .await?;
    state.announce(tenant.tenant.id, &[user]).await;
    Ok(count)
}

pub async fn read_all(state: &NotificationsState, caller: &Caller) -> ApiResult<InboxCount> {
    let tenant = &caller.tenant.0;
    let user = caller.user.user.id.0;
    let count = tenant
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            repo::unread(conn, user, true).await?;
            let changed = repo::read_all(conn, user).await?;
            if changed > 0 {
                repo::inbox_event(conn, user, "all_read", None, 0, true).await?;
            }
            Ok::<_, ApiError>(InboxCount {
                unread: 0,
                last_event: repo::last_event(conn, user).await?,
            })
        })
        .await?;
    state.announce(tenant.tenant.id, &[user]).await;
    Ok(count)
}

/// A user's inbox events after `seq` (items attached to `created` events).
pub async fn events(db: &TenantDb, user: Uuid, seq: i64, limit: i64) -> ApiResult<Vec<InboxEvent>> {
    db.read(async |conn| {
        let rows = repo::events_after(conn, user, seq, limit).await?;
        let ids: Vec<Uuid> = rows
            .iter()
            .filter(|r| r.kind == "created")
            .filter_map(|r| r.item_id)
            .collect();
        let items = repo::items(conn, user, &ids).await?;
        Ok::<_, ApiError>(
            rows.into_iter()
                .map(|r| InboxEvent {
                    item: (r.kind == "created")
                        .then(|| {
                            items
                                .iter()
                                .find(|i| Some(i.id) == r.item_id)
                                .cloned()
                                .map(item_view)
                        })
                        .flatten(),
                    seq: r.seq,
                    kind: r.kind,
                    item_id: r.item_id,
                    unread: r.unread,
                    at: r.at,
                })
                .collect(),
        )
    })
    .await
}

// ---- event rules -----------------------------------------------------------------------

pub fn rule_view(r: repo::RuleRow) -> RuleView {
    let audience: Value = r.audience;
    RuleView {
        id: r.id,
        rule: RuleInput {
            topic: r.topic,
            category: r.category,
            audience: serde_json::from_value(audience.get("fixed").cloned().unwrap_or_default())
                .unwrap_or_default(),
            users_from: serde_json::from_value(
                audience.get("users_from").cloned().unwrap_or_default(),
            )
            .unwrap_or_default(),
            data: serde_json::from_value(r.data).unwrap_or_default(),
        },
        enabled: r.enabled,
        created_at: r.created_at,
    }
}

pub async fn rules(db: &TenantDb) -> ApiResult<Vec<RuleView>> {
    let rows = db
        .read(async |conn| Ok::<_, ApiError>(repo::rules(conn).await?))
        .await?;
    Ok(rows.into_iter().map(rule_view).collect())
}

pub async fn create_rule(caller: &Caller, input: RuleInput) -> ApiResult<RuleView> {
    let db = &caller.tenant.0.db;
    let mut errors = Vec::new();
    if input.topic.is_empty() || input.topic.len() > 200 || input.topic.starts_with("notification.")
    {
        errors.push(field(
            "/topic",
            "1 to 200 characters, not a notification topic",
        ));
    }
    if input.audience.is_empty() && input.users_from.is_empty() {
        errors.push(field("/audience", "a fixed audience or users_from"));
    }
    for (i, p) in input.users_from.iter().enumerate() {
        if !p.starts_with('/') {
            errors.push(field(format!("/users_from/{i}"), "a JSON pointer"));
        }
    }
    let row = db
        .transaction(async |tx| {
            let conn = tx.conn();
            match category_in(conn, &input.category).await? {
                None => errors.push(field("/category", "no such category")),
                Some(cat) => {
                    for (k, v) in &input.data {
                        let ok = match (v.get("from"), v.get("value")) {
                            (Some(Value::String(p)), None) => p.starts_with('/') || p.is_empty(),
                            (None, Some(_)) => true,
                            _ => false,
                        } && v.as_object().is_some_and(|o| o.len() == 1);
                        if !cat.variables.contains_key(k) {
                            errors.push(field(
                                format!("/data/{k}"),
                                "not a variable of this category",
                            ));
                        } else if !ok {
                            errors.push(field(
                                format!("/data/{k}"),
                                "{\"from\": \"/pointer\"} or {\"value\": …}",
                            ));
                        }
                    }
                }
            }
            for item in repo::missing(conn, &input.audience).await? {
                errors.push(field(format!("/audience/{item}"), "does not exist"));
            }
            if !errors.is_empty() {
                return Err(ApiError::validation(std::mem::take(&mut errors)));
            }
            let row = repo::RuleRow {
                id: Uuid::now_v7(),
                topic: input.topic.clone(),
                category: input.category.clone(),
                audience: json!({"fixed": input.audience, "users_from": input.users_from}),
                data: serde_json::to_value(&input.data).unwrap_or_else(|_| json!({})),
                enabled: true,
                created_by: Some(caller.user.user.id.0),
                created_at: Utc::now(),
            };
            repo::insert_rule(conn, &row).await?;
            audit::record(
                conn,
                &caller.actor,
                Change {
                    action: "notification.rule_created",
                    target_type: "notification_rule",
                    target_id: Some(row.id.to_string()),
                    data: json!({"topic": row.topic, "category": row.category}),
                },
            )
            .await?;
            Ok::<_, ApiError>(row)
        })
        .await?;
    Ok(rule_view(row))
}

pub async fn delete_rule(caller: &Caller, id: Uuid) -> ApiResult<()> {
    audited(
        caller,
        "notification.rule_deleted",
        "notification_rule",
        id.to_string(),
        async |conn| {
            if !repo::delete_rule(conn, id).await? {
                return Err(ApiError::not_found("notification rule"));
            }
            Ok(())
        },
    )
    .await
}

/// The platform's own rules, applying from `since`: the inviter hears that an invitation was
/// accepted (category `invitation`, which the tenant and each user may tune like any other).
pub fn platform_rules(since: DateTime<Utc>) -> Vec<RuleView> {
    let disabled = RuleView {
        id: Uuid::from_u128(1),
        rule: RuleInput {
            topic: "webhook.endpoint_disabled".into(),
            category: "system".into(),
            audience: super::Audience {
                roles: vec!["owner".into(), "admin".into()],
                ..Default::default()
            },
            users_from: vec!["/payload/created_by".into()],
            data: [
                (
                    "title".to_string(),
                    json!({"value": "A webhook endpoint was disabled"}),
                ),
                ("body".to_string(), json!({"from": "/payload/url"})),
            ]
            .into_iter()
            .collect(),
        },
        enabled: true,
        created_at: since,
    };
    vec![
        disabled,
        RuleView {
            id: Uuid::nil(),
            rule: RuleInput {
                topic: "invitation.accepted".into(),
                category: "invitation".into(),
                audience: super::Audience::default(),
                users_from: vec!["/payload/invited_by".into()],
                data: [
                    (
                        "title".to_string(),
                        json!({"value": "Your invitation was accepted"}),
                    ),
                    ("body".to_string(), json!({"from": "/payload/email"})),
                ]
                .into_iter()
                .collect(),
            },
            enabled: true,
            created_at: since,
        },
    ]
}

/// A user id as events carry it (`usr_…` or a bare UUID).
fn user_id(s: &str) -> Option<crate::ids::UserId> {
    s.parse::<crate::ids::UserId>()
        .ok()
        .or_else(|| s.parse::<Uuid>().ok().map(crate::ids::UserId))
}

/// The send request a rule makes of an event (`None` when it names nobody).
pub fn rule_request(rule: &RuleView, event: &crate::outbox::Event) -> Option<SendRequest> {
    let doc = json!({
        "topic": event.topic,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "payload": event.payload,
    });
    let mut audience = rule.rule.audience.clone();
    for p in &rule.rule.users_from {
        match doc.pointer(p) {
            Some(Value::String(s)) => audience.users.extend(user_id(s)),
            Some(Value::Array(a)) => audience
                .users
                .extend(a.iter().filter_map(|v| user_id(v.as_str()?))),
            _ => {}
        }
    }
    audience.users.sort();
    audience.users.dedup();
    if audience.is_empty() {
        return None;
    }
    let data: serde_json::Map<String, Value> = rule
        .rule
        .data
        .iter()
        .filter_map(|(k, v)| {
            let value = match (v.get("from"), v.get("value")) {
                (Some(Value::String(p)), _) => doc.pointer(p).cloned()?,
                (_, Some(v)) => v.clone(),
                _ => return None,
            };
            Some((k.clone(), value))
        })
        .collect();
    Some(SendRequest {
        category: rule.rule.category.clone(),
        audience,
        data: Value::Object(data),
        channels: None,
        send_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(topic: &str, payload: Value) -> crate::outbox::Event {
        crate::outbox::Event {
            seq: 1,
            txid: 1,
            topic: topic.into(),
            aggregate_type: "invitation".into(),
            aggregate_id: "inv_1".into(),
            payload,
            at: Utc::now(),
        }
    }

    #[test]
    fn a_disabled_webhook_endpoint_is_told_to_admins_and_its_creator() {
        let rules = platform_rules(Utc::now());
        let rule = rules
            .iter()
            .find(|r| r.rule.topic == "webhook.endpoint_disabled")
            .unwrap();
        let creator = Uuid::now_v7();
        let req = rule_request(
            rule,
            &event(
                "webhook.endpoint_disabled",
                json!({"endpoint_id": Uuid::now_v7(), "url": "https://hooks.example.test/x",
                       "reason": "gone", "created_by": creator}),
            ),
        )
        .expect("a notification");
        assert_eq!(req.category, "system");
        assert_eq!(req.audience.roles, ["owner", "admin"]);
        assert_eq!(req.audience.users, vec![crate::ids::UserId(creator)]);
        assert_eq!(req.data["body"], "https://hooks.example.test/x");
    }

    #[test]
    fn the_inviter_hears_of_an_accepted_invitation() {
        let rules = platform_rules(Utc::now());
        let inviter = crate::ids::UserId(Uuid::now_v7());
        let rule = rules
            .iter()
            .find(|r| r.rule.topic == "invitation.accepted")
            .unwrap();
        let req = rule_request(
            rule,
            &event(
                "invitation.accepted",
                json!({"email": "ada@example.test", "invited_by": inviter.to_string()}),
            ),
        )
        .expect("a notification");
        assert_eq!(req.category, "invitation");
        assert_eq!(req.audience.users, vec![inviter]);
        assert_eq!(req.data["title"], "Your invitation was accepted");
        assert_eq!(req.data["body"], "ada@example.test");
        // An invitation nobody sent (the platform's) notifies nobody.
        assert!(
            rule_request(
                rule,
                &event("invitation.accepted", json!({"invited_by": null}))
            )
            .is_none()
        );
    }

    #[test]
    fn rules_take_users_from_strings_arrays_and_bare_uuids() {
        let a = Uuid::now_v7();
        let b = crate::ids::UserId(Uuid::now_v7());
        let rule = RuleView {
            id: Uuid::nil(),
            rule: RuleInput {
                topic: "x".into(),
                category: "system".into(),
                audience: super::super::Audience::default(),
                users_from: vec![
                    "/payload/one".into(),
                    "/payload/many".into(),
                    "/payload/none".into(),
                ],
                data: BTreeMap::new(),
            },
            enabled: true,
            created_at: Utc::now(),
        };
        let req = rule_request(
            &rule,
            &event(
                "x",
                json!({"one": a.to_string(), "many": [b.to_string(), "junk", a.to_string()]}),
            ),
        )
        .unwrap();
        let mut want = vec![crate::ids::UserId(a), b];
        want.sort();
        assert_eq!(req.audience.users, want);
    }

    #[test]
    fn unsubscribe_tokens_are_bound_to_tenant_user_and_category() {
        let (t, u) = (Uuid::now_v7(), Uuid::now_v7());
        let token = unsubscribe_token("secret", t, u, "mention");
        assert_eq!(token, unsubscribe_token("secret", t, u, "mention"));
        assert_ne!(
            token,
            unsubscribe_token("secret", Uuid::now_v7(), u, "mention")
        );
        assert_ne!(token, unsubscribe_token("other", t, u, "mention"));
        assert_ne!(token, unsubscribe_token("secret", t, u, "security"));
    }
}
