//! HTTP endpoints for teams under `/v1/teams` and `/v1/team-templates`.

use salvo::http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use salvo::oapi::{self, Components, EndpointOutRegister, Operation, endpoint};
use salvo::prelude::*;

use super::{
    AddMembers, ChartNode, Member, MemberPatch, MergeTeam, MoveTeam, NewShare, NewTeam, Share,
    SplitTeam, Team, TeamAnalytics, TeamPatch, TeamRoleInput, TeamTemplate, service,
};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::extract::dep;
use crate::http::extract::{JsonBody, ListParams, Page, Path};
use crate::http::reply::{NoContent, Reply};
use crate::ids::{ShareId, TeamId, UserId};
use crate::rbac::RbacState;
use crate::rbac::handlers::flag;
use crate::rbac::need::{TeamsCreate, TeamsRead};
use crate::rbac::{Caller, Can};

/// List teams, oldest first; `parent=<team id>` for one team's children, `parent=root` for
/// root teams.
#[endpoint(tags("teams"), status_codes(200, 400, 401, 403))]
pub async fn list_teams(
    can: Can<TeamsRead>,
    page: ListParams<TeamId>,
    req: &mut Request,
) -> ApiResult<Reply<Page<Team>>> {
    let parent = match req.query::<String>("parent").as_deref() {
        None => None,
        Some("root") => Some(None),
        Some(p) => Some(Some(p.parse::<TeamId>().map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidParameter,
                format!("query parameter `parent` is invalid: {e}"),
            )
        })?)),
    };
    let rows = service::list(
        can.db(),
        parent.map(|p| p.map(|t| t.0)),
        page.after.map(|t| t.0),
        i64::from(page.limit) + 1,
    )
    .await?;
    Ok(Reply::ok(Page::from_rows(rows, page.limit, |t| t.id)))
}

/// Create a team (under `parent_id`, or at the root), optionally from a template.
#[endpoint(tags("teams"), status_codes(201, 400, 401, 403, 409, 422))]
pub async fn create_team(
    caller: Caller,
    body: JsonBody<NewTeam>,
    depot: &mut Depot,
) -> ApiResult<Reply<Team>> {
    let state = dep::<RbacState>(depot)?;
    let team = service::create(&state, &caller, &body.0).await?;
    let location = format!("/v1/teams/{}", team.id);
    Ok(Reply::created(team, location))
}

/// One team.
#[endpoint(tags("teams"), status_codes(200, 400, 401, 403, 404))]
pub async fn get_team(can: Can<TeamsRead>, id: Path<TeamId>) -> ApiResult<Reply<Team>> {
    Ok(Reply::ok(service::get(can.db(), id.0).await?))
}

/// Rename or describe a team.
#[endpoint(tags("teams"), status_codes(200, 400, 401, 403, 404, 409, 422))]
pub async fn patch_team(
    caller: Caller,
    id: Path<TeamId>,
    body: JsonBody<TeamPatch>,
) -> ApiResult<Reply<Team>> {
    Ok(Reply::ok(service::patch(&caller, id.0, &body.0).await?))
}

/// Delete a team; `recursive=true` deletes its sub-teams too (else they must be gone).
#[endpoint(tags("teams"), status_codes(204, 400, 401, 403, 404, 409))]
pub async fn delete_team(
    caller: Caller,
    id: Path<TeamId>,
    req: &mut Request,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<RbacState>(depot)?;
    let recursive = flag(req, "recursive")?;
    service::delete(&state, &caller, id.0, recursive).await?;
    Ok(NoContent)
}

/// The team and every team below it, shallowest first.
#[endpoint(tags("teams"), status_codes(200, 400, 401, 403, 404))]
pub async fn subtree(can: Can<TeamsRead>, id: Path<TeamId>) -> ApiResult<Reply<Vec<Team>>> {
    Ok(Reply::ok(service::subtree(can.db(), id.0).await?))
}

