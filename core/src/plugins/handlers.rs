//! HTTP endpoints for plugins: a tenant's uploads (`/v1/plugins`), the marketplace as tenants
//! see it (`/v1/marketplace`), installations (`/v1/plugin-installations`) and publishing to the
//! marketplace (`/admin/v1/marketplace`, platform token). No rules here.

use salvo::oapi::endpoint;
use salvo::prelude::*;

use super::PluginsState;
use super::{DeadLetter, Failure, Install, InstallChange, InstallInput, Plugin, service};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::extract::{JsonBody, Path, dep};
use crate::http::reply::{NoContent, Reply};
use crate::rbac::Can;
use crate::rbac::need::{PluginsManage, PluginsRead, PluginsUpload};
use crate::resources::ResourcesState;

/// Largest upload body: the component limit plus room for the manifest and framing.
pub fn upload_limit(config: &crate::config::Config) -> usize {
    config.plugins.upload_limit()
}

/// Parts an upload body may have in all, and parts with a filename; more is 413 (like a body
/// above the limit), so a request cannot make the reader spool many temporary files.
const UPLOAD_PARTS: usize = 8;
const UPLOAD_FILES: usize = 4;

fn malformed(detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::MalformedMultipart, detail.into())
}

/// Reads an upload with salvo's `multipart/form-data` reader: the `component` (a WebAssembly
/// component, sent as a file part, i.e. with a filename) and `manifest` (JSON, a text or file
/// part). File parts are spooled to temporary files that go with the request. The upload is
/// at most `limit` bytes in all, the component at most `max_component`.
pub async fn read_upload(
    req: &mut Request,
    limit: usize,
    max_component: usize,
) -> ApiResult<(Vec<u8>, Vec<u8>)> {
    let is_form_data = req
        .content_type()
        .is_some_and(|m| m.type_() == mime::MULTIPART && m.subtype() == mime::FORM_DATA);
    if !is_form_data {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "uploads are multipart/form-data with the parts `component` and `manifest`",
        ));
    }
    req.set_form_limits(
        salvo::http::FormLimits::new()
            .max_parts(UPLOAD_PARTS)
            .max_files(UPLOAD_FILES),
    );
    let form = req.form_data_max_size(limit).await.map_err(|e| match e {
        salvo::http::ParseError::PayloadTooLarge => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("an upload may be at most {limit} bytes in at most {UPLOAD_PARTS} parts"),
        ),
        other => malformed(format!("cannot read the multipart body: {other}")),
    })?;
    if let Some(other) = form
        .fields
        .keys()
        .chain(form.files.keys())
        .find(|name| !matches!(name.as_str(), "component" | "manifest"))
    {
        return Err(malformed(format!(
            "unexpected part `{other}`: send `component` and `manifest`"
        )));
    }
    for name in ["component", "manifest"] {
        let count = form.fields.get_vec(name).map_or(0, Vec::len)
            + form.files.get_vec(name).map_or(0, Vec::len);
        if count > 1 {
            return Err(malformed(format!("two `{name}` parts")));
        }
    }
    let missing = || {
        malformed(
            "an upload has the parts `component` (the .wasm file) and `manifest` (plugin.json)",
        )
    };
    let component = match (
        form.files.get("component"),
        form.fields.contains_key("component"),
    ) {
        (Some(file), _) => file,
        (None, true) => {
            return Err(malformed(
                "the `component` part is binary: send it as a file (with a filename)",
            ));
        }
        (None, false) => return Err(missing()),
    };
    if component.size() > max_component as u64 {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("components may be at most {max_component} bytes"),
        ));
    }
    let manifest = match (form.files.get("manifest"), form.fields.get("manifest")) {
        (Some(file), _) => tokio::fs::read(file.path())
            .await
            .map_err(ApiError::internal)?,
        (None, Some(text)) => text.clone().into_bytes(),
        (None, None) => return Err(missing()),
    };
    let component = tokio::fs::read(component.path())
        .await
        .map_err(ApiError::internal)?;
    Ok((component, manifest))
}

fn uploaded(p: Plugin, created: bool, location: String) -> Reply<Plugin> {
    if created {
        Reply::created(p, location)
    } else {
        Reply::ok(p)
    }
}

/// The tenant's own plugins and their versions.
#[endpoint(tags("plugins"), status_codes(200, 401, 403))]
pub async fn list(can: Can<PluginsRead>, depot: &mut Depot) -> ApiResult<Reply<Vec<Plugin>>> {
    let tenant = can.caller.tenant_id().0;
    Ok(Reply::ok(
        service::list(&*dep::<PluginsState>(depot)?, Some(tenant)).await?,
    ))
}

