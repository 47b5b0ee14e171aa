//! Resource types: list, read, create, replace (with an optional migration of the stored
//! resources) and delete, each in one transaction with its type version, sort indexes, audit
//! entry and outbox event. A plugin's type changes only through its installation (the `_in`
//! functions, which run in the plugin service's transaction).

use chrono::Utc;
use diesel_async::AsyncPgConnection;
use serde_json::json;

use super::{Ctx, invalid};
use crate::audit::{self, Change};
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError, found};
use crate::resources::repo::{self, TypeRow};
use crate::resources::types;
use crate::resources::{ResourceType, TypeInput};

fn type_change(action: &'static str, t: &ResourceType) -> Change<'static> {
    Change {
        action,
        target_type: "resource_type",
        target_id: Some(t.name.clone()),
        data: json!({"version": t.version, "searchable": t.searchable,
                     "filterable": t.filterable, "sortable": t.sortable}),
    }
}

/// A type's change: its audit entry and its outbox event (`action` is both), in the caller's
/// transaction.
async fn record_type_change(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    action: &'static str,
    t: &ResourceType,
) -> ApiResult<()> {
    audit::record(conn, &ctx.caller.actor, type_change(action, t)).await?;
    crate::outbox::emit(
        conn,
        action,
        "resource_type",
        &t.name,
        json!({"version": t.version}),
    )
    .await?;
    Ok(())
}

pub async fn list_types(ctx: &Ctx<'_>) -> ApiResult<Vec<ResourceType>> {
    ctx.db()
        .transaction(async |tx| Ok(repo::types(tx.conn()).await?))
        .await
}

pub async fn get_type(ctx: &Ctx<'_>, name: &str) -> ApiResult<ResourceType> {
    let t = ctx
        .db()
        .transaction(async |tx| Ok::<_, ApiError>(repo::get_type(tx.conn(), name).await?))
        .await?;
    found(t, "resource type")
}

fn checked(input: &TypeInput, existing: &[String]) -> ApiResult<()> {
    let mut errors = Vec::new();
    types::check(input, existing, &mut errors);
    if let Some(m) = &input.migration {
        types::check_migration(m, &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errors))
    }
}

pub async fn create_type(ctx: &Ctx<'_>, input: &TypeInput) -> ApiResult<ResourceType> {
    if input.migration.is_some() {
        return Err(invalid(
            "/migration",
            "only a type change can carry a migration",
        ));
    }
    ctx.db()
        .transaction(async |tx| create_type_in(ctx, tx.conn(), input, None).await)
        .await
}

/// Refuses changing a plugin's type through the declarative API.
fn not_plugin_owned(t: &ResourceType, by_plugin: Option<&str>) -> ApiResult<()> {
    match (&t.plugin, by_plugin) {
        (Some(p), None) => Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "resource type `{}` is provided by the plugin `{p}`; upgrade or uninstall the plugin instead",
                t.name
            ),
        )),
        _ => Ok(()),
    }
}

/// Creates a type in the caller's transaction; `plugin` names the installation that
/// provides it (plugin installs), `None` for the declarative API.
pub(crate) async fn create_type_in(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    input: &TypeInput,
    plugin: Option<&str>,
) -> ApiResult<ResourceType> {
    {
        let existing: Vec<String> = repo::types(conn)
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect();
        checked(input, &existing)?;
        if existing.contains(&input.name) {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("resource type `{}` exists", input.name),
            ));
        }
        let now = Utc::now();
        let row = TypeRow {
            name: input.name.clone(),
            title: input.title.trim().to_string(),
            description: input.description.clone(),
            version: 1,
            schema: input.schema.clone(),
            searchable: input.searchable.clone(),
            filterable: input.filterable.clone(),
            sortable: input.sortable.clone(),
            relationships: serde_json::to_value(&input.relationships).unwrap_or(json!([])),
            source: if plugin.is_some() {
                "plugin"
            } else {
                "declarative"
            }
            .into(),
            created_at: now,
            updated_at: now,
            plugin: plugin.map(str::to_string),
        };
        repo::insert_type(conn, &row).await?;
        let t = ResourceType::from(row);
        repo::insert_type_version(conn, &t).await?;
        repo::sync_sort_indexes(conn, &t, None).await?;
        record_type_change(ctx, conn, "resource_type.created", &t).await?;
        Ok(t)
    }
}

