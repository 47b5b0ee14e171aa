//! A resource type's plugin on the write path: validation and normalisation, the before- and
//! after-change hooks and custom actions, each settled by the installation's failure mode.
//!
//! A plugin fault (CPU, memory, stack, timeout, trap, garbage) is recorded, counts toward the
//! circuit breaker and then either blocks the write (`closed`, 424 `plugin-failed`) or lets it
//! through unchanged (`open`). A plugin's verdict — field errors or a veto — is not a fault:
//! it is the answer (422). Events a plugin emits are written to the outbox in the write's
//! transaction. This module never opens the write transaction itself.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use diesel_async::AsyncPgConnection;
use jsonschema::Validator;
use neotenant_runtime::{ActionResult, CallCtx, CallError, Effects};
use serde_json::Value;
use uuid::Uuid;

use super::PluginsState;
use super::repo::{self, InstallRow};
use super::service::{breaker_key, count_failure, loaded, record_failure};
use super::{FailureMode, FailureModes};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::resources::hooks::{Seen, TypeHooks, TypePlugin};

/// The plugin bound to a resource type for one write.
pub struct Bound {
    state: Arc<PluginsState>,
    install: InstallRow,
    modes: FailureModes,
    plugin: Option<Arc<neotenant_runtime::Plugin>>,
    call: CallCtx,
    tenant: Uuid,
    db: TenantDb,
}

/// The installation providing `type_name`, ready to call (`None` for declarative types).
pub async fn bind(
    state: &Arc<PluginsState>,
    tenant: Uuid,
    db: &TenantDb,
    conn: &mut AsyncPgConnection,
    type_name: &str,
) -> ApiResult<Option<Bound>> {
    let Some(install) = repo::install_for_type(conn, type_name).await? else {
        return Ok(None);
    };
    let plugin = if install.enabled {
        Some(loaded(state, &install.hash).await?)
    } else {
        None
    };
    let rules = crate::settings::service::integrations(&state.settings, tenant, conn).await?;
    Ok(Some(Bound::new(
        state.clone(),
        tenant,
        db,
        install,
        plugin,
        &rules,
    )))
}

/// Settings and secrets as the plugin's `config` interface serves them.
pub fn config_of(
    keyring: &crate::crypto::Keyring,
    tenant: Uuid,
    install: &InstallRow,
) -> HashMap<String, String> {
    let mut config: HashMap<String, String> =
        serde_json::from_value(install.settings.clone()).unwrap_or_default();
    config.extend(super::secrets::open(
        keyring,
        tenant,
        &install.name,
        &install.secrets,
    ));
    config
}

/// The call context of an installation. Its HTTP grants are narrowed to the hosts the
/// tenant's settings (`integrations.allowed_hosts`) list, when they list any.
pub fn call_ctx(
    keyring: &crate::crypto::Keyring,
    tenant: Uuid,
    db: &TenantDb,
    install: &InstallRow,
    rules: &crate::settings::IntegrationSettings,
) -> CallCtx {
    let mut grants: super::Grants =
        serde_json::from_value(install.grants.clone()).unwrap_or_default();
    grants
        .http
        .retain(|g| rules.host_allowed(crate::netguard::grant_parts(g).0));
    CallCtx {
        tenant: tenant.to_string(),
        plugin: install.name.clone(),
        grants: Arc::new(grants),
        config: Arc::new(config_of(keyring, tenant, install)),
        kv: Arc::new(super::kv::DbKv {
            db: db.clone(),
            plugin: install.name.clone(),
        }),
    }
}

/// Writes what a plugin emitted to the outbox (in the caller's transaction).
pub async fn emit(conn: &mut AsyncPgConnection, plugin: &str, fx: Effects) -> ApiResult<()> {
    for e in fx.emitted {
        crate::outbox::emit(
            conn,
            &format!("plugin.{plugin}.{}", e.kind),
            "plugin",
            &e.subject,
            e.data,
        )
        .await?;
    }
    Ok(())
}

impl Bound {
    fn new(
        state: Arc<PluginsState>,
        tenant: Uuid,
        db: &TenantDb,
        install: InstallRow,
        plugin: Option<Arc<neotenant_runtime::Plugin>>,
        rules: &crate::settings::IntegrationSettings,
    ) -> Bound {
        Bound {
            call: call_ctx(&state.keyring, tenant, db, &install, rules),
            state,
            modes: serde_json::from_value(install.failure_modes.clone()).unwrap_or_default(),
            plugin,
            tenant,
            db: db.clone(),
            install,
        }
    }

