//! HTTP endpoints: `/v1/resource-types` (the registry) and `/v1/resources/{type}` (records,
//! versions, shares, tag and category counts). The `Can<…>` requirement of each endpoint is
//! the minimum (own scope); the service narrows per resource.

use std::collections::BTreeMap;

use salvo::oapi::ToSchema;
use salvo::oapi::endpoint;
use salvo::prelude::*;
use serde::Serialize;

use super::ResourcesState;
use super::service::{self, Ctx, ListCursor, ListQuery};
use super::{
    BulkRequest, BulkResponse, Diff, Link, LinkInput, Resource, ResourceInput, ResourcePatch,
    ResourceType, Share, ShareInput, TypeInput, Version,
};
use crate::apiversion::ApiVersion;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::extract::{IfMatch, JsonBody, ListParams, Page, Path, QueryDoc, QueryParams, dep};
use crate::http::reply::{NoContent, Reply, Versioned};
use crate::ids::{ResourceId, ResourceShareId, TeamId, UserId};
use crate::rbac::Can;
use crate::rbac::need::{
    ResourceTypesCreate, ResourceTypesDelete, ResourceTypesRead, ResourceTypesUpdate,
    ResourcesCreateOwn, ResourcesDeleteOwn, ResourcesReadOwn, ResourcesShareOwn,
    ResourcesUpdateOwn,
};

macro_rules! ctx {
    ($depot:expr, $can:expr) => {
        Ctx {
            state: &*dep::<ResourcesState>($depot)?,
            caller: &$can.caller,
        }
    };
}

/// List the tenant's resource types.
#[endpoint(tags("resources"), status_codes(200, 401, 403, 404))]
pub async fn list_types(
    can: Can<ResourceTypesRead>,
    depot: &mut Depot,
) -> ApiResult<Reply<Vec<ResourceType>>> {
    Ok(Reply::ok(service::list_types(&ctx!(depot, can)).await?))
}

/// Define a resource type: a JSON Schema for the data and the searchable, filterable and
/// sortable fields.
#[endpoint(
    tags("resources"),
    status_codes(201, 400, 401, 403, 404, 409, 413, 415, 422)
)]
pub async fn create_type(
    can: Can<ResourceTypesCreate>,
    body: JsonBody<TypeInput>,
    depot: &mut Depot,
) -> ApiResult<Reply<ResourceType>> {
    let t = service::create_type(&ctx!(depot, can), &body.0).await?;
    let location = format!("/v1/resource-types/{}", t.name);
    Ok(Reply::created(t, location))
}

/// Get one resource type.
#[endpoint(tags("resources"), status_codes(200, 401, 403, 404))]
pub async fn get_type(
    can: Can<ResourceTypesRead>,
    name: Path<String>,
    depot: &mut Depot,
) -> ApiResult<Reply<ResourceType>> {
    Ok(Reply::ok(
        service::get_type(&ctx!(depot, can), &name.0).await?,
    ))
}

/// Change a resource type. Refused (409, listing the failures) when stored resources would
/// not fit the new schema, unless `migration` mends every one of them.
#[endpoint(
    tags("resources"),
    status_codes(200, 400, 401, 403, 404, 409, 413, 415, 422)
)]
pub async fn replace_type(
    can: Can<ResourceTypesUpdate>,
    name: Path<String>,
    body: JsonBody<TypeInput>,
    depot: &mut Depot,
) -> ApiResult<Reply<ResourceType>> {
    Ok(Reply::ok(
        service::replace_type(&ctx!(depot, can), &name.0, &body.0).await?,
    ))
}

/// Delete a resource type that has no resources.
#[endpoint(tags("resources"), status_codes(204, 401, 403, 404, 409))]
pub async fn delete_type(
    can: Can<ResourceTypesDelete>,
    name: Path<String>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    service::delete_type(&ctx!(depot, can), &name.0).await?;
    Ok(NoContent)
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidParameter, message.into())
}

/// Reads `tag` (repeatable), `category`, `filter[field]`, `sort`, `owner`, `team`, `deleted`.
fn list_query(req: &Request, page: ListParams<ListCursor>) -> ApiResult<ListQuery> {
    list_query_from(req.queries().iter_all(), page)
}

