//! Rules for plugins: uploads (a tenant's own, or a platform publisher's to the
//! marketplace), installations and their changes. Uploads are checked (component, world,
//! manifest, described type) before anything is stored; every installation change is one
//! tenant transaction with its audit entry and outbox event.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use neotenant_runtime::{CallCtx, Kind, Kv};
use serde_json::{Value, json};
use uuid::Uuid;

use super::PluginsState;
use super::manifest::{self, Manifest, check_grants};
use super::repo::{self, InstallRow, PluginRow, VersionRow};
use super::{
    DeadLetter, Delivery, Failure, Grants, Install, InstallChange, InstallInput, Plugin,
    PluginVersion,
};
use crate::audit::{self, Actor, Change};
use crate::db::{self, TenantDb};
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError, found};
use crate::ids::PluginId;
use crate::rbac::Caller;
use crate::resources::ResourcesState;
use crate::resources::TypeInput;
use crate::resources::service::Ctx as ResourceCtx;

fn refused(detail: impl Into<String>, errors: Vec<FieldError>) -> ApiError {
    let mut e = ApiError::new(ErrorCode::PluginInvalid, detail.into());
    e.errors = errors;
    e
}

fn field(pointer: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        pointer: pointer.into(),
        message: message.into(),
    }
}

/// A compiled component: from memory or the disk cache, else compiled from the registry's
/// bytes (once per engine; logged, as it should only happen on a cold instance).
pub async fn loaded(state: &PluginsState, hash: &str) -> ApiResult<Arc<neotenant_runtime::Plugin>> {
    if let Some(p) = state.plugins.runtime.cached(hash) {
        return Ok(p);
    }
    let bytes = {
        let mut conn = state.registry.get().await?;
        found(
            repo::component_bytes(&mut conn, hash).await?,
            "plugin component",
        )?
    };
    tracing::info!(%hash, "compiling a plugin component that is not in the compiled cache");
    let rt = state.plugins.runtime.clone();
    tokio::task::spawn_blocking(move || rt.compile(&bytes))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Deletes components no version uses any more, then compiles every used one this engine
/// has not compiled yet (at start, in the background, so that no request waits for a
/// compilation).
pub async fn warm(state: Arc<PluginsState>) {
    let hashes = match state.registry.get().await {
        Ok(mut conn) => {
            match repo::delete_orphan_components(&mut conn).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed plugin components no version uses"),
                Err(e) => tracing::warn!(error = %e, "cannot remove unused plugin components"),
            }
            repo::all_hashes(&mut conn).await.unwrap_or_default()
        }
        Err(_) => return,
    };
    for hash in hashes {
        if let Err(e) = loaded(&state, &hash).await {
            tracing::warn!(%hash, error = %e, "cannot prepare a stored plugin component");
        }
    }
}

/// Key-value storage is not available while a plugin describes itself at upload.
struct NoKv;

impl Kv for NoKv {
    fn get(&self, _: String) -> BoxFuture<'static, Result<Option<Vec<u8>>, String>> {
        Box::pin(async { Err("not available while describing".into()) })
    }
    fn set(&self, _: String, _: Vec<u8>) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Err("not available while describing".into()) })
    }
    fn delete(&self, _: String) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Err("not available while describing".into()) })
    }
    fn keys(&self, _: String, _: u32) -> BoxFuture<'static, Result<Vec<String>, String>> {
        Box::pin(async { Err("not available while describing".into()) })
    }
}

/// The type input a resource-type plugin's description stands for.
pub fn type_input(info: &Value) -> ApiResult<TypeInput> {
    serde_json::from_value(json!({
        "name": info["name"], "title": info["title"], "schema": info["schema"],
        "searchable": info["searchable"], "filterable": info["filterable"],
        "sortable": info["sortable"],
    }))
    .map_err(|e| refused(format!("the described type is malformed: {e}"), vec![]))
}

