//! The closed set of API error codes and the one place that renders them as RFC 9457
//! `application/problem+json`.
//!
//! Every module maps its own failures to an [`ApiError`] carrying an [`ErrorCode`]; the code
//! fixes the HTTP status, the stable `type` URI and the title. Internal errors are logged once,
//! here, with the request id, and leave the process as a bare "internal error" problem: this
//! module must never put an internal cause (SQL, stack, secret) into a response body.

use std::borrow::Cow;

use salvo::http::header::{CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use salvo::http::{StatusCode, StatusError};
use salvo::oapi::{self, Components, EndpointOutRegister, Operation, ToSchema};
use salvo::prelude::*;
use serde::Serialize;

use crate::http::middleware::RequestId;

/// Base of every problem `type` URI; the slug after it is stable API surface.
pub const PROBLEM_BASE: &str = "https://neotenant.dev/problems/";
pub const PROBLEM_JSON: &str = "application/problem+json";

macro_rules! error_codes {
    ($( $variant:ident => ($status:ident, $slug:literal, $title:literal), )*) => {
        /// Every error the API can answer with. Adding one is an API change (docs/API.md).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode { $( $variant, )* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];
            pub fn status(self) -> StatusCode {
                match self { $( ErrorCode::$variant => StatusCode::$status, )* }
            }
            /// The stable slug of the problem `type` URI.
            pub fn slug(self) -> &'static str {
                match self { $( ErrorCode::$variant => $slug, )* }
            }
            pub fn title(self) -> &'static str {
                match self { $( ErrorCode::$variant => $title, )* }
            }
        }
    };
}

error_codes! {
    BadRequest => (BAD_REQUEST, "bad-request", "The request is malformed"),
    MalformedJson => (BAD_REQUEST, "malformed-json", "The request body is not valid JSON"),
    InvalidParameter => (BAD_REQUEST, "invalid-parameter", "A path, query or header parameter is invalid"),
    InvalidCursor => (BAD_REQUEST, "invalid-cursor", "The pagination cursor is invalid"),
    TenantMismatch => (BAD_REQUEST, "tenant-mismatch", "The request names two different tenants"),
    TenantRequired => (BAD_REQUEST, "tenant-required", "The request does not name a tenant"),
    Unauthorized => (UNAUTHORIZED, "unauthorized", "Authentication is required"),
    TokenMissing => (UNAUTHORIZED, "token-missing", "A bearer token is required"),
    TokenMalformed => (UNAUTHORIZED, "token-malformed", "The token is not a well-formed JWT"),
    TokenTooLarge => (UNAUTHORIZED, "token-too-large", "The token is too large"),
    TokenAlgorithm => (UNAUTHORIZED, "token-algorithm", "The token's signing algorithm is not accepted"),
    TokenIssuer => (UNAUTHORIZED, "token-issuer", "The token was not issued for this tenant"),
    TokenUnknownKey => (UNAUTHORIZED, "token-unknown-key", "The token's signing key is unknown"),
    TokenSignature => (UNAUTHORIZED, "token-signature", "The token's signature is invalid"),
    TokenExpired => (UNAUTHORIZED, "token-expired", "The token has expired"),
    TokenNotYetValid => (UNAUTHORIZED, "token-not-yet-valid", "The token is not valid yet"),
    TokenAudience => (UNAUTHORIZED, "token-audience", "The token is not meant for this API"),
    TokenType => (UNAUTHORIZED, "token-type", "The token is not an access token"),
    TokenTenant => (UNAUTHORIZED, "token-tenant", "The token is for another tenant"),
    SessionRevoked => (UNAUTHORIZED, "session-revoked", "The session was revoked"),
    InvalidCredentials => (UNAUTHORIZED, "invalid-credentials", "The username or password is wrong"),
    RefreshTokenInvalid => (UNAUTHORIZED, "refresh-token-invalid", "The refresh token is invalid, expired or already used"),
    Forbidden => (FORBIDDEN, "forbidden", "The credentials do not allow this action"),
    TenantSuspended => (FORBIDDEN, "tenant-suspended", "The tenant is suspended"),
    UserInactive => (FORBIDDEN, "user-inactive", "The user is deactivated in this tenant"),
    NotFound => (NOT_FOUND, "not-found", "The resource does not exist"),
    TenantNotFound => (NOT_FOUND, "tenant-not-found", "The tenant does not exist"),
    RouteNotFound => (NOT_FOUND, "route-not-found", "No such endpoint"),
    MethodNotAllowed => (METHOD_NOT_ALLOWED, "method-not-allowed", "The endpoint does not support this method"),
    NotAcceptable => (NOT_ACCEPTABLE, "not-acceptable", "No acceptable representation"),
    Conflict => (CONFLICT, "conflict", "The request conflicts with the current state"),
    PayloadTooLarge => (PAYLOAD_TOO_LARGE, "payload-too-large", "The request body is too large"),
    UnsupportedMediaType => (UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "The request body has an unsupported content type"),
    Validation => (UNPROCESSABLE_ENTITY, "validation", "The request body failed validation"),
    PreconditionFailed => (PRECONDITION_FAILED, "precondition-failed", "The resource changed since it was read"),
    MalformedMultipart => (BAD_REQUEST, "malformed-multipart", "The multipart body is malformed"),
    PluginInvalid => (UNPROCESSABLE_ENTITY, "plugin-invalid", "The plugin or its manifest was refused"),
    PluginVeto => (UNPROCESSABLE_ENTITY, "plugin-veto", "A plugin refused the change"),
    PluginFailed => (FAILED_DEPENDENCY, "plugin-failed", "A plugin failed while handling the request"),
    ConfirmationRequired => (PRECONDITION_REQUIRED, "confirmation-required", "This action must be confirmed"),
    RateLimited => (TOO_MANY_REQUESTS, "rate-limited", "Too many requests"),
    AuthLocked => (TOO_MANY_REQUESTS, "auth-locked", "Too many failed authentications from this client"),
    Internal => (INTERNAL_SERVER_ERROR, "internal", "Internal error"),
    Unavailable => (SERVICE_UNAVAILABLE, "unavailable", "A dependency is temporarily unavailable"),
    TenantUnavailable => (SERVICE_UNAVAILABLE, "tenant-unavailable", "The tenant is not ready"),
    IdentityUnavailable => (SERVICE_UNAVAILABLE, "identity-unavailable", "The identity provider is unavailable"),
}

