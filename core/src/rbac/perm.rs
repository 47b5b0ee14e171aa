//! Permission strings (`resource.action.scope`), the platform's catalog, role templates, and
//! the pure resolution of a user's effective permissions.
//!
//! Owns the meaning of a permission: scopes are ordered `own < team < tenant` and a grant at a
//! scope covers the narrower ones; `*` stands for any resource or action; a deny at a scope
//! refuses that scope and every wider one (so `notes.delete.tenant` denied leaves
//! `notes.delete.team` as granted, and `notes.delete.own` denied leaves nothing). Nothing here
//! touches a database or a cache: the same inputs always give the same answer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{GrantId, TeamId};

/// How far a permission reaches: the caller's own records, their teams', or the whole tenant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Own,
    Team,
    Tenant,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Own, Scope::Team, Scope::Tenant];
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Own => "own",
            Scope::Team => "team",
            Scope::Tenant => "tenant",
        }
    }
}

/// A parsed permission or permission pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Perm {
    /// A resource name or `*`.
    pub resource: String,
    /// An action name or `*`.
    pub action: String,
    pub scope: Scope,
}

/// Why a permission string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermError {
    #[error("must look like resource.action.scope with scope own, team or tenant")]
    Shape,
    #[error("unknown resource {0:?}")]
    UnknownResource(String),
    #[error("resource {resource:?} has no action {action:?}")]
    UnknownAction { resource: String, action: String },
}

fn is_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && s.len() <= 63
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl FromStr for Perm {
    type Err = PermError;
    fn from_str(s: &str) -> Result<Self, PermError> {
        let mut parts = s.split('.');
        let (Some(resource), Some(action), Some(scope), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PermError::Shape);
        };
        let part_ok = |p: &str| p == "*" || is_name(p);
        let scope = match scope {
            "own" => Scope::Own,
            "team" => Scope::Team,
            "tenant" => Scope::Tenant,
            _ => return Err(PermError::Shape),
        };
        if !part_ok(resource) || !part_ok(action) {
            return Err(PermError::Shape);
        }
        Ok(Perm {
            resource: resource.into(),
            action: action.into(),
            scope,
        })
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}",
            self.resource,
            self.action,
            self.scope.as_str()
        )
    }
}

impl Serialize for Perm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Perm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Perm {
    pub fn new(resource: &str, action: &str, scope: Scope) -> Self {
        Perm {
            resource: resource.into(),
            action: action.into(),
            scope,
        }
    }

    /// Whether this pattern grants `other` (a concrete permission or a narrower pattern).
    pub fn covers(&self, other: &Perm) -> bool {
        (self.resource == "*" || self.resource == other.resource)
            && (self.action == "*" || self.action == other.action)
            && self.scope >= other.scope
    }

    /// Whether, as a deny, this pattern refuses `other` at `other`'s scope.
    fn denies(&self, other: &Perm) -> bool {
        (self.resource == "*" || other.resource == "*" || self.resource == other.resource)
            && (self.action == "*" || other.action == "*" || self.action == other.action)
            && self.scope <= other.scope
    }
}

