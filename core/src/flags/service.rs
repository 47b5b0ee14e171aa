//! The rules of feature flags: every write (create, replace, merge patch, kill switch,
//! delete, rollback, scheduled change; segments alike) goes through one path that locks the
//! tenant's flag writers, checks the document against the tenant's environments, known
//! attributes, segments and other flags (every problem in one 422), refuses prerequisite
//! cycles and deletions others depend on, and writes the new version with its diff, audit
//! entry and outbox event and a new flag generation in one transaction — announced to every
//! instance after commit. Evaluation reads the cached [`FlagSet`].
//!
//! Never evaluates from the database on the hot path; never stores an SDK key in clear.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::Utc;
use diesel_async::AsyncPgConnection;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::repo::{self, HistoryRow, Kind, Row};
use super::{
    BUILT_IN_ATTRIBUTES, EvaluationView, FlagSet, FlagView, FlagsState, NewSchedule,
    SDK_KEY_PREFIX, ScheduleView, SdkKeyView, SegmentView, VersionView,
};
use crate::audit::{self, Actor, Change};
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::rbac::Caller;
use crate::settings::{Author, diff};
use crate::tenancy::cache::ResolvedTenant;

/// Flags and segments a tenant may have.
pub const MAX_FLAGS: usize = 2_000;
/// Largest definition accepted.
const MAX_DEFINITION_BYTES: usize = 256 * 1024;

fn problems(list: Vec<neotenant_flags::Problem>) -> ApiError {
    ApiError::validation(
        list.into_iter()
            .map(|p| FieldError {
                pointer: p.pointer,
                message: p.message,
            })
            .collect(),
    )
}

/// The tenant's flag set: from the cache, else loaded (then cached).
pub async fn flag_set(state: &FlagsState, tenant: &ResolvedTenant) -> ApiResult<Arc<FlagSet>> {
    if let Some(hit) = state.cache.get(tenant.tenant.id.0) {
        return Ok(hit);
    }
    let (generation, flags, segments, keys) = tenant
        .db
        .transaction(async |tx| {
            let conn = tx.conn();
            let generation = repo::generation(conn).await?;
            let flags = repo::all(conn, Kind::Flag).await?;
            let segments = repo::all(conn, Kind::Segment).await?;
            let keys = repo::sdk_keys(conn, &[], true).await?;
            Ok::<_, ApiError>((generation, flags, segments, keys))
        })
        .await?;
    fn parse<T: serde::de::DeserializeOwned>(rows: Vec<Row>, what: &str) -> Vec<T> {
        rows.into_iter()
            .filter_map(|r| match serde_json::from_value(r.definition) {
                Ok(v) => Some(v),
                Err(error) => {
                    // Stored documents passed validation; one that no longer parses is skipped
                    // (evaluating it answers FLAG_NOT_FOUND) rather than failing every flag.
                    tracing::warn!(key = %r.key, %error, what, "a stored flag document does not parse");
                    None
                }
            })
            .collect()
    }
    let flags: Vec<neotenant_flags::Flag> = parse(flags, "flag");
    let segments: Vec<neotenant_flags::Segment> = parse(segments, "segment");
    let sdk_keys = keys
        .into_iter()
        .filter_map(|k| {
            <[u8; 32]>::try_from(k.digest)
                .ok()
                .map(|d| (d, k.environment))
        })
        .collect();
    let set = Arc::new(FlagSet {
        generation,
        snapshot: neotenant_flags::Snapshot::new(flags, segments),
        sdk_keys,
    });
    state.cache.put(tenant.tenant.id.0, set.clone());
    Ok(set)
}

fn flag_view(r: Row) -> FlagView {
    FlagView {
        key: r.key,
        version: r.version,
        definition: r.definition,
        created_at: r.created_at,
        updated_at: r.updated_at,
        updated_by: r.updated_by.map(crate::ids::UserId),
    }
}

fn segment_view(r: Row) -> SegmentView {
    SegmentView {
        key: r.key,
        version: r.version,
        definition: r.definition,
        updated_at: r.updated_at,
        updated_by: r.updated_by.map(crate::ids::UserId),
    }
}

async fn page(
    tenant: &ResolvedTenant,
    kind: Kind,
    after: Option<&str>,
    limit: u32,
) -> ApiResult<Vec<Row>> {
    tenant
        .db
        .transaction(async |tx| {
            Ok::<_, ApiError>(repo::page(tx.conn(), kind, after, i64::from(limit)).await?)
        })
        .await
}

