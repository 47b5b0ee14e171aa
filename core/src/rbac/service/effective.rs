//! Who may do what: a user's effective permissions from the L1 and L2 caches or the database,
//! the identity-provider roles that count for a request, batch checks, and a user's
//! permissions with their explanations. Changes nothing; never runs SQL itself.

use std::sync::Arc;

use sha2::Digest;
use uuid::Uuid;

use super::catalog::load_catalog;
use crate::auth::token::Principal;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::ids::UserId;
use crate::rbac::perm::{Effective, Perm, Scope};
use crate::rbac::repo;
use crate::rbac::{Caller, CheckItem, CheckOutcome, Explanation, RbacState, UserPermissions};
use crate::tenancy::cache::ResolvedTenant;
use crate::tenancy::model::IdentityMode;

/// The identity-provider roles that count for this request: only a tenant's own realm speaks
/// for it (an organization's realm is shared by the region's tenants).
pub fn idp_roles<'a>(tenant: &ResolvedTenant, principal: &'a Principal) -> &'a [String] {
    if tenant.org_alias.is_none()
        && tenant.tenant.identity.mode == IdentityMode::Realm
        && principal.key_scopes.is_none()
    {
        &principal.roles
    } else {
        &[]
    }
}

fn idp_key(roles: &[String]) -> u64 {
    if roles.is_empty() {
        return 0;
    }
    let mut sorted: Vec<&String> = roles.iter().collect();
    sorted.sort();
    let mut h = sha2::Sha256::new();
    for r in sorted {
        h.update(r.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// `user`'s effective permissions: from L1, else L2, else the database (then cached).
pub async fn effective(
    state: &RbacState,
    tenant: &ResolvedTenant,
    user: Uuid,
    idp_roles: &[String],
) -> ApiResult<Arc<Effective>> {
    let tid = tenant.tenant.id;
    let idp = idp_key(idp_roles);
    let cache = &state.perms;
    if let Some(hit) = cache.l1(tid, user, idp) {
        state.metrics.permission_l1.inc();
        return Ok(hit);
    }
    let generation = match cache.l2(tid, user, idp).await {
        Ok((generation, Some(found))) => {
            state.metrics.permission_l2.inc();
            let found = Arc::new(found);
            cache.put_l1(tid, user, idp, generation, found.clone());
            return Ok(found);
        }
        Ok((generation, None)) => Some(generation),
        Err(e) => {
            cache.warn_degraded(&e);
            None
        }
    };
    state.metrics.permission_database.inc();
    let computed = Arc::new(compute(&tenant.db, user, idp_roles).await?);
    if let Some(generation) = generation {
        if let Err(e) = cache.put_l2(tid, user, idp, generation, &computed).await {
            cache.warn_degraded(&e);
        }
        cache.put_l1(tid, user, idp, generation, computed.clone());
    }
    Ok(computed)
}

/// Resolves from the database, bypassing every cache.
pub async fn compute(db: &TenantDb, user: Uuid, idp_roles: &[String]) -> ApiResult<Effective> {
    let inputs = db
        .transaction(async |tx| {
            Ok::<_, ApiError>(repo::load_inputs(tx.conn(), user, idp_roles).await?)
        })
        .await?;
    Ok(Effective::resolve(&inputs))
}

/// Another user's effective permissions (through the caches), refusing unknown users.
async fn effective_of(
    state: &RbacState,
    caller: &Caller,
    user: UserId,
) -> ApiResult<Arc<Effective>> {
    if user == caller.user.user.id {
        return Ok(caller.effective.clone());
    }
    caller.require("permissions", "read", Scope::Tenant)?;
    let exists = caller
        .db()
        .transaction(async |tx| Ok::<_, ApiError>(repo::user_exists(tx.conn(), user.0).await?))
        .await?;
    if !exists {
        return Err(ApiError::not_found("user"));
    }
    // Identity-provider roles are known only from the user's own token.
    effective(state, caller.tenant(), user.0, &[]).await
}

pub async fn check(
    state: &RbacState,
    caller: &Caller,
    items: &[CheckItem],
) -> ApiResult<Vec<CheckOutcome>> {
    if items.is_empty() || items.len() > 100 {
        return Err(ApiError::validation(vec![FieldError {
            pointer: "/checks".into(),
            message: "must hold 1-100 checks".into(),
        }]));
    }
    let mut errors = Vec::new();
    let parsed: Vec<Option<Perm>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| match item.permission.parse::<Perm>() {
            Ok(p) if p.resource != "*" && p.action != "*" => Some(p),
            _ => {
                errors.push(FieldError {
                    pointer: format!("/checks/{i}/permission"),
                    message: "must be a concrete resource.action.scope".into(),
                });
                None
            }
        })
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut out = Vec::with_capacity(items.len());
    for (item, perm) in items.iter().zip(parsed) {
        let perm = perm.expect("validated");
        let user = item.user_id.unwrap_or(caller.user.user.id);
        let allowed = if user == caller.user.user.id {
            caller.allows(&perm.resource, &perm.action, perm.scope)
        } else {
            effective_of(state, caller, user).await?.allows_perm(&perm)
        };
        out.push(CheckOutcome {
            permission: item.permission.clone(),
            user_id: user,
            allowed,
        });
    }
    Ok(out)
}

pub async fn permissions_of(
    state: &RbacState,
    caller: &Caller,
    user: UserId,
    explain: bool,
) -> ApiResult<UserPermissions> {
    let eff = effective_of(state, caller, user).await?;
    let cat = load_catalog(caller.db()).await?;
    let explain = explain.then(|| {
        eff.sources
            .iter()
            .flat_map(|(pattern, sources)| {
                [true, false].into_iter().filter_map(move |allow| {
                    let list: Vec<serde_json::Value> = sources
                        .iter()
                        .filter(|(a, _)| *a == allow)
                        .map(|(_, s)| serde_json::to_value(s).unwrap_or_default())
                        .collect();
                    (!list.is_empty()).then(|| Explanation {
                        pattern: pattern.clone(),
                        effect: if allow { "allow" } else { "deny" }.into(),
                        sources: list,
                    })
                })
            })
            .collect()
    });
    Ok(UserPermissions {
        user_id: user,
        roles: eff.roles.iter().cloned().collect(),
        permissions: eff.expand(&cat).iter().map(|p| p.to_string()).collect(),
        explain,
    })
}
