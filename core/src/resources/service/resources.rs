//! Resources: create, read, replace, patch, soft-delete and restore, and a plugin type's
//! custom actions. Data is validated against the type's schema (and its plugin), the team a
//! resource is put in must be in the caller's reach, and `If-Match` guards every change.

use chrono::Utc;
use diesel_async::AsyncPgConnection;
use serde_json::{Value, json};

use super::links::apply_delete_rules;
use super::{
    Ctx, check_if_match, invalid, locked_type, plugin_of, readable, record_change, require,
    seen_change, state_of,
};
use crate::audit::{self, Change};
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::ids::{ResourceId, TeamId};
use crate::resources::access::{Access, Action};
use crate::resources::repo::{self, ResourceRow};
use crate::resources::types;
use crate::resources::{ActionOutcome, Resource, ResourceInput, ResourcePatch};
use neotenant_runtime::Operation;

pub const TAGS_MAX: usize = 50;

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
        && !access.in_team_reach(Some(team.0))
    {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "you can only put resources in your own teams (or teams below them)",
        ));
    }
    Ok(())
}

pub async fn create(ctx: &Ctx<'_>, type_name: &str, input: &ResourceInput) -> ApiResult<Resource> {
    ctx.db()
        .transaction(async |tx| create_in(ctx, tx.conn(), type_name, input).await)
        .await
}

/// Creates one resource inside the caller's transaction (imports).
pub(in crate::resources) async fn create_row(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    type_name: &str,
    input: &ResourceInput,
) -> ApiResult<Resource> {
    create_in(ctx, conn, type_name, input).await
}

pub(super) async fn create_in(
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
        let access = Access::of(ctx.caller);
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

pub async fn get(
    ctx: &Ctx<'_>,
    type_name: &str,
    id: ResourceId,
    deleted: bool,
) -> ApiResult<Resource> {
    let access = Access::of(ctx.caller);
    ctx.db()
        .read(async |conn| {
            let (r, _) = readable(conn, &access, type_name, id, false).await?;
            if r.deleted_at.is_some() && !deleted {
                return Err(ApiError::not_found("resource"));
            }
            Ok(r)
        })
        .await
}

/// What an update changes.
pub(super) enum Edit<'a> {
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

pub(super) async fn edit_in(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    type_name: &str,
    id: ResourceId,
    if_match: Option<&str>,
    change: Edit<'_>,
) -> ApiResult<Resource> {
    let (t, validator) = locked_type(ctx, conn, type_name).await?;
    let access = Access::of(ctx.caller);
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

pub(super) async fn set_deleted_in(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    type_name: &str,
    id: ResourceId,
    if_match: Option<&str>,
    deleted: bool,
) -> ApiResult<Resource> {
    let (t, _) = locked_type(ctx, conn, type_name).await?;
    let access = Access::of(ctx.caller);
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
            let access = Access::of(ctx.caller);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1, 2]});
        merge_patch(&mut doc, &json!({"a": [3], "n": {"x": 1}}));
        assert_eq!(doc, json!({"a": [3], "n": {"x": 1}}));
    }
}