/// Flags by key, after `after`.
pub async fn list_flags(
    tenant: &ResolvedTenant,
    after: Option<&str>,
    limit: u32,
) -> ApiResult<Vec<FlagView>> {
    Ok(page(tenant, Kind::Flag, after, limit)
        .await?
        .into_iter()
        .map(flag_view)
        .collect())
}

/// Segments by key, after `after`.
pub async fn list_segments(
    tenant: &ResolvedTenant,
    after: Option<&str>,
    limit: u32,
) -> ApiResult<Vec<SegmentView>> {
    Ok(page(tenant, Kind::Segment, after, limit)
        .await?
        .into_iter()
        .map(segment_view)
        .collect())
}

async fn row(tenant: &ResolvedTenant, kind: Kind, key: &str) -> ApiResult<Row> {
    tenant
        .db
        .transaction(async |tx| Ok::<_, ApiError>(repo::get(tx.conn(), kind, key, false).await?))
        .await?
        .ok_or_else(|| ApiError::not_found(kind.as_str()))
}

pub async fn get_flag(tenant: &ResolvedTenant, key: &str) -> ApiResult<FlagView> {
    Ok(flag_view(row(tenant, Kind::Flag, key).await?))
}

pub async fn get_segment(tenant: &ResolvedTenant, key: &str) -> ApiResult<SegmentView> {
    Ok(segment_view(row(tenant, Kind::Segment, key).await?))
}

/// What a document is checked against, read inside the write's transaction.
struct Known {
    attributes: BTreeSet<String>,
    segments: BTreeSet<String>,
    /// Other flags: key → variant names, and key → prerequisite keys.
    variants: HashMap<String, Vec<String>>,
    prerequisites: HashMap<String, Vec<String>>,
    environments: Vec<String>,
    flag_count: usize,
    segment_count: usize,
}

async fn known(
    state: &FlagsState,
    conn: &mut AsyncPgConnection,
    except: (Kind, &str),
) -> ApiResult<Known> {
    let (settings, _) = crate::settings::repo::current(conn, false).await?;
    let eff =
        crate::settings::Effective::build(&state.settings.catalogue, settings.as_ref(), None, "");
    let mut attributes: BTreeSet<String> =
        BUILT_IN_ATTRIBUTES.iter().map(|s| s.to_string()).collect();
    attributes.extend(eff.flag_attributes.iter().cloned());
    if let Some(schema) = crate::users::repo::attribute_schema(conn).await?
        && let Some(props) = schema.schema.get("properties").and_then(Value::as_object)
    {
        attributes.extend(props.keys().cloned());
    }
    let flags = repo::all(conn, Kind::Flag).await?;
    let segments = repo::all(conn, Kind::Segment).await?;
    let flag_count = flags.len();
    let segment_count = segments.len();
    let mut variants = HashMap::new();
    let mut prerequisites = HashMap::new();
    for f in flags {
        if except == (Kind::Flag, f.key.as_str()) {
            continue;
        }
        if let Ok(flag) = serde_json::from_value::<neotenant_flags::Flag>(f.definition) {
            variants.insert(flag.key.clone(), flag.variants.keys().cloned().collect());
            prerequisites.insert(
                flag.key.clone(),
                flag.prerequisites.iter().map(|p| p.flag.clone()).collect(),
            );
        }
    }
    Ok(Known {
        attributes,
        segments: segments
            .into_iter()
            .map(|s| s.key)
            .filter(|k| except != (Kind::Segment, k.as_str()))
            .collect(),
        variants,
        prerequisites,
        environments: eff.flag_environments,
        flag_count,
        segment_count,
    })
}

/// Every problem of a flag document with key `key`; its normalised JSON when there is none.
fn check_flag(known: &Known, key: &str, doc: Value) -> ApiResult<Value> {
    let size = serde_json::to_vec(&doc).map_or(usize::MAX, |v| v.len());
    if size > MAX_DEFINITION_BYTES {
        return Err(ApiError::validation(vec![FieldError {
            pointer: String::new(),
            message: format!("a flag may take at most {MAX_DEFINITION_BYTES} bytes"),
        }]));
    }
    let flag: neotenant_flags::Flag = crate::error::from_json(doc, "")?;
    if flag.key != key {
        return Err(ApiError::validation(vec![FieldError {
            pointer: "/key".into(),
            message: format!("must be `{key}`, the key in the path"),
        }]));
    }
    let mut found = neotenant_flags::validate(
        &flag,
        &neotenant_flags::ValidationContext {
            known_attributes: &known.attributes,
            segments: &known.segments,
            flags: &known.variants,
            environments: &known.environments,
        },
    );
    let mut graph = known.prerequisites.clone();
    graph.insert(
        flag.key.clone(),
        flag.prerequisites.iter().map(|p| p.flag.clone()).collect(),
    );
    if let Some(cycle) = neotenant_flags::prerequisite_cycle(&graph) {
        found.push(neotenant_flags::Problem {
            pointer: "/prerequisites".into(),
            message: format!("the prerequisites form a cycle: {}", cycle.join(" → ")),
        });
    }
    if !found.is_empty() {
        return Err(problems(found));
    }
    serde_json::to_value(&flag).map_err(ApiError::internal)
}

