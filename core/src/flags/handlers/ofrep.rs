//! The OpenFeature Remote Evaluation Protocol (OFREP, open-feature/protocol
//! `service/openapi.yaml`): `POST /ofrep/v1/evaluate/flags/{key}` and the bulk
//! `POST /ofrep/v1/evaluate/flags`, so any OpenFeature SDK's OFREP provider evaluates a
//! tenant's flags. The tenant is named as for every route (Host or `X-Tenant`).
//!
//! Credentials: an SDK key (`ntf_…`, as `X-API-Key` or a bearer token) evaluates the one
//! environment it was made for; a user token or API key evaluates with `flags.evaluate` in
//! the environment named by `X-Flag-Environment` (default: the tenant's first), its identity
//! filling the context. Bodies follow OFREP, not RFC 9457: success `{key, value, reason,
//! variant, metadata}`; failure `{key, errorCode, errorDetails}` with 400
//! (`PARSE_ERROR`, `TARGETING_KEY_MISSING`, `INVALID_CONTEXT`, `GENERAL`) or 404
//! (`FLAG_NOT_FOUND`); the bulk answer carries an ETag (flag generation, environment and
//! context) and answers a matching `If-None-Match` with 304. Credentials and rate limits
//! answer as everywhere else (401/403/429 with `Retry-After`).

use salvo::http::header::{CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH};
use salvo::oapi::{self, Components, EndpointOutRegister, Operation, endpoint};
use salvo::prelude::*;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::flags::{FlagsState, SDK_KEY_PREFIX, service};
use crate::http::extract::dep;
use crate::http::problem::Render;
use crate::rbac::Caller;
use crate::rbac::perm::Scope;
use crate::tenancy::resolve::CurrentTenant;

/// Largest OFREP request body.
const MAX_BODY: usize = 64 * 1024;

/// The environment an SDK key opened, put in the depot by [`OfrepAuth`].
#[derive(Debug, Clone)]
struct SdkEnvironment(String);

/// The presented SDK key, if the request carries one.
fn sdk_key(req: &Request) -> Option<String> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let bearer = header("authorization")
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        })
        .map(str::trim);
    header("x-api-key")
        .or(bearer)
        .filter(|k| k.starts_with(SDK_KEY_PREFIX))
        .map(str::to_string)
}

/// Authenticates an OFREP request: an SDK key against the tenant's cached flag set (rate
/// limited by client address and key), anything else through the ordinary
/// `Authenticate` and `LoadUser` hoops.
pub struct OfrepAuth;

#[async_trait]
impl Handler for OfrepAuth {
    async fn handle(
        &self,
        req: &mut Request,
        depot: &mut Depot,
        res: &mut Response,
        ctrl: &mut FlowCtrl,
    ) {
        let Some(key) = sdk_key(req) else {
            crate::auth::hoops::Authenticate
                .handle(req, depot, res, ctrl)
                .await;
            // Authenticate answered (401, 429…) and skipped the rest: so does this hoop.
            if ctrl.is_ceased() || !ctrl.has_next() {
                return;
            }
            crate::users::hoops::LoadUser
                .handle(req, depot, res, ctrl)
                .await;
            return;
        };
        let outcome = async {
            let state = dep::<FlagsState>(depot)?;
            let auth = dep::<crate::auth::AuthState>(depot)?;
            let tenant = depot
                .get_typed::<CurrentTenant>()
                .cloned()
                .map_err(|_| ApiError::internal("OfrepAuth mounted without ResolveTenant"))?;
            let ip = crate::auth::hoops::client_ip(req, auth.limiter.config().trust_forwarded_for);
            let bucket = format!(
                "{}:sdk:{}",
                tenant.0.tenant.id,
                key.chars().take(12).collect::<String>()
            );
            match auth.limiter.check(ip, Some(&bucket)).await {
                crate::ratelimit::Decision::Allowed { .. } => {}
                crate::ratelimit::Decision::Limited {
                    retry_after_secs, ..
                }
                | crate::ratelimit::Decision::Locked { retry_after_secs } => {
                    let mut e = ApiError::new(
                        ErrorCode::RateLimited,
                        format!("rate limit exceeded; retry in {retry_after_secs} s"),
                    );
                    e.retry_after_secs = Some(retry_after_secs);
                    return Err(e);
                }
            }
            let set = service::flag_set(&state, &tenant.0).await?;
            service::sdk_key_environment(&set, &key).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::SdkKeyInvalid,
                    "the SDK key is unknown, revoked or another tenant's",
                )
            })
        }
        .await;
        match outcome {
            Ok(env) => {
                depot.insert_typed(SdkEnvironment(env));
            }
            Err(e) => {
                e.render(req, depot, res);
                ctrl.skip_rest();
            }
        }
    }
}

