//! The rules of tenant settings: reads through the cache, writes as JSON merge patches
//! validated against the catalogue and the tenant's custom schema (one 422 listing every
//! problem), optimistic concurrency on the version (`If-Match`), and history — every change
//! is a new version with its author, time and diff, written with its audit entry and outbox
//! event in one transaction and announced to every instance after commit. A rollback is a
//! change like any other. The branding logo is checked like an avatar.
//!
//! Never trusts a stored state to be valid for the current catalogue without checking it on
//! the next write.

use std::sync::Arc;

use chrono::Utc;
use diesel_async::AsyncPgConnection;
use serde_json::{Value, json};

use super::repo::{self, VersionRow};
use super::{
    Author, CatalogueView, DiffView, Effective, LogoSaved, SettingsState, VersionView, catalogue,
    diff,
};
use crate::audit::{self, Actor, Change};
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::rbac::Caller;
use crate::tenancy::cache::ResolvedTenant;

/// Largest custom schema accepted.
const CUSTOM_SCHEMA_MAX_BYTES: usize = 64 * 1024;
/// Largest settings state accepted.
const STATE_MAX_BYTES: usize = 256 * 1024;
/// Longest side of the stored logo.
const LOGO_SIDE: u32 = 512;

/// The tenant's effective settings: from the cache, else the database (then cached).
pub async fn effective(
    state: &SettingsState,
    tenant: &ResolvedTenant,
) -> ApiResult<Arc<Effective>> {
    if let Some(hit) = state.cache.get(tenant.tenant.id.0) {
        return Ok(hit);
    }
    let (current, logo) = tenant
        .db
        .read(async |conn| Ok::<_, ApiError>(repo::current(conn, false).await?))
        .await?;
    let value = Arc::new(Effective::build(
        &state.catalogue,
        current.as_ref(),
        logo.as_deref(),
        tenant.tenant.region.as_str(),
    ));
    state.cache.put(tenant.tenant.id.0, value.clone());
    Ok(value)
}

/// The tenant's integration settings, for work that knows only the tenant's id and holds a
/// connection: from the cached effective settings when present, else read on `conn` (and not
/// cached: the cached value also carries the tenant's region, which the caller may not know).
pub async fn integrations(
    state: &SettingsState,
    tenant: uuid::Uuid,
    conn: &AsyncPgConnection,
) -> ApiResult<super::IntegrationSettings> {
    if let Some(hit) = state.cache.get(tenant) {
        return Ok(hit.integrations.clone());
    }
    let (current, _) = repo::current(conn, false).await?;
    Ok(Effective::build(&state.catalogue, current.as_ref(), None, "").integrations)
}

/// The catalogue and the tenant's custom schema.
pub async fn catalogue(state: &SettingsState, tenant: &ResolvedTenant) -> ApiResult<CatalogueView> {
    let eff = effective(state, tenant).await?;
    Ok(CatalogueView {
        schema: state.catalogue.schema().clone(),
        defaults: state.catalogue.defaults().clone(),
        read_only: catalogue::READ_ONLY.iter().map(|s| s.to_string()).collect(),
        custom_schema: eff.custom_schema.clone(),
    })
}

/// Whether `if_match` admits the current ETag (absent or `*` always does).
fn check_if_match(if_match: Option<&str>, eff: &Effective) -> ApiResult<()> {
    let current = eff.etag();
    if crate::error::if_match_admits(if_match, &current) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::PreconditionFailed,
            format!(
                "the settings are at version {} (ETag {current}); reload them and retry",
                eff.version
            ),
        ))
    }
}

/// The state the tenant stores: its values and custom schema.
fn state_of(values: &Value, custom_schema: Option<&Value>) -> Value {
    json!({"values": values, "custom_schema": custom_schema.cloned().unwrap_or(Value::Null)})
}

/// Every problem of a state to be saved.
fn check_state(
    state: &SettingsState,
    values: &Value,
    custom_schema: Option<&Value>,
) -> Vec<FieldError> {
    let size = serde_json::to_vec(values).map_or(usize::MAX, |v| v.len());
    if size > STATE_MAX_BYTES {
        return vec![FieldError {
            pointer: String::new(),
            message: format!("the settings may take at most {STATE_MAX_BYTES} bytes"),
        }];
    }
    let validator = match custom_schema.map(crate::json_schema::compile) {
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            return vec![FieldError {
                pointer: "/custom_schema".into(),
                message: format!("does not compile: {e}"),
            }];
        }
        None => None,
    };
    state.catalogue.check(values, validator.as_ref())
}

