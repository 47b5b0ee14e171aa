//! Which dated API version a `/v1` request is served with, and its echo.
//!
//! The `Versioning` hoop (outside the tenant's routes) reads `NeoTenant-Version`: an unknown
//! version is 400 `unknown-api-version` naming the supported ones; a known one is put in the
//! depot (marked as the caller's explicit choice), else the baseline is. `Authenticate`
//! replaces the baseline with the version a machine client is pinned to. After the handler,
//! the hoop echoes the version used in the answer's `NeoTenant-Version`. Handlers take
//! [`ApiVersion`] as an argument and ask `at_least(date)`. Never decides what a version
//! changes: that is the feature's, listed in `apiversion::CHANGES`.

use salvo::http::HeaderValue;
use salvo::oapi::{self, Components, EndpointArgRegister, Operation, Parameter, ParameterIn};
use salvo::prelude::*;

use crate::apiversion::{ApiVersion, CHANGES, HEADER, VERSIONS};
use crate::error::{ApiError, ErrorCode};
use crate::http::problem::Render;
use crate::http::reply::Reply;

/// Depot key set when the request named its version (a pinned default must not replace it).
pub const FROM_HEADER: &str = "neotenant.version.from-header";

/// The hoop for every `/v1` route.
pub struct Versioning;

#[async_trait]
impl Handler for Versioning {
    async fn handle(
        &self,
        req: &mut Request,
        depot: &mut Depot,
        res: &mut Response,
        ctrl: &mut FlowCtrl,
    ) {
        let asked = req
            .headers()
            .get(HEADER)
            .map(|v| v.to_str().ok().and_then(ApiVersion::parse));
        match asked {
            Some(None) => {
                ApiError::new(
                    ErrorCode::UnknownApiVersion,
                    format!(
                        "`NeoTenant-Version` must be one of {} (see GET /v1/api-versions)",
                        VERSIONS.join(", ")
                    ),
                )
                .render(req, depot, res);
                ctrl.skip_rest();
                return;
            }
            Some(Some(v)) => {
                depot.insert(FROM_HEADER, true);
                depot.insert_typed(v);
            }
            None => {
                depot.insert_typed(ApiVersion::BASELINE);
            }
        }
        ctrl.call_next(req, depot, res).await;
        let used = depot
            .get_typed::<ApiVersion>()
            .copied()
            .unwrap_or(ApiVersion::BASELINE);
        res.headers_mut()
            .insert(HEADER, HeaderValue::from_static(used.as_str()));
    }
}

impl<'ex> salvo::extract::Extractible<'ex> for ApiVersion {
    fn metadata() -> &'static salvo::extract::Metadata {
        static METADATA: salvo::extract::Metadata = salvo::extract::Metadata::new("ApiVersion");
        &METADATA
    }

    #[allow(refining_impl_trait)]
    async fn extract(_req: &'ex mut Request, depot: &'ex mut Depot) -> Result<Self, ApiError> {
        Ok(depot
            .get_typed::<ApiVersion>()
            .copied()
            .unwrap_or(ApiVersion::BASELINE))
    }
}

impl EndpointArgRegister for ApiVersion {
    fn register(_components: &mut Components, operation: &mut Operation, _arg: &str) {
        operation.parameters.insert(
            Parameter::new("NeoTenant-Version")
                .location(ParameterIn::Header)
                .required(oapi::Required::False)
                .description(format!(
                    "The API version ({}); absent: the API key's pinned version, else {}. \
                     This operation's answer differs between versions.",
                    VERSIONS.join(", "),
                    ApiVersion::BASELINE
                ))
                .schema(
                    oapi::Object::new()
                        .schema_type(oapi::schema::BasicType::String)
                        .enum_values(VERSIONS.iter().copied()),
                ),
        );
    }
}

/// One supported version and what it changed.
#[derive(Debug, serde::Serialize, salvo::oapi::ToSchema)]
#[salvo(schema(name = "neotenant.http.ApiVersionInfo"))]
pub struct VersionInfo {
    /// `YYYY-MM-DD`; send it in `NeoTenant-Version`.
    pub version: &'static str,
    pub changes: &'static str,
}

/// The supported API versions, oldest first, with what each changed; the baseline is what a
/// request without `NeoTenant-Version` and without a pinned API key gets.
#[salvo::oapi::endpoint(
    operation_id = "neotenant.http.api_versions",
    tags("api versions"),
    status_codes(200)
)]
pub async fn api_versions() -> Reply<Vec<VersionInfo>> {
    Reply::ok(
        CHANGES
            .iter()
            .map(|(version, changes)| VersionInfo { version, changes })
            .collect(),
    )
}
