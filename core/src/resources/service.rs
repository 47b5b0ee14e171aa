//! Rules and transactions for resource types and resources. Every change runs in one tenant
//! transaction that also writes the version row, the audit entry and the outbox event; the
//! type's row is share-locked by writers and exclusively locked by type changes, so data is
//! always validated against the schema it is stored under.

use std::collections::BTreeMap;

use chrono::Utc;
use diesel_async::AsyncPgConnection;
use serde_json::{Value, json};
use uuid::Uuid;

use super::ResourcesState;
use super::access::{Access, Action, Relation};
use super::hooks::{Seen, TypePlugin};
use super::repo::{self, ResourceRow, TypeRow};
use super::types;
use super::{
    ActionOutcome, BulkError, BulkOp, BulkRequest, BulkResponse, BulkResult, Diff, DiffEntry, Link,
    LinkInput, Resource, ResourceInput, ResourcePatch, ResourceType, Share, ShareInput, TypeInput,
    Version,
};
use crate::audit::{self, Change};
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError, found};
use crate::ids::{ResourceId, ResourceShareId, TeamId};
use crate::rbac::Caller;
use neotenant_runtime::Operation;

pub const TAGS_MAX: usize = 50;

/// Who is asking, in which tenant.
pub struct Ctx<'a> {
    pub state: &'a ResourcesState,
    pub caller: &'a Caller,
}

impl Ctx<'_> {
    fn db(&self) -> &crate::db::TenantDb {
        self.caller.db()
    }
    fn tenant(&self) -> Uuid {
        self.caller.tenant_id().0
    }
    fn actor_id(&self) -> String {
        self.caller.user.user.id.to_string()
    }
}

fn invalid(pointer: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(vec![FieldError {
        pointer: pointer.into(),
        message: message.into(),
    }])
}

fn type_change(action: &'static str, t: &ResourceType) -> Change<'static> {
    Change {
        action,
        target_type: "resource_type",
        target_id: Some(t.name.clone()),
        data: json!({"version": t.version, "searchable": t.searchable,
                     "filterable": t.filterable, "sortable": t.sortable}),
    }
}

// ---------------------------------------------------------------- types

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
        audit::record(
            conn,
            &ctx.caller.actor,
            type_change("resource_type.created", &t),
        )
        .await?;
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
        audit::record(
            conn,
            &ctx.caller.actor,
            type_change("resource_type.updated", &t),
        )
        .await?;
        crate::outbox::emit(
            conn,
            "resource_type.updated",
            "resource_type",
            name,
            json!({"version": t.version}),
        )
        .await?;
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
        audit::record(
            conn,
            &ctx.caller.actor,
            type_change("resource_type.deleted", &t),
        )
        .await?;
        Ok(())
    }
}

// ---------------------------------------------------------------- resources

fn clean_tags(tags: &[String], errors: &mut Vec<FieldError>) -> Vec<String> {
    if tags.len() > TAGS_MAX {
        errors.push(FieldError {
            pointer: "/tags".into(),
            message: format!("at most {TAGS_MAX} tags"),
        });
    }
    let mut out: Vec<String> = Vec::new();
    for (i, t) in tags.iter().enumerate() {
        let t = t.trim();
        if !(1..=100).contains(&t.chars().count()) || t.chars().any(char::is_control) {
            errors.push(FieldError {
                pointer: format!("/tags/{i}"),
                message: "must be 1-100 printable characters".into(),
            });
        } else if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    out
}

fn check_category(c: &Option<String>, errors: &mut Vec<FieldError>) -> Option<String> {
    let c = c.as_ref().map(|c| c.trim().to_string());
    if let Some(c) = &c
        && (!(1..=100).contains(&c.chars().count()) || c.chars().any(char::is_control))
    {
        errors.push(FieldError {
            pointer: "/category".into(),
            message: "must be 1-100 printable characters".into(),
        });
    }
    c
}

/// The type named `name` (404 for a malformed or unknown name), without locking it.
async fn existing_type(conn: &mut AsyncPgConnection, name: &str) -> ApiResult<ResourceType> {
    if !types::is_name(name) {
        return Err(ApiError::not_found("resource type"));
    }
    found(repo::get_type(conn, name).await?, "resource type")
}

/// The type (share-locked for the transaction) and a compiled validator for it.
async fn locked_type(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    name: &str,
) -> ApiResult<(ResourceType, std::sync::Arc<jsonschema::Validator>)> {
    if !types::is_name(name) {
        return Err(ApiError::not_found("resource type"));
    }
    repo::lock_type(conn, name, false).await?;
    let t = found(repo::get_type(conn, name).await?, "resource type")?;
    let v = ctx
        .state
        .resource_validators
        .get(ctx.tenant(), &t.name, t.version, &t.schema)
        .map_err(ApiError::internal)?;
    Ok((t, v))
}

/// Checks the team a resource is put in: it exists, and the caller is in it (or above it)
/// unless they act on the whole tenant.
async fn check_team(
    conn: &mut AsyncPgConnection,
    access: &Access,
    action: Action,
    team: Option<TeamId>,
) -> ApiResult<()> {
    let Some(team) = team else { return Ok(()) };
    if !repo::team_exists(conn, team.0).await? {
        return Err(invalid("/team_id", "no such team"));
    }
    if access.scope(action) != Some(crate::rbac::perm::Scope::Tenant)
        && !repo::team_in_reach(conn, team.0, &access.teams).await?
    {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "you can only put resources in your own teams (or teams below them)",
        ));
    }
    Ok(())
}

