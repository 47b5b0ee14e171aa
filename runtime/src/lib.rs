//! The plugin runtime: a wasmtime engine that loads WebAssembly components implementing the
//! `neotenant:plugin` worlds (`wit/`) and calls them inside a sandbox.
//!
//! This crate owns the engine configuration, compilation and the compiled-code cache (by
//! content hash and engine compatibility), the type check of an uploaded component against
//! the worlds, the per-call limits (fuel, epoch deadline, memory and tables through `limits`,
//! wall-clock timeout, answer size, log lines) and the host side of the host interfaces, each gated by the
//! installation's [`Grants`]. It must never touch the database or know about HTTP requests:
//! key-value storage is reached through the [`Kv`] trait the caller provides, emitted events
//! are handed back to the caller, and deciding what a failure means (fail-open or closed, the
//! circuit breaker's state in the database) is the caller's job.

mod breaker;
mod host;
mod limits;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolConcurrencyLimitError, PoolingAllocationConfig,
    Store, StoreLimitsBuilder, Trap,
};

pub use breaker::Breaker;
pub use host::{Emitted, Host, Kv};
pub use limits::LimitExceeded;

/// Bindings generated from `wit/`. Both worlds import the same host interfaces; the
/// integration world reuses the resource-type world's import bindings.
pub mod bindings {
    pub mod rt {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "neotenant:plugin/resource-type",
            imports: { default: async },
            exports: { default: async },
        });
    }
    pub mod int {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "neotenant:plugin/integration",
            imports: { default: async },
            exports: { default: async },
            with: {
                "neotenant:plugin/types": super::rt::neotenant::plugin::types,
                "neotenant:plugin/logging": super::rt::neotenant::plugin::logging,
                "neotenant:plugin/kv": super::rt::neotenant::plugin::kv,
                "neotenant:plugin/http": super::rt::neotenant::plugin::http,
                "neotenant:plugin/events": super::rt::neotenant::plugin::events,
                "neotenant:plugin/config": super::rt::neotenant::plugin::config,
            },
        });
    }
}

use bindings::rt::exports::neotenant::plugin::resource_hooks as hooks;
pub use bindings::rt::neotenant::plugin::types::Operation;

/// The WIT package version this host implements.
pub const PACKAGE: &str = "neotenant:plugin@0.1.0";
const RESOURCE_HOOKS: &str = "neotenant:plugin/resource-hooks@0.1.0";
const HANDLER: &str = "neotenant:plugin/handler@0.1.0";

/// The two worlds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    ResourceType,
    Integration,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ResourceType => "resource-type",
            Kind::Integration => "integration",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "resource-type" => Some(Kind::ResourceType),
            "integration" => Some(Kind::Integration),
            _ => None,
        }
    }
}

/// The host interfaces a plugin may import, as named in WIT.
pub const CAPABILITIES: [&str; 4] = ["logging", "kv", "http", "events"];

/// The host interfaces granted to an installation. `http` lists approved hosts (`host` or
/// `host:port`), each of which the manifest must have asked for (or asked for `*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(salvo_oapi::ToSchema))]
#[cfg_attr(feature = "openapi", salvo(schema(name = "neotenant.plugins.Grants")))]
#[serde(deny_unknown_fields)]
pub struct Grants {
    #[serde(default)]
    pub logging: bool,
    #[serde(default)]
    pub kv: bool,
    #[serde(default)]
    pub events: bool,
    #[serde(default)]
    pub http: Vec<String>,
}

/// Per-call limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Fuel (about one unit per wasm instruction).
    pub fuel: u64,
    pub memory_bytes: usize,
    pub table_elements: usize,
    /// Wall-clock bound of one call, host calls included.
    pub timeout: Duration,
    /// Largest answer (strings returned by the plugin, summed).
    pub output_bytes: usize,
    /// Log lines kept per call; later ones are dropped (and counted once).
    pub log_lines: u32,
    /// Largest key-value value.
    pub kv_value_bytes: usize,
    /// Largest outbound HTTP request or response body.
    pub http_body_bytes: usize,
    pub http_timeout: Duration,
    /// Events one call may emit.
    pub emit_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 50_000_000,
            memory_bytes: 32 << 20,
            table_elements: 20_000,
            timeout: Duration::from_secs(2),
            output_bytes: 1 << 20,
            log_lines: 100,
            kv_value_bytes: 64 << 10,
            http_body_bytes: 1 << 20,
            http_timeout: Duration::from_secs(5),
            emit_max: 100,
        }
    }
}

