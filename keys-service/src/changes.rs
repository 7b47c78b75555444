//! Telling gateways when a key changes, without Redis: an in-memory, sequence-numbered log
//! of changed key hashes that gateways long-poll (`GET /internal/v1/key-changes`).
//!
//! A gateway remembers the `epoch` and the last `seq` it saw. If keys-service restarted
//! (new epoch) or the gateway fell further behind than the log keeps, the answer says
//! `reset` and the gateway drops its whole cache: losing a change notice costs a cache
//! refill, never a revoked key accepted.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

const LOG_CAPACITY: usize = 10_000;

#[derive(Debug)]
pub struct ChangeFeed {
    epoch: String,
    log: Mutex<Log>,
    seq_tx: watch::Sender<u64>,
    closing: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Log {
    last_seq: u64,
    entries: VecDeque<(u64, String)>,
}

/// What a poll of the feed answers (the wire type gateways read).
pub use rl_contract::wire::KeyChanges as Changes;

impl Default for ChangeFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl ChangeFeed {
    pub fn new() -> Self {
        Self {
            epoch: uuid::Uuid::new_v4().simple().to_string(),
            log: Mutex::new(Log::default()),
            seq_tx: watch::channel(0).0,
            closing: watch::channel(false).0,
        }
    }

    /// Record that the key with this hash changed.
    pub fn publish(&self, key_hash: &str) {
        let seq = {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            log.last_seq += 1;
            let seq = log.last_seq;
            log.entries.push_back((seq, key_hash.to_owned()));
            if log.entries.len() > LOG_CAPACITY {
                log.entries.pop_front();
            }
            seq
        };
        self.seq_tx.send_replace(seq);
    }

    /// Wake every waiting long-poll so shutdown is not held up by them.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    fn collect(&self, epoch: Option<&str>, after: u64) -> Changes {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let oldest_kept = log.entries.front().map_or(log.last_seq + 1, |(s, _)| *s);
        let reset = epoch != Some(self.epoch.as_str())
            || after > log.last_seq
            || (after + 1 < oldest_kept && after < log.last_seq);
        let key_hashes = if reset {
            Vec::new()
        } else {
            log.entries
                .iter()
                .filter(|(s, _)| *s > after)
                .map(|(_, h)| h.clone())
                .collect()
        };
        Changes {
            epoch: self.epoch.clone(),
            seq: log.last_seq,
            reset,
            key_hashes,
        }
    }

    /// Changes after `after` in `epoch`; waits up to `wait` for one if there is none yet.
    pub async fn wait_for(&self, epoch: Option<&str>, after: u64, wait: Duration) -> Changes {
        let mut seq_rx = self.seq_tx.subscribe();
        let mut closing = self.closing.subscribe();
        let first = self.collect(epoch, after);
        if first.reset || !first.key_hashes.is_empty() || *closing.borrow() {
            return first;
        }
        let _ = tokio::time::timeout(wait, async {
            tokio::select! {
                _ = seq_rx.wait_for(|s| *s > after) => {},
                _ = closing.wait_for(|c| *c) => {},
            }
        })
        .await;
        self.collect(epoch, after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_gateway_is_told_to_reset_then_follows() {
        let feed = ChangeFeed::new();
        let first = feed.wait_for(None, 0, Duration::ZERO).await;
        assert!(first.reset);
        let epoch = first.epoch.clone();
        let quiet = feed
            .wait_for(Some(&epoch), first.seq, Duration::from_millis(10))
            .await;
        assert!(!quiet.reset && quiet.key_hashes.is_empty());
        feed.publish("h1");
        feed.publish("h2");
        let c = feed.wait_for(Some(&epoch), first.seq, Duration::ZERO).await;
        assert_eq!(c.key_hashes, vec!["h1", "h2"]);
        assert_eq!(c.seq, 2);
        let stale_epoch = feed.wait_for(Some("other"), 2, Duration::ZERO).await;
        assert!(stale_epoch.reset);
    }

    #[tokio::test]
    async fn a_waiting_poll_wakes_on_publish() {
        let feed = std::sync::Arc::new(ChangeFeed::new());
        let epoch = feed.wait_for(None, 0, Duration::ZERO).await.epoch;
        let f = feed.clone();
        let waiter =
            tokio::spawn(async move { f.wait_for(Some(&epoch), 0, Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        feed.publish("h");
        let c = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("woke")
            .expect("joined");
        assert_eq!(c.key_hashes, vec!["h"]);
    }

    #[tokio::test]
    async fn falling_behind_the_log_means_reset() {
        let feed = ChangeFeed::new();
        let epoch = feed.wait_for(None, 0, Duration::ZERO).await.epoch;
        for i in 0..(LOG_CAPACITY + 5) {
            feed.publish(&i.to_string());
        }
        assert!(feed.wait_for(Some(&epoch), 1, Duration::ZERO).await.reset);
        let recent = feed
            .wait_for(Some(&epoch), (LOG_CAPACITY as u64) + 4, Duration::ZERO)
            .await;
        assert!(!recent.reset);
        assert_eq!(recent.key_hashes.len(), 1);
    }
}
