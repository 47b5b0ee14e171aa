//! The platform's catalogue of tenant settings: every group and key with its JSON Schema and
//! default, which keys are read-only (shown, never written by a tenant), and the checks JSON
//! Schema cannot express (CSS colours, IANA time zones, email domains). Tenant-defined
//! settings live under `custom`, checked against the tenant's own schema.
//!
//! Owns what a setting *is*; never reads or writes storage and never decides who may change
//! what.

use serde_json::{Map, Value, json};

use crate::config::InvitationsConfig;
use crate::error::FieldError;

/// Keys a tenant can see but not write: the server fills them in.
pub const READ_ONLY: &[&str] = &["/branding/logo", "/compliance/data_residency"];

/// The catalogue: one JSON Schema for every platform setting, and their defaults.
pub struct Catalogue {
    schema: Value,
    validator: jsonschema::Validator,
    defaults: Value,
}

fn nullable(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

impl Catalogue {
    /// The catalogue with defaults taken from the platform's configuration where it has them.
    pub fn new(config: &InvitationsConfig) -> Self {
        let colour = json!({"type": "string", "maxLength": 64, "x-format": "css-color"});
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "general": {
                    "type": "object", "additionalProperties": false,
                    "description": "The tenant's name, language, time zone and contact",
                    "properties": {
                        "display_name": {"type": "string", "maxLength": 100},
                        "locale": {"type": "string", "pattern": "^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"},
                        "timezone": {"type": "string", "maxLength": 64, "x-format": "iana-timezone"},
                        "date_format": {"enum": ["iso", "us", "eu"]},
                        "support_email": nullable(json!({"type": "string", "format": "email", "maxLength": 254}))
                    }
                },
                "branding": {
                    "type": "object", "additionalProperties": false,
                    "description": "Name, colours and logo shown to the tenant's users",
                    "properties": {
                        "name": {"type": "string", "maxLength": 100},
                        "primary_color": colour,
                        "secondary_color": colour,
                        "accent_color": colour,
                        "logo": nullable(json!({
                            "type": "object",
                            "description": "Read-only: set by uploading to /v1/settings/branding/logo",
                            "properties": {"url": {"type": "string"}, "etag": {"type": "string"}}
                        }))
                    }
                },
                "notifications": {
                    "type": "object", "additionalProperties": false,
                    "description": "Defaults for notifications a user has not chosen for themselves",
                    "properties": {
                        "default_channels": {
                            "type": "array", "uniqueItems": true, "maxItems": 4,
                            "items": {"enum": ["email", "in_app", "sms", "push"]}
                        },
                        "digest": {"enum": ["off", "daily", "weekly"]},
                        "quiet_hours": nullable(json!({
                            "type": "object", "additionalProperties": false,
                            "required": ["start", "end"],
                            "properties": {
                                "start": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
                                "end": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"}
                            }
                        }))
                    }
                },
                "integrations": {
                    "type": "object", "additionalProperties": false,
                    "description": "The tenant's outgoing calls (webhook deliveries, plugin HTTP): each value can only make them shorter, gentler or narrower than the platform's (null: the platform's)",
                    "properties": {
                        "webhook_timeout_ms": nullable(json!({"type": "integer", "minimum": 100, "maximum": 30000,
                            "description": "How long one delivery may take, at most the platform's"})),
                        "webhook_max_attempts": nullable(json!({"type": "integer", "minimum": 1, "maximum": 20,
                            "description": "Attempts before a message is a dead letter, at most the platform schedule's"})),
                        "webhook_retry_base_ms": nullable(json!({"type": "integer", "minimum": 100, "maximum": 600000,
                            "description": "The shortest wait before a retry (the platform's schedule where it waits longer)"})),
                        "allowed_hosts": {
                            "type": "array", "maxItems": 100, "uniqueItems": true,
                            "description": "The only hosts (and their subdomains) webhooks and plugins may call; empty: any the platform allows",
                            "items": {"type": "string", "maxLength": 253, "x-format": "domain"}
                        }
                    }
                },
                "api": {
                    "type": "object", "additionalProperties": false,
                    "description": "The tenant's request rate per user and daily request quota (null: the platform's)",
                    "properties": {
                        "rate_limit": {
                            "type": "object", "additionalProperties": false,
                            "properties": {
                                "per_user_per_sec": nullable(json!({"type": "number", "exclusiveMinimum": 0, "maximum": 100000})),
                                "per_user_burst": nullable(json!({"type": "integer", "minimum": 1, "maximum": 1000000}))
                            }
                        },
                        "quota": {
                            "type": "object", "additionalProperties": false,
                            "properties": {
                                "requests_per_day": nullable(json!({"type": "integer", "minimum": 1, "maximum": 1_000_000_000u64}))
                            }
                        }
                    }
                },
                "compliance": {
                    "type": "object", "additionalProperties": false,
                    "description": "Audit retention; where the tenant's data lives (read-only)",
                    "properties": {
                        "audit_retention_days": nullable(json!({"type": "integer", "minimum": 1, "maximum": 36500})),
                        "data_residency": {"type": "string", "description": "Read-only: the tenant's region"}
                    }
                },
                "invitations": {
                    "type": "object", "additionalProperties": false,
                    "description": "How long invitations last, which addresses may be invited, and how many an hour",
                    "properties": {
                        "expiry_hours": {"type": "integer", "minimum": 1, "maximum": 2160},
                        "per_inviter_per_hour": nullable(json!({"type": "integer", "minimum": 1, "maximum": 1_000_000,
                            "description": "Lowers the platform's hourly limit per inviter (null: the platform's)"})),
                        "per_tenant_per_hour": nullable(json!({"type": "integer", "minimum": 1, "maximum": 1_000_000,
                            "description": "Lowers the platform's hourly limit for the tenant (null: the platform's)"})),
                        "allowed_domains": {
                            "type": "array", "maxItems": 100, "uniqueItems": true,
                            "items": {"type": "string", "maxLength": 255, "x-format": "domain-or-wildcard"}
                        }
                    }
                },
                "flags": {
                    "type": "object", "additionalProperties": false,
                    "description": "Feature flags: environments and the context attributes rules may use",
                    "properties": {
                        "environments": {
                            "type": "array", "minItems": 1, "maxItems": 10, "uniqueItems": true,
                            "items": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,31}$"}
                        },
                        "context_attributes": {
                            "type": "object", "maxProperties": 100,
                            "propertyNames": {"pattern": "^[A-Za-z][A-Za-z0-9_.-]{0,63}$"},
                            "additionalProperties": {"enum": ["string", "number", "boolean", "array"]}
                        }
                    }
                },
                "custom": {
                    "type": "object",
                    "description": "Tenant-defined settings, checked against the tenant's custom schema"
                }
            }
        });
        let defaults = json!({
            "general": {"display_name": "", "locale": "en", "timezone": "UTC", "date_format": "iso", "support_email": null},
            "branding": {"name": "", "primary_color": "#1f6feb", "secondary_color": "#6e7781", "accent_color": "#bf3989", "logo": null},
            "notifications": {"default_channels": ["email", "in_app"], "digest": "off", "quiet_hours": null},
            "integrations": {"webhook_timeout_ms": null, "webhook_max_attempts": null, "webhook_retry_base_ms": null, "allowed_hosts": []},
            "api": {
                "rate_limit": {"per_user_per_sec": null, "per_user_burst": null},
                "quota": {"requests_per_day": null}
            },
            "compliance": {"audit_retention_days": null, "data_residency": ""},
            "invitations": {"expiry_hours": config.default_expiry_hours, "allowed_domains": [],
                            "per_inviter_per_hour": null, "per_tenant_per_hour": null},
            "flags": {"environments": ["production", "staging"], "context_attributes": {}},
            "custom": {}
        });
        let validator =
            crate::json_schema::compile(&schema).expect("the settings catalogue compiles");
        Catalogue {
            schema,
            validator,
            defaults,
        }
    }

    /// The catalogue's JSON Schema.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Every setting's default.
    pub fn defaults(&self) -> &Value {
        &self.defaults
    }

    /// Every problem of a tenant's `values` (not yet merged with defaults): unknown keys,
    /// read-only keys, schema violations, and the checks beyond JSON Schema; `custom` against
    /// `custom_schema`. Pointers are relative to the settings document (`/branding/…`).
    pub fn check(
        &self,
        values: &Value,
        custom_schema: Option<&jsonschema::Validator>,
    ) -> Vec<FieldError> {
        let mut errors = Vec::new();
        unknown_keys(&self.schema, values, "", &mut errors);
        for path in READ_ONLY {
            if values.pointer(path).is_some() {
                errors.push(field(path, "is read-only"));
            }
        }
        if !errors.is_empty() {
            return errors;
        }
        errors.extend(crate::json_schema::violations(&self.validator, values, ""));
        formats(&self.schema, values, "", &mut errors);
        if let Some(custom) = values.get("custom") {
            match custom_schema {
                Some(v) => errors.extend(crate::json_schema::violations(v, custom, "/custom")),
                None => {
                    if let Some(obj) = custom.as_object() {
                        for key in obj.keys() {
                            errors.push(field(
                                &format!("/custom/{}", escape(key)),
                                "unknown setting: the tenant's custom schema does not define it",
                            ));
                        }
                    }
                }
            }
        }
        errors
    }
}