/// Stores an upload: `owner` is the uploading tenant, or `None` for the marketplace. Answers
/// the plugin, the uploaded version and whether it is new (re-uploading the same component
/// with the same manifest is a no-op).
pub async fn upload(
    state: &PluginsState,
    owner: Option<Uuid>,
    by: &str,
    component: Vec<u8>,
    manifest: &[u8],
) -> ApiResult<(Plugin, String, bool)> {
    let m: Manifest = serde_json::from_slice(manifest).map_err(|e| {
        refused(
            "the manifest is not valid",
            vec![field("/manifest", e.to_string())],
        )
    })?;
    let errors = m.check();
    if !errors.is_empty() {
        return Err(refused("the manifest is not valid", errors));
    }
    let max = state.config.plugins.max_component_bytes;
    if component.len() > max {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("components may be at most {max} bytes"),
        ));
    }
    let hash = neotenant_runtime::content_hash(&component);
    let rt = state.plugins.runtime.clone();
    let (compiled, bytes) =
        tokio::task::spawn_blocking(move || (rt.compile(&component), component))
            .await
            .map_err(ApiError::internal)?;
    let compiled = compiled.map_err(|e| refused(e.to_string(), vec![]))?;
    let errors = m.contradictions(compiled.kind, &compiled.imports);
    if !errors.is_empty() {
        return Err(refused("the manifest does not match the component", errors));
    }
    let type_info = match compiled.kind {
        Kind::ResourceType => Some(describe(state, owner, &m, &compiled).await?),
        Kind::Integration => None,
    };
    let (plugin, created) = db::transaction(&state.registry, "BEGIN", async |tx| {
        let conn = tx.conn();
        let plugin = match repo::find_plugin(conn, owner, &m.name).await? {
            Some(p) if p.kind != m.kind => {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("plugin `{}` is a {} plugin", m.name, p.kind),
                ));
            }
            Some(p) => p,
            None => {
                let now = chrono::Utc::now();
                let p = PluginRow {
                    id: PluginId::generate().0,
                    owner_tenant: owner,
                    name: m.name.clone(),
                    kind: m.kind.clone(),
                    publisher: m.publisher.trim().to_string(),
                    description: m.description.clone(),
                    created_at: now,
                    updated_at: now,
                };
                repo::insert_plugin(conn, &p).await?;
                p
            }
        };
        let manifest = serde_json::to_value(&m).map_err(ApiError::internal)?;
        let created = match repo::version(conn, plugin.id, &m.version).await? {
            Some(v) if v.hash == hash && v.manifest == manifest => false,
            Some(_) => {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "version {} of `{}` exists with another component or manifest; versions never change, upload a new version",
                        m.version, m.name
                    ),
                ));
            }
            None => {
                repo::insert_component(conn, &hash, &bytes).await?;
                repo::insert_version(conn, plugin.id, &m.version, &hash, &manifest, type_info.as_ref(), by)
                    .await?;
                repo::touch_plugin(conn, plugin.id, m.publisher.trim(), &m.description).await?;
                true
            }
        };
        Ok((plugin, created))
    })
    .await?;
    Ok((get_row(state, plugin).await?, m.version, created))
}