/// Where plugins may connect beyond the hosts a tenant granted: the operator's rule, applied
/// to every request — an address literal before connecting, a name at connect time by the
/// resolver the HTTP client uses.
pub trait NetGuard: Send + Sync {
    /// Whether the URL may be requested before any name is resolved (an address literal must
    /// be one the operator permits).
    fn permits(&self, url: &url::Url) -> bool;
    /// The HTTP client's resolver: answers only addresses the operator permits.
    fn resolver(&self) -> Arc<dyn reqwest::dns::Resolve>;
}

/// A guard's resolver, as the HTTP client takes one.
struct SharedResolver(Arc<dyn reqwest::dns::Resolve>);

impl reqwest::dns::Resolve for SharedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        self.0.resolve(name)
    }
}

/// The HTTP client plugins' requests go through, and the guard over where they connect.
#[derive(Clone)]
pub(crate) struct Net {
    pub client: reqwest::Client,
    pub guard: Option<Arc<dyn NetGuard>>,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached (`<dir>/<engine>/<sha256>.cwasm`).
    pub cache_dir: PathBuf,
    /// Pooling allocator slots (concurrent instances); 0 = allocate on demand.
    pub pool_instances: u32,
    pub limits: Limits,
}

/// Why a call failed. Every variant but `Unavailable` is the plugin's fault and counts
/// toward its circuit breaker.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    #[error("the plugin ran out of CPU budget (fuel)")]
    Cpu,
    #[error("the plugin exceeded its memory or table limit")]
    Memory,
    #[error("the plugin overflowed its stack")]
    Stack,
    #[error("the plugin did not answer within {0} ms")]
    Timeout(u64),
    #[error("the plugin trapped: {0}")]
    Trap(String),
    #[error("the plugin answered garbage: {0}")]
    Output(String),
    #[error("the plugin runtime is busy: {0}")]
    Unavailable(String),
}

impl CallError {
    /// A stable short name (metrics, failure records).
    pub fn code(&self) -> &'static str {
        match self {
            CallError::Cpu => "cpu",
            CallError::Memory => "memory",
            CallError::Stack => "stack",
            CallError::Timeout(_) => "timeout",
            CallError::Trap(_) => "trap",
            CallError::Output(_) => "output",
            CallError::Unavailable(_) => "unavailable",
        }
    }
    pub fn is_plugin_fault(&self) -> bool {
        !matches!(self, CallError::Unavailable(_))
    }
}

/// Why the runtime could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the WebAssembly engine: {0}")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("linking the host interfaces: {0}")]
    Linker(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the compiled-component cache {}: {source}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the outbound HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Why an upload is refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly component{0}")]
    NotComponent(&'static str),
    #[error("the component does not compile: {0}")]
    Invalid(String),
    #[error("the component does not implement a {PACKAGE} world: {0}")]
    World(String),
}

/// A type as a resource-type plugin describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeInfo {
    pub name: String,
    pub title: String,
    pub schema: Value,
    pub searchable: Vec<String>,
    pub filterable: Vec<String>,
    pub sortable: Vec<String>,
    pub actions: Vec<(String, String)>,
}

/// A field error from a plugin's validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub pointer: String,
    pub message: String,
}

/// A change as hooks see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub operation: Operation,
    pub type_name: String,
    pub resource_id: String,
    pub before: Option<Value>,
    pub after: Value,
    pub actor: String,
}

/// A custom action's answer.
#[derive(Debug, Clone)]
pub struct ActionResult {
    pub data: Option<Value>,
    pub output: Value,
}

/// A tenant event for an integration.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub kind: String,
    pub subject: String,
    pub data: Value,
    pub occurred_at: String,
}

/// A compiled, type-checked component ready to instantiate.
pub struct Plugin {
    pub hash: String,
    pub kind: Kind,
    /// The `neotenant:plugin` interfaces it imports (a subset of [`CAPABILITIES`] plus
    /// `config`/`types`).
    pub imports: Vec<String>,
    pre: Pre,
}

enum Pre {
    ResourceType(bindings::rt::ResourceTypePre<Host>),
    Integration(bindings::int::IntegrationPre<Host>),
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("hash", &self.hash)
            .field("kind", &self.kind)
            .field("imports", &self.imports)
            .finish()
    }
}

