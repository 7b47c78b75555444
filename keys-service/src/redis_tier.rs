//! The shared Redis tier of the key lookup, written only by keys-service.
//!
//! `rl:key:<sha256>` holds what a gateway needs to authenticate a key (never the key):
//! lookups fill it with `SET NX` (so they can never overwrite a newer record), changes
//! overwrite it unconditionally and then `PUBLISH` the hash on `rl:key-changes`, so every
//! gateway drops its in-process copy. A change whose Redis write fails is retried (as a
//! delete plus publish) until Redis answers again.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use rl_contract::wire::{KeyRecord, RedisKeyRecord};

pub const KEY_PREFIX: &str = "rl:key:";
pub const CHANNEL: &str = "rl:key-changes";

pub struct RedisTier {
    redis: rl_contract::redis::LazyRedis,
    ttl: Duration,
    negative_ttl: Duration,
    timeout: Duration,
    pending: Mutex<HashSet<String>>,
}

impl RedisTier {
    /// Parse the URL; [`Self::connect_until_up`] connects in the background, so
    /// keys-service starts (and serves from its database) while Redis is down.
    pub fn new(
        url: &str,
        ttl: Duration,
        negative_ttl: Duration,
        timeout: Duration,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self {
            redis: rl_contract::redis::LazyRedis::new(url, timeout)?,
            ttl,
            negative_ttl,
            timeout,
            pending: Mutex::new(HashSet::new()),
        })
    }

    /// Retry the first connection until it succeeds.
    pub async fn connect_until_up(&self) {
        self.redis.connect_until_up().await;
    }

    fn conn(&self) -> Option<ConnectionManager> {
        self.redis.conn()
    }

    fn key(hash: &str) -> String {
        format!("{KEY_PREFIX}{hash}")
    }

    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis command failed");
                None
            }
            Err(_) => {
                tracing::warn!("redis command timed out");
                None
            }
        }
    }

    /// After a database lookup: remember the answer unless something newer is there.
    pub async fn fill(&self, hash: &str, record: Option<&KeyRecord>) {
        let ttl = if record.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        };
        let value = RedisKeyRecord::new(record.cloned()).encode();
        let Some(mut conn) = self.conn() else {
            return;
        };
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(ttl.as_millis() as u64));
        let _: Option<Option<String>> = self
            .bounded(conn.set_options(Self::key(hash), value, opts))
            .await;
    }

    /// A key changed: overwrite its record and tell every gateway.
    pub async fn changed(&self, hash: &str, record: &KeyRecord) {
        let Some(mut conn) = self.conn() else {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(hash.to_owned());
            return;
        };
        let value = RedisKeyRecord::new(Some(record.clone())).encode();
        let ttl = self.ttl.as_millis() as u64;
        let stored: Option<()> = self
            .bounded(conn.pset_ex(Self::key(hash), value, ttl))
            .await;
        let published: Option<i64> = self.bounded(conn.publish(CHANNEL, hash)).await;
        if stored.is_none() || published.is_none() {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(hash.to_owned());
        }
    }

    /// Retry the changes Redis missed: delete the record (the next lookup refills it from
    /// the database) and publish again.
    pub async fn retry_pending(&self) {
        let hashes: Vec<String> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let Some(conn) = self.conn() else {
            return;
        };
        for hash in hashes {
            let mut conn = conn.clone();
            let deleted: Option<i64> = self.bounded(conn.del(Self::key(&hash))).await;
            let published: Option<i64> = self.bounded(conn.publish(CHANNEL, &hash)).await;
            if deleted.is_some() && published.is_some() {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&hash);
            }
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
