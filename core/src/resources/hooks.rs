//! The port through which a resource write calls the plugin that provides its type:
//! validation and normalisation, the before- and after-change hooks, and custom actions.
//!
//! Resources define what they need here and never import the plugin feature; `plugins`
//! implements [`TypeHooks`] and `app` wires it into [`super::ResourcesState`]. Every call
//! runs on the write's own connection (`conn`), so what a plugin stores or emits commits or
//! rolls back with the write.

use async_trait::async_trait;
use diesel_async::AsyncPgConnection;
use jsonschema::Validator;
use neotenant_runtime::{ActionResult, Operation};
use serde_json::Value;
use uuid::Uuid;

use crate::db::TenantDb;
use crate::error::ApiResult;

/// What a hook sees of a change.
pub struct Seen<'a> {
    pub operation: Operation,
    pub type_name: &'a str,
    pub resource_id: Uuid,
    pub before: Option<&'a Value>,
    pub after: &'a Value,
    pub actor: &'a str,
}

/// Finds the plugin behind a resource type.
#[async_trait]
pub trait TypeHooks: Send + Sync {
    /// The installation providing `type_name` in this tenant, ready to call (`None` for a
    /// declarative type).
    async fn bind(
        &self,
        tenant: Uuid,
        db: &TenantDb,
        conn: &mut AsyncPgConnection,
        type_name: &str,
    ) -> ApiResult<Option<Box<dyn TypePlugin>>>;
}

/// The plugin bound to a resource type for one write. Each call settles its failure by the
/// installation's failure mode: an error here is the answer to give.
#[async_trait]
pub trait TypePlugin: Send + Sync {
    fn name(&self) -> &str;

    /// Validates and normalises data already valid against the type's schema.
    async fn validate(
        &self,
        conn: &mut AsyncPgConnection,
        validator: &Validator,
        data: &Value,
        subject: Option<Uuid>,
    ) -> ApiResult<Value>;

    /// Runs the before- (`after == false`) or after-change hook; a veto is an error.
    async fn hook(
        &self,
        conn: &mut AsyncPgConnection,
        after: bool,
        seen: Seen<'_>,
    ) -> ApiResult<()>;

    /// Runs a custom action on a resource.
    async fn action(
        &self,
        conn: &mut AsyncPgConnection,
        name: &str,
        resource_id: Uuid,
        data: &Value,
        input: &Value,
    ) -> ApiResult<ActionResult>;

    /// The custom actions the installed version declares.
    async fn actions(&self) -> ApiResult<Vec<String>>;
}