/// Asks a resource-type component for its type and checks it like a declared type.
async fn describe(
    state: &PluginsState,
    owner: Option<Uuid>,
    m: &Manifest,
    compiled: &neotenant_runtime::Plugin,
) -> ApiResult<Value> {
    let ctx = CallCtx {
        tenant: owner.map_or_else(|| "marketplace".into(), |o| o.to_string()),
        plugin: m.name.clone(),
        grants: Arc::new(neotenant_runtime::Grants {
            logging: m.capabilities.logging,
            ..Default::default()
        }),
        config: Arc::new(HashMap::new()),
        kv: Arc::new(NoKv),
    };
    let t = state
        .plugins
        .runtime
        .describe(compiled, ctx)
        .await
        .map_err(|e| refused(format!("describing its type failed: {e}"), vec![]))?;
    let info = serde_json::to_value(&t).map_err(ApiError::internal)?;
    let input = type_input(&info)?;
    let mut errors = Vec::new();
    crate::resources::types::check(&input, &[], &mut errors);
    for (i, (name, _)) in t.actions.iter().enumerate() {
        if !crate::resources::types::is_name(name) {
            errors.push(field(
                &format!("/actions/{i}"),
                "action names match [a-z][a-z0-9_]{0,62}",
            ));
        }
    }
    if !errors.is_empty() {
        for e in &mut errors {
            e.pointer = format!("/type{}", e.pointer);
        }
        return Err(refused(
            "the type the component describes is not valid",
            errors,
        ));
    }
    Ok(info)
}

fn version_view(v: VersionRow) -> PluginVersion {
    let m: Option<Manifest> = serde_json::from_value(v.manifest).ok();
    PluginVersion {
        version: v.version,
        hash: v.hash,
        size: v.size,
        capabilities: m
            .as_ref()
            .map(|m| m.capabilities.clone())
            .unwrap_or_default(),
        events: m.map(|m| m.events).unwrap_or_default(),
        type_info: v.type_info,
        created_at: v.created_at,
    }
}

