//! Installations in a tenant: install, change (upgrade, downgrade, rollback, grants,
//! settings, secrets, failure modes, subscriptions), enable, disable and uninstall, each one
//! tenant transaction with its audit entry and outbox event (and, for a resource-type plugin,
//! its type's change); and reading installations, their failures and dead letters.

use std::collections::BTreeMap;

use diesel_async::AsyncPgConnection;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{breaker_key, field, loaded, type_input};
use crate::audit::{self, Actor, Change};
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError, found};
use crate::ids::PluginId;
use crate::plugins::manifest::{self, Manifest, check_grants};
use crate::plugins::repo::{self, InstallRow, PluginRow, VersionRow};
use crate::plugins::{
    DeadLetter, Delivery, Failure, Grants, Install, InstallChange, InstallInput, PluginsState,
};
use crate::rbac::Caller;
use crate::resources::ResourcesState;
use crate::resources::service::Ctx as ResourceCtx;

pub fn install_view(r: InstallRow) -> Install {
    let secret_keys = crate::plugins::secrets::names(&r.secrets);
    let delivery = (r.kind == "integration").then(|| Delivery {
        attempts: r.attempts,
        next_attempt_at: r.next_attempt_at,
        last_error: r.last_error.clone(),
    });
    Install {
        plugin_id: PluginId(r.plugin_id),
        source: r.source,
        kind: r.kind,
        version: r.version,
        hash: r.hash,
        previous_version: r.previous_version,
        grants: serde_json::from_value(r.grants).unwrap_or_default(),
        settings: serde_json::from_value(r.settings).unwrap_or_default(),
        secret_keys,
        failure_modes: serde_json::from_value(r.failure_modes).unwrap_or_default(),
        events: r.events,
        type_name: r.type_name,
        enabled: r.enabled,
        disabled_reason: r.disabled_reason,
        delivery,
        installed_at: r.installed_at,
        updated_at: r.updated_at,
        name: r.name,
    }
}

fn check_settings(pointer: &str, s: &BTreeMap<String, String>, errors: &mut Vec<FieldError>) {
    if s.len() > 50 {
        errors.push(field(pointer, "at most 50 entries"));
    }
    for (k, v) in s {
        if k.is_empty() || k.len() > 100 {
            errors.push(field(&format!("{pointer}/{k}"), "keys are 1-100 bytes"));
        }
        if v.len() > 4096 {
            errors.push(field(
                &format!("{pointer}/{k}"),
                "values are at most 4096 bytes",
            ));
        }
    }
}

fn check_events(m: &Manifest, events: &[String], errors: &mut Vec<FieldError>) {
    for (i, e) in events.iter().enumerate() {
        let p = format!("/events/{i}");
        if !manifest::is_event_pattern(e) {
            errors.push(field(&p, "must be a kind, a prefix ending in .* or *"));
        } else if !m.events.iter().any(|a| manifest::matches(a, e)) {
            errors.push(field(&p, "the plugin does not subscribe to this"));
        }
    }
}

/// The plugin row and the version an installation asks for (the newest when `version` is
/// absent).
async fn find_version(
    state: &PluginsState,
    owner: Option<Uuid>,
    plugin_id: Option<Uuid>,
    name: &str,
    version: Option<&str>,
) -> ApiResult<(PluginRow, VersionRow, Manifest)> {
    let mut conn = state.registry.get().await?;
    if !manifest::is_name(name) {
        return Err(ApiError::not_found("plugin"));
    }
    let p = found(repo::find_plugin(&mut conn, owner, name).await?, "plugin")?;
    if plugin_id.is_some_and(|id| id != p.id) {
        return Err(ApiError::not_found("plugin"));
    }
    let v = match version {
        Some(v) => found(repo::version(&mut conn, p.id, v).await?, "plugin version")?,
        None => found(
            repo::versions(&mut conn, &[p.id]).await?.into_iter().next(),
            "plugin version",
        )?,
    };
    let m: Manifest = serde_json::from_value(v.manifest.clone()).map_err(ApiError::internal)?;
    Ok((p, v, m))
}