    /// The component, unless the installation is disabled: then `Ok(None)` when failing
    /// open, 424 when failing closed.
    fn active(&self, mode: FailureMode) -> ApiResult<Option<&neotenant_runtime::Plugin>> {
        match (&self.plugin, mode) {
            (Some(p), _) => Ok(Some(p)),
            (None, FailureMode::Open) => Ok(None),
            (None, FailureMode::Closed) => Err(ApiError::new(
                ErrorCode::PluginFailed,
                format!(
                    "plugin `{}` is disabled ({}); enable it to write resources of its type",
                    self.install.name,
                    self.install
                        .disabled_reason
                        .as_deref()
                        .unwrap_or("no reason given")
                ),
            )),
        }
    }

    /// Runs a plugin call whose key-value operations execute on `conn` (the write's
    /// transaction), serving them while the call runs.
    async fn in_tx<T, F>(
        &self,
        hook: &'static str,
        conn: &mut AsyncPgConnection,
        call: impl FnOnce(CallCtx) -> F,
    ) -> T
    where
        F: std::future::Future<Output = T>,
    {
        let started = std::time::Instant::now();
        let r = self.serve_kv(conn, call).await;
        crate::metrics::plugin_call(hook, started.elapsed());
        r
    }

    /// Runs a call, answering its key-value operations on `conn` meanwhile.
    async fn serve_kv<T, F>(
        &self,
        conn: &mut AsyncPgConnection,
        call: impl FnOnce(CallCtx) -> F,
    ) -> T
    where
        F: std::future::Future<Output = T>,
    {
        let (kv, mut ops) = super::kv::TxKv::channel();
        let ctx = CallCtx {
            kv: Arc::new(kv),
            ..self.call.clone()
        };
        let fut = call(ctx);
        tokio::pin!(fut);
        loop {
            tokio::select! {
                r = &mut fut => return r,
                Some(op) = ops.recv() => super::kv::serve(conn, &self.install.name, op).await,
            }
        }
    }

    /// Turns a call's outcome into the answer, applying the failure mode: `Ok(None)` means
    /// "failed, but open: go on without it".
    async fn settle<T>(
        &self,
        hook: &'static str,
        mode: FailureMode,
        subject: Option<&str>,
        r: Result<T, CallError>,
    ) -> ApiResult<Option<T>> {
        let key = breaker_key(self.tenant, &self.install.name, &self.install.hash);
        match r {
            Ok(v) => {
                self.state.plugins.breaker.success(&key);
                Ok(Some(v))
            }
            Err(CallError::Unavailable(m)) => Err(ApiError::new(
                ErrorCode::Unavailable,
                "the plugin runtime is at capacity; retry shortly",
            )
            .with_source(m)),
            Err(e) => {
                self.state
                    .metrics
                    .plugin_failures
                    .with_label_values(&[hook, e.code()])
                    .inc();
                let open = mode == FailureMode::Open;
                let message = e.to_string();
                record_failure(
                    &self.db,
                    &self.install.name,
                    hook,
                    e.code(),
                    &message,
                    subject,
                    open,
                )
                .await;
                count_failure(
                    &self.state,
                    self.tenant,
                    &self.db,
                    &self.install.name,
                    &self.install.hash,
                    &message,
                )
                .await;
                if open {
                    Ok(None)
                } else {
                    Err(ApiError::new(
                        ErrorCode::PluginFailed,
                        format!("plugin `{}` failed in {hook}: {message}", self.install.name),
                    ))
                }
            }
        }
    }
}

#[async_trait]
impl TypePlugin for Bound {
    fn name(&self) -> &str {
        &self.install.name
    }

