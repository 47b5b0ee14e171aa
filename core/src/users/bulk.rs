//! Bulk user changes: deactivate, reactivate or delete up to 1,000 users in one call, item by
//! item (each user's change is its own transaction with its own Keycloak call, so one failure
//! does not undo the others), several at a time. Never changes the caller itself, and never
//! touches HTTP.

use futures::StreamExt;
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};

use super::{UsersState, service};
use crate::audit::Actor;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::ids::{TeamId, UserId};
use crate::tenancy::cache::ResolvedTenant;

/// Users in one call.
pub const MAX_USERS: usize = 1_000;
/// Users changed at once.
const CONCURRENCY: usize = 8;

/// What to do to every listed user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[salvo(schema(name = "neotenant.users.BulkAction"))]
pub enum BulkAction {
    Deactivate,
    Reactivate,
    Delete,
    /// Give `role` to every user (all or nothing).
    AssignRole,
    /// Add every user to `team` as a member (all or nothing).
    AddToTeam,
}

/// A bulk call.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.users.BulkRequest"))]
pub struct BulkRequest {
    pub action: BulkAction,
    /// 1-1,000 users.
    pub user_ids: Vec<UserId>,
    /// The role key, for `assign_role`.
    #[serde(default)]
    pub role: Option<String>,
    /// The team, for `add_to_team`.
    #[serde(default)]
    pub team: Option<TeamId>,
}

/// One user's outcome.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.users.BulkItem"))]
pub struct BulkItem {
    pub user_id: UserId,
    /// The status a single call would have answered.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none", rename = "type")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A bulk call's outcome.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.users.BulkResult"))]
pub struct BulkResult {
    pub succeeded: usize,
    pub failed: usize,
    pub items: Vec<BulkItem>,
}

impl BulkResult {
    /// Every user succeeded with `status` (an all-or-nothing action that went through).
    pub fn all(ids: &[UserId], status: u16) -> Self {
        BulkResult {
            succeeded: ids.len(),
            failed: 0,
            items: ids
                .iter()
                .map(|id| BulkItem {
                    user_id: *id,
                    status,
                    kind: None,
                    detail: None,
                })
                .collect(),
        }
    }
}

/// Refuses an empty or oversized list, and names a missing argument of the action.
pub fn check(request: &BulkRequest) -> ApiResult<()> {
    let mut errors = Vec::new();
    if request.user_ids.is_empty() || request.user_ids.len() > MAX_USERS {
        errors.push(FieldError {
            pointer: "/user_ids".into(),
            message: format!("must list 1-{MAX_USERS} users"),
        });
    }
    if request.action == BulkAction::AssignRole && request.role.is_none() {
        errors.push(FieldError {
            pointer: "/role".into(),
            message: "required for assign_role".into(),
        });
    }
    if request.action == BulkAction::AddToTeam && request.team.is_none() {
        errors.push(FieldError {
            pointer: "/team".into(),
            message: "required for add_to_team".into(),
        });
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errors))
    }
}

/// Deactivates, reactivates or deletes each user on its own; `caller` is never changed.
pub async fn change_each(
    state: &UsersState,
    tenant: &ResolvedTenant,
    actor: &Actor,
    caller: UserId,
    action: BulkAction,
    ids: &[UserId],
) -> ApiResult<BulkResult> {
    let mut unique = ids.to_vec();
    unique.sort();
    unique.dedup();
    let items: Vec<BulkItem> = futures::stream::iter(unique)
        .map(|id| async move {
            let outcome: ApiResult<u16> = if id == caller {
                Err(ApiError::new(
                    ErrorCode::Conflict,
                    "you cannot change yourself in bulk",
                ))
            } else {
                match action {
                    BulkAction::Deactivate => service::set_active(state, tenant, actor, id, false)
                        .await
                        .map(|_| 200),
                    BulkAction::Reactivate => service::set_active(state, tenant, actor, id, true)
                        .await
                        .map(|_| 200),
                    BulkAction::Delete => {
                        service::delete(state, tenant, actor, id).await.map(|_| 204)
                    }
                    _ => Err(ApiError::new(
                        ErrorCode::BadRequest,
                        "this action is not applied user by user",
                    )),
                }
            };
            match outcome {
                Ok(status) => BulkItem {
                    user_id: id,
                    status,
                    kind: None,
                    detail: None,
                },
                Err(e) => BulkItem {
                    user_id: id,
                    status: e.code.status(),
                    kind: Some(e.code.type_uri()),
                    detail: Some(e.detail.into_owned()),
                },
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut items = items;
    items.sort_by_key(|i| i.user_id);
    let failed = items.iter().filter(|i| i.status >= 300).count();
    Ok(BulkResult {
        succeeded: items.len() - failed,
        failed,
        items,
    })
}