async fn record_change(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    r: &Resource,
    change: &'static str,
    before: Option<&Resource>,
) -> ApiResult<()> {
    repo::insert_version(conn, r, change, Some(&ctx.actor_id())).await?;
    let action: &'static str = match change {
        "created" => "resource.created",
        "deleted" => "resource.deleted",
        "restored" => "resource.restored",
        "reverted" => "resource.reverted",
        _ => "resource.updated",
    };
    let data = match before {
        Some(b) => json!({"type": r.type_name, "version": r.version,
                          "changes": diff_states(&state_of(b), &state_of(r))}),
        None => json!({"type": r.type_name, "version": r.version}),
    };
    resource_event(ctx, conn, r, action, data).await
}

pub async fn create(ctx: &Ctx<'_>, type_name: &str, input: &ResourceInput) -> ApiResult<Resource> {
    ctx.db()
        .transaction(async |tx| create_in(ctx, tx.conn(), type_name, input).await)
        .await
}

/// Creates one resource inside the caller's transaction (imports).
pub(super) async fn create_row(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    type_name: &str,
    input: &ResourceInput,
) -> ApiResult<Resource> {
    create_in(ctx, conn, type_name, input).await
}

async fn create_in(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    type_name: &str,
    input: &ResourceInput,
) -> ApiResult<Resource> {
    let (t, validator) = locked_type(ctx, conn, type_name).await?;
    let mut errors = types::validate(&validator, &input.data, "/data");
    let tags = clean_tags(&input.tags, &mut errors);
    let category = check_category(&input.category, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    if input.team_id.is_some() {
        let access = Access::load(conn, ctx.caller).await?;
        check_team(conn, &access, Action::Create, input.team_id).await?;
    }
    let id = ResourceId::generate().0;
    let plugin = plugin_of(ctx, conn, &t).await?;
    let data = match &plugin {
        Some(p) => p.validate(conn, &validator, &input.data, Some(id)).await?,
        None => input.data.clone(),
    };
    let now = Utc::now();
    let row = ResourceRow {
        id,
        type_: t.name.clone(),
        data,
        tags,
        category,
        owner_id: ctx.caller.user_id(),
        team_id: input.team_id.map(|t| t.0),
        version: 1,
        created_at: now,
        updated_at: now,
        deleted_at: None,
    };
    let r = Resource::from(row.clone());
    let actor = ctx.actor_id();
    if let Some(p) = &plugin {
        p.hook(
            conn,
            false,
            seen_change(Operation::Create, &r, None, &actor),
        )
        .await?;
    }
    repo::insert(conn, &row).await?;
    record_change(ctx, conn, &r, "created", None).await?;
    if let Some(p) = &plugin {
        p.hook(conn, true, seen_change(Operation::Create, &r, None, &actor))
            .await?;
    }
    Ok(r)
}

/// The plugin providing a type, if any (one query, only for plugin types).
async fn plugin_of(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    t: &ResourceType,
) -> ApiResult<Option<Box<dyn TypePlugin>>> {
    match &t.plugin {
        None => Ok(None),
        Some(_) => {
            ctx.state
                .hooks
                .bind(ctx.tenant(), ctx.db(), conn, &t.name)
                .await
        }
    }
}

fn seen_change<'a>(
    operation: Operation,
    r: &'a Resource,
    before: Option<&'a Value>,
    actor: &'a str,
) -> Seen<'a> {
    Seen {
        operation,
        type_name: &r.type_name,
        resource_id: r.id.0,
        before,
        after: &r.data,
        actor,
    }
}

/// Loads a resource the caller may read (404 otherwise, never 403: its existence is not
/// revealed), with their relation to it.
async fn readable(
    conn: &mut AsyncPgConnection,
    access: &Access,
    type_name: &str,
    id: ResourceId,
    lock: bool,
) -> ApiResult<(Resource, Relation)> {
    let r = found(repo::get(conn, type_name, id.0, lock).await?, "resource")?;
    let rel = access
        .relation(conn, r.id.0, r.owner_id.0, r.team_id.map(|t| t.0))
        .await?;
    if !access.may(Action::Read, rel) {
        return Err(ApiError::not_found("resource"));
    }
    Ok((r, rel))
}

fn require(access: &Access, action: Action, rel: Relation) -> ApiResult<()> {
    if access.may(action, rel) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "requires resources.{}.<scope> reaching this resource",
                action.as_str()
            ),
        ))
    }
}

fn check_if_match(r: &Resource, if_match: Option<&str>) -> ApiResult<()> {
    match if_match {
        None => Ok(()),
        Some(tags) if tags.trim() == "*" => Ok(()),
        Some(tags) => {
            let current = r.etag();
            if tags
                .split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == current)
            {
                Ok(())
            } else {
                Err(ApiError::new(
                    ErrorCode::PreconditionFailed,
                    format!(
                        "the resource is at version {} (ETag {current}); reload it and retry",
                        r.version
                    ),
                ))
            }
        }
    }
}

