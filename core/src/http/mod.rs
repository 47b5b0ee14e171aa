//! The HTTP surface: router assembly, operational endpoints (`/healthz`, `/readyz`,
//! `/metrics`, `/openapi.json`, `/docs`) and the conventions every feature endpoint uses.
//!
//! Request path: `Observe` (state, request id, span, body limit, metrics, access log) →
//! `CatchPanic` → routing → for `/v1/*`, `ResolveTenant` → the feature handler. Every error
//! leaves through `error::ApiError` or the `ProblemCatcher`. Features add routers here and
//! never install service-wide hoops of their own.

pub mod catcher;
pub mod extract;
pub mod middleware;
pub mod reply;

use std::sync::Arc;
use std::time::Duration;

use salvo::catch_panic::CatchPanic;
use salvo::catcher::Catcher;
use salvo::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use salvo::oapi::{OpenApi, scalar::Scalar};
use salvo::prelude::*;
use serde::Serialize;

use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};

/// Everything under `/v1`: tenant-scoped feature routers.
fn tenant_api() -> Router {
    Router::with_path("v1")
        .hoop(crate::tenancy::resolve::ResolveTenant)
        // Token refresh needs the tenant but no access token.
        .push(Router::with_path("auth/refresh").post(crate::sessions::handlers::refresh))
        .push(Router::with_path("auth/login").post(crate::sessions::handlers::local_login))
        .push(
            Router::with_path("auth/password-reset")
                .post(crate::sessions::handlers::password_reset),
        )
        .push(authenticated_api())
}

/// `/v1` routes that need an authenticated, active user.
fn authenticated_api() -> Router {
    Router::new()
        .hoop(crate::auth::Authenticate)
        .hoop(crate::users::LoadUser)
        .push(crate::users::handlers::router())
        .push(crate::sessions::handlers::router())
        .push(crate::apikeys::handlers::router())
        .push(crate::users::admin::router())
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
        .push(crate::tenancy::handlers::router())
        .push(crate::plugins::handlers::admin_router())
}

/// The OpenAPI 3.1 document generated from the handlers.
pub fn openapi() -> OpenApi {
    OpenApi::new("NeoTenantApi", env!("CARGO_PKG_VERSION"))
        .openapi_version(salvo::oapi::OpenApiVersion::Version3_1)
        .add_security_scheme(
            "bearer",
            salvo::oapi::security::SecurityScheme::Http(
                salvo::oapi::security::Http::new(salvo::oapi::security::HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description("An access token from the tenant's Keycloak realm"),
            ),
        )
        .merge_router(&api_router())
}

/// The whole service.
pub fn service(state: Arc<AppState>) -> Service {
    let doc = openapi();
    let router = Router::new()
        .push(Router::with_path("healthz").get(healthz))
        .push(Router::with_path("readyz").get(readyz))
        .push(Router::with_path("metrics").get(metrics))
        .push(Router::with_path(".well-known/jwks.json").get(crate::sessions::handlers::jwks))
        .push(doc.into_router("openapi.json"))
        .push(
            Scalar::new("/openapi.json")
                .title("NeoTenantApi")
                .lib_url("/assets/scalar/standalone.js")
                .into_router("docs"),
        )
        .push(Router::with_path("assets/scalar/standalone.js").get(ScalarScript::load(&state)))
        .push(api_router());
    // Service-level hoops run for every request, including unmatched routes and 405s.
    Service::new(router)
        .hoop(middleware::Observe { state })
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

/// Readiness: PostgreSQL (registry) and Redis answer within 2 s each.
#[handler]
async fn readyz(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let Ok(state) = depot.get_typed::<Arc<AppState>>().cloned() else {
        return;
    };
    let timeout = Duration::from_secs(2);
    let pg = async {
        let mut conn = state.registry.get().await.map_err(|e| e.to_string())?;
        diesel_async::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), &mut *conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let redis = async {
        let mut conn = state.redis.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let (pg, redis) = tokio::join!(
        tokio::time::timeout(timeout, pg),
        tokio::time::timeout(timeout, redis)
    );
    let mut checks = std::collections::BTreeMap::new();
    let mut ready = true;
    for (name, outcome) in [("postgres", pg), ("redis", redis)] {
        let text = match outcome {
            Ok(Ok(())) => "ok".to_string(),
            Ok(Err(e)) => {
                tracing::warn!(dependency = name, error = %e, "readiness check failed");
                "unreachable".to_string()
            }
            Err(_) => "timeout".to_string(),
        };
        ready &= text == "ok";
        checks.insert(name, text);
    }
    if ready {
        res.render(Json(Readiness {
            status: "ready",
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

/// Prometheus text exposition.
#[handler]
async fn metrics(depot: &mut Depot, res: &mut Response) {
    let Ok(state) = depot.get_typed::<Arc<AppState>>() else {
        return;
    };
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
    fn load(state: &AppState) -> Self {
        let path = state.config.server.assets_dir.join("scalar/standalone.js");
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
