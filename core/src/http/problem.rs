//! RFC 9457 rendering: the one place where an [`ApiError`] becomes an
//! `application/problem+json` response, and where salvo's own status errors are mapped to
//! problem codes.
//!
//! Internal errors are logged once, here, with the request id, and leave the process as a
//! bare "internal error" problem: this module never puts an internal cause (SQL, stack,
//! secret) into a response body.

use salvo::http::header::{CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use salvo::http::{StatusCode, StatusError};
use salvo::oapi::{self, Components, EndpointOutRegister, Operation, ToSchema};
use salvo::prelude::*;
use serde::Serialize;

use crate::error::{ApiError, ErrorCode, FieldError, PROBLEM_JSON};
use crate::ids::RequestId;

/// The HTTP status of a code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "Problem"))]
pub struct ProblemBody {
    /// Stable URI naming the kind of problem (`https://neotenant.dev/problems/<slug>`).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request path this problem occurred on.
    pub instance: String,
    /// Correlates the response with the server's logs.
    pub request_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Renders an [`ApiError`] as a problem response (`err.render(req, depot, res)`).
pub trait Render {
    fn render(self, req: &Request, depot: &Depot, res: &mut Response);
}

impl Render for ApiError {
    /// Server-side errors are logged here, once.
    fn render(self, req: &Request, depot: &Depot, res: &mut Response) {
        render(self, req, depot, res);
    }
}

/// Renders `err` into `res`. Server-side errors are logged here, once.
pub fn render(err: ApiError, req: &Request, depot: &Depot, res: &mut Response) {
    let request_id = depot
        .get_typed::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let status = status_of(err.code);
    // Once per failure, where it is rendered: internal errors as errors, a dependency or
    // tenant being unavailable as a warning.
    if status.is_server_error() {
        let source = err.source.as_ref().map(|s| s.to_string());
        let source = source.as_deref().unwrap_or(&err.detail);
        if err.code == ErrorCode::Internal {
            tracing::error!(code = err.code.slug(), error = %source, request_id = %request_id, "request failed");
        } else {
            tracing::warn!(code = err.code.slug(), error = %source, request_id = %request_id, "request failed");
        }
    }
    let body = ProblemBody {
        kind: err.code.type_uri(),
        title: err.code.title().to_string(),
        status: status.as_u16(),
        detail: err.detail.into_owned(),
        instance: req.uri().path().to_string(),
        request_id,
        errors: err.errors,
    };
    res.status_code(status);
    if status == StatusCode::UNAUTHORIZED && !res.headers().contains_key(WWW_AUTHENTICATE) {
        res.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(secs) = err.retry_after_secs {
        res.headers_mut()
            .insert(salvo::http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    // Replace whatever body a previous handler may have set.
    let _ = res.take_body();
    let _ = res.write_body(bytes);
}

#[async_trait]
impl Writer for ApiError {
    async fn write(self, req: &mut Request, depot: &mut Depot, res: &mut Response) {
        render(self, req, depot, res);
    }
}

impl EndpointOutRegister for ApiError {
    fn register(components: &mut Components, operation: &mut Operation) {
        let schema = ProblemBody::to_schema(components);
        // Every problem status; the endpoint's `status_codes` keep the ones it can answer.
        for (status, description) in [
            ("400", "Malformed request"),
            ("401", "Missing, invalid, expired or revoked credentials"),
            ("403", "The caller lacks a permission"),
            ("404", "Not found"),
            ("409", "Conflicts with the current state"),
            ("412", "If-Match names a version that is no longer current"),
            ("413", "The body is too large"),
            ("415", "Unsupported content type"),
            ("422", "Validation failed"),
            (
                "429",
                "Rate limit or quota exceeded; see Retry-After and RateLimit-*",
            ),
            ("503", "A dependency is unavailable"),
        ] {
            // Described once under components, referenced by every operation.
            let name = format!("Problem{status}");
            components.responses.insert(
                name.clone(),
                oapi::Response::new(description)
                    .add_content(PROBLEM_JSON, oapi::Content::new(schema.clone())),
            );
            operation.responses.insert(
                status,
                oapi::RefOr::<oapi::Response>::Ref(oapi::schema::Ref::from_response_name(name)),
            );
        }
    }
}

/// Maps a salvo status error (from routing, extraction or a hoop) to our problem codes.
pub fn from_status_error(err: &StatusError) -> ApiError {
    let code = match err.code {
        StatusCode::NOT_FOUND => ErrorCode::RouteNotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::NOT_ACCEPTABLE => ErrorCode::NotAcceptable,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::CONFLICT => ErrorCode::Conflict,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        s if s.is_client_error() => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    };
    let detail = match code {
        ErrorCode::RouteNotFound => "no endpoint matches this path".to_string(),
        ErrorCode::MethodNotAllowed => {
            "this method is not supported here; see the Allow header".to_string()
        }
        ErrorCode::Internal => "internal error".to_string(),
        _ => err.brief.clone(),
    };
    ApiError::new(code, detail)
}