fn plugin_view(p: PluginRow, versions: Vec<VersionRow>) -> Plugin {
    Plugin {
        id: PluginId(p.id),
        name: p.name,
        kind: p.kind,
        publisher: p.publisher,
        description: p.description,
        source: if p.owner_tenant.is_some() {
            "tenant"
        } else {
            "marketplace"
        }
        .into(),
        versions: versions.into_iter().map(version_view).collect(),
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

async fn get_row(state: &PluginsState, p: PluginRow) -> ApiResult<Plugin> {
    let mut conn = state.registry.get().await?;
    let versions = repo::versions(&mut conn, &[p.id]).await?;
    Ok(plugin_view(p, versions))
}

/// A tenant's uploads (`owner`), or the marketplace (`None`).
pub async fn list(state: &PluginsState, owner: Option<Uuid>) -> ApiResult<Vec<Plugin>> {
    let mut conn = state.registry.get().await?;
    let plugins = repo::list_plugins(&mut conn, owner).await?;
    let ids: Vec<Uuid> = plugins.iter().map(|p| p.id).collect();
    let mut by: HashMap<Uuid, Vec<VersionRow>> = HashMap::new();
    for v in repo::versions(&mut conn, &ids).await? {
        by.entry(v.plugin_id).or_default().push(v);
    }
    Ok(plugins
        .into_iter()
        .map(|p| {
            let v = by.remove(&p.id).unwrap_or_default();
            plugin_view(p, v)
        })
        .collect())
}

pub async fn get(state: &PluginsState, owner: Option<Uuid>, name: &str) -> ApiResult<Plugin> {
    let p = {
        let mut conn = state.registry.get().await?;
        if !manifest::is_name(name) {
            return Err(ApiError::not_found("plugin"));
        }
        found(repo::find_plugin(&mut conn, owner, name).await?, "plugin")?
    };
    get_row(state, p).await
}

// ---------------------------------------------------------------- installations

/// The breaker's key for an installation at a version.
pub fn breaker_key(tenant: Uuid, name: &str, hash: &str) -> String {
    format!("{tenant}/{name}/{hash}")
}

pub fn install_view(r: InstallRow) -> Install {
    let secret_keys = r
        .secrets
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let delivery = (r.kind == "integration").then(|| Delivery {
        attempts: r.attempts,
        next_attempt_at: r.next_attempt_at,
        last_error: r.last_error.clone(),
    });
    Install {
        plugin_id: PluginId(r.plugin_id),
        source: r.source,
        kind: r.kind,
        version: r.version,
        hash: r.hash,
        previous_version: r.previous_version,
        grants: serde_json::from_value(r.grants).unwrap_or_default(),
        settings: serde_json::from_value(r.settings).unwrap_or_default(),
        secret_keys,
        failure_modes: serde_json::from_value(r.failure_modes).unwrap_or_default(),
        events: r.events,
        type_name: r.type_name,
        enabled: r.enabled,
        disabled_reason: r.disabled_reason,
        delivery,
        installed_at: r.installed_at,
        updated_at: r.updated_at,
        name: r.name,
    }
}

fn check_settings(pointer: &str, s: &BTreeMap<String, String>, errors: &mut Vec<FieldError>) {
    if s.len() > 50 {
        errors.push(field(pointer, "at most 50 entries"));
    }
    for (k, v) in s {
        if k.is_empty() || k.len() > 100 {
            errors.push(field(&format!("{pointer}/{k}"), "keys are 1-100 bytes"));
        }
        if v.len() > 4096 {
            errors.push(field(
                &format!("{pointer}/{k}"),
                "values are at most 4096 bytes",
            ));
        }
    }
}

fn check_events(m: &Manifest, events: &[String], errors: &mut Vec<FieldError>) {
    for (i, e) in events.iter().enumerate() {
        let p = format!("/events/{i}");
        if !manifest::is_event_pattern(e) {
            errors.push(field(&p, "must be a kind, a prefix ending in .* or *"));
        } else if !m.events.iter().any(|a| manifest::matches(a, e)) {
            errors.push(field(&p, "the plugin does not subscribe to this"));
        }
    }
}

/// The plugin row and the version an installation asks for (the newest when `version` is
/// absent).
async fn find_version(
    state: &PluginsState,
    owner: Option<Uuid>,
    plugin_id: Option<Uuid>,
    name: &str,
    version: Option<&str>,
) -> ApiResult<(PluginRow, VersionRow, Manifest)> {
    let mut conn = state.registry.get().await?;
    if !manifest::is_name(name) {
        return Err(ApiError::not_found("plugin"));
    }
    let p = found(repo::find_plugin(&mut conn, owner, name).await?, "plugin")?;
    if plugin_id.is_some_and(|id| id != p.id) {
        return Err(ApiError::not_found("plugin"));
    }
    let v = match version {
        Some(v) => found(repo::version(&mut conn, p.id, v).await?, "plugin version")?,
        None => found(
            repo::versions(&mut conn, &[p.id]).await?.into_iter().next(),
            "plugin version",
        )?,
    };
    let m: Manifest = serde_json::from_value(v.manifest.clone()).map_err(ApiError::internal)?;
    Ok((p, v, m))
}

fn change_entry(action: &'static str, r: &InstallRow, extra: Value) -> Change<'static> {
    let mut data = json!({
        "version": r.version, "hash": r.hash, "kind": r.kind, "source": r.source,
        "grants": r.grants, "settings": r.settings, "failure_modes": r.failure_modes,
        "events": r.events, "enabled": r.enabled,
    });
    if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    Change {
        action,
        target_type: "plugin",
        target_id: Some(r.name.clone()),
        data,
    }
}

async fn record(
    conn: &mut AsyncPgConnection,
    actor: &Actor,
    action: &'static str,
    r: &InstallRow,
    extra: Value,
) -> ApiResult<()> {
    audit::record(conn, actor, change_entry(action, r, extra)).await?;
    crate::outbox::emit(
        conn,
        action,
        "plugin",
        &r.name,
        json!({"version": r.version, "enabled": r.enabled}),
    )
    .await?;
    Ok(())
}

pub async fn install(
    state: &PluginsState,
    resources: &ResourcesState,
    caller: &Caller,
    input: &InstallInput,
) -> ApiResult<Install> {
    let tenant = caller.tenant_id().0;
    let owner = match input.source.as_str() {
        "tenant" => Some(tenant),
        "marketplace" => None,
        _ => {
            return Err(ApiError::validation(vec![field(
                "/source",
                "must be tenant or marketplace",
            )]));
        }
    };
    let (p, v, m) =
        find_version(state, owner, None, &input.plugin, input.version.as_deref()).await?;
    let mut errors = check_grants(&m, &input.grants);
    check_settings("/settings", &input.settings, &mut errors);
    check_settings("/secrets", &input.secrets, &mut errors);
    for k in input.settings.keys() {
        if input.secrets.contains_key(k) {
            errors.push(field(&format!("/secrets/{k}"), "also given as a setting"));
        }
    }
    let events = input.events.clone().unwrap_or_else(|| m.events.clone());
    if p.kind == "integration" {
        check_events(&m, &events, &mut errors);
    } else if input.events.is_some() {
        errors.push(field("/events", "only integrations subscribe to events"));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    loaded(state, &v.hash).await?;
    let row = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            if repo::install(conn, &p.name, false).await?.is_some() {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("`{}` is installed; change, upgrade or uninstall it", p.name),
                ));
            }
            let cursor = crate::outbox::head(conn).await?;
            let type_in = v.type_info.as_ref().map(type_input).transpose()?;
            let now = chrono::Utc::now();
            let row = InstallRow {
                name: p.name.clone(),
                plugin_id: p.id,
                source: input.source.clone(),
                kind: p.kind.clone(),
                version: v.version.clone(),
                hash: v.hash.clone(),
                previous_version: None,
                previous_hash: None,
                grants: serde_json::to_value(&input.grants).map_err(ApiError::internal)?,
                settings: serde_json::to_value(&input.settings).map_err(ApiError::internal)?,
                secrets: serde_json::to_value(&input.secrets).map_err(ApiError::internal)?,
                failure_modes: serde_json::to_value(input.failure_modes)
                    .map_err(ApiError::internal)?,
                events: if p.kind == "integration" {
                    events.clone()
                } else {
                    vec![]
                },
                type_name: type_in.as_ref().map(|t| t.name.clone()),
                enabled: true,
                disabled_reason: None,
                cursor_txid: cursor.txid,
                cursor_seq: cursor.seq,
                attempts: 0,
                next_attempt_at: None,
                last_error: None,
                installed_at: now,
                updated_at: now,
            };
            repo::insert_install(conn, &row).await?;
            if let Some(t) = &type_in {
                let rctx = ResourceCtx {
                    state: resources,
                    caller,
                };
                crate::resources::service::create_type_in(&rctx, conn, t, Some(&row.name)).await?;
            }
            record(conn, &caller.actor, "plugin.installed", &row, json!({})).await?;
            Ok(row)
        })
        .await?;
    state
        .plugins
        .breaker
        .reset(&breaker_key(tenant, &row.name, &row.hash));
    Ok(install_view(row))
}