/// The content hash components are stored and cached under.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Who a call runs for and what it may use.
#[derive(Clone)]
pub struct CallCtx {
    pub tenant: String,
    pub plugin: String,
    pub grants: Arc<Grants>,
    pub config: Arc<HashMap<String, String>>,
    pub kv: Arc<dyn Kv>,
}

/// What a successful call produced besides its answer.
#[derive(Debug, Default)]
pub struct Effects {
    pub emitted: Vec<Emitted>,
    /// Fuel the call used.
    pub fuel: u64,
}

const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The engine, its linker and the loaded components.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Host>,
    limits: Limits,
    cache_dir: PathBuf,
    loaded: Mutex<HashMap<String, Arc<Plugin>>>,
    http: Net,
}

impl Runtime {
    /// The engine, linker and an HTTP client that reaches any granted host, inside addresses
    /// included (tests and tools); a server uses [`Runtime::guarded`].
    pub fn new(cfg: RuntimeConfig) -> Result<Arc<Runtime>, SetupError> {
        Self::guarded(cfg, None)
    }

    /// The engine, linker and HTTP client, plugins' connections held to `guard`; errors name
    /// what could not be set up.
    pub fn guarded(
        cfg: RuntimeConfig,
        guard: Option<Arc<dyn NetGuard>>,
    ) -> Result<Arc<Runtime>, SetupError> {
        let mut c = Config::new();
        c.consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(512 << 10)
            .async_stack_size(2 << 20)
            .wasm_component_model(true);
        if cfg.pool_instances > 0 {
            let n = cfg.pool_instances;
            let mut p = PoolingAllocationConfig::default();
            p.total_component_instances(n)
                .total_core_instances(n * 4)
                .total_memories(n * 2)
                .total_tables(n * 4)
                .max_memory_size(cfg.limits.memory_bytes)
                .max_core_instances_per_component(16)
                .max_memories_per_component(4)
                .max_tables_per_component(8);
            c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
        }
        let engine = Engine::new(&c).map_err(|e| SetupError::Engine(e.into_boxed_dyn_error()))?;
        let mut linker = Linker::<Host>::new(&engine);
        let linked = wasmtime_wasi::p2::add_to_linker_async(&mut linker).and_then(|()| {
            bindings::rt::ResourceType::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |h| h)
        });
        linked.map_err(|e| SetupError::Linker(e.into_boxed_dyn_error()))?;
        let cache_dir = cfg.cache_dir.join(engine_key(&engine));
        std::fs::create_dir_all(&cache_dir).map_err(|source| SetupError::Cache {
            path: cache_dir.clone(),
            source,
        })?;
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would connect past the guard.
            .no_proxy()
            .timeout(cfg.limits.http_timeout);
        if let Some(g) = &guard {
            client = client.dns_resolver(Arc::new(SharedResolver(g.resolver())));
        }
        let http = Net {
            client: client.build()?,
            guard,
        };
        spawn_ticker(&engine);
        Ok(Arc::new(Runtime {
            engine,
            linker,
            limits: cfg.limits,
            cache_dir,
            loaded: Mutex::new(HashMap::new()),
            http,
        }))
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compiles and type-checks a component (CPU-heavy: call it off the async runtime),
    /// writes the compiled code to the cache and keeps it loaded.
    pub fn compile(&self, bytes: &[u8]) -> Result<Arc<Plugin>, LoadError> {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(LoadError::NotComponent(""));
        }
        if bytes[4..8] == [1, 0, 0, 0] {
            return Err(LoadError::NotComponent(
                " (this is a core module; build for wasm32-wasip2 or wrap it with `wasm-tools component new`)",
            ));
        }
        let hash = content_hash(bytes);
        let compiled = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        // SAFETY: the bytes were produced by this engine a line above.
        let component = unsafe { Component::deserialize(&self.engine, &compiled) }
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let plugin = Arc::new(self.check(hash.clone(), &component)?);
        let path = self.cache_path(&hash);
        static TMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        if std::fs::write(&tmp, &compiled)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .is_err()
        {
            tracing::warn!(%hash, "could not write the compiled-component cache");
        }
        self.loaded
            .lock()
            .expect("lock")
            .insert(hash, plugin.clone());
        Ok(plugin)
    }

    /// A loaded component: from memory, else from the on-disk cache. `None` when it was
    /// never compiled by this engine (the caller then compiles it from its stored bytes).
    pub fn cached(&self, hash: &str) -> Option<Arc<Plugin>> {
        if let Some(p) = self.loaded.lock().expect("lock").get(hash) {
            return Some(p.clone());
        }
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let path = self.cache_path(hash);
        if !path.exists() {
            return None;
        }
        // SAFETY: files in the cache directory are only written by `compile`, by an engine
        // with the same compatibility key (the directory name).
        let component = match unsafe { Component::deserialize_file(&self.engine, &path) } {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%hash, error = %e, "dropping an unreadable compiled component");
                let _ = std::fs::remove_file(&path);
                return None;
            }
        };
        let plugin = Arc::new(self.check(hash.to_string(), &component).ok()?);
        self.loaded
            .lock()
            .expect("lock")
            .insert(hash.to_string(), plugin.clone());
        Some(plugin)
    }

    /// Forgets loaded components not in `keep` (their cache files stay).
    pub fn retain(&self, keep: &std::collections::HashSet<String>) {
        self.loaded
            .lock()
            .expect("lock")
            .retain(|h, _| keep.contains(h));
    }

    pub fn loaded_count(&self) -> usize {
        self.loaded.lock().expect("lock").len()
    }

    fn cache_path(&self, hash: &str) -> PathBuf {
        self.cache_dir.join(format!("{hash}.cwasm"))
    }

    /// Which world the component implements, what it imports, and whether it links.
    fn check(&self, hash: String, component: &Component) -> Result<Plugin, LoadError> {
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let kind = match (
            exports.iter().any(|e| e == RESOURCE_HOOKS),
            exports.iter().any(|e| e == HANDLER),
        ) {
            (true, false) => Kind::ResourceType,
            (false, true) => Kind::Integration,
            (true, true) => {
                return Err(LoadError::World(
                    "it exports both worlds' interfaces".into(),
                ));
            }
            (false, false) => {
                return Err(LoadError::World(format!(
                    "it exports neither {RESOURCE_HOOKS} nor {HANDLER} (exports: {})",
                    if exports.is_empty() {
                        "none".into()
                    } else {
                        exports.join(", ")
                    }
                )));
            }
        };
        let mut imports = Vec::new();
        for (name, _) in ty.imports(&self.engine) {
            if let Some(rest) = name.strip_prefix("neotenant:plugin/") {
                let iface = rest.split('@').next().unwrap_or(rest);
                if !rest.ends_with("@0.1.0") {
                    return Err(LoadError::World(format!(
                        "it imports {name}, another version"
                    )));
                }
                imports.push(iface.to_string());
            } else if !name.starts_with("wasi:") {
                return Err(LoadError::World(format!(
                    "it imports {name}, which this host does not provide"
                )));
            }
        }
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| LoadError::World(format!("{e:#}")))?;
        let pre = match kind {
            Kind::ResourceType => Pre::ResourceType(
                bindings::rt::ResourceTypePre::new(pre)
                    .map_err(|e| LoadError::World(format!("{e:#}")))?,
            ),
            Kind::Integration => Pre::Integration(
                bindings::int::IntegrationPre::new(pre)
                    .map_err(|e| LoadError::World(format!("{e:#}")))?,
            ),
        };
        Ok(Plugin {
            hash,
            kind,
            imports,
            pre,
        })
    }

    fn store(&self, ctx: CallCtx) -> Store<Host> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .table_elements(self.limits.table_elements)
            .instances(32)
            .tables(32)
            .memories(8)
            .build();
        let host = Host::new(
            ctx,
            limits::Limiter::new(limits),
            self.limits.clone(),
            self.http.clone(),
        );
        let mut store = Store::new(&self.engine, host);
        store.limiter(|h| h.limits_mut());
        store.set_fuel(self.limits.fuel).expect("fuel is enabled");
        let ticks = self.limits.timeout.as_millis() as u64 / EPOCH_TICK.as_millis() as u64 + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store
    }

    /// Runs one call: instantiates from the pre-instantiated component, calls, maps every
    /// way it can go wrong to a [`CallError`], and bounds the answer's size.
    async fn run<R, F>(
        &self,
        plugin: &Plugin,
        ctx: CallCtx,
        call: F,
    ) -> Result<(R, Effects), CallError>
    where
        F: for<'a> FnOnce(
            &'a mut Store<Host>,
            Instance,
        ) -> futures::future::BoxFuture<'a, wasmtime::Result<R>>,
        R: Answer,
    {
        let mut store = self.store(ctx);
        let timeout = self.limits.timeout;
        let result = {
            let fut = async {
                let inst = match &plugin.pre {
                    Pre::ResourceType(p) => {
                        Instance::ResourceType(p.instantiate_async(&mut store).await?)
                    }
                    Pre::Integration(p) => {
                        Instance::Integration(p.instantiate_async(&mut store).await?)
                    }
                };
                call(&mut store, inst).await
            };
            tokio::time::timeout(timeout, fut).await
        };
        let value = match result {
            Err(_) => return Err(CallError::Timeout(timeout.as_millis() as u64)),
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(v)) => v,
        };
        let size = value.size();
        if size > self.limits.output_bytes {
            return Err(CallError::Output(format!(
                "an answer of {size} bytes exceeds the limit of {} bytes",
                self.limits.output_bytes
            )));
        }
        let fuel = self.limits.fuel - store.get_fuel().unwrap_or(0);
        let emitted = store.into_data().take_emitted();
        Ok((value, Effects { emitted, fuel }))
    }

    /// The type a resource-type plugin provides.
    pub async fn describe(&self, p: &Plugin, ctx: CallCtx) -> Result<TypeInfo, CallError> {
        let (t, _) = self
            .run(p, ctx, |s, i| {
                Box::pin(async move { i.hooks()?.call_describe(s).await })
            })
            .await?;
        Ok(TypeInfo {
            schema: json_object(&t.schema, "schema")?,
            name: t.name,
            title: t.title,
            searchable: t.searchable,
            filterable: t.filterable,
            sortable: t.sortable,
            actions: t
                .actions
                .into_iter()
                .map(|a| (a.name, a.description))
                .collect(),
        })
    }

    /// Validates and normalises data; `Ok(Err(..))` is the plugin's verdict on the data.
    pub async fn validate(
        &self,
        p: &Plugin,
        ctx: CallCtx,
        data: &Value,
    ) -> Result<(Result<Value, Vec<FieldError>>, Effects), CallError> {
        let data = data.to_string();
        let (r, fx) = self
            .run(p, ctx, |s, i| {
                Box::pin(async move { i.hooks()?.call_validate(s, &data).await })
            })
            .await?;
        let r = match r {
            Ok(v) => Ok(json_object(&v, "normalised data")?),
            Err(errors) => Err(errors
                .into_iter()
                .map(|e| FieldError {
                    pointer: e.pointer,
                    message: e.message,
                })
                .collect()),
        };
        Ok((r, fx))
    }

    /// Runs the before- or after-change hook; `Ok(Err(message))` is a veto.
    pub async fn hook(
        &self,
        p: &Plugin,
        ctx: CallCtx,
        after: bool,
        change: &Change,
    ) -> Result<(Result<(), String>, Effects), CallError> {
        let c = bindings::rt::neotenant::plugin::types::Change {
            operation: change.operation,
            type_name: change.type_name.clone(),
            resource_id: change.resource_id.clone(),
            before: change.before.as_ref().map(|b| b.to_string()),
            after: change.after.to_string(),
            actor: change.actor.clone(),
        };
        self.run(p, ctx, |s, i| {
            Box::pin(async move {
                let h = i.hooks()?;
                if after {
                    h.call_after_change(s, &c).await
                } else {
                    h.call_before_change(s, &c).await
                }
            })
        })
        .await
    }

    /// A custom action; `Ok(Err(message))` is the plugin refusing it.
    pub async fn action(
        &self,
        p: &Plugin,
        ctx: CallCtx,
        name: &str,
        resource_id: &str,
        data: &Value,
        input: &Value,
    ) -> Result<(Result<ActionResult, String>, Effects), CallError> {
        let (name, id, data, input) = (
            name.to_string(),
            resource_id.to_string(),
            data.to_string(),
            input.to_string(),
        );
        let (r, fx) = self
            .run(p, ctx, |s, i| {
                Box::pin(async move { i.hooks()?.call_action(s, &name, &id, &data, &input).await })
            })
            .await?;
        let r = match r {
            Ok(a) => Ok(ActionResult {
                data: a
                    .data
                    .as_deref()
                    .map(|d| json_object(d, "action data"))
                    .transpose()?,
                output: serde_json::from_str(&a.output).map_err(|e| {
                    CallError::Output(format!("the action output is not JSON: {e}"))
                })?,
            }),
            Err(m) => Err(m),
        };
        Ok((r, fx))
    }

    /// Delivers one event to an integration; `Ok(Err(message))` asks for a retry.
    pub async fn on_event(
        &self,
        p: &Plugin,
        ctx: CallCtx,
        event: &Event,
    ) -> Result<(Result<(), String>, Effects), CallError> {
        let e = bindings::rt::neotenant::plugin::types::Event {
            id: event.id.clone(),
            kind: event.kind.clone(),
            subject: event.subject.clone(),
            data: event.data.to_string(),
            occurred_at: event.occurred_at.clone(),
        };
        self.run(p, ctx, |s, i| {
            Box::pin(async move {
                match i {
                    Instance::Integration(x) => {
                        x.neotenant_plugin_handler().call_on_event(s, &e).await
                    }
                    Instance::ResourceType(_) => {
                        Err(wasmtime::Error::msg("not an integration plugin"))
                    }
                }
            })
        })
        .await
    }
}