pub async fn get(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    deleted: bool,
) -> ApiResult<Resource> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let access = Access::load(conn, ctx.caller).await?;
            let (r, _) = readable(conn, &access, type_name, id, false).await?;
            if r.deleted_at.is_some() && !deleted {
                return Err(ApiError::not_found("resource"));
            }
            Ok(r)
        })
        .await
}

/// What an update changes.
enum Edit<'a> {
    Replace(&'a ResourceInput),
    Patch(&'a ResourcePatch),
    /// New data from a plugin's custom action.
    Data(Value),
}

async fn edit(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    if_match: Option<&str>,
    change: Edit<'_>,
) -> ApiResult<Resource> {
    ctx.db()
        .transaction(async |tx| edit_in(ctx, tx.conn(), type_name, id, if_match, change).await)
        .await
}

async fn edit_in(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    type_name: &str,
    id: ResourceId,
    if_match: Option<&str>,
    change: Edit<'_>,
) -> ApiResult<Resource> {
    let (t, validator) = locked_type(ctx, conn, type_name).await?;
    let access = Access::load(conn, ctx.caller).await?;
    let (before, rel) = readable(conn, &access, type_name, id, true).await?;
    if before.deleted_at.is_some() {
        return Err(ApiError::not_found("resource"));
    }
    require(&access, Action::Update, rel)?;
    check_if_match(&before, if_match)?;
    let mut after = before.clone();
    let mut errors = Vec::new();
    match change {
        Edit::Replace(input) => {
            after.data = input.data.clone();
            after.tags = clean_tags(&input.tags, &mut errors);
            after.category = check_category(&input.category, &mut errors);
            after.team_id = input.team_id;
        }
        Edit::Patch(p) => {
            if let Some(d) = &p.data {
                merge_patch(&mut after.data, d);
            }
            if let Some(tags) = &p.tags {
                after.tags = clean_tags(tags, &mut errors);
            }
            if let Some(c) = &p.category {
                after.category = check_category(c, &mut errors);
            }
            if let Some(t) = p.team_id {
                after.team_id = t;
            }
        }
        Edit::Data(d) => after.data = d,
    }
    errors.extend(types::validate(&validator, &after.data, "/data"));
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    if after.team_id != before.team_id {
        check_team(conn, &access, Action::Update, after.team_id).await?;
    }
    let plugin = plugin_of(ctx, conn, &t).await?;
    if let Some(p) = &plugin {
        after.data = p
            .validate(conn, &validator, &after.data, Some(id.0))
            .await?;
    }
    if state_of(&after) == state_of(&before) {
        return Ok(before);
    }
    after.version += 1;
    after.updated_at = Utc::now();
    let actor = ctx.actor_id();
    if let Some(p) = &plugin {
        let s = seen_change(Operation::Update, &after, Some(&before.data), &actor);
        p.hook(conn, false, s).await?;
    }
    repo::update(conn, &after).await?;
    record_change(ctx, conn, &after, "updated", Some(&before)).await?;
    if let Some(p) = &plugin {
        let s = seen_change(Operation::Update, &after, Some(&before.data), &actor);
        p.hook(conn, true, s).await?;
    }
    Ok(after)
}

pub async fn replace(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    if_match: Option<&str>,
    input: &ResourceInput,
) -> ApiResult<Resource> {
    edit(ctx, type_name, id, if_match, Edit::Replace(input)).await
}

pub async fn patch(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    if_match: Option<&str>,
    input: &ResourcePatch,
) -> ApiResult<Resource> {
    edit(ctx, type_name, id, if_match, Edit::Patch(input)).await
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Soft-deletes (`deleted = true`) or restores a resource.
pub async fn set_deleted(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    if_match: Option<&str>,
    deleted: bool,
) -> ApiResult<Resource> {
    ctx.db()
        .transaction(async |tx| {
            set_deleted_in(ctx, tx.conn(), type_name, id, if_match, deleted).await
        })
        .await
}

async fn set_deleted_in(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    type_name: &str,
    id: ResourceId,
    if_match: Option<&str>,
    deleted: bool,
) -> ApiResult<Resource> {
    let (t, _) = locked_type(ctx, conn, type_name).await?;
    let access = Access::load(conn, ctx.caller).await?;
    let (before, rel) = readable(conn, &access, type_name, id, true).await?;
    require(&access, Action::Delete, rel)?;
    check_if_match(&before, if_match)?;
    if before.deleted_at.is_some() == deleted {
        return if deleted {
            Err(ApiError::not_found("resource"))
        } else {
            Ok(before)
        };
    }
    if deleted {
        apply_delete_rules(ctx, conn, &access, &before).await?;
    }
    let mut after = before.clone();
    after.version += 1;
    after.updated_at = Utc::now();
    after.deleted_at = deleted.then_some(after.updated_at);
    let plugin = plugin_of(ctx, conn, &t).await?;
    let op = if deleted {
        Operation::Delete
    } else {
        Operation::Update
    };
    let actor = ctx.actor_id();
    if let Some(p) = &plugin {
        p.hook(
            conn,
            false,
            seen_change(op, &after, Some(&before.data), &actor),
        )
        .await?;
    }
    repo::update(conn, &after).await?;
    record_change(
        ctx,
        conn,
        &after,
        if deleted { "deleted" } else { "restored" },
        None,
    )
    .await?;
    if let Some(p) = &plugin {
        p.hook(
            conn,
            true,
            seen_change(op, &after, Some(&before.data), &actor),
        )
        .await?;
    }
    Ok(after)
}

/// Runs a plugin type's custom action on one resource (the caller must be allowed to update
/// it). New data the action returns is written like any update (validation, hooks, version,
/// audit, event); the action itself is audited too.
pub async fn action(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    name: &str,
    if_match: Option<&str>,
    input: &Value,
) -> ApiResult<ActionOutcome> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let (t, _) = locked_type(ctx, conn, type_name).await?;
            let plugin = plugin_of(ctx, conn, &t)
                .await?
                .ok_or_else(|| ApiError::not_found("action"))?;
            if !types::is_name(name) || !plugin.actions().await?.iter().any(|a| a == name) {
                return Err(ApiError::not_found("action"));
            }
            let access = Access::load(conn, ctx.caller).await?;
            let (before, rel) = readable(conn, &access, type_name, id, true).await?;
            if before.deleted_at.is_some() {
                return Err(ApiError::not_found("resource"));
            }
            require(&access, Action::Update, rel)?;
            check_if_match(&before, if_match)?;
            let result = plugin.action(conn, name, id.0, &before.data, input).await?;
            let resource = match result.data {
                Some(d) => edit_in(ctx, conn, type_name, id, None, Edit::Data(d)).await?,
                None => before,
            };
            audit::record(
                conn,
                &ctx.caller.actor,
                Change {
                    action: "resource.action",
                    target_type: "resource",
                    target_id: Some(id.to_string()),
                    data: json!({"type": type_name, "action": name, "plugin": plugin.name(),
                             "version": resource.version}),
                },
            )
            .await?;
            Ok(ActionOutcome {
                output: result.output,
                resource,
            })
        })
        .await
}

