//! Rules and transactions for resource types and resources. Every change runs in one tenant
//! transaction that also writes the version row, the audit entry and the outbox event; the
//! type's row is share-locked by writers and exclusively locked by type changes, so data is
//! always validated against the schema it is stored under.
//!
//! One file per part of the API: `resource_types`, `resources`, `versions`, `lists`, `shares`,
//! `links` and `bulk`. This file holds [`Ctx`] and what they share: loading a type or a
//! resource the caller may act on, and recording a change (version, audit entry, outbox
//! event). No SQL and no HTTP here: SQL is in `repo`, HTTP in `handlers`.

mod bulk;
mod links;
mod lists;
mod resource_types;
mod resources;
mod shares;
mod versions;

use diesel_async::AsyncPgConnection;
use serde_json::{Value, json};
use uuid::Uuid;

use super::ResourcesState;
use super::access::{Access, Action, Relation};
use super::hooks::{Seen, TypePlugin};
use super::repo;
use super::types;
use super::{DiffEntry, Resource, ResourceType};
use crate::audit::{self, Change};
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError, found};
use crate::ids::ResourceId;
use crate::rbac::Caller;
use neotenant_runtime::Operation;

pub use bulk::{BULK_MAX, bulk};
pub use links::{link, links, unlink};
pub use lists::{ListCursor, ListQuery, counts, list};
pub use resource_types::{create_type, delete_type, get_type, list_types, replace_type};
pub(crate) use resource_types::{create_type_in, delete_type_in, replace_type_in};
pub(super) use resources::create_row;
pub use resources::{TAGS_MAX, action, create, get, merge_patch, patch, replace, set_deleted};
pub use shares::{share, shares, unshare};
pub use versions::{diff, revert, version, versions};

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

/// The type (share-locked for the transaction) and a compiled validator for it.
async fn locked_type(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    name: &str,
) -> ApiResult<(ResourceType, std::sync::Arc<jsonschema::Validator>)> {
    if !types::is_name(name) {
        return Err(ApiError::not_found("resource type"));
    }
    // Pipelined: PostgreSQL runs the read after the lock is granted (so it sees the type
    // as of then), without a round trip between them.
    let (_, t) = futures::future::try_join(
        repo::lock_type(conn, name, false),
        repo::get_type(conn, name),
    )
    .await?;
    let t = found(t, "resource type")?;
    let v = ctx
        .state
        .resource_validators
        .get(ctx.tenant(), &t.name, t.version, &t.schema)
        .map_err(ApiError::internal)?;
    Ok((t, v))
}

/// Loads a resource the caller may read (404 otherwise, never 403: its existence is not
/// revealed), with their relation to it.
async fn readable(
    conn: &AsyncPgConnection,
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

async fn record_change(
    ctx: &Ctx<'_>,
    conn: &AsyncPgConnection,
    r: &Resource,
    change: &'static str,
    before: Option<&Resource>,
) -> ApiResult<()> {
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
    // The three rows are independent: they go out pipelined, in one round trip.
    let actor = ctx.actor_id();
    futures::future::try_join(
        async { Ok(repo::insert_version(conn, r, change, Some(&actor)).await?) },
        resource_event(ctx, conn, r, action, data),
    )
    .await?;
    Ok(())
}

/// Records a resource-level event (a new version, a share, a link): an audit entry and an
/// outbox event (so the index re-derives the resource), in the caller's transaction.
async fn resource_event(
    ctx: &Ctx<'_>,
    conn: &AsyncPgConnection,
    r: &Resource,
    action: &'static str,
    data: Value,
) -> ApiResult<()> {
    let id = r.id.to_string();
    // Independent rows: pipelined, one round trip.
    futures::future::try_join(
        audit::record(
            conn,
            &ctx.caller.actor,
            Change {
                action,
                target_type: "resource",
                target_id: Some(id.clone()),
                data,
            },
        ),
        crate::outbox::emit(
            conn,
            action,
            &r.type_name,
            &id,
            json!({"version": r.version}),
        ),
    )
    .await?;
    Ok(())
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

/// The comparable state of a resource or version: data, tags, category, deleted.
fn state_of(r: &Resource) -> Value {
    json!({"data": r.data, "tags": r.tags, "category": r.category, "team_id": r.team_id,
           "deleted": r.deleted_at.is_some()})
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

#[cfg(test)]
mod tests {
    use super::*;

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
