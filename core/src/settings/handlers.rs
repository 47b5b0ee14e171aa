//! HTTP endpoints of tenant settings under `/v1/settings`: read (with an ETag), merge-patch
//! (`If-Match`), the catalogue, the custom schema, versions, diffs, rollback and the branding
//! logo. Parses, calls one service function, answers; no SQL.

use salvo::oapi::endpoint;
use salvo::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use super::{
    CatalogueView, DiffView, LogoSaved, SettingsState, SettingsView, VersionView, service,
};
use crate::error::ApiResult;
use crate::http::extract::{
    IfMatch, JsonBody, ListParams, Page, Path, dep, read_file_part, version_query,
};
use crate::http::reply::{Binary, Reply};
use crate::rbac::need::{SettingsRead, SettingsUpdate};
use crate::rbac::{Caller, Can};

fn view(eff: &super::Effective) -> Reply<SettingsView> {
    Reply::ok(SettingsView::from(eff)).with_etag(eff.etag())
}

/// Every setting of the tenant: its own values over the platform's defaults. The ETag is the
/// version (`"s<version>"`).
#[endpoint(
    operation_id = "neotenant.settings.get",
    tags("settings"),
    status_codes(200, 401, 403)
)]
pub async fn get_settings(
    can: Can<SettingsRead>,
    depot: &mut Depot,
) -> ApiResult<Reply<SettingsView>> {
    let state = dep::<SettingsState>(depot)?;
    let eff = service::effective(&state, &can.tenant.0).await?;
    Ok(view(&eff))
}

/// Change settings with a JSON merge patch (RFC 7396; `null` restores a default). Every
/// problem is listed in one 422 and nothing changes; with `If-Match`, only if the settings are
/// still at that version (else 412). Each change is a new version.
#[endpoint(
    operation_id = "neotenant.settings.patch",
    tags("settings"),
    status_codes(200, 400, 401, 403, 412, 415, 422)
)]
pub async fn patch_settings(
    can: Can<SettingsUpdate>,
    if_match: IfMatch,
    body: JsonBody<Value>,
    depot: &mut Depot,
) -> ApiResult<Reply<SettingsView>> {
    let state = dep::<SettingsState>(depot)?;
    let eff = service::patch(&state, &can, &body.0, if_match.0.as_deref()).await?;
    Ok(view(&eff))
}

/// The catalogue: the JSON Schema of every platform setting, the defaults, the read-only
/// keys, and the tenant's custom schema.
#[endpoint(
    operation_id = "neotenant.settings.catalogue",
    tags("settings"),
    status_codes(200, 401, 403)
)]
pub async fn get_catalogue(
    can: Can<SettingsRead>,
    depot: &mut Depot,
) -> ApiResult<Reply<CatalogueView>> {
    let state = dep::<SettingsState>(depot)?;
    Ok(Reply::ok(service::catalogue(&state, &can.tenant.0).await?))
}

/// The JSON Schema of the tenant's custom settings (`null` removes it).
#[derive(Debug, Deserialize, salvo::oapi::ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.settings.CustomSchema"))]
pub struct CustomSchema {
    /// An object schema; values live under `custom` in the settings.
    pub schema: Value,
}

/// Define the tenant's own settings: a JSON Schema (`"type": "object"`) that values under
/// `custom` must satisfy; the stored values must satisfy it too. A new version.
#[endpoint(
    operation_id = "neotenant.settings.put_custom_schema",
    tags("settings"),
    status_codes(200, 400, 401, 403, 412, 422)
)]
pub async fn put_custom_schema(
    can: Can<SettingsUpdate>,
    if_match: IfMatch,
    body: JsonBody<CustomSchema>,
    depot: &mut Depot,
) -> ApiResult<Reply<SettingsView>> {
    let state = dep::<SettingsState>(depot)?;
    let eff =
        service::put_custom_schema(&state, &can, &body.0.schema, if_match.0.as_deref()).await?;
    Ok(view(&eff))
}

/// The settings' versions, newest first, each with its author, time, reason and diff.
#[endpoint(
    operation_id = "neotenant.settings.versions",
    tags("settings"),
    status_codes(200, 400, 401, 403)
)]
pub async fn list_versions(
    can: Can<SettingsRead>,
    page: ListParams<i32>,
) -> ApiResult<Reply<Page<VersionView>>> {
    let rows = service::versions(&can.tenant.0, page.after, page.limit + 1).await?;
    Ok(Reply::ok(Page::from_rows(rows, page.limit, |v| v.version)))
}

