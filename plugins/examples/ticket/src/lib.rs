//! Example resource-type plugin: support tickets. Shows validation beyond the schema,
//! normalisation, a veto in a hook, a custom action, key-value storage and events.

use neotenant_plugin_sdk::{
    ActionResult, Change, FieldError, Operation, ResourceType, TypeInfo, Value, events, json, kv,
    log, resource_type,
};

struct Ticket;

impl ResourceType for Ticket {
    fn describe() -> TypeInfo {
        TypeInfo {
            name: "ticket".into(),
            title: "Support ticket".into(),
            schema: json!({
                "type": "object",
                "required": ["title"],
                "properties": {
                    "title": {"type": "string", "minLength": 1, "maxLength": 200},
                    "body": {"type": "string"},
                    "status": {"type": "string"},
                    "priority": {"type": "integer", "minimum": 1, "maximum": 5},
                    "resolution": {"type": "string"}
                }
            }),
            searchable: vec!["title".into(), "body".into()],
            filterable: vec!["status".into()],
            sortable: vec!["priority".into()],
            actions: vec![("close".into(), "Closes the ticket with a resolution".into())],
        }
    }

    /// Trims the title, lower-cases the status (default `open`), defaults the priority to 3;
    /// a closed ticket needs a resolution.
    fn validate(mut data: Value) -> Result<Value, Vec<FieldError>> {
        let mut errors = Vec::new();
        let obj = data
            .as_object_mut()
            .expect("the schema makes data an object");
        if let Some(Value::String(t)) = obj.get_mut("title") {
            *t = t.trim().to_string();
            if t.is_empty() {
                errors.push(FieldError::new("/title", "must not be blank"));
            }
        }
        let status = match obj.get("status") {
            Some(Value::String(s)) => s.trim().to_lowercase(),
            _ => "open".to_string(),
        };
        if !["open", "pending", "closed"].contains(&status.as_str()) {
            errors.push(FieldError::new(
                "/status",
                "must be open, pending or closed",
            ));
        }
        if status == "closed" && !obj.contains_key("resolution") {
            errors.push(FieldError::new(
                "/resolution",
                "a closed ticket needs a resolution",
            ));
        }
        obj.insert("status".into(), json!(status));
        obj.entry("priority").or_insert(json!(3));
        if errors.is_empty() {
            Ok(data)
        } else {
            Err(errors)
        }
    }

    /// Open tickets cannot be deleted; they are closed first.
    fn before_change(change: &Change) -> Result<(), String> {
        if change.operation == Operation::Delete && change.after["status"] == "open" {
            return Err("an open ticket cannot be deleted; close it first".into());
        }
        Ok(())
    }

    /// Counts tickets created, per tenant, in the plugin's key-value store.
    fn after_change(change: &Change) -> Result<(), String> {
        if change.operation == Operation::Create {
            let n = kv::get("created")?
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            kv::set("created", (n + 1).to_string().as_bytes())?;
        }
        Ok(())
    }

    fn action(name: &str, id: &str, mut data: Value, input: Value) -> Result<ActionResult, String> {
        match name {
            "close" => {
                let resolution = input["resolution"]
                    .as_str()
                    .filter(|r| !r.trim().is_empty())
                    .ok_or("a resolution is required")?;
                data["status"] = json!("closed");
                data["resolution"] = json!(resolution.trim());
                log::info(&format!("closing ticket {id}"));
                events::emit("closed", id, &json!({"resolution": resolution.trim()}))?;
                Ok(ActionResult {
                    data: Some(data),
                    output: json!({"closed": true}),
                })
            }
            other => Err(format!("no action named {other}")),
        }
    }
}

resource_type!(Ticket);
