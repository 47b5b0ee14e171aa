//! Who may see and change which resource: RBAC scopes on `resources.<action>` (own < team <
//! tenant) plus per-resource shares.
//!
//! - `own`: resources the caller owns;
//! - `team`: also resources of the caller's teams and every team below them;
//! - `tenant`: every resource of the tenant;
//! - a share with the caller, or with one of the caller's teams or a team above it, lets the
//!   caller read (`read`) or also update (`write`) that resource, provided their roles let them
//!   read (update) at least their own resources (a key or role without `resources.read` sees
//!   nothing, shared or not).
//!
//! The same rule is rendered three ways and must stay one rule: [`Access::may`] for one
//! loaded resource, [`Access::read_predicate`] as SQL for lists, and [`Access::search_filter`]
//! for the search index. Never decide visibility anywhere else.

use std::sync::Arc;

use diesel::sql_types::{Array, Uuid as SqlUuid};
use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use super::ShareAccess;
use crate::rbac::Caller;
use crate::rbac::perm::{Effective, Scope};

/// The resource actions permissions name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Read,
    Update,
    Delete,
    Share,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Read => "read",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Share => "share",
        }
    }
}

/// How the caller relates to one resource.
#[derive(Debug, Clone, Copy, Default)]
pub struct Relation {
    pub owner: bool,
    /// The resource's team is one of the caller's teams or below one.
    pub in_team_reach: bool,
    pub share: Option<ShareAccess>,
}

/// The caller's reach over resources, computed once per request from the caller's cached
/// effective permissions (which carry their teams, the teams above and the teams below them,
/// and are invalidated with every team or membership change): building it runs no query.
#[derive(Debug, Clone)]
pub struct Access {
    pub me: Uuid,
    scopes: [Option<Scope>; 5],
    eff: Arc<Effective>,
}

fn widest(caller: &Caller, action: Action) -> Option<Scope> {
    [Scope::Tenant, Scope::Team, Scope::Own]
        .into_iter()
        .find(|s| caller.allows("resources", action.as_str(), *s))
}

impl Access {
    /// The caller's access (no query: their teams come with their effective permissions).
    pub fn of(caller: &Caller) -> Self {
        let scopes = [
            Action::Create,
            Action::Read,
            Action::Update,
            Action::Delete,
            Action::Share,
        ]
        .map(|a| widest(caller, a));
        Self {
            me: caller.user_id(),
            scopes,
            eff: caller.effective.clone(),
        }
    }

    /// Teams the caller is a member of.
    pub fn member_of(&self) -> &[Uuid] {
        &self.eff.member_of
    }

    /// Those teams and every team above them (a share with any of these reaches the caller).
    pub fn ancestry(&self) -> &[Uuid] {
        &self.eff.ancestry
    }

    /// The teams whose resources `team` scope reaches: the caller's teams and every team
    /// below them.
    pub fn team_reach(&self) -> &[Uuid] {
        &self.eff.teams
    }

    /// Whether a resource of `team` is in the caller's team reach.
    pub fn in_team_reach(&self, team: Option<Uuid>) -> bool {
        team.is_some_and(|t| self.eff.teams.contains(&t))
    }

    /// The widest scope the caller holds for `action`.
    pub fn scope(&self, action: Action) -> Option<Scope> {
        self.scopes[action as usize]
    }

    /// Whether the caller may do `action` to a resource they relate to as `rel`.
    pub fn may(&self, action: Action, rel: Relation) -> bool {
        let by_scope = match self.scope(action) {
            None => false,
            Some(Scope::Tenant) => true,
            Some(Scope::Team) => rel.owner || rel.in_team_reach,
            Some(Scope::Own) => rel.owner,
        };
        let by_share = self.scope(action).is_some()
            && matches!(
                (action, rel.share),
                (Action::Read, Some(_)) | (Action::Update, Some(ShareAccess::Write))
            );
        by_scope || by_share
    }

    /// Whether the caller reads every resource (no filtering needed).
    pub fn reads_all(&self) -> bool {
        self.scope(Action::Read) == Some(Scope::Tenant)
    }

    /// Appends `AND (<visible to the caller>)` for rows aliased `r` to `q`; nothing when the
    /// caller reads everything, `AND false` when nothing.
    pub fn read_predicate(&self, q: super::repo::Sql) -> super::repo::Sql {
        match self.scope(Action::Read) {
            Some(Scope::Tenant) => q,
            None => q.push(" AND false"),
            Some(scope) => {
                let mut q = q
                    .push(" AND (r.owner_id = ")
                    .bind::<SqlUuid, _>(self.me)
                    .push(" OR EXISTS (SELECT 1 FROM resource_shares s WHERE s.resource_id = r.id AND (s.user_id = ")
                    .bind::<SqlUuid, _>(self.me)
                    .push(" OR s.team_id = ANY(")
                    .bind::<Array<SqlUuid>, _>(self.ancestry().to_vec())
                    .push(")))");
                if scope == Scope::Team && !self.team_reach().is_empty() {
                    q = q
                        .push(" OR r.team_id = ANY(")
                        .bind::<Array<SqlUuid>, _>(self.team_reach().to_vec())
                        .push(")");
                }
                q.push(")")
            }
        }
    }