fn list_query_from<'a>(
    queries: impl Iterator<Item = (&'a String, &'a Vec<String>)>,
    page: ListParams<ListCursor>,
) -> ApiResult<ListQuery> {
    let mut q = ListQuery {
        limit: i64::from(page.limit),
        after: page.after,
        ..Default::default()
    };
    let mut filters = BTreeMap::new();
    for (k, v) in queries {
        let one = || -> ApiResult<&String> {
            match v.as_slice() {
                [x] => Ok(x),
                _ => Err(bad(format!("query parameter `{k}` may appear once"))),
            }
        };
        match k.as_str() {
            "limit" | "cursor" => {}
            "tag" => q.tags.extend(v.iter().cloned()),
            "category" => q.category = Some(one()?.clone()),
            "sort" => q.sort = Some(one()?.clone()),
            "owner" => {
                q.owner = Some(
                    one()?
                        .parse::<UserId>()
                        .map_err(|e| bad(format!("owner: {e}")))?
                        .0,
                )
            }
            "team" => {
                q.team = Some(
                    one()?
                        .parse::<TeamId>()
                        .map_err(|e| bad(format!("team: {e}")))?
                        .0,
                )
            }
            "deleted" => {
                q.deleted = one()?
                    .parse::<bool>()
                    .map_err(|_| bad("deleted must be true or false"))?
            }
            other => match other
                .strip_prefix("filter[")
                .and_then(|f| f.strip_suffix(']'))
            {
                Some(f) if super::types::is_field(f) => {
                    filters.insert(f.to_string(), one()?.clone());
                }
                _ => return Err(bad(format!("unknown query parameter `{other}`"))),
            },
        }
    }
    if q.tags.len() > 20 || filters.len() > 20 {
        return Err(bad("at most 20 tags and 20 filters"));
    }
    q.filters = filters;
    Ok(q)
}

/// List resources of a type the caller may read. Query: `tag` (repeatable, all must match),
/// `category`, `filter[<filterable field>]=<value>` (equality, typed as declared), `sort=<field>`
/// or `sort=-<field>` (declared sortable fields; rows without the field last ascending, first
/// descending), `owner`,
/// `team`, `deleted=true` (the soft-deleted ones), `limit`, `cursor`.
#[endpoint(tags("resources"), status_codes(200, 400, 401, 403, 404))]
pub async fn list(
    can: Can<ResourcesReadOwn>,
    type_name: Path<String>,
    page: ListParams<ListCursor>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Reply<Page<Resource>>> {
    let q = list_query(req, page)?;
    let (items, next_cursor) = service::list(&ctx!(depot, can), &type_name.0, &q).await?;
    Ok(Reply::ok(Page { items, next_cursor }))
}

/// Create a resource (validated against its type: a 422 lists every field error).
#[endpoint(
    tags("resources"),
    status_codes(201, 400, 401, 403, 404, 413, 415, 422)
)]
pub async fn create(
    can: Can<ResourcesCreateOwn>,
    type_name: Path<String>,
    body: JsonBody<ResourceInput>,
    depot: &mut Depot,
) -> ApiResult<Reply<Resource>> {
    let r = service::create(&ctx!(depot, can), &type_name.0, &body.0).await?;
    let location = format!("/v1/resources/{}/{}", r.type_name, r.id);
    let etag = r.etag();
    Ok(Reply::created(r, location).with_etag(etag))
}

/// Get a resource (with its `ETag`); `?deleted=true` also finds a soft-deleted one.
#[endpoint(tags("resources"), status_codes(200, 400, 401, 403, 404))]
pub async fn get(
    can: Can<ResourcesReadOwn>,
    type_name: Path<String>,
    id: Path<ResourceId>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Reply<Resource>> {
    let deleted = match req.query::<String>("deleted").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad("deleted must be true or false")),
    };
    let r = service::get(&ctx!(depot, can), &type_name.0, id.0, deleted).await?;
    let etag = r.etag();
    Ok(Reply::ok(r).with_etag(etag))
}

