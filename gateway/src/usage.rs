//! `lastUsedAt` without a database write per request: the gateway remembers the latest use
//! of each key and reports them to keys-service in batches.

use std::collections::HashMap;
use std::sync::Mutex;

/// Pending reports are capped so an unreachable keys-service cannot grow them without bound.
const MAX_PENDING: usize = 200_000;

#[derive(Debug, Default)]
pub struct UsageRecorder {
    pending: Mutex<HashMap<String, i64>>,
}

impl UsageRecorder {
    pub fn record(&self, key_id: &str, at_ms: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = pending.get_mut(key_id) {
            *t = (*t).max(at_ms);
        } else if pending.len() < MAX_PENDING {
            pending.insert(key_id.to_owned(), at_ms);
        }
    }

    pub fn take(&self) -> Vec<(String, i64)> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *pending).into_iter().collect()
    }

    /// Put back a batch that could not be delivered, keeping the latest time per key.
    pub fn restore(&self, batch: Vec<(String, i64)>) {
        for (id, at) in batch {
            self.record(&id, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_use_per_key() {
        let u = UsageRecorder::default();
        u.record("a", 5);
        u.record("a", 3);
        u.record("b", 1);
        let mut batch = u.take();
        batch.sort();
        assert_eq!(batch, vec![("a".into(), 5), ("b".into(), 1)]);
        assert!(u.take().is_empty());
        u.record("a", 7);
        u.restore(batch);
        let mut again = u.take();
        again.sort();
        assert_eq!(again, vec![("a".into(), 7), ("b".into(), 1)]);
    }
}
