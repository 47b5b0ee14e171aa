//! The published event types: every outbox topic a tenant can subscribe an endpoint to, with
//! a description and the JSON Schema of the message's `data`. Filters name a type exactly, a
//! family (`resource.*`), a plugin's events (`plugin.<name>.*` or one kind), or `*`.
//!
//! Pure data and matching; what each feature emits is decided by the feature.

use serde_json::{Value, json};

/// One event type: name, description, the schema of `data`.
pub struct EventType {
    pub name: &'static str,
    pub description: &'static str,
    pub data: fn() -> Value,
}

fn version() -> Value {
    json!({"type": "object", "required": ["version"],
           "properties": {"version": {"type": "integer", "description": "the version after the change"}}})
}
fn plugin() -> Value {
    json!({"type": "object", "properties": {"version": {"type": "integer"}, "enabled": {"type": "boolean"}}})
}
fn invitation() -> Value {
    json!({"type": "object", "required": ["id", "email"], "properties": {
        "id": {"type": "string", "format": "uuid"}, "email": {"type": "string"},
        "invited_by": {"type": ["string", "null"], "format": "uuid"}, "data": {"type": "object"}}})
}
fn flag() -> Value {
    json!({"type": "object", "required": ["key", "version"], "properties": {
        "key": {"type": "string"}, "version": {"type": "integer"}, "generation": {"type": "integer"},
        "paths": {"type": "array", "items": {"type": "string"}}, "reason": {"type": ["string", "null"]}}})
}
fn settings() -> Value {
    json!({"type": "object", "required": ["version"], "properties": {
        "version": {"type": "integer"}, "paths": {"type": "array", "items": {"type": "string"}},
        "reason": {"type": ["string", "null"]}}})
}
fn user() -> Value {
    json!({"type": "object", "required": ["id", "status"], "properties": {
        "id": {"type": "string", "format": "uuid"},
        "status": {"type": "string", "enum": ["active", "deactivated", "deleted"]}}})
}
fn erased() -> Value {
    json!({"type": "object", "required": ["user_id"], "properties": {"user_id": {"type": "string", "format": "uuid"}}})
}
fn notification() -> Value {
    json!({"type": "object", "properties": {"category": {"type": "string"},
        "recipients": {"type": "integer"}, "source": {"type": "string"}}})
}
fn endpoint_disabled() -> Value {
    json!({"type": "object", "required": ["endpoint_id", "reason"], "properties": {
        "endpoint_id": {"type": "string", "format": "uuid"}, "url": {"type": "string"},
        "reason": {"type": "string"}}})
}
fn anything() -> Value {
    json!({"type": "object", "description": "what the plugin emitted"})
}

macro_rules! types {
    ($($name:literal => $desc:literal, $data:ident;)*) => {
        &[$(EventType { name: $name, description: $desc, data: $data }),*]
    };
}