/// The platform's resources and their actions. Resource types registered later add to this
/// per tenant (`permission_resources`).
pub const CATALOG: &[(&str, &[&str], &str)] = &[
    ("notes", &["create", "read", "update", "delete"], "Notes"),
    (
        "resources",
        &["create", "read", "update", "delete", "share"],
        "Resources of every type (own, team or tenant scope) and their shares",
    ),
    (
        "resource_types",
        &["create", "read", "update", "delete"],
        "Resource type definitions",
    ),
    (
        "plugins",
        &["read", "upload", "manage"],
        "Plugins: uploads, the marketplace, installations and their grants",
    ),
    (
        "users",
        &[
            "create",
            "read",
            "update",
            "deactivate",
            "delete",
            "export",
            "erase",
        ],
        "Users of the tenant, their personal-data exports and erasure",
    ),
    (
        "invitations",
        &["create", "read", "revoke", "configure"],
        "Invitations, their mail templates and the tenant's invitation policy",
    ),
    ("sessions", &["read", "revoke"], "Sign-in sessions"),
    ("api_keys", &["create", "read", "revoke"], "API keys"),
    (
        "roles",
        &["create", "read", "update", "delete", "assign"],
        "Roles and role assignments",
    ),
    (
        "permissions",
        &["read", "grant"],
        "Per-user grants and denies, and permission explanations",
    ),
    (
        "teams",
        &[
            "create",
            "read",
            "update",
            "delete",
            "manage_members",
            "share",
        ],
        "Teams, their members and shares",
    ),
    (
        "audit",
        &["read", "export", "configure"],
        "The audit log, its exports, retention and forwarding",
    ),
    (
        "identity_providers",
        &["read", "update"],
        "Social and enterprise login providers",
    ),
    (
        "settings",
        &["read", "update"],
        "Tenant settings, their versions and the branding logo",
    ),
    (
        "flags",
        &["read", "update", "evaluate"],
        "Feature flags, segments, environments and their SDK keys; evaluation",
    ),
    (
        "notifications",
        &["read", "send", "configure"],
        "Sending notifications, their deliveries and analytics; categories, templates and event rules",
    ),
    (
        "webhooks",
        &["read", "configure"],
        "Webhook endpoints, their secrets, delivery log, retries and replays; the event types",
    ),
    ("events", &["read"], "The tenant's event feed and stream"),
    (
        "changes",
        &["read"],
        "The change feed of resources and users, for mirroring the tenant",
    ),
];

/// The catalog a tenant sees: the platform's plus its registered resource types.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub resources: BTreeMap<String, BTreeSet<String>>,
}

impl Catalog {
    pub fn platform() -> Self {
        let mut c = Catalog::default();
        for (resource, actions, _) in CATALOG {
            c.resources.insert(
                resource.to_string(),
                actions.iter().map(|a| a.to_string()).collect(),
            );
        }
        c
    }

    pub fn add(&mut self, resource: &str, actions: &[String]) {
        self.resources
            .entry(resource.to_string())
            .or_default()
            .extend(actions.iter().cloned());
    }

    /// Parses `s` and checks its resource and action exist (or are `*`).
    pub fn validate(&self, s: &str) -> Result<Perm, PermError> {
        let perm: Perm = s.parse()?;
        if perm.resource == "*" {
            return Ok(perm);
        }
        let Some(actions) = self.resources.get(&perm.resource) else {
            return Err(PermError::UnknownResource(perm.resource));
        };
        if perm.action != "*" && !actions.contains(&perm.action) {
            return Err(PermError::UnknownAction {
                resource: perm.resource,
                action: perm.action,
            });
        }
        Ok(perm)
    }
}

/// A role template shipped with the platform: `(key, name, description, permissions,
/// default)`. Tenants get copies at provisioning and may copy them again under new keys.
pub const TEMPLATES: &[(&str, &str, &str, &[&str], bool)] = &[
    (
        "owner",
        "Owner",
        "Everything, including resource types added later. Cannot be edited or deleted.",
        &["*.*.tenant"],
        false,
    ),
    (
        "admin",
        "Administrator",
        "Manages users, roles, teams, keys and all records; reads the audit log.",
        &[
            "notes.*.tenant",
            "users.*.tenant",
            "invitations.*.tenant",
            "sessions.*.tenant",
            "api_keys.*.tenant",
            "roles.*.tenant",
            "permissions.*.tenant",
            "teams.*.tenant",
            "audit.read.tenant",
            "identity_providers.*.tenant",
            "resources.*.tenant",
            "resource_types.*.tenant",
            "plugins.*.tenant",
            "settings.*.tenant",
            "flags.*.tenant",
            "notifications.*.tenant",
            "webhooks.*.tenant",
            "events.*.tenant",
            "changes.*.tenant",
        ],
        false,
    ),
    (
        "member",
        "Member",
        "Works with records, sees teams and roles, manages own keys and sessions.",
        &[
            "notes.*.tenant",
            "teams.read.tenant",
            "roles.read.tenant",
            "api_keys.*.own",
            "sessions.*.own",
            "resources.read.tenant",
            "resources.create.own",
            "resources.update.own",
            "resources.delete.own",
            "resources.share.own",
            "resource_types.read.tenant",
            "settings.read.tenant",
            "flags.evaluate.tenant",
        ],
        true,
    ),
    (
        "viewer",
        "Viewer",
        "Reads records, people and teams.",
        &[
            "notes.read.tenant",
            "users.read.tenant",
            "teams.read.tenant",
            "resources.read.tenant",
            "resource_types.read.tenant",
        ],
        false,
    ),
];

