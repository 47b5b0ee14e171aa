//! Users as the change feed shows them: the `user.*` outbox events (written by a trigger on
//! the users table, so every path that changes a user emits one) name the user; the current
//! representation is identity, profile, status and attributes (`repo::mirror_by_ids`), without
//! activity or preferences. A deleted user is a tombstone. Reads only.

use std::collections::HashMap;

use diesel::QueryResult;
use diesel_async::AsyncPgConnection;
use serde_json::Value;
use uuid::Uuid;

use super::repo;
use crate::changes::ChangeSource;
use crate::ids::UserId;
use crate::outbox::Event;

pub struct UserChanges;

#[async_trait::async_trait]
impl ChangeSource for UserChanges {
    fn kind(&self) -> &'static str {
        "user"
    }

    fn read_permission(&self) -> (&'static str, &'static str) {
        ("users", "read")
    }

    fn changed(&self, event: &Event) -> Option<String> {
        if event.aggregate_type != "user" || !event.topic.starts_with("user.") {
            return None;
        }
        // The trigger writes the bare uuid; other events the public id.
        let id = &event.aggregate_id;
        id.parse::<UserId>()
            .ok()
            .or_else(|| id.parse::<Uuid>().ok().map(UserId))
            .map(|u| u.to_string())
    }

    async fn current(
        &self,
        conn: &mut AsyncPgConnection,
        ids: &[String],
    ) -> QueryResult<HashMap<String, Value>> {
        let ids: Vec<Uuid> = ids
            .iter()
            .filter_map(|i| i.parse::<UserId>().ok())
            .map(|u| u.0)
            .collect();
        Ok(repo::mirror_by_ids(conn, &ids)
            .await?
            .into_iter()
            .map(|(id, mut object)| {
                let id = UserId(id).to_string();
                object["id"] = Value::String(id.clone());
                (id, object)
            })
            .collect())
    }
}
