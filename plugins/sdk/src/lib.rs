//! The NeoTenantApi plugin SDK: bindings for the `neotenant:plugin` WIT package (`wit/`)
//! and a thin, typed layer over them, so that a plugin is one trait impl and one macro.
//!
//! Enable exactly one feature — `resource-type` or `integration` — for the world the plugin
//! implements, implement [`ResourceType`] or [`Integration`], and call
//! [`resource_type!`] or [`integration!`] once. Data travels as [`serde_json::Value`].
//!
//! The host interfaces ([`log`], [`kv`], [`http`], [`events`]) work only when the tenant
//! granted them at install time; otherwise they return an error and do nothing.

#[cfg(all(feature = "resource-type", feature = "integration"))]
compile_error!("enable exactly one of the features `resource-type` and `integration`");
#[cfg(not(any(feature = "resource-type", feature = "integration")))]
compile_error!("enable one of the features `resource-type` or `integration`");

extern crate self as neotenant_plugin_sdk;

pub use serde_json::{self, Value, json};
#[doc(hidden)]
pub use wit_bindgen;

/// Generated bindings (the world picked by the feature).
#[doc(hidden)]
pub mod bindings {
    #[cfg(feature = "resource-type")]
    wit_bindgen::generate!({
        path: "../../wit",
        world: "neotenant:plugin/resource-type@0.1.0",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "neotenant_plugin_sdk::bindings",
        runtime_path: "neotenant_plugin_sdk::wit_bindgen::rt",
    });
    #[cfg(all(feature = "integration", not(feature = "resource-type")))]
    wit_bindgen::generate!({
        path: "../../wit",
        world: "neotenant:plugin/integration@0.1.0",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "neotenant_plugin_sdk::bindings",
        runtime_path: "neotenant_plugin_sdk::wit_bindgen::rt",
    });
}

use bindings::neotenant::plugin as wit;

/// Structured logging into the host's log (needs the `logging` capability).
pub mod log {
    use super::wit::logging::{Level, log};
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// Key-value storage private to this plugin in this tenant (needs `kv`).
pub mod kv {
    pub use super::wit::kv::{delete, get, keys, set};
}

/// Settings the tenant gave this installation.
pub mod config {
    pub use super::wit::config::get;
}

/// Outbound HTTP to hosts the tenant approved (needs `http`).
pub mod http {
    pub use super::wit::http::{Request, Response, fetch};

    /// POSTs a JSON body.
    pub fn post_json(url: &str, body: &serde_json::Value) -> Result<Response, String> {
        fetch(&Request {
            method: "POST".into(),
            url: url.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(body).map_err(|e| e.to_string())?,
        })
    }
}

/// Emitting tenant events (needs `events`); the host prefixes the kind with
/// `plugin.<name>.`.
pub mod events {
    pub fn emit(kind: &str, subject: &str, data: &serde_json::Value) -> Result<(), String> {
        super::wit::events::emit(kind, subject, &data.to_string())
    }
}

pub use wit::types::Operation;

/// One problem with the data, at a JSON pointer.
#[derive(Debug, Clone)]
pub struct FieldError {
    pub pointer: String,
    pub message: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// A change to a resource, as hooks see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub operation: Operation,
    pub type_name: String,
    pub resource_id: String,
    pub before: Option<Value>,
    pub after: Value,
    pub actor: String,
}

/// The type a resource-type plugin provides.
#[derive(Debug, Clone, Default)]
pub struct TypeInfo {
    pub name: String,
    pub title: String,
    pub schema: Value,
    pub searchable: Vec<String>,
    pub filterable: Vec<String>,
    pub sortable: Vec<String>,
    /// `(name, description)` of each custom action.
    pub actions: Vec<(String, String)>,
}

/// What a custom action answers.
#[derive(Debug, Clone)]
pub struct ActionResult {
    /// New data for the resource, or `None` to leave it unchanged.
    pub data: Option<Value>,
    /// Returned to the caller.
    pub output: Value,
}

/// A resource-type plugin. Only [`ResourceType::describe`] is required.
pub trait ResourceType {
    fn describe() -> TypeInfo;
    /// Checks and normalises data (after the host checked it against the schema).
    fn validate(data: Value) -> Result<Value, Vec<FieldError>> {
        Ok(data)
    }
    /// Runs before a change is written; `Err` vetoes it with that message.
    fn before_change(_change: &Change) -> Result<(), String> {
        Ok(())
    }
    /// Runs after a change is written, in the same transaction; `Err` vetoes it.
    fn after_change(_change: &Change) -> Result<(), String> {
        Ok(())
    }
    /// A custom action (`POST /v1/resources/{type}/{id}/actions/{name}`).
    fn action(
        name: &str,
        _resource_id: &str,
        _data: Value,
        _input: Value,
    ) -> Result<ActionResult, String> {
        Err(format!("no action named {name}"))
    }
}

/// A tenant event delivered to an integration.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub kind: String,
    pub subject: String,
    pub data: Value,
    pub occurred_at: String,
}

