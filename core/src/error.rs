//! The closed set of error codes and the error value every layer returns.
//!
//! Foundation: an [`ApiError`] is a code, a human detail, field errors and (for server-side
//! failures) a cause that is logged, never sent. Each [`ErrorCode`] fixes a status number, the
//! stable problem `type` slug and a title; `http::problem` is the one place that renders them
//! as RFC 9457 `application/problem+json`. This module never imports HTTP machinery, and
//! classifies database failures once (not found, conflicts, transient ones).

use std::borrow::Cow;

use salvo_oapi::ToSchema;
use serde::Serialize;

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
            /// The HTTP status number this code answers with.
            pub fn status(self) -> u16 {
                match self { $( ErrorCode::$variant => status::$status, )* }
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

/// Status numbers by their standard names (the subset the codes use).
mod status {
    pub const BAD_REQUEST: u16 = 400;
    pub const UNAUTHORIZED: u16 = 401;
    pub const FORBIDDEN: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const METHOD_NOT_ALLOWED: u16 = 405;
    pub const NOT_ACCEPTABLE: u16 = 406;
    pub const CONFLICT: u16 = 409;
    pub const PRECONDITION_FAILED: u16 = 412;
    pub const PAYLOAD_TOO_LARGE: u16 = 413;
    pub const UNSUPPORTED_MEDIA_TYPE: u16 = 415;
    pub const UNPROCESSABLE_ENTITY: u16 = 422;
    pub const FAILED_DEPENDENCY: u16 = 424;
    pub const PRECONDITION_REQUIRED: u16 = 428;
    pub const TOO_MANY_REQUESTS: u16 = 429;
    pub const INTERNAL_SERVER_ERROR: u16 = 500;
    pub const SERVICE_UNAVAILABLE: u16 = 503;
}

error_codes! {
    BadRequest => (BAD_REQUEST, "bad-request", "The request is malformed"),
    MalformedJson => (BAD_REQUEST, "malformed-json", "The request body is not valid JSON"),
    InvalidParameter => (BAD_REQUEST, "invalid-parameter", "A path, query or header parameter is invalid"),
    UnknownApiVersion => (BAD_REQUEST, "unknown-api-version", "The requested API version does not exist"),
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
    SdkKeyInvalid => (UNAUTHORIZED, "sdk-key-invalid", "The SDK key is not a live key of this tenant"),
    InvalidCredentials => (UNAUTHORIZED, "invalid-credentials", "The username or password is wrong"),
    RefreshTokenInvalid => (UNAUTHORIZED, "refresh-token-invalid", "The refresh token is invalid, expired or already used"),
    ResetTokenInvalid => (BAD_REQUEST, "reset-token-invalid", "The password-reset token is invalid, expired or already used"),
    InvitationTokenInvalid => (BAD_REQUEST, "invitation-token-invalid", "The invitation token is invalid, expired, revoked or already used"),
    Forbidden => (FORBIDDEN, "forbidden", "The credentials do not allow this action"),
    TenantSuspended => (FORBIDDEN, "tenant-suspended", "The tenant is suspended"),
    UserInactive => (FORBIDDEN, "user-inactive", "The user is deactivated in this tenant"),
    NotFound => (NOT_FOUND, "not-found", "The resource does not exist"),
    TenantNotFound => (NOT_FOUND, "tenant-not-found", "The tenant does not exist"),
    RouteNotFound => (NOT_FOUND, "route-not-found", "No such endpoint"),
    MethodNotAllowed => (METHOD_NOT_ALLOWED, "method-not-allowed", "The endpoint does not support this method"),
    NotAcceptable => (NOT_ACCEPTABLE, "not-acceptable", "No acceptable representation"),
    Conflict => (CONFLICT, "conflict", "The request conflicts with the current state"),
    AlreadyMember => (CONFLICT, "already-member", "The address already belongs to a user of this tenant"),
    InvitationExists => (CONFLICT, "invitation-exists", "An open invitation for this address exists"),
    IdempotencyInFlight => (CONFLICT, "idempotency-in-flight", "A request with this Idempotency-Key is still being processed"),
    IdempotencyKeyReused => (UNPROCESSABLE_ENTITY, "idempotency-key-reused", "The Idempotency-Key was used with a different request"),
    PayloadTooLarge => (PAYLOAD_TOO_LARGE, "payload-too-large", "The request body is too large"),
    UnsupportedMediaType => (UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "The request body has an unsupported content type"),
    Validation => (UNPROCESSABLE_ENTITY, "validation", "The request body failed validation"),
    PreconditionFailed => (PRECONDITION_FAILED, "precondition-failed", "The resource changed since it was read"),
    MalformedMultipart => (BAD_REQUEST, "malformed-multipart", "The multipart body is malformed"),
    InvalidImage => (UNPROCESSABLE_ENTITY, "invalid-image", "The image is damaged or not what its header says"),
    ImageTooLarge => (UNPROCESSABLE_ENTITY, "image-too-large", "The image has too many pixels"),
    UrlRefused => (UNPROCESSABLE_ENTITY, "url-refused", "The target is an address the platform may not connect to"),
    LimitReached => (CONFLICT, "limit-reached", "As many of these exist as the platform allows"),
    RangeTooLarge => (UNPROCESSABLE_ENTITY, "range-too-large", "The range holds more than one request may take"),
    PluginInvalid => (UNPROCESSABLE_ENTITY, "plugin-invalid", "The plugin or its manifest was refused"),
    PluginVeto => (UNPROCESSABLE_ENTITY, "plugin-veto", "A plugin refused the change"),
    PluginFailed => (FAILED_DEPENDENCY, "plugin-failed", "A plugin failed while handling the request"),
    ConfirmationRequired => (PRECONDITION_REQUIRED, "confirmation-required", "This action must be confirmed"),
    RateLimited => (TOO_MANY_REQUESTS, "rate-limited", "Too many requests"),
    QuotaExceeded => (TOO_MANY_REQUESTS, "quota-exceeded", "A request quota (the tenant's daily one, or the API key's credits) is used up"),
    SendLimited => (TOO_MANY_REQUESTS, "send-limit", "The tenant's notification sending limit is reached"),
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
    pub fn is_client_error(self) -> bool {
        (400..500).contains(&self.status())
    }
    pub fn is_server_error(self) -> bool {
        self.status() >= 500
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
    /// Sent as `Retry-After` (a limit that lifts after this many seconds).
    pub retry_after_secs: Option<u64>,
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
            retry_after_secs: None,
        }
    }
    /// The same error, telling the client when to try again.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }
    /// 409 `limit-reached`: `max` of `what` exist already (remove one first).
    pub fn limit_reached(what: &str, max: usize) -> Self {
        Self::new(
            ErrorCode::LimitReached,
            format!("at most {max} {what} may exist; remove one first"),
        )
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

impl From<diesel::result::Error> for ApiError {
    /// diesel errors are classified once, here: not found → 404, unique or foreign-key
    /// violation → 409, a closed connection → 503, anything else → 500.
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        match &err {
            E::NotFound => ApiError::not_found("resource"),
            // The constraint's name is schema detail: logged with the cause, never sent.
            E::DatabaseError(K::UniqueViolation, _) => ApiError::new(
                ErrorCode::Conflict,
                "a record with the same unique value already exists",
            )
            .with_source(err),
            // Serialisation failures and deadlocks are transient: the client may retry.
            E::DatabaseError(K::SerializationFailure, _) => ApiError::new(
                ErrorCode::Conflict,
                "the change conflicted with a concurrent one; retry the request",
            )
            .with_source(err),
            E::DatabaseError(K::Unknown, info) if info.message().contains("deadlock detected") => {
                ApiError::new(
                    ErrorCode::Conflict,
                    "the change conflicted with a concurrent one; retry the request",
                )
                .with_source(err)
            }
            E::DatabaseError(K::ForeignKeyViolation, _) => {
                ApiError::new(ErrorCode::Conflict, "a referenced record does not exist")
            }
            // The driver could not talk to the server at all (a closed or broken connection).
            E::DatabaseError(K::ClosedConnection | K::UnableToSendCommand, _)
            | E::BrokenTransactionManager => ApiError::unavailable("the database", err),
            E::DatabaseError(K::Unknown, info) if info.message().contains("statement timeout") => {
                ApiError::unavailable("the database", err)
            }
            // A connection lost under the request (a restart, a failover): transient.
            E::DatabaseError(K::Unknown, info) if connection_lost(info.message()) => {
                ApiError::unavailable("the database", err)
            }
            _ => ApiError::internal(err),
        }
    }
}

/// Whether a database error's message says the connection went away (the server restarting,
/// shutting down or failing over; the network), rather than the statement failing.
fn connection_lost(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "connection closed",
        "terminating connection",
        "the database system is shutting down",
        "the database system is starting up",
        "the database system is in recovery mode",
        "server closed the connection",
        "connection refused",
        "connection reset",
        "broken pipe",
        "unexpected eof",
        "error communicating with database",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

impl From<crate::db::DbError> for ApiError {
    fn from(err: crate::db::DbError) -> Self {
        match err {
            crate::db::DbError::Pool(e) => e.into(),
            crate::db::DbError::Query(e) => e.into(),
        }
    }
}

impl From<crate::db::PoolError> for ApiError {
    fn from(err: crate::db::PoolError) -> Self {
        ApiError::unavailable("the database", err)
    }
}

/// `a.b[0].c` (serde_path_to_error's notation) → `/a/b/0/c`; `.` (the root) → ``.
pub fn json_pointer(path: &str) -> String {
    if path == "." {
        return String::new();
    }
    let mut out = String::new();
    for part in path.split(['.', '[']) {
        let part = part.trim_end_matches(']');
        if !part.is_empty() {
            out.push('/');
            out.push_str(&part.replace('~', "~0").replace('/', "~1"));
        }
    }
    out
}

/// A `T` read from a JSON document; a shape that does not fit is a 422 naming the place
/// (under `prefix`) and why.
pub fn from_json<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let pointer = format!("{prefix}{}", json_pointer(&err.path().to_string()));
        ApiError::validation(vec![FieldError {
            pointer,
            message: err.into_inner().to_string(),
        }])
    })
}

