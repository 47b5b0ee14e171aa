//! Feeds each tenant's search index from its outbox, rebuilds it from PostgreSQL, and answers
//! searches (with results re-checked against the database's visibility rule).
//!
//! Each round reads the events after the index's recorded cursor, loads the *current* state
//! of the resources they name (so replays and reorderings are harmless), and applies the
//! batch to the index in one commit that also records the new cursor. Killing the process
//! anywhere loses nothing: either the commit happened (cursor moved with the documents) or
//! the next round reads the same events again. Rebuild records the outbox head *before*
//! reading the resources, so changes made during a rebuild are replayed after it.
//! Tantivy work runs on the blocking pool, never on the async workers.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use diesel::sql_types::{Array, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use neotenant_search::{Doc, Registry, SearchQuery, Visibility};
use serde_json::Value;
use uuid::Uuid;

use super::ResourcesState;
use super::access::{Access, Action};
use super::repo::{self, Sql};
use super::{Resource, ResourceType};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult};
use crate::ids::{ResourceId, TeamId, UserId};
use crate::outbox::{self, Cursor};
use crate::rbac::Caller;
use crate::rbac::perm::Scope;

/// Events read per round (and resources loaded per batch).
const BATCH: i64 = 500;

pub use crate::ids::search_index_key as index_key;

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> neotenant_search::Result<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(internal)?
        .map_err(internal)
}

async fn open(
    registry: &Arc<Registry>,
    tenant: Uuid,
) -> ApiResult<Arc<neotenant_search::TenantIndex>> {
    let registry = registry.clone();
    blocking(move || registry.get(&index_key(tenant))).await
}

fn text_of(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|i| text_of(i, out)),
        _ => {}
    }
}

/// A share's (user, team).
type ShareTo = (Option<Uuid>, Option<Uuid>);

/// The index document of a resource under its type's definition.
fn doc_of(r: &Resource, t: Option<&ResourceType>, shares: &[ShareTo]) -> Doc {
    let searchable: &[String] = t.map_or(&[], |t| &t.searchable);
    let mut title = String::new();
    let mut body = String::new();
    if let Some(first) = searchable.first()
        && let Some(v) = r.data.get(first)
    {
        text_of(v, &mut title);
    }
    for f in searchable {
        if let Some(v) = r.data.get(f) {
            text_of(v, &mut body);
        }
    }
    let data = match &r.data {
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| !searchable.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        _ => Default::default(),
    };
    Doc {
        id: r.id.to_string(),
        type_name: r.type_name.clone(),
        title: title.trim_end().to_string(),
        body,
        data,
        tags: r.tags.clone(),
        category: r.category.clone(),
        owner: r.owner_id.to_string(),
        team: r.team_id.map(|t| t.to_string()),
        shared_users: shares
            .iter()
            .filter_map(|(u, _)| u.map(|u| UserId(u).to_string()))
            .collect(),
        shared_teams: shares
            .iter()
            .filter_map(|(_, t)| t.map(|t| TeamId(t).to_string()))
            .collect(),
        created: r.created_at.timestamp(),
        updated: r.updated_at.timestamp(),
    }
}

#[derive(diesel::QueryableByName)]
struct ShareRow {
    #[diesel(sql_type = SqlUuid)]
    resource_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Nullable<SqlUuid>)]
    user_id: Option<Uuid>,
    #[diesel(sql_type = diesel::sql_types::Nullable<SqlUuid>)]
    team_id: Option<Uuid>,
}

const COLUMNS: &str = "SELECT r.id, r.type AS type_, r.data, r.tags, r.category, r.owner_id, \
     r.team_id, r.version, r.created_at, r.updated_at, r.deleted_at FROM resources r";

