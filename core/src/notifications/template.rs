//! Notification templates as pure rules: typed variables (declared per category), checking a
//! notification's data against them, checking a template before it is saved (syntax errors
//! and variables neither declared nor built in, each a field error), sample data for
//! previews, the built-in templates, and rendering (minijinja; the HTML part auto-escaped, the
//! others not).
//!
//! **Invariants:** a template sees only the category's declared variables and the built-ins
//! (`recipient.name`, `recipient.email`, `tenant.name`, `category.key`, `category.name`,
//! `unsubscribe_url`); rendering is bounded (fuel, recursion, output size), so a template
//! cannot hang or flood a channel. No I/O here.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::FieldError;

/// The largest rendered part.
const MAX_OUTPUT: usize = 100_000;
/// Rendering steps one template may take.
const FUEL: u64 = 50_000;
/// Variables one category may declare.
pub const MAX_VARIABLES: usize = 50;

/// The type of a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[salvo(schema(name = "neotenant.notifications.VarType"))]
pub enum VarType {
    String,
    Integer,
    Number,
    Boolean,
    /// An absolute http(s) URL.
    Url,
    /// An RFC 3339 date-time.
    Datetime,
    /// A JSON array.
    List,
    /// A JSON object.
    Object,
}

/// A declared variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.notifications.VarSpec"))]
pub struct VarSpec {
    #[serde(rename = "type")]
    pub kind: VarType,
    #[serde(default)]
    pub required: bool,
}

pub type Variables = BTreeMap<String, VarSpec>;

/// Built-in names every template may use.
pub const BUILTINS: &[&str] = &[
    "recipient.name",
    "recipient.email",
    "tenant.name",
    "category.key",
    "category.name",
    "unsubscribe_url",
];

/// A template's parts: subject (email subject, in-app and push title), body (plain text:
/// email text part, in-app body, SMS, push body) and the email's HTML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[salvo(schema(name = "neotenant.notifications.TemplateParts"))]
pub struct Parts {
    #[serde(default)]
    pub subject: String,
    pub body: String,
    #[serde(default)]
    pub html: Option<String>,
}

/// What one message renders to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.notifications.Rendered"))]
pub struct Rendered {
    pub subject: String,
    pub body: String,
    pub html: Option<String>,
}

/// The template used when a tenant saved none: the data's `title` and `body` if it has them,
/// else the category's name.
pub fn builtin() -> Parts {
    Parts {
        subject: "{% if title is defined %}{{ title }}{% else %}{{ category.name }}{% endif %}"
            .into(),
        body: "{% if body is defined %}{{ body }}{% elif message is defined %}{{ message }}\
               {% else %}You have a new {{ category.name }} notification.{% endif %}"
            .into(),
        html: None,
    }
}

fn is_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

fn type_ok(kind: VarType, v: &Value) -> bool {
    match kind {
        VarType::String => v.is_string(),
        VarType::Integer => v.is_i64() || v.is_u64(),
        VarType::Number => v.is_number(),
        VarType::Boolean => v.is_boolean(),
        VarType::Url => v.as_str().is_some_and(is_url),
        VarType::Datetime => v
            .as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        VarType::List => v.is_array(),
        VarType::Object => v.is_object(),
    }
}

fn field(pointer: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        pointer: pointer.into(),
        message: message.into(),
    }
}

/// Every problem of a variable declaration.
pub fn check_variables(vars: &Variables, base: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if vars.len() > MAX_VARIABLES {
        errors.push(field(base, format!("at most {MAX_VARIABLES} variables")));
    }
    for name in vars.keys() {
        let ok = name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok || ["recipient", "tenant", "category", "unsubscribe_url"].contains(&name.as_str()) {
            errors.push(field(
                format!("{base}/{name}"),
                "a variable name is [a-z][a-z0-9_]* (at most 64) and not a built-in name",
            ));
        }
    }
    errors
}

