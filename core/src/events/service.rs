//! Reading the feed: cursors (`evt_<txid>_<seq>`, or empty for the start), type filters (the
//! webhook catalogue's), and a bounded scan of the outbox so one request never reads more
//! than [`SCAN_MAX`] events however few match.

use super::{CloudEvent, EventPage};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::outbox::{self, Cursor, Event};
use crate::webhooks::catalogue;

/// Most events one request scans.
pub const SCAN_MAX: usize = 5_000;

/// The cursor of an event id.
pub fn cursor_id(c: Cursor) -> String {
    c.id("evt")
}

/// Parses a cursor: `evt_<txid>_<seq>`, or absent/empty for the beginning.
pub fn parse_cursor(raw: Option<&str>) -> ApiResult<Cursor> {
    Cursor::parse(raw, "evt").ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            "the cursor must be an event id (evt_<txid>_<seq>)",
        )
    })
}

/// Parses `types=a,b.*`; every filter must be valid for the catalogue.
pub fn parse_types(raw: Option<&str>) -> ApiResult<Vec<String>> {
    let types: Vec<String> = raw
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if types.len() > 50 {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "at most 50 type filters",
        ));
    }
    if let Some(bad) = types.iter().find(|t| !catalogue::valid_filter(t)) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("`{bad}` is not a published event type or family (see GET /v1/event-types)"),
        ));
    }
    Ok(types)
}

/// An outbox event as a CloudEvent of the tenant `slug`.
pub fn cloud_event(slug: &str, e: &Event) -> CloudEvent {
    CloudEvent {
        specversion: "1.0",
        id: cursor_id(e.cursor()),
        source: format!("/tenants/{slug}"),
        kind: e.topic.clone(),
        subject: format!("{}/{}", e.aggregate_type, e.aggregate_id),
        time: e.at,
        datacontenttype: "application/json",
        data: e.payload.clone(),
    }
}

/// Up to `limit` events after `after` whose type passes `types`, scanning at most
/// [`SCAN_MAX`] events.
pub async fn page(
    db: &TenantDb,
    slug: &str,
    after: Cursor,
    types: &[String],
    limit: usize,
) -> ApiResult<EventPage> {
    let found = outbox::scan(db, after, limit, SCAN_MAX, |e| {
        catalogue::wanted(types, &e.topic)
    })
    .await?;
    Ok(EventPage {
        items: found.events.iter().map(|e| cloud_event(slug, e)).collect(),
        next_cursor: cursor_id(found.next),
        has_more: found.more,
    })
}

/// The position after every event readable now (a stream without a cursor starts here).
pub async fn head(db: &TenantDb) -> ApiResult<Cursor> {
    db.transaction(async |tx| Ok::<_, ApiError>(outbox::head(tx.conn()).await?))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = Cursor { txid: 42, seq: 7 };
        assert_eq!(parse_cursor(Some(&cursor_id(c))).unwrap(), c);
        assert_eq!(parse_cursor(None).unwrap(), Cursor::default());
        assert_eq!(parse_cursor(Some("")).unwrap(), Cursor::default());
        for bad in ["7", "evt_", "evt_1", "evt_a_b", "evt_-1_2", "evt_1_2_3"] {
            assert!(parse_cursor(Some(bad)).is_err(), "{bad}");
        }
        assert!(parse_types(Some("resource.*, flag.changed")).is_ok());
        assert!(parse_types(Some("nothing.here")).is_err());
    }
}
