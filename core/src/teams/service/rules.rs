//! Checks every team use case shares: permission on a team, names, descriptions and team roles
//! as input, the 404 of a missing team, and the shape of a team's audit entry. No SQL beyond
//! the audit insert it is handed a connection for; never opens a transaction.

use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::audit::{self, Change};
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError, found};
use crate::ids::TeamId;
use crate::rbac::Caller;
use crate::rbac::perm::Scope;

/// Allowed `teams.<action>` on `team`: at tenant scope, or at team scope for a team the
/// caller belongs to or one below it.
pub fn require_on_team(caller: &Caller, action: &str, team: Uuid) -> ApiResult<()> {
    if caller.allows("teams", action, Scope::Tenant)
        || (caller.allows("teams", action, Scope::Team) && caller.effective.teams.contains(&team))
    {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("requires the permission teams.{action}.tenant (or .team for your own teams)"),
        ))
    }
}

/// The team, or a 404.
pub(super) fn the_team<T>(v: Option<T>) -> ApiResult<T> {
    found(v, "team")
}

pub(super) fn field(pointer: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(vec![FieldError {
        pointer: pointer.into(),
        message: message.into(),
    }])
}

pub(super) fn check_name(name: &str, pointer: &str) -> ApiResult<String> {
    let n = name.trim();
    if (1..=100).contains(&n.chars().count()) && !n.chars().any(char::is_control) {
        Ok(n.to_string())
    } else {
        Err(field(
            pointer,
            "must be 1-100 characters without control characters",
        ))
    }
}

pub(super) fn check_description(d: &str) -> ApiResult<String> {
    if d.chars().count() <= 1000 {
        Ok(d.trim().to_string())
    } else {
        Err(field("/description", "at most 1000 characters"))
    }
}

pub(super) fn check_team_role(r: &str, pointer: &str) -> ApiResult<()> {
    let mut b = r.bytes();
    let ok = matches!(b.next(), Some(b'a'..=b'z'))
        && r.len() <= 32
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(field(
            pointer,
            "must be 1-32 of a-z, 0-9, _ and -, starting with a letter",
        ))
    }
}

/// The audit entry of a change to `team`, in the caller's transaction.
pub(super) async fn record(
    conn: &mut AsyncPgConnection,
    caller: &Caller,
    action: &str,
    team: Uuid,
    data: serde_json::Value,
) -> ApiResult<()> {
    audit::record(
        conn,
        &caller.actor,
        Change {
            action,
            target_type: "team",
            target_id: Some(TeamId(team).to_string()),
            data,
        },
    )
    .await?;
    Ok(())
}