    /// How the caller relates to a resource owned by `owner` in `team`. The share lookup
    /// (one query) runs only when a share could change what the caller may do with it, so
    /// a caller whose scopes already decide (an owner, an admin) costs no query.
    pub async fn relation(
        &self,
        conn: &AsyncPgConnection,
        id: Uuid,
        owner: Uuid,
        team: Option<Uuid>,
    ) -> diesel::QueryResult<Relation> {
        let mut rel = Relation {
            owner: owner == self.me,
            in_team_reach: self.in_team_reach(team),
            share: None,
        };
        if self.share_matters(rel) {
            rel.share = super::repo::share_access(conn, id, self.me, self.ancestry()).await?;
        }
        Ok(rel)
    }

    /// Whether a share could widen what the caller may do with a resource they relate to as
    /// `rel` (shares grant reading and updating, within the caller's scopes).
    fn share_matters(&self, rel: Relation) -> bool {
        [Action::Read, Action::Update]
            .into_iter()
            .any(|a| self.scope(a).is_some() && !self.may(a, rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(read: Option<Scope>, update: Option<Scope>) -> Access {
        Access {
            me: Uuid::nil(),
            scopes: [None, read, update, None, None],
            eff: Arc::new(Effective::default()),
        }
    }

    const NONE: Relation = Relation {
        owner: false,
        in_team_reach: false,
        share: None,
    };

    #[test]
    fn scopes_widen_and_shares_add() {
        let own = access(Some(Scope::Own), Some(Scope::Own));
        assert!(own.may(
            Action::Read,
            Relation {
                owner: true,
                ..NONE
            }
        ));
        assert!(!own.may(Action::Read, NONE));
        assert!(!own.may(
            Action::Read,
            Relation {
                in_team_reach: true,
                ..NONE
            }
        ));
        assert!(own.may(
            Action::Read,
            Relation {
                share: Some(ShareAccess::Read),
                ..NONE
            }
        ));
        assert!(!own.may(
            Action::Update,
            Relation {
                share: Some(ShareAccess::Read),
                ..NONE
            }
        ));
        assert!(own.may(
            Action::Update,
            Relation {
                share: Some(ShareAccess::Write),
                ..NONE
            }
        ));
        assert!(!own.may(
            Action::Delete,
            Relation {
                share: Some(ShareAccess::Write),
                owner: false,
                in_team_reach: false
            }
        ));

        let team = access(Some(Scope::Team), None);
        assert!(team.may(
            Action::Read,
            Relation {
                in_team_reach: true,
                ..NONE
            }
        ));
        assert!(team.may(
            Action::Read,
            Relation {
                owner: true,
                ..NONE
            }
        ));
        assert!(!team.may(Action::Read, NONE));
        // Without any update permission, even a write share does not allow updates.
        assert!(!team.may(
            Action::Update,
            Relation {
                share: Some(ShareAccess::Write),
                owner: true,
                in_team_reach: true
            }
        ));

        let tenant = access(Some(Scope::Tenant), None);
        assert!(tenant.may(Action::Read, NONE));
        assert!(tenant.reads_all());

        let nothing = access(None, None);
        assert!(!nothing.may(
            Action::Read,
            Relation {
                share: Some(ShareAccess::Write),
                owner: true,
                in_team_reach: true
            }
        ));
    }

    #[test]
    fn shares_are_looked_up_only_when_they_could_change_the_answer() {
        // An admin (tenant read and update) or an owner with own scopes: scopes decide.
        let admin = access(Some(Scope::Tenant), Some(Scope::Tenant));
        assert!(!admin.share_matters(NONE));
        let own = access(Some(Scope::Own), Some(Scope::Own));
        let mine = Relation {
            owner: true,
            ..NONE
        };
        assert!(!own.share_matters(mine));
        // Someone else's resource: a share could let them read it.
        assert!(own.share_matters(NONE));
        // A tenant-wide reader who may update only their own: a write share could add updates.
        let reader = access(Some(Scope::Tenant), Some(Scope::Own));
        assert!(reader.share_matters(NONE));
        // Without any resource permission no share helps.
        assert!(!access(None, None).share_matters(NONE));
    }

    #[test]
    fn team_reach_comes_from_the_effective_permissions() {
        let team = Uuid::now_v7();
        let below = Uuid::now_v7();
        let mut eff = Effective::default();
        eff.teams = vec![team, below];
        eff.member_of = vec![team];
        eff.ancestry = vec![team];
        let a = Access {
            me: Uuid::nil(),
            scopes: [None, Some(Scope::Team), None, None, None],
            eff: Arc::new(eff),
        };
        assert!(a.in_team_reach(Some(below)));
        assert!(!a.in_team_reach(Some(Uuid::now_v7())));
        assert!(!a.in_team_reach(None));
        assert_eq!(a.member_of(), &[team]);
    }
}