/// Replace a resource's data, tags, category and team. With `If-Match`, only if unchanged
/// since (412 otherwise).
#[endpoint(
    tags("resources"),
    status_codes(200, 400, 401, 403, 404, 412, 413, 415, 422)
)]
pub async fn replace(
    can: Can<ResourcesUpdateOwn>,
    type_name: Path<String>,
    id: Path<ResourceId>,
    if_match: IfMatch,
    body: JsonBody<ResourceInput>,
    depot: &mut Depot,
) -> ApiResult<Reply<Resource>> {
    let r = service::replace(
        &ctx!(depot, can),
        &type_name.0,
        id.0,
        if_match.0.as_deref(),
        &body.0,
    )
    .await?;
    let etag = r.etag();
    Ok(Reply::ok(r).with_etag(etag))
}

/// Run a custom action of a plugin-provided type on one resource (the caller must be allowed
/// to update it; `If-Match` applies). The body is the action's input (a JSON object). New
/// data the action returns is validated and written like an update.
#[endpoint(
    tags("resources"),
    status_codes(200, 400, 401, 403, 404, 412, 413, 415, 422, 424)
)]
pub async fn run_action(
    can: Can<ResourcesUpdateOwn>,
    type_name: Path<String>,
    id: Path<ResourceId>,
    action: Path<String>,
    if_match: IfMatch,
    body: JsonBody<serde_json::Map<String, serde_json::Value>>,
    depot: &mut Depot,
) -> ApiResult<Reply<super::ActionOutcome>> {
    let input = serde_json::Value::Object(body.0);
    let r = service::action(
        &ctx!(depot, can),
        &type_name.0,
        id.0,
        &action.0,
        if_match.0.as_deref(),
        &input,
    )
    .await?;
    let etag = r.resource.etag();
    Ok(Reply::ok(r).with_etag(etag))
}

/// Change part of a resource: `data` is a JSON merge patch (RFC 7396).
#[endpoint(
    tags("resources"),
    status_codes(200, 400, 401, 403, 404, 412, 413, 415, 422)
)]
pub async fn patch(
    can: Can<ResourcesUpdateOwn>,
    type_name: Path<String>,
    id: Path<ResourceId>,
    if_match: IfMatch,
    body: JsonBody<ResourcePatch>,
    depot: &mut Depot,
) -> ApiResult<Reply<Resource>> {
    let r = service::patch(
        &ctx!(depot, can),
        &type_name.0,
        id.0,
        if_match.0.as_deref(),
        &body.0,
    )
    .await?;
    let etag = r.etag();
    Ok(Reply::ok(r).with_etag(etag))
}

/// Soft-delete a resource (restorable). From API version 2026-12-01 the answer is 200 with
/// the deleted resource (its `deleted_at`, and the version and ETag a restore needs); before,
/// 204 without a body.
#[endpoint(tags("resources"), status_codes(200, 204, 400, 401, 403, 404, 412))]
pub async fn delete(
    can: Can<ResourcesDeleteOwn>,
    type_name: Path<String>,
    id: Path<ResourceId>,
    if_match: IfMatch,
    api_version: ApiVersion,
    depot: &mut Depot,
) -> ApiResult<Versioned<Resource>> {
    let r = service::set_deleted(
        &ctx!(depot, can),
        &type_name.0,
        id.0,
        if_match.0.as_deref(),
        true,
    )
    .await?;
    Ok(if api_version.at_least("2026-12-01") {
        let etag = r.etag();
        Versioned::Body(Reply::ok(r).with_etag(etag))
    } else {
        Versioned::Empty
    })
}

/// Restore a soft-deleted resource.
#[endpoint(tags("resources"), status_codes(200, 400, 401, 403, 404, 412))]
pub async fn restore(
    can: Can<ResourcesDeleteOwn>,
    type_name: Path<String>,
    id: Path<ResourceId>,
    if_match: IfMatch,
    depot: &mut Depot,
) -> ApiResult<Reply<Resource>> {
    let r = service::set_deleted(
        &ctx!(depot, can),
        &type_name.0,
        id.0,
        if_match.0.as_deref(),
        false,
    )
    .await?;
    let etag = r.etag();
    Ok(Reply::ok(r).with_etag(etag))
}

/// A resource's versions, newest first (`cursor` pages on).
#[endpoint(tags("resources"), status_codes(200, 400, 401, 403, 404))]
pub async fn versions(
    can: Can<ResourcesReadOwn>,
    type_name: Path<String>,
    id: Path<ResourceId>,
    page: ListParams<i32>,
    depot: &mut Depot,
) -> ApiResult<Reply<Page<Version>>> {
    let rows = service::versions(
        &ctx!(depot, can),
        &type_name.0,
        id.0,
        page.after,
        i64::from(page.limit) + 1,
    )
    .await?;
    Ok(Reply::ok(Page::from_rows(rows, page.limit, |v| v.version)))
}