/// Where a permission came from, for `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// A role held directly, by default, through a team, or through the identity provider;
    /// `path` lists the roles from the held one to the one that carries the permission.
    Role { path: Vec<String>, via: Via },
    /// A custom grant or deny on the user.
    Grant { id: GrantId },
}

/// How a role reached the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Via {
    Direct,
    Default,
    /// Granted to this team (the user's own team or one above it).
    Team {
        team: TeamId,
    },
    IdentityProvider,
}

/// A role as resolution sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleDef {
    pub key: String,
    pub permissions: Vec<Perm>,
    pub parents: Vec<Uuid>,
}

/// Everything that feeds one user's permissions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Inputs {
    /// Every role reachable from the held ones (and any others).
    pub roles: HashMap<Uuid, RoleDef>,
    /// The roles the user holds and how.
    pub held: Vec<(Uuid, Via)>,
    /// Custom grants: (grant id, permission, allow?).
    pub grants: Vec<(Uuid, Perm, bool)>,
    /// The teams whose records `team` scope reaches: the user's teams and those below them.
    pub teams: Vec<Uuid>,
    /// The teams the user is a member of.
    pub member_of: Vec<Uuid>,
    /// Those teams and every team above them (a share with any of these reaches the user).
    pub ancestry: Vec<Uuid>,
}

/// One user's resolved permissions: what checks consult.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effective {
    /// resource → action → widest granted scope (keys may be `*`).
    grants: HashMap<String, HashMap<String, Scope>>,
    /// resource → action → narrowest denied scope.
    denies: HashMap<String, HashMap<String, Scope>>,
    /// Every contributing pattern with its sources, for `explain`.
    pub sources: BTreeMap<String, Vec<(bool, Source)>>,
    /// The keys of every role held, directly or by inheritance.
    pub roles: BTreeSet<String>,
    /// The teams whose records `team` scope reaches: the user's teams and those below them.
    pub teams: Vec<Uuid>,
    /// The teams the user is a member of.
    pub member_of: Vec<Uuid>,
    /// Those teams and every team above them, sorted (a share with any of these reaches
    /// the user).
    pub ancestry: Vec<Uuid>,
}

/// The scopes recorded for `resource.action`, counting `*` entries (no allocation).
fn lookup(
    map: &HashMap<String, HashMap<String, Scope>>,
    resource: &str,
    action: &str,
) -> [Option<Scope>; 4] {
    let mut out = [None; 4];
    for (i, r) in [resource, "*"].into_iter().enumerate() {
        if let Some(actions) = map.get(r) {
            out[2 * i] = actions.get(action).copied();
            out[2 * i + 1] = actions.get("*").copied();
        }
    }
    out
}

impl Effective {
    /// Resolves `inputs`: held roles and everything they inherit, plus grants, minus denies.
    pub fn resolve(inputs: &Inputs) -> Self {
        let mut eff = Effective {
            teams: inputs.teams.clone(),
            member_of: inputs.member_of.clone(),
            ancestry: inputs.ancestry.clone(),
            ..Default::default()
        };
        for (held, via) in &inputs.held {
            // Depth-first over the parent graph; `seen` makes cycles harmless.
            let mut stack = vec![(*held, Vec::<String>::new())];
            let mut seen = BTreeSet::new();
            while let Some((id, mut path)) = stack.pop() {
                if !seen.insert(id) {
                    continue;
                }
                let Some(role) = inputs.roles.get(&id) else {
                    continue;
                };
                path.push(role.key.clone());
                eff.roles.insert(role.key.clone());
                for perm in &role.permissions {
                    eff.add(
                        perm,
                        true,
                        Source::Role {
                            path: path.clone(),
                            via: via.clone(),
                        },
                    );
                }
                for parent in &role.parents {
                    stack.push((*parent, path.clone()));
                }
            }
        }
        for (id, perm, allow) in &inputs.grants {
            eff.add(perm, *allow, Source::Grant { id: GrantId(*id) });
        }
        eff
    }