/// An instantiated component of either world.
pub enum Instance {
    ResourceType(bindings::rt::ResourceType),
    Integration(bindings::int::Integration),
}

impl Instance {
    fn hooks(&self) -> wasmtime::Result<&hooks::Guest> {
        match self {
            Instance::ResourceType(x) => Ok(x.neotenant_plugin_resource_hooks()),
            Instance::Integration(_) => Err(wasmtime::Error::msg("not a resource-type plugin")),
        }
    }
}

/// Size of what a plugin answered, for the output limit.
trait Answer {
    fn size(&self) -> usize;
}

impl Answer for String {
    fn size(&self) -> usize {
        self.len()
    }
}
impl Answer for () {
    fn size(&self) -> usize {
        0
    }
}
impl<T: Answer, E: Answer> Answer for Result<T, E> {
    fn size(&self) -> usize {
        match self {
            Ok(t) => t.size(),
            Err(e) => e.size(),
        }
    }
}
impl<T: Answer> Answer for Option<T> {
    fn size(&self) -> usize {
        self.as_ref().map_or(0, Answer::size)
    }
}
impl<T: Answer> Answer for Vec<T> {
    fn size(&self) -> usize {
        self.iter().map(Answer::size).sum()
    }
}
impl Answer for hooks::FieldError {
    fn size(&self) -> usize {
        self.pointer.len() + self.message.len()
    }
}
impl Answer for hooks::TypeInfo {
    fn size(&self) -> usize {
        self.name.len()
            + self.title.len()
            + self.schema.len()
            + self.searchable.size()
            + self.filterable.size()
            + self.sortable.size()
            + self
                .actions
                .iter()
                .map(|a| a.name.len() + a.description.len())
                .sum::<usize>()
    }
}
impl Answer for hooks::ActionResult {
    fn size(&self) -> usize {
        self.data.size() + self.output.len()
    }
}