/// One version of a resource.
#[endpoint(tags("resources"), status_codes(200, 400, 401, 403, 404))]
pub async fn version(
    can: Can<ResourcesReadOwn>,
    type_name: Path<String>,
    id: Path<ResourceId>,
    number: Path<i32>,
    depot: &mut Depot,
) -> ApiResult<Reply<Version>> {
    Ok(Reply::ok(
        service::version(&ctx!(depot, can), &type_name.0, id.0, number.0).await?,
    ))
}

/// Make an old version current again (as a new version).
#[endpoint(tags("resources"), status_codes(200, 400, 401, 403, 404, 412, 422))]
pub async fn revert(
    can: Can<ResourcesUpdateOwn>,
    type_name: Path<String>,
    id: Path<ResourceId>,
    number: Path<i32>,
    if_match: IfMatch,
    depot: &mut Depot,
) -> ApiResult<Reply<Resource>> {
    let r = service::revert(
        &ctx!(depot, can),
        &type_name.0,
        id.0,
        number.0,
        if_match.0.as_deref(),
    )
    .await?;
    let etag = r.etag();
    Ok(Reply::ok(r).with_etag(etag))
}

/// Differences between two versions: `?from=&to=` (default: the previous and the current).
#[endpoint(tags("resources"), status_codes(200, 400, 401, 403, 404))]
pub async fn diff(
    can: Can<ResourcesReadOwn>,
    type_name: Path<String>,
    id: Path<ResourceId>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Reply<Diff>> {
    let num = |name: &str| -> ApiResult<Option<i32>> {
        req.query::<String>(name)
            .map(|v| {
                v.parse::<i32>()
                    .map_err(|_| bad(format!("{name} must be a version number")))
            })
            .transpose()
    };
    let (from, to) = (num("from")?, num("to")?);
    Ok(Reply::ok(
        service::diff(&ctx!(depot, can), &type_name.0, id.0, from, to).await?,
    ))
}

/// Who a resource is shared with.
#[endpoint(tags("resources"), status_codes(200, 400, 401, 403, 404))]
pub async fn shares(
    can: Can<ResourcesShareOwn>,
    type_name: Path<String>,
    id: Path<ResourceId>,
    depot: &mut Depot,
) -> ApiResult<Reply<Vec<Share>>> {
    Ok(Reply::ok(
        service::shares(&ctx!(depot, can), &type_name.0, id.0).await?,
    ))
}

/// Share a resource with a user or a team (and the teams below it): `read` or `write`.
/// Sharing again with the same user or team changes the access.
#[endpoint(
    tags("resources"),
    status_codes(201, 400, 401, 403, 404, 413, 415, 422)
)]
pub async fn share(
    can: Can<ResourcesShareOwn>,
    type_name: Path<String>,
    id: Path<ResourceId>,
    body: JsonBody<ShareInput>,
    depot: &mut Depot,
) -> ApiResult<Reply<Share>> {
    let s = service::share(&ctx!(depot, can), &type_name.0, id.0, &body.0).await?;
    let location = format!("/v1/resources/{}/{}/shares/{}", type_name.0, id.0, s.id);
    Ok(Reply::created(s, location))
}

/// Remove a share.
#[endpoint(tags("resources"), status_codes(204, 400, 401, 403, 404))]
pub async fn unshare(
    can: Can<ResourcesShareOwn>,
    type_name: Path<String>,
    id: Path<ResourceId>,
    share_id: Path<ResourceShareId>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    service::unshare(&ctx!(depot, can), &type_name.0, id.0, share_id.0).await?;
    Ok(NoContent)
}

/// Link a resource to another (`kind` declared by the source's type; needs update access to
/// the source and read access to the target).
#[endpoint(
    tags("resources"),
    status_codes(201, 400, 401, 403, 404, 409, 413, 415, 422)
)]
pub async fn link(
    can: Can<ResourcesUpdateOwn>,
    type_name: Path<String>,
    id: Path<ResourceId>,
    body: JsonBody<LinkInput>,
    depot: &mut Depot,
) -> ApiResult<Reply<Link>> {
    let l = service::link(&ctx!(depot, can), &type_name.0, id.0, &body.0).await?;
    let location = format!(
        "/v1/resources/{}/{}/links/{}/{}",
        type_name.0, id.0, l.kind, l.to_id
    );
    Ok(Reply::created(l, location))
}

