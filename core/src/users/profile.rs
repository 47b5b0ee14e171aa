//! A user's profile beyond identity: custom attributes checked against the tenant's attribute
//! schema (and the rule of which attributes users may edit on themselves), and preferences
//! (locale, time zone, notification defaults), typed and validated.
//!
//! **Invariants:** every attribute write is checked against the schema as it is when written,
//! and every problem is reported in one 422; a user editing themself may touch only the
//! attributes the schema marks self-editable; each change is audited with its before and after
//! in its transaction. Never runs SQL itself (`repo` does) and never touches HTTP.

use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use super::AttributeSchema;
use super::repo;
use crate::audit::{self, Actor, Change};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError, found};
use crate::ids::UserId;

/// Largest attribute schema, and largest attributes document of one user.
const SCHEMA_MAX_BYTES: usize = 64 * 1024;
const ATTRIBUTES_MAX_BYTES: usize = 16 * 1024;

/// A new attribute schema.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.users.AttributeSchemaInput"))]
pub struct AttributeSchemaInput {
    pub schema: Value,
    #[serde(default)]
    pub self_editable: Vec<String>,
}

/// A user's attributes.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.users.Attributes"))]
pub struct Attributes {
    pub user_id: UserId,
    pub attributes: Value,
}

/// Notification defaults (the channels a user wants by default).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.users.NotificationDefaults"))]
pub struct NotificationDefaults {
    pub email: bool,
    pub in_app: bool,
}

/// A user's preferences, with the platform's defaults filled in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.users.Preferences"))]
pub struct Preferences {
    /// A language tag such as `en`, `de` or `pt-BR`.
    pub locale: String,
    /// An IANA time zone such as `Europe/Berlin`.
    pub time_zone: String,
    pub notifications: NotificationDefaults,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            locale: "en".into(),
            time_zone: "UTC".into(),
            notifications: NotificationDefaults {
                email: true,
                in_app: true,
            },
        }
    }
}

/// Preferences to change (absent fields stay).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.users.PreferencesPatch"))]
pub struct PreferencesPatch {
    #[serde(default)]
    pub locale: Option<String>,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub notifications: Option<NotificationDefaults>,
}

fn field(pointer: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        pointer: pointer.into(),
        message: message.into(),
    }
}

pub async fn schema(db: &TenantDb) -> ApiResult<AttributeSchema> {
    let stored = db
        .transaction(async |tx| Ok::<_, ApiError>(repo::attribute_schema(tx.conn()).await?))
        .await?;
    Ok(stored.unwrap_or(AttributeSchema {
        schema: json!({}),
        self_editable: Vec::new(),
        updated_at: None,
    }))
}