/// The teams above this one, root first.
#[endpoint(tags("teams"), status_codes(200, 400, 401, 403, 404))]
pub async fn ancestors(can: Can<TeamsRead>, id: Path<TeamId>) -> ApiResult<Reply<Vec<Team>>> {
    Ok(Reply::ok(service::ancestors(can.db(), id.0).await?))
}

/// Move a team, with everything below it, under another team or to the root.
#[endpoint(tags("teams"), status_codes(200, 400, 401, 403, 404, 409, 422))]
pub async fn move_team(
    caller: Caller,
    id: Path<TeamId>,
    body: JsonBody<MoveTeam>,
    depot: &mut Depot,
) -> ApiResult<Reply<Team>> {
    let state = dep::<RbacState>(depot)?;
    Ok(Reply::ok(
        service::move_team(&state, &caller, id.0, body.0.parent_id).await?,
    ))
}

/// Merge this team into another: its members, sub-teams, roles and shares move; it goes.
#[endpoint(tags("teams"), status_codes(200, 400, 401, 403, 404, 422))]
pub async fn merge_team(
    caller: Caller,
    id: Path<TeamId>,
    body: JsonBody<MergeTeam>,
    depot: &mut Depot,
) -> ApiResult<Reply<Team>> {
    let state = dep::<RbacState>(depot)?;
    Ok(Reply::ok(
        service::merge(&state, &caller, id.0, body.0.into).await?,
    ))
}

/// Split some members off into a new sibling team.
#[endpoint(tags("teams"), status_codes(201, 400, 401, 403, 404, 409, 422))]
pub async fn split_team(
    caller: Caller,
    id: Path<TeamId>,
    body: JsonBody<SplitTeam>,
    depot: &mut Depot,
) -> ApiResult<Reply<Team>> {
    let state = dep::<RbacState>(depot)?;
    let team = service::split(&state, &caller, id.0, &body.0).await?;
    let location = format!("/v1/teams/{}", team.id);
    Ok(Reply::created(team, location))
}

/// The team's members.
#[endpoint(tags("teams"), status_codes(200, 400, 401, 403, 404))]
pub async fn list_members(can: Can<TeamsRead>, id: Path<TeamId>) -> ApiResult<Reply<Vec<Member>>> {
    Ok(Reply::ok(service::members(can.db(), id.0).await?))
}

/// Add up to 1000 members at once (or change their team role).
#[endpoint(tags("teams"), status_codes(200, 400, 401, 403, 404, 422))]
pub async fn add_members(
    caller: Caller,
    id: Path<TeamId>,
    body: JsonBody<AddMembers>,
    depot: &mut Depot,
) -> ApiResult<Reply<Vec<Member>>> {
    let state = dep::<RbacState>(depot)?;
    Ok(Reply::ok(
        service::add_members(&state, &caller, id.0, &body.0).await?,
    ))
}

/// Change a member's team role.
#[endpoint(tags("teams"), status_codes(200, 400, 401, 403, 404, 422))]
pub async fn patch_member(
    caller: Caller,
    id: Path<TeamId>,
    user_id: Path<UserId>,
    body: JsonBody<MemberPatch>,
) -> ApiResult<Reply<Member>> {
    Ok(Reply::ok(
        service::set_member_role(&caller, id.0, user_id.0, &body.0.team_role).await?,
    ))
}

/// Remove a member.
#[endpoint(tags("teams"), status_codes(204, 400, 401, 403, 404))]
pub async fn remove_member(
    caller: Caller,
    id: Path<TeamId>,
    user_id: Path<UserId>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<RbacState>(depot)?;
    service::remove_member(&state, &caller, id.0, user_id.0).await?;
    Ok(NoContent)
}

/// Roles given to the team (they apply to its members and every team below it).
#[endpoint(tags("teams"), status_codes(200, 400, 401, 403, 404))]
pub async fn list_team_roles(
    can: Can<TeamsRead>,
    id: Path<TeamId>,
) -> ApiResult<Reply<Vec<String>>> {
    Ok(Reply::ok(service::team_roles(can.db(), id.0).await?))
}

