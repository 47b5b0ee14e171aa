//! Example integration plugin: forwards each event it receives as a JSON POST to the URL
//! in its `url` setting (the tenant must approve that host). A non-2xx answer makes the
//! host retry the event later.

use neotenant_plugin_sdk::{Event, Integration, config, http, integration, json, kv, log};

struct Webhook;

impl Integration for Webhook {
    fn on_event(event: &Event) -> Result<(), String> {
        let url = config::get("url").ok_or("the `url` setting is missing")?;
        let resp = http::post_json(
            &url,
            &json!({
                "id": event.id,
                "kind": event.kind,
                "subject": event.subject,
                "data": event.data,
                "occurred_at": event.occurred_at,
            }),
        )?;
        if !(200..300).contains(&resp.status) {
            log::warn(&format!("{url} answered {}", resp.status));
            return Err(format!("the receiver answered {}", resp.status));
        }
        let n = kv::get("delivered")?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        kv::set("delivered", (n + 1).to_string().as_bytes())?;
        Ok(())
    }
}

integration!(Webhook);