/// A resource's links: `direction=out` (default, from it) or `in` (to it), optionally of one
/// `kind`; only links whose other end the caller may read.
#[endpoint(tags("resources"), status_codes(200, 400, 401, 403, 404))]
pub async fn links(
    can: Can<ResourcesReadOwn>,
    type_name: Path<String>,
    id: Path<ResourceId>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Reply<Vec<Link>>> {
    let outgoing = match req.query::<String>("direction").as_deref() {
        None | Some("out") => true,
        Some("in") => false,
        Some(_) => return Err(bad("direction must be `in` or `out`")),
    };
    let kind = req.query::<String>("kind");
    if let Some(k) = &kind
        && !super::types::is_name(k)
    {
        return Err(bad("kind must match [a-z][a-z0-9_]{0,62}"));
    }
    Ok(Reply::ok(
        service::links(
            &ctx!(depot, can),
            &type_name.0,
            id.0,
            outgoing,
            kind.as_deref(),
        )
        .await?,
    ))
}

/// Remove a link.
#[endpoint(tags("resources"), status_codes(204, 400, 401, 403, 404))]
pub async fn unlink(
    can: Can<ResourcesUpdateOwn>,
    type_name: Path<String>,
    id: Path<ResourceId>,
    kind: Path<String>,
    to_id: Path<ResourceId>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    service::unlink(&ctx!(depot, can), &type_name.0, id.0, &kind.0, to_id.0).await?;
    Ok(NoContent)
}

/// Many creates, updates (merge patches) and soft deletes of one type in one request:
/// `atomic` (default) applies all or nothing in one transaction; otherwise each operation on
/// its own. Every operation is checked as its own request would be; the answer lists what
/// became of each.
#[endpoint(
    tags("resources"),
    status_codes(200, 400, 401, 403, 404, 413, 415, 422)
)]
pub async fn bulk(
    caller: crate::rbac::Caller,
    type_name: Path<String>,
    body: JsonBody<BulkRequest>,
    depot: &mut Depot,
) -> ApiResult<Reply<BulkResponse>> {
    let ctx = Ctx {
        state: &*dep::<ResourcesState>(depot)?,
        caller: &caller,
    };
    Ok(Reply::ok(service::bulk(&ctx, &type_name.0, &body.0).await?))
}

