//! Links between resources under the kinds a type declares, and the delete rules those kinds
//! carry (`refuse`, `detach`, `cascade`) applied when a linked resource is deleted.

use chrono::Utc;
use diesel_async::AsyncPgConnection;
use serde_json::json;

use super::{
    Ctx, invalid, locked_type, plugin_of, readable, record_change, require, resource_event,
    seen_change,
};
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError, found};
use crate::ids::ResourceId;
use crate::resources::access::{Access, Action};
use crate::resources::repo;
use crate::resources::{Link, LinkInput, OnDelete, Resource, ResourceType};
use neotenant_runtime::Operation;

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
            let access = Access::of(ctx.caller);
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
            let access = Access::of(ctx.caller);
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
            let access = Access::of(ctx.caller);
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
pub(super) async fn apply_delete_rules(
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
                .map_or(OnDelete::Detach, |k| k.on_delete);
            match rule {
                OnDelete::Refuse => refusals.push(FieldError {
                    pointer: format!("/links/{}/{}", l.kind, ResourceId(l.from_id)),
                    message: format!(
                        "{} {} links here with `{}`, whose rule refuses the deletion",
                        l.from_type,
                        ResourceId(l.from_id),
                        l.kind
                    ),
                }),
                OnDelete::Detach => {
                    repo::delete_link(conn, l.from_id, &l.kind, l.to_id).await?;
                }
                OnDelete::Cascade => {
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