/// Give the team a role (needs `roles.assign.tenant` and every permission of the role).
#[endpoint(tags("teams"), status_codes(200, 400, 401, 403, 404, 422))]
pub async fn add_team_role(
    caller: Caller,
    id: Path<TeamId>,
    body: JsonBody<TeamRoleInput>,
    depot: &mut Depot,
) -> ApiResult<Reply<Vec<String>>> {
    let state = dep::<RbacState>(depot)?;
    Ok(Reply::ok(
        service::add_team_role(&state, &caller, id.0, &body.0.role).await?,
    ))
}

/// Take a role from the team.
#[endpoint(tags("teams"), status_codes(204, 400, 401, 403, 404))]
pub async fn remove_team_role(
    caller: Caller,
    id: Path<TeamId>,
    key: Path<String>,
    depot: &mut Depot,
) -> ApiResult<NoContent> {
    let state = dep::<RbacState>(depot)?;
    service::remove_team_role(&state, &caller, id.0, &key.0).await?;
    Ok(NoContent)
}

/// Shares the team owns or receives.
#[endpoint(tags("teams"), status_codes(200, 400, 401, 403, 404))]
pub async fn list_shares(can: Can<TeamsRead>, id: Path<TeamId>) -> ApiResult<Reply<Vec<Share>>> {
    Ok(Reply::ok(service::shares(can.db(), id.0).await?))
}

/// Share one of the team's resources with another team.
#[endpoint(tags("teams"), status_codes(201, 400, 401, 403, 404, 409, 422))]
pub async fn add_share(
    caller: Caller,
    id: Path<TeamId>,
    body: JsonBody<NewShare>,
) -> ApiResult<Reply<Share>> {
    let share = service::add_share(&caller, id.0, &body.0).await?;
    let location = format!("/v1/teams/{}/shares/{}", id.0, share.id);
    Ok(Reply::created(share, location))
}

/// Stop sharing.
#[endpoint(tags("teams"), status_codes(204, 400, 401, 403, 404))]
pub async fn remove_share(
    caller: Caller,
    id: Path<TeamId>,
    share_id: Path<ShareId>,
) -> ApiResult<NoContent> {
    service::remove_share(&caller, id.0, share_id.0).await?;
    Ok(NoContent)
}

fn months(req: &Request) -> ApiResult<u32> {
    crate::http::extract::int_param(req, "months", 6, 1..=36)
}

/// Analytics of every team: members, sub-teams, active members, monthly growth
/// (`months`, default 6).
#[endpoint(tags("teams"), status_codes(200, 400, 401, 403))]
pub async fn all_analytics(
    can: Can<TeamsRead>,
    req: &mut Request,
) -> ApiResult<Reply<Vec<TeamAnalytics>>> {
    let months = months(req)?;
    Ok(Reply::ok(service::analytics(can.db(), None, months).await?))
}

/// Analytics of one team.
#[endpoint(tags("teams"), status_codes(200, 400, 401, 403, 404))]
pub async fn team_analytics(
    can: Can<TeamsRead>,
    id: Path<TeamId>,
    req: &mut Request,
) -> ApiResult<Reply<TeamAnalytics>> {
    let months = months(req)?;
    let mut all = service::analytics(can.db(), Some(id.0), months).await?;
    all.pop()
        .map(Reply::ok)
        .ok_or_else(|| ApiError::not_found("team"))
}

/// The org chart as JSON, or as SVG (`format=svg` or `Accept: image/svg+xml`).
pub enum Chart {
    Json(Vec<ChartNode>),
    Svg(String),
}