impl ErrorCode {
    pub fn type_uri(self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug())
    }
}

/// One field-level validation failure, listed in a `validation` problem.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// JSON pointer to the offending field, e.g. `/title`.
    pub pointer: String,
    pub message: String,
}

/// An error on its way to becoming a problem response.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: Cow<'static, str>,
    pub errors: Vec<FieldError>,
    /// Logged (never sent) when the code is a server error.
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// `v`, or a 404 naming `what`.
pub fn found<T>(v: Option<T>, what: &str) -> ApiResult<T> {
    v.ok_or_else(|| ApiError::not_found(what))
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            detail: detail.into(),
            errors: Vec::new(),
            source: None,
        }
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = format!("{} field(s) failed validation", errors.len());
        Self {
            errors,
            ..Self::new(ErrorCode::Validation, detail)
        }
    }
    pub fn internal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            source: Some(source.into()),
            ..Self::new(ErrorCode::Internal, "internal error")
        }
    }
    pub fn unavailable(
        what: &str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            source: Some(source.into()),
            ..Self::new(
                ErrorCode::Unavailable,
                format!("{what} is temporarily unavailable"),
            )
        }
    }
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.slug(), self.detail)?;
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

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

impl ApiError {
    /// Renders into `res`. Server-side errors are logged here, once.
    pub fn render(self, req: &Request, depot: &Depot, res: &mut Response) {
        let request_id = depot
            .get_typed::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let status = self.code.status();
        // Once per failure, where it is rendered: internal errors as errors, a dependency or
        // tenant being unavailable as a warning.
        if status.is_server_error() {
            let source = self.source.as_ref().map(|s| s.to_string());
            let source = source.as_deref().unwrap_or(&self.detail);
            if self.code == ErrorCode::Internal {
                tracing::error!(code = self.code.slug(), error = %source, request_id = %request_id, "request failed");
            } else {
                tracing::warn!(code = self.code.slug(), error = %source, request_id = %request_id, "request failed");
            }
        }
        let body = ProblemBody {
            kind: self.code.type_uri(),
            title: self.code.title().to_string(),
            status: status.as_u16(),
            detail: self.detail.into_owned(),
            instance: req.uri().path().to_string(),
            request_id,
            errors: self.errors,
        };
        res.status_code(status);
        if status == StatusCode::UNAUTHORIZED && !res.headers().contains_key(WWW_AUTHENTICATE) {
            res.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        // Replace whatever body a previous handler may have set.
        let _ = res.take_body();
        let _ = res.write_body(bytes);
    }
}

#[async_trait]
impl Writer for ApiError {
    async fn write(self, req: &mut Request, depot: &mut Depot, res: &mut Response) {
        self.render(req, depot, res);
    }
}

impl EndpointOutRegister for ApiError {
    fn register(components: &mut Components, operation: &mut Operation) {
        let schema = ProblemBody::to_schema(components);
        for (status, description) in [
            ("400", "Malformed request"),
            ("404", "Not found"),
            ("422", "Validation failed"),
            ("503", "A dependency is unavailable"),
        ] {
            operation.responses.insert(
                status,
                oapi::Response::new(description)
                    .add_content(PROBLEM_JSON, oapi::Content::new(schema.clone())),
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

impl From<diesel::result::Error> for ApiError {
    /// diesel errors are classified once, here: not found → 404, unique or foreign-key
    /// violation → 409, a closed connection → 503, anything else → 500.
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        match &err {
            E::NotFound => ApiError::not_found("resource"),
            E::DatabaseError(K::UniqueViolation, info) => ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "a record with the same unique value already exists{}",
                    info.constraint_name()
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default()
                ),
            ),
            E::DatabaseError(K::ForeignKeyViolation, _) => {
                ApiError::new(ErrorCode::Conflict, "a referenced record does not exist")
            }
            E::DatabaseError(K::ClosedConnection, _) | E::BrokenTransactionManager => {
                ApiError::unavailable("the database", err)
            }
            E::DatabaseError(K::Unknown, info) if info.message().contains("statement timeout") => {
                ApiError::unavailable("the database", err)
            }
            _ => ApiError::internal(err),
        }
    }
}

impl From<crate::db::PoolError> for ApiError {
    fn from(err: crate::db::PoolError) -> Self {
        ApiError::unavailable("the database", err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_unique_and_urls() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.slug()), "duplicate slug {}", code.slug());
            assert!(code.status().is_client_error() || code.status().is_server_error());
            assert!(code.type_uri().starts_with("https://"));
        }
    }

    #[test]
    fn diesel_errors_are_classified() {
        assert_eq!(
            ApiError::from(diesel::result::Error::NotFound).code,
            ErrorCode::NotFound
        );
        assert_eq!(
            ApiError::from(diesel::result::Error::BrokenTransactionManager).code,
            ErrorCode::Unavailable
        );
    }
}
