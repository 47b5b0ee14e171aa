//! Plugins: WebAssembly components that provide resource types or react to tenant events,
//! run sandboxed by the `neotenant-runtime` crate.
//!
//! `manifest` checks what an upload claims; `repo` is the SQL
//! (registry: components, plugins, versions; tenant: installations, key-value, failures, dead
//! letters); `service` uploads, publishes, installs, upgrades, rolls back, enables and
//! disables; `hooks` runs a type's plugin on the resource write path and applies the
//! installation's failure modes and the circuit breaker; `delivery` feeds integrations from
//! the outbox; `kv` is the key-value store plugins see; `handlers` is `/v1/plugins`,
//! `/v1/marketplace` and `/admin/v1/marketplace`, reading upload bodies with salvo's
//! multipart form reader.
//!
//! **Invariants:** an installation is pinned to a content hash, so what runs never changes
//! under a tenant without an audited upgrade or rollback; a plugin reaches nothing but the
//! host interfaces its installation was granted (a subset of what its manifest asked);
//! components are compiled at upload (or once per engine from the registry's bytes, off the
//! request path when the cache is warm), never per request; secrets given to an installation
//! are never returned, logged or audited.

pub mod delivery;
pub mod handlers;
pub mod hooks;
pub mod kv;
pub mod manifest;
pub mod repo;
pub mod secrets;
pub mod service;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Bool, Integer, Jsonb, Nullable, Text, Timestamptz};
use neotenant_runtime::{Breaker, Limits, Runtime, RuntimeConfig, SetupError};
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::PluginsConfig;
use crate::ids::PluginId;
pub use manifest::Manifest;
/// What an installation may use (and, in a manifest, what a plugin asks for): the runtime's
/// type, which gates every host interface.
pub use neotenant_runtime::Grants;

/// What the plugin feature uses, built once by `app`: the registry (components, versions,
/// the marketplace), the runtime with its circuit breaker, and counters.
pub struct PluginsState {
    pub config: Arc<crate::config::Config>,
    pub registry: crate::db::PgPool,
    pub plugins: Arc<Plugins>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Tenants written to recently: delivery visits them first; breaker trips are audited.
    pub audit_recent: Arc<crate::audit::Recent>,
    /// Every tenant's database (delivery's catch-up rounds).
    pub tenancy: Arc<crate::tenancy::TenancyState>,
    /// Seals and opens installations' secrets.
    pub keyring: Arc<crate::crypto::Keyring>,
    /// The tenant's `integrations.allowed_hosts`, which narrows every HTTP grant.
    pub settings: Arc<crate::settings::SettingsState>,
}

/// The runtime and the per-installation circuit breaker, shared by the instance.
pub struct Plugins {
    pub runtime: Arc<Runtime>,
    pub breaker: Breaker,
}

/// The operator's rule over where plugins connect (`crate::netguard`), for the runtime.
struct PluginNet(crate::netguard::AllowList);

impl neotenant_runtime::NetGuard for PluginNet {
    fn permits(&self, url: &url::Url) -> bool {
        crate::netguard::literal_permitted(url, &self.0)
    }

    fn resolver(&self) -> Arc<dyn reqwest::dns::Resolve> {
        Arc::new(crate::netguard::GuardedResolver {
            allow: self.0.clone(),
        })
    }
}

impl Plugins {
    /// The runtime, its plugins' connections held to public addresses and the operator's
    /// `allow` list.
    pub fn new(
        cfg: &PluginsConfig,
        allow: crate::netguard::AllowList,
    ) -> Result<Plugins, SetupError> {
        let limits = Limits {
            fuel: cfg.fuel,
            memory_bytes: cfg.memory_mib << 20,
            timeout: Duration::from_millis(cfg.timeout_ms),
            output_bytes: cfg.output_bytes,
            ..Limits::default()
        };
        let runtime = Runtime::guarded(
            RuntimeConfig {
                cache_dir: cfg.cache_dir.clone(),
                pool_instances: cfg.pool_instances,
                limits,
            },
            Some(Arc::new(PluginNet(allow))),
        )?;
        Ok(Plugins {
            runtime,
            breaker: Breaker::new(cfg.breaker_threshold),
        })
    }
}

/// Whether a failing hook blocks the write (`closed`) or lets it through and records the
/// failure (`open`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    #[default]
    Closed,
    Open,
}

