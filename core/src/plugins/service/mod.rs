//! Rules for plugins: uploads (a tenant's own, or a platform publisher's to the
//! marketplace), installations and their changes, and what a failing plugin costs it (failure
//! records, the circuit breaker). Uploads are checked (component, world, manifest, described
//! type) before anything is stored; every installation change is one tenant transaction with
//! its audit entry and outbox event.
//!
//! `uploads` is the registry side (uploads, the marketplace, listing plugins), `installs` the
//! tenant side (install, change, enable, uninstall, failures and dead letters), `breaker` the
//! failure records and the breaker. This file holds what they share: compiled components
//! (`loaded`, `warm`) and the breaker's key. No SQL (`repo`) and no HTTP (`handlers`) here.

mod breaker;
mod installs;
mod uploads;

use std::sync::Arc;

use serde_json::{Value, json};
use uuid::Uuid;

use super::PluginsState;
use super::repo;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError, found};
use crate::resources::TypeInput;

pub use breaker::{count_failure, record_failure};
pub use installs::{
    change, dead_letters, failures, get_install, install, install_view, installs, reseal,
    set_enabled, uninstall,
};
pub use uploads::{get, list, upload};

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

/// The type input a resource-type plugin's description stands for.
pub fn type_input(info: &Value) -> ApiResult<TypeInput> {
    serde_json::from_value(json!({
        "name": info["name"], "title": info["title"], "schema": info["schema"],
        "searchable": info["searchable"], "filterable": info["filterable"],
        "sortable": info["sortable"],
    }))
    .map_err(|e| refused(format!("the described type is malformed: {e}"), vec![]))
}

/// The breaker's key for an installation at a version.
pub fn breaker_key(tenant: Uuid, name: &str, hash: &str) -> String {
    format!("{tenant}/{name}/{hash}")
}
