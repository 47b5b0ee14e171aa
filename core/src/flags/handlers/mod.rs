//! HTTP endpoints of feature flags: `/v1/flags` (definitions, versions, diffs, rollback, kill
//! switch, schedules, evaluation), `/v1/flag-segments` and `/v1/flag-environments/{env}/sdk-keys`;
//! the OFREP routes are in `ofrep`. Parses, calls one service function, answers; no SQL.

pub mod ofrep;

use salvo::oapi::endpoint;
use salvo::prelude::*;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::repo::Kind;
use super::{
    EvaluationRequest, EvaluationView, FlagView, FlagsState, NewSchedule, NewSdkKey, ScheduleView,
    SdkKeyView, SegmentView, Switch, VersionView, service,
};
use crate::error::ApiResult;
use crate::http::extract::{IfMatch, JsonBody, ListParams, Page, Path, dep, version_query};
use crate::http::reply::{NoContent, Reply};
use crate::rbac::Can;
use crate::rbac::need::{FlagsRead, FlagsUpdate};
use crate::settings::DiffView;

/// The tenant's flags by key, a page at a time.
#[endpoint(
    operation_id = "neotenant.flags.list",
    tags("flags"),
    status_codes(200, 400, 401, 403)
)]
pub async fn list_flags(
    can: Can<FlagsRead>,
    page: ListParams<String>,
) -> ApiResult<Reply<Page<FlagView>>> {
    let rows = service::list_flags(&can.tenant.0, page.after.as_deref(), page.limit + 1).await?;
    Ok(Reply::ok(Page::from_rows(rows, page.limit, |f| {
        f.key.clone()
    })))
}

/// Create a flag: kind, variants, prerequisites and, for each of the tenant's environments,
/// kill switch, off variant, rules and default. Every problem is listed in one 422.
#[endpoint(
    operation_id = "neotenant.flags.create",
    tags("flags"),
    status_codes(201, 400, 401, 403, 409, 422)
)]
pub async fn create_flag(
    can: Can<FlagsUpdate>,
    body: JsonBody<Value>,
    depot: &mut Depot,
) -> ApiResult<Reply<FlagView>> {
    let state = dep::<FlagsState>(depot)?;
    let flag = service::create_flag(&state, &can, body.0).await?;
    let (location, etag) = (format!("/v1/flags/{}", flag.key), flag.etag());
    Ok(Reply::created(flag, location).with_etag(etag))
}

/// One flag, with its ETag (`"f<version>"`).
#[endpoint(
    operation_id = "neotenant.flags.get",
    tags("flags"),
    status_codes(200, 401, 403, 404)
)]
pub async fn get_flag(can: Can<FlagsRead>, key: Path<String>) -> ApiResult<Reply<FlagView>> {
    let flag = service::get_flag(&can.tenant.0, &key.0).await?;
    let etag = flag.etag();
    Ok(Reply::ok(flag).with_etag(etag))
}

fn flag_reply(flag: FlagView) -> Reply<FlagView> {
    let etag = flag.etag();
    Reply::ok(flag).with_etag(etag)
}

/// Replace a flag's definition (`If-Match` applies). A new version.
#[endpoint(
    operation_id = "neotenant.flags.replace",
    tags("flags"),
    status_codes(200, 400, 401, 403, 404, 412, 422)
)]
pub async fn replace_flag(
    can: Can<FlagsUpdate>,
    key: Path<String>,
    if_match: IfMatch,
    body: JsonBody<Value>,
    depot: &mut Depot,
) -> ApiResult<Reply<FlagView>> {
    let state = dep::<FlagsState>(depot)?;
    let flag =
        service::change_flag(&state, &can, &key.0, body.0, false, if_match.0.as_deref()).await?;
    Ok(flag_reply(flag))
}

/// Change a flag with a JSON merge patch (`If-Match` applies). A new version.
#[endpoint(
    operation_id = "neotenant.flags.patch",
    tags("flags"),
    status_codes(200, 400, 401, 403, 404, 412, 422)
)]
pub async fn patch_flag(
    can: Can<FlagsUpdate>,
    key: Path<String>,
    if_match: IfMatch,
    body: JsonBody<Value>,
    depot: &mut Depot,
) -> ApiResult<Reply<FlagView>> {
    let state = dep::<FlagsState>(depot)?;
    let flag =
        service::change_flag(&state, &can, &key.0, body.0, true, if_match.0.as_deref()).await?;
    Ok(flag_reply(flag))
}