// ---------------------------------------------------------------- versions

pub async fn versions(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    before: Option<i32>,
    limit: i64,
) -> ApiResult<Vec<Version>> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let access = Access::load(conn, ctx.caller).await?;
            readable(conn, &access, type_name, id, false).await?;
            Ok(repo::versions(conn, id.0, before, limit).await?)
        })
        .await
}

pub async fn version(ctx: &Ctx<'_>, type_name: &str, id: ResourceId, v: i32) -> ApiResult<Version> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let access = Access::load(conn, ctx.caller).await?;
            readable(conn, &access, type_name, id, false).await?;
            found(repo::version(conn, id.0, v).await?, "version")
        })
        .await
}

/// The comparable state of a resource or version: data, tags, category, deleted.
fn state_of(r: &Resource) -> Value {
    json!({"data": r.data, "tags": r.tags, "category": r.category, "team_id": r.team_id,
           "deleted": r.deleted_at.is_some()})
}

fn state_of_version(v: &Version) -> Value {
    json!({"data": v.data, "tags": v.tags, "category": v.category, "deleted": v.deleted})
}

/// Differences between two JSON values, as pointer-addressed changes (objects compared
/// member by member; arrays and scalars as wholes).
pub fn diff_values(from: &Value, to: &Value, path: &str, out: &mut Vec<DiffEntry>) {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_values(x, y, &p, out),
                    (Some(x), None) => out.push(DiffEntry {
                        op: "remove".into(),
                        path: p,
                        from: Some(x.clone()),
                        to: None,
                    }),
                    (None, Some(y)) => out.push(DiffEntry {
                        op: "add".into(),
                        path: p,
                        from: None,
                        to: Some(y.clone()),
                    }),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => out.push(DiffEntry {
            op: "replace".into(),
            path: path.to_string(),
            from: Some(a.clone()),
            to: Some(b.clone()),
        }),
        _ => {}
    }
}

fn diff_states(from: &Value, to: &Value) -> Vec<DiffEntry> {
    let mut out = Vec::new();
    diff_values(from, to, "", &mut out);
    out
}

pub async fn diff(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    from: Option<i32>,
    to: Option<i32>,
) -> ApiResult<Diff> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let access = Access::load(conn, ctx.caller).await?;
            let (r, _) = readable(conn, &access, type_name, id, false).await?;
            let to = to.unwrap_or(r.version);
            let from = from.unwrap_or(to - 1);
            if from < 1 || to < 1 || from > r.version || to > r.version {
                return Err(ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("versions run from 1 to {}", r.version),
                ));
            }
            let a = found(repo::version(conn, id.0, from).await?, "version")?;
            let b = found(repo::version(conn, id.0, to).await?, "version")?;
            Ok(Diff {
                from,
                to,
                changes: diff_states(&state_of_version(&a), &state_of_version(&b)),
            })
        })
        .await
}