fn check_segment(known: &Known, key: &str, doc: Value) -> ApiResult<Value> {
    let segment: neotenant_flags::Segment = crate::error::from_json(doc, "")?;
    if segment.key != key {
        return Err(ApiError::validation(vec![FieldError {
            pointer: "/key".into(),
            message: format!("must be `{key}`, the key in the path"),
        }]));
    }
    let found = neotenant_flags::validate_segment(&segment, &known.attributes, &known.segments);
    if !found.is_empty() {
        return Err(problems(found));
    }
    serde_json::to_value(&segment).map_err(ApiError::internal)
}

/// Who writes, and why.
pub struct Writer<'a> {
    pub actor: &'a Actor,
    pub author: Author,
    pub reason: String,
}

impl<'a> Writer<'a> {
    pub fn caller(caller: &'a Caller) -> Self {
        Writer {
            actor: &caller.actor,
            author: Author::of(caller),
            reason: String::new(),
        }
    }
}

/// What an edit does to the current document (`None`: absent / delete).
pub type Edit<'e> = Box<dyn FnOnce(Option<&Value>) -> ApiResult<Option<Value>> + Send + 'e>;

/// The one write path, inside the caller's transaction: returns the new row (`None` when
/// deleted) and the new generation, or the unchanged row and `None` when nothing changed.
pub async fn write_in(
    state: &FlagsState,
    conn: &mut AsyncPgConnection,
    writer: &Writer<'_>,
    kind: Kind,
    key: &str,
    if_match: Option<&str>,
    edit: Edit<'_>,
) -> ApiResult<(Option<Row>, Option<i64>)> {
    repo::lock_writers(conn).await?;
    let current = repo::get(conn, kind, key, true).await?;
    if let Some(c) = &current {
        let etag = format!("\"{}{}\"", &kind.as_str()[..1], c.version);
        if !crate::error::if_match_admits(if_match, &etag) {
            return Err(ApiError::new(
                ErrorCode::PreconditionFailed,
                format!(
                    "the {} is at version {} (ETag {etag}); reload it and retry",
                    kind.as_str(),
                    c.version
                ),
            ));
        }
    }
    let before = current.as_ref().map(|c| c.definition.clone());
    let proposed = edit(before.as_ref())?;
    // An If-Match naming a version of a document that does not exist: an edit that needs it
    // (a change, a delete) answered 404 above or answers it below; one that would create it
    // (a PUT) must not, and fails its precondition (RFC 9110 §13.1.1).
    if current.is_none() && proposed.is_some() && if_match.is_some_and(|m| m.trim() != "*") {
        return Err(ApiError::new(
            ErrorCode::PreconditionFailed,
            format!(
                "the {} does not exist, so no version matches If-Match",
                kind.as_str()
            ),
        ));
    }
    let known = known(state, conn, (kind, key)).await?;
    let after = match proposed {
        Some(doc) => Some(match kind {
            Kind::Flag => check_flag(&known, key, doc)?,
            Kind::Segment => check_segment(&known, key, doc)?,
        }),
        None => {
            if current.is_none() {
                return Err(ApiError::not_found(kind.as_str()));
            }
            // Nothing may depend on what goes.
            let users = dependants(&known, kind, key, conn).await?;
            if !users.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "the {} `{key}` is used by the flags {}; change them first",
                        kind.as_str(),
                        users.join(", ")
                    ),
                ));
            }
            None
        }
    };
    if current.is_none() {
        let count = match kind {
            Kind::Flag => known.flag_count,
            Kind::Segment => known.segment_count,
        };
        if count >= MAX_FLAGS {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("a tenant may have at most {MAX_FLAGS} {}s", kind.as_str()),
            ));
        }
    }
    let changes = diff::diff(
        before.as_ref().unwrap_or(&Value::Null),
        after.as_ref().unwrap_or(&Value::Null),
    );
    if changes.is_empty() {
        return Ok((current, None));
    }
    let version = repo::last_version(conn, kind, key).await? + 1;
    let history = HistoryRow {
        version,
        definition: after.clone(),
        diff: serde_json::to_value(&changes).map_err(ApiError::internal)?,
        author_id: writer.author.id.map(|u| u.0),
        author_name: writer.author.name.clone(),
        reason: writer.reason.clone(),
        at: Utc::now(),
    };
    repo::put(
        conn,
        kind,
        key,
        version,
        after.as_ref(),
        writer.author.id.map(|u| u.0),
    )
    .await?;
    repo::add_history(conn, kind, key, &history).await?;
    let generation = repo::bump(conn).await?;
    let action = match (kind, &after, &current) {
        (Kind::Flag, None, _) => "flag.deleted",
        (Kind::Flag, Some(_), None) => "flag.created",
        (Kind::Flag, Some(_), Some(_)) => "flag.changed",
        (Kind::Segment, None, _) => "flag_segment.deleted",
        (Kind::Segment, Some(_), None) => "flag_segment.created",
        (Kind::Segment, Some(_), Some(_)) => "flag_segment.changed",
    };
    audit::record(
        conn,
        writer.actor,
        Change {
            action,
            target_type: kind.as_str(),
            target_id: Some(key.to_string()),
            data: json!({"version": version, "reason": writer.reason, "diff": changes}),
        },
    )
    .await?;
    let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    crate::outbox::emit(
        conn,
        action,
        kind.as_str(),
        key,
        json!({"key": key, "version": version, "generation": generation, "paths": paths,
               "reason": writer.reason}),
    )
    .await?;
    let row = repo::get(conn, kind, key, false).await?;
    Ok((row, Some(generation)))
}

