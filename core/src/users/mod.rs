//! Users of a tenant as this API knows them: created just in time from the token on a user's
//! first authenticated request, then loaded from an in-process cache.
//!
//! Shape: `handlers` → `service` (JIT, cache) → `repo`. Owns the rule that a request runs as
//! an *active* user of its tenant: a deactivated or deleted user is refused even with a valid
//! token. Never trusts anything but the validated token for identity.

pub mod admin;
pub mod handlers;
pub mod repo;
pub mod service;

use std::sync::Arc;

use salvo::oapi::{Components, EndpointArgRegister, Operation};
use salvo::prelude::*;

use crate::app::AppState;
use crate::auth::CurrentPrincipal;
use crate::error::ApiError;
use crate::tenancy::resolve::CurrentTenant;

use chrono::{DateTime, Utc};
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};

use crate::ids::UserId;

/// A user of the tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
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

/// The caller: the user row plus what this request's token says.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Me {
    #[serde(flatten)]
    pub user: User,
    /// Realm roles from the token.
    pub roles: Vec<String>,
    /// The client the token was issued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// Hoop after `Authenticate`: loads (or creates, on first sight) the caller's user row and
/// refuses inactive users.
pub struct LoadUser;

#[async_trait]
impl Handler for LoadUser {
    async fn handle(
        &self,
        req: &mut Request,
        depot: &mut Depot,
        res: &mut Response,
        ctrl: &mut FlowCtrl,
    ) {
        let (Ok(state), Ok(tenant), Ok(principal)) = (
            depot.get_typed::<Arc<AppState>>().cloned(),
            depot.get_typed::<CurrentTenant>().cloned(),
            depot.get_typed::<CurrentPrincipal>().cloned(),
        ) else {
            ApiError::internal("LoadUser mounted without ResolveTenant and Authenticate")
                .render(req, depot, res);
            ctrl.skip_rest();
            return;
        };
        match service::current(&state.users, tenant.0.tenant.id, &tenant.0.db, &principal.0).await {
            Ok(user) => {
                depot.insert_typed(CurrentUser { user, principal });
            }
            Err(e) => {
                e.render(req, depot, res);
                ctrl.skip_rest();
            }
        }
    }
}

/// The authenticated, active user of this request (and its token's claims).
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub user: Arc<User>,
    pub principal: CurrentPrincipal,
}

crate::depot_extractor!(CurrentUser, "LoadUser");

impl EndpointArgRegister for CurrentUser {
    fn register(components: &mut Components, operation: &mut Operation, arg: &str) {
        CurrentPrincipal::register(components, operation, arg);
    }
}
