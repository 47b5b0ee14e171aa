//! The HTTP edge of users: the `LoadUser` hoop that puts the active caller's user row on
//! every authenticated request.

use salvo::prelude::*;

use super::{CurrentUser, UsersState, service};
use crate::auth::CurrentPrincipal;
use crate::error::ApiError;
use crate::http::extract::dep;
use crate::http::problem::Render;
use crate::tenancy::resolve::CurrentTenant;

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
            dep::<UsersState>(depot),
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
                state.seen.note(tenant.0.tenant.id, &tenant.0.db, user.id);
                depot.insert_typed(CurrentUser { user, principal });
            }
            Err(e) => {
                e.render(req, depot, res);
                ctrl.skip_rest();
            }
        }
    }
}