/// Documents for the live resources among `ids`, and the ids to remove (deleted or gone).
async fn load(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
    types: &HashMap<String, ResourceType>,
) -> ApiResult<(Vec<Doc>, Vec<String>)> {
    let rows = repo::list(
        conn,
        Sql::new(&format!("{COLUMNS} WHERE r.id = ANY("))
            .bind::<Array<SqlUuid>, _>(ids.to_vec())
            .push(")"),
    )
    .await?;
    let shares: Vec<ShareRow> = diesel::sql_query(
        "SELECT resource_id, user_id, team_id FROM resource_shares WHERE resource_id = ANY($1)",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .load(conn)
    .await?;
    let mut by_resource: HashMap<Uuid, Vec<ShareTo>> = HashMap::new();
    for s in shares {
        by_resource
            .entry(s.resource_id)
            .or_default()
            .push((s.user_id, s.team_id));
    }
    let mut docs = Vec::new();
    for r in rows {
        if r.deleted_at.is_none() {
            let shares = by_resource.get(&r.id.0).map_or(&[][..], Vec::as_slice);
            docs.push(doc_of(&r, types.get(&r.type_name), shares));
        }
    }
    let live: HashSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    let deletes = ids
        .iter()
        .map(|id| ResourceId(*id).to_string())
        .filter(|id| !live.contains(id.as_str()))
        .collect();
    Ok((docs, deletes))
}

async fn type_map(conn: &mut AsyncPgConnection) -> ApiResult<HashMap<String, ResourceType>> {
    Ok(repo::types(conn)
        .await?
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect())
}

#[derive(diesel::QueryableByName)]
struct IdRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

/// Applies a tenant's outbox to its index until caught up (or `max_batches` batches were
/// applied); returns the events applied. A tenant without an index and without events is
/// left alone (no index is created for it).
pub async fn index_tenant(
    registry: &Arc<Registry>,
    tenant: Uuid,
    db: &TenantDb,
    max_batches: usize,
) -> ApiResult<usize> {
    let key = index_key(tenant);
    if !registry.exists(&key) {
        let any = db
            .transaction(async |tx| {
                Ok::<_, ApiError>(outbox::read_after(tx.conn(), Cursor::default(), 1).await?)
            })
            .await?;
        if any.is_empty() {
            return Ok(0);
        }
        // No index on disk for a tenant with history (new to this node, or its folder was
        // lost): built from PostgreSQL, not replayed from an outbox that may be pruned. An
        // index still open on a folder that is gone is closed first.
        registry.close(&key);
        tracing::info!(%tenant, "no search index on disk: rebuilding it");
        return rebuild(registry, tenant, db).await;
    }
    let index = open(registry, tenant).await?;
    let mut batches = 0;
    let mut cursor: Cursor = index
        .cursor()
        .map_err(internal)?
        .and_then(|p| serde_json::from_str(&p).ok())
        .unwrap_or_default();
    let mut applied = 0;
    loop {
        let Some((n, last, docs, deletes)) = db
            .transaction(async |tx| {
                let conn = tx.conn();
                let events = outbox::read_after(conn, cursor, BATCH).await?;
                crate::outbox::record_lag("search", &events);
                let Some(last) = events.last().map(|e| e.cursor()) else {
                    return Ok(None);
                };
                let mut ids = BTreeSet::new();
                let mut changed_types = BTreeSet::new();
                for e in &events {
                    if e.topic.starts_with("resource.") {
                        if let Ok(id) = e.aggregate_id.parse::<ResourceId>() {
                            ids.insert(id.0);
                        }
                    } else if e.topic == "resource_type.updated" {
                        changed_types.insert(e.aggregate_id.clone());
                    }
                }
                for t in changed_types {
                    // The type's searchable fields may have changed: re-derive all its documents.
                    let rows: Vec<IdRow> =
                        diesel::sql_query("SELECT id FROM resources WHERE type = $1")
                            .bind::<Text, _>(t)
                            .load(conn)
                            .await?;
                    ids.extend(rows.into_iter().map(|r| r.id));
                }
                let types = type_map(conn).await?;
                let ids: Vec<Uuid> = ids.into_iter().collect();
                let mut docs = Vec::new();
                let mut deletes = Vec::new();
                for chunk in ids.chunks(BATCH as usize) {
                    let (d, x) = load(conn, chunk, &types).await?;
                    docs.extend(d);
                    deletes.extend(x);
                }
                Ok::<_, ApiError>(Some((events.len(), last, docs, deletes)))
            })
            .await?
        else {
            return Ok(applied);
        };
        let payload = serde_json::to_string(&last).map_err(internal)?;
        let idx = index.clone();
        if let Err(e) = blocking(move || idx.apply(&docs, &deletes, &payload)).await {
            // Reopened from disk next round (rebuilt if its folder is gone).
            registry.close(&key);
            return Err(e);
        }
        cursor = last;
        applied += n;
        batches += 1;
        if (n as i64) < BATCH || batches >= max_batches {
            return Ok(applied);
        }
    }
}

/// Empties a tenant's index and refills it from PostgreSQL; returns the documents indexed.
pub async fn rebuild(registry: &Arc<Registry>, tenant: Uuid, db: &TenantDb) -> ApiResult<usize> {
    let index = open(registry, tenant).await?;
    let head = db
        .transaction(async |tx| Ok::<_, ApiError>(outbox::head(tx.conn()).await?))
        .await?;
    let payload = serde_json::to_string(&head).map_err(internal)?;
    let idx = index.clone();
    let p = payload.clone();
    blocking(move || idx.clear(&p)).await?;
    let mut after: Option<Uuid> = None;
    let mut total = 0;
    loop {
        let (ids, docs) = db
            .transaction(async |tx| {
                let conn = tx.conn();
                let types = type_map(conn).await?;
                let mut q = Sql::new("SELECT id FROM resources WHERE deleted_at IS NULL");
                if let Some(a) = after {
                    q = q.push(" AND id > ").bind::<SqlUuid, _>(a);
                }
                let q = q
                    .push(" ORDER BY id LIMIT ")
                    .bind::<diesel::sql_types::BigInt, _>(BATCH);
                let ids: Vec<Uuid> = q
                    .load::<IdRow>(conn)
                    .await?
                    .into_iter()
                    .map(|r| r.id)
                    .collect();
                let (docs, _) = load(conn, &ids, &types).await?;
                Ok::<_, ApiError>((ids, docs))
            })
            .await?;
        let Some(last) = ids.last() else { break };
        after = Some(*last);
        total += docs.len();
        let idx = index.clone();
        let p = payload.clone();
        blocking(move || idx.apply(&docs, &[], &p)).await?;
        if (ids.len() as i64) < BATCH {
            break;
        }
    }
    Ok(total)
}

/// Batches one tenant gets per round, so no tenant's backlog delays the others.
const BATCHES_PER_ROUND: usize = 4;
/// Tenants of the catch-up sweep visited per round.
const SWEEP_PER_ROUND: usize = 20;

/// Keeps indexes behind writes: every `index_interval_ms`, the tenants written to recently,
/// then a few of the catch-up list, which every `sweep_interval_secs` is refilled with all
/// tenants. One loop, so a tenant's index is never fed by two rounds at once; a tenant with a
/// long backlog gets a bounded share of each round and goes back to the end of the list.
pub async fn worker(state: Arc<ResourcesState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let cfg = state.config.search.clone();
    let every = Duration::from_millis(cfg.index_interval_ms);
    let mut round = tokio::time::interval(every);
    let mut sweep = tokio::time::interval(Duration::from_secs(cfg.sweep_interval_secs));
    for t in [&mut round, &mut sweep] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut pending: std::collections::VecDeque<(Uuid, TenantDb)> = Default::default();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = sweep.tick() => {
                pending = crate::audit::seal::all_tenants(&state.tenancy).await.into();
                continue;
            }
            _ = round.tick() => {}
        }
        let recent = state.audit_recent.tenants(Duration::from_secs(10) + every);
        let swept: Vec<_> = (0..SWEEP_PER_ROUND.min(pending.len()))
            .filter_map(|_| pending.pop_front())
            .collect();
        for (id, db) in recent.iter().chain(swept.iter()) {
            match index_tenant(&state.search, *id, db, BATCHES_PER_ROUND).await {
                Ok(n) if n >= BATCHES_PER_ROUND * BATCH as usize => {
                    // More to do: back to the end of the list.
                    if !pending.iter().any(|(p, _)| p == id) {
                        pending.push_back((*id, db.clone()));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(tenant = %id, error = %e.detail, cause = ?e.source, "search indexing failed; retrying next round");
                }
            }
        }
    }
}