fn change_entry(action: &'static str, r: &InstallRow, extra: Value) -> Change<'static> {
    let mut data = json!({
        "version": r.version, "hash": r.hash, "kind": r.kind, "source": r.source,
        "grants": r.grants, "settings": r.settings, "failure_modes": r.failure_modes,
        "events": r.events, "enabled": r.enabled,
    });
    if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    Change {
        action,
        target_type: "plugin",
        target_id: Some(r.name.clone()),
        data,
    }
}

pub(super) async fn record(
    conn: &mut AsyncPgConnection,
    actor: &Actor,
    action: &'static str,
    r: &InstallRow,
    extra: Value,
) -> ApiResult<()> {
    audit::record(conn, actor, change_entry(action, r, extra)).await?;
    crate::outbox::emit(
        conn,
        action,
        "plugin",
        &r.name,
        json!({"version": r.version, "enabled": r.enabled}),
    )
    .await?;
    Ok(())
}

async fn tenant_rules(
    state: &PluginsState,
    caller: &Caller,
) -> ApiResult<crate::settings::IntegrationSettings> {
    let settings = crate::settings::service::effective(&state.settings, &caller.tenant.0).await?;
    Ok(settings.integrations.clone())
}

/// HTTP grants to hosts the tenant's settings (`integrations.allowed_hosts`) do not list.
fn unlisted_hosts(
    grants: &Grants,
    rules: &crate::settings::IntegrationSettings,
    errors: &mut Vec<FieldError>,
) {
    for (i, g) in grants.http.iter().enumerate() {
        if !rules.host_allowed(crate::netguard::grant_parts(g).0) {
            errors.push(field(
                &format!("/grants/http/{i}"),
                "the tenant's settings (integrations.allowed_hosts) do not list this host",
            ));
        }
    }
}

pub async fn install(
    state: &PluginsState,
    resources: &ResourcesState,
    caller: &Caller,
    input: &InstallInput,
) -> ApiResult<Install> {
    let tenant = caller.tenant_id().0;
    let owner = match input.source.as_str() {
        "tenant" => Some(tenant),
        "marketplace" => None,
        _ => {
            return Err(ApiError::validation(vec![field(
                "/source",
                "must be tenant or marketplace",
            )]));
        }
    };
    let (p, v, m) =
        find_version(state, owner, None, &input.plugin, input.version.as_deref()).await?;
    let allow = crate::netguard::AllowList::parse(&state.config.webhooks.allow_hosts);
    let mut errors = check_grants(&m, &input.grants, &allow);
    unlisted_hosts(
        &input.grants,
        &tenant_rules(state, caller).await?,
        &mut errors,
    );
    check_settings("/settings", &input.settings, &mut errors);
    check_settings("/secrets", &input.secrets, &mut errors);
    for k in input.settings.keys() {
        if input.secrets.contains_key(k) {
            errors.push(field(&format!("/secrets/{k}"), "also given as a setting"));
        }
    }
    let events = input.events.clone().unwrap_or_else(|| m.events.clone());
    if p.kind == "integration" {
        check_events(&m, &events, &mut errors);
    } else if input.events.is_some() {
        errors.push(field("/events", "only integrations subscribe to events"));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    loaded(state, &v.hash).await?;
    let row = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            if repo::install(conn, &p.name, false).await?.is_some() {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("`{}` is installed; change, upgrade or uninstall it", p.name),
                ));
            }
            let cursor = crate::outbox::head(conn).await?;
            let type_in = v.type_info.as_ref().map(type_input).transpose()?;
            let now = chrono::Utc::now();
            let row = InstallRow {
                name: p.name.clone(),
                plugin_id: p.id,
                source: input.source.clone(),
                kind: p.kind.clone(),
                version: v.version.clone(),
                hash: v.hash.clone(),
                previous_version: None,
                previous_hash: None,
                grants: serde_json::to_value(&input.grants).map_err(ApiError::internal)?,
                settings: serde_json::to_value(&input.settings).map_err(ApiError::internal)?,
                secrets: crate::plugins::secrets::seal(
                    &state.keyring,
                    tenant,
                    &p.name,
                    &input.secrets,
                ),
                failure_modes: serde_json::to_value(input.failure_modes)
                    .map_err(ApiError::internal)?,
                events: if p.kind == "integration" {
                    events.clone()
                } else {
                    vec![]
                },
                type_name: type_in.as_ref().map(|t| t.name.clone()),
                enabled: true,
                disabled_reason: None,
                cursor_txid: cursor.txid,
                cursor_seq: cursor.seq,
                attempts: 0,
                next_attempt_at: None,
                last_error: None,
                installed_at: now,
                updated_at: now,
            };
            repo::insert_install(conn, &row).await?;
            if let Some(t) = &type_in {
                let rctx = ResourceCtx {
                    state: resources,
                    caller,
                };
                crate::resources::service::create_type_in(&rctx, conn, t, Some(&row.name)).await?;
            }
            record(conn, &caller.actor, "plugin.installed", &row, json!({})).await?;
            Ok(row)
        })
        .await?;
    state
        .plugins
        .breaker
        .reset(&breaker_key(tenant, &row.name, &row.hash));
    Ok(install_view(row))
}