/// Replaces a type's definition. Every stored resource (live or deleted) must validate
/// against the new schema, after the optional migration is applied to it; otherwise nothing
/// changes and the answer lists the first failures.
pub async fn replace_type(ctx: &Ctx<'_>, name: &str, input: &TypeInput) -> ApiResult<ResourceType> {
    ctx.db()
        .transaction(async |tx| replace_type_in(ctx, tx.conn(), name, input, None).await)
        .await
}

/// Replaces a type in the caller's transaction; `by_plugin` names the installation making
/// the change (plugin upgrades), which alone may change a plugin's type.
pub(crate) async fn replace_type_in(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    name: &str,
    input: &TypeInput,
    by_plugin: Option<&str>,
) -> ApiResult<ResourceType> {
    let mut input = input.clone();
    input.name = name.to_string();
    {
        if !types::is_name(name) {
            return Err(ApiError::not_found("resource type"));
        }
        repo::lock_type(conn, name, true).await?;
        let old = found(repo::get_type(conn, name).await?, "resource type")?;
        not_plugin_owned(&old, by_plugin)?;
        let existing: Vec<String> = repo::types(conn)
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect();
        checked(&input, &existing)?;
        let validator = types::compile(&input.schema)
            .map_err(|e| invalid("/schema", format!("does not compile: {e}")))?;
        let now = Utc::now();
        let mut errors = Vec::new();
        let mut changed = Vec::new();
        for mut r in repo::all_of_type_for_update(conn, name).await? {
            let data = match &input.migration {
                Some(m) => types::migrate(&r.data, m),
                None => r.data.clone(),
            };
            for e in types::validate(&validator, &data, "") {
                if errors.len() < 20 {
                    errors.push(FieldError {
                        pointer: format!("/resources/{}/data{}", r.id, e.pointer),
                        message: e.message,
                    });
                }
            }
            if data != r.data {
                r.data = data;
                changed.push(r);
            }
        }
        if !errors.is_empty() {
            let mut err = ApiError::new(
                ErrorCode::Conflict,
                "stored resources do not fit the new schema; nothing changed (add a `migration` \
                 that mends them, or change them first)",
            );
            err.errors = errors;
            return Err(err);
        }
        let row = TypeRow {
            name: name.to_string(),
            title: input.title.trim().to_string(),
            description: input.description.clone(),
            version: old.version + 1,
            schema: input.schema.clone(),
            searchable: input.searchable.clone(),
            filterable: input.filterable.clone(),
            sortable: input.sortable.clone(),
            relationships: serde_json::to_value(&input.relationships).unwrap_or(json!([])),
            source: old.source.clone(),
            created_at: old.created_at,
            updated_at: now,
            plugin: old.plugin.clone(),
        };
        repo::update_type(conn, &row).await?;
        let t = ResourceType::from(row);
        repo::insert_type_version(conn, &t).await?;
        for mut r in changed {
            r.version += 1;
            r.updated_at = now;
            repo::update(conn, &r).await?;
            repo::insert_version(conn, &r, "migrated", Some(&ctx.actor_id())).await?;
            crate::outbox::emit(
                conn,
                "resource.updated",
                &r.type_name,
                &r.id.to_string(),
                json!({"version": r.version}),
            )
            .await?;
        }
        // After the rows are mended: index expressions must hold for every stored value.
        repo::sync_sort_indexes(conn, &t, Some(&old)).await?;
        record_type_change(ctx, conn, "resource_type.updated", &t).await?;
        Ok(t)
    }
}

/// Deletes a type that has no resources (live or deleted).
pub async fn delete_type(ctx: &Ctx<'_>, name: &str) -> ApiResult<()> {
    ctx.db()
        .transaction(async |tx| delete_type_in(ctx, tx.conn(), name, None).await)
        .await
}

/// Deletes a type in the caller's transaction (`by_plugin`: as for [`replace_type_in`]).
pub(crate) async fn delete_type_in(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    name: &str,
    by_plugin: Option<&str>,
) -> ApiResult<()> {
    {
        if !types::is_name(name) {
            return Err(ApiError::not_found("resource type"));
        }
        repo::lock_type(conn, name, true).await?;
        let t = found(repo::get_type(conn, name).await?, "resource type")?;
        not_plugin_owned(&t, by_plugin)?;
        let n = repo::count_of_type(conn, name).await?;
        if n > 0 {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("{n} resource(s) of type `{name}` exist; delete and purge them first"),
            ));
        }
        repo::drop_sort_indexes(conn, &t).await?;
        repo::delete_type(conn, name).await?;
        record_type_change(ctx, conn, "resource_type.deleted", &t).await?;
        Ok(())
    }
}
