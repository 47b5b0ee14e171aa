//! Teams: a tree of teams with members and team roles; move, merge and split; shares of
//! resources between teams; templates; analytics; and the org chart (JSON and SVG).
//!
//! Shape: `handlers` → `service` (validation, transactions, audit, invalidation) → `repo`;
//! `chart` lays out and draws the tree (pure). **Invariants:** `path` of every team is its
//! ancestors' ids from the root down plus its own, kept exact by every move, merge and split
//! under a per-tenant lock, so subtree and ancestor queries are single index lookups at any
//! depth; the tree never has a cycle; every change that can alter who holds what (members,
//! team roles, the shape of the tree) is audited in its transaction and invalidates the
//! tenant's cached permissions after commit. Roles given to a team flow *down*: they apply to
//! the members of that team and of every team below it. Never grants a role the caller could
//! not grant directly.

pub mod chart;
pub mod handlers;
pub mod repo;
pub mod service;

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{ShareId, TeamId, UserId};

/// A team.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Team {
    pub id: TeamId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<TeamId>,
    pub name: String,
    pub description: String,
    /// Ancestors from the root down, then the team itself.
    pub path: Vec<TeamId>,
    /// 0 for a root team.
    pub depth: usize,
    /// Members of this team itself.
    pub member_count: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Input for creating a team.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    /// 1-100 characters, unique among its siblings.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The team it belongs under; a root team when absent.
    #[serde(default)]
    pub parent_id: Option<TeamId>,
    /// A team template (`GET /v1/team-templates`): its sub-teams and team roles are created too.
    #[serde(default)]
    pub template: Option<String>,
}

/// Changes to a team; absent fields stay.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// Where to move a team.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveTeam {
    /// The new parent; `null` makes it a root team.
    pub parent_id: Option<TeamId>,
}

/// Merge a team into another.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeTeam {
    /// The team that absorbs this one's members, sub-teams, roles and shares.
    pub into: TeamId,
}

/// Split members off into a new sibling team.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitTeam {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Members of this team who move to the new one (1-1000).
    pub member_ids: Vec<UserId>,
    /// Give the new team this team's roles too.
    #[serde(default)]
    pub copy_roles: bool,
}

/// A member of a team.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Member {
    pub user_id: UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The member's role in the team (`lead`, `member`, …).
    pub team_role: String,
    pub joined_at: DateTime<Utc>,
}

/// Members to add (bulk).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMembers {
    /// 1-1000 users.
    pub user_ids: Vec<UserId>,
    /// Defaults to `member`; 1-32 of `a-z 0-9 _ -`.
    #[serde(default)]
    pub team_role: Option<String>,
}

/// A member's new team role.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberPatch {
    pub team_role: String,
}

/// A role given to a team.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamRoleInput {
    /// The role's key.
    pub role: String,
}

/// A share of one resource, owned by a team, with another team.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Share {
    pub id: ShareId,
    /// The owning team.
    pub team_id: TeamId,
    pub shared_with: TeamId,
    pub resource_type: String,
    pub resource_id: String,
    /// `read` or `write`.
    pub access: String,
    pub created_at: DateTime<Utc>,
}

/// Input for a share.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewShare {
    pub shared_with: TeamId,
    pub resource_type: String,
    pub resource_id: String,
    /// `read` or `write`.
    pub access: String,
}

/// A team template's shape: team roles and sub-teams, recursively.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// Role keys given to the team.
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub children: Vec<TemplateChild>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateChild {
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    #[salvo(schema(value_type = Vec<Object>))]
    pub children: Vec<TemplateChild>,
}

/// A team template.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamTemplate {
    /// 1-63 of `a-z 0-9 _ -`.
    pub key: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub spec: TemplateSpec,
    /// Shipped with the platform (read-only).
    #[serde(default)]
    pub builtin: bool,
}

/// Growth of one month.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MonthGrowth {
    /// `YYYY-MM`.
    pub month: String,
    pub joined: i64,
    pub left: i64,
}

/// Analytics of one team.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TeamAnalytics {
    pub team_id: TeamId,
    pub name: String,
    /// Members of the team itself.
    pub members: i64,
    /// Distinct members of the team and every team below it.
    pub members_in_subtree: i64,
    pub sub_teams: i64,
    /// Members seen (made an authenticated request) in the last 30 days.
    pub active_members_30d: i64,
    /// Audited actions by the team's members in the last 30 days.
    pub actions_30d: i64,
    /// Joins and leaves per month, oldest first.
    pub growth: Vec<MonthGrowth>,
}

/// One node of the org chart.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChartNode {
    pub id: TeamId,
    pub name: String,
    pub members: i64,
    /// Display names (or usernames) of the team's leads.
    pub leads: Vec<String>,
    #[salvo(schema(value_type = Vec<Object>))]
    pub children: Vec<ChartNode>,
}
