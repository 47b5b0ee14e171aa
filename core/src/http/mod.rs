//! The HTTP surface: router assembly, operational endpoints (`/healthz`, `/readyz`,
//! `/metrics`, `/openapi.json`, `/docs`) and the conventions every feature endpoint uses.
//!
//! Request path: `Observe` (request id, span, body limit, metrics, access log) → the state
//! injection `app` passes in → `CatchPanic` → routing → for `/v1/*`, `ResolveTenant` → the
//! feature handler. Every error leaves through `problem` (RFC 9457) or the `ProblemCatcher`.
//! Features add routers here and never install service-wide hoops of their own. This layer
//! never builds state: `app` does, and hands each piece to the routes that use it.

pub mod catcher;
pub mod extract;
pub mod middleware;
pub mod problem;
pub mod reply;
pub mod version;

use std::sync::Arc;
use std::time::Duration;

use salvo::catch_panic::CatchPanic;
use salvo::catcher::Catcher;
use salvo::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use salvo::oapi::{OpenApi, scalar::Scalar};
use salvo::prelude::*;
use serde::Serialize;

use crate::config::Config;
use crate::db::{PgPool, Pools};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use problem::Render;

/// What the operational endpoints and the outermost hoop use, built once by `app`.
pub struct Ops {
    pub config: Arc<Config>,
    /// The platform registry database (readiness).
    pub registry: PgPool,
    /// Tenant databases (pool metrics).
    pub pools: Arc<Pools>,
    pub redis: crate::redis_link::Link,
    pub metrics: Arc<Metrics>,
}

/// Everything under `/v1`: tenant-scoped feature routers.
fn tenant_api() -> Router {
    Router::with_path("v1")
        .hoop(version::Versioning)
        .push(Router::with_path("api-versions").get(version::api_versions))
        .push(
            Router::new()
                .hoop(crate::tenancy::hoops::ResolveTenant)
                .push(tenant_routes()),
        )
}

/// `/v1` routes of one tenant.
fn tenant_routes() -> Router {
    Router::new()
        // Sign-in, token refresh and password reset need the tenant but no access token.
        .push(crate::account::handlers::router())
        .push(crate::invitations::handlers::public_router())
        .push(crate::notifications::handlers::public_router())
        .push(authenticated_api())
}

/// `/v1` routes that need an authenticated, active user.
fn authenticated_api() -> Router {
    Router::new()
        .hoop(crate::auth::hoops::Authenticate)
        .hoop(crate::users::hoops::LoadUser)
        .push(crate::users::handlers::router())
        .push(crate::sessions::handlers::router())
        .push(crate::apikeys::handlers::router())
        .push(crate::oauthclients::handlers::router())
        .push(crate::directory::handlers::router())
        .push(crate::users::handlers::admin_router())
        .push(crate::privacy::handlers::router())
        .push(crate::invitations::handlers::router())
        .push(crate::settings::handlers::router())
        .push(crate::flags::handlers::router())
        .push(crate::notifications::handlers::router())
        .push(crate::webhooks::handlers::router())
        .push(crate::events::handlers::router())
        .push(crate::changes::handlers::router())
        .push(crate::notes::handlers::router())
        .push(crate::rbac::handlers::router())
        .push(crate::teams::handlers::router())
        .push(crate::audit::handlers::router())
        .push(crate::resources::handlers::router())
        .push(crate::resources::handlers::search_router())
        .push(crate::plugins::handlers::router())
}

/// All routes described by the OpenAPI document.
pub fn api_router() -> Router {
    Router::new()
        .push(tenant_api())
        .push(crate::flags::handlers::ofrep::router())
        .push(crate::tenancy::handlers::router())
        .push(crate::plugins::handlers::admin_router())
}

