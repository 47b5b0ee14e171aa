//! The authenticated user as the kernel knows it: the tenant's user row and the request's
//! validated token. RBAC's caller is built on it; user management (`users`) owns how rows are
//! created and changed. Pure data: no I/O, no HTTP.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};

use super::CurrentPrincipal;
use crate::ids::UserId;

/// A user of the tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[salvo(schema(name = "neotenant.users.User"))]
pub struct User {
    pub id: UserId,
    /// The identity provider's id of this user (the token's `sub`).
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `active`, `deactivated` or `deleted`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// The authenticated, active user of this request (and its token's claims).
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub user: Arc<User>,
    pub principal: CurrentPrincipal,
}