/// Who evaluates, and in which environment.
async fn caller_and_environment(
    req: &mut Request,
    depot: &mut Depot,
    state: &FlagsState,
    tenant: &CurrentTenant,
) -> ApiResult<(Option<Caller>, String)> {
    if let Ok(SdkEnvironment(env)) = depot.get_typed::<SdkEnvironment>() {
        return Ok((None, env.clone()));
    }
    let caller = <Caller as salvo::extract::Extractible>::extract(req, depot).await?;
    caller.require("flags", "evaluate", Scope::Tenant)?;
    let env = match req
        .headers()
        .get("x-flag-environment")
        .and_then(|v| v.to_str().ok())
    {
        Some(e) => {
            service::require_environment(state, &tenant.0, e).await?;
            e.to_string()
        }
        None => service::default_environment(state, &tenant.0).await?,
    };
    Ok((Some(caller), env))
}

/// A JSON answer with a status (OFREP's bodies).
pub struct OfrepJson {
    status: StatusCode,
    body: Option<Value>,
    etag: Option<String>,
}

#[async_trait]
impl Writer for OfrepJson {
    async fn write(self, _req: &mut Request, _depot: &mut Depot, res: &mut Response) {
        res.status_code(self.status);
        if let Some(etag) = self.etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
            res.headers_mut().insert(ETAG, etag);
        }
        if let Some(body) = self.body {
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            res.body(body.to_string());
        }
    }
}

impl EndpointOutRegister for OfrepJson {
    fn register(_components: &mut Components, operation: &mut Operation) {
        operation.responses.insert(
            "200",
            oapi::Response::new("OFREP evaluation")
                .add_content("application/json", oapi::Content::new(oapi::Object::new())),
        );
    }
}

fn failure(status: StatusCode, key: Option<&str>, code: &str, details: String) -> OfrepJson {
    let mut body = json!({"errorCode": code, "errorDetails": details});
    if let Some(k) = key {
        body["key"] = Value::String(k.to_string());
    }
    OfrepJson {
        status,
        body: Some(body),
        etag: None,
    }
}

/// The request's context, or the OFREP failure to answer.
async fn read_context(
    req: &mut Request,
    key: Option<&str>,
) -> Result<Map<String, Value>, OfrepJson> {
    let bytes = req
        .payload_with_max_size(MAX_BODY)
        .await
        .map_err(|e| {
            failure(
                StatusCode::BAD_REQUEST,
                key,
                "PARSE_ERROR",
                format!("the body cannot be read (at most {MAX_BODY} bytes): {e}"),
            )
        })?
        .clone();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
        failure(
            StatusCode::BAD_REQUEST,
            key,
            "PARSE_ERROR",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let invalid = |d: &str| failure(StatusCode::BAD_REQUEST, key, "INVALID_CONTEXT", d.into());
    let Value::Object(mut body) = body else {
        return Err(invalid(
            "the body must be an object with a `context` object",
        ));
    };
    match body.remove("context") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(ctx)) => {
            if ctx
                .get(neotenant_flags::TARGETING_KEY)
                .is_some_and(|t| !t.is_string())
            {
                return Err(invalid("`context.targetingKey` must be a string"));
            }
            Ok(ctx)
        }
        Some(_) => Err(invalid("`context` must be an object")),
    }
}