    fn add(&mut self, perm: &Perm, allow: bool, source: Source) {
        let map = if allow {
            &mut self.grants
        } else {
            &mut self.denies
        };
        let slot = map
            .entry(perm.resource.clone())
            .or_default()
            .entry(perm.action.clone());
        let entry = slot.or_insert(perm.scope);
        *entry = if allow {
            (*entry).max(perm.scope)
        } else {
            (*entry).min(perm.scope)
        };
        let sources = self.sources.entry(perm.to_string()).or_default();
        if !sources.contains(&(allow, source.clone())) {
            sources.push((allow, source));
        }
    }

    /// Whether `resource.action` is allowed at `scope`: some grant reaches that scope and no
    /// deny caps it.
    pub fn allows(&self, resource: &str, action: &str, scope: Scope) -> bool {
        let granted = lookup(&self.grants, resource, action)
            .into_iter()
            .flatten()
            .max();
        granted.is_some_and(|g| g >= scope) && self.denied_below(resource, action, scope)
    }

    fn denied_below(&self, resource: &str, action: &str, scope: Scope) -> bool {
        lookup(&self.denies, resource, action)
            .into_iter()
            .flatten()
            .all(|d| scope < d)
    }

    pub fn allows_perm(&self, perm: &Perm) -> bool {
        self.allows(&perm.resource, &perm.action, perm.scope)
    }

    /// Whether the holder may hand `pattern` to someone else: one of their grants covers the
    /// whole pattern and none of their denies touches it.
    pub fn covers(&self, pattern: &Perm) -> bool {
        let granted = self.grants.iter().any(|(r, actions)| {
            actions.iter().any(|(a, s)| {
                Perm {
                    resource: r.clone(),
                    action: a.clone(),
                    scope: *s,
                }
                .covers(pattern)
            })
        });
        let denied = self.denies.iter().any(|(r, actions)| {
            actions.iter().any(|(a, s)| {
                Perm {
                    resource: r.clone(),
                    action: a.clone(),
                    scope: *s,
                }
                .denies(pattern)
            })
        });
        granted && !denied
    }

