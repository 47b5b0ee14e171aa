//! Typed extractors whose failures are problem responses: a JSON body, a typed path
//! parameter, and list parameters (limit + cursor).
//!
//! Owns the mapping of every input failure to a precise 4xx: wrong content type → 415,
//! too large → 413, not JSON → 400 `malformed-json` with line and column, JSON of the wrong
//! shape → 422 `validation` with a pointer to the field, bad path or query value → 400
//! `invalid-parameter`. Never panics on input and never lets salvo's generic error through.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use salvo::extract::{Extractible, Metadata};
use salvo::http::ParseError;
use salvo::oapi::{
    self, Components, EndpointArgRegister, Operation, Parameter, ParameterIn, ToSchema,
};
use salvo::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::cursor::{decode_cursor, encode_cursor};
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};

/// Implements `Extractible` for a type a hoop puts in the depot, so handlers can take it as an
/// argument; a handler mounted without that hoop gets an internal error naming it.
#[macro_export]
macro_rules! depot_extractor {
    ($ty:ty, $hoop:literal) => {
        impl<'ex> salvo::extract::Extractible<'ex> for $ty {
            fn metadata() -> &'static salvo::extract::Metadata {
                static METADATA: salvo::extract::Metadata =
                    salvo::extract::Metadata::new(stringify!($ty));
                &METADATA
            }

            #[allow(refining_impl_trait)]
            async fn extract(
                _req: &'ex mut salvo::Request,
                depot: &'ex mut salvo::Depot,
            ) -> Result<Self, $crate::error::ApiError> {
                depot.get_typed::<$ty>().cloned().map_err(|_| {
                    $crate::error::ApiError::internal(concat!("handler mounted without ", $hoop))
                })
            }
        }
    };
}

/// A piece of state `app` provided for the routes (`Arc<T>`): each feature's handlers and
/// hoops ask for their own feature's state and nothing wider.
pub fn dep<T: Send + Sync + 'static>(depot: &Depot) -> Result<Arc<T>, ApiError> {
    depot
        .get_typed::<Arc<States>>()
        .ok()
        .and_then(|states| states.get::<T>())
        .ok_or_else(|| {
            ApiError::internal(format!(
                "{} was not provided to this route",
                std::any::type_name::<T>()
            ))
        })
}

/// The states `app` built, by type: put in each request's depot once (one insertion per
/// request, whatever their number), read by [`dep`].
#[derive(Default)]
pub struct States(HashMap<TypeId, Arc<dyn Any + Send + Sync>>);

impl States {
    pub fn with<T: Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        self.0.insert(TypeId::of::<T>(), value);
        self
    }

    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.0
            .get(&TypeId::of::<T>())
            .and_then(|v| v.clone().downcast::<T>().ok())
    }
}

/// The hoop that puts the [`States`] in every request's depot.
#[derive(Default)]
pub struct Provide(Arc<States>);

impl Provide {
    pub fn with<T: Send + Sync + 'static>(self, value: Arc<T>) -> Self {
        let states = Arc::try_unwrap(self.0).unwrap_or_else(|shared| States(shared.0.clone()));
        Self(Arc::new(states.with(value)))
    }
}

#[async_trait]
impl Handler for Provide {
    async fn handle(
        &self,
        _req: &mut Request,
        depot: &mut Depot,
        _res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        depot.insert_typed(self.0.clone());
    }
}

/// A JSON request body of type `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

static JSON_METADATA: Metadata = Metadata::new("JsonBody");

fn is_json(mime: &mime::Mime) -> bool {
    (mime.type_() == mime::APPLICATION && mime.subtype() == mime::JSON)
        || mime.suffix() == Some(mime::JSON)
}

