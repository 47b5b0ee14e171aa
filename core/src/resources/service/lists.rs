//! Lists of a type's resources the caller may read: filters on tags, category, owner, team
//! and declared filterable fields, sorts on declared sortable fields, keyset cursors; and
//! counts by tag or category. Which rows are visible is `access`'s rule; the SQL is `repo`'s.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use uuid::Uuid;

use super::Ctx;
use crate::error::{ApiError, ApiResult, ErrorCode, found};
use crate::resources::access::Access;
use crate::resources::repo;
use crate::resources::types;
use crate::resources::{Resource, ResourceType};

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
    if !types::is_name(type_name) {
        return Err(ApiError::not_found("resource type"));
    }
    let access = Access::of(ctx.caller);
    let visible = |sql: repo::Sql| access.read_predicate(sql);
    let (mut rows, sort_field) = ctx
        .db()
        .read(async |conn| {
            let (rows, sort_field) = if q.filters.is_empty() && q.sort.is_none() {
                // Nothing in the page's SQL depends on the type: read both in one round trip.
                let (t, rows) = futures::future::try_join(
                    repo::get_type(conn, type_name),
                    repo::page(conn, &page(type_name, q, None, None), visible),
                )
                .await?;
                found(t, "resource type")?;
                (rows, None)
            } else {
                let t = found(repo::get_type(conn, type_name).await?, "resource type")?;
                let contains = filters(&t, &q.filters)?;
                let sort = sort(&t, q.sort.as_deref())?;
                let rows = repo::page(
                    conn,
                    &page(type_name, q, contains, sort.map(|(f, desc)| (&t, f, desc))),
                    visible,
                )
                .await?;
                (rows, sort.map(|(f, _)| f))
            };
            Ok::<_, ApiError>((rows, sort_field))
        })
        .await?;
    let next = if rows.len() as i64 > q.limit {
        rows.truncate(q.limit as usize);
        rows.last().map(|last| {
            crate::cursor::encode_cursor(&ListCursor {
                v: sort_field.and_then(|f| sort_value(last, f)),
                id: last.id.0,
            })
        })
    } else {
        None
    };
    Ok((rows, next))
}

/// The page `q` asks for (one row more than its limit, to know whether another follows).
fn page<'a>(
    type_name: &'a str,
    q: &'a ListQuery,
    contains: Option<Value>,
    sort: Option<(&'a ResourceType, &'a str, bool)>,
) -> repo::Page<'a> {
    repo::Page {
        type_name,
        deleted: q.deleted,
        tags: &q.tags,
        category: q.category.as_deref(),
        owner: q.owner,
        team: q.team,
        contains,
        sort,
        after: q.after.as_ref().map(|c| (c.v.as_ref(), c.id)),
        limit: q.limit + 1,
    }
}

/// The JSON object the data must contain for `filters` (equality on filterable fields).
fn filters(t: &ResourceType, filters: &BTreeMap<String, String>) -> ApiResult<Option<Value>> {
    if filters.is_empty() {
        return Ok(None);
    }
    let mut obj = serde_json::Map::new();
    for (f, raw) in filters {
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
        obj.insert(f.clone(), filter_value(t, f, raw)?);
    }
    Ok(Some(Value::Object(obj)))
}

/// The sortable field `sort` names (`-` prefixed for descending) and its direction.
fn sort<'s>(t: &ResourceType, sort: Option<&'s str>) -> ApiResult<Option<(&'s str, bool)>> {
    let Some(s) = sort else { return Ok(None) };
    let (desc, field) = match s.strip_prefix('-') {
        Some(f) => (true, f),
        None => (false, s),
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
    Ok(Some((field, desc)))
}

/// Counts of live, visible resources of a type by tag or by category.
pub async fn counts(ctx: &Ctx<'_>, type_name: &str, by_tag: bool) -> ApiResult<Vec<(String, i64)>> {
    if !types::is_name(type_name) {
        return Err(ApiError::not_found("resource type"));
    }
    let access = Access::of(ctx.caller);
    ctx.db()
        .read(async |conn| {
            let (t, counts) = futures::future::try_join(
                repo::get_type(conn, type_name),
                repo::counts(conn, type_name, by_tag, |sql| access.read_predicate(sql)),
            )
            .await?;
            found(t, "resource type")?;
            Ok(counts.into_iter().map(|c| (c.value, c.count)).collect())
        })
        .await
}