pub async fn installs(caller: &Caller) -> ApiResult<Vec<Install>> {
    let rows = caller
        .db()
        .transaction(async |tx| Ok::<_, ApiError>(repo::installs(tx.conn()).await?))
        .await?;
    Ok(rows.into_iter().map(install_view).collect())
}

/// An installation (404 if there is none), row-locked for the transaction when `lock`.
async fn install_row(
    conn: &mut AsyncPgConnection,
    name: &str,
    lock: bool,
) -> ApiResult<InstallRow> {
    if !manifest::is_name(name) {
        return Err(ApiError::not_found("plugin installation"));
    }
    found(
        repo::install(conn, name, lock).await?,
        "plugin installation",
    )
}

pub async fn get_install(caller: &Caller, name: &str) -> ApiResult<Install> {
    let row = caller
        .db()
        .transaction(async |tx| install_row(tx.conn(), name, false).await)
        .await?;
    Ok(install_view(row))
}

/// Changes an installation: version (upgrade, downgrade or `rollback`), grants, settings,
/// secrets, failure modes, subscriptions.
pub async fn change(
    state: &PluginsState,
    resources: &ResourcesState,
    caller: &Caller,
    name: &str,
    input: &InstallChange,
    rollback: bool,
) -> ApiResult<Install> {
    let tenant = caller.tenant_id().0;
    let row = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let old = install_row(conn, name, true).await?;
            let version = if rollback {
                Some(old.previous_version.clone().ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::Conflict,
                        "there is no earlier version to roll back to",
                    )
                })?)
            } else {
                input.version.clone()
            };
            let owner = (old.source == "tenant").then_some(tenant);
            let (_, v, m) = find_version(
                state,
                owner,
                Some(old.plugin_id),
                &old.name,
                Some(version.as_deref().unwrap_or(&old.version)),
            )
            .await?;
            let grants: Grants = match &input.grants {
                Some(g) => g.clone(),
                None => serde_json::from_value(old.grants.clone()).unwrap_or_default(),
            };
            let mut errors = check_grants(&m, &grants);
            if let Some(s) = &input.settings {
                check_settings("/settings", s, &mut errors);
            }
            if let Some(s) = &input.secrets {
                check_settings("/secrets", s, &mut errors);
            }
            let events = input.events.clone().unwrap_or_else(|| old.events.clone());
            if old.kind == "integration" {
                check_events(&m, &events, &mut errors);
            } else if input.events.is_some() {
                errors.push(field("/events", "only integrations subscribe to events"));
            }
            if !errors.is_empty() {
                return Err(ApiError::validation(errors));
            }
            let mut row = old.clone();
            let upgraded = v.hash != old.hash || v.version != old.version;
            if upgraded {
                loaded(state, &v.hash).await?;
                row.previous_version = Some(old.version.clone());
                row.previous_hash = Some(old.hash.clone());
                row.version = v.version.clone();
                row.hash = v.hash.clone();
                if let (Some(type_name), Some(info)) = (&old.type_name, &v.type_info) {
                    let t = type_input(info)?;
                    if &t.name != type_name {
                        return Err(ApiError::validation(vec![field(
                            "/version",
                            format!(
                                "version {} provides the type `{}`, not `{type_name}`",
                                v.version, t.name
                            ),
                        )]));
                    }
                    let rctx = ResourceCtx {
                        state: resources,
                        caller,
                    };
                    crate::resources::service::replace_type_in(
                        &rctx,
                        conn,
                        type_name,
                        &t,
                        Some(name),
                    )
                    .await?;
                }
            }
            row.grants = serde_json::to_value(&grants).map_err(ApiError::internal)?;
            if let Some(s) = &input.settings {
                row.settings = serde_json::to_value(s).map_err(ApiError::internal)?;
            }
            if let Some(s) = &input.secrets {
                row.secrets = serde_json::to_value(s).map_err(ApiError::internal)?;
            }
            if let Some(f) = input.failure_modes {
                row.failure_modes = serde_json::to_value(f).map_err(ApiError::internal)?;
            }
            row.events = events;
            repo::update_install(conn, &row).await?;
            let action = match (rollback, upgraded) {
                (true, _) => "plugin.rolled_back",
                (false, true) => "plugin.upgraded",
                (false, false) => "plugin.configured",
            };
            record(
                conn,
                &caller.actor,
                action,
                &row,
                json!({"from": old.version}),
            )
            .await?;
            Ok(row)
        })
        .await?;
    state
        .plugins
        .breaker
        .reset(&breaker_key(tenant, &row.name, &row.hash));
    Ok(install_view(row))
}