/// Parses `bytes` as a `T`, classifying the failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            ErrorCode::MalformedJson,
            "the request body is empty",
        ));
    }
    if let Some(pointer) = nul_pointer(bytes) {
        return Err(ApiError::validation(vec![FieldError {
            pointer,
            message: "must not contain a NUL character (\\u0000)".into(),
        }]));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = parsed.map_err(|err| {
        let path = err.path().to_string();
        let mut inner = err.into_inner();
        // A wrong field can be met before the body turns out not to be JSON at all (a
        // truncated body whose first key is unknown): malformed JSON wins, whatever came first.
        if inner.classify() == serde_json::error::Category::Data
            && let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        {
            inner = syntax;
        }
        match inner.classify() {
            serde_json::error::Category::Data => ApiError::validation(vec![FieldError {
                pointer: crate::error::json_pointer(&path),
                message: strip_position(&inner.to_string()),
            }]),
            _ => ApiError::new(
                ErrorCode::MalformedJson,
                format!(
                    "invalid JSON at line {} column {}: {}",
                    inner.line(),
                    inner.column(),
                    strip_position(&inner.to_string())
                ),
            ),
        }
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!(
                "trailing characters after the JSON value at line {} column {}",
                e.line(),
                e.column()
            ),
        )
    })?;
    Ok(value)
}

/// Where a JSON body holds a NUL character (`\u0000`, the only way one can appear in JSON),
/// as a JSON pointer: PostgreSQL stores NUL in neither text nor JSONB, so every body is refused
/// here, once, before any field reaches a service. Bodies without the escape cost one scan.
fn nul_pointer(bytes: &[u8]) -> Option<String> {
    if !bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return None;
    }
    // The text may also be an escaped backslash followed by `u0000`: look at the values.
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    fn find(v: &serde_json::Value, at: &mut String) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                let found = find(item, at);
                if !found {
                    at.truncate(len);
                }
                found
            }),
            serde_json::Value::Object(map) => map.iter().any(|(k, item)| {
                let len = at.len();
                at.push('/');
                at.push_str(
                    &k.replace('~', "~0")
                        .replace('/', "~1")
                        .replace('\0', "\\u0000"),
                );
                let found = k.contains('\0') || find(item, at);
                if !found {
                    at.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut at = String::new();
    find(&value, &mut at).then_some(at)
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

impl<'ex, T> Extractible<'ex> for JsonBody<T>
where
    T: DeserializeOwned + Send,
{
    fn metadata() -> &'static Metadata {
        &JSON_METADATA
    }

    #[allow(refining_impl_trait)]
    async fn extract(req: &'ex mut Request, _depot: &'ex mut Depot) -> Result<Self, ApiError> {
        match req.content_type() {
            Some(mime) if is_json(&mime) => {}
            Some(mime) => {
                return Err(ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    format!("Content-Type {mime} is not supported; send application/json"),
                ));
            }
            None => {
                return Err(ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    "missing Content-Type; send application/json",
                ));
            }
        }
        let max = req.secure_max_size();
        let bytes = req.payload_with_max_size(max).await.map_err(|e| match e {
            ParseError::PayloadTooLarge => ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the body may be at most {max} bytes"),
            ),
            other => ApiError::new(
                ErrorCode::BadRequest,
                format!("cannot read the body: {other}"),
            ),
        })?;
        parse_json(bytes).map(JsonBody)
    }
}

impl<T: ToSchema> EndpointArgRegister for JsonBody<T> {
    fn register(components: &mut Components, operation: &mut Operation, _arg: &str) {
        let schema = T::to_schema(components);
        operation.request_body = Some(
            oapi::RequestBody::new()
                .required(oapi::Required::True)
                .add_content("application/json", oapi::Content::new(schema)),
        );
    }
}

/// A path parameter parsed with `FromStr`; the handler argument's name is the parameter's.
#[derive(Debug)]
pub struct Path<T>(pub T);

static PATH_METADATA: Metadata = Metadata::new("Path");