/// A new version of `tenant`'s settings made by `edit` on the current (values, custom schema),
/// checked, saved with history, audit and event; announced after commit.
async fn change(
    state: &SettingsState,
    tenant: &ResolvedTenant,
    actor: &Actor,
    author: Author,
    if_match: Option<&str>,
    reason: &str,
    edit: impl FnOnce(&mut Value, &mut Option<Value>) -> ApiResult<()>,
) -> ApiResult<Arc<Effective>> {
    let region = tenant.tenant.region.as_str();
    let saved = tenant
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            let (current, logo) = repo::current(conn, true).await?;
            let before =
                Effective::build(&state.catalogue, current.as_ref(), logo.as_deref(), region);
            check_if_match(if_match, &before)?;
            let mut values = before.values.clone();
            let mut custom = before.custom_schema.clone();
            edit(&mut values, &mut custom)?;
            catalogue::prune_empty(&mut values);
            let errors = check_state(state, &values, custom.as_ref());
            if !errors.is_empty() {
                return Err(ApiError::validation(errors));
            }
            let old_state = state_of(&before.values, before.custom_schema.as_ref());
            let new_state = state_of(&values, custom.as_ref());
            let changes = diff::diff(&old_state, &new_state);
            if changes.is_empty() {
                // Nothing changed: no version, no event.
                return Ok::<_, ApiError>((before, Vec::new()));
            }
            let row = VersionRow {
                version: before.version + 1,
                state: new_state,
                diff: serde_json::to_value(&changes).map_err(ApiError::internal)?,
                author_id: author.id.map(|u| u.0),
                author_name: author.name.clone(),
                reason: reason.to_string(),
                at: Utc::now(),
            };
            repo::save(conn, &row).await?;
            record(conn, actor, &row, &changes).await?;
            let current = repo::Current {
                version: row.version,
                state: row.state,
                updated_at: row.at,
                updated_by: row.author_id,
            };
            let after = Effective::build(&state.catalogue, Some(&current), logo.as_deref(), region);
            Ok((after, changes))
        })
        .await?;
    let (after, changes) = saved;
    if !changes.is_empty() {
        state
            .cache
            .invalidate(tenant.tenant.id.0, i64::from(after.version))
            .await;
    }
    Ok(Arc::new(after))
}

/// The audit entry and outbox event of a new version.
async fn record(
    conn: &AsyncPgConnection,
    actor: &Actor,
    row: &VersionRow,
    changes: &[diff::Change],
) -> ApiResult<()> {
    let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    audit::record(
        conn,
        actor,
        Change {
            action: "settings.changed",
            target_type: "settings",
            target_id: Some(row.version.to_string()),
            data: json!({"version": row.version, "reason": row.reason, "diff": changes}),
        },
    )
    .await?;
    crate::outbox::emit(
        conn,
        "settings.changed",
        "settings",
        &row.version.to_string(),
        json!({"version": row.version, "paths": paths, "reason": row.reason}),
    )
    .await?;
    Ok(())
}

/// Applies a JSON merge patch to the tenant's values (`null` restores a default).
pub async fn patch(
    state: &SettingsState,
    caller: &Caller,
    body: &Value,
    if_match: Option<&str>,
) -> ApiResult<Arc<Effective>> {
    if !body.is_object() {
        return Err(ApiError::validation(vec![FieldError {
            pointer: String::new(),
            message: "a merge patch of the settings must be a JSON object".into(),
        }]));
    }
    change(
        state,
        &caller.tenant.0,
        &caller.actor,
        Author::of(caller),
        if_match,
        "",
        |values, _| {
            catalogue::merge_patch(values, body);
            Ok(())
        },
    )
    .await
}

/// Changes settings on behalf of another route (the invitation policy, audit retention):
/// the same history, audit and broadcast as a `PATCH`; `reason` names the route.
pub async fn patch_for(
    state: &SettingsState,
    caller: &Caller,
    body: &Value,
    reason: &str,
) -> ApiResult<Arc<Effective>> {
    change(
        state,
        &caller.tenant.0,
        &caller.actor,
        Author::of(caller),
        None,
        reason,
        |values, _| {
            catalogue::merge_patch(values, body);
            Ok(())
        },
    )
    .await
}

/// Replaces (or with `null` removes) the JSON Schema of the tenant's custom settings; the
/// stored custom values must satisfy the new schema.
pub async fn put_custom_schema(
    state: &SettingsState,
    caller: &Caller,
    schema: &Value,
    if_match: Option<&str>,
) -> ApiResult<Arc<Effective>> {
    if !schema.is_null() {
        let errors = crate::json_schema::check_object_schema(
            schema,
            "/custom_schema",
            CUSTOM_SCHEMA_MAX_BYTES,
        );
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
    }
    change(
        state,
        &caller.tenant.0,
        &caller.actor,
        Author::of(caller),
        if_match,
        "",
        |_, custom| {
            *custom = (!schema.is_null()).then(|| schema.clone());
            Ok(())
        },
    )
    .await
}

fn version_view(row: repo::VersionRow, with_state: bool) -> VersionView {
    VersionView {
        version: row.version,
        author: Author {
            id: row.author_id.map(crate::ids::UserId),
            name: row.author_name,
        },
        at: row.at,
        reason: row.reason,
        diff: serde_json::from_value(row.diff).unwrap_or_default(),
        state: with_state.then_some(row.state),
    }
}

/// Versions, newest first.
pub async fn versions(
    tenant: &ResolvedTenant,
    before: Option<i32>,
    limit: u32,
) -> ApiResult<Vec<VersionView>> {
    let rows = tenant
        .db
        .read(async |conn| Ok::<_, ApiError>(repo::versions(conn, before, i64::from(limit)).await?))
        .await?;
    Ok(rows.into_iter().map(|r| version_view(r, false)).collect())
}