/// Makes an old version current again, as a new version (validated against today's schema).
pub async fn revert(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    v: i32,
    if_match: Option<&str>,
) -> ApiResult<Resource> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let (_, validator) = locked_type(ctx, conn, type_name).await?;
            let access = Access::load(conn, ctx.caller).await?;
            let (before, rel) = readable(conn, &access, type_name, id, true).await?;
            if before.deleted_at.is_some() {
                return Err(ApiError::not_found("resource"));
            }
            require(&access, Action::Update, rel)?;
            check_if_match(&before, if_match)?;
            let old = found(repo::version(conn, id.0, v).await?, "version")?;
            let errors = types::validate(&validator, &old.data, "/data");
            if !errors.is_empty() {
                let mut e = ApiError::validation(errors);
                e.detail = format!("version {v} does not fit the type's current schema").into();
                return Err(e);
            }
            let mut after = before.clone();
            after.data = old.data;
            after.tags = old.tags;
            after.category = old.category;
            after.version += 1;
            after.updated_at = Utc::now();
            repo::update(conn, &after).await?;
            record_change(ctx, conn, &after, "reverted", Some(&before)).await?;
            Ok(after)
        })
        .await
}

// ---------------------------------------------------------------- lists

/// A list request.
#[derive(Debug, Default)]
pub struct ListQuery {
    pub tags: Vec<String>,
    pub category: Option<String>,
    /// Equality on declared filterable fields.
    pub filters: BTreeMap<String, String>,
    /// A declared sortable field, `-` prefixed for descending.
    pub sort: Option<String>,
    pub owner: Option<Uuid>,
    pub team: Option<Uuid>,
    pub deleted: bool,
    pub after: Option<ListCursor>,
    pub limit: i64,
}

/// A list position: the sort value (when sorting by a field) and the id.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ListCursor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<Value>,
    pub id: Uuid,
}

/// The JSON value a filter's text stands for, typed as the schema declares the field.
fn filter_value(t: &ResourceType, field: &str, raw: &str) -> ApiResult<Value> {
    let ty = t
        .schema
        .pointer(&format!("/properties/{field}/type"))
        .and_then(Value::as_str)
        .unwrap_or("string");
    let bad = || {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("filter[{field}] must be a {ty}"),
        )
    };
    Ok(match ty {
        "integer" => json!(raw.parse::<i64>().map_err(|_| bad())?),
        "number" => json!(raw.parse::<f64>().map_err(|_| bad())?),
        "boolean" => json!(raw.parse::<bool>().map_err(|_| bad())?),
        _ => json!(raw),
    })
}

fn sort_value(r: &Resource, field: &str) -> Option<Value> {
    r.data.get(field).filter(|v| !v.is_null()).cloned()
}

pub async fn list(
    ctx: &Ctx<'_>,
    type_name: &str,
    q: &ListQuery,
) -> ApiResult<(Vec<Resource>, Option<String>)> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let t = existing_type(conn, type_name).await?;
            let access = Access::load(conn, ctx.caller).await?;
            let mut contains = None;
            if !q.filters.is_empty() {
                let mut obj = serde_json::Map::new();
                for (f, raw) in &q.filters {
                    if !t.filterable.contains(f) {
                        return Err(ApiError::new(
                            ErrorCode::InvalidParameter,
                            format!(
                                "`{f}` is not a filterable field of `{}` (filterable: {})",
                                t.name,
                                t.filterable.join(", ")
                            ),
                        ));
                    }
                    obj.insert(f.clone(), filter_value(&t, f, raw)?);
                }
                contains = Some(Value::Object(obj));
            }
            let sort = match &q.sort {
                None => None,
                Some(s) => {
                    let (desc, field) = match s.strip_prefix('-') {
                        Some(f) => (true, f),
                        None => (false, s.as_str()),
                    };
                    if !t.sortable.iter().any(|f| f == field) {
                        return Err(ApiError::new(
                            ErrorCode::InvalidParameter,
                            format!(
                                "`{field}` is not a sortable field of `{}` (sortable: {})",
                                t.name,
                                t.sortable.join(", ")
                            ),
                        ));
                    }
                    Some((field, desc))
                }
            };
            let page = repo::Page {
                t: &t,
                deleted: q.deleted,
                tags: &q.tags,
                category: q.category.as_deref(),
                owner: q.owner,
                team: q.team,
                contains,
                sort,
                after: q.after.as_ref().map(|c| (c.v.as_ref(), c.id)),
                limit: q.limit + 1,
            };
            let mut rows = repo::page(conn, &page, |sql| access.read_predicate(sql)).await?;
            let next = if rows.len() as i64 > q.limit {
                rows.truncate(q.limit as usize);
                rows.last().map(|last| {
                    crate::cursor::encode_cursor(&ListCursor {
                        v: sort.and_then(|(f, _)| sort_value(last, f)),
                        id: last.id.0,
                    })
                })
            } else {
                None
            };
            Ok((rows, next))
        })
        .await
}

/// Counts of live, visible resources of a type by tag or by category.
pub async fn counts(ctx: &Ctx<'_>, type_name: &str, by_tag: bool) -> ApiResult<Vec<(String, i64)>> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            existing_type(conn, type_name).await?;
            let access = Access::load(conn, ctx.caller).await?;
            Ok(
                repo::counts(conn, type_name, by_tag, |sql| access.read_predicate(sql))
                    .await?
                    .into_iter()
                    .map(|c| (c.value, c.count))
                    .collect(),
            )
        })
        .await
}

// ---------------------------------------------------------------- shares