/// Export a type's resources the caller may read, streamed: `format=jsonl` (default; one
/// resource per line, as `GET` returns it) or `format=csv` (fixed columns, then one column per
/// schema property; spreadsheet formulas defused). Filters as for the list.
#[endpoint(tags("resources"), status_codes(200, 400, 401, 403, 404))]
pub async fn export(
    can: Can<ResourcesReadOwn>,
    type_name: Path<String>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<crate::http::reply::Streamed> {
    use super::transfer::Format;
    let format = Format::parse(req.query::<String>("format").as_deref())?;
    let page = ListParams::<ListCursor> {
        limit: 500,
        after: None,
    };
    // `format` is ours; the rest are the list's filters.
    let mut q = list_query_from(
        req.queries()
            .iter_all()
            .filter(|(k, _)| k.as_str() != "format"),
        page,
    )?;
    q.sort = None;
    let state = dep::<ResourcesState>(depot)?;
    let body =
        super::transfer::export(state, can.caller.clone(), type_name.0.clone(), format, q).await?;
    Ok(crate::http::reply::Streamed {
        content_type: match format {
            Format::Csv => "text/csv; charset=utf-8",
            Format::JsonLines => "application/x-ndjson",
        },
        filename: Some(match format {
            Format::Csv => "resources.csv",
            Format::JsonLines => "resources.jsonl",
        }),
        body,
    })
}

/// Import resources, streamed and validated row by row: `format=jsonl` (default; each line a
/// create body, or an exported resource) or `format=csv` (a header naming the columns, as the
/// export writes them). Valid rows are created; the report lists every rejected row with its
/// line and field errors. Bodies up to `server.max_import_bytes`.
#[endpoint(tags("resources"), status_codes(200, 400, 401, 403, 404, 413, 422))]
pub async fn import(
    can: Can<ResourcesCreateOwn>,
    type_name: Path<String>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Reply<super::transfer::ImportReport>> {
    let format = super::transfer::Format::parse(req.query::<String>("format").as_deref())?;
    let body = req.take_body();
    let ctx = Ctx {
        state: &*dep::<ResourcesState>(depot)?,
        caller: &can.caller,
    };
    Ok(Reply::ok(
        super::transfer::import(&ctx, &type_name.0, format, body).await?,
    ))
}

/// A value and how many visible live resources carry it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Count {
    pub value: String,
    pub count: i64,
}

/// Tags of a type's resources with counts (resources the caller may read).
#[endpoint(tags("resources"), status_codes(200, 400, 401, 403, 404))]
pub async fn tag_counts(
    can: Can<ResourcesReadOwn>,
    type_name: Path<String>,
    depot: &mut Depot,
) -> ApiResult<Reply<Vec<Count>>> {
    let rows = service::counts(&ctx!(depot, can), &type_name.0, true).await?;
    Ok(Reply::ok(
        rows.into_iter()
            .map(|(value, count)| Count { value, count })
            .collect(),
    ))
}

/// Categories of a type's resources with counts (resources the caller may read).
#[endpoint(tags("resources"), status_codes(200, 400, 401, 403, 404))]
pub async fn category_counts(
    can: Can<ResourcesReadOwn>,
    type_name: Path<String>,
    depot: &mut Depot,
) -> ApiResult<Reply<Vec<Count>>> {
    let rows = service::counts(&ctx!(depot, can), &type_name.0, false).await?;
    Ok(Reply::ok(
        rows.into_iter()
            .map(|(value, count)| Count { value, count })
            .collect(),
    ))
}

/// `/v1/resource-types` and `/v1/resources`.
pub fn router() -> Router {
    Router::new()
        .push(
            Router::with_path("resource-types")
                .get(list_types)
                .post(create_type)
                .push(
                    Router::with_path("{name}")
                        .get(get_type)
                        .put(replace_type)
                        .delete(delete_type),
                ),
        )
        .push(
            Router::with_path("resources/{type_name}")
                .get(list)
                .post(create)
                .push(Router::with_path("bulk").post(bulk))
                .push(Router::with_path("export").get(export))
                .push(Router::with_path("import").post(import))
                .push(Router::with_path("tags").get(tag_counts))
                .push(Router::with_path("categories").get(category_counts))
                .push(
                    Router::with_path("{id}")
                        .get(get)
                        .put(replace)
                        .patch(patch)
                        .delete(delete)
                        .push(Router::with_path("restore").post(restore))
                        .push(Router::with_path("actions/{action}").post(run_action))
                        .push(Router::with_path("diff").get(diff))
                        .push(Router::with_path("versions").get(versions))
                        .push(
                            Router::with_path("versions/{number}")
                                .get(version)
                                .push(Router::with_path("restore").post(revert)),
                        )
                        .push(Router::with_path("shares").get(shares).post(share))
                        .push(Router::with_path("shares/{share_id}").delete(unshare))
                        .push(Router::with_path("links").get(links).post(link))
                        .push(Router::with_path("links/{kind}/{to_id}").delete(unlink)),
                ),
        )
}

/// One search hit.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHit {
    pub id: ResourceId,
    #[serde(rename = "type")]
    pub type_name: String,
    pub title: String,
    /// HTML with matched words in `<b>`; empty when no word matched the text.
    pub highlight: String,
    pub score: f32,
}

/// Search results.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchPage {
    pub items: Vec<SearchHit>,
    /// Matches in all (before the permission re-check of this page).
    pub total: usize,
    /// Counts by type and by tag over all matches.
    pub facets: SearchFacets,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchFacets {
    pub types: Vec<Count>,
    pub tags: Vec<Count>,
}

/// Deepest result reachable by paging.
const SEARCH_MAX_OFFSET: usize = 10_000;

fn time_param(req: &Request, name: &str) -> ApiResult<Option<i64>> {
    req.query::<String>(name)
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(&v)
                .map(|t| t.timestamp())
                .map_err(|_| bad(format!("{name} must be an RFC 3339 time")))
        })
        .transpose()
}

