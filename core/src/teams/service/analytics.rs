//! Read-only views over the whole tree: per-team analytics (members, reach, activity and
//! monthly growth with empty months filled in) and the org chart's nodes (laid out and drawn
//! by `teams::chart`). Changes nothing; never runs SQL itself.

use std::collections::HashMap;

use chrono::{Datelike, Utc};
use uuid::Uuid;

use super::rules::the_team;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult};
use crate::ids::TeamId;
use crate::teams::repo;
use crate::teams::{ChartNode, MonthGrowth, TeamAnalytics};

/// Analytics for `only` (or every team), growth over the last `months` months.
pub async fn analytics(
    db: &TenantDb,
    only: Option<TeamId>,
    months: u32,
) -> ApiResult<Vec<TeamAnalytics>> {
    let only = only.map(|t| t.0);
    let (rows, growth) = db
        .transaction(async |tx| {
            let conn = tx.conn();
            if let Some(t) = only {
                the_team(repo::get(conn, t).await?)?;
            }
            let rows = repo::analytics(conn, only).await?;
            let growth = repo::growth(conn, only, months.saturating_sub(1) as i32).await?;
            Ok::<_, ApiError>((rows, growth))
        })
        .await?;
    // Every month of the window, oldest first, zeros included.
    let now = Utc::now();
    let month_keys: Vec<String> = (0..months)
        .rev()
        .map(|back| {
            let total = now.year() * 12 + now.month0() as i32 - back as i32;
            format!(
                "{:04}-{:02}",
                total.div_euclid(12),
                total.rem_euclid(12) + 1
            )
        })
        .collect();
    let mut by_team: HashMap<Uuid, HashMap<String, (i64, i64)>> = HashMap::new();
    for g in growth {
        by_team
            .entry(g.team_id)
            .or_default()
            .insert(g.month, (g.joined, g.left));
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let g = by_team.get(&r.id);
            TeamAnalytics {
                team_id: TeamId(r.id),
                name: r.name,
                members: r.members,
                members_in_subtree: r.members_in_subtree,
                sub_teams: r.sub_teams,
                active_members_30d: r.active,
                actions_30d: r.actions,
                growth: month_keys
                    .iter()
                    .map(|m| {
                        let (joined, left) = g.and_then(|g| g.get(m)).copied().unwrap_or((0, 0));
                        MonthGrowth {
                            month: m.clone(),
                            joined,
                            left,
                        }
                    })
                    .collect(),
            }
        })
        .collect())
}

/// The whole tree with member counts and leads.
pub async fn chart(db: &TenantDb) -> ApiResult<Vec<ChartNode>> {
    db.transaction(async |tx| {
        let conn = tx.conn();
        let rows = repo::all(conn).await?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let counts = repo::member_counts(conn, &ids).await?;
        let leads = repo::leads(conn).await?;
        let mut lead_map: HashMap<Uuid, Vec<String>> = HashMap::new();
        for (team, display, username) in leads {
            lead_map
                .entry(team)
                .or_default()
                .push(display.or(username).unwrap_or_else(|| "?".into()));
        }
        Ok::<_, ApiError>(crate::teams::chart::build(&rows, &counts, &lead_map))
    })
    .await
}
