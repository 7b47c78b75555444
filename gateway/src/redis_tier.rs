//! The gateway's view of the shared Redis tier: read-only lookups of key records by hash,
//! and the `rl:key-changes` subscription that drops in-process entries on every replica.
//! keys-service is the only writer (see its `redis_tier`).

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::keys_client::KeyRecord;

pub const KEY_PREFIX: &str = "rl:key:";
pub const CHANNEL: &str = "rl:key-changes";

/// What Redis says about a hash.
#[derive(Debug)]
pub enum Cached {
    Found(KeyRecord),
    Missing,
}

pub struct RedisTier {
    pub client: redis::Client,
    /// Set once the first connection succeeds; the manager reconnects by itself after.
    conn: std::sync::OnceLock<ConnectionManager>,
    timeout: Duration,
}

impl RedisTier {
    /// Parse the URL; connecting happens in the background ([`Self::connect_until_up`]),
    /// so a gateway starts (and verifies through keys-service) while Redis is down.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: std::sync::OnceLock::new(),
            timeout,
        })
    }

    /// Retry the first connection until it succeeds. Run it on a long-lived runtime: the
    /// manager's driver task lives there.
    pub async fn connect_until_up(&self) {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        while self.conn.get().is_none() {
            match self
                .client
                .get_connection_manager_with_config(config.clone())
                .await
            {
                Ok(conn) => {
                    let _ = self.conn.set(conn);
                    tracing::info!("redis connected");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "redis unavailable; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// `Ok(None)`: Redis has nothing for this hash. `Err`: Redis did not answer in time.
    pub async fn get(&self, hash_hex: &str) -> Result<Option<Cached>, ()> {
        let mut conn = self.conn.get().ok_or(())?.clone();
        let key = format!("{KEY_PREFIX}{hash_hex}");
        let value: Option<String> = match tokio::time::timeout(self.timeout, conn.get(key)).await {
            Ok(Ok(v)) => v,
            _ => return Err(()),
        };
        Ok(value.and_then(|v| {
            if v.contains("\"missing\":true") {
                Some(Cached::Missing)
            } else {
                serde_json::from_str(&v).ok().map(Cached::Found)
            }
        }))
    }
}
