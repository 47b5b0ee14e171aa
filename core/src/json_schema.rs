//! JSON Schemas that tenants give (resource types, user attributes): compiling one with the
//! platform's options (formats checked, the `regex` engine for patterns, so no pattern can
//! backtrack without bound), checking one before it is saved, and listing a document's
//! violations as field errors. Never stores a schema and never decides what one is for.

use serde_json::Value;

use crate::error::FieldError;

/// Compiles `schema` into a validator with the platform's options.
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .should_validate_formats(true)
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema)
        .map_err(|e| e.to_string())
}

/// Every reason `schema` (at `pointer` of a request body) cannot be saved as the schema of an
/// object: too large, not a valid JSON Schema, not `"type": "object"`, or not compilable.
pub fn check_object_schema(schema: &Value, pointer: &str, max_bytes: usize) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut err = |p: String, m: String| {
        errors.push(FieldError {
            pointer: p,
            message: m,
        })
    };
    let size = serde_json::to_vec(schema).map_or(usize::MAX, |v| v.len());
    if size > max_bytes {
        err(pointer.into(), format!("must be at most {max_bytes} bytes"));
        return errors;
    }
    if !schema.is_object() {
        err(pointer.into(), "must be a JSON Schema object".into());
        return errors;
    }
    if let Err(e) = jsonschema::meta::validate(schema) {
        err(
            format!("{pointer}{}", e.instance_path()),
            format!("is not a valid JSON Schema: {e}"),
        );
        return errors;
    }
    if schema.get("type") != Some(&Value::String("object".into())) {
        err(format!("{pointer}/type"), "must be \"object\"".into());
    }
    if let Err(e) = compile(schema) {
        err(pointer.into(), format!("does not compile: {e}"));
    }
    errors
}

/// Field errors of `data` against `validator` (at most 100), each under `prefix`.
pub fn violations(
    validator: &jsonschema::Validator,
    data: &Value,
    prefix: &str,
) -> Vec<FieldError> {
    validator
        .iter_errors(data)
        .take(100)
        .map(|e| FieldError {
            pointer: format!("{prefix}{}", e.instance_path()),
            message: e.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn object_schemas_are_checked_before_saving() {
        let good = json!({"type": "object", "properties": {"age": {"type": "integer"}}});
        assert!(check_object_schema(&good, "/schema", 10_000).is_empty());
        let not_object = json!({"type": "string"});
        assert_eq!(
            check_object_schema(&not_object, "/schema", 10_000)[0].pointer,
            "/schema/type"
        );
        let invalid = json!({"type": "object", "properties": {"age": {"type": "integr"}}});
        assert!(!check_object_schema(&invalid, "/schema", 10_000).is_empty());
        assert_eq!(
            check_object_schema(&json!([1]), "/schema", 10_000)[0].pointer,
            "/schema"
        );
        assert!(
            check_object_schema(&good, "/schema", 10)[0]
                .message
                .contains("at most")
        );
    }

    #[test]
    fn violations_point_into_the_document() {
        let v = compile(&json!({"type": "object", "properties": {"age": {"type": "integer"}}}))
            .unwrap();
        let errors = violations(&v, &json!({"age": "old"}), "/attributes");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].pointer, "/attributes/age");
    }
}
