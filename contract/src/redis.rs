//! A Redis connection that is made in the background and then kept: the process starts
//! (and serves without Redis) while Redis is down, and redis-rs' connection manager
//! reconnects by itself once the first connection succeeded.

use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub struct LazyRedis {
    client: redis::Client,
    conn: OnceLock<ConnectionManager>,
    timeout: Duration,
}

impl LazyRedis {
    /// Parse the URL; nothing is connected yet.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: OnceLock::new(),
            timeout,
        })
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The connection, once made.
    pub fn conn(&self) -> Option<ConnectionManager> {
        self.conn.get().cloned()
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
}
