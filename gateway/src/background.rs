//! Work the gateway does beside requests: following keys-service's change feed (to drop
//! cached keys the moment they change), flushing batched usage, re-resolving upstreams.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rl_contract::backoff::Backoff;

use crate::GatewayState;
use crate::api_key::parse_hash;

const FEED_WAIT: Duration = Duration::from_secs(20);

pub struct Background {
    pub state: Arc<GatewayState>,
}

#[async_trait]
impl BackgroundService for Background {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let feed = tokio::spawn(follow_changes(self.state.clone()));
        let resolve = tokio::spawn(resolve_upstreams(self.state.clone()));
        let jwks = tokio::spawn(refresh_jwks(self.state.clone()));
        let pubsub = tokio::spawn(follow_redis(self.state.clone()));
        let mut flush = tokio::time::interval(self.state.settings.usage_flush_interval);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = flush.tick() => flush_usage(&self.state).await,
                _ = shutdown.changed() => break,
            }
        }
        feed.abort();
        resolve.abort();
        jwks.abort();
        pubsub.abort();
        // Nothing batched is lost on a graceful stop.
        flush_usage(&self.state).await;
        tracing::info!("gateway background work flushed");
    }
}

async fn flush_usage(state: &GatewayState) {
    let batch = state.usage.take();
    if batch.is_empty() {
        return;
    }
    if let Err(e) = state.keys.client().report_usage(&batch).await {
        tracing::warn!(error = %e, keys = batch.len(), "usage report failed; will retry");
        state.usage.restore(batch);
    }
}

/// Long-poll keys-service's change feed forever, reconnecting with capped backoff.
async fn follow_changes(state: Arc<GatewayState>) {
    let mut epoch: Option<String> = None;
    let mut after = 0u64;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match state
            .keys
            .client()
            .changes(epoch.as_deref(), after, FEED_WAIT)
            .await
        {
            Ok(changes) => {
                if changes.reset {
                    state.keys.invalidate_all();
                } else {
                    for h in &changes.key_hashes {
                        if let Some(hash) = parse_hash(h) {
                            state.keys.invalidate(hash).await;
                        }
                    }
                }
                state.keys.set_feed_synced(true);
                epoch = Some(changes.epoch);
                after = changes.seq;
                backoff.reset();
            }
            Err(e) => {
                tracing::debug!(error = %e, "key change feed unavailable; retrying");
                state.keys.set_feed_synced(false);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Follow Redis' `rl:key-changes` channel, reconnecting by itself. While it is down the
/// verifier treats the cache as unsynced (short TTLs) and the metric says so.
async fn follow_redis(state: Arc<GatewayState>) {
    use futures::StreamExt;
    let Some(redis) = state.keys.redis() else {
        return;
    };
    redis.redis.connect_until_up().await;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let subscribed = async {
            let mut pubsub = redis.redis.client().get_async_pubsub().await?;
            pubsub.subscribe(crate::redis_tier::CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(2), subscribed).await {
            Ok(Ok(pubsub)) => {
                tracing::info!("redis invalidation channel subscribed");
                // Whatever changed while we were away is unknown: start clean.
                state.keys.invalidate_all();
                state.keys.set_pubsub_synced(true);
                backoff.reset();
                let (mut sink, mut stream) = pubsub.split();
                let mut ping = tokio::time::interval_at(
                    tokio::time::Instant::now() + Duration::from_secs(5),
                    Duration::from_secs(5),
                );
                loop {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(msg) => {
                                let hash = std::str::from_utf8(msg.get_payload_bytes())
                                    .ok()
                                    .and_then(parse_hash);
                                if let Some(hash) = hash {
                                    state.keys.invalidate(hash).await;
                                }
                            }
                            None => break,
                        },
                        _ = ping.tick() => {
                            let alive = tokio::time::timeout(
                                Duration::from_secs(2),
                                // In subscribed mode the reply is an array, not "PONG".
                                sink.ping::<redis::Value>(),
                            )
                            .await;
                            if !matches!(alive, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                tracing::warn!(
                    "redis invalidation channel lost; cached keys now refresh after a short TTL"
                );
                state.keys.set_pubsub_synced(false);
            }
            _ => {
                state.keys.set_pubsub_synced(false);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Fetch Clerk's key set at start, then refresh it on an interval; a failure keeps the
/// last good set (and retries sooner).
async fn refresh_jwks(state: Arc<GatewayState>) {
    let jwks = state.sessions.jwks().clone();
    if !jwks.fetches_from_network() {
        return;
    }
    let every = state.settings.clerk.jwks_refresh_interval;
    loop {
        let next = match jwks.refresh().await {
            Ok(n) => {
                tracing::debug!(keys = n, "JWKS refreshed");
                every
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the cached key set");
                every.min(Duration::from_secs(30))
            }
        };
        tokio::time::sleep(next).await;
    }
}

async fn resolve_upstreams(state: Arc<GatewayState>) {
    loop {
        tokio::time::sleep(Duration::from_secs(15)).await;
        for upstream in state.upstreams.all() {
            upstream.refresh().await;
        }
    }
}