fn field(pointer: &str, message: &str) -> FieldError {
    FieldError {
        pointer: pointer.into(),
        message: message.into(),
    }
}

/// A key as a JSON pointer token.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Keys of `values` the schema does not declare, where it declares its properties.
fn unknown_keys(schema: &Value, values: &Value, at: &str, errors: &mut Vec<FieldError>) {
    let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        values.as_object(),
    ) else {
        return;
    };
    for (key, value) in obj {
        let here = format!("{at}/{}", escape(key));
        match props.get(key) {
            Some(sub) => unknown_keys(sub, value, &here, errors),
            None => errors.push(field(&here, "unknown setting")),
        }
    }
}

/// The `x-format` checks: CSS colours, IANA time zones, domains.
fn formats(schema: &Value, values: &Value, at: &str, errors: &mut Vec<FieldError>) {
    if let Some(format) = schema.get("x-format").and_then(Value::as_str) {
        if let Some(s) = values.as_str() {
            let (ok, what) = match format {
                "css-color" => (
                    css_color(s),
                    "must be a CSS colour (#rgb, #rrggbb, rgb(), hsl() or a colour name)",
                ),
                "iana-timezone" => (
                    s.parse::<chrono_tz::Tz>().is_ok(),
                    "must be an IANA time zone such as Europe/Berlin",
                ),
                "domain" => (
                    domain(s),
                    "must be a lowercase host name such as api.example.com",
                ),
                "domain-or-wildcard" => (
                    domain(s.strip_prefix("*.").unwrap_or(s)),
                    "must be a lowercase domain such as example.com or *.example.com",
                ),
                _ => (true, ""),
            };
            if !ok {
                errors.push(field(at, what));
            }
        }
        return;
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        values.as_object(),
    ) {
        for (key, value) in obj {
            if let Some(sub) = props.get(key) {
                formats(sub, value, &format!("{at}/{}", escape(key)), errors);
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), values.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            formats(items, v, &format!("{at}/{i}"), errors);
        }
    }
}

