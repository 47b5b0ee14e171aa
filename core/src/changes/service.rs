//! Reading the change feed: the bounded scan of the outbox for events of a registered kind,
//! folding repeats of one object into its last position, and the current state of each object
//! read in one transaction per kind.

use std::collections::HashMap;

use super::{Change, ChangePage, ChangeSource};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::outbox::{self, Cursor};

/// Most outbox events one request scans.
pub const SCAN_MAX: usize = 5_000;

/// Parses `since`: `chg_<txid>_<seq>`, or absent/empty for the beginning.
pub fn parse_cursor(raw: Option<&str>) -> ApiResult<Cursor> {
    Cursor::parse(raw, "chg").ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            "`since` must be a change cursor (chg_<txid>_<seq>) from an earlier page",
        )
    })
}

/// The sources whose objects `caller` may read tenant-wide; 403 when there is none.
pub fn readable(
    caller: &crate::rbac::Caller,
    sources: &[std::sync::Arc<dyn ChangeSource>],
) -> ApiResult<Vec<std::sync::Arc<dyn ChangeSource>>> {
    let kept: Vec<_> = sources
        .iter()
        .filter(|s| {
            let (resource, action) = s.read_permission();
            caller.allows(resource, action, crate::rbac::perm::Scope::Tenant)
        })
        .cloned()
        .collect();
    if kept.is_empty() {
        let needed: Vec<String> = sources
            .iter()
            .map(|s| {
                let (resource, action) = s.read_permission();
                format!("{resource}.{action}.tenant")
            })
            .collect();
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "the change feed shows only what you may read: requires one of {}",
                needed.join(", ")
            ),
        ));
    }
    Ok(kept)
}

/// Up to `limit` changed objects after `since`, in the order of their latest change.
pub async fn page(
    db: &TenantDb,
    sources: &[std::sync::Arc<dyn ChangeSource>],
    since: Cursor,
    limit: usize,
) -> ApiResult<ChangePage> {
    let owner = |e: &outbox::Event| {
        sources
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.changed(e).map(|id| (i, id)))
    };
    let found = outbox::scan(db, since, limit, SCAN_MAX, |e| owner(e).is_some()).await?;
    // The latest event of each object, in commit order.
    let mut last: HashMap<(usize, String), usize> = HashMap::new();
    let mut changed = Vec::new();
    for e in &found.events {
        if let Some(key) = owner(e) {
            last.insert(key.clone(), changed.len());
            changed.push((key, e));
        }
    }
    let mut ids: Vec<Vec<String>> = vec![Vec::new(); sources.len()];
    for (i, id) in last.keys() {
        ids[*i].push(id.clone());
    }
    let mut objects = db
        .transaction(async |tx| {
            let mut all = Vec::with_capacity(sources.len());
            for (source, ids) in sources.iter().zip(&ids) {
                all.push(if ids.is_empty() {
                    HashMap::new()
                } else {
                    source.current(tx.conn(), ids).await?
                });
            }
            Ok::<_, ApiError>(all)
        })
        .await?;
    // Each object once, at its latest change: its current form is moved out, not copied.
    let items = changed
        .iter()
        .enumerate()
        .filter(|(n, (key, _))| last.get(key) == Some(n))
        .map(|(_, ((i, id), e))| {
            let object = objects[*i].remove(id);
            Change {
                id: e.cursor().id("chg"),
                kind: sources[*i].kind(),
                object_id: id.clone(),
                op: if object.is_some() { "upsert" } else { "delete" },
                at: e.at,
                object,
            }
        })
        .collect();
    Ok(ChangePage {
        items,
        next_cursor: found.next.id("chg"),
        has_more: found.more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors() {
        assert_eq!(parse_cursor(None).unwrap(), Cursor::default());
        let c = Cursor { txid: 9, seq: 3 };
        assert_eq!(parse_cursor(Some("chg_9_3")).unwrap(), c);
        assert!(parse_cursor(Some("evt_9_3")).is_err());
        assert!(parse_cursor(Some("chg_x")).is_err());
    }
}