/// Flags that name `key` (a flag as prerequisite, a segment in a condition).
async fn dependants(
    known: &Known,
    kind: Kind,
    key: &str,
    conn: &mut AsyncPgConnection,
) -> ApiResult<Vec<String>> {
    Ok(match kind {
        Kind::Flag => {
            let mut users: Vec<String> = known
                .prerequisites
                .iter()
                .filter(|(_, pre)| pre.iter().any(|p| p == key))
                .map(|(k, _)| k.clone())
                .collect();
            users.sort();
            users
        }
        Kind::Segment => repo::all(conn, Kind::Flag)
            .await?
            .into_iter()
            .filter(|f| uses_segment(&f.definition, key))
            .map(|f| f.key)
            .collect(),
    })
}

/// Whether a flag document names segment `key` in a segment condition.
fn uses_segment(def: &Value, key: &str) -> bool {
    let Some(envs) = def.get("environments").and_then(Value::as_object) else {
        return false;
    };
    envs.values()
        .filter_map(|e| e.get("rules").and_then(Value::as_array))
        .flatten()
        .filter_map(|r| r.get("conditions").and_then(Value::as_array))
        .flatten()
        .filter(|c| {
            matches!(
                c.get("op").and_then(Value::as_str),
                Some("in_segment" | "not_in_segment")
            )
        })
        .filter_map(|c| c.get("values").and_then(Value::as_array))
        .flatten()
        .any(|v| v.as_str() == Some(key))
}

/// A write in a transaction of its own, announced after commit.
async fn write(
    state: &FlagsState,
    tenant: &ResolvedTenant,
    writer: &Writer<'_>,
    kind: Kind,
    key: &str,
    if_match: Option<&str>,
    edit: Edit<'_>,
) -> ApiResult<Option<Row>> {
    let (row, generation) = tenant
        .db
        .transaction(async |tx| write_in(state, tx.conn(), writer, kind, key, if_match, edit).await)
        .await?;
    if let Some(g) = generation {
        state.cache.invalidate(tenant.tenant.id.0, g).await;
    }
    Ok(row)
}

/// A flag write answered with the flag it left.
async fn write_flag(
    state: &FlagsState,
    caller: &Caller,
    writer: &Writer<'_>,
    key: &str,
    if_match: Option<&str>,
    edit: Edit<'_>,
) -> ApiResult<FlagView> {
    write(
        state,
        &caller.tenant.0,
        writer,
        Kind::Flag,
        key,
        if_match,
        edit,
    )
    .await?
    .map(flag_view)
    .ok_or_else(|| ApiError::internal("a written flag is missing"))
}