/// Enables or disables an installation (enabling also clears a tripped breaker and an
/// integration's retry wait).
pub async fn set_enabled(
    state: &PluginsState,
    caller: &Caller,
    name: &str,
    enabled: bool,
) -> ApiResult<Install> {
    let tenant = caller.tenant_id().0;
    let row = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let mut row = install_row(conn, name, true).await?;
            if row.enabled == enabled {
                return Ok::<_, ApiError>(row);
            }
            row.enabled = enabled;
            row.disabled_reason = (!enabled).then(|| "disabled by an administrator".to_string());
            if enabled {
                row.attempts = 0;
                row.next_attempt_at = None;
            }
            repo::update_install(conn, &row).await?;
            let action = if enabled {
                "plugin.enabled"
            } else {
                "plugin.disabled"
            };
            record(conn, &caller.actor, action, &row, json!({})).await?;
            Ok(row)
        })
        .await?;
    state
        .plugins
        .breaker
        .reset(&breaker_key(tenant, &row.name, &row.hash));
    Ok(install_view(row))
}

/// Removes an installation; a resource-type plugin only while its type holds no resources.
pub async fn uninstall(resources: &ResourcesState, caller: &Caller, name: &str) -> ApiResult<()> {
    caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let row = install_row(conn, name, true).await?;
            if let Some(t) = &row.type_name {
                let rctx = ResourceCtx {
                    state: resources,
                    caller,
                };
                crate::resources::service::delete_type_in(&rctx, conn, t, Some(name)).await?;
            }
            repo::delete_install(conn, name).await?;
            record(conn, &caller.actor, "plugin.uninstalled", &row, json!({})).await?;
            Ok(())
        })
        .await
}