/// Every problem of `data` (at `base`) against `vars`: unknown keys, wrong types, missing
/// required values.
pub fn check_data(vars: &Variables, data: &Value, base: &str) -> Vec<FieldError> {
    let Some(map) = data.as_object() else {
        return vec![field(base, "must be an object")];
    };
    let mut errors = Vec::new();
    for (k, v) in map {
        let pointer = format!(
            "{base}/{}",
            crate::error::json_pointer(k).trim_start_matches('/')
        );
        match vars.get(k) {
            None => errors.push(field(pointer, "not a variable of this category")),
            Some(spec) if !v.is_null() && !type_ok(spec.kind, v) => errors.push(field(
                pointer,
                format!(
                    "must be of type {}",
                    serde_json::to_value(spec.kind)
                        .unwrap_or_default()
                        .as_str()
                        .unwrap_or("?")
                ),
            )),
            Some(_) => {}
        }
    }
    for (k, spec) in vars {
        if spec.required && map.get(k).is_none_or(Value::is_null) {
            errors.push(field(format!("{base}/{k}"), "required"));
        }
    }
    errors
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(50);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env
}

fn sources(parts: &Parts) -> [(&'static str, &'static str, Option<&str>); 3] {
    [
        ("subject", "/subject", Some(parts.subject.as_str())),
        ("body", "/body", Some(parts.body.as_str())),
        ("body.html", "/html", parts.html.as_deref()),
    ]
}

/// Every problem of a template for a category with `vars`: syntax, and names neither
/// declared nor built in.
pub fn check(parts: &Parts, vars: &Variables) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if parts.body.trim().is_empty() {
        errors.push(field("/body", "must not be empty"));
    }
    let env = environment();
    for (name, pointer, source) in sources(parts) {
        let Some(source) = source else { continue };
        if source.contains('\0') {
            errors.push(field(pointer, "must not contain NUL"));
            continue;
        }
        if source.len() > MAX_OUTPUT {
            errors.push(field(pointer, format!("at most {MAX_OUTPUT} bytes")));
            continue;
        }
        match env.template_from_named_str(name, source) {
            Err(e) => errors.push(field(
                pointer,
                format!("template syntax: {}", e.detail().unwrap_or("invalid")),
            )),
            Ok(t) => {
                let mut unknown: Vec<String> = t
                    .undeclared_variables(true)
                    .into_iter()
                    .filter(|path| !known(path, vars))
                    .collect();
                unknown.sort();
                for u in unknown {
                    errors.push(field(pointer, format!("unknown variable `{u}`")));
                }
            }
        }
    }
    errors
}

/// Whether a (dotted) variable path may be used.
fn known(path: &str, vars: &Variables) -> bool {
    let top = path.split('.').next().unwrap_or(path);
    if vars.contains_key(top) {
        return true;
    }
    BUILTINS
        .iter()
        .any(|b| *b == path || b.split('.').next() == Some(path))
}

/// The values a template sees: the data, and the built-ins.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub data: &'a Value,
    pub recipient_name: &'a str,
    pub recipient_email: &'a str,
    pub tenant_name: &'a str,
    pub category_key: &'a str,
    pub category_name: &'a str,
    pub unsubscribe_url: &'a str,
}

impl Context<'_> {
    fn value(&self) -> Value {
        let mut v = match self.data {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            _ => json!({}),
        };
        v["recipient"] = json!({"name": self.recipient_name, "email": self.recipient_email});
        v["tenant"] = json!({"name": self.tenant_name});
        v["category"] = json!({"key": self.category_key, "name": self.category_name});
        v["unsubscribe_url"] = json!(self.unsubscribe_url);
        v
    }
}

/// Renders every part of `parts`; the error says which part failed and why.
pub fn render(parts: &Parts, ctx: &Context<'_>) -> Result<Rendered, String> {
    let env = environment();
    let values = ctx.value();
    let one = |name: &str, source: &str| -> Result<String, String> {
        let t = env
            .template_from_named_str(name, source)
            .map_err(|e| format!("{name}: {e}"))?;
        let out = t.render(&values).map_err(|e| format!("{name}: {e}"))?;
        if out.len() > MAX_OUTPUT {
            return Err(format!("{name}: renders to more than {MAX_OUTPUT} bytes"));
        }
        Ok(out)
    };
    Ok(Rendered {
        subject: one("subject", &parts.subject)?
            .trim()
            .replace(['\r', '\n'], " "),
        body: one("body", &parts.body)?,
        html: parts
            .html
            .as_deref()
            .map(|h| one("body.html", h))
            .transpose()?,
    })
}

