//! The one Redis pub/sub listener loop every broadcast uses (tenant changes, session
//! revocations, permission changes): subscribe, run the subscriber's catch-up, apply messages,
//! and on any loss tell the subscriber and reconnect with capped exponential backoff.
//!
//! Owns only the connection lifecycle; what a message means is the subscriber's. Never gives
//! up while the process runs, and stops promptly at shutdown.

use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;

/// What a listener does with its channel.
pub struct Subscriber<C, M, L> {
    /// After (re)subscribing: catch up on what may have been missed.
    pub on_connect: C,
    /// Each message's payload.
    pub on_message: M,
    /// The subscription is gone (until the next `on_connect`).
    pub on_lost: L,
}

/// Listens on `channel` until `shutdown` changes; `what` names it in logs.
pub async fn listen<C, M, L>(
    client: redis::Client,
    channel: &'static str,
    what: &'static str,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    subscriber: Subscriber<C, M, L>,
) where
    C: Fn() -> BoxFuture<'static, redis::RedisResult<()>> + Send,
    M: Fn(&str) + Send,
    L: Fn() + Send,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            (subscriber.on_connect)().await?;
            backoff = Duration::from_millis(100);
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                if let Ok(payload) = msg.get_payload::<String>() {
                    (subscriber.on_message)(&payload);
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        tokio::select! {
            result = session => {
                (subscriber.on_lost)();
                match result {
                    Ok(()) => tracing::warn!(listener = what, "lost Redis; reconnecting"),
                    Err(error) => tracing::warn!(listener = what, %error, "cannot reach Redis; retrying"),
                }
            }
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Whether Redis answers (readiness): a `PING`.
pub async fn ping(conn: &crate::redis_link::Link) -> Result<(), String> {
    let mut conn = conn.clone();
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