pub async fn installs(caller: &Caller) -> ApiResult<Vec<Install>> {
    let rows = caller
        .db()
        .transaction(async |tx| Ok::<_, ApiError>(repo::installs(tx.conn()).await?))
        .await?;
    Ok(rows.into_iter().map(install_view).collect())
}

/// An installation (404 if there is none), row-locked for the transaction when `lock`.
async fn install_row(
    conn: &mut AsyncPgConnection,
    name: &str,
    lock: bool,
) -> ApiResult<InstallRow> {
    if !manifest::is_name(name) {
        return Err(ApiError::not_found("plugin installation"));
    }
    found(
        repo::install(conn, name, lock).await?,
        "plugin installation",
    )
}

pub async fn get_install(caller: &Caller, name: &str) -> ApiResult<Install> {
    let row = caller
        .db()
        .transaction(async |tx| install_row(tx.conn(), name, false).await)
        .await?;
    Ok(install_view(row))
}

/// Changes an installation: version (upgrade, downgrade or `rollback`), grants, settings,
/// secrets, failure modes, subscriptions.
pub async fn change(
    state: &PluginsState,
    resources: &ResourcesState,
    caller: &Caller,
    name: &str,
    input: &InstallChange,
    rollback: bool,
) -> ApiResult<Install> {
    let tenant = caller.tenant_id().0;
    let rules = tenant_rules(state, caller).await?;
    let row = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let old = install_row(conn, name, true).await?;
            let version = if rollback {
                Some(old.previous_version.clone().ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::Conflict,
                        "there is no earlier version to roll back to",
                    )
                })?)
            } else {
                input.version.clone()
            };
            let owner = (old.source == "tenant").then_some(tenant);
            let (_, v, m) = find_version(
                state,
                owner,
                Some(old.plugin_id),
                &old.name,
                Some(version.as_deref().unwrap_or(&old.version)),
            )
            .await?;
            let grants: Grants = match &input.grants {
                Some(g) => g.clone(),
                None => serde_json::from_value(old.grants.clone()).unwrap_or_default(),
            };
            let allow = crate::netguard::AllowList::parse(&state.config.webhooks.allow_hosts);
            let mut errors = check_grants(&m, &grants, &allow);
            unlisted_hosts(&grants, &rules, &mut errors);
            if let Some(s) = &input.settings {
                check_settings("/settings", s, &mut errors);
            }
            if let Some(s) = &input.secrets {
                check_settings("/secrets", s, &mut errors);
            }
            let events = input.events.clone().unwrap_or_else(|| old.events.clone());
            if old.kind == "integration" {
                check_events(&m, &events, &mut errors);
            } else if input.events.is_some() {
                errors.push(field("/events", "only integrations subscribe to events"));
            }
            if !errors.is_empty() {
                return Err(ApiError::validation(errors));
            }
            let mut row = old.clone();
            let upgraded = v.hash != old.hash || v.version != old.version;
            if upgraded {
                loaded(state, &v.hash).await?;
                row.previous_version = Some(old.version.clone());
                row.previous_hash = Some(old.hash.clone());
                row.version = v.version.clone();
                row.hash = v.hash.clone();
                if let (Some(type_name), Some(info)) = (&old.type_name, &v.type_info) {
                    let t = type_input(info)?;
                    if &t.name != type_name {
                        return Err(ApiError::validation(vec![field(
                            "/version",
                            format!(
                                "version {} provides the type `{}`, not `{type_name}`",
                                v.version, t.name
                            ),
                        )]));
                    }
                    let rctx = ResourceCtx {
                        state: resources,
                        caller,
                    };
                    crate::resources::service::replace_type_in(
                        &rctx,
                        conn,
                        type_name,
                        &t,
                        Some(name),
                    )
                    .await?;
                }
            }
            row.grants = serde_json::to_value(&grants).map_err(ApiError::internal)?;
            if let Some(s) = &input.settings {
                row.settings = serde_json::to_value(s).map_err(ApiError::internal)?;
            }
            if let Some(s) = &input.secrets {
                row.secrets = crate::plugins::secrets::seal(&state.keyring, tenant, &row.name, s);
            }
            if let Some(f) = input.failure_modes {
                row.failure_modes = serde_json::to_value(f).map_err(ApiError::internal)?;
            }
            row.events = events;
            repo::update_install(conn, &row).await?;
            let action = match (rollback, upgraded) {
                (true, _) => "plugin.rolled_back",
                (false, true) => "plugin.upgraded",
                (false, false) => "plugin.configured",
            };
            record(
                conn,
                &caller.actor,
                action,
                &row,
                json!({"from": old.version}),
            )
            .await?;
            Ok(row)
        })
        .await?;
    state
        .plugins
        .breaker
        .reset(&breaker_key(tenant, &row.name, &row.hash));
    Ok(install_view(row))
}