fn json_object(s: &str, what: &str) -> Result<Value, CallError> {
    match serde_json::from_str::<Value>(s) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(CallError::Output(format!(
            "the {what} is not a JSON object"
        ))),
        Err(e) => Err(CallError::Output(format!("the {what} is not JSON: {e}"))),
    }
}

/// What a failed call's error means, by the error's type: a wasm trap (running out of fuel
/// and passing the epoch deadline are traps too), a growth the limiter refused, or a full
/// instance pool (the host's limit, not the plugin's fault); anything else is the plugin
/// trapping.
fn classify(e: &wasmtime::Error) -> CallError {
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => CallError::Cpu,
            Trap::Interrupt => CallError::Timeout(0),
            Trap::StackOverflow => CallError::Stack,
            Trap::AllocationTooLarge | Trap::TableOutOfBounds => CallError::Memory,
            other => CallError::Trap(other.to_string()),
        };
    }
    match e.downcast_ref::<LimitExceeded>() {
        Some(
            LimitExceeded::Memory(_) | LimitExceeded::Table(_) | LimitExceeded::MemoryGrowFailed,
        ) => return CallError::Memory,
        // The host failing to allocate a table is no limit the plugin broke.
        Some(LimitExceeded::TableGrowFailed) | None => {}
    }
    if e.is::<PoolConcurrencyLimitError>() {
        return CallError::Unavailable(format!("{e:#}"));
    }
    CallError::Trap(format!("{e:#}"))
}

fn engine_key(engine: &Engine) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("wasmtime-{}-{:016x}", env!("CARGO_PKG_VERSION"), h.finish())
}

/// Advances the engine's epoch every tick for as long as the engine lives.
fn spawn_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(e) = weak.upgrade() {
                e.increment_epoch();
                drop(e);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn the epoch thread");
}

/// Path helper for tests and benches: the first-party plugins built by `make plugins`.
pub fn dist_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/dist"))
}