    /// The concrete permissions of `catalog` this user holds, at their widest allowed scope.
    pub fn expand(&self, catalog: &Catalog) -> Vec<Perm> {
        let mut out = Vec::new();
        for (resource, actions) in &catalog.resources {
            for action in actions {
                if let Some(scope) = Scope::ALL
                    .iter()
                    .rev()
                    .find(|s| self.allows(resource, action, **s))
                {
                    out.push(Perm::new(resource, action, *scope));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Perm {
        s.parse().unwrap()
    }

    fn role(key: &str, perms: &[&str], parents: &[Uuid]) -> RoleDef {
        RoleDef {
            key: key.into(),
            permissions: perms.iter().map(|s| p(s)).collect(),
            parents: parents.to_vec(),
        }
    }

    #[test]
    fn parsing_and_validation() {
        assert_eq!(p("notes.read.tenant").to_string(), "notes.read.tenant");
        assert_eq!(p("*.*.own").scope, Scope::Own);
        for bad in [
            "",
            "notes",
            "notes.read",
            "notes.read.all",
            "notes.read.tenant.x",
            "Notes.read.tenant",
            "notes..tenant",
            "no tes.read.own",
            "notes.read.*",
        ] {
            assert!(bad.parse::<Perm>().is_err(), "{bad:?} must not parse");
        }
        let c = Catalog::platform();
        assert!(c.validate("notes.read.tenant").is_ok());
        assert!(c.validate("notes.*.team").is_ok());
        assert!(c.validate("*.read.own").is_ok());
        assert_eq!(
            c.validate("widgets.read.own"),
            Err(PermError::UnknownResource("widgets".into()))
        );
        assert!(matches!(
            c.validate("notes.fly.own"),
            Err(PermError::UnknownAction { .. })
        ));
        for (_, _, _, perms, _) in TEMPLATES {
            for perm in *perms {
                c.validate(perm).expect("templates use catalog permissions");
            }
        }
    }

    #[test]
    fn scopes_wildcards_inheritance_and_denies() {
        let base = Uuid::now_v7();
        let mid = Uuid::now_v7();
        let top = Uuid::now_v7();
        let mut inputs = Inputs::default();
        inputs
            .roles
            .insert(base, role("base", &["notes.read.tenant"], &[]));
        inputs
            .roles
            .insert(mid, role("mid", &["notes.update.team"], &[base]));
        inputs
            .roles
            .insert(top, role("top", &["users.*.own"], &[mid]));
        inputs.held.push((top, Via::Direct));
        let eff = Effective::resolve(&inputs);
        assert!(eff.allows("notes", "read", Scope::Own));
        assert!(eff.allows("notes", "read", Scope::Tenant));
        assert!(eff.allows("notes", "update", Scope::Team));
        assert!(!eff.allows("notes", "update", Scope::Tenant));
        assert!(eff.allows("users", "delete", Scope::Own));
        assert!(!eff.allows("users", "delete", Scope::Team));
        assert_eq!(eff.roles, ["base", "mid", "top"].map(String::from).into());
        // A deny at team scope leaves own.
        inputs
            .grants
            .push((Uuid::now_v7(), p("notes.read.team"), false));
        let eff = Effective::resolve(&inputs);
        assert!(eff.allows("notes", "read", Scope::Own));
        assert!(!eff.allows("notes", "read", Scope::Team));
        assert!(!eff.allows("notes", "read", Scope::Tenant));
        // A wildcard deny beats everything it names.
        inputs.grants.push((Uuid::now_v7(), p("*.*.own"), false));
        let eff = Effective::resolve(&inputs);
        assert!(!eff.allows("notes", "read", Scope::Own));
        assert!(!eff.allows("users", "delete", Scope::Own));
        let sources = &eff.sources["notes.read.tenant"];
        assert_eq!(
            sources[0].1,
            Source::Role {
                path: vec!["top".into(), "mid".into(), "base".into()],
                via: Via::Direct
            }
        );
    }

    #[test]
    fn cycles_do_not_loop() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let mut inputs = Inputs::default();
        inputs.roles.insert(a, role("a", &["notes.read.own"], &[b]));
        inputs
            .roles
            .insert(b, role("b", &["notes.create.own"], &[a]));
        inputs.held.push((a, Via::Default));
        let eff = Effective::resolve(&inputs);
        assert!(eff.allows("notes", "create", Scope::Own));
    }

    #[test]
    fn delegation_needs_a_covering_grant() {
        let r = Uuid::now_v7();
        let mut inputs = Inputs::default();
        inputs.roles.insert(
            r,
            role("r", &["notes.read.tenant", "notes.update.team"], &[]),
        );
        inputs.held.push((r, Via::Direct));
        inputs
            .grants
            .push((Uuid::now_v7(), p("notes.read.tenant"), false));
        let eff = Effective::resolve(&inputs);
        assert!(eff.covers(&p("notes.update.own")));
        assert!(eff.covers(&p("notes.update.team")));
        assert!(!eff.covers(&p("notes.update.tenant")));
        assert!(!eff.covers(&p("notes.*.own")), "holds only some actions");
        assert!(!eff.covers(&p("notes.read.tenant")), "denied");
        assert!(!eff.covers(&p("*.update.own")));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const RESOURCES: &[&str] = &["notes", "users", "teams", "*"];
    const ACTIONS: &[&str] = &["read", "create", "delete", "*"];

    fn perm() -> impl Strategy<Value = Perm> {
        (
            prop::sample::select(RESOURCES),
            prop::sample::select(ACTIONS),
            prop::sample::select(&Scope::ALL[..]),
        )
            .prop_map(|(r, a, s)| Perm::new(r, a, s))
    }

    fn concrete() -> impl Strategy<Value = Perm> {
        (
            prop::sample::select(&RESOURCES[..3]),
            prop::sample::select(&ACTIONS[..3]),
            prop::sample::select(&Scope::ALL[..]),
        )
            .prop_map(|(r, a, s)| Perm::new(r, a, s))
    }

    /// Up to 8 roles, each with permissions and parents among the earlier roles (plus the
    /// odd back edge, so cycles occur), some held, and some grants and denies.
    fn inputs() -> impl Strategy<Value = Inputs> {
        (
            prop::collection::vec(
                (
                    prop::collection::vec(perm(), 0..4),
                    prop::collection::vec(0usize..8, 0..3),
                ),
                1..8,
            ),
            prop::collection::vec(0usize..8, 0..3),
            prop::collection::vec((perm(), any::<bool>()), 0..4),
        )
            .prop_map(|(roles, held, grants)| {
                let ids: Vec<Uuid> = (0..roles.len()).map(|_| Uuid::new_v4()).collect();
                let mut inputs = Inputs::default();
                for (i, (perms, parents)) in roles.into_iter().enumerate() {
                    inputs.roles.insert(
                        ids[i],
                        RoleDef {
                            key: format!("r{i}"),
                            permissions: perms,
                            parents: parents
                                .into_iter()
                                .filter_map(|p| ids.get(p).copied())
                                .collect(),
                        },
                    );
                }
                inputs.held = held
                    .into_iter()
                    .filter_map(|h| ids.get(h).map(|id| (*id, Via::Direct)))
                    .collect();
                inputs.grants = grants
                    .into_iter()
                    .map(|(p, allow)| (Uuid::new_v4(), p, allow))
                    .collect();
                inputs
            })
    }

    /// Every role reachable from `id` through parents (including itself).
    fn reachable(inputs: &Inputs, id: Uuid) -> BTreeSet<Uuid> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![id];
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                stack.extend(inputs.roles[&id].parents.iter().copied());
            }
        }
        seen
    }

    proptest! {
        #[test]
        fn inheritance_is_transitive(inputs in inputs(), check in concrete()) {
            let eff = Effective::resolve(&inputs);
            let denied = inputs.grants.iter().any(|(_, d, allow)| !allow && d.denies(&check));
            let carried = inputs.held.iter().any(|(h, _)| {
                reachable(&inputs, *h).iter().any(|r| {
                    inputs.roles[r].permissions.iter().any(|g| g.covers(&check))
                })
            });
            if carried && !denied {
                prop_assert!(eff.allows_perm(&check));
            }
        }

        #[test]
        fn deny_wins(inputs in inputs(), check in concrete()) {
            let mut inputs = inputs;
            inputs.grants.push((Uuid::new_v4(), check.clone(), false));
            let eff = Effective::resolve(&inputs);
            prop_assert!(!eff.allows_perm(&check));
            // ...and every wider scope of it too.
            for s in Scope::ALL.iter().filter(|s| **s >= check.scope) {
                prop_assert!(!eff.allows(&check.resource, &check.action, *s));
            }
        }

        #[test]
        fn removing_a_grant_never_adds(inputs in inputs(), check in concrete(), which in 0usize..4) {
            let before = Effective::resolve(&inputs);
            let mut fewer = inputs.clone();
            let allows: Vec<usize> = fewer.grants.iter().enumerate()
                .filter(|(_, g)| g.2).map(|(i, _)| i).collect();
            if !allows.is_empty() {
                fewer.grants.remove(allows[which % allows.len()]);
            } else if !fewer.held.is_empty() {
                fewer.held.remove(which % fewer.held.len());
            }
            let after = Effective::resolve(&fewer);
            prop_assert!(!after.allows_perm(&check) || before.allows_perm(&check));
        }

        #[test]
        fn cached_and_uncached_answers_agree(inputs in inputs(), check in concrete()) {
            // The L2 cache stores the resolved set as JSON; the L1 keeps the value itself.
            let eff = Effective::resolve(&inputs);
            let json = serde_json::to_string(&eff).unwrap();
            let cached: Effective = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&cached, &eff);
            prop_assert_eq!(cached.allows_perm(&check), eff.allows_perm(&check));
            prop_assert_eq!(cached.covers(&check), eff.covers(&check));
        }

        #[test]
        fn covering_means_allowing(inputs in inputs(), check in concrete()) {
            let eff = Effective::resolve(&inputs);
            if eff.covers(&check) {
                prop_assert!(eff.allows_perm(&check));
            }
        }
    }
}