/// What the document says before its operations.
const API_DESCRIPTION: &str = "A multi-tenant API platform. Every `/v1` request names its tenant (`X-Tenant` header, or the \
Host subdomain) and authenticates with a bearer access token from the tenant's Keycloak realm \
(a user's, or an OAuth client's from the client-credentials grant) or an API key \
(`Authorization: Bearer ntk_…` or `X-Api-Key`). Errors are RFC 9457 problems \
(`application/problem+json`) with a stable `type`. Lists are cursor-paged \
(`limit`, `cursor` → `next_cursor`). Writes of versioned records take `If-Match`. \
Answers carry `RateLimit-Policy` / `RateLimit` (and `RateLimit-Limit/-Remaining/-Reset`) and, \
when refused, `Retry-After`. Send `NeoTenant-Version` to choose a dated API version \
(`GET /v1/api-versions`); answers echo the version used.";

/// One line per operation tag.
const TAGS: &[(&str, &str)] = &[
    (
        "users",
        "The caller and the tenant's users: profiles, avatars, activity, administration",
    ),
    ("sessions", "Sign-in sessions and their devices; revocation"),
    (
        "api keys",
        "Long-lived keys acting as their maker within scopes: own rate limit, credits, usage, pinned version",
    ),
    (
        "oauth clients",
        "OAuth2 client-credentials clients in the tenant's Keycloak realm",
    ),
    ("roles", "Roles, their permissions and assignments"),
    (
        "permissions",
        "The permission catalog and effective permissions",
    ),
    ("teams", "Teams, memberships, team roles and hierarchy"),
    (
        "resources",
        "Tenant-defined resource types and their records: versions, shares, links, search",
    ),
    ("notes", "Notes, the simplest tenant record"),
    (
        "plugins",
        "WebAssembly plugins: upload, install, configure, deliveries",
    ),
    (
        "invitations",
        "Invitations by mail, in bulk, with acceptance",
    ),
    ("settings", "Tenant settings, their versions and branding"),
    (
        "flags",
        "Feature flags, segments, environments and evaluation",
    ),
    ("ofrep", "OpenFeature Remote Evaluation Protocol"),
    (
        "notifications",
        "Notifications: sending, deliveries, inbox, preferences, templates, rules",
    ),
    (
        "webhooks",
        "Webhook endpoints (Standard Webhooks), their delivery log, retries and replays",
    ),
    (
        "events",
        "The tenant's event feed (CloudEvents) and its stream",
    ),
    (
        "changes",
        "The change feed for mirroring resources and users",
    ),
    (
        "audit",
        "The tamper-evident audit log: search, export, verification",
    ),
    ("api versions", "Dated API versions"),
    ("admin", "Platform administration: the plugin marketplace"),
    (
        "admin: tenants",
        "Platform administration: tenants, their lifecycle, identity and roles",
    ),
];

/// The OpenAPI 3.1 document generated from the handlers.
pub fn openapi() -> OpenApi {
    let mut doc = document();
    for item in doc.paths.values_mut() {
        for op in item.operations.values_mut() {
            op.securities.get_or_insert_with(Vec::new);
            // Every JSON body passes the one extractor (`extract::JsonBody`), which can answer
            // these whatever the handler lists: malformed JSON, too large, not JSON, invalid.
            let takes_json = op
                .request_body
                .as_ref()
                .is_some_and(|b| b.contents.contains_key("application/json"));
            if takes_json {
                for status in ["400", "413", "415", "422"] {
                    op.responses.entry(status.to_string()).or_insert_with(|| {
                        salvo::oapi::RefOr::Ref(salvo::oapi::schema::Ref::from_response_name(
                            format!("Problem{status}"),
                        ))
                    });
                }
            }
        }
    }
    doc
}

