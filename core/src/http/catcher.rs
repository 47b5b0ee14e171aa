//! Turns every error response that no handler rendered (unknown route, wrong method, a
//! salvo-level failure, a caught panic) into a problem document.
//!
//! Owns nothing else; handlers render their own `ApiError`s.

use salvo::http::ResBody;
use salvo::http::StatusError;
use salvo::prelude::*;

use crate::http::problem::{Render, from_status_error};

pub struct ProblemCatcher;

#[async_trait]
impl Handler for ProblemCatcher {
    async fn handle(
        &self,
        req: &mut Request,
        depot: &mut Depot,
        res: &mut Response,
        ctrl: &mut FlowCtrl,
    ) {
        let status = res.status_code.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let error = match res.take_body() {
            ResBody::Error(e) => from_status_error(&e),
            _ => from_status_error(
                &StatusError::from_code(status).unwrap_or_else(StatusError::internal_server_error),
            ),
        };
        error.render(req, depot, res);
        ctrl.skip_rest();
    }
}
