//! RBAC use cases: effective permissions through the caches, role and grant changes with
//! validation, delegation checks, audit and invalidation. Each change opens its own
//! transaction with `TenantDb::transaction`, writes its audit entry inside it and invalidates
//! the tenant's cached permissions only after it committed. Never runs SQL itself (that is
//! `rbac::repo`) and never touches HTTP.
//!
//! This file only names the parts and re-exports their use cases: `effective` (resolution,
//! checks, explanations), `catalog` (the permission catalog, role templates and seeding),
//! `rules` (input checks and the audit entry shared by the changes), `roles`, `assignments`
//! and `grants`.

mod assignments;
mod catalog;
mod effective;
mod grants;
mod roles;
mod rules;

pub use assignments::{assign, holders, platform_assign, roles_of, unassign};
pub use catalog::{catalog, catalog_entries, load_catalog, seed, templates};
pub use effective::{check, compute, effective, idp_roles, permissions_of};
pub use grants::{add_grant, grants_of, remove_grant};
pub use roles::{closure_perms, create_role, delete_role, get_role, list_roles, update_role};