/// An integration plugin: reacts to the events its manifest subscribes to.
pub trait Integration {
    /// `Err` makes the host deliver the event again later.
    fn on_event(event: &Event) -> Result<(), String>;
}

#[doc(hidden)]
pub mod glue {
    use super::*;

    pub fn parse(s: &str) -> Result<Value, String> {
        serde_json::from_str(s).map_err(|e| format!("invalid JSON from the host: {e}"))
    }

    #[cfg(feature = "resource-type")]
    pub mod rt {
        use super::super::*;
        use crate::bindings::exports::neotenant::plugin::resource_hooks as x;

        pub fn change(c: wit::types::Change) -> Result<Change, String> {
            Ok(Change {
                operation: c.operation,
                type_name: c.type_name,
                resource_id: c.resource_id,
                before: c.before.as_deref().map(super::parse).transpose()?,
                after: super::parse(&c.after)?,
                actor: c.actor,
            })
        }

        pub fn describe<T: ResourceType>() -> x::TypeInfo {
            let t = T::describe();
            x::TypeInfo {
                name: t.name,
                title: t.title,
                schema: t.schema.to_string(),
                searchable: t.searchable,
                filterable: t.filterable,
                sortable: t.sortable,
                actions: t
                    .actions
                    .into_iter()
                    .map(|(name, description)| x::ActionInfo { name, description })
                    .collect(),
            }
        }

        pub fn validate<T: ResourceType>(data: String) -> Result<String, Vec<x::FieldError>> {
            let errs = |e: Vec<FieldError>| {
                e.into_iter()
                    .map(|e| x::FieldError {
                        pointer: e.pointer,
                        message: e.message,
                    })
                    .collect()
            };
            let v = super::parse(&data).map_err(|m| errs(vec![FieldError::new("", m)]))?;
            T::validate(v).map(|v| v.to_string()).map_err(errs)
        }

        pub fn before<T: ResourceType>(c: wit::types::Change) -> Result<(), String> {
            T::before_change(&change(c)?)
        }

        pub fn after<T: ResourceType>(c: wit::types::Change) -> Result<(), String> {
            T::after_change(&change(c)?)
        }

        pub fn action<T: ResourceType>(
            name: String,
            id: String,
            data: String,
            input: String,
        ) -> Result<x::ActionResult, String> {
            let r = T::action(&name, &id, super::parse(&data)?, super::parse(&input)?)?;
            Ok(x::ActionResult {
                data: r.data.map(|d| d.to_string()),
                output: r.output.to_string(),
            })
        }
    }

    #[cfg(feature = "integration")]
    pub mod int {
        use super::super::*;

        pub fn on_event<T: Integration>(e: wit::types::Event) -> Result<(), String> {
            T::on_event(&Event {
                id: e.id,
                kind: e.kind,
                subject: e.subject,
                data: super::parse(&e.data)?,
                occurred_at: e.occurred_at,
            })
        }
    }
}

/// Exports a [`ResourceType`] implementation as the plugin's component.
#[cfg(feature = "resource-type")]
#[macro_export]
macro_rules! resource_type {
    ($t:ty) => {
        struct __NeoTenantResourceType;
        impl $crate::bindings::exports::neotenant::plugin::resource_hooks::Guest
            for __NeoTenantResourceType
        {
            fn describe() -> $crate::bindings::exports::neotenant::plugin::resource_hooks::TypeInfo {
                $crate::glue::rt::describe::<$t>()
            }
            fn validate(
                data: String,
            ) -> Result<String, Vec<$crate::bindings::exports::neotenant::plugin::resource_hooks::FieldError>>
            {
                $crate::glue::rt::validate::<$t>(data)
            }
            fn before_change(
                c: $crate::bindings::neotenant::plugin::types::Change,
            ) -> Result<(), String> {
                $crate::glue::rt::before::<$t>(c)
            }
            fn after_change(
                c: $crate::bindings::neotenant::plugin::types::Change,
            ) -> Result<(), String> {
                $crate::glue::rt::after::<$t>(c)
            }
            fn action(
                name: String,
                resource_id: String,
                data: String,
                input: String,
            ) -> Result<$crate::bindings::exports::neotenant::plugin::resource_hooks::ActionResult, String>
            {
                $crate::glue::rt::action::<$t>(name, resource_id, data, input)
            }
        }
        $crate::bindings::export!(__NeoTenantResourceType with_types_in $crate::bindings);
    };
}

/// Exports an [`Integration`] implementation as the plugin's component.
#[cfg(feature = "integration")]
#[macro_export]
macro_rules! integration {
    ($t:ty) => {
        struct __NeoTenantIntegration;
        impl $crate::bindings::exports::neotenant::plugin::handler::Guest for __NeoTenantIntegration {
            fn on_event(e: $crate::bindings::neotenant::plugin::types::Event) -> Result<(), String> {
                $crate::glue::int::on_event::<$t>(e)
            }
        }
        $crate::bindings::export!(__NeoTenantIntegration with_types_in $crate::bindings);
    };
}
