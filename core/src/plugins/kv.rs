//! The key-value store plugins see: rows of `plugin_kv` in the tenant's database, keyed by
//! installation. Each operation is its own short transaction (plugins may call it while the
//! host holds a write transaction on another connection).

use futures::future::BoxFuture;
use neotenant_runtime::Kv;

use crate::db::TenantDb;

/// Keys one installation may hold.
pub const MAX_KEYS: i64 = 10_000;

pub struct DbKv {
    pub db: TenantDb,
    pub plugin: String,
}

fn failed(e: impl std::fmt::Display) -> String {
    tracing::warn!(error = %e, "plugin key-value operation failed");
    "the key-value store is unavailable".to_string()
}

impl Kv for DbKv {
    fn get(&self, key: String) -> BoxFuture<'static, Result<Option<Vec<u8>>, String>> {
        let (db, plugin) = (self.db.clone(), self.plugin.clone());
        Box::pin(async move {
            let mut tx = db.begin().await.map_err(failed)?;
            let r = super::repo::kv_get(tx.conn(), &plugin, &key).await;
            tx.finish(r).await.map_err(failed)
        })
    }

    fn set(&self, key: String, value: Vec<u8>) -> BoxFuture<'static, Result<(), String>> {
        let (db, plugin) = (self.db.clone(), self.plugin.clone());
        Box::pin(async move {
            let mut tx = db.begin().await.map_err(failed)?;
            let r = super::repo::kv_set(tx.conn(), &plugin, &key, &value, MAX_KEYS).await;
            match tx.finish(r).await.map_err(failed)? {
                true => Ok(()),
                false => Err(format!("at most {MAX_KEYS} keys per plugin")),
            }
        })
    }

    fn delete(&self, key: String) -> BoxFuture<'static, Result<(), String>> {
        let (db, plugin) = (self.db.clone(), self.plugin.clone());
        Box::pin(async move {
            let mut tx = db.begin().await.map_err(failed)?;
            let r = super::repo::kv_delete(tx.conn(), &plugin, &key).await;
            tx.finish(r).await.map_err(failed)
        })
    }

    fn keys(&self, prefix: String, limit: u32) -> BoxFuture<'static, Result<Vec<String>, String>> {
        let (db, plugin) = (self.db.clone(), self.plugin.clone());
        Box::pin(async move {
            let mut tx = db.begin().await.map_err(failed)?;
            let r = super::repo::kv_keys(tx.conn(), &plugin, &prefix, limit as i64).await;
            tx.finish(r).await.map_err(failed)
        })
    }
}