fn object(body: &Value) -> ApiResult<()> {
    if body.is_object() {
        Ok(())
    } else {
        Err(ApiError::validation(vec![FieldError {
            pointer: String::new(),
            message: "must be a JSON object".into(),
        }]))
    }
}

/// Creates flag `doc.key` (409 if it exists).
pub async fn create_flag(state: &FlagsState, caller: &Caller, doc: Value) -> ApiResult<FlagView> {
    object(&doc)?;
    let key = doc
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::validation(vec![FieldError {
                pointer: "/key".into(),
                message: "a flag needs a key".into(),
            }])
        })?
        .to_string();
    write_flag(
        state,
        caller,
        &Writer::caller(caller),
        &key,
        None,
        Box::new(move |current| match current {
            Some(_) => Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "a flag `{}` exists",
                    doc["key"].as_str().unwrap_or_default()
                ),
            )),
            None => Ok(Some(doc)),
        }),
    )
    .await
}

/// Replaces flag `key` with `doc`, or applies `doc` as a merge patch.
pub async fn change_flag(
    state: &FlagsState,
    caller: &Caller,
    key: &str,
    doc: Value,
    merge: bool,
    if_match: Option<&str>,
) -> ApiResult<FlagView> {
    object(&doc)?;
    write_flag(
        state,
        caller,
        &Writer::caller(caller),
        key,
        if_match,
        Box::new(move |current| {
            let current = current.ok_or_else(|| ApiError::not_found("flag"))?;
            if merge {
                let mut next = current.clone();
                crate::settings::catalogue::merge_patch(&mut next, &doc);
                Ok(Some(next))
            } else {
                Ok(Some(doc))
            }
        }),
    )
    .await
}

/// The kill switch: `enabled` for environment `env` of flag `key`.
pub async fn switch(
    state: &FlagsState,
    caller: &Caller,
    key: &str,
    env: &str,
    enabled: bool,
) -> ApiResult<FlagView> {
    let mut writer = Writer::caller(caller);
    writer.reason = if enabled {
        "switched on"
    } else {
        "kill switch"
    }
    .into();
    let env_name = env.to_string();
    write_flag(
        state,
        caller,
        &writer,
        key,
        None,
        Box::new(move |current| {
            let mut next = current.ok_or_else(|| ApiError::not_found("flag"))?.clone();
            let slot = next
                .pointer_mut(&format!("/environments/{env_name}/enabled"))
                .ok_or_else(|| ApiError::not_found("environment"))?;
            *slot = Value::Bool(enabled);
            Ok(Some(next))
        }),
    )
    .await
}

/// Deletes a flag or segment (409 while another flag depends on it).
pub async fn delete(
    state: &FlagsState,
    caller: &Caller,
    kind: Kind,
    key: &str,
    if_match: Option<&str>,
) -> ApiResult<()> {
    let mut writer = Writer::caller(caller);
    writer.reason = "deleted".into();
    write(
        state,
        &caller.tenant.0,
        &writer,
        kind,
        key,
        if_match,
        Box::new(|_| Ok(None)),
    )
    .await?;
    Ok(())
}

/// Creates or replaces segment `key`.
pub async fn put_segment(
    state: &FlagsState,
    caller: &Caller,
    key: &str,
    doc: Value,
    if_match: Option<&str>,
) -> ApiResult<SegmentView> {
    object(&doc)?;
    let row = write(
        state,
        &caller.tenant.0,
        &Writer::caller(caller),
        Kind::Segment,
        key,
        if_match,
        Box::new(move |_| Ok(Some(doc))),
    )
    .await?;
    row.map(segment_view)
        .ok_or_else(|| ApiError::internal("a saved segment is missing"))
}

fn version_view(r: HistoryRow, with_definition: bool) -> VersionView {
    VersionView {
        version: r.version,
        author: Author {
            id: r.author_id.map(crate::ids::UserId),
            name: r.author_name,
        },
        at: r.at,
        reason: r.reason,
        diff: serde_json::from_value(r.diff).unwrap_or_default(),
        definition: with_definition.then(|| r.definition.unwrap_or(Value::Null)),
    }
}

/// History of a flag or segment, newest first.
pub async fn versions(
    tenant: &ResolvedTenant,
    kind: Kind,
    key: &str,
    before: Option<i32>,
    limit: u32,
) -> ApiResult<Vec<VersionView>> {
    let rows = tenant
        .db
        .transaction(async |tx| {
            Ok::<_, ApiError>(repo::history(tx.conn(), kind, key, before, i64::from(limit)).await?)
        })
        .await?;
    if rows.is_empty() && before.is_none() {
        return Err(ApiError::not_found(kind.as_str()));
    }
    Ok(rows.into_iter().map(|r| version_view(r, false)).collect())
}