pub async fn shares(ctx: &Ctx<'_>, type_name: &str, id: ResourceId) -> ApiResult<Vec<Share>> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let access = Access::load(conn, ctx.caller).await?;
            let (_, rel) = readable(conn, &access, type_name, id, false).await?;
            require(&access, Action::Share, rel)?;
            Ok(repo::shares(conn, id.0).await?)
        })
        .await
}

/// Records a resource-level event (a new version, a share, a link): an audit entry and an
/// outbox event (so the index re-derives the resource), in the caller's transaction.
async fn resource_event(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    r: &Resource,
    action: &'static str,
    data: Value,
) -> ApiResult<()> {
    audit::record(
        conn,
        &ctx.caller.actor,
        Change {
            action,
            target_type: "resource",
            target_id: Some(r.id.to_string()),
            data,
        },
    )
    .await?;
    crate::outbox::emit(
        conn,
        action,
        &r.type_name,
        &r.id.to_string(),
        json!({"version": r.version}),
    )
    .await?;
    Ok(())
}

pub async fn share(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    input: &ShareInput,
) -> ApiResult<Share> {
    if input.user_id.is_some() == input.team_id.is_some() {
        return Err(invalid("/", "name exactly one of user_id and team_id"));
    }
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let access = Access::load(conn, ctx.caller).await?;
            let (r, rel) = readable(conn, &access, type_name, id, true).await?;
            if r.deleted_at.is_some() {
                return Err(ApiError::not_found("resource"));
            }
            require(&access, Action::Share, rel)?;
            if let Some(u) = input.user_id
                && !repo::user_exists(conn, u.0).await?
            {
                return Err(invalid("/user_id", "no such user in this tenant"));
            }
            if let Some(t) = input.team_id
                && !repo::team_exists(conn, t.0).await?
            {
                return Err(invalid("/team_id", "no such team"));
            }
            let sid = repo::upsert_share(
                conn,
                id.0,
                input.user_id.map(|u| u.0),
                input.team_id.map(|t| t.0),
                input.access,
                ctx.caller.user_id(),
            )
            .await?;
            let share = repo::shares(conn, id.0)
                .await?
                .into_iter()
                .find(|s| s.id.0 == sid)
                .ok_or_else(|| ApiError::internal("share vanished"))?;
            resource_event(
                ctx,
                conn,
                &r,
                "resource.shared",
                json!({"share": share.id, "user_id": share.user_id, "team_id": share.team_id,
                   "access": share.access}),
            )
            .await?;
            Ok(share)
        })
        .await
}

pub async fn unshare(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    share: ResourceShareId,
) -> ApiResult<()> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let access = Access::load(conn, ctx.caller).await?;
            let (r, rel) = readable(conn, &access, type_name, id, true).await?;
            require(&access, Action::Share, rel)?;
            if !repo::delete_share(conn, id.0, share.0).await? {
                return Err(ApiError::not_found("share"));
            }
            resource_event(ctx, conn, &r, "resource.unshared", json!({"share": share})).await
        })
        .await
}

// ---------------------------------------------------------------- links

fn link_of(l: repo::LinkRow) -> Link {
    Link {
        kind: l.kind,
        from_id: ResourceId(l.from_id),
        from_type: l.from_type,
        to_id: ResourceId(l.to_id),
        to_type: l.to_type,
        created_at: l.created_at,
    }
}

/// Links a resource to another under a kind its type declares; both must be readable, and
/// the caller must be allowed to update the source.
pub async fn link(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    input: &LinkInput,
) -> ApiResult<Link> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let (t, _) = locked_type(ctx, conn, type_name).await?;
            let Some(kind) = t.relationships.iter().find(|k| k.kind == input.kind) else {
                return Err(invalid(
                    "/kind",
                    format!("`{type_name}` declares no relationship `{}`", input.kind),
                ));
            };
            let access = Access::load(conn, ctx.caller).await?;
            let (from, rel) = readable(conn, &access, type_name, id, true).await?;
            if from.deleted_at.is_some() {
                return Err(ApiError::not_found("resource"));
            }
            require(&access, Action::Update, rel)?;
            let to = match readable(conn, &access, &kind.target, input.to_id, false).await {
                Ok((to, _)) if to.deleted_at.is_none() => to,
                _ => {
                    return Err(invalid(
                        "/to_id",
                        format!("no {} resource with this id that you may read", kind.target),
                    ));
                }
            };
            if to.id == from.id {
                return Err(invalid("/to_id", "a resource cannot link to itself"));
            }
            if !repo::insert_link(conn, from.id.0, &kind.kind, to.id.0, ctx.caller.user_id())
                .await?
            {
                return Err(ApiError::new(ErrorCode::Conflict, "the link exists"));
            }
            let change = json!({"kind": kind.kind, "to_id": to.id, "to_type": to.type_name});
            resource_event(ctx, conn, &from, "resource.linked", change).await?;
            Ok(Link {
                kind: kind.kind.clone(),
                from_id: from.id,
                from_type: from.type_name,
                to_id: to.id,
                to_type: to.type_name,
                created_at: Utc::now(),
            })
        })
        .await
}