/// Upload a plugin version (multipart: `component` = the .wasm component, `manifest` =
/// plugin.json). The component must implement the world the manifest names and import only
/// the host interfaces it asks for. 201 for a new version, 200 when these exact bytes are
/// this version already; versions never change (another component under the same version is
/// 409).
#[endpoint(
    tags("plugins"),
    status_codes(200, 201, 400, 401, 403, 409, 413, 415, 422)
)]
pub async fn upload(
    can: Can<PluginsUpload>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Reply<Plugin>> {
    let state = dep::<PluginsState>(depot)?;
    let (component, manifest) = read_upload(
        req,
        upload_limit(&state.config),
        state.config.plugins.max_component_bytes,
    )
    .await?;
    let tenant = can.caller.tenant_id().0;
    let by = can.caller.user_id().to_string();
    let (p, version, created) =
        service::upload(&state, Some(tenant), &by, component, &manifest).await?;
    let hash = p
        .versions
        .iter()
        .find(|v| v.version == version)
        .map(|v| v.hash.clone());
    crate::audit::record_alone(
        can.caller.db(),
        &can.caller.actor,
        crate::audit::Change {
            action: "plugin.uploaded",
            target_type: "plugin",
            target_id: Some(p.name.clone()),
            data: serde_json::json!({"version": version, "hash": hash, "new": created}),
        },
    )
    .await?;
    let location = format!("/v1/plugins/{}", p.name);
    Ok(uploaded(p, created, location))
}

/// One of the tenant's own plugins.
#[endpoint(tags("plugins"), status_codes(200, 401, 403, 404))]
pub async fn get(
    can: Can<PluginsRead>,
    name: Path<String>,
    depot: &mut Depot,
) -> ApiResult<Reply<Plugin>> {
    let tenant = can.caller.tenant_id().0;
    Ok(Reply::ok(
        service::get(&*dep::<PluginsState>(depot)?, Some(tenant), &name.0).await?,
    ))
}

/// The marketplace: published plugins any tenant may install.
#[endpoint(tags("plugins"), status_codes(200, 401, 403))]
pub async fn marketplace(
    _can: Can<PluginsRead>,
    depot: &mut Depot,
) -> ApiResult<Reply<Vec<Plugin>>> {
    Ok(Reply::ok(
        service::list(&*dep::<PluginsState>(depot)?, None).await?,
    ))
}

/// One marketplace plugin.
#[endpoint(tags("plugins"), status_codes(200, 401, 403, 404))]
pub async fn marketplace_get(
    _can: Can<PluginsRead>,
    name: Path<String>,
    depot: &mut Depot,
) -> ApiResult<Reply<Plugin>> {
    Ok(Reply::ok(
        service::get(&*dep::<PluginsState>(depot)?, None, &name.0).await?,
    ))
}

/// Installed plugins.
#[endpoint(tags("plugins"), status_codes(200, 401, 403))]
pub async fn installs(can: Can<PluginsRead>) -> ApiResult<Reply<Vec<Install>>> {
    Ok(Reply::ok(service::installs(&can.caller).await?))
}

/// Install a plugin (the tenant's own or from the marketplace) at a version, granting host
/// interfaces (only those the plugin asks for) and choosing each hook's failure mode. A
/// resource-type plugin registers its type; an integration receives events from now on.
#[endpoint(
    tags("plugins"),
    status_codes(201, 400, 401, 403, 404, 409, 413, 415, 422)
)]
pub async fn install(
    can: Can<PluginsManage>,
    body: JsonBody<InstallInput>,
    depot: &mut Depot,
) -> ApiResult<Reply<Install>> {
    let i = service::install(
        &*dep::<PluginsState>(depot)?,
        &*dep::<ResourcesState>(depot)?,
        &can.caller,
        &body.0,
    )
    .await?;
    let location = format!("/v1/plugin-installations/{}", i.name);
    Ok(Reply::created(i, location))
}

/// One installation.
#[endpoint(tags("plugins"), status_codes(200, 401, 403, 404))]
pub async fn get_install(can: Can<PluginsRead>, name: Path<String>) -> ApiResult<Reply<Install>> {
    Ok(Reply::ok(service::get_install(&can.caller, &name.0).await?))
}

/// Change an installation: `version` upgrades or downgrades (a resource type follows, 409 if
/// stored resources would not fit), and grants, settings, secrets, failure modes and
/// subscriptions change as given.
#[endpoint(
    tags("plugins"),
    status_codes(200, 400, 401, 403, 404, 409, 413, 415, 422)
)]
pub async fn change(
    can: Can<PluginsManage>,
    name: Path<String>,
    body: JsonBody<InstallChange>,
    depot: &mut Depot,
) -> ApiResult<Reply<Install>> {
    Ok(Reply::ok(
        service::change(
            &*dep::<PluginsState>(depot)?,
            &*dep::<ResourcesState>(depot)?,
            &can.caller,
            &name.0,
            &body.0,
            false,
        )
        .await?,
    ))
}