async fn stored_version(
    tenant: &ResolvedTenant,
    kind: Kind,
    key: &str,
    v: i32,
) -> ApiResult<HistoryRow> {
    tenant
        .db
        .transaction(async |tx| {
            Ok::<_, ApiError>(repo::history_version(tx.conn(), kind, key, v).await?)
        })
        .await?
        .ok_or_else(|| ApiError::not_found("version"))
}

pub async fn version(
    tenant: &ResolvedTenant,
    kind: Kind,
    key: &str,
    v: i32,
) -> ApiResult<VersionView> {
    Ok(version_view(
        stored_version(tenant, kind, key, v).await?,
        true,
    ))
}

/// What changed between two versions of a flag.
pub async fn diff_versions(
    tenant: &ResolvedTenant,
    key: &str,
    from: i32,
    to: i32,
) -> ApiResult<crate::settings::DiffView> {
    let a = stored_version(tenant, Kind::Flag, key, from).await?;
    let b = stored_version(tenant, Kind::Flag, key, to).await?;
    Ok(crate::settings::DiffView {
        from,
        to,
        changes: diff::diff(
            a.definition.as_ref().unwrap_or(&Value::Null),
            b.definition.as_ref().unwrap_or(&Value::Null),
        ),
    })
}

/// A new version of flag `key` with the definition of version `v` (checked again).
pub async fn rollback(
    state: &FlagsState,
    caller: &Caller,
    key: &str,
    v: i32,
    if_match: Option<&str>,
) -> ApiResult<FlagView> {
    let target = stored_version(&caller.tenant.0, Kind::Flag, key, v).await?;
    let definition = target.definition.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Conflict,
            format!("version {v} is the flag's deletion; roll back to a version that defined it"),
        )
    })?;
    let mut writer = Writer::caller(caller);
    writer.reason = format!("rollback to {v}");
    write_flag(
        state,
        caller,
        &writer,
        key,
        if_match,
        Box::new(move |_| Ok(Some(definition))),
    )
    .await
}

fn schedule_view(r: repo::ScheduleRow) -> ScheduleView {
    ScheduleView {
        id: r.id,
        flag_key: r.flag_key,
        apply_at: r.apply_at,
        patch: r.patch,
        reason: r.reason,
        status: r.status,
        applied_version: r.applied_version,
        error: r.error,
        created_at: r.created_at,
    }
}

/// Schedules a merge patch on flag `key` at `input.apply_at`; the patched flag must be valid
/// now (it is checked again when applied).
pub async fn schedule(
    state: &FlagsState,
    caller: &Caller,
    key: &str,
    input: NewSchedule,
) -> ApiResult<ScheduleView> {
    let now = Utc::now();
    let mut errors = Vec::new();
    if input.apply_at <= now {
        errors.push(FieldError {
            pointer: "/apply_at".into(),
            message: "must be in the future".into(),
        });
    } else if input.apply_at > now + chrono::Duration::days(366) {
        errors.push(FieldError {
            pointer: "/apply_at".into(),
            message: "must be within a year".into(),
        });
    }
    if !input.patch.is_object() {
        errors.push(FieldError {
            pointer: "/patch".into(),
            message: "must be a JSON merge patch (an object)".into(),
        });
    }
    if input.reason.chars().count() > 500 {
        errors.push(FieldError {
            pointer: "/reason".into(),
            message: "at most 500 characters".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let row = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let current = repo::get(conn, Kind::Flag, key, false)
                .await?
                .ok_or_else(|| ApiError::not_found("flag"))?;
            let mut next = current.definition.clone();
            crate::settings::catalogue::merge_patch(&mut next, &input.patch);
            let known = known(state, conn, (Kind::Flag, key)).await?;
            check_flag(&known, key, next).map_err(|e| {
                ApiError::validation(
                    e.errors
                        .into_iter()
                        .map(|f| FieldError {
                            pointer: format!("/patch{}", f.pointer),
                            message: f.message,
                        })
                        .collect(),
                )
            })?;
            let row = repo::ScheduleRow {
                id: Uuid::now_v7(),
                flag_key: key.to_string(),
                apply_at: input.apply_at,
                patch: input.patch.clone(),
                reason: input.reason.clone(),
                status: "pending".into(),
                applied_version: None,
                error: None,
                created_by: Some(caller.user.user.id.0),
                created_at: now,
            };
            repo::add_schedule(conn, &row).await?;
            audit::record(
                conn,
                &caller.actor,
                Change {
                    action: "flag.change_scheduled",
                    target_type: "flag",
                    target_id: Some(key.to_string()),
                    data: json!({"schedule": row.id, "apply_at": row.apply_at, "patch": row.patch}),
                },
            )
            .await?;
            Ok::<_, ApiError>(row)
        })
        .await?;
    Ok(schedule_view(row))
}

pub async fn schedules(tenant: &ResolvedTenant, key: &str) -> ApiResult<Vec<ScheduleView>> {
    let rows = tenant
        .db
        .transaction(async |tx| Ok::<_, ApiError>(repo::schedules(tx.conn(), key).await?))
        .await?;
    Ok(rows.into_iter().map(schedule_view).collect())
}

/// Cancels a pending schedule (409 once it applied or failed).
pub async fn cancel_schedule(caller: &Caller, key: &str, id: Uuid) -> ApiResult<ScheduleView> {
    caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let mut row = repo::schedule(conn, key, id, true)
                .await?
                .ok_or_else(|| ApiError::not_found("schedule"))?;
            if row.status != "pending" {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "the schedule is {}; only a pending one can be cancelled",
                        row.status
                    ),
                ));
            }
            repo::set_schedule_outcome(conn, id, "cancelled", None, None).await?;
            audit::record(
                conn,
                &caller.actor,
                Change {
                    action: "flag.schedule_cancelled",
                    target_type: "flag",
                    target_id: Some(key.to_string()),
                    data: json!({"schedule": id}),
                },
            )
            .await?;
            row.status = "cancelled".into();
            Ok(schedule_view(row))
        })
        .await
}