/// Delete a flag (409 while another flag has it as a prerequisite). Its history stays.
#[endpoint(
    operation_id = "neotenant.flags.delete",
    tags("flags"),
    status_codes(204, 400, 401, 403, 404, 409, 412)
)]
pub async fn delete_flag(
    can: Can<FlagsUpdate>,
    key: Path<String>,
    if_match: IfMatch,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<FlagsState>(depot)?;
    service::delete(&state, &can, Kind::Flag, &key.0, if_match.0.as_deref()).await?;
    Ok(NoContent)
}

/// The kill switch of one environment: `{"enabled": false}` serves the off variant to
/// everyone there, at once on every instance. A new version.
#[endpoint(
    operation_id = "neotenant.flags.switch",
    tags("flags"),
    status_codes(200, 400, 401, 403, 404, 422)
)]
pub async fn switch_flag(
    can: Can<FlagsUpdate>,
    key: Path<String>,
    env: Path<String>,
    body: JsonBody<Switch>,
    depot: &mut Depot,
) -> ApiResult<Reply<FlagView>> {
    let state = dep::<FlagsState>(depot)?;
    let flag = service::switch(&state, &can, &key.0, &env.0, body.0.enabled).await?;
    Ok(flag_reply(flag))
}

/// A flag's versions, newest first.
#[endpoint(
    operation_id = "neotenant.flags.versions",
    tags("flags"),
    status_codes(200, 400, 401, 403, 404)
)]
pub async fn flag_versions(
    can: Can<FlagsRead>,
    key: Path<String>,
    page: ListParams<i32>,
) -> ApiResult<Reply<Page<VersionView>>> {
    let rows = service::versions(
        &can.tenant.0,
        Kind::Flag,
        &key.0,
        page.after,
        page.limit + 1,
    )
    .await?;
    Ok(Reply::ok(Page::from_rows(rows, page.limit, |v| v.version)))
}

/// One version of a flag, with its definition.
#[endpoint(
    operation_id = "neotenant.flags.version",
    tags("flags"),
    status_codes(200, 400, 401, 403, 404)
)]
pub async fn flag_version(
    can: Can<FlagsRead>,
    key: Path<String>,
    version: Path<i32>,
) -> ApiResult<Reply<VersionView>> {
    Ok(Reply::ok(
        service::version(&can.tenant.0, Kind::Flag, &key.0, version.0).await?,
    ))
}

/// What changed between two versions of a flag: `?from=&to=`.
#[endpoint(
    operation_id = "neotenant.flags.diff",
    tags("flags"),
    status_codes(200, 400, 401, 403, 404)
)]
pub async fn flag_diff(
    can: Can<FlagsRead>,
    key: Path<String>,
    req: &mut Request,
) -> ApiResult<Reply<DiffView>> {
    let (from, to) = (version_query(req, "from")?, version_query(req, "to")?);
    Ok(Reply::ok(
        service::diff_versions(&can.tenant.0, &key.0, from, to).await?,
    ))
}

/// Roll a flag back to a version: a new version with that definition, checked again.
#[endpoint(
    operation_id = "neotenant.flags.rollback",
    tags("flags"),
    status_codes(200, 400, 401, 403, 404, 409, 412, 422)
)]
pub async fn rollback_flag(
    can: Can<FlagsUpdate>,
    key: Path<String>,
    version: Path<i32>,
    if_match: IfMatch,
    depot: &mut Depot,
) -> ApiResult<Reply<FlagView>> {
    let state = dep::<FlagsState>(depot)?;
    let flag = service::rollback(&state, &can, &key.0, version.0, if_match.0.as_deref()).await?;
    Ok(flag_reply(flag))
}