fn document() -> OpenApi {
    use salvo::oapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
    OpenApi::with_info(
        salvo::oapi::Info::new("NeoTenantApi", env!("CARGO_PKG_VERSION"))
            .description(API_DESCRIPTION),
    )
    .openapi_version(salvo::oapi::OpenApiVersion::Version3_1)
    .add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            Http::new(HttpAuthScheme::Bearer)
                .bearer_format("JWT or ntk_ API key")
                .description(
                    "An access token from the tenant's Keycloak realm (a user's or an OAuth \
                     client's), or an API key `ntk_…`",
                ),
        ),
    )
    .add_security_scheme(
        "apiKey",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-Api-Key",
            "An API key `ntk_…` (the same keys the bearer scheme accepts)",
        ))),
    )
    .merge_router(&api_router())
    // Authenticated unless an operation says otherwise: those without credentials (sign-in,
    // invitation and unsubscribe links, the version list) are marked public with `[]`.
    .security(
        ["bearer", "apiKey"]
            .map(|s| salvo::oapi::SecurityRequirement::new(s, Vec::<String>::new())),
    )
    .tags(
        TAGS.iter()
            .map(|(name, description)| salvo::oapi::Tag::new(*name).description(*description)),
    )
}

/// The whole service: `provide` (from `app`) puts each feature's state in the depot.
pub fn service(ops: Arc<Ops>, provide: extract::Provide) -> Service {
    let doc = openapi();
    let router = Router::new()
        .push(Router::with_path("healthz").get(healthz))
        .push(Router::with_path("readyz").get(readyz))
        .push(Router::with_path("metrics").get(metrics))
        .push(Router::with_path(".well-known/jwks.json").get(crate::account::handlers::jwks))
        .push(doc.into_router("openapi.json"))
        .push(
            Scalar::new("/openapi.json")
                .title("NeoTenantApi")
                .lib_url("/assets/scalar/standalone.js")
                .into_router("docs"),
        )
        .push(Router::with_path("assets/scalar/standalone.js").get(ScalarScript::load(&ops.config)))
        .push(api_router());
    // Service-level hoops run for every request, including unmatched routes and 405s.
    Service::new(router)
        .hoop(middleware::Observe {
            config: ops.config.clone(),
            metrics: ops.metrics.clone(),
        })
        .hoop(provide.with(ops))
        .hoop(CatchPanic::new())
        .catcher(Catcher::default().hoop(catcher::ProblemCatcher))
}

/// Liveness: the process is up and serving.
#[handler]
async fn healthz(res: &mut Response) {
    res.render(Json(serde_json::json!({ "status": "ok" })));
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    checks: std::collections::BTreeMap<&'static str, String>,
}

/// Readiness: whether this instance can serve. Only PostgreSQL is required — without it no
/// request can be answered — so only its failure answers 503. Redis is checked and reported
/// (`"status": "degraded"`, `checks.redis`, `neotenant_dependency_up{dependency="redis"}`) but
/// never fails readiness: without it rate limits, caches and broadcasts degrade as documented
/// while requests are served, and failing every instance's readiness at once would turn that
/// into an outage behind a load balancer. Each check has 2 s.
#[handler]
async fn readyz(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let state = match extract::dep::<Ops>(depot) {
        Ok(state) => state,
        Err(e) => return e.render(req, depot, res),
    };
    let timeout = Duration::from_secs(2);
    let pg = crate::db::ping(&state.registry);
    let redis = crate::pubsub::ping(&state.redis);
    let (pg, redis) = tokio::join!(
        tokio::time::timeout(timeout, pg),
        tokio::time::timeout(timeout, redis)
    );
    let mut checks = std::collections::BTreeMap::new();
    let mut ready = true;
    let mut degraded = false;
    for (name, required, outcome) in [("postgres", true, pg), ("redis", false, redis)] {
        let text = match outcome {
            Ok(Ok(())) => "ok",
            Ok(Err(e)) => {
                tracing::warn!(dependency = name, error = %e, "readiness check failed");
                "unreachable"
            }
            Err(_) => "timeout",
        };
        let up = text == "ok";
        state
            .metrics
            .dependency_up
            .with_label_values(&[name])
            .set(i64::from(up));
        if required {
            ready &= up;
        } else {
            degraded |= !up;
        }
        checks.insert(name, text.to_string());
    }
    if ready {
        res.render(Json(Readiness {
            status: if degraded { "degraded" } else { "ready" },
            checks,
        }));
    } else {
        let detail = checks
            .iter()
            .filter(|(_, v)| *v != "ok")
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        ApiError::new(ErrorCode::Unavailable, format!("not ready ({detail})"))
            .render(req, depot, res);
    }
}

