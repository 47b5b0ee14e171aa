//! The HTTP edge of tenancy: the `ResolveTenant` hoop every `/v1` route runs first, and the
//! [`CurrentTenant`] extractor.
//!
//! Reads the Host header and `X-Tenant`, resolves through [`resolve::resolve`], and puts the
//! active tenant in the depot or answers with a problem. Holds no rules of its own.

use salvo::oapi::{self, Components, EndpointArgRegister, Operation, Parameter, ParameterIn};
use salvo::prelude::*;

use super::TenancyState;
use super::resolve::{self, CurrentTenant, X_TENANT, requested_slug};
use crate::http::extract::dep;
use crate::http::problem::Render;

/// Hoop for tenant-scoped routers: resolves the tenant or answers with a problem.
pub struct ResolveTenant;

#[async_trait]
impl Handler for ResolveTenant {
    async fn handle(
        &self,
        req: &mut Request,
        depot: &mut Depot,
        res: &mut Response,
        ctrl: &mut FlowCtrl,
    ) {
        let state = match dep::<TenancyState>(depot) {
            Ok(state) => state,
            Err(e) => {
                e.render(req, depot, res);
                ctrl.skip_rest();
                return;
            }
        };
        let host = req
            .headers()
            .get(salvo::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        let header = req.headers().get(X_TENANT).and_then(|v| v.to_str().ok());
        let server = &state.config.server;
        let outcome = match requested_slug(
            host,
            header,
            &server.base_domain,
            server.allow_tenant_header,
        ) {
            Ok(slug) => resolve::resolve(&state, slug).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(tenant) => {
                tracing::Span::current().record("tenant", tenant.tenant.slug.as_str());
                depot.insert_typed(CurrentTenant(tenant));
            }
            Err(e) => {
                e.render(req, depot, res);
                ctrl.skip_rest();
            }
        }
    }
}

crate::depot_extractor!(CurrentTenant, "ResolveTenant");

impl EndpointArgRegister for CurrentTenant {
    fn register(_components: &mut Components, operation: &mut Operation, _arg: &str) {
        operation.parameters.insert(
            Parameter::new("X-Tenant")
                .location(ParameterIn::Header)
                .required(oapi::Required::False)
                .description("Tenant slug, when the tenant is not addressed by the Host subdomain.")
                .schema(oapi::Object::new().schema_type(oapi::schema::BasicType::String)),
        );
    }
}