impl<'ex, T> Extractible<'ex> for Path<T>
where
    T: FromStr + Send,
    T::Err: std::fmt::Display,
{
    fn metadata() -> &'static Metadata {
        &PATH_METADATA
    }

    #[allow(refining_impl_trait)]
    async fn extract(_req: &'ex mut Request, _depot: &'ex mut Depot) -> Result<Self, ApiError> {
        Err(ApiError::internal("Path<T> needs the parameter name"))
    }

    #[allow(refining_impl_trait)]
    async fn extract_with_arg(
        req: &'ex mut Request,
        _depot: &'ex mut Depot,
        arg: &str,
    ) -> Result<Self, ApiError> {
        let raw: String = req.param(arg).unwrap_or_default();
        raw.parse::<T>().map(Path).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidParameter,
                format!("path parameter `{arg}` is invalid: {e}"),
            )
        })
    }
}

impl<T: ToSchema> EndpointArgRegister for Path<T> {
    fn register(components: &mut Components, operation: &mut Operation, arg: &str) {
        operation.parameters.insert(
            Parameter::new(arg)
                .location(ParameterIn::Path)
                .required(oapi::Required::True)
                .schema(T::to_schema(components)),
        );
    }
}

/// The `If-Match` request header, when present (optimistic concurrency: a change applies only
/// if the resource's current `ETag` is among those listed, or the header is `*`).
#[derive(Debug, Clone)]
pub struct IfMatch(pub Option<String>);

impl<'ex> Extractible<'ex> for IfMatch {
    fn metadata() -> &'static Metadata {
        static METADATA: Metadata = Metadata::new("IfMatch");
        &METADATA
    }

    #[allow(refining_impl_trait)]
    async fn extract(req: &'ex mut Request, _depot: &'ex mut Depot) -> Result<Self, ApiError> {
        match req.headers().get(salvo::http::header::IF_MATCH) {
            None => Ok(IfMatch(None)),
            Some(v) => v
                .to_str()
                .ok()
                .filter(|s| !s.trim().is_empty() && s.len() <= 1024)
                .map(|s| IfMatch(Some(s.to_string())))
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidParameter,
                        "If-Match must be `*` or a list of ETags",
                    )
                }),
        }
    }
}

impl EndpointArgRegister for IfMatch {
    fn register(_components: &mut Components, operation: &mut Operation, _arg: &str) {
        operation.parameters.insert(
            Parameter::new("If-Match")
                .location(ParameterIn::Header)
                .required(oapi::Required::False)
                .description("Apply only if the resource's ETag is this one (else 412).")
                .schema(oapi::Object::new().schema_type(oapi::schema::BasicType::String)),
        );
    }
}

/// Documents query parameters that a handler reads from the request itself (free-form
/// filters): `QueryDoc<P>` as a handler argument extracts nothing and adds `P::PARAMS` —
/// (name, description) pairs, all optional strings — to the operation in the document.
pub struct QueryDoc<P>(std::marker::PhantomData<P>);

/// The query parameters a [`QueryDoc`] documents.
pub trait QueryParams: Send + Sync + 'static {
    const PARAMS: &'static [(&'static str, &'static str)];
}

impl<'ex, P: QueryParams> salvo::extract::Extractible<'ex> for QueryDoc<P> {
    fn metadata() -> &'static salvo::extract::Metadata {
        static METADATA: salvo::extract::Metadata = salvo::extract::Metadata::new("QueryDoc");
        &METADATA
    }

    #[allow(refining_impl_trait)]
    async fn extract(_req: &'ex mut Request, _depot: &'ex mut Depot) -> Result<Self, ApiError> {
        Ok(Self(std::marker::PhantomData))
    }
}

impl<P: QueryParams> EndpointArgRegister for QueryDoc<P> {
    fn register(_components: &mut Components, operation: &mut Operation, _arg: &str) {
        for (name, description) in P::PARAMS {
            operation.parameters.insert(
                Parameter::new(*name)
                    .location(ParameterIn::Query)
                    .required(oapi::Required::False)
                    .description(*description)
                    .schema(oapi::Object::new().schema_type(oapi::schema::BasicType::String)),
            );
        }
    }
}

