//! The gateway's view of the shared Redis tier: read-only lookups of key records by hash,
//! and the `rl:key-changes` subscription that drops in-process entries on every replica.
//! keys-service is the only writer (see its `redis_tier`).

use std::time::Duration;

use redis::AsyncCommands;

use rl_contract::wire::{KeyRecord, RedisKeyRecord};

pub const KEY_PREFIX: &str = "rl:key:";
pub const CHANNEL: &str = "rl:key-changes";

/// What Redis says about a hash.
#[derive(Debug)]
pub enum Cached {
    Found(KeyRecord),
    Missing,
}

pub struct RedisTier {
    pub redis: rl_contract::redis::LazyRedis,
}

impl RedisTier {
    /// Parse the URL; connecting happens in the background (`connect_until_up`), so a
    /// gateway starts (and verifies through keys-service) while Redis is down.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, redis::RedisError> {
        Ok(Self {
            redis: rl_contract::redis::LazyRedis::new(url, timeout)?,
        })
    }

    /// `Ok(None)`: Redis has nothing for this hash. `Err`: Redis did not answer in time.
    pub async fn get(&self, hash_hex: &str) -> Result<Option<Cached>, ()> {
        let mut conn = self.redis.conn().ok_or(())?;
        let key = format!("{KEY_PREFIX}{hash_hex}");
        let value: Option<String> =
            match tokio::time::timeout(self.redis.timeout(), conn.get(key)).await {
                Ok(Ok(v)) => v,
                _ => return Err(()),
            };
        // An unreadable record (another version, mid-deploy) is a miss, never a verdict.
        Ok(value
            .and_then(|v| RedisKeyRecord::decode(&v))
            .map(|r| match r.record() {
                Some(record) => Cached::Found(record),
                None => Cached::Missing,
            }))
    }
}