/// A lowercase DNS name with at least two labels.
pub fn domain(s: &str) -> bool {
    s.len() <= 253
        && s.contains('.')
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The CSS colour names (CSS Color Module Level 4), and `transparent`.
const COLOUR_NAMES: &[&str] = &[
    "aliceblue",
    "antiquewhite",
    "aqua",
    "aquamarine",
    "azure",
    "beige",
    "bisque",
    "black",
    "blanchedalmond",
    "blue",
    "blueviolet",
    "brown",
    "burlywood",
    "cadetblue",
    "chartreuse",
    "chocolate",
    "coral",
    "cornflowerblue",
    "cornsilk",
    "crimson",
    "cyan",
    "darkblue",
    "darkcyan",
    "darkgoldenrod",
    "darkgray",
    "darkgreen",
    "darkgrey",
    "darkkhaki",
    "darkmagenta",
    "darkolivegreen",
    "darkorange",
    "darkorchid",
    "darkred",
    "darksalmon",
    "darkseagreen",
    "darkslateblue",
    "darkslategray",
    "darkslategrey",
    "darkturquoise",
    "darkviolet",
    "deeppink",
    "deepskyblue",
    "dimgray",
    "dimgrey",
    "dodgerblue",
    "firebrick",
    "floralwhite",
    "forestgreen",
    "fuchsia",
    "gainsboro",
    "ghostwhite",
    "gold",
    "goldenrod",
    "gray",
    "green",
    "greenyellow",
    "grey",
    "honeydew",
    "hotpink",
    "indianred",
    "indigo",
    "ivory",
    "khaki",
    "lavender",
    "lavenderblush",
    "lawngreen",
    "lemonchiffon",
    "lightblue",
    "lightcoral",
    "lightcyan",
    "lightgoldenrodyellow",
    "lightgray",
    "lightgreen",
    "lightgrey",
    "lightpink",
    "lightsalmon",
    "lightseagreen",
    "lightskyblue",
    "lightslategray",
    "lightslategrey",
    "lightsteelblue",
    "lightyellow",
    "lime",
    "limegreen",
    "linen",
    "magenta",
    "maroon",
    "mediumaquamarine",
    "mediumblue",
    "mediumorchid",
    "mediumpurple",
    "mediumseagreen",
    "mediumslateblue",
    "mediumspringgreen",
    "mediumturquoise",
    "mediumvioletred",
    "midnightblue",
    "mintcream",
    "mistyrose",
    "moccasin",
    "navajowhite",
    "navy",
    "oldlace",
    "olive",
    "olivedrab",
    "orange",
    "orangered",
    "orchid",
    "palegoldenrod",
    "palegreen",
    "paleturquoise",
    "palevioletred",
    "papayawhip",
    "peachpuff",
    "peru",
    "pink",
    "plum",
    "powderblue",
    "purple",
    "rebeccapurple",
    "red",
    "rosybrown",
    "royalblue",
    "saddlebrown",
    "salmon",
    "sandybrown",
    "seagreen",
    "seashell",
    "sienna",
    "silver",
    "skyblue",
    "slateblue",
    "slategray",
    "slategrey",
    "snow",
    "springgreen",
    "steelblue",
    "tan",
    "teal",
    "thistle",
    "tomato",
    "transparent",
    "turquoise",
    "violet",
    "wheat",
    "white",
    "whitesmoke",
    "yellow",
    "yellowgreen",
];

/// Whether `s` is a CSS colour: a hex colour (3, 4, 6 or 8 digits), a colour name, or an
/// `rgb()`/`rgba()`/`hsl()`/`hsla()` function with numbers, percentages or angles in range.
pub fn css_color(s: &str) -> bool {
    let s = s.trim().to_ascii_lowercase();
    if let Some(hex) = s.strip_prefix('#') {
        return matches!(hex.len(), 3 | 4 | 6 | 8) && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    if COLOUR_NAMES.binary_search(&s.as_str()).is_ok() {
        return true;
    }
    let Some((name, rest)) = s.split_once('(') else {
        return false;
    };
    let Some(inner) = rest.strip_suffix(')') else {
        return false;
    };
    // Modern (space, optional "/ alpha") and legacy (comma) syntax.
    let (main, alpha) = match inner.split_once('/') {
        Some((m, a)) => (m, Some(a.trim())),
        None => (inner, None),
    };
    let mut parts: Vec<&str> = if main.contains(',') {
        main.split(',').map(str::trim).collect()
    } else {
        main.split_whitespace().collect()
    };
    let alpha = match alpha {
        Some(a) => Some(a),
        None if parts.len() == 4 => parts.pop(),
        None => None,
    };
    if parts.len() != 3 {
        return false;
    }
    let number = |p: &str, max: f64| -> bool {
        let (v, pct) = match p.strip_suffix('%') {
            Some(n) => (n, true),
            None => (p, false),
        };
        v.parse::<f64>()
            .is_ok_and(|n| n.is_finite() && n >= 0.0 && n <= if pct { 100.0 } else { max })
    };
    let alpha_ok = alpha.is_none_or(|a| number(a, 1.0));
    let ok = match name {
        "rgb" | "rgba" => parts.iter().all(|p| number(p, 255.0)),
        "hsl" | "hsla" => {
            let hue = parts[0].trim_end_matches("deg");
            hue.parse::<f64>().is_ok_and(f64::is_finite)
                && parts[1].ends_with('%')
                && parts[2].ends_with('%')
                && number(parts[1], 100.0)
                && number(parts[2], 100.0)
        }
        _ => false,
    };
    ok && alpha_ok
}

/// `patch` applied to `target` as an RFC 7396 JSON merge patch (`null` removes a key).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(patch_obj) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let obj = target.as_object_mut().expect("an object");
    for (key, value) in patch_obj {
        if value.is_null() {
            obj.remove(key);
        } else {
            merge_patch(obj.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// `values` laid over `defaults`: objects merge key by key, anything else replaces.
pub fn overlay(defaults: &Value, values: &Value) -> Value {
    match (defaults, values) {
        (Value::Object(d), Value::Object(v)) => {
            let mut out = d.clone();
            for (key, value) in v {
                let merged = match d.get(key) {
                    Some(dv) => overlay(dv, value),
                    None => value.clone(),
                };
                out.insert(key.clone(), merged);
            }
            Value::Object(out)
        }
        (_, v) => v.clone(),
    }
}

/// Drops empty objects left behind by a merge patch that removed every key of a group.
pub fn prune_empty(values: &mut Value) {
    if let Some(obj) = values.as_object_mut() {
        for v in obj.values_mut() {
            prune_empty(v);
        }
        obj.retain(|_, v| !v.as_object().is_some_and(Map::is_empty));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue() -> Catalogue {
        Catalogue::new(&InvitationsConfig::default())
    }

    #[test]
    fn colour_names_are_sorted_for_the_search() {
        assert!(COLOUR_NAMES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn css_colours_are_told_from_other_strings() {
        for good in [
            "#fff",
            "#FFFF",
            "#1f6feb",
            "#1f6feb80",
            "rebeccapurple",
            "Red",
            "rgb(0, 128, 255)",
            "rgba(0,0,0,0.5)",
            "rgb(0 128 255 / 50%)",
            "hsl(210deg 50% 40%)",
            "hsla(210, 50%, 40%, 0.3)",
            "transparent",
        ] {
            assert!(css_color(good), "{good}");
        }
        for bad in [
            "",
            "#ff",
            "#ggg",
            "#12345",
            "blurple",
            "rgb(300,0,0)",
            "rgb(0,0)",
            "rgb(0 0 0",
            "hsl(10, 50, 40)",
            "url(x)",
            "rgb(0,0,0,2)",
            "expression(alert(1))",
        ] {
            assert!(!css_color(bad), "{bad}");
        }
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let c = catalogue();
        let values = json!({
            "branding": {"primary_color": "not a colour", "accent_color": 7},
            "general": {"timezone": "Mars/Olympus"},
            "invitations": {"expiry_hours": 0, "allowed_domains": ["Example.COM"]},
        });
        let errors = c.check(&values, None);
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        for p in [
            "/branding/primary_color",
            "/branding/accent_color",
            "/general/timezone",
            "/invitations/expiry_hours",
            "/invitations/allowed_domains/0",
        ] {
            assert!(pointers.contains(&p), "{p} missing from {pointers:?}");
        }
    }

    #[test]
    fn unknown_and_read_only_keys_are_refused() {
        let c = catalogue();
        let errors = c.check(
            &json!({"general": {"colour": 1}, "nope": {}, "compliance": {"data_residency": "eu"}}),
            None,
        );
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert!(pointers.contains(&"/general/colour"));
        assert!(pointers.contains(&"/nope"));
        assert!(pointers.contains(&"/compliance/data_residency"));
        let custom = c.check(&json!({"custom": {"x": 1}}), None);
        assert_eq!(custom[0].pointer, "/custom/x");
    }

    #[test]
    fn the_defaults_pass_their_own_schema() {
        let c = catalogue();
        let mut d = c.defaults().clone();
        for p in READ_ONLY {
            let (parent, key) = p.rsplit_once('/').unwrap();
            d.pointer_mut(parent)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove(key);
        }
        assert!(c.check(&d, None).is_empty(), "{:?}", c.check(&d, None));
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut v, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(v, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
        let mut v = json!({"a": {"b": 1}});
        merge_patch(&mut v, &json!({"a": {"b": null}}));
        prune_empty(&mut v);
        assert_eq!(v, json!({}));
        assert_eq!(
            overlay(&json!({"a": {"b": 1, "c": 2}}), &json!({"a": {"c": 3}})),
            json!({"a": {"b": 1, "c": 3}})
        );
    }
}
