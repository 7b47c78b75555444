//! The audit relay: delivers outbox rows to audit-service, oldest first, with retries and
//! capped exponential backoff — the same relay and wire format as keys-service
//! (`POST /internal/v1/audit-events/batch` with the internal token). A row is deleted only
//! after audit-service accepted its batch; audit-service ingests idempotently by event id,
//! so a batch delivered twice is stored once. Endpoint management never waits for this.

use std::sync::Arc;
use std::time::Duration;

use rl_contract::backoff::Backoff;
use tokio::sync::{Notify, watch};

use crate::store::Store;

const BATCH: i64 = 200;
const IDLE_POLL: Duration = Duration::from_secs(2);

pub struct Relay {
    pub store: Store,
    pub client: reqwest::Client,
    pub endpoint: String,
    pub wake: Arc<Notify>,
    pub max_backoff: Duration,
    pub metrics: crate::metrics::Metrics,
    /// Sent to audit-service's internal ingestion.
    pub internal_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("outbox read: {0}")]
    Store(#[from] sqlx::Error),
    #[error("delivery: {0}")]
    Delivery(String),
}

impl Relay {
    pub fn new(
        store: Store,
        audit_service_url: &str,
        wake: Arc<Notify>,
        max_backoff: Duration,
        metrics: crate::metrics::Metrics,
        internal_token: Option<String>,
    ) -> Result<Self, reqwest::Error> {
        let client =
            rl_contract::http_client::build(Duration::from_secs(10), Duration::from_secs(2))?;
        Ok(Self {
            store,
            client,
            endpoint: format!("{audit_service_url}/internal/v1/audit-events/batch"),
            wake,
            max_backoff,
            metrics,
            internal_token,
        })
    }

    /// Deliver one batch. Returns how many events were delivered.
    async fn deliver_batch(&self) -> Result<usize, RelayError> {
        let items = self.store.outbox_batch(BATCH).await?;
        if items.is_empty() {
            return Ok(0);
        }
        let seqs: Vec<i64> = items.iter().map(|i| i.seq).collect();
        let batch = rl_contract::wire::AuditEventBatch {
            events: items.into_iter().map(|i| i.event).collect(),
        };
        let mut request = self.client.post(&self.endpoint).json(&batch);
        if let Some(token) = &self.internal_token {
            request = request.header(rl_contract::signing::INTERNAL_TOKEN_HEADER, token);
        }
        let sent = request.send().await;
        match sent {
            Ok(r) if r.status().is_success() => {
                self.store.outbox_delete(&seqs).await?;
                self.metrics
                    .relay_events
                    .with_label_values(&["delivered"])
                    .inc_by(seqs.len() as u64);
                Ok(seqs.len())
            }
            Ok(r) => {
                self.metrics
                    .relay_events
                    .with_label_values(&["failed"])
                    .inc_by(seqs.len() as u64);
                self.mark_attempt(&seqs).await;
                Err(RelayError::Delivery(format!(
                    "audit-service answered {}",
                    r.status()
                )))
            }
            Err(e) => {
                self.metrics
                    .relay_events
                    .with_label_values(&["failed"])
                    .inc_by(seqs.len() as u64);
                self.mark_attempt(&seqs).await;
                Err(RelayError::Delivery(e.to_string()))
            }
        }
    }

    /// Count a failed delivery on its rows. Not being able to count is logged and counted,
    /// never hidden: the rows stay in the outbox and are retried either way.
    async fn mark_attempt(&self, seqs: &[i64]) {
        if let Err(e) = self.store.outbox_mark_attempt(seqs).await {
            self.metrics
                .relay_events
                .with_label_values(&["attempt_not_recorded"])
                .inc_by(seqs.len() as u64);
            tracing::warn!(error = %e, rows = seqs.len(), "could not record the outbox delivery attempt");
        }
    }

    /// Run until `shutdown` turns true, then make one last bounded attempt to drain.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(Duration::from_millis(100), self.max_backoff);
        loop {
            if *shutdown.borrow() {
                break;
            }
            match self.deliver_batch().await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {
                    backoff.reset();
                    tokio::select! {
                        () = self.wake.notified() => {},
                        () = tokio::time::sleep(IDLE_POLL) => {},
                        _ = shutdown.changed() => {},
                    }
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "audit relay: delivery failed");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {},
                        _ = shutdown.changed() => {},
                    }
                }
            }
        }
        let drain = async {
            while let Ok(n) = self.deliver_batch().await {
                if n == 0 {
                    break;
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            tracing::warn!(
                "audit relay: outbox not fully drained at shutdown; it will be on next start"
            );
        }
    }
}
