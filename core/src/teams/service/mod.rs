//! Team use cases: validation, tree surgery under the tree lock, audit and permission
//! invalidation. Each use case opens its own transaction with `TenantDb::transaction`, writes
//! its audit entry inside it, and invalidates the tenant's cached permissions only after it
//! committed. Never runs SQL itself (that is `teams::repo`) and never touches HTTP.
//!
//! This file only names the parts and re-exports their use cases: `rules` (checks shared by
//! all of them), `templates`, `tree` (create, read, change, move, merge, split), `members`
//! (members and team roles), `shares`, `analytics` (analytics and the org chart), `joining`
//! (the invitations' port to team membership).

mod analytics;
mod joining;
mod members;
mod rules;
mod shares;
mod templates;
mod tree;

pub use analytics::{analytics, chart};
pub use joining::InvitationTeams;
pub use members::{
    add_members, add_team_role, members, remove_member, remove_team_role, set_member_role,
    team_roles,
};
pub use rules::require_on_team;
pub use shares::{add_share, remove_share, shared_access, shares};
pub use templates::{builtin_templates, create_template, templates};
pub use tree::{ancestors, create, delete, get, list, merge, move_team, patch, split, subtree};