/// Schedule a change: a merge patch applied at `apply_at` as a new version (it must give a
/// valid flag now, and is checked again when applied).
#[endpoint(
    operation_id = "neotenant.flags.schedule",
    tags("flags"),
    status_codes(201, 400, 401, 403, 404, 422)
)]
pub async fn create_schedule(
    can: Can<FlagsUpdate>,
    key: Path<String>,
    body: JsonBody<NewSchedule>,
    depot: &mut Depot,
) -> ApiResult<Reply<ScheduleView>> {
    let state = dep::<FlagsState>(depot)?;
    let s = service::schedule(&state, &can, &key.0, body.0).await?;
    let location = format!("/v1/flags/{}/schedules/{}", key.0, s.id);
    Ok(Reply::created(s, location))
}

/// A flag's scheduled changes, soonest first.
#[endpoint(
    operation_id = "neotenant.flags.schedules",
    tags("flags"),
    status_codes(200, 401, 403)
)]
pub async fn list_schedules(
    can: Can<FlagsRead>,
    key: Path<String>,
) -> ApiResult<Reply<Vec<ScheduleView>>> {
    Ok(Reply::ok(service::schedules(&can.tenant.0, &key.0).await?))
}

/// Cancel a pending scheduled change.
#[endpoint(
    operation_id = "neotenant.flags.cancel_schedule",
    tags("flags"),
    status_codes(200, 400, 401, 403, 404, 409)
)]
pub async fn cancel_schedule(
    can: Can<FlagsUpdate>,
    key: Path<String>,
    id: Path<Uuid>,
) -> ApiResult<Reply<ScheduleView>> {
    Ok(Reply::ok(
        service::cancel_schedule(&can, &key.0, id.0).await?,
    ))
}

/// Evaluations of every flag.
#[derive(Debug, Serialize, salvo::oapi::ToSchema)]
#[salvo(schema(name = "neotenant.flags.Evaluations"))]
pub struct Evaluations {
    pub environment: String,
    /// The flag set's generation (changes with every flag, segment or key change).
    pub generation: i64,
    pub flags: Vec<EvaluationView>,
}

/// Evaluate every flag for a given context, as it is (`environment` defaults to the
/// tenant's first): what an application sending that context over OFREP would get. For
/// people managing flags; applications and users evaluate over OFREP.
#[endpoint(
    operation_id = "neotenant.flags.evaluate",
    tags("flags"),
    status_codes(200, 400, 401, 403, 404, 422)
)]
pub async fn evaluate(
    can: Can<FlagsRead>,
    body: JsonBody<EvaluationRequest>,
    depot: &mut Depot,
) -> ApiResult<Reply<Evaluations>> {
    let state = dep::<FlagsState>(depot)?;
    let tenant = &can.tenant.0;
    let env = match body.0.environment {
        Some(e) => {
            service::require_environment(&state, tenant, &e).await?;
            e
        }
        None => service::default_environment(&state, tenant).await?,
    };
    let set = service::flag_set(&state, tenant).await?;
    let ctx = service::context_of(None, &env, body.0.context).await?;
    let flags = set
        .snapshot
        .evaluate_all(&env, &ctx)
        .into_iter()
        .map(|(key, r)| service::evaluation_view(&key, &env, r))
        .collect();
    Ok(Reply::ok(Evaluations {
        environment: env,
        generation: set.generation,
        flags,
    }))
}

/// The tenant's segments by key, a page at a time.
#[endpoint(
    operation_id = "neotenant.flags.segments",
    tags("flags"),
    status_codes(200, 400, 401, 403)
)]
pub async fn list_segments(
    can: Can<FlagsRead>,
    page: ListParams<String>,
) -> ApiResult<Reply<Page<SegmentView>>> {
    let rows = service::list_segments(&can.tenant.0, page.after.as_deref(), page.limit + 1).await?;
    Ok(Reply::ok(Page::from_rows(rows, page.limit, |s| {
        s.key.clone()
    })))
}

/// One segment.
#[endpoint(
    operation_id = "neotenant.flags.segment",
    tags("flags"),
    status_codes(200, 401, 403, 404)
)]
pub async fn get_segment(can: Can<FlagsRead>, key: Path<String>) -> ApiResult<Reply<SegmentView>> {
    Ok(Reply::ok(
        service::get_segment(&can.tenant.0, &key.0).await?,
    ))
}

