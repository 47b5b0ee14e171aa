//! Resources as the change feed shows them: every `resource.*` outbox event names the resource
//! it touched, and the current representation is what `GET /v1/resources/{type}/{id}` returns.
//! Reads only; never decides who may read the feed (that is the feed's permission).

use std::collections::HashMap;

use diesel::QueryResult;
use diesel_async::AsyncPgConnection;
use serde_json::Value;
use uuid::Uuid;

use super::repo;
use crate::changes::ChangeSource;
use crate::ids::ResourceId;
use crate::outbox::Event;

pub struct ResourceChanges;

#[async_trait::async_trait]
impl ChangeSource for ResourceChanges {
    fn kind(&self) -> &'static str {
        "resource"
    }

    fn read_permission(&self) -> (&'static str, &'static str) {
        ("resources", "read")
    }

    fn changed(&self, event: &Event) -> Option<String> {
        event
            .topic
            .starts_with("resource.")
            .then(|| event.aggregate_id.clone())
    }

    async fn current(
        &self,
        conn: &mut AsyncPgConnection,
        ids: &[String],
    ) -> QueryResult<HashMap<String, Value>> {
        let ids: Vec<Uuid> = ids
            .iter()
            .filter_map(|i| i.parse::<ResourceId>().ok())
            .map(|r| r.0)
            .collect();
        Ok(repo::live_by_ids(conn, &ids)
            .await?
            .into_iter()
            .map(|r| {
                let id = r.id.to_string();
                (id, serde_json::to_value(r).unwrap_or(Value::Null))
            })
            .collect())
    }
}