#[async_trait]
impl Writer for Chart {
    async fn write(self, req: &mut Request, depot: &mut Depot, res: &mut Response) {
        match self {
            Chart::Json(nodes) => Reply::ok(nodes).write(req, depot, res).await,
            Chart::Svg(doc) => {
                res.status_code(StatusCode::OK);
                res.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
                res.body(doc);
            }
        }
    }
}

impl EndpointOutRegister for Chart {
    fn register(components: &mut Components, operation: &mut Operation) {
        let schema = <Vec<ChartNode> as oapi::ToSchema>::to_schema(components);
        operation.responses.insert(
            "200",
            oapi::Response::new("The chart")
                .add_content("application/json", oapi::Content::new(schema))
                .add_content(
                    "image/svg+xml",
                    oapi::Content::new(oapi::Object::new().schema_type(oapi::BasicType::String)),
                ),
        );
    }
}

/// The org chart: the team tree with member counts and leads, as JSON or an SVG picture.
#[endpoint(tags("teams"), status_codes(200, 400, 401, 403))]
pub async fn chart(can: Can<TeamsRead>, req: &mut Request) -> ApiResult<Chart> {
    let accept_svg = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("image/svg+xml"));
    let svg = match req.query::<String>("format").as_deref() {
        Some("svg") => true,
        Some("json") => false,
        None => accept_svg,
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidParameter,
                "query parameter `format` must be json or svg",
            ));
        }
    };
    let nodes = service::chart(can.db()).await?;
    Ok(if svg {
        let title = format!("{} — teams", can.tenant().tenant.display_name);
        Chart::Svg(super::chart::svg(&nodes, &title))
    } else {
        Chart::Json(nodes)
    })
}

/// Team templates: the platform's and the tenant's own.
#[endpoint(tags("teams"), status_codes(200, 401, 403))]
pub async fn list_team_templates(can: Can<TeamsRead>) -> ApiResult<Reply<Vec<TeamTemplate>>> {
    Ok(Reply::ok(service::templates(can.db()).await?))
}

/// Save a team template: team roles and nested sub-teams to create together.
#[endpoint(tags("teams"), status_codes(201, 400, 401, 403, 409, 422))]
pub async fn create_team_template(
    can: Can<TeamsCreate>,
    body: JsonBody<TeamTemplate>,
) -> ApiResult<Reply<TeamTemplate>> {
    let t = service::create_template(&can, &body.0).await?;
    let location = format!("/v1/team-templates/{}", t.key);
    Ok(Reply::created(t, location))
}

/// The team routes (mounted behind authentication).
pub fn router() -> Router {
    Router::new()
        .push(
            Router::with_path("team-templates")
                .get(list_team_templates)
                .post(create_team_template),
        )
        .push(
            Router::with_path("teams")
                .get(list_teams)
                .post(create_team)
                .push(Router::with_path("chart").get(chart))
                .push(Router::with_path("analytics").get(all_analytics))
                .push(
                    Router::with_path("{id}")
                        .get(get_team)
                        .patch(patch_team)
                        .delete(delete_team)
                        .push(Router::with_path("subtree").get(subtree))
                        .push(Router::with_path("ancestors").get(ancestors))
                        .push(Router::with_path("move").post(move_team))
                        .push(Router::with_path("merge").post(merge_team))
                        .push(Router::with_path("split").post(split_team))
                        .push(Router::with_path("analytics").get(team_analytics))
                        .push(
                            Router::with_path("members")
                                .get(list_members)
                                .post(add_members)
                                .push(
                                    Router::with_path("{user_id}")
                                        .patch(patch_member)
                                        .delete(remove_member),
                                ),
                        )
                        .push(
                            Router::with_path("roles")
                                .get(list_team_roles)
                                .post(add_team_role)
                                .push(Router::with_path("{key}").delete(remove_team_role)),
                        )
                        .push(
                            Router::with_path("shares")
                                .get(list_shares)
                                .post(add_share)
                                .push(Router::with_path("{share_id}").delete(remove_share)),
                        ),
                ),
        )
}