/// The query parameters of `GET /v1/search`, for the document (the handler parses them).
pub struct SearchFilters;

impl QueryParams for SearchFilters {
    const PARAMS: &'static [(&'static str, &'static str)] = &[
        ("q", "Words (all must match) and `field:value` terms"),
        ("type", "A resource type (repeatable)"),
        ("tag", "A tag (repeatable)"),
        ("category", "A category"),
        ("owner", "An owner's user id"),
        ("team", "A team id"),
        ("created_from", "Created at or after (RFC 3339)"),
        ("created_to", "Created before (RFC 3339)"),
        ("updated_from", "Updated at or after (RFC 3339)"),
        ("updated_to", "Updated before (RFC 3339)"),
    ];
}

/// Full-text search over the resources the caller may read. `q`: words (all must match;
/// words of 5+ letters tolerate a typo, 9+ two) and `field:value` terms on a type's
/// non-searchable fields; filters `type` and `tag` (repeatable), `category`, `owner`, `team`,
/// `created_from`, `created_to`, `updated_from`, `updated_to` (RFC 3339); `limit`, `cursor`.
/// The index trails writes by about `search.index_interval_ms`.
#[endpoint(tags("resources"), status_codes(200, 400, 401, 403, 404))]
pub async fn search(
    can: Can<ResourcesReadOwn>,
    page: ListParams<usize>,
    _filters: QueryDoc<SearchFilters>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<Reply<SearchPage>> {
    let state = dep::<ResourcesState>(depot)?;
    let mut s = super::indexer::Search {
        limit: page.limit as usize,
        offset: page.after.unwrap_or(0),
        ..Default::default()
    };
    if s.offset > SEARCH_MAX_OFFSET {
        return Err(ApiError::new(
            ErrorCode::InvalidCursor,
            "the cursor is not one this API issued",
        ));
    }
    for (k, v) in req.queries().iter_all() {
        let one = || -> ApiResult<&String> {
            match v.as_slice() {
                [x] => Ok(x),
                _ => Err(bad(format!("query parameter `{k}` may appear once"))),
            }
        };
        match k.as_str() {
            "limit" | "cursor" | "created_from" | "created_to" | "updated_from" | "updated_to" => {}
            "q" => {
                let q = one()?;
                if q.chars().count() > 500 {
                    return Err(bad("q may be at most 500 characters"));
                }
                s.text = q.clone();
            }
            "type" => s.types.extend(v.iter().cloned()),
            "tag" => s.tags.extend(v.iter().cloned()),
            "category" => s.category = Some(one()?.clone()),
            "owner" => s.owner = Some(one()?.parse().map_err(|e| bad(format!("owner: {e}")))?),
            "team" => s.team = Some(one()?.parse().map_err(|e| bad(format!("team: {e}")))?),
            other => return Err(bad(format!("unknown query parameter `{other}`"))),
        }
    }
    if s.types.len() > 20 || s.tags.len() > 20 {
        return Err(bad("at most 20 types and 20 tags"));
    }
    s.created = (
        time_param(req, "created_from")?,
        time_param(req, "created_to")?,
    );
    s.updated = (
        time_param(req, "updated_from")?,
        time_param(req, "updated_to")?,
    );
    let (limit, offset) = (s.limit, s.offset);
    let r = super::indexer::search(&state, &can.caller, s).await?;
    let next_cursor = (offset + limit < r.total.min(SEARCH_MAX_OFFSET))
        .then(|| crate::http::extract::encode_cursor(&(offset + limit)));
    let counts = |v: Vec<(String, u64)>| {
        v.into_iter()
            .map(|(value, count)| Count {
                value,
                count: count as i64,
            })
            .collect()
    };
    Ok(Reply::ok(SearchPage {
        items: r
            .hits
            .into_iter()
            .filter_map(|h| {
                Some(SearchHit {
                    id: h.id.parse().ok()?,
                    type_name: h.type_name,
                    title: h.title,
                    highlight: h.highlight,
                    score: h.score,
                })
            })
            .collect(),
        total: r.total,
        facets: SearchFacets {
            types: counts(r.types),
            tags: counts(r.tags),
        },
        next_cursor,
    }))
}

/// `/v1/search`.
pub fn search_router() -> Router {
    Router::with_path("search").get(search)
}
