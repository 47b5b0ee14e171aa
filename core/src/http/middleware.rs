//! The service-wide hoop that runs on every request, matched or not: request id, tracing
//! span, access log, metrics and the body-size guard.
//!
//! Owns the order of the request path before routing reaches a feature. Never reads a body
//! and never touches a database.

use std::sync::Arc;
use std::time::Instant;

use salvo::http::header::{CONTENT_LENGTH, HeaderName, HeaderValue};
use salvo::prelude::*;
use tracing::Instrument;

use crate::config::Config;
use crate::error::{ApiError, ErrorCode};
use crate::http::problem::Render;
pub use crate::ids::RequestId;
use crate::metrics::Metrics;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn acceptable_request_id(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The outermost hoop: request id, span, body-size guard, metrics and access log.
pub struct Observe {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl Handler for Observe {
    async fn handle(
        &self,
        req: &mut Request,
        depot: &mut Depot,
        res: &mut Response,
        ctrl: &mut FlowCtrl,
    ) {
        let started = Instant::now();
        let request_id = req
            .headers()
            .get(&X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| acceptable_request_id(v))
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
        depot.insert_typed(RequestId(request_id.clone()));
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            res.headers_mut().insert(X_REQUEST_ID.clone(), value);
        }
        let span = tracing::info_span!(
            "request",
            request_id = %request_id,
            method = %req.method(),
            path = %req.uri().path(),
            tenant = tracing::field::Empty,
            user = tracing::field::Empty,
        );
        let max_body = self.config.server.max_body_bytes;
        let post = req.method() == salvo::http::Method::POST;
        let path = req.uri().path();
        // Streamed imports read their body themselves, up to their own limit; plugin
        // uploads carry a component.
        let limit = if post && path.ends_with("/import") {
            self.config.server.max_import_bytes
        } else if post && (path == "/v1/plugins" || path == "/admin/v1/marketplace") {
            self.config.plugins.upload_limit() as u64
        } else {
            max_body as u64
        };
        req.set_secure_max_size(max_body.max(limit.min(usize::MAX as u64) as usize));
        async {
            let declared = req
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit) {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("the body may be at most {limit} bytes"),
                )
                .render(req, depot, res);
                ctrl.skip_rest();
            } else {
                ctrl.call_next(req, depot, res).await;
            }
            let status = res.status_code.unwrap_or(StatusCode::NOT_FOUND);
            let route = match req.matched_path() {
                "" => "unmatched",
                path => path,
            };
            let elapsed = started.elapsed();
            self.metrics
                .observe_request(req.method().as_str(), route, status.as_u16(), elapsed);
            tracing::info!(
                status = status.as_u16(),
                route,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                "request finished"
            );
        }
        .instrument(span)
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert!(acceptable_request_id("abc-123_x.y:z"));
        assert!(!acceptable_request_id(""));
        assert!(!acceptable_request_id("has space"));
        assert!(!acceptable_request_id("<script>"));
        assert!(!acceptable_request_id(&"a".repeat(129)));
    }
}
