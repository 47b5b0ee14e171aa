//! The HTTP edge of RBAC: building the [`Caller`] of a request (effective permissions, API-key
//! scopes, audit actor) and the [`Can<P>`] extractor every endpoint states its access with.
//!
//! Holds no rules: permissions are resolved by `service::effective` and checked by
//! `Caller::require`.

use std::marker::PhantomData;

use salvo::extract::{Extractible, Metadata};
use salvo::oapi::{Components, EndpointArgRegister, Operation};
use salvo::prelude::*;

use super::perm::Perm;
use super::{Caller, Can, RbacState, Requirement, service};
use crate::audit::Actor;
use crate::auth::identity::CurrentUser;
use crate::error::ApiError;
use crate::http::extract::dep;
use crate::ids::RequestId;
use crate::tenancy::resolve::CurrentTenant;

/// The audit actor of a tenant request: who, from where, in which tenant.
fn actor_of(state: &RbacState, req: &Request, depot: &Depot, id: String, api_key: bool) -> Actor {
    let trust = state.config.rate_limit.trust_forwarded_for;
    Actor {
        kind: if api_key { "api_key" } else { "user" },
        id: Some(id),
        request_id: depot.get_typed::<RequestId>().ok().map(|r| r.0.clone()),
        ip: Some(crate::auth::hoops::client_ip(req, trust).to_string()),
        user_agent: req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(300).collect()),
        tenant: depot
            .get_typed::<CurrentTenant>()
            .ok()
            .map(|t| (t.0.tenant.id.0, t.0.db.clone())),
        recent: Some(state.audit_recent.clone()),
    }
}

impl<'ex> Extractible<'ex> for Caller {
    fn metadata() -> &'static Metadata {
        static METADATA: Metadata = Metadata::new("Caller");
        &METADATA
    }

    #[allow(refining_impl_trait)]
    async fn extract(req: &'ex mut Request, depot: &'ex mut Depot) -> Result<Self, ApiError> {
        if let Ok(caller) = depot.get_typed::<Caller>() {
            return Ok(caller.clone());
        }
        let state = dep::<RbacState>(depot)?;
        let (Ok(tenant), Ok(user)) = (
            depot.get_typed::<CurrentTenant>().cloned(),
            depot.get_typed::<CurrentUser>().cloned(),
        ) else {
            return Err(ApiError::internal(
                "handler mounted without ResolveTenant, Authenticate and LoadUser",
            ));
        };
        let idp_roles = service::idp_roles(&tenant.0, &user.principal.0);
        let effective = service::effective(&state, &tenant.0, user.user.id.0, idp_roles).await?;
        let key_scopes = user.principal.0.key_scopes.as_ref().map(|scopes| {
            scopes
                .iter()
                .filter_map(|s| s.parse::<Perm>().ok())
                .collect::<Vec<_>>()
                .into()
        });
        let actor = actor_of(
            &state,
            req,
            depot,
            user.user.id.to_string(),
            key_scopes.is_some(),
        );
        let caller = Caller {
            user,
            tenant,
            effective,
            key_scopes,
            actor,
        };
        depot.insert_typed(caller.clone());
        Ok(caller)
    }
}

impl EndpointArgRegister for Caller {
    fn register(components: &mut Components, operation: &mut Operation, arg: &str) {
        CurrentUser::register(components, operation, arg);
    }
}

impl<'ex, P: Requirement> Extractible<'ex> for Can<P> {
    fn metadata() -> &'static Metadata {
        static METADATA: Metadata = Metadata::new("Can");
        &METADATA
    }

    #[allow(refining_impl_trait)]
    async fn extract(req: &'ex mut Request, depot: &'ex mut Depot) -> Result<Self, ApiError> {
        let caller = Caller::extract(req, depot).await?;
        caller.require(P::RESOURCE, P::ACTION, P::SCOPE)?;
        Ok(Can {
            caller,
            _need: PhantomData,
        })
    }
}

impl<P: Requirement> EndpointArgRegister for Can<P> {
    fn register(components: &mut Components, operation: &mut Operation, arg: &str) {
        Caller::register(components, operation, arg);
        let note = format!(
            "Requires the permission `{}.{}.{}`.",
            P::RESOURCE,
            P::ACTION,
            P::SCOPE.as_str()
        );
        operation.description = Some(match operation.description.take() {
            Some(d) if !d.is_empty() => format!("{d}\n\n{note}"),
            _ => note,
        });
    }
}