/// Whether an `If-Match` header value admits the current ETag `current` (absent or `*`
/// always does; weak tags compare by their opaque part).
pub fn if_match_admits(if_match: Option<&str>, current: &str) -> bool {
    match if_match {
        None => true,
        Some(tags) if tags.trim() == "*" => true,
        Some(tags) => tags
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_database_connection_is_unavailable_not_internal() {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        for message in [
            "terminating connection due to administrator command",
            "connection closed",
            "FATAL: the database system is shutting down",
        ] {
            let e = ApiError::from(E::DatabaseError(K::Unknown, Box::new(message.to_string())));
            assert_eq!(e.code, ErrorCode::Unavailable, "{message}");
        }
        let e = ApiError::from(E::DatabaseError(
            K::UnableToSendCommand,
            Box::new("connection closed".to_string()),
        ));
        assert_eq!(e.code, ErrorCode::Unavailable);
        let e = ApiError::from(E::DatabaseError(
            K::Unknown,
            Box::new("column \"x\" does not exist".to_string()),
        ));
        assert_eq!(e.code, ErrorCode::Internal);
    }

    #[test]
    fn slugs_are_unique_and_urls() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.slug()), "duplicate slug {}", code.slug());
            assert!(code.is_client_error() || code.is_server_error());
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