/// Replaces the attribute schema (checked: a valid JSON Schema of an object; self-editable
/// names are top-level property names). Existing attributes are not re-checked: the schema
/// applies to writes from now on.
pub async fn put_schema(
    db: &TenantDb,
    actor: &Actor,
    input: &AttributeSchemaInput,
) -> ApiResult<AttributeSchema> {
    let mut errors =
        crate::json_schema::check_object_schema(&input.schema, "/schema", SCHEMA_MAX_BYTES);
    let properties = input.schema.get("properties").and_then(Value::as_object);
    for (i, name) in input.self_editable.iter().enumerate() {
        if !properties.is_some_and(|p| p.contains_key(name)) {
            errors.push(field(
                format!("/self_editable/{i}"),
                format!("{name:?} is not a property of the schema"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    db.transaction(async |tx| {
        let conn = tx.conn();
        let saved = repo::put_attribute_schema(conn, &input.schema, &input.self_editable).await?;
        audit::record(
            conn,
            actor,
            Change {
                action: "user.attribute_schema_updated",
                target_type: "user_attribute_schema",
                target_id: None,
                data: json!({"schema": input.schema, "self_editable": input.self_editable}),
            },
        )
        .await?;
        Ok::<_, ApiError>(saved)
    })
    .await
}

pub async fn attributes(db: &TenantDb, user: UserId) -> ApiResult<Attributes> {
    let attributes = db
        .transaction(async |tx| Ok::<_, ApiError>(repo::attributes(tx.conn(), user, false).await?))
        .await?;
    Ok(Attributes {
        user_id: user,
        attributes: found(attributes, "user")?,
    })
}

/// RFC 7386 merge patch of `patch` onto `target`.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Applies a JSON merge patch to a user's attributes. `as_admin` callers may change any
/// attribute; others (a user on themself) only self-editable ones (403 naming the others).
/// The result is checked against the schema; every problem in one 422.
pub async fn patch_attributes(
    db: &TenantDb,
    actor: &Actor,
    user: UserId,
    patch: &Value,
    as_admin: bool,
) -> ApiResult<Attributes> {
    let Some(changes) = patch.as_object() else {
        return Err(ApiError::validation(vec![field(
            "",
            "must be a JSON object (a merge patch)",
        )]));
    };
    db.transaction(async |tx| {
        let conn = tx.conn();
        let current = found(repo::attributes(conn, user, true).await?, "user")?;
        let schema = repo::attribute_schema(conn).await?;
        if !as_admin {
            let editable = schema
                .as_ref()
                .map(|s| s.self_editable.clone())
                .unwrap_or_default();
            let refused: Vec<&String> = changes.keys().filter(|k| !editable.contains(k)).collect();
            if !refused.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "you may not change {} on yourself (requires users.update.tenant)",
                        refused
                            .iter()
                            .map(|k| format!("{k:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        let mut next = current.clone();
        merge(&mut next, patch);
        let mut errors = Vec::new();
        if serde_json::to_vec(&next).map_or(usize::MAX, |v| v.len()) > ATTRIBUTES_MAX_BYTES {
            errors.push(field(
                "",
                format!("attributes must be at most {ATTRIBUTES_MAX_BYTES} bytes"),
            ));
        }
        if let Some(s) = &schema {
            let validator = crate::json_schema::compile(&s.schema).map_err(|e| {
                ApiError::internal(format!("the saved attribute schema does not compile: {e}"))
            })?;
            errors.extend(crate::json_schema::violations(&validator, &next, ""));
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        repo::set_attributes(conn, user, &next).await?;
        audit::record(
            conn,
            actor,
            Change {
                action: "user.attributes_updated",
                target_type: "user",
                target_id: Some(user.to_string()),
                data: json!({"before": current, "after": next}),
            },
        )
        .await?;
        Ok(Attributes {
            user_id: user,
            attributes: next,
        })
    })
    .await
}

/// The user's preferences with defaults for what was never set.
pub async fn preferences(db: &TenantDb, user: UserId) -> ApiResult<Preferences> {
    let stored = db
        .transaction(async |tx| Ok::<_, ApiError>(repo::preferences(tx.conn(), user, false).await?))
        .await?;
    Ok(with_defaults(found(stored, "user")?))
}

fn with_defaults(stored: Value) -> Preferences {
    let mut all = serde_json::to_value(Preferences::default()).expect("preferences serialise");
    merge(&mut all, &stored);
    serde_json::from_value(all).unwrap_or_default()
}

/// Whether `locale` is a language tag such as `en`, `de` or `pt-BR`.
pub fn locale_ok(locale: &str) -> bool {
    let (lang, region) = match locale.split_once('-') {
        Some((l, r)) => (l, Some(r)),
        None => (locale, None),
    };
    (2..=3).contains(&lang.len())
        && lang.bytes().all(|b| b.is_ascii_lowercase())
        && region.is_none_or(|r| r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()))
}

/// Changes the user's preferences (each checked: a language tag, an IANA time zone).
pub async fn patch_preferences(
    db: &TenantDb,
    actor: &Actor,
    user: UserId,
    patch: &PreferencesPatch,
) -> ApiResult<Preferences> {
    let mut errors = Vec::new();
    if patch.locale.as_deref().is_some_and(|l| !locale_ok(l)) {
        errors.push(field(
            "/locale",
            "must be a language tag such as en, de or pt-BR",
        ));
    }
    if patch
        .time_zone
        .as_deref()
        .is_some_and(|z| z.parse::<chrono_tz::Tz>().is_err())
    {
        errors.push(field(
            "/time_zone",
            "must be an IANA time zone such as Europe/Berlin or UTC",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    db.transaction(async |tx| {
        let conn = tx.conn();
        let before = with_defaults(found(repo::preferences(conn, user, true).await?, "user")?);
        let mut after = before.clone();
        if let Some(l) = &patch.locale {
            after.locale = l.clone();
        }
        if let Some(z) = &patch.time_zone {
            after.time_zone = z.clone();
        }
        if let Some(n) = &patch.notifications {
            after.notifications = n.clone();
        }
        let stored = serde_json::to_value(&after).map_err(ApiError::internal)?;
        repo::set_preferences(conn, user, &stored).await?;
        audit::record(
            conn,
            actor,
            Change {
                action: "user.preferences_updated",
                target_type: "user",
                target_id: Some(user.to_string()),
                data: json!({"before": before, "after": after}),
            },
        )
        .await?;
        Ok::<_, ApiError>(after)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1, 2]});
        merge(&mut doc, &json!({"a": [3], "n": null}));
        assert_eq!(doc, json!({"a": [3]}));
    }

    #[test]
    fn preferences_fill_in_defaults() {
        let p = with_defaults(json!({"time_zone": "Europe/Berlin"}));
        assert_eq!(p.time_zone, "Europe/Berlin");
        assert_eq!(p.locale, "en");
        assert!(p.notifications.email);
        assert_eq!(with_defaults(json!({})), Preferences::default());
    }

    #[test]
    fn time_zones_are_iana_names() {
        assert!("Europe/Berlin".parse::<chrono_tz::Tz>().is_ok());
        assert!("UTC".parse::<chrono_tz::Tz>().is_ok());
        assert!("Mars/Olympus".parse::<chrono_tz::Tz>().is_err());
    }
}