pub async fn unlink(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    kind: &str,
    to: ResourceId,
) -> ApiResult<()> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let access = Access::load(conn, ctx.caller).await?;
            let (from, rel) = readable(conn, &access, type_name, id, true).await?;
            require(&access, Action::Update, rel)?;
            if !repo::delete_link(conn, from.id.0, kind, to.0).await? {
                return Err(ApiError::not_found("link"));
            }
            resource_event(
                ctx,
                conn,
                &from,
                "resource.unlinked",
                json!({"kind": kind, "to_id": to}),
            )
            .await
        })
        .await
}

/// A resource's links, outgoing or incoming, to other ends the caller may read.
pub async fn links(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    outgoing: bool,
    kind: Option<&str>,
) -> ApiResult<Vec<Link>> {
    ctx.db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let access = Access::load(conn, ctx.caller).await?;
            readable(conn, &access, type_name, id, false).await?;
            Ok(
                repo::links(conn, outgoing, id.0, kind, |q| access.read_predicate(q))
                    .await?
                    .into_iter()
                    .map(link_of)
                    .collect(),
            )
        })
        .await
}

/// Applies the delete rules of links into `first` (being soft-deleted, by the caller):
/// `refuse` fails the deletion (409 naming the links), `detach` removes the links,
/// `cascade` soft-deletes the linking resources too — under the same rules, and only those
/// the caller may delete. Cycles end; chains deeper than 100 resources are refused.
async fn apply_delete_rules(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    access: &Access,
    first: &Resource,
) -> ApiResult<()> {
    let mut queue = vec![first.id.0];
    let mut seen = std::collections::HashSet::from([first.id.0]);
    let mut refusals = Vec::new();
    let mut types: std::collections::HashMap<String, Option<ResourceType>> = Default::default();
    while let Some(target) = queue.pop() {
        for l in repo::incoming_live(conn, target).await? {
            if !types.contains_key(&l.from_type) {
                let t = repo::get_type(conn, &l.from_type).await?;
                types.insert(l.from_type.clone(), t);
            }
            let rule = types[&l.from_type]
                .as_ref()
                .and_then(|t| t.relationships.iter().find(|k| k.kind == l.kind))
                .map_or(super::OnDelete::Detach, |k| k.on_delete);
            match rule {
                super::OnDelete::Refuse => refusals.push(FieldError {
                    pointer: format!("/links/{}/{}", l.kind, ResourceId(l.from_id)),
                    message: format!(
                        "{} {} links here with `{}`, whose rule refuses the deletion",
                        l.from_type,
                        ResourceId(l.from_id),
                        l.kind
                    ),
                }),
                super::OnDelete::Detach => {
                    repo::delete_link(conn, l.from_id, &l.kind, l.to_id).await?;
                }
                super::OnDelete::Cascade => {
                    if !seen.insert(l.from_id) {
                        continue;
                    }
                    if seen.len() > 100 {
                        return Err(ApiError::new(
                            ErrorCode::Conflict,
                            "the deletion would cascade to more than 100 resources",
                        ));
                    }
                    let src = found(
                        repo::get(conn, &l.from_type, l.from_id, true).await?,
                        "resource",
                    )?;
                    let rel = access
                        .relation(conn, src.id.0, src.owner_id.0, src.team_id.map(|t| t.0))
                        .await?;
                    if !access.may(Action::Delete, rel) {
                        return Err(ApiError::new(
                            ErrorCode::Forbidden,
                            format!(
                                "the deletion cascades to {}, which you may not delete",
                                src.id
                            ),
                        ));
                    }
                    let mut after = src.clone();
                    after.version += 1;
                    after.updated_at = Utc::now();
                    after.deleted_at = Some(after.updated_at);
                    // A cascaded deletion is a deletion: the source type's plugin sees it.
                    let plugin = match types[&l.from_type].as_ref() {
                        Some(t) => plugin_of(ctx, conn, t).await?,
                        None => None,
                    };
                    let actor = ctx.actor_id();
                    let change = || seen_change(Operation::Delete, &after, Some(&src.data), &actor);
                    if let Some(p) = &plugin {
                        p.hook(conn, false, change()).await?;
                    }
                    repo::update(conn, &after).await?;
                    record_change(ctx, conn, &after, "deleted", None).await?;
                    if let Some(p) = &plugin {
                        p.hook(conn, true, change()).await?;
                    }
                    queue.push(src.id.0);
                }
            }
        }
    }
    if refusals.is_empty() {
        Ok(())
    } else {
        let mut e = ApiError::new(
            ErrorCode::Conflict,
            "links whose rule is `refuse` point at this resource; remove them first",
        );
        e.errors = refusals;
        Err(e)
    }
}

// ---------------------------------------------------------------- bulk

pub const BULK_MAX: usize = 1000;

/// How a bulk transaction ended without committing its work: it never opened, its commit
/// failed, or the operation at an index failed (and rolled the transaction back).
enum BulkFailure {
    Begin(ApiError),
    Commit(ApiError),
    Op(usize, ApiError),
}

impl From<crate::db::DbError> for BulkFailure {
    fn from(e: crate::db::DbError) -> Self {
        BulkFailure::Begin(e.into())
    }
}

impl From<diesel::result::Error> for BulkFailure {
    fn from(e: diesel::result::Error) -> Self {
        BulkFailure::Commit(e.into())
    }
}

fn bulk_error(e: &ApiError) -> BulkError {
    BulkError {
        type_uri: e.code.type_uri(),
        detail: e.detail.to_string(),
        errors: e.errors.clone(),
    }
}