/// Return to the version installed before the last upgrade (or rollback).
#[endpoint(tags("plugins"), status_codes(200, 401, 403, 404, 409, 422))]
pub async fn rollback(
    can: Can<PluginsManage>,
    name: Path<String>,
    depot: &mut Depot,
) -> ApiResult<Reply<Install>> {
    Ok(Reply::ok(
        service::change(
            &*dep::<PluginsState>(depot)?,
            &*dep::<ResourcesState>(depot)?,
            &can.caller,
            &name.0,
            &InstallChange::default(),
            true,
        )
        .await?,
    ))
}

/// Enable an installation (also after the circuit breaker disabled it).
#[endpoint(tags("plugins"), status_codes(200, 401, 403, 404))]
pub async fn enable(
    can: Can<PluginsManage>,
    name: Path<String>,
    depot: &mut Depot,
) -> ApiResult<Reply<Install>> {
    Ok(Reply::ok(
        service::set_enabled(&*dep::<PluginsState>(depot)?, &can.caller, &name.0, true).await?,
    ))
}

/// Disable an installation: its hooks stop running (writes of its type then fail or go on
/// without it, per failure mode), an integration stops receiving events until enabled.
#[endpoint(tags("plugins"), status_codes(200, 401, 403, 404))]
pub async fn disable(
    can: Can<PluginsManage>,
    name: Path<String>,
    depot: &mut Depot,
) -> ApiResult<Reply<Install>> {
    Ok(Reply::ok(
        service::set_enabled(&*dep::<PluginsState>(depot)?, &can.caller, &name.0, false).await?,
    ))
}

/// Uninstall (a resource-type plugin only while its type holds no resources).
#[endpoint(tags("plugins"), status_codes(204, 401, 403, 404, 409))]
pub async fn uninstall(
    can: Can<PluginsManage>,
    name: Path<String>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    service::uninstall(&*dep::<ResourcesState>(depot)?, &can.caller, &name.0).await?;
    Ok(NoContent)
}

/// The installation's latest failed calls (newest first, at most 100).
#[endpoint(tags("plugins"), status_codes(200, 401, 403, 404))]
pub async fn failures(can: Can<PluginsRead>, name: Path<String>) -> ApiResult<Reply<Vec<Failure>>> {
    Ok(Reply::ok(service::failures(&can.caller, &name.0).await?))
}

/// Events an integration could not handle after every retry (newest first, at most 100).
#[endpoint(tags("plugins"), status_codes(200, 401, 403, 404))]
pub async fn dead_letters(
    can: Can<PluginsRead>,
    name: Path<String>,
) -> ApiResult<Reply<Vec<DeadLetter>>> {
    Ok(Reply::ok(
        service::dead_letters(&can.caller, &name.0).await?,
    ))
}

/// Publish a plugin version to the marketplace (platform token; multipart like a tenant
/// upload). The manifest's publisher is shown to tenants.
#[endpoint(tags("admin"), status_codes(200, 201, 400, 401, 409, 413, 415, 422))]
pub async fn publish(req: &mut Request, depot: &mut Depot) -> ApiResult<Reply<Plugin>> {
    let state = dep::<PluginsState>(depot)?;
    let (component, manifest) = read_upload(
        req,
        upload_limit(&state.config),
        state.config.plugins.max_component_bytes,
    )
    .await?;
    let (p, version, created) =
        service::upload(&state, None, "platform", component, &manifest).await?;
    tracing::info!(plugin = %p.name, %version, created, "marketplace publish");
    let location = format!("/admin/v1/marketplace/{}", p.name);
    Ok(uploaded(p, created, location))
}

/// The marketplace as the platform sees it.
#[endpoint(tags("admin"), status_codes(200, 401))]
pub async fn admin_marketplace(depot: &mut Depot) -> ApiResult<Reply<Vec<Plugin>>> {
    Ok(Reply::ok(
        service::list(&*dep::<PluginsState>(depot)?, None).await?,
    ))
}

pub fn router() -> Router {
    Router::new()
        .push(
            Router::with_path("plugins")
                .get(list)
                .post(upload)
                .push(Router::with_path("{name}").get(get)),
        )
        .push(
            Router::with_path("marketplace")
                .get(marketplace)
                .push(Router::with_path("{name}").get(marketplace_get)),
        )
        .push(
            Router::with_path("plugin-installations")
                .get(installs)
                .post(install)
                .push(
                    Router::with_path("{name}")
                        .get(get_install)
                        .patch(change)
                        .delete(uninstall)
                        .push(Router::with_path("rollback").post(rollback))
                        .push(Router::with_path("enable").post(enable))
                        .push(Router::with_path("disable").post(disable))
                        .push(Router::with_path("failures").get(failures))
                        .push(Router::with_path("dead-letters").get(dead_letters)),
                ),
        )
}

pub fn admin_router() -> Router {
    Router::with_path("admin/v1/marketplace")
        .hoop(crate::tenancy::handlers::AdminAuth)
        .get(admin_marketplace)
        .post(publish)
}
