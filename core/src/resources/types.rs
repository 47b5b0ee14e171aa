//! Resource type definitions: checking a definition (names, a well-formed JSON Schema that
//! describes an object, declared fields that exist), compiling schemas into validators
//! (cached per tenant, type and version), validating data into field errors, and applying a
//! type change's migration to stored data.
//!
//! Schemas never reach outside: `$ref`s to other documents (files, URLs) are refused when
//! the schema compiles (no remote or file retrieval is built in), and `pattern`s run on a
//! linear-time regex engine, so a tenant's schema cannot make the host fetch, read, or
//! backtrack without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use uuid::Uuid;

use super::{Migration, RelationshipKind, TypeInput};
use crate::error::FieldError;

/// Largest accepted schema, serialised.
pub const SCHEMA_MAX_BYTES: usize = 64 * 1024;
/// Most fields a type may declare in each of searchable / filterable / sortable.
pub const FIELDS_MAX: usize = 32;
pub const RELATIONSHIPS_MAX: usize = 32;

/// A type or relationship kind name: `[a-z][a-z0-9_]{0,62}`.
pub fn is_name(s: &str) -> bool {
    crate::db::is_identifier(s)
}

/// A top-level data field usable in filters and sorts: `[A-Za-z_][A-Za-z0-9_]{0,62}`.
pub fn is_field(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn err(errors: &mut Vec<FieldError>, pointer: impl Into<String>, message: impl Into<String>) {
    errors.push(FieldError {
        pointer: pointer.into(),
        message: message.into(),
    });
}

pub use crate::json_schema::compile;

/// The JSON type(s) a top-level property declares, if it declares any.
fn property_types(schema: &Value, field: &str) -> Option<Vec<String>> {
    let prop = schema.get("properties")?.get(field)?;
    match prop.get("type") {
        Some(Value::String(t)) => Some(vec![t.clone()]),
        Some(Value::Array(ts)) => Some(
            ts.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect(),
        ),
        _ => prop
            .get("enum")
            .map(|_| vec!["string".into(), "number".into()]),
    }
}

/// Checks a definition; `existing` are the tenant's other type names (relationship targets).
/// Every problem is reported at once.
pub fn check(input: &TypeInput, existing: &[String], errors: &mut Vec<FieldError>) {
    if !is_name(&input.name) {
        err(errors, "/name", "must match [a-z][a-z0-9_]{0,62}");
    }
    let title = input.title.trim().chars().count();
    if !(1..=200).contains(&title) {
        err(errors, "/title", "must be 1-200 characters");
    }
    if input.description.chars().count() > 2000 {
        err(errors, "/description", "must be at most 2000 characters");
    }
    let size = serde_json::to_vec(&input.schema).map_or(usize::MAX, |v| v.len());
    if size > SCHEMA_MAX_BYTES {
        err(
            errors,
            "/schema",
            format!("must be at most {SCHEMA_MAX_BYTES} bytes"),
        );
        return;
    }
    if !input.schema.is_object() {
        err(errors, "/schema", "must be a JSON Schema object");
        return;
    }
    if let Err(e) = jsonschema::meta::validate(&input.schema) {
        err(
            errors,
            format!("/schema{}", e.instance_path()),
            format!("is not a valid JSON Schema: {e}"),
        );
        return;
    }
    if input.schema.get("type") != Some(&Value::String("object".into())) {
        err(
            errors,
            "/schema/type",
            "must be \"object\": a resource's data is an object",
        );
    }
    if let Err(e) = compile(&input.schema) {
        err(errors, "/schema", format!("does not compile: {e}"));
    }
    let lists: [(&str, &Vec<String>, &[&str]); 3] = [
        ("searchable", &input.searchable, &["string", "array"]),
        (
            "filterable",
            &input.filterable,
            &["string", "number", "integer", "boolean"],
        ),
        (
            "sortable",
            &input.sortable,
            &["string", "number", "integer", "boolean"],
        ),
    ];
    for (list, fields, allowed) in lists {
        if fields.len() > FIELDS_MAX {
            err(
                errors,
                format!("/{list}"),
                format!("at most {FIELDS_MAX} fields"),
            );
        }
        for (i, f) in fields.iter().enumerate() {
            let pointer = format!("/{list}/{i}");
            if !is_field(f) {
                err(errors, pointer, "must be a top-level field name");
                continue;
            }
            match property_types(&input.schema, f) {
                None => err(
                    errors,
                    pointer,
                    format!("`{f}` is not a property with a declared type in the schema"),
                ),
                Some(types) if !types.iter().any(|t| allowed.contains(&t.as_str())) => err(
                    errors,
                    pointer,
                    format!("`{f}` must be of type {}", allowed.join(" or ")),
                ),
                Some(_) => {}
            }
            if fields[..i].contains(f) {
                err(errors, format!("/{list}/{i}"), "listed twice");
            }
        }
    }
    check_relationships(&input.name, &input.relationships, existing, errors);
}

fn check_relationships(
    name: &str,
    relationships: &[RelationshipKind],
    existing: &[String],
    errors: &mut Vec<FieldError>,
) {
    if relationships.len() > RELATIONSHIPS_MAX {
        err(
            errors,
            "/relationships",
            format!("at most {RELATIONSHIPS_MAX} kinds"),
        );
    }
    for (i, r) in relationships.iter().enumerate() {
        if !is_name(&r.kind) {
            err(
                errors,
                format!("/relationships/{i}/kind"),
                "must match [a-z][a-z0-9_]{0,62}",
            );
        }
        if relationships[..i].iter().any(|o| o.kind == r.kind) {
            err(errors, format!("/relationships/{i}/kind"), "listed twice");
        }
        if r.target != name && !existing.contains(&r.target) {
            err(
                errors,
                format!("/relationships/{i}/target"),
                format!("no resource type `{}`", r.target),
            );
        }
    }
}

/// Field errors of `data` against `validator`, each under `prefix` (e.g. `/data`).
pub fn validate(validator: &jsonschema::Validator, data: &Value, prefix: &str) -> Vec<FieldError> {
    crate::json_schema::violations(validator, data, prefix)
}

/// Applies a type change's migration to one resource's data.
pub fn migrate(data: &Value, m: &Migration) -> Value {
    let Value::Object(map) = data else {
        return data.clone();
    };
    let mut out = map.clone();
    for (old, new) in &m.rename {
        if let Some(v) = out.remove(old) {
            out.insert(new.clone(), v);
        }
    }
    for f in &m.remove {
        out.remove(f);
    }
    for (f, v) in &m.set_default {
        out.entry(f.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(out)
}

/// Checks a migration's own shape (field names).
pub fn check_migration(m: &Migration, errors: &mut Vec<FieldError>) {
    for (old, new) in &m.rename {
        if !is_field(old) || !is_field(new) {
            err(
                errors,
                "/migration/rename",
                format!("`{old}` → `{new}`: both must be top-level field names"),
            );
        }
    }
    for f in m.remove.iter().chain(m.set_default.keys()) {
        if !is_field(f) {
            err(
                errors,
                "/migration",
                format!("`{f}` is not a top-level field name"),
            );
        }
    }
}

/// Compiled validators by (tenant, type, version). A type change bumps the version, so a
/// stale validator is never used; the map is cleared when it grows past its bound.
#[derive(Default)]
pub struct ValidatorCache {
    inner: Mutex<HashMap<(Uuid, String, i32), Arc<jsonschema::Validator>>>,
}

const CACHE_MAX: usize = 10_000;

impl ValidatorCache {
    pub fn get(
        &self,
        tenant: Uuid,
        name: &str,
        version: i32,
        schema: &Value,
    ) -> Result<Arc<jsonschema::Validator>, String> {
        let key = (tenant, name.to_string(), version);
        if let Some(v) = self.inner.lock().expect("validator cache").get(&key) {
            return Ok(v.clone());
        }
        let v = Arc::new(compile(schema)?);
        let mut map = self.inner.lock().expect("validator cache");
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(key, v.clone());
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(schema: Value) -> TypeInput {
        TypeInput {
            name: "ticket".into(),
            title: "Ticket".into(),
            description: String::new(),
            schema,
            searchable: vec!["title".into()],
            filterable: vec!["status".into()],
            sortable: vec!["priority".into()],
            relationships: vec![],
            migration: None,
        }
    }

    fn ticket_schema() -> Value {
        json!({"type": "object", "required": ["title"], "properties": {
            "title": {"type": "string", "maxLength": 200},
            "status": {"type": "string", "enum": ["open", "closed"]},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
            "email": {"type": "string", "format": "email"}
        }})
    }

    #[test]
    fn a_sound_definition_passes() {
        let mut errors = vec![];
        check(&input(ticket_schema()), &[], &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn every_problem_is_reported() {
        let mut bad = input(json!({"type": "object", "properties": {"title": {"type": "object"}}}));
        bad.name = "Bad-Name".into();
        bad.title = " ".into();
        bad.searchable = vec!["title".into(), "nope".into()];
        bad.filterable = vec!["drop table".into()];
        bad.relationships = vec![RelationshipKind {
            kind: "blocks".into(),
            target: "missing".into(),
            on_delete: super::super::OnDelete::Refuse,
        }];
        let mut errors = vec![];
        check(&bad, &[], &mut errors);
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        for p in [
            "/name",
            "/title",
            "/searchable/0",
            "/searchable/1",
            "/filterable/0",
            "/sortable/0",
            "/relationships/0/target",
        ] {
            assert!(pointers.contains(&p), "{p} missing from {pointers:?}");
        }
    }

    #[test]
    fn invalid_schemas_and_outside_references_are_refused() {
        for schema in [
            json!({"type": "object", "properties": {"a": {"type": "strin"}}}),
            json!({"type": "object", "minProperties": -1}),
            json!({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}),
            json!({"type": "object", "properties": {"a": {"$ref": "file:///etc/passwd"}}}),
            json!({"type": "array"}),
            json!("object"),
        ] {
            let mut errors = vec![];
            let mut i = input(schema.clone());
            i.searchable.clear();
            i.filterable.clear();
            i.sortable.clear();
            check(&i, &[], &mut errors);
            assert!(!errors.is_empty(), "accepted {schema}");
        }
    }

    #[test]
    fn data_errors_carry_pointers_and_formats_are_checked() {
        let v = compile(&ticket_schema()).unwrap();
        let errors = validate(
            &v,
            &json!({"status": "maybe", "priority": 9, "email": "not-an-email"}),
            "/data",
        );
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        for p in ["/data", "/data/status", "/data/priority", "/data/email"] {
            assert!(pointers.contains(&p), "{p} missing from {pointers:?}");
        }
        assert!(validate(&v, &json!({"title": "ok", "priority": 3}), "/data").is_empty());
    }

    #[test]
    fn pathological_patterns_run_in_linear_time() {
        let v = compile(&json!({"type": "object", "properties": {
            "a": {"type": "string", "pattern": "^(a+)+$"}}}))
        .unwrap();
        let evil = format!("{}!", "a".repeat(50_000));
        assert_eq!(validate(&v, &json!({"a": evil}), "").len(), 1);
    }

    #[test]
    fn migrations_rename_default_and_remove() {
        let m = Migration {
            rename: [("name".to_string(), "title".to_string())].into(),
            set_default: [("status".to_string(), json!("open"))].into(),
            remove: vec!["legacy".into()],
        };
        assert_eq!(
            migrate(&json!({"name": "x", "legacy": 1}), &m),
            json!({"title": "x", "status": "open"})
        );
        assert_eq!(
            migrate(&json!({"title": "y", "status": "closed"}), &m),
            json!({"title": "y", "status": "closed"})
        );
    }
}