/// One version, with the state it set.
#[endpoint(
    operation_id = "neotenant.settings.version",
    tags("settings"),
    status_codes(200, 400, 401, 403, 404)
)]
pub async fn get_version(
    can: Can<SettingsRead>,
    version: Path<i32>,
) -> ApiResult<Reply<VersionView>> {
    Ok(Reply::ok(service::version(&can.tenant.0, version.0).await?))
}

/// What changed between two versions: `?from=&to=`.
#[endpoint(
    operation_id = "neotenant.settings.diff",
    tags("settings"),
    status_codes(200, 400, 401, 403, 404)
)]
pub async fn diff_versions(
    can: Can<SettingsRead>,
    req: &mut Request,
) -> ApiResult<Reply<DiffView>> {
    let (from, to) = (version_query(req, "from")?, version_query(req, "to")?);
    Ok(Reply::ok(
        service::diff_versions(&can.tenant.0, from, to).await?,
    ))
}

/// Roll back to a version: a new version with that version's values and custom schema,
/// checked against today's catalogue (`If-Match` applies).
#[endpoint(
    operation_id = "neotenant.settings.rollback",
    tags("settings"),
    status_codes(200, 400, 401, 403, 404, 412, 422)
)]
pub async fn rollback(
    can: Can<SettingsUpdate>,
    version: Path<i32>,
    if_match: IfMatch,
    depot: &mut Depot,
) -> ApiResult<Reply<SettingsView>> {
    let state = dep::<SettingsState>(depot)?;
    let eff = service::rollback(&state, &can, version.0, if_match.0.as_deref()).await?;
    Ok(view(&eff))
}

/// Upload the branding logo (multipart, one file part `file`): a PNG, JPEG or WebP picture
/// (judged by its bytes) of at most 5 MiB and 4096×4096 pixels, kept as WebP within 512 px.
#[endpoint(
    operation_id = "neotenant.settings.put_logo",
    tags("settings"),
    status_codes(200, 400, 401, 403, 413, 415, 422)
)]
pub async fn put_logo(
    can: Can<SettingsUpdate>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Reply<LogoSaved>> {
    let state = dep::<SettingsState>(depot)?;
    let bytes = read_file_part(req, crate::picture::MAX_BYTES, "a logo").await?;
    Ok(Reply::ok(service::put_logo(&state, &can, bytes).await?))
}

/// Remove the branding logo.
#[endpoint(
    operation_id = "neotenant.settings.delete_logo",
    tags("settings"),
    status_codes(200, 401, 403, 404)
)]
pub async fn delete_logo(
    can: Can<SettingsUpdate>,
    depot: &mut Depot,
) -> ApiResult<Reply<LogoSaved>> {
    let state = dep::<SettingsState>(depot)?;
    Ok(Reply::ok(service::delete_logo(&state, &can).await?))
}

/// The branding logo as WebP with an ETag (`If-None-Match` answers 304); any user of the
/// tenant may see it.
#[endpoint(
    operation_id = "neotenant.settings.logo",
    tags("settings"),
    status_codes(200, 304, 401, 404)
)]
pub async fn get_logo(caller: Caller) -> ApiResult<Binary> {
    let (etag, body) = service::logo(&caller.tenant.0).await?;
    Ok(Binary {
        content_type: "image/webp",
        etag: format!("\"{etag}\""),
        max_age: 300,
        body,
    })
}

pub fn router() -> Router {
    Router::with_path("settings")
        .get(get_settings)
        .patch(patch_settings)
        .push(Router::with_path("catalogue").get(get_catalogue))
        .push(Router::with_path("custom-schema").put(put_custom_schema))
        .push(Router::with_path("diff").get(diff_versions))
        .push(
            Router::with_path("versions").get(list_versions).push(
                Router::with_path("{version}")
                    .get(get_version)
                    .push(Router::with_path("rollback").post(rollback)),
            ),
        )
        .push(
            Router::with_path("branding/logo")
                .get(get_logo)
                .put(put_logo)
                .delete(delete_logo),
        )
}
