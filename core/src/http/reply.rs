//! Success responses with an explicit status: `200`/`201` with a JSON body, or `204`.
//!
//! Owns nothing but serialisation; a body that fails to serialise is an internal error.

use salvo::http::header::{CONTENT_TYPE, ETAG, HeaderValue, LOCATION};
use salvo::oapi::{self, Components, EndpointOutRegister, Operation, ToSchema};
use salvo::prelude::*;
use serde::Serialize;

use crate::error::ApiError;
use crate::http::problem::Render;

/// A JSON body with a status (and, for a creation, its `Location`).
pub struct Reply<T> {
    status: StatusCode,
    location: Option<String>,
    etag: Option<String>,
    headers: Vec<(&'static str, String)>,
    body: T,
}

impl<T> Reply<T> {
    pub fn ok(body: T) -> Self {
        Self {
            status: StatusCode::OK,
            location: None,
            etag: None,
            headers: Vec::new(),
            body,
        }
    }
    pub fn accepted(body: T) -> Self {
        Self {
            status: StatusCode::ACCEPTED,
            location: None,
            etag: None,
            headers: Vec::new(),
            body,
        }
    }
    pub fn created(body: T, location: String) -> Self {
        Self {
            status: StatusCode::CREATED,
            location: Some(location),
            etag: None,
            headers: Vec::new(),
            body,
        }
    }
    /// Adds a `Location` header.
    pub fn with_location(mut self, location: String) -> Self {
        self.location = Some(location);
        self
    }
    /// Adds another header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
    /// Adds an `ETag` header (a quoted version).
    pub fn with_etag(mut self, etag: String) -> Self {
        self.etag = Some(etag);
        self
    }
}

#[async_trait]
impl<T: Serialize + Send> Writer for Reply<T> {
    async fn write(self, req: &mut Request, depot: &mut Depot, res: &mut Response) {
        match serde_json::to_vec(&self.body) {
            Ok(bytes) => {
                res.status_code(self.status);
                res.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
                    res.headers_mut().insert(LOCATION, location);
                }
                if let Some(etag) = self.etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
                    res.headers_mut().insert(ETAG, etag);
                }
                for (name, value) in self.headers {
                    if let Ok(v) = HeaderValue::from_str(&value) {
                        res.headers_mut().insert(name, v);
                    }
                }
                res.body(bytes);
            }
            Err(e) => ApiError::internal(e).render(req, depot, res),
        }
    }
}

impl<T: ToSchema> EndpointOutRegister for Reply<T> {
    fn register(components: &mut Components, operation: &mut Operation) {
        // Both: the endpoint's `status_codes` keep the one it answers with.
        let schema = T::to_schema(components);
        for (status, description) in [("200", "Success"), ("201", "Created"), ("202", "Accepted")] {
            operation.responses.insert(
                status,
                oapi::Response::new(description)
                    .add_content("application/json", oapi::Content::new(schema.clone())),
            );
        }
    }
}

/// An answer whose shape depends on the API version: a body, or `204 No Content` (older
/// versions); the document lists both.
pub enum Versioned<T> {
    Body(Reply<T>),
    Empty,
}

#[async_trait]
impl<T: Serialize + Send> Writer for Versioned<T> {
    async fn write(self, req: &mut Request, depot: &mut Depot, res: &mut Response) {
        match self {
            Self::Body(reply) => reply.write(req, depot, res).await,
            Self::Empty => NoContent.write(req, depot, res).await,
        }
    }
}

impl<T: ToSchema> EndpointOutRegister for Versioned<T> {
    fn register(components: &mut Components, operation: &mut Operation) {
        Reply::<T>::register(components, operation);
        NoContent::register(components, operation);
    }
}

/// `204 No Content`.
pub struct NoContent;

#[async_trait]
impl Writer for NoContent {
    async fn write(self, _req: &mut Request, _depot: &mut Depot, res: &mut Response) {
        res.status_code(StatusCode::NO_CONTENT);
    }
}

impl EndpointOutRegister for NoContent {
    fn register(_components: &mut Components, operation: &mut Operation) {
        operation
            .responses
            .insert("204", oapi::Response::new("Done"));
    }
}

/// A cacheable binary body (an image) with its ETag: `304 Not Modified` when the request's
/// `If-None-Match` names that ETag.
pub struct Binary {
    pub content_type: &'static str,
    /// The ETag, quoted.
    pub etag: String,
    /// `Cache-Control: private, max-age=…` (seconds).
    pub max_age: u32,
    pub body: Vec<u8>,
}

#[async_trait]
impl Writer for Binary {
    async fn write(self, req: &mut Request, _depot: &mut Depot, res: &mut Response) {
        let fresh = req
            .headers()
            .get(salvo::http::header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim() == self.etag || t.trim() == "*")
            });
        if let Ok(etag) = HeaderValue::from_str(&self.etag) {
            res.headers_mut().insert(ETAG, etag);
        }
        if let Ok(cc) = HeaderValue::from_str(&format!("private, max-age={}", self.max_age)) {
            res.headers_mut()
                .insert(salvo::http::header::CACHE_CONTROL, cc);
        }
        if fresh {
            res.status_code(StatusCode::NOT_MODIFIED);
            return;
        }
        res.status_code(StatusCode::OK);
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        res.body(self.body);
    }
}

impl EndpointOutRegister for Binary {
    fn register(_components: &mut Components, operation: &mut Operation) {
        let bytes = || {
            oapi::Content::new(
                oapi::Object::new()
                    .schema_type(oapi::schema::BasicType::String)
                    .format(oapi::SchemaFormat::KnownFormat(oapi::KnownFormat::Binary)),
            )
        };
        operation.responses.insert(
            "200",
            oapi::Response::new("The image").add_content("image/webp", bytes()),
        );
        operation.responses.insert(
            "304",
            oapi::Response::new("Not modified (the ETag matched)"),
        );
    }
}

/// A streamed body with its content type.
pub struct Streamed {
    pub content_type: &'static str,
    pub filename: Option<&'static str>,
    pub body: futures::stream::BoxStream<'static, Result<bytes::Bytes, std::convert::Infallible>>,
}

#[async_trait]
impl Writer for Streamed {
    async fn write(self, _req: &mut Request, _depot: &mut Depot, res: &mut Response) {
        res.status_code(StatusCode::OK);
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        res.headers_mut().insert(
            salvo::http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        if let Some(name) = self.filename
            && let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        {
            res.headers_mut()
                .insert(salvo::http::header::CONTENT_DISPOSITION, v);
        }
        res.stream(self.body);
    }
}

impl EndpointOutRegister for Streamed {
    fn register(_components: &mut Components, operation: &mut Operation) {
        let text =
            || oapi::Content::new(oapi::Object::new().schema_type(oapi::schema::BasicType::String));
        operation.responses.insert(
            "200",
            oapi::Response::new("A stream")
                .add_content("text/csv", text())
                .add_content("application/x-ndjson", text())
                .add_content("text/event-stream", text()),
        );
    }
}