/// Sample values of `vars` for a preview.
pub fn sample(vars: &Variables) -> Value {
    Value::Object(
        vars.iter()
            .map(|(k, spec)| {
                let v = match spec.kind {
                    VarType::String => json!(format!("sample {k}")),
                    VarType::Integer => json!(42),
                    VarType::Number => json!(4.2),
                    VarType::Boolean => json!(true),
                    VarType::Url => json!("https://example.com/sample"),
                    VarType::Datetime => json!("2026-01-01T09:30:00Z"),
                    VarType::List => json!(["one", "two"]),
                    VarType::Object => json!({"key": "value"}),
                };
                (k.clone(), v)
            })
            .collect(),
    )
}

/// `html` from plain text when a template has no HTML part.
pub fn text_to_html(text: &str) -> String {
    format!(
        "<div style=\"white-space:pre-wrap\">{}</div>",
        minijinja::HtmlEscape(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Variables {
        let mut v = Variables::new();
        v.insert(
            "title".into(),
            VarSpec {
                kind: VarType::String,
                required: true,
            },
        );
        v.insert(
            "count".into(),
            VarSpec {
                kind: VarType::Integer,
                required: false,
            },
        );
        v.insert(
            "link".into(),
            VarSpec {
                kind: VarType::Url,
                required: false,
            },
        );
        v
    }

    fn ctx(data: &Value) -> Context<'_> {
        Context {
            data,
            recipient_name: "Ada",
            recipient_email: "ada@example.test",
            tenant_name: "Acme",
            category_key: "mention",
            category_name: "Mention",
            unsubscribe_url: "https://x.test/u",
        }
    }

    #[test]
    fn data_is_checked_against_declared_types() {
        let v = vars();
        assert!(check_data(&v, &json!({"title": "t", "count": 3}), "/data").is_empty());
        let errors = check_data(
            &v,
            &json!({"count": "three", "link": "ftp://x", "extra": 1}),
            "/data",
        );
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert!(pointers.contains(&"/data/count"), "{errors:?}");
        assert!(pointers.contains(&"/data/link"), "{errors:?}");
        assert!(pointers.contains(&"/data/extra"), "{errors:?}");
        assert!(pointers.contains(&"/data/title"), "{errors:?}");
        assert_eq!(check_data(&v, &json!([1]), "/data").len(), 1);
    }

    #[test]
    fn templates_may_only_name_declared_and_builtin_variables() {
        let v = vars();
        let ok = Parts {
            subject: "{{ title }} for {{ recipient.name }}".into(),
            body: "{{ count }} at {{ tenant.name }} {{ unsubscribe_url }}".into(),
            html: Some("<b>{{ title }}</b>".into()),
        };
        assert!(check(&ok, &v).is_empty(), "{:?}", check(&ok, &v));
        let bad = Parts {
            subject: "{{ nope }}".into(),
            body: "{{ recipient.password }} {% if %}".into(),
            html: Some("{{ secret }}".into()),
        };
        let errors = check(&bad, &v);
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/subject", "/body", "/html"], "{errors:?}");
        let unknown = Parts {
            subject: String::new(),
            body: "{{ recipient.password }}".into(),
            html: None,
        };
        assert!(
            check(&unknown, &v)[0]
                .message
                .contains("recipient.password")
        );
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let parts = Parts {
            subject: "Hi {{ title }}\r\nBcc: x".into(),
            body: "{{ title }}".into(),
            html: Some("<p>{{ title }}</p>".into()),
        };
        let data = json!({"title": "<script>"});
        let r = render(&parts, &ctx(&data)).unwrap();
        assert_eq!(r.body, "<script>");
        assert_eq!(r.html.as_deref(), Some("<p>&lt;script&gt;</p>"));
        assert!(!r.subject.contains('\n'));
    }

    #[test]
    fn rendering_is_bounded() {
        let parts = Parts {
            subject: String::new(),
            body:
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
                    .into(),
            html: None,
        };
        assert!(render(&parts, &ctx(&json!({}))).is_err());
    }

    #[test]
    fn the_builtin_uses_title_and_body_when_present() {
        let with = json!({"title": "Deploy done", "body": "All green"});
        let r = render(&builtin(), &ctx(&with)).unwrap();
        assert_eq!(
            (r.subject.as_str(), r.body.as_str()),
            ("Deploy done", "All green")
        );
        let r = render(&builtin(), &ctx(&json!({}))).unwrap();
        assert_eq!(r.subject, "Mention");
    }

    #[test]
    fn samples_satisfy_their_types() {
        let v = vars();
        assert!(check_data(&v, &sample(&v), "/data").is_empty());
    }
}