/// Every event type, grouped by family.
pub const EVENT_TYPES: &[EventType] = types! {
    "resource.created" => "A resource was created; subject is the type and the resource id.", version;
    "resource.updated" => "A resource's data changed (also by a type migration).", version;
    "resource.deleted" => "A resource was deleted (it can be restored).", version;
    "resource.restored" => "A deleted resource was restored.", version;
    "resource.reverted" => "A resource was reverted to an earlier version.", version;
    "resource.shared" => "A resource was shared with a user or team.", version;
    "resource.unshared" => "A share of a resource was removed.", version;
    "resource.linked" => "A link from a resource to another was added.", version;
    "resource.unlinked" => "A link between resources was removed.", version;
    "resource.assigned" => "A resource was assigned to a user.", version;
    "resource.action" => "A plugin action ran on a resource.", version;
    "resource_type.created" => "A resource type was defined.", version;
    "resource_type.updated" => "A resource type changed (a new version).", version;
    "resource_type.deleted" => "A resource type was deleted.", version;
    "invitation.created" => "A user was invited.", invitation;
    "invitation.sent" => "An invitation mail was sent.", invitation;
    "invitation.resent" => "An invitation was sent again.", invitation;
    "invitation.opened" => "An invitation link was opened.", invitation;
    "invitation.accepted" => "An invitation was accepted.", invitation;
    "invitation.revoked" => "An invitation was revoked.", invitation;
    "invitation.expired" => "An invitation expired.", invitation;
    "invitation.delivery_failed" => "An invitation mail could not be delivered.", invitation;
    "flag.created" => "A feature flag was created.", flag;
    "flag.changed" => "A feature flag changed.", flag;
    "flag.deleted" => "A feature flag was deleted.", flag;
    "settings.changed" => "The tenant's settings changed.", settings;
    "user.created" => "A user appeared in the tenant (first sign-in, directory sync or an admin).", user;
    "user.updated" => "A user's profile, status, roles-relevant attributes or identity changed.", user;
    "user.deleted" => "A user was deleted.", user;
    "user.erased" => "A user's personal data was erased.", erased;
    "plugin.installed" => "A plugin was installed.", plugin;
    "plugin.configured" => "A plugin installation's configuration changed.", plugin;
    "plugin.enabled" => "A plugin installation was enabled.", plugin;
    "plugin.disabled" => "A plugin installation was disabled.", plugin;
    "plugin.upgraded" => "A plugin installation moved to a newer version.", plugin;
    "plugin.rolled_back" => "A plugin installation went back to its previous version.", plugin;
    "plugin.uninstalled" => "A plugin was uninstalled.", plugin;
    "notification.created" => "A notification was created.", notification;
    "webhook.endpoint_disabled" => "A webhook endpoint was disabled (gone, or failing too long).", endpoint_disabled;
};

/// The catalogue entry for events plugins emit, named `plugin.<plugin>.<kind>`.
pub const PLUGIN_EVENTS: EventType = EventType {
    name: "plugin.<plugin>.<kind>",
    description: "An event an integration or resource-type plugin emitted.",
    data: anything,
};

fn plugin_event(topic: &str) -> bool {
    topic
        .strip_prefix("plugin.")
        .and_then(|r| r.split_once('.'))
        .is_some_and(|(name, kind)| !name.is_empty() && !kind.is_empty())
}

/// Whether a filter is valid: a known type, a known family with `.*`, a plugin's events, or
/// `*`.
pub fn valid_filter(filter: &str) -> bool {
    if filter == "*" {
        return true;
    }
    if let Some(family) = filter.strip_suffix(".*") {
        if let Some(name) = family.strip_prefix("plugin.") {
            return !name.is_empty() && !name.contains('.') && name.len() <= 64;
        }
        return EVENT_TYPES.iter().any(|t| {
            t.name
                .strip_prefix(family)
                .is_some_and(|r| r.starts_with('.'))
        });
    }
    EVENT_TYPES.iter().any(|t| t.name == filter)
        || (plugin_event(filter)
            && filter.len() <= 128
            && filter
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_'))
}

/// Whether a topic passes an endpoint's filters (none = every topic).
pub fn wanted(filters: &[String], topic: &str) -> bool {
    filters.is_empty()
        || filters.iter().any(|f| {
            f == "*"
                || f == topic
                || f.strip_suffix(".*").is_some_and(|family| {
                    topic
                        .strip_prefix(family)
                        .is_some_and(|r| r.starts_with('.'))
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_name_types_families_or_plugins() {
        for ok in [
            "*",
            "resource.created",
            "resource.*",
            "invitation.*",
            "plugin.webhook.*",
            "plugin.crm.synced",
        ] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in [
            "resource.exploded",
            "nothing.*",
            "plugin..*",
            "plugin.*.x",
            "",
            "resource",
            "RESOURCE.created",
        ] {
            assert!(!valid_filter(bad), "{bad}");
        }
        let f = vec!["resource.*".to_string(), "flag.changed".to_string()];
        assert!(wanted(&f, "resource.created"));
        assert!(wanted(&f, "flag.changed"));
        assert!(!wanted(&f, "flag.created"));
        assert!(!wanted(&f, "resource_type.created"));
        assert!(wanted(&[], "anything.at_all"));
    }

    #[test]
    fn every_schema_is_an_object_schema() {
        for t in EVENT_TYPES {
            assert_eq!((t.data)()["type"], "object", "{}", t.name);
        }
    }
}