/// A search as the API receives it.
#[derive(Debug, Default)]
pub struct Search {
    pub text: String,
    pub types: Vec<String>,
    pub tags: Vec<String>,
    pub category: Option<String>,
    pub owner: Option<UserId>,
    pub team: Option<TeamId>,
    pub created: (Option<i64>, Option<i64>),
    pub updated: (Option<i64>, Option<i64>),
    pub limit: usize,
    pub offset: usize,
}

/// Results: hits the caller may read (re-checked in PostgreSQL), total matches, facets.
pub async fn search(
    state: &ResourcesState,
    caller: &Caller,
    s: Search,
) -> ApiResult<neotenant_search::Results> {
    let tenant = caller.tenant_id().0;
    let access = Access::of(caller);
    let reach = if access.scope(Action::Read) == Some(Scope::Team) {
        access.team_reach()
    } else {
        &[]
    };
    let visibility = if access.reads_all() {
        Visibility::All
    } else {
        Visibility::Only {
            owner: UserId(access.me).to_string(),
            teams: reach.iter().map(|t| TeamId(*t).to_string()).collect(),
            shared_user: UserId(access.me).to_string(),
            shared_teams: access
                .ancestry()
                .iter()
                .map(|t| TeamId(*t).to_string())
                .collect(),
        }
    };
    let query = SearchQuery {
        text: s.text,
        types: s.types,
        tags: s.tags,
        category: s.category,
        owner: s.owner.map(|o| o.to_string()),
        team: s.team.map(|t| t.to_string()),
        created: s.created,
        updated: s.updated,
        visibility,
        limit: s.limit,
        offset: s.offset,
    };
    let index = open(&state.search, tenant).await?;
    let mut results = blocking(move || index.search(&query)).await?;
    // The index trails writes by a round: drop hits the caller can no longer read.
    let ids: Vec<Uuid> = results
        .hits
        .iter()
        .filter_map(|h| h.id.parse::<ResourceId>().ok().map(|r| r.0))
        .collect();
    if !ids.is_empty() {
        let visible: HashSet<String> = caller
            .db()
            .read(async |conn| {
                Ok::<_, ApiError>(
                    super::repo::live_ids(conn, ids, |q| access.read_predicate(q)).await?,
                )
            })
            .await?
            .into_iter()
            .map(|id| ResourceId(id).to_string())
            .collect();
        results.hits.retain(|h| visible.contains(&h.id));
    }
    Ok(results)
}