async fn bulk_one(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    type_name: &str,
    op: &BulkOp,
) -> ApiResult<(u16, Resource)> {
    match op {
        BulkOp::Create {
            data,
            tags,
            category,
            team_id,
        } => {
            ctx.caller
                .require("resources", "create", crate::rbac::perm::Scope::Own)?;
            let input = ResourceInput {
                data: data.clone(),
                tags: tags.clone(),
                category: category.clone(),
                team_id: *team_id,
            };
            Ok((201, create_in(ctx, conn, type_name, &input).await?))
        }
        BulkOp::Update {
            id,
            if_match,
            data,
            tags,
            category,
        } => {
            let patch = ResourcePatch {
                data: data.clone(),
                tags: tags.clone(),
                category: category.clone(),
                team_id: None,
            };
            Ok((
                200,
                edit_in(
                    ctx,
                    conn,
                    type_name,
                    *id,
                    if_match.as_deref(),
                    Edit::Patch(&patch),
                )
                .await?,
            ))
        }
        BulkOp::Delete { id, if_match } => Ok((
            200,
            set_deleted_in(ctx, conn, type_name, *id, if_match.as_deref(), true).await?,
        )),
    }
}

/// Applies many operations, atomically (one transaction; the first failure rolls all back)
/// or one by one (each in its own transaction).
pub async fn bulk(ctx: &Ctx<'_>, type_name: &str, req: &BulkRequest) -> ApiResult<BulkResponse> {
    if req.operations.is_empty() || req.operations.len() > BULK_MAX {
        return Err(invalid(
            "/operations",
            format!("must hold 1-{BULK_MAX} operations"),
        ));
    }
    let mut results = Vec::with_capacity(req.operations.len());
    if !req.atomic {
        for (index, op) in req.operations.iter().enumerate() {
            let r = ctx
                .db()
                .transaction(async |tx| {
                    bulk_one(ctx, tx.conn(), type_name, op)
                        .await
                        .map_err(|e| BulkFailure::Op(index, e))
                })
                .await;
            results.push(match r {
                Ok((status, resource)) => BulkResult {
                    index,
                    status,
                    resource: Some(resource),
                    error: None,
                },
                // No transaction, no answer for the rest either: the request fails.
                Err(BulkFailure::Begin(e)) => return Err(e),
                Err(BulkFailure::Commit(e) | BulkFailure::Op(_, e)) => BulkResult {
                    index,
                    status: e.code.status(),
                    resource: None,
                    error: Some(bulk_error(&e)),
                },
            });
        }
        return Ok(BulkResponse {
            atomic: false,
            committed: true,
            results,
        });
    }
    let applied = ctx
        .db()
        .transaction(async |tx| {
            for (index, op) in req.operations.iter().enumerate() {
                let (status, resource) = bulk_one(ctx, tx.conn(), type_name, op)
                    .await
                    .map_err(|e| BulkFailure::Op(index, e))?;
                results.push(BulkResult {
                    index,
                    status,
                    resource: Some(resource),
                    error: None,
                });
            }
            Ok(())
        })
        .await;
    let (at, e) = match applied {
        Ok(()) => {
            return Ok(BulkResponse {
                atomic: true,
                committed: true,
                results,
            });
        }
        Err(BulkFailure::Begin(e) | BulkFailure::Commit(e)) => return Err(e),
        Err(BulkFailure::Op(at, e)) => (at, e),
    };
    // Server-side failures are not the caller's to see item by item.
    if e.code.is_server_error() {
        return Err(ApiError::internal("bulk operation failed"));
    }
    let not_applied = |index: usize, detail: String| BulkResult {
        index,
        status: 424,
        resource: None,
        error: Some(BulkError {
            type_uri: ErrorCode::Conflict.type_uri(),
            detail,
            errors: Vec::new(),
        }),
    };
    let mut out: Vec<BulkResult> = (0..at)
        .map(|i| not_applied(i, format!("rolled back: operation {at} failed")))
        .collect();
    out.push(BulkResult {
        index: at,
        status: e.code.status(),
        resource: None,
        error: Some(bulk_error(&e)),
    });
    out.extend(
        (at + 1..req.operations.len())
            .map(|i| not_applied(i, format!("not attempted: operation {at} failed"))),
    );
    Ok(BulkResponse {
        atomic: true,
        committed: false,
        results: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1, 2]});
        merge_patch(&mut doc, &json!({"a": [3], "n": {"x": 1}}));
        assert_eq!(doc, json!({"a": [3], "n": {"x": 1}}));
    }

    #[test]
    fn diffs_name_each_changed_member() {
        let a = json!({"data": {"title": "a", "old": 1, "n": {"x": 1}}, "tags": ["t"]});
        let b = json!({"data": {"title": "b", "new": 2, "n": {"x": 1}}, "tags": ["t", "u"]});
        let d = diff_states(&a, &b);
        let got: Vec<(&str, &str)> = d.iter().map(|e| (e.op.as_str(), e.path.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("add", "/data/new"),
                ("remove", "/data/old"),
                ("replace", "/data/title"),
                ("replace", "/tags"),
            ]
        );
        assert!(diff_states(&a, &a).is_empty());
    }
}