fn check_environment(envs: &[String], env: &str) -> ApiResult<()> {
    if envs.iter().any(|e| e == env) {
        Ok(())
    } else {
        Err(ApiError::not_found("environment"))
    }
}

fn sdk_key_view(r: repo::SdkKeyRow, key: Option<String>) -> SdkKeyView {
    SdkKeyView {
        id: r.id,
        environment: r.environment,
        name: r.name,
        prefix: r.prefix,
        key,
        created_at: r.created_at,
        revoked_at: r.revoked_at,
    }
}

/// A new SDK key for `env` (its secret answered once).
pub async fn create_sdk_key(
    state: &FlagsState,
    caller: &Caller,
    env: &str,
    name: &str,
) -> ApiResult<SdkKeyView> {
    let name = name.trim();
    if !(1..=100).contains(&name.chars().count()) {
        return Err(ApiError::validation(vec![FieldError {
            pointer: "/name".into(),
            message: "must be 1-100 characters".into(),
        }]));
    }
    let eff = crate::settings::service::effective(&state.settings, &caller.tenant.0).await?;
    check_environment(&eff.flag_environments, env)?;
    let token = crate::onetime::new_token(SDK_KEY_PREFIX);
    let row = repo::SdkKeyRow {
        id: Uuid::now_v7(),
        environment: env.to_string(),
        name: name.to_string(),
        prefix: token.token.chars().take(12).collect(),
        digest: token.digest.to_vec(),
        created_at: Utc::now(),
        revoked_at: None,
    };
    let data = json!({"environment": env, "name": name, "prefix": row.prefix});
    key_change(
        state,
        caller,
        "flag.sdk_key_created",
        row.id,
        data,
        async |conn| {
            repo::add_sdk_key(conn, &row, Some(caller.user.user.id.0)).await?;
            Ok(())
        },
    )
    .await?;
    Ok(sdk_key_view(row, Some(token.token)))
}

pub async fn sdk_keys(tenant: &ResolvedTenant, env: &str) -> ApiResult<Vec<SdkKeyView>> {
    let envs = vec![env.to_string()];
    let rows = tenant
        .db
        .transaction(async |tx| Ok::<_, ApiError>(repo::sdk_keys(tx.conn(), &envs, false).await?))
        .await?;
    Ok(rows.into_iter().map(|r| sdk_key_view(r, None)).collect())
}

/// Revokes an SDK key at once on every instance.
pub async fn revoke_sdk_key(
    state: &FlagsState,
    caller: &Caller,
    env: &str,
    id: Uuid,
) -> ApiResult<()> {
    let data = json!({"environment": env});
    key_change(
        state,
        caller,
        "flag.sdk_key_revoked",
        id,
        data,
        async |conn| {
            if repo::revoke_sdk_key(conn, env, id).await? {
                Ok(())
            } else {
                Err(ApiError::not_found("SDK key"))
            }
        },
    )
    .await
}