/// Smallest and largest page size; the default when `limit` is absent.
pub const LIMIT_DEFAULT: u32 = 50;
pub const LIMIT_MAX: u32 = 200;

/// `?limit=&cursor=` for every list endpoint. The cursor is opaque to clients.
#[derive(Debug, Clone)]
pub struct ListParams<K> {
    pub limit: u32,
    pub after: Option<K>,
}

impl<'ex, K> Extractible<'ex> for ListParams<K>
where
    K: DeserializeOwned + Send,
{
    fn metadata() -> &'static Metadata {
        static METADATA: Metadata = Metadata::new("ListParams");
        &METADATA
    }

    #[allow(refining_impl_trait)]
    async fn extract(req: &'ex mut Request, _depot: &'ex mut Depot) -> Result<Self, ApiError> {
        let limit = limit_param(req, LIMIT_DEFAULT as usize, LIMIT_MAX as usize)? as u32;
        let after = req
            .queries()
            .get("cursor")
            .map(|c| decode_cursor::<K>(c))
            .transpose()?;
        Ok(Self { limit, after })
    }
}

impl<K> EndpointArgRegister for ListParams<K> {
    fn register(_components: &mut Components, operation: &mut Operation, _arg: &str) {
        operation.parameters.insert(
            Parameter::new("limit")
                .location(ParameterIn::Query)
                .required(oapi::Required::False)
                .description(format!(
                    "Page size, 1-{LIMIT_MAX} (default {LIMIT_DEFAULT})."
                ))
                .schema(oapi::Object::new().schema_type(oapi::schema::BasicType::Integer)),
        );
        operation.parameters.insert(
            Parameter::new("cursor")
                .location(ParameterIn::Query)
                .required(oapi::Required::False)
                .description("Opaque `next_cursor` of the previous page.")
                .schema(oapi::Object::new().schema_type(oapi::schema::BasicType::String)),
        );
    }
}

/// One page of a list, in a stable order, with the cursor of the next page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema + 'static> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T: ToSchema + 'static> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in order: the extra row only tells
    /// that another page exists. `key` gives the sort key of a row.
    pub fn from_rows<K: Serialize>(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> K) -> Self {
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if has_more {
            rows.last().map(|last| encode_cursor(&key(last)))
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }
}

/// The one file part named `file` of a multipart/form-data upload of at most `max_bytes`;
/// `what` names it in problems ("an avatar"). Any other part, a second file, a body of
/// another type or a larger file is refused before the file is read into memory.
pub async fn read_file_part(req: &mut Request, max_bytes: usize, what: &str) -> ApiResult<Vec<u8>> {
    let malformed = |d: String| ApiError::new(ErrorCode::MalformedMultipart, d);
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("{what} may be at most {max_bytes} bytes"),
        )
    };
    let is_form_data = req
        .content_type()
        .is_some_and(|m| m.type_() == mime::MULTIPART && m.subtype() == mime::FORM_DATA);
    if !is_form_data {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("{what} is uploaded as multipart/form-data with one file part `file`"),
        ));
    }
    req.set_form_limits(salvo::http::FormLimits::new().max_parts(2).max_files(1));
    let form = req
        .form_data_max_size(max_bytes + 64 * 1024)
        .await
        .map_err(|e| match e {
            salvo::http::ParseError::PayloadTooLarge => too_large(),
            other => malformed(format!("cannot read the multipart body: {other}")),
        })?;
    if let Some(other) = form
        .fields
        .keys()
        .chain(form.files.keys())
        .find(|name| name.as_str() != "file")
    {
        return Err(malformed(format!("unexpected part `{other}`: send `file`")));
    }
    let file = form
        .files
        .get("file")
        .ok_or_else(|| malformed(format!("send {what} as a file part named `file`")))?;
    if file.size() > max_bytes as u64 {
        return Err(too_large());
    }
    tokio::fs::read(file.path())
        .await
        .map_err(ApiError::internal)
}