pub async fn failures(caller: &Caller, name: &str) -> ApiResult<Vec<Failure>> {
    caller
        .db()
        .transaction(async |tx| {
            install_row(tx.conn(), name, false).await?;
            Ok(repo::failures(tx.conn(), name, 100).await?)
        })
        .await
}

pub async fn dead_letters(caller: &Caller, name: &str) -> ApiResult<Vec<DeadLetter>> {
    caller
        .db()
        .transaction(async |tx| {
            install_row(tx.conn(), name, false).await?;
            Ok(repo::dead_letters(tx.conn(), name, 100).await?)
        })
        .await
}

// ---------------------------------------------------------------- failures and the breaker

/// Records a failed call in its own transaction (the request's may roll back).
pub async fn record_failure(
    db: &TenantDb,
    name: &str,
    hook: &str,
    code: &str,
    message: &str,
    subject: Option<&str>,
    fail_open: bool,
) {
    let r = db
        .transaction(async |tx| {
            let conn = tx.conn();
            repo::insert_failure(conn, name, hook, code, message, subject, fail_open).await?;
            Ok::<_, ApiError>(())
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(plugin = %name, error = %e, "cannot record a plugin failure");
    }
}

/// Counts a failed call; when the breaker trips, disables the installation (its own
/// transaction, audited as the system) and says so in the log.
pub async fn count_failure(
    state: &PluginsState,
    tenant: Uuid,
    db: &TenantDb,
    name: &str,
    hash: &str,
    last: &str,
) {
    if !state
        .plugins
        .breaker
        .failure(&breaker_key(tenant, name, hash))
    {
        return;
    }
    let reason = format!(
        "circuit breaker: {} consecutive failures (last: {last})",
        state.config.plugins.breaker_threshold
    );
    let r = db
        .transaction(async |tx| {
            let conn = tx.conn();
            if !repo::disable(conn, name, &reason).await? {
                return Ok(false);
            }
            let row = found(
                repo::install(conn, name, false).await?,
                "plugin installation",
            )?;
            let actor = Actor::system(&state.audit_recent, tenant, db);
            record(
                conn,
                &actor,
                "plugin.disabled",
                &row,
                json!({"reason": reason}),
            )
            .await?;
            Ok::<_, ApiError>(true)
        })
        .await;
    match r {
        Ok(true) => tracing::warn!(%tenant, plugin = %name, %reason, "plugin disabled"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(%tenant, plugin = %name, error = %e, "cannot disable a failing plugin")
        }
    }
}
