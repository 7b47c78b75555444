//! The audit outbox every writing service shares (keys-service, webhooks-service).
//!
//! A change and its audit event commit together: [`insert`] writes the event into the
//! service's `audit_outbox` table inside the change's own transaction. A [`Relay`] delivers
//! the rows to audit-service (`POST /internal/v1/audit-events/batch`, the internal token,
//! [`crate::wire::AuditEventBatch`]), oldest first, with capped, jittered backoff; a row is
//! deleted only after audit-service accepted its batch. audit-service ingests idempotently
//! by event id, so a batch delivered twice (a crash between accept and delete, or two
//! replicas relaying) is stored once. The service's own work never waits for any of this.
//!
//! The table (the same in every service's migrations):
//! `audit_outbox (seq, event_id UNIQUE, organization_id, occurred_at, actor, event_type,
//! message, resource_type, resource_id, metadata, attempts)`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::{Any, Row, Transaction};
use tokio::sync::{Notify, watch};

use crate::backoff::Backoff;
use crate::db::{Database, Sql};
use crate::wire::{AuditEvent, AuditEventBatch};

const BATCH: i64 = 200;
const IDLE_POLL: Duration = Duration::from_secs(2);

/// What a change records in the audit trail, before it is tied to the resource it changed
/// (each service builds these; `event` ties one to its organization and resource).
#[derive(Debug, Clone)]
pub struct Change {
    /// Dotted lowercase: `api_key.created`.
    pub event_type: &'static str,
    /// The user, or `api_key:<id>`.
    pub actor: String,
    pub message: String,
    /// What changed — never key material or secrets.
    pub metadata: Value,
}

impl Change {
    pub fn event<'a>(
        &'a self,
        organization_id: &'a str,
        resource_type: &'a str,
        resource_id: &'a str,
    ) -> NewEvent<'a> {
        NewEvent {
            organization_id,
            actor: &self.actor,
            event_type: self.event_type,
            message: &self.message,
            resource_type,
            resource_id,
            metadata: &self.metadata,
        }
    }
}

/// One event to record with the change it describes.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub organization_id: &'a str,
    pub actor: &'a str,
    pub event_type: &'a str,
    pub message: &'a str,
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    pub metadata: &'a Value,
}

/// Write `event` in the change's transaction `tx`.
pub async fn insert(
    tx: &mut Transaction<'static, Any>,
    event: &NewEvent<'_>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_outbox (event_id, organization_id, occurred_at, actor, event_type, \
         message, resource_type, resource_id, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(uuid::Uuid::now_v7().hyphenated().to_string())
    .bind(event.organization_id)
    .bind(now_ms)
    .bind(event.actor)
    .bind(event.event_type)
    .bind(event.message)
    .bind(event.resource_type)
    .bind(event.resource_id)
    .bind(event.metadata.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The oldest undelivered events, with their row numbers.
pub async fn oldest(db: &Database, limit: i64) -> Result<Vec<(i64, AuditEvent)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, event_id, organization_id, occurred_at, actor, event_type, message, \
         resource_type, resource_id, metadata FROM audit_outbox ORDER BY seq LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|row| {
            let metadata: String = row.try_get("metadata")?;
            let occurred_at: i64 = row.try_get("occurred_at")?;
            Ok((
                row.try_get("seq")?,
                AuditEvent {
                    id: row.try_get("event_id")?,
                    organization_id: row.try_get("organization_id")?,
                    occurred_at: crate::time_fmt::format_ms(occurred_at),
                    actor: row.try_get("actor")?,
                    event_type: row.try_get("event_type")?,
                    message: row.try_get("message")?,
                    resource_type: row.try_get("resource_type")?,
                    resource_id: row.try_get("resource_id")?,
                    metadata: serde_json::from_str(&metadata)
                        .map_err(|e| sqlx::Error::Decode(e.into()))?,
                },
            ))
        })
        .collect()
}

/// Remove exactly the delivered rows. (Not `seq <= max`: on Postgres a lower sequence
/// number can commit after a higher one, and must not be deleted unseen.)
pub async fn delete(db: &Database, seqs: &[i64]) -> Result<(), sqlx::Error> {
    if seqs.is_empty() {
        return Ok(());
    }
    Sql::new("DELETE FROM audit_outbox WHERE seq IN (")
        .bind_list(seqs.iter().copied())
        .push(")")
        .query()
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Count a failed delivery on its rows.
pub async fn mark_attempt(db: &Database, seqs: &[i64]) -> Result<(), sqlx::Error> {
    if seqs.is_empty() {
        return Ok(());
    }
    Sql::new("UPDATE audit_outbox SET attempts = attempts + 1 WHERE seq IN (")
        .bind_list(seqs.iter().copied())
        .push(")")
        .query()
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Rows waiting for delivery.
pub async fn backlog(db: &Database) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM audit_outbox")
        .fetch_one(&db.pool)
        .await?
        .try_get("n")
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("outbox read: {0}")]
    Store(#[from] sqlx::Error),
    #[error("delivery: {0}")]
    Delivery(String),
}

/// Delivers a service's outbox to audit-service until told to stop.
pub struct Relay {
    db: Database,
    client: reqwest::Client,
    endpoint: String,
    wake: Arc<Notify>,
    max_backoff: Duration,
    /// `<service>_audit_relay_events_total{result}`: delivered, failed,
    /// attempt_not_recorded.
    events: prometheus::IntCounterVec,
    internal_token: Option<String>,
}

impl Relay {
    pub fn new(
        db: Database,
        audit_service_url: &str,
        wake: Arc<Notify>,
        max_backoff: Duration,
        events: prometheus::IntCounterVec,
        internal_token: Option<String>,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            db,
            client: crate::http_client::build(Duration::from_secs(10), Duration::from_secs(2))?,
            endpoint: format!(
                "{}/internal/v1/audit-events/batch",
                audit_service_url.trim_end_matches('/')
            ),
            wake,
            max_backoff,
            events,
            internal_token,
        })
    }

    /// Deliver one batch. Returns how many events were delivered.
    async fn deliver_batch(&self) -> Result<usize, RelayError> {
        let items = oldest(&self.db, BATCH).await?;
        if items.is_empty() {
            return Ok(0);
        }
        let (seqs, events): (Vec<i64>, Vec<AuditEvent>) = items.into_iter().unzip();
        let mut request = self
            .client
            .post(&self.endpoint)
            .json(&AuditEventBatch { events });
        if let Some(token) = &self.internal_token {
            request = request.header(crate::signing::INTERNAL_TOKEN_HEADER, token);
        }
        let failure = match request.send().await {
            Ok(r) if r.status().is_success() => {
                delete(&self.db, &seqs).await?;
                self.events
                    .with_label_values(&["delivered"])
                    .inc_by(seqs.len() as u64);
                return Ok(seqs.len());
            }
            Ok(r) => format!("audit-service answered {}", r.status()),
            Err(e) => e.to_string(),
        };
        self.events
            .with_label_values(&["failed"])
            .inc_by(seqs.len() as u64);
        // Not being able to count is logged and counted, never hidden: the rows stay in the
        // outbox and are retried either way.
        if let Err(e) = mark_attempt(&self.db, &seqs).await {
            self.events
                .with_label_values(&["attempt_not_recorded"])
                .inc_by(seqs.len() as u64);
            tracing::warn!(error = %e, rows = seqs.len(), "could not record the outbox delivery attempt");
        }
        Err(RelayError::Delivery(failure))
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
                "audit relay: outbox not drained before shutdown; it is delivered at the next start"
            );
        }
    }
}