/// The failure mode of each hook of a resource-type plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct FailureModes {
    #[serde(default)]
    pub validate: FailureMode,
    #[serde(default)]
    pub before_change: FailureMode,
    #[serde(default)]
    pub after_change: FailureMode,
}

/// One version of a plugin.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PluginVersion {
    pub version: String,
    /// SHA-256 of the component: what an installation is pinned to.
    pub hash: String,
    pub size: i32,
    #[salvo(schema(value_type = manifest::CapabilitiesSchema))]
    pub capabilities: Grants,
    /// Event kinds an integration subscribes to.
    pub events: Vec<String>,
    /// The resource type a resource-type plugin provides (name, title, schema, fields,
    /// actions).
    #[salvo(schema(value_type = Option<Object>))]
    pub type_info: Option<Value>,
    pub created_at: DateTime<Utc>,
}

/// A plugin: a tenant's own upload (`tenant`) or a marketplace listing (`marketplace`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Plugin {
    pub id: PluginId,
    pub name: String,
    /// `resource-type` or `integration`.
    pub kind: String,
    pub publisher: String,
    pub description: String,
    pub source: String,
    /// Newest first.
    pub versions: Vec<PluginVersion>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Installing a plugin in the tenant.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallInput {
    /// The plugin's name.
    pub plugin: String,
    /// `tenant` (the tenant's own upload, the default) or `marketplace`.
    #[serde(default = "default_source")]
    pub source: String,
    /// Defaults to the newest version.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub grants: Grants,
    /// Settings the plugin reads through its `config` interface (shown back).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Like settings, but write-only: never shown, logged or audited.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub failure_modes: FailureModes,
    /// Integrations: the event kinds to deliver (each must match one the manifest lists;
    /// defaults to the manifest's).
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

fn default_source() -> String {
    "tenant".into()
}

/// Changing an installation: another version (upgrade, downgrade), grants, settings,
/// secrets, failure modes or subscriptions. Absent fields stay as they are.
#[derive(Debug, Clone, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct InstallChange {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub grants: Option<Grants>,
    #[serde(default)]
    pub settings: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub secrets: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub failure_modes: Option<FailureModes>,
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

/// Delivery state of an integration.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivery {
    /// Failed attempts at the next event.
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// A plugin installed in the tenant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Install {
    pub name: String,
    pub plugin_id: PluginId,
    pub source: String,
    pub kind: String,
    pub version: String,
    pub hash: String,
    /// What `rollback` returns to.
    pub previous_version: Option<String>,
    pub grants: Grants,
    pub settings: BTreeMap<String, String>,
    /// Names of the secrets set (never their values).
    pub secret_keys: Vec<String>,
    pub failure_modes: FailureModes,
    pub events: Vec<String>,
    /// The resource type a resource-type plugin provides.
    pub type_name: Option<String>,
    pub enabled: bool,
    /// Why it is disabled (by an admin, or by the circuit breaker after repeated failures).
    pub disabled_reason: Option<String>,
    pub delivery: Option<Delivery>,
    pub installed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A failed plugin call (a row of `plugin_failures`).
#[derive(Debug, Clone, Serialize, ToSchema, diesel::QueryableByName)]
pub struct Failure {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// `validate`, `before_change`, `after_change`, `action` or `on_event`.
    #[diesel(sql_type = Text)]
    pub hook: String,
    /// `cpu`, `memory`, `stack`, `timeout`, `trap` or `output`.
    #[diesel(sql_type = Text)]
    pub code: String,
    #[diesel(sql_type = Text)]
    pub message: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub subject: Option<String>,
    /// Whether the write went ahead anyway.
    #[diesel(sql_type = Bool)]
    pub fail_open: bool,
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
}

/// An event an integration could not handle after every retry (a row of
/// `plugin_dead_letters`).
#[derive(Debug, Clone, Serialize, ToSchema, diesel::QueryableByName)]
pub struct DeadLetter {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub event_seq: i64,
    #[diesel(sql_type = Text)]
    pub topic: String,
    #[diesel(sql_type = Text)]
    pub subject: String,
    #[salvo(schema(value_type = Object))]
    #[diesel(sql_type = Jsonb)]
    pub payload: Value,
    #[diesel(sql_type = Text)]
    pub error: String,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    pub at: DateTime<Utc>,
}