/// The query parameter `limit`: `default` when absent, else an integer from 1 to `max` (400
/// otherwise).
pub fn limit_param(req: &Request, default: usize, max: usize) -> ApiResult<usize> {
    let max = u32::try_from(max).unwrap_or(u32::MAX);
    let default = u32::try_from(default).unwrap_or(max);
    int_param(req, "limit", default, 1..=max).map(|v| v as usize)
}

/// The query parameter `days` of usage reports: 1-90, default 30 (400 otherwise).
pub fn days_param(req: &Request) -> ApiResult<u32> {
    int_param(req, "days", 30, 1..=90)
}

/// An integer query parameter within `range`; `default` when absent (400 otherwise).
pub fn int_param(
    req: &Request,
    name: &str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> ApiResult<u32> {
    match req.queries().get(name) {
        None => Ok(default),
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|v| range.contains(v))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!(
                        "query parameter `{name}` must be an integer from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )
            }),
    }
}

/// The query parameter `name` as a version number (1 or more), else 400.
pub fn version_query(req: &Request, name: &str) -> ApiResult<i32> {
    req.query::<String>(name)
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidParameter,
                format!("query parameter `{name}` must be a version number"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct In {
        #[allow(dead_code)]
        title: String,
        #[allow(dead_code)]
        tags: Vec<u32>,
    }

    #[test]
    fn json_failures_are_classified() {
        let e = parse_json::<In>(b"{\"title\": ").unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedJson);
        let e = parse_json::<In>(b"").unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedJson);
        let e = parse_json::<In>(b"{\"title\": 5, \"tags\": []}").unwrap_err();
        assert_eq!(e.code, ErrorCode::Validation);
        assert_eq!(e.errors[0].pointer, "/title");
        let e = parse_json::<In>(b"{\"title\": \"x\", \"tags\": [1, \"a\"]}").unwrap_err();
        assert_eq!(e.errors[0].pointer, "/tags/1");
        let e = parse_json::<In>(b"{\"title\": \"x\", \"tags\": []} []").unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedJson);
        assert!(parse_json::<In>(b"{\"title\": \"x\", \"tags\": [1]}").is_ok());
        // NUL anywhere in a string or a key: 422 naming where, before the shape is checked.
        let e = parse_json::<In>(b"{\"title\": \"a\\u0000b\", \"tags\": []}").unwrap_err();
        assert_eq!(e.code, ErrorCode::Validation);
        assert_eq!(e.errors[0].pointer, "/title");
        let e = parse_json::<serde_json::Value>(b"{\"a\": [1, {\"b\": \"\\u0000\"}]}").unwrap_err();
        assert_eq!(e.errors[0].pointer, "/a/1/b");
        let e = parse_json::<serde_json::Value>(b"{\"k\\u0000\": 1}").unwrap_err();
        assert_eq!(e.code, ErrorCode::Validation);
        // An escaped backslash before `u0000` is no NUL.
        assert!(parse_json::<serde_json::Value>(b"{\"a\": \"\\\\u0000\"}").is_ok());
        // An unknown field first, then the body breaks off: still malformed JSON.
        let e = parse_json::<In>(b"{\"other\": ").unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedJson);
        let e = parse_json::<In>(b"{\"other\": 1}").unwrap_err();
        assert_eq!(e.code, ErrorCode::Validation);
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = encode_cursor(&("a", 5));
        assert_eq!(
            decode_cursor::<(String, i32)>(&c).unwrap(),
            ("a".to_string(), 5)
        );
        for bad in ["!!", "aGVsbG8", &"A".repeat(600)] {
            assert_eq!(
                decode_cursor::<(String, i32)>(bad).unwrap_err().code,
                ErrorCode::InvalidCursor
            );
        }
    }

    #[test]
    fn pages() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |x| *x);
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(
            decode_cursor::<i32>(page.next_cursor.as_deref().unwrap()).unwrap(),
            2
        );
        let page = Page::from_rows(vec![1, 2], 2, |x| *x);
        assert!(page.next_cursor.is_none());
    }
}
