//! SQL for lists of a type's resources: a page (filters, the caller's visibility, a sort and
//! a keyset cursor), counts by tag or category, and the sort indexes that serve sorted pages.
//! The only text spliced in is a sort expression, built from a field `types::is_field` passed.

use diesel::prelude::*;
use diesel::sql_types::{Array, Jsonb, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use serde_json::Value;
use uuid::Uuid;

use super::{ResourceRow, Sql};
use crate::resources::types::{is_field, is_name};
use crate::resources::{Resource, ResourceType};

/// Name of the index that sorts live resources of `type_name` by `field`.
fn sort_index_name(type_name: &str, field: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{type_name}\0{field}").as_bytes());
    format!("resources_sort_{}", hex::encode(&digest[..10]))
}

/// The SQL expression a sortable field sorts by (rows aliased `r`), typed as its schema
/// declares. `field` has passed `is_field`, so it is safe as a literal.
fn sort_expr(t: &ResourceType, field: &str) -> String {
    let numeric = t
        .schema
        .pointer(&format!("/properties/{field}/type"))
        .is_some_and(|ty| ty == "number" || ty == "integer");
    if numeric {
        // Never throws: a value that is not a JSON number (an old row while a migration
        // mends it, say) sorts as absent.
        format!(
            "(CASE WHEN jsonb_typeof(r.data -> '{field}') = 'number' \
             THEN (r.data ->> '{field}')::numeric END)"
        )
    } else {
        format!("((r.data ->> '{field}') COLLATE \"C\")")
    }
}

/// Creates the sort indexes a type declares and drops the ones its previous definition
/// (`old`) declared.
pub async fn sync_sort_indexes(
    conn: &mut AsyncPgConnection,
    t: &ResourceType,
    old: Option<&ResourceType>,
) -> QueryResult<()> {
    let mut sql = String::new();
    if let Some(old) = old {
        for f in &old.sortable {
            sql.push_str(&format!(
                "DROP INDEX IF EXISTS {};",
                sort_index_name(&old.name, f)
            ));
        }
    }
    for f in &t.sortable {
        debug_assert!(is_field(f) && is_name(&t.name));
        let expr = sort_expr(t, f).replace("r.data", "data");
        sql.push_str(&format!(
            "CREATE INDEX IF NOT EXISTS {} ON resources ({expr}, id) \
             WHERE type = '{}' AND deleted_at IS NULL;",
            sort_index_name(&t.name, f),
            t.name
        ));
    }
    if !sql.is_empty() {
        conn.batch_execute(&sql).await?;
    }
    Ok(())
}

/// Drops the sort indexes of a type that is going away.
pub async fn drop_sort_indexes(conn: &mut AsyncPgConnection, t: &ResourceType) -> QueryResult<()> {
    let mut drop = String::new();
    for f in &t.sortable {
        drop.push_str(&format!(
            "DROP INDEX IF EXISTS {};",
            sort_index_name(&t.name, f)
        ));
    }
    if !drop.is_empty() {
        conn.batch_execute(&drop).await?;
    }
    Ok(())
}

/// One page of a type's resources as a list asks for it. The service checked every field
/// against the type (filterable, sortable) first.
pub struct Page<'a> {
    pub type_name: &'a str,
    /// Soft-deleted resources instead of live ones.
    pub deleted: bool,
    /// Tags a resource must all have.
    pub tags: &'a [String],
    pub category: Option<&'a str>,
    pub owner: Option<Uuid>,
    pub team: Option<Uuid>,
    /// A JSON object the data must contain (equality on filterable fields).
    pub contains: Option<Value>,
    /// A sortable field of the type, and whether it sorts descending; by id when absent.
    pub sort: Option<(&'a ResourceType, &'a str, bool)>,
    /// Where the previous page ended: the sort value (when sorting by a field) and the id.
    pub after: Option<(Option<&'a Value>, Uuid)>,
    /// Rows to read at most.
    pub limit: i64,
}

/// Reads one page; `visible` appends the caller's visibility predicate (rows aliased `r`).
/// Ascending, rows with a value come first and rows without the field last; descending is
/// the exact reverse (rows without the field first), so both walk the sort index one way or
/// the other.
pub async fn page(
    conn: &AsyncPgConnection,
    p: &Page<'_>,
    visible: impl FnOnce(Sql) -> Sql,
) -> QueryResult<Vec<Resource>> {
    let mut sql = Sql::new(
        "SELECT r.id, r.type AS type_, r.data, r.tags, r.category, r.owner_id, r.team_id, \
         r.version, r.created_at, r.updated_at, r.deleted_at FROM resources r WHERE r.type = ",
    )
    .bind::<Text, _>(p.type_name.to_string())
    .push(if p.deleted {
        " AND r.deleted_at IS NOT NULL"
    } else {
        " AND r.deleted_at IS NULL"
    });
    sql = visible(sql);
    if !p.tags.is_empty() {
        sql = sql
            .push(" AND r.tags @> ")
            .bind::<Array<Text>, _>(p.tags.to_vec());
    }
    if let Some(c) = p.category {
        sql = sql
            .push(" AND r.category = ")
            .bind::<Text, _>(c.to_string());
    }
    if let Some(o) = p.owner {
        sql = sql.push(" AND r.owner_id = ").bind::<SqlUuid, _>(o);
    }
    if let Some(team) = p.team {
        sql = sql.push(" AND r.team_id = ").bind::<SqlUuid, _>(team);
    }
    if let Some(obj) = &p.contains {
        sql = sql.push(" AND r.data @> ").bind::<Jsonb, _>(obj.clone());
    }
    let sort = p.sort.map(|(t, field, desc)| (desc, sort_expr(t, field)));
    match (&sort, &p.after) {
        (None, Some((_, id))) => sql = sql.push(" AND r.id > ").bind::<SqlUuid, _>(*id),
        (Some((desc, expr)), Some((v, id))) => {
            let cast = if expr.contains("::numeric") {
                "::numeric"
            } else {
                " COLLATE \"C\""
            };
            let text = v.map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            sql = match (desc, text) {
                (false, None) => sql
                    .push(&format!(" AND {expr} IS NULL AND r.id > "))
                    .bind::<SqlUuid, _>(*id),
                (true, None) => sql
                    .push(&format!(" AND ({expr} IS NOT NULL OR r.id < "))
                    .bind::<SqlUuid, _>(*id)
                    .push(")"),
                (false, Some(v)) => sql
                    .push(&format!(" AND (({expr}, r.id) > (("))
                    .bind::<Text, _>(v)
                    .push(&format!("){cast}, "))
                    .bind::<SqlUuid, _>(*id)
                    .push(&format!(") OR {expr} IS NULL)")),
                (true, Some(v)) => sql
                    .push(&format!(" AND ({expr}, r.id) < (("))
                    .bind::<Text, _>(v)
                    .push(&format!("){cast}, "))
                    .bind::<SqlUuid, _>(*id)
                    .push(")"),
            };
        }
        _ => {}
    }
    sql = match &sort {
        None => sql.push(" ORDER BY r.id"),
        Some((false, expr)) => sql.push(&format!(" ORDER BY {expr} ASC NULLS LAST, r.id ASC")),
        Some((true, expr)) => sql.push(&format!(" ORDER BY {expr} DESC NULLS FIRST, r.id DESC")),
    };
    sql = sql
        .push(" LIMIT ")
        .bind::<diesel::sql_types::BigInt, _>(p.limit);
    list(conn, sql).await
}

/// Runs a query that selects whole resource rows (aliased `r`).
pub async fn list(mut conn: &AsyncPgConnection, q: Sql) -> QueryResult<Vec<Resource>> {
    Ok(q.load::<ResourceRow>(&mut conn)
        .await?
        .into_iter()
        .map(Resource::from)
        .collect())
}

/// Which of `ids` are live resources that `visible` lets through (it appends the caller's
/// visibility predicate on `r`): the database re-check of a search page.
pub async fn live_ids(
    mut conn: &AsyncPgConnection,
    ids: Vec<Uuid>,
    visible: impl FnOnce(Sql) -> Sql,
) -> QueryResult<Vec<Uuid>> {
    #[derive(QueryableByName)]
    struct IdRow {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let q = Sql::new("SELECT r.id FROM resources r WHERE r.deleted_at IS NULL AND r.id = ANY(")
        .bind::<Array<SqlUuid>, _>(ids)
        .push(")");
    Ok(visible(q)
        .load::<IdRow>(&mut conn)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect())
}

#[derive(QueryableByName)]
pub struct CountRow {
    #[diesel(sql_type = Text)]
    pub value: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub count: i64,
}

/// Counts of a type's live resources by tag (`by_tag`) or by category, the largest first
/// (at most 1,000); `visible` appends the caller's visibility predicate.
pub async fn counts(
    mut conn: &AsyncPgConnection,
    type_name: &str,
    by_tag: bool,
    visible: impl FnOnce(Sql) -> Sql,
) -> QueryResult<Vec<CountRow>> {
    let head = if by_tag {
        "SELECT tag AS value, count(*) AS count FROM resources r, unnest(r.tags) AS tag WHERE r.type = "
    } else {
        "SELECT r.category AS value, count(*) AS count FROM resources r WHERE r.category IS NOT NULL AND r.type = "
    };
    let sql = Sql::new(head)
        .bind::<Text, _>(type_name.to_string())
        .push(" AND r.deleted_at IS NULL");
    visible(sql)
        .push(" GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1000")
        .load::<CountRow>(&mut conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_index_names_fit_postgres() {
        let n = sort_index_name(&"t".repeat(63), &"f".repeat(63));
        assert!(n.len() <= 63 && crate::db::is_identifier(&n));
        assert_ne!(sort_index_name("a", "bc"), sort_index_name("ab", "c"));
    }
}
