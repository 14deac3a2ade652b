//! The event bus over Redis: a channel on which a node says "something changed" so the other
//! nodes act at once instead of at their next poll. Messages are hints, not data: a node that
//! misses one (Redis down, a reconnect) loses nothing, because what changed is in the database
//! and every node reads it there on its own schedule anyway.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

pub struct RedisBus {
    client: redis::Client,
    /// Connected on first use, and again after an error.
    publisher: Mutex<Option<ConnectionManager>>,
}

/// A publish that takes longer than this is given up: it is only a hint.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(250);
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

impl RedisBus {
    /// Checks the URL; connects lazily, so a Redis that is down at start is not an error.
    pub fn new(url: &str) -> Result<Arc<Self>, redis::RedisError> {
        Ok(Arc::new(RedisBus {
            client: redis::Client::open(url)?,
            publisher: Mutex::new(None),
        }))
    }

    /// Best effort: errors are logged and dropped.
    pub async fn publish(&self, channel: &str, message: &str) {
        let outcome = tokio::time::timeout(PUBLISH_TIMEOUT, async {
            let mut guard = self.publisher.lock().await;
            if guard.is_none() {
                *guard = Some(ConnectionManager::new(self.client.clone()).await?);
            }
            let conn = guard.as_mut().expect("connected above");
            let result: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .query_async(conn)
                .await;
            if result.is_err() {
                *guard = None;
            }
            result.map(|_| ())
        })
        .await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(error = %err, "publishing on the Redis bus failed"),
            Err(_) => tracing::debug!("publishing on the Redis bus timed out"),
        }
    }

    /// Calls `on_message` for every message on `channel`, reconnecting after errors, until the
    /// returned task is aborted.
    pub fn subscribe(
        self: &Arc<Self>,
        channel: &'static str,
        on_message: impl Fn() + Send + Sync + 'static,
    ) -> JoinHandle<()> {
        let bus = self.clone();
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                match bus.listen(channel, &on_message).await {
                    Ok(()) => {}
                    Err(err) if !warned => {
                        tracing::warn!(error = %err, "the Redis bus is unreachable; nodes fall back to polling");
                        warned = true;
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(RECONNECT_AFTER).await;
            }
        })
    }

    async fn listen(
        &self,
        channel: &str,
        on_message: &(impl Fn() + Send + Sync),
    ) -> redis::RedisResult<()> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        tracing::info!(channel, "listening on the Redis bus");
        let mut messages = pubsub.on_message();
        while messages.next().await.is_some() {
            on_message();
        }
        Ok(())
    }
}