/// Whether a request may read `/metrics`: with `server.metrics_token` set, it must carry it as
/// a bearer token (compared in constant time); without one, only loopback clients may (the
/// metrics' labels name tenants' databases and routes).
fn may_read_metrics(req: &Request, token: &str) -> bool {
    if token.is_empty() {
        return req
            .remote_addr()
            .clone()
            .into_std()
            .is_some_and(|a| a.ip().is_loopback());
    }
    let presented = req
        .headers()
        .get(salvo::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    use sha2::Digest;
    crate::crypto::ct_eq(
        &sha2::Sha256::digest(presented.trim().as_bytes()),
        &sha2::Sha256::digest(token.as_bytes()),
    )
}

/// Prometheus text exposition.
#[handler]
async fn metrics(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let Ok(state) = extract::dep::<Ops>(depot) else {
        return;
    };
    if !may_read_metrics(req, state.config.server.metrics_token.expose()) {
        res.headers_mut().insert(
            salvo::http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"neotenant-metrics\""),
        );
        return ApiError::new(
            ErrorCode::Unauthorized,
            "metrics need the token in server.metrics_token, or a loopback client",
        )
        .render(req, depot, res);
    }
    let mut pools = state.pools.stats();
    let registry = state.registry.state();
    pools.push(crate::db::PoolStats {
        database: state.config.database.registry_database.clone(),
        connections: registry.connections,
        idle: registry.idle_connections,
        max_size: state.config.database.pool_max_size,
    });
    let text = state.metrics.render(&pools);
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res.body(text);
}

/// The Scalar API-reference script, served from the local asset folder so `/docs` works
/// without reaching a CDN.
struct ScalarScript(Option<bytes::Bytes>);

impl ScalarScript {
    fn load(config: &Config) -> Self {
        let path = config.server.assets_dir.join("scalar/standalone.js");
        match std::fs::read(&path) {
            Ok(bytes) => Self(Some(bytes.into())),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "Scalar script missing: /docs will not render (run `make up`)");
                Self(None)
            }
        }
    }
}

#[async_trait]
impl Handler for ScalarScript {
    async fn handle(
        &self,
        req: &mut Request,
        depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        match &self.0 {
            Some(bytes) => {
                res.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/javascript; charset=utf-8"),
                );
                res.headers_mut().insert(
                    CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=86400"),
                );
                res.body(bytes.clone());
            }
            None => ApiError::new(
                ErrorCode::RouteNotFound,
                "the Scalar script is not installed",
            )
            .render(req, depot, res),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_operation_tag_is_described_and_every_description_used() {
        let doc = serde_json::to_value(super::openapi()).unwrap();
        let described: std::collections::BTreeSet<&str> =
            super::TAGS.iter().map(|(name, _)| *name).collect();
        let mut used = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for tag in op["tags"].as_array().into_iter().flatten() {
                    let tag = tag.as_str().unwrap().to_string();
                    assert!(described.contains(tag.as_str()), "{method} {path}: {tag}");
                    used.insert(tag);
                }
            }
        }
        for name in described {
            assert!(used.contains(name), "the tag {name} has no operation");
        }
        assert!(
            doc["info"]["description"]
                .as_str()
                .unwrap()
                .contains("RFC 9457")
        );
        assert!(doc["components"]["securitySchemes"]["apiKey"].is_object());
        assert_eq!(doc["security"].as_array().unwrap().len(), 2);
        // Public operations say so; authenticated ones name both schemes.
        assert_eq!(
            doc["paths"]["/v1/api-versions"]["get"]["security"],
            serde_json::json!([])
        );
        assert_eq!(
            doc["paths"]["/v1/changes"]["get"]["security"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