/// OFREP single flag evaluation.
#[endpoint(
    operation_id = "neotenant.ofrep.evaluate_flag",
    tags("ofrep"),
    status_codes(200, 400, 401, 403, 404, 429)
)]
pub async fn evaluate_flag(
    req: &mut Request,
    depot: &mut Depot,
    tenant: CurrentTenant,
    key: crate::http::extract::Path<String>,
) -> ApiResult<OfrepJson> {
    let state = dep::<FlagsState>(depot)?;
    let (caller, env) = caller_and_environment(req, depot, &state, &tenant).await?;
    let context = match read_context(req, Some(&key.0)).await {
        Ok(c) => c,
        Err(answer) => return Ok(answer),
    };
    let set = service::flag_set(&state, &tenant.0).await?;
    let ctx = service::context_of(caller.as_ref(), &env, context).await?;
    let view = service::evaluation_view(&key.0, &env, set.snapshot.evaluate(&env, &key.0, &ctx));
    Ok(match view.error_code.as_deref() {
        None => OfrepJson {
            status: StatusCode::OK,
            body: Some(json!({
                "key": view.key, "value": view.value, "reason": view.reason,
                "variant": view.variant, "metadata": view.metadata,
            })),
            etag: None,
        },
        Some(code) => failure(
            if code == "FLAG_NOT_FOUND" {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            },
            Some(&key.0),
            code,
            view.error_details.unwrap_or_default(),
        ),
    })
}

/// The bulk ETag: the flag generation, the environment and the context.
fn bulk_etag(generation: i64, env: &str, ctx: &neotenant_flags::Context) -> String {
    let mut h = Sha256::new();
    h.update(generation.to_be_bytes());
    h.update(env.as_bytes());
    h.update([0]);
    h.update(ctx.targeting_key.as_deref().unwrap_or_default().as_bytes());
    h.update([0]);
    // serde_json's map keeps keys sorted: the same context hashes the same.
    if let Ok(bytes) = serde_json::to_vec(&ctx.attributes) {
        h.update(bytes);
    }
    format!("\"{}\"", hex::encode(&h.finalize()[..12]))
}

/// OFREP bulk evaluation: every flag of the environment.
#[endpoint(
    operation_id = "neotenant.ofrep.evaluate_flags",
    tags("ofrep"),
    status_codes(200, 304, 400, 401, 403, 429)
)]
pub async fn evaluate_flags(
    req: &mut Request,
    depot: &mut Depot,
    tenant: CurrentTenant,
) -> ApiResult<OfrepJson> {
    let state = dep::<FlagsState>(depot)?;
    let (caller, env) = caller_and_environment(req, depot, &state, &tenant).await?;
    let context = match read_context(req, None).await {
        Ok(c) => c,
        Err(answer) => return Ok(answer),
    };
    let set = service::flag_set(&state, &tenant.0).await?;
    let ctx = service::context_of(caller.as_ref(), &env, context).await?;
    let etag = bulk_etag(set.generation, &env, &ctx);
    let unchanged = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
    if unchanged {
        return Ok(OfrepJson {
            status: StatusCode::NOT_MODIFIED,
            body: None,
            etag: Some(etag),
        });
    }
    let flags: Vec<Value> = set
        .snapshot
        .evaluate_all(&env, &ctx)
        .into_iter()
        .map(|(key, r)| {
            let v = service::evaluation_view(&key, &env, r);
            match v.error_code {
                None => json!({"key": v.key, "value": v.value, "reason": v.reason,
                               "variant": v.variant, "metadata": v.metadata}),
                Some(code) => json!({"key": v.key, "errorCode": code,
                                     "errorDetails": v.error_details}),
            }
        })
        .collect();
    Ok(OfrepJson {
        status: StatusCode::OK,
        body: Some(
            json!({"flags": flags, "metadata": {"environment": env, "generation": set.generation}}),
        ),
        etag: Some(etag),
    })
}

pub fn router() -> Router {
    Router::with_path("ofrep/v1/evaluate/flags")
        .hoop(crate::tenancy::hoops::ResolveTenant)
        .hoop(OfrepAuth)
        .post(evaluate_flags)
        .push(Router::with_path("{key}").post(evaluate_flag))
}
