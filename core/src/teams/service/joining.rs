//! Team membership for invitations (the [`crate::invitations::Teams`] port): whether an
//! inviter could add members to a team directly, and joining an accepted invitee to the teams
//! of the invitation. Never runs SQL itself; the acceptance's audit entry names the teams, so
//! no team entry is written here.

use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use super::rules::{require_on_team, the_team};
use crate::error::ApiResult;
use crate::rbac::Caller;
use crate::teams::repo;

/// The teams feature behind the invitations' port.
pub struct InvitationTeams;

#[async_trait::async_trait]
impl crate::invitations::Teams for InvitationTeams {
    async fn check_joinable(
        &self,
        caller: &Caller,
        conn: &mut AsyncPgConnection,
        team: Uuid,
    ) -> ApiResult<()> {
        the_team(repo::get(conn, team).await?)?;
        require_on_team(caller, "manage_members", team)
    }

    async fn join(
        &self,
        conn: &mut AsyncPgConnection,
        user: Uuid,
        teams: &[Uuid],
    ) -> ApiResult<Vec<Uuid>> {
        let mut joined = Vec::with_capacity(teams.len());
        for team in teams {
            // A team deleted since the invitation was made is skipped.
            if repo::get(conn, *team).await?.is_some() {
                repo::add_members(conn, *team, &[user], "member").await?;
                joined.push(*team);
            }
        }
        Ok(joined)
    }
}