/// Enables or disables an installation (enabling also clears a tripped breaker and an
/// integration's retry wait).
pub async fn set_enabled(
    state: &PluginsState,
    caller: &Caller,
    name: &str,
    enabled: bool,
) -> ApiResult<Install> {
    let tenant = caller.tenant_id().0;
    let row = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let mut row = install_row(conn, name, true).await?;
            if row.enabled == enabled {
                return Ok::<_, ApiError>(row);
            }
            row.enabled = enabled;
            row.disabled_reason = (!enabled).then(|| "disabled by an administrator".to_string());
            if enabled {
                row.attempts = 0;
                row.next_attempt_at = None;
            }
            repo::update_install(conn, &row).await?;
            let action = if enabled {
                "plugin.enabled"
            } else {
                "plugin.disabled"
            };
            record(conn, &caller.actor, action, &row, json!({})).await?;
            Ok(row)
        })
        .await?;
    state
        .plugins
        .breaker
        .reset(&breaker_key(tenant, &row.name, &row.hash));
    Ok(install_view(row))
}

/// Removes an installation; a resource-type plugin only while its type holds no resources.
pub async fn uninstall(resources: &ResourcesState, caller: &Caller, name: &str) -> ApiResult<()> {
    caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let row = install_row(conn, name, true).await?;
            if let Some(t) = &row.type_name {
                let rctx = ResourceCtx {
                    state: resources,
                    caller,
                };
                crate::resources::service::delete_type_in(&rctx, conn, t, Some(name)).await?;
            }
            repo::delete_install(conn, name).await?;
            record(conn, &caller.actor, "plugin.uninstalled", &row, json!({})).await?;
            Ok(())
        })
        .await
}

pub async fn failures(caller: &Caller, name: &str) -> ApiResult<Vec<Failure>> {
    caller
        .db()
        .transaction(async |tx| {
            install_row(tx.conn(), name, false).await?;
            Ok(repo::failures(tx.conn(), name, 100).await?)
        })
        .await
}

pub async fn dead_letters(caller: &Caller, name: &str) -> ApiResult<Vec<DeadLetter>> {
    caller
        .db()
        .transaction(async |tx| {
            install_row(tx.conn(), name, false).await?;
            Ok(repo::dead_letters(tx.conn(), name, 100).await?)
        })
        .await
}

/// Moves every installation's secrets of a tenant to the active master key (sealing ones
/// stored in clear before sealing existed); how many changed.
pub async fn reseal(
    keyring: &crate::crypto::Keyring,
    tenant: Uuid,
    db: &crate::db::TenantDb,
) -> ApiResult<usize> {
    db.transaction(async |tx| {
        let conn = tx.conn();
        let mut changed = 0;
        for row in repo::installs(conn).await? {
            let moved = crate::plugins::secrets::reseal(keyring, tenant, &row.name, &row.secrets)
                .map_err(|e| {
                ApiError::new(ErrorCode::Internal, format!("plugin {}: {e}", row.name))
            })?;
            if let Some(v) = moved {
                repo::set_secrets(conn, &row.name, &v).await?;
                changed += 1;
            }
        }
        Ok(changed)
    })
    .await
}