/// A change to the tenant's SDK keys: `work`, a new flag generation (so every instance's
/// cached key set is dropped) and the audit entry, in one transaction; announced after.
async fn key_change(
    state: &FlagsState,
    caller: &Caller,
    action: &'static str,
    id: Uuid,
    data: Value,
    work: impl AsyncFnOnce(&mut AsyncPgConnection) -> ApiResult<()>,
) -> ApiResult<()> {
    let generation = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            work(conn).await?;
            let g = repo::bump(conn).await?;
            audit::record(
                conn,
                &caller.actor,
                Change {
                    action,
                    target_type: "flag_sdk_key",
                    target_id: Some(id.to_string()),
                    data,
                },
            )
            .await?;
            Ok::<_, ApiError>(g)
        })
        .await?;
    state
        .cache
        .invalidate(caller.tenant.0.tenant.id.0, generation)
        .await;
    Ok(())
}

/// The environment an SDK key may evaluate, if it is a live key of this tenant.
pub fn sdk_key_environment(set: &FlagSet, key: &str) -> Option<String> {
    let digest = crate::onetime::digest_of(SDK_KEY_PREFIX, key)?;
    set.sdk_keys.get(&digest).cloned()
}

/// The evaluation context: the caller's `context` object, with a user caller's identity
/// (`targetingKey` = user id, `user_id`, `email`, `roles`, `teams`, and its stored
/// attributes under their names) written over whatever the request claimed for them.
pub async fn context_of(
    caller: Option<&Caller>,
    env: &str,
    mut context: Map<String, Value>,
) -> ApiResult<neotenant_flags::Context> {
    context.insert("environment".into(), Value::String(env.to_string()));
    if let Some(caller) = caller {
        let user = &caller.user.user;
        let stored = caller
            .db()
            .transaction(async |tx| {
                Ok::<_, ApiError>(crate::users::repo::attributes(tx.conn(), user.id, false).await?)
            })
            .await?;
        if let Some(Value::Object(attrs)) = stored {
            for (k, v) in attrs {
                context.insert(k, v);
            }
        }
        context.insert(
            neotenant_flags::TARGETING_KEY.into(),
            Value::String(user.id.to_string()),
        );
        context.insert("user_id".into(), Value::String(user.id.to_string()));
        context.insert(
            "email".into(),
            user.email.clone().map(Value::String).unwrap_or(Value::Null),
        );
        context.insert(
            "roles".into(),
            Value::Array(
                caller
                    .effective
                    .roles
                    .iter()
                    .map(|r| Value::String(r.clone()))
                    .collect(),
            ),
        );
        context.insert(
            "teams".into(),
            Value::Array(
                caller
                    .effective
                    .member_of
                    .iter()
                    .map(|t| Value::String(t.to_string()))
                    .collect(),
            ),
        );
    }
    Ok(neotenant_flags::Context::from(context))
}

/// One evaluation in OFREP's shape.
pub fn evaluation_view(
    key: &str,
    env: &str,
    result: Result<neotenant_flags::Evaluation, neotenant_flags::EvalError>,
) -> EvaluationView {
    match result {
        Ok(e) => EvaluationView {
            key: e.key,
            value: Some(e.value),
            variant: Some(e.variant),
            reason: e.reason.as_str().into(),
            error_code: None,
            error_details: None,
            metadata: json!({"environment": env}),
        },
        Err(e) => EvaluationView {
            key: key.to_string(),
            value: None,
            variant: None,
            reason: "ERROR".into(),
            error_code: Some(e.code().into()),
            error_details: Some(e.to_string()),
            metadata: json!({"environment": env}),
        },
    }
}

/// The default environment: the first of the tenant's.
pub async fn default_environment(state: &FlagsState, tenant: &ResolvedTenant) -> ApiResult<String> {
    let eff = crate::settings::service::effective(&state.settings, tenant).await?;
    eff.flag_environments
        .first()
        .cloned()
        .ok_or_else(|| ApiError::internal("the tenant has no flag environment"))
}

/// Whether `env` is one of the tenant's environments.
pub async fn require_environment(
    state: &FlagsState,
    tenant: &ResolvedTenant,
    env: &str,
) -> ApiResult<()> {
    let eff = crate::settings::service::effective(&state.settings, tenant).await?;
    check_environment(&eff.flag_environments, env)
}
