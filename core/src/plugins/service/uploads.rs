//! Uploads and the plugins they make: a tenant's own uploads and the marketplace (platform
//! uploads), in the platform registry. An upload is compiled, checked against its manifest
//! and, for a resource-type plugin, asked to describe its type, before anything is stored.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use neotenant_runtime::{CallCtx, Kind, Kv};
use serde_json::Value;
use uuid::Uuid;

use super::{field, refused, type_input};
use crate::db;
use crate::error::{ApiError, ApiResult, ErrorCode, found};
use crate::ids::PluginId;
use crate::plugins::manifest::{self, Manifest};
use crate::plugins::repo::{self, PluginRow, VersionRow};
use crate::plugins::{Plugin, PluginVersion, PluginsState};

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
    let m = Manifest::parse(manifest).map_err(|e| refused("the manifest is not valid", e))?;
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