async fn stored_version(tenant: &ResolvedTenant, v: i32) -> ApiResult<repo::VersionRow> {
    tenant
        .db
        .read(async |conn| Ok::<_, ApiError>(repo::version(conn, v).await?))
        .await?
        .ok_or_else(|| ApiError::not_found("settings version"))
}

/// One version with the state it set.
pub async fn version(tenant: &ResolvedTenant, v: i32) -> ApiResult<VersionView> {
    Ok(version_view(stored_version(tenant, v).await?, true))
}

/// What changed from version `from` to version `to` (either order).
pub async fn diff_versions(tenant: &ResolvedTenant, from: i32, to: i32) -> ApiResult<DiffView> {
    let a = stored_version(tenant, from).await?;
    let b = stored_version(tenant, to).await?;
    Ok(DiffView {
        from,
        to,
        changes: diff::diff(&a.state, &b.state),
    })
}

/// A new version carrying the state of version `v` (checked against today's catalogue).
pub async fn rollback(
    state: &SettingsState,
    caller: &Caller,
    v: i32,
    if_match: Option<&str>,
) -> ApiResult<Arc<Effective>> {
    let target = stored_version(&caller.tenant.0, v).await?;
    let values = target
        .state
        .get("values")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let custom = target
        .state
        .get("custom_schema")
        .filter(|s| !s.is_null())
        .cloned();
    change(
        state,
        &caller.tenant.0,
        &caller.actor,
        Author::of(caller),
        if_match,
        &format!("rollback to {v}"),
        |vals, cus| {
            *vals = values;
            *cus = custom;
            Ok(())
        },
    )
    .await
}

/// Stores an uploaded logo (checked like an avatar, kept as a WebP within 512 px); a new
/// settings version records it.
pub async fn put_logo(
    state: &SettingsState,
    caller: &Caller,
    bytes: Vec<u8>,
) -> ApiResult<LogoSaved> {
    let (etag, image) = tokio::task::spawn_blocking(move || {
        let decoded = crate::picture::decode(&bytes, "a logo")?;
        Ok::<_, ApiError>((
            decoded.etag,
            crate::picture::webp_fit(&decoded.image, LOGO_SIDE)?,
        ))
    })
    .await
    .map_err(ApiError::internal)??;
    logo_change(state, caller, Some((etag, image))).await
}

/// Removes the logo (404 when there is none).
pub async fn delete_logo(state: &SettingsState, caller: &Caller) -> ApiResult<LogoSaved> {
    logo_change(state, caller, None).await
}

async fn logo_change(
    state: &SettingsState,
    caller: &Caller,
    new: Option<(String, Vec<u8>)>,
) -> ApiResult<LogoSaved> {
    let tenant = &caller.tenant.0;
    let region = tenant.tenant.region.as_str();
    let author = Author::of(caller);
    let after = tenant
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            let (current, old) = repo::current(conn, true).await?;
            match &new {
                Some((etag, image)) => repo::put_logo(conn, etag, image).await?,
                None => {
                    if repo::delete_logo(conn).await? == 0 {
                        return Err(ApiError::not_found("logo"));
                    }
                }
            }
            let new_etag = new.as_ref().map(|(e, _)| e.clone());
            let state_json = current
                .as_ref()
                .map(|c| c.state.clone())
                .unwrap_or_else(|| state_of(&json!({}), None));
            let changes = vec![diff::Change {
                path: "/logo".into(),
                from: old.map(Value::String),
                to: new_etag.clone().map(Value::String),
            }];
            let row = VersionRow {
                version: current.as_ref().map_or(0, |c| c.version) + 1,
                state: state_json,
                diff: serde_json::to_value(&changes).map_err(ApiError::internal)?,
                author_id: author.id.map(|u| u.0),
                author_name: author.name.clone(),
                reason: if new.is_some() {
                    "logo uploaded"
                } else {
                    "logo removed"
                }
                .into(),
                at: Utc::now(),
            };
            repo::save(conn, &row).await?;
            record(conn, &caller.actor, &row, &changes).await?;
            let current = repo::Current {
                version: row.version,
                state: row.state,
                updated_at: row.at,
                updated_by: row.author_id,
            };
            Ok::<_, ApiError>(Effective::build(
                &state.catalogue,
                Some(&current),
                new_etag.as_deref(),
                region,
            ))
        })
        .await?;
    state
        .cache
        .invalidate(tenant.tenant.id.0, i64::from(after.version))
        .await;
    Ok(LogoSaved {
        etag: new.map(|(e, _)| format!("\"{e}\"")).unwrap_or_default(),
        version: after.version,
    })
}

/// The logo: (ETag, WebP bytes).
pub async fn logo(tenant: &ResolvedTenant) -> ApiResult<(String, Vec<u8>)> {
    tenant
        .db
        .read(async |conn| Ok::<_, ApiError>(repo::logo(conn).await?))
        .await?
        .ok_or_else(|| ApiError::not_found("logo"))
}
