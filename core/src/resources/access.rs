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

use diesel::sql_types::{Array, Bool, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::ShareAccess;
use crate::rbac::Caller;
use crate::rbac::perm::Scope;

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

/// The caller's reach over resources, computed once per request.
#[derive(Debug, Clone)]
pub struct Access {
    pub me: Uuid,
    scopes: [Option<Scope>; 5],
    /// Teams the caller is a member of.
    pub teams: Vec<Uuid>,
    /// Those teams and every team above them (a share with any of these reaches the caller).
    pub ancestry: Vec<Uuid>,
}

fn widest(caller: &Caller, action: Action) -> Option<Scope> {
    [Scope::Tenant, Scope::Team, Scope::Own]
        .into_iter()
        .find(|s| caller.allows("resources", action.as_str(), *s))
}

#[derive(diesel::QueryableByName)]
struct TeamPath {
    #[diesel(sql_type = Array<SqlUuid>)]
    path: Vec<Uuid>,
}

impl Access {
    /// Reads the caller's teams (one query) and their permissions.
    pub async fn load(conn: &mut AsyncPgConnection, caller: &Caller) -> diesel::QueryResult<Self> {
        let me = caller.user_id();
        let rows: Vec<TeamPath> = diesel::sql_query(
            "SELECT t.path FROM team_members m JOIN teams t ON t.id = m.team_id WHERE m.user_id = $1",
        )
        .bind::<SqlUuid, _>(me)
        .load(conn)
        .await?;
        let mut teams = Vec::new();
        let mut ancestry = Vec::new();
        for r in rows {
            if let Some(last) = r.path.last() {
                teams.push(*last);
            }
            ancestry.extend(r.path);
        }
        ancestry.sort();
        ancestry.dedup();
        Ok(Self::new(caller, me, teams, ancestry))
    }

    pub fn new(caller: &Caller, me: Uuid, teams: Vec<Uuid>, ancestry: Vec<Uuid>) -> Self {
        let scopes = [
            Action::Create,
            Action::Read,
            Action::Update,
            Action::Delete,
            Action::Share,
        ]
        .map(|a| widest(caller, a));
        Self {
            me,
            scopes,
            teams,
            ancestry,
        }
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
                    .bind::<Array<SqlUuid>, _>(self.ancestry.clone())
                    .push(")))");
                if scope == Scope::Team && !self.teams.is_empty() {
                    q = q
                        .push(" OR r.team_id IN (SELECT t.id FROM teams t WHERE t.path && ")
                        .bind::<Array<SqlUuid>, _>(self.teams.clone())
                        .push(")");
                }
                q.push(")")
            }
        }
    }

    /// How the caller relates to resource `id` (one query).
    pub async fn relation(
        &self,
        conn: &mut AsyncPgConnection,
        id: Uuid,
        owner: Uuid,
        team: Option<Uuid>,
    ) -> diesel::QueryResult<Relation> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Nullable<Text>)]
            share: Option<String>,
            #[diesel(sql_type = Bool)]
            in_reach: bool,
        }
        let row: Row = diesel::sql_query(
            "SELECT (SELECT max(s.access) FROM resource_shares s WHERE s.resource_id = $1 \
               AND (s.user_id = $2 OR s.team_id = ANY($3))) AS share, \
             EXISTS (SELECT 1 FROM teams t WHERE t.id = $4 AND t.path && $5) AS in_reach",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<SqlUuid, _>(self.me)
        .bind::<Array<SqlUuid>, _>(&self.ancestry)
        .bind::<Nullable<SqlUuid>, _>(team)
        .bind::<Array<SqlUuid>, _>(&self.teams)
        .get_result(conn)
        .await?;
        Ok(Relation {
            owner: owner == self.me,
            in_team_reach: row.in_reach,
            share: match row.share.as_deref() {
                Some("write") => Some(ShareAccess::Write),
                Some(_) => Some(ShareAccess::Read),
                None => None,
            },
        })
    }

    /// The teams whose resources the caller reaches by team scope (their teams and every
    /// team below), for the search filter.
    pub async fn team_reach(&self, conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<Uuid>> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = SqlUuid)]
            id: Uuid,
        }
        if self.teams.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<Row> = diesel::sql_query("SELECT id FROM teams WHERE path && $1")
            .bind::<Array<SqlUuid>, _>(&self.teams)
            .load(conn)
            .await?;
        Ok(rows.into_iter().map(|r| r.id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(read: Option<Scope>, update: Option<Scope>) -> Access {
        Access {
            me: Uuid::nil(),
            scopes: [None, read, update, None, None],
            teams: vec![],
            ancestry: vec![],
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
}
