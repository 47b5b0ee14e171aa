//! The change feed: `GET /v1/changes?since=` gives, in commit order, every resource and user
//! that changed after a cursor, each with its current representation (`upsert`) or as a
//! tombstone (`delete`), so an external system can mirror a tenant exactly by applying the
//! pages in order and keeping the cursor.
//!
//! Shape: `handlers` → `service` (the scan of the outbox, folding several changes of one
//! object into its latest position, loading the current objects). What an object looks like
//! and which events change it is its owner's business: features implement [`ChangeSource`]
//! (resources, users) and `app` registers them. Guarantees: every change is in the feed (the
//! outbox is written in the same transaction as the change and read only below the oldest
//! running transaction); an object may appear again later with the same state (apply pages as
//! upserts, idempotently). Who may read: `changes.read` (tenant scope), and each kind only with
//! that kind's tenant-wide read permission (`resources.read`, `users.read`). This module never
//! writes.

pub mod handlers;
pub mod service;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::QueryResult;
use diesel_async::AsyncPgConnection;
use salvo::oapi::ToSchema;
use serde::Serialize;
use serde_json::Value;

use crate::outbox::Event;

/// One kind of mirrored object, implemented by the feature that owns it.
#[async_trait::async_trait]
pub trait ChangeSource: Send + Sync {
    /// The kind's name in the feed (`resource`, `user`).
    fn kind(&self) -> &'static str;
    /// The permission (resource, action; tenant scope) a caller needs to see this kind's
    /// objects in the feed: the feed shows nothing the caller could not read directly.
    fn read_permission(&self) -> (&'static str, &'static str);
    /// The id of the object an outbox event changed, when it is one of this kind's.
    fn changed(&self, event: &Event) -> Option<String>;
    /// The current representation of those of `ids` that exist (absent: deleted or gone).
    async fn current(
        &self,
        conn: &mut AsyncPgConnection,
        ids: &[String],
    ) -> QueryResult<HashMap<String, Value>>;
}

/// The registered sources, built once by `app`.
pub struct ChangesState {
    pub sources: Vec<Arc<dyn ChangeSource>>,
}

/// One changed object.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.changes.Change"))]
pub struct Change {
    /// `chg_<txid>_<seq>`: the position of the object's latest change in this page; a cursor.
    pub id: String,
    /// `resource` or `user`.
    pub kind: &'static str,
    /// The object's id.
    pub object_id: String,
    /// `upsert` (store `object` as the object's state) or `delete` (remove it).
    pub op: &'static str,
    /// When the change was committed.
    pub at: DateTime<Utc>,
    /// The object as the API shows it (for a resource, as `GET /v1/resources/{type}/{id}`);
    /// absent for `delete`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[salvo(schema(value_type = Option<Object>))]
    pub object: Option<Value>,
}

/// A page of the feed.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.changes.ChangePage"))]
pub struct ChangePage {
    pub items: Vec<Change>,
    /// Where the next call continues (`?since=`), also when nothing changed.
    pub next_cursor: String,
    /// Whether more changes are waiting already (ask again at once).
    pub has_more: bool,
}
