//! The key-value store plugins see: rows of `plugin_kv` in the tenant's database, keyed by
//! installation. On the write path ([`TxKv`]) operations run inside the write's transaction;
//! elsewhere (integrations, [`DbKv`]) each is a short transaction of its own.

use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use neotenant_runtime::Kv;
use tokio::sync::{mpsc, oneshot};

use crate::db::{DbError, TenantDb};

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
            db.transaction(async |tx| {
                Ok::<_, DbError>(super::repo::kv_get(tx.conn(), &plugin, &key).await?)
            })
            .await
            .map_err(failed)
        })
    }

    fn set(&self, key: String, value: Vec<u8>) -> BoxFuture<'static, Result<(), String>> {
        let (db, plugin) = (self.db.clone(), self.plugin.clone());
        Box::pin(async move {
            let stored = db
                .transaction(async |tx| {
                    let conn = tx.conn();
                    Ok::<_, DbError>(
                        super::repo::kv_set(conn, &plugin, &key, &value, MAX_KEYS).await?,
                    )
                })
                .await
                .map_err(failed)?;
            match stored {
                true => Ok(()),
                false => Err(format!("at most {MAX_KEYS} keys per plugin")),
            }
        })
    }

    fn delete(&self, key: String) -> BoxFuture<'static, Result<(), String>> {
        let (db, plugin) = (self.db.clone(), self.plugin.clone());
        Box::pin(async move {
            db.transaction(async |tx| {
                Ok::<_, DbError>(super::repo::kv_delete(tx.conn(), &plugin, &key).await?)
            })
            .await
            .map_err(failed)
        })
    }

    fn keys(&self, prefix: String, limit: u32) -> BoxFuture<'static, Result<Vec<String>, String>> {
        let (db, plugin) = (self.db.clone(), self.plugin.clone());
        Box::pin(async move {
            db.transaction(async |tx| {
                let conn = tx.conn();
                Ok::<_, DbError>(super::repo::kv_keys(conn, &plugin, &prefix, limit as i64).await?)
            })
            .await
            .map_err(failed)
        })
    }
}

/// One key-value operation sent from a plugin call to the task that owns the write's
/// transaction.
pub enum KvOp {
    Get(String, oneshot::Sender<Result<Option<Vec<u8>>, String>>),
    Set(String, Vec<u8>, oneshot::Sender<Result<(), String>>),
    Delete(String, oneshot::Sender<Result<(), String>>),
    Keys(String, u32, oneshot::Sender<Result<Vec<String>, String>>),
}

/// Key-value storage inside the write's transaction, for hooks and actions: the plugin's
/// operations travel over a channel to [`serve`], which runs them on the transaction's
/// connection. They commit or roll back with the write, and a hook never needs a second
/// pooled connection (which, with every connection held by a writer, would never come).
pub struct TxKv(mpsc::Sender<KvOp>);

impl TxKv {
    pub fn channel() -> (TxKv, mpsc::Receiver<KvOp>) {
        let (tx, rx) = mpsc::channel(1);
        (TxKv(tx), rx)
    }

    fn send<T: Send + 'static>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, String>>) -> KvOp,
    ) -> BoxFuture<'static, Result<T, String>> {
        let (reply, answer) = oneshot::channel();
        let sender = self.0.clone();
        let op = op(reply);
        Box::pin(async move {
            sender
                .send(op)
                .await
                .map_err(|_| "the key-value store is closed".to_string())?;
            answer
                .await
                .map_err(|_| "the key-value store is closed".to_string())?
        })
    }
}

impl Kv for TxKv {
    fn get(&self, key: String) -> BoxFuture<'static, Result<Option<Vec<u8>>, String>> {
        self.send(|r| KvOp::Get(key, r))
    }
    fn set(&self, key: String, value: Vec<u8>) -> BoxFuture<'static, Result<(), String>> {
        self.send(|r| KvOp::Set(key, value, r))
    }
    fn delete(&self, key: String) -> BoxFuture<'static, Result<(), String>> {
        self.send(|r| KvOp::Delete(key, r))
    }
    fn keys(&self, prefix: String, limit: u32) -> BoxFuture<'static, Result<Vec<String>, String>> {
        self.send(|r| KvOp::Keys(prefix, limit, r))
    }
}

/// Runs one operation on the write's connection.
pub async fn serve(conn: &mut AsyncPgConnection, plugin: &str, op: KvOp) {
    use super::repo;
    match op {
        KvOp::Get(k, r) => {
            let _ = r.send(repo::kv_get(conn, plugin, &k).await.map_err(failed));
        }
        KvOp::Set(k, v, r) => {
            let res = repo::kv_set(conn, plugin, &k, &v, MAX_KEYS)
                .await
                .map_err(failed);
            let _ = r.send(res.and_then(|ok| {
                ok.then_some(())
                    .ok_or_else(|| format!("at most {MAX_KEYS} keys per plugin"))
            }));
        }
        KvOp::Delete(k, r) => {
            let _ = r.send(repo::kv_delete(conn, plugin, &k).await.map_err(failed));
        }
        KvOp::Keys(p, n, r) => {
            let _ = r.send(
                repo::kv_keys(conn, plugin, &p, n as i64)
                    .await
                    .map_err(failed),
            );
        }
    }
}