/// Create or replace a segment: conditions that all must match (`If-Match` applies).
#[endpoint(
    operation_id = "neotenant.flags.put_segment",
    tags("flags"),
    status_codes(200, 400, 401, 403, 412, 422)
)]
pub async fn put_segment(
    can: Can<FlagsUpdate>,
    key: Path<String>,
    if_match: IfMatch,
    body: JsonBody<Value>,
    depot: &mut Depot,
) -> ApiResult<Reply<SegmentView>> {
    let state = dep::<FlagsState>(depot)?;
    Ok(Reply::ok(
        service::put_segment(&state, &can, &key.0, body.0, if_match.0.as_deref()).await?,
    ))
}

/// Delete a segment (409 while a flag uses it).
#[endpoint(
    operation_id = "neotenant.flags.delete_segment",
    tags("flags"),
    status_codes(204, 400, 401, 403, 404, 409, 412)
)]
pub async fn delete_segment(
    can: Can<FlagsUpdate>,
    key: Path<String>,
    if_match: IfMatch,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<FlagsState>(depot)?;
    service::delete(&state, &can, Kind::Segment, &key.0, if_match.0.as_deref()).await?;
    Ok(NoContent)
}

/// A new SDK key for an environment: applications evaluate that environment's flags with it
/// over OFREP, and nothing else. The key is answered once.
#[endpoint(
    operation_id = "neotenant.flags.create_sdk_key",
    tags("flags"),
    status_codes(201, 400, 401, 403, 404, 422)
)]
pub async fn create_sdk_key(
    can: Can<FlagsUpdate>,
    env: Path<String>,
    body: JsonBody<NewSdkKey>,
    depot: &mut Depot,
) -> ApiResult<Reply<SdkKeyView>> {
    let state = dep::<FlagsState>(depot)?;
    let key = service::create_sdk_key(&state, &can, &env.0, &body.0.name).await?;
    let location = format!("/v1/flag-environments/{}/sdk-keys/{}", env.0, key.id);
    Ok(Reply::created(key, location))
}

/// An environment's SDK keys (never their secrets).
#[endpoint(
    operation_id = "neotenant.flags.sdk_keys",
    tags("flags"),
    status_codes(200, 401, 403)
)]
pub async fn list_sdk_keys(
    can: Can<FlagsUpdate>,
    env: Path<String>,
) -> ApiResult<Reply<Vec<SdkKeyView>>> {
    Ok(Reply::ok(service::sdk_keys(&can.tenant.0, &env.0).await?))
}

/// Revoke an SDK key (refused at once on every instance).
#[endpoint(
    operation_id = "neotenant.flags.revoke_sdk_key",
    tags("flags"),
    status_codes(204, 400, 401, 403, 404)
)]
pub async fn revoke_sdk_key(
    can: Can<FlagsUpdate>,
    env: Path<String>,
    id: Path<Uuid>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<FlagsState>(depot)?;
    service::revoke_sdk_key(&state, &can, &env.0, id.0).await?;
    Ok(NoContent)
}

pub fn router() -> Router {
    Router::new()
        .push(
            Router::with_path("flags")
                .get(list_flags)
                .post(create_flag)
                .push(Router::with_path("evaluate").post(evaluate))
                .push(
                    Router::with_path("{key}")
                        .get(get_flag)
                        .put(replace_flag)
                        .patch(patch_flag)
                        .delete(delete_flag)
                        .push(Router::with_path("environments/{env}").put(switch_flag))
                        .push(Router::with_path("diff").get(flag_diff))
                        .push(
                            Router::with_path("versions").get(flag_versions).push(
                                Router::with_path("{version}")
                                    .get(flag_version)
                                    .push(Router::with_path("rollback").post(rollback_flag)),
                            ),
                        )
                        .push(
                            Router::with_path("schedules")
                                .get(list_schedules)
                                .post(create_schedule)
                                .push(Router::with_path("{id}").delete(cancel_schedule)),
                        ),
                ),
        )
        .push(
            Router::with_path("flag-segments").get(list_segments).push(
                Router::with_path("{key}")
                    .get(get_segment)
                    .put(put_segment)
                    .delete(delete_segment),
            ),
        )
        .push(
            Router::with_path("flag-environments/{env}/sdk-keys")
                .get(list_sdk_keys)
                .post(create_sdk_key)
                .push(Router::with_path("{id}").delete(revoke_sdk_key)),
        )
}