    /// Validates and normalises data (already valid against the schema); the normalised
    /// data must satisfy the schema too, or the plugin is at fault.
    async fn validate(
        &self,
        conn: &mut AsyncPgConnection,
        validator: &Validator,
        data: &Value,
        subject: Option<Uuid>,
    ) -> ApiResult<Value> {
        let mode = self.modes.validate;
        let Some(p) = self.active(mode)? else {
            return Ok(data.clone());
        };
        let r = self
            .in_tx("validate", conn, |ctx| {
                self.state.plugins.runtime.validate(p, ctx, data)
            })
            .await
            .and_then(|(verdict, fx)| match verdict {
                Ok(v) => match crate::resources::types::validate(validator, &v, "").first() {
                    Some(e) => Err(CallError::Output(format!(
                        "its normalised data does not satisfy the type's schema ({}: {})",
                        e.pointer, e.message
                    ))),
                    None => Ok((Ok(v), fx)),
                },
                Err(errors) => Ok((Err(errors), fx)),
            });
        let subject = subject.map(|s| s.to_string());
        match self.settle("validate", mode, subject.as_deref(), r).await? {
            None => Ok(data.clone()),
            Some((Ok(v), fx)) => {
                emit(conn, &self.install.name, fx).await?;
                Ok(v)
            }
            Some((Err(errors), _)) => Err(ApiError::validation(
                errors
                    .into_iter()
                    .take(100)
                    .map(|e| FieldError {
                        pointer: format!("/data{}", e.pointer),
                        message: e.message,
                    })
                    .collect(),
            )),
        }
    }

    /// Runs the before- (`after == false`) or after-change hook.
    async fn hook(
        &self,
        conn: &mut AsyncPgConnection,
        after: bool,
        seen: Seen<'_>,
    ) -> ApiResult<()> {
        let (mode, hook) = if after {
            (self.modes.after_change, "after_change")
        } else {
            (self.modes.before_change, "before_change")
        };
        let Some(p) = self.active(mode)? else {
            return Ok(());
        };
        let change = neotenant_runtime::Change {
            operation: seen.operation,
            type_name: seen.type_name.to_string(),
            resource_id: crate::ids::ResourceId(seen.resource_id).to_string(),
            before: seen.before.cloned(),
            after: seen.after.clone(),
            actor: seen.actor.to_string(),
        };
        let r = self
            .in_tx(hook, conn, |ctx| {
                self.state.plugins.runtime.hook(p, ctx, after, &change)
            })
            .await;
        match self
            .settle(hook, mode, Some(&change.resource_id), r)
            .await?
        {
            None => Ok(()),
            Some((Ok(()), fx)) => emit(conn, &self.install.name, fx).await,
            Some((Err(veto), _)) => Err(ApiError::new(
                ErrorCode::PluginVeto,
                format!("plugin `{}` refused: {}", self.install.name, clip(&veto)),
            )),
        }
    }

    /// Runs a custom action (always failing closed).
    async fn action(
        &self,
        conn: &mut AsyncPgConnection,
        name: &str,
        resource_id: Uuid,
        data: &Value,
        input: &Value,
    ) -> ApiResult<ActionResult> {
        let p = self
            .active(FailureMode::Closed)?
            .expect("closed mode answers or errs");
        let id = crate::ids::ResourceId(resource_id).to_string();
        let r = self
            .in_tx("action", conn, |ctx| {
                self.state
                    .plugins
                    .runtime
                    .action(p, ctx, name, &id, data, input)
            })
            .await;
        match self
            .settle("action", FailureMode::Closed, Some(&id), r)
            .await?
        {
            None => unreachable!("closed mode never goes on without the plugin"),
            Some((Ok(result), fx)) => {
                emit(conn, &self.install.name, fx).await?;
                Ok(result)
            }
            Some((Err(refusal), _)) => Err(ApiError::new(
                ErrorCode::PluginVeto,
                format!("plugin `{}` refused: {}", self.install.name, clip(&refusal)),
            )),
        }
    }

    /// The custom actions the installed version declares.
    async fn actions(&self) -> ApiResult<Vec<String>> {
        let state = &self.state;
        let mut conn = state.registry.get().await?;
        let v = repo::version(&mut conn, self.install.plugin_id, &self.install.version).await?;
        Ok(v.and_then(|v| v.type_info)
            .map(|t| {
                t["actions"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.get(0).and_then(Value::as_str).map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .unwrap_or_default())
    }
}

fn clip(s: &str) -> String {
    let s: String = s.chars().take(500).collect();
    if s.is_empty() {
        "no reason given".into()
    } else {
        s
    }
}

/// The plugin side of the resources' hooks port: finds and calls the installation that
/// provides a type.
pub struct PluginTypeHooks(pub Arc<PluginsState>);

#[async_trait]
impl TypeHooks for PluginTypeHooks {
    async fn bind(
        &self,
        tenant: Uuid,
        db: &TenantDb,
        conn: &mut AsyncPgConnection,
        type_name: &str,
    ) -> ApiResult<Option<Box<dyn TypePlugin>>> {
        Ok(bind(&self.0, tenant, db, conn, type_name)
            .await?
            .map(|b| Box::new(b) as Box<dyn TypePlugin>))
    }
}
