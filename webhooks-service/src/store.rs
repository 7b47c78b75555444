//! Every database statement of webhooks-service (SQLite or Postgres through sqlx `Any`).
//!
//! Each endpoint change writes its audit event into `audit_outbox` in the same transaction.
//! An event and its deliveries (one per subscribed endpoint) are written together, so an
//! accepted event is never lost. Deliveries are claimed with a lease: a worker that dies
//! mid-attempt leaves its lease to expire, and another worker takes the delivery over.

use rl_contract::db::{Backend, Database, MigrationSource, Sql};
use rl_contract::idempotency::Claim;
use rl_contract::page::Cursor;
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

pub const MIGRATIONS_TABLE: &str = "_webhooks_service_migrations";

pub const MIGRATIONS: &[MigrationSource] = &[
    MigrationSource {
        version: 1,
        description: "endpoints, events, deliveries, attempts, audit outbox",
        sqlite: include_str!("../migrations/0001_webhooks.sqlite.sql"),
        postgres: include_str!("../migrations/0001_webhooks.postgres.sql"),
    },
    MigrationSource {
        version: 2,
        description: "idempotency keys",
        sqlite: rl_contract::idempotency::MIGRATION,
        postgres: rl_contract::idempotency::MIGRATION,
    },
];

/// The actor of changes the service makes by itself (disabling a failing endpoint).
pub const SYSTEM_ACTOR: &str = "system:webhooks-service";

/// A write made under an `Idempotency-Key`: its response is stored by the write's own
/// transaction (`rl_contract::idempotency`).
pub struct Finish<'a, T> {
    pub claim: &'a Claim,
    pub status: u16,
    /// The response body a replay returns, from the record as committed.
    pub render: &'a (dyn Fn(&T) -> String + Send + Sync),
}

/// Complete `finish` (if any) in `tx`, then commit.
async fn commit<T>(
    mut tx: Transaction<'static, Any>,
    finish: Option<&Finish<'_, T>>,
    record: &T,
    now: i64,
) -> Result<(), sqlx::Error> {
    if let Some(f) = finish {
        f.claim
            .complete(&mut tx, f.status, &(f.render)(record), now)
            .await?;
    }
    tx.commit().await
}

fn decode_err(e: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

const ENDPOINT_COLUMNS: &str = "id, organization_id, url, description, event_types, disabled, \
    disabled_reason, disabled_at, failing_since, secret_sealed, previous_secret_sealed, \
    previous_secret_expires_at, signing_key_sealed, signing_public_key, created_at, updated_at";

/// A stored endpoint. The sealed columns never leave the service.
#[derive(Debug, Clone)]
pub struct EndpointRecord {
    pub id: String,
    pub organization_id: String,
    pub url: String,
    pub description: String,
    /// `None`: every event type.
    pub event_types: Option<Vec<String>>,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<i64>,
    pub failing_since: Option<i64>,
    pub secret_sealed: String,
    pub previous_secret_sealed: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
    pub signing_key_sealed: String,
    pub signing_public_key: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl EndpointRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let types: Option<String> = row.try_get("event_types")?;
        Ok(Self {
            id: row.try_get("id")?,
            organization_id: row.try_get("organization_id")?,
            url: row.try_get("url")?,
            description: row.try_get("description")?,
            event_types: types
                .map(|t| serde_json::from_str(&t))
                .transpose()
                .map_err(decode_err)?,
            disabled: row.try_get::<i64, _>("disabled")? != 0,
            disabled_reason: row.try_get("disabled_reason")?,
            disabled_at: row.try_get("disabled_at")?,
            failing_since: row.try_get("failing_since")?,
            secret_sealed: row.try_get("secret_sealed")?,
            previous_secret_sealed: row.try_get("previous_secret_sealed")?,
            previous_secret_expires_at: row.try_get("previous_secret_expires_at")?,
            signing_key_sealed: row.try_get("signing_key_sealed")?,
            signing_public_key: row.try_get("signing_public_key")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    pub fn subscribed(&self, event_type: &str) -> bool {
        self.event_types
            .as_ref()
            .is_none_or(|t| t.iter().any(|x| x == event_type))
    }

    /// The previous secret, while its overlap lasts.
    pub fn live_previous_secret(&self, now: i64) -> Option<&str> {
        match (
            &self.previous_secret_sealed,
            self.previous_secret_expires_at,
        ) {
            (Some(s), Some(until)) if until > now => Some(s),
            _ => None,
        }
    }

    fn audit_view(&self) -> Value {
        json!({
            "url": self.url,
            "description": self.description,
            "eventTypes": self.event_types,
            "disabled": self.disabled,
        })
    }
}

/// One audit event, as this service records it (`rl_contract::outbox`).
pub use rl_contract::outbox::Change as AuditEvent;

#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
}

pub struct NewEndpoint {
    pub id: String,
    pub organization_id: String,
    pub actor: String,
    pub url: String,
    pub description: String,
    pub event_types: Option<Vec<String>>,
    pub disabled: bool,
    pub secret_sealed: String,
    pub signing_key_sealed: String,
    pub signing_public_key: String,
}

/// What an update asks to change (`None`: leave as is).
#[derive(Debug, Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub description: Option<String>,
    /// `Some(None)`: every event type.
    pub event_types: Option<Option<Vec<String>>>,
    pub disabled: Option<bool>,
}

pub struct Updated {
    pub record: EndpointRecord,
    pub changed: bool,
    /// Failed deliveries queued again by re-enabling the endpoint.
    pub recovered: u64,
}

/// Why a create was refused inside its transaction.
#[derive(Debug)]
pub enum CreateError {
    Limit(u32),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for CreateError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

fn types_json(types: &Option<Vec<String>>) -> Option<String> {
    types.as_ref().map(|t| Value::from(t.clone()).to_string())
}

fn lock_clause(backend: Backend) -> &'static str {
    // SQLite has no FOR UPDATE; its BEGIN IMMEDIATE already serializes writers.
    match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    }
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub async fn create_endpoint(
        &self,
        new: NewEndpoint,
        max_per_org: u32,
        now: i64,
        finish: Option<&Finish<'_, EndpointRecord>>,
    ) -> Result<EndpointRecord, CreateError> {
        let record = EndpointRecord {
            id: new.id,
            organization_id: new.organization_id,
            url: new.url,
            description: new.description,
            event_types: new.event_types,
            disabled: new.disabled,
            disabled_reason: new.disabled.then(|| "manual".to_owned()),
            disabled_at: new.disabled.then_some(now),
            failing_since: None,
            secret_sealed: new.secret_sealed,
            previous_secret_sealed: None,
            previous_secret_expires_at: None,
            signing_key_sealed: new.signing_key_sealed,
            signing_public_key: new.signing_public_key,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.db.begin_write().await?;
        if self.db.backend == Backend::Postgres {
            // Serialize creates of one organization so the limit holds under concurrency.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(format!("webhooks-endpoints:{}", record.organization_id))
                .execute(&mut *tx)
                .await?;
        }
        let count: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM webhook_endpoints WHERE organization_id = $1 \
             AND deleted_at IS NULL",
        )
        .bind(&record.organization_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if count >= i64::from(max_per_org) {
            return Err(CreateError::Limit(max_per_org));
        }
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, organization_id, url, description, event_types, \
             disabled, disabled_reason, disabled_at, secret_sealed, signing_key_sealed, \
             signing_public_key, created_at, updated_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&record.id)
        .bind(&record.organization_id)
        .bind(&record.url)
        .bind(&record.description)
        .bind(types_json(&record.event_types))
        .bind(i64::from(record.disabled))
        .bind(record.disabled_reason.clone())
        .bind(record.disabled_at)
        .bind(&record.secret_sealed)
        .bind(&record.signing_key_sealed)
        .bind(&record.signing_public_key)
        .bind(now)
        .bind(now)
        .bind(&new.actor)
        .execute(&mut *tx)
        .await?;
        let event = AuditEvent {
            event_type: "outbound_webhook_endpoint.created",
            actor: new.actor,
            message: format!("Outbound webhook endpoint {} created", record.url),
            metadata: record.audit_view(),
        };
        insert_outbox(&mut tx, &record.organization_id, &record.id, &event, now).await?;
        commit(tx, finish, &record, now).await?;
        Ok(record)
    }

    pub async fn list_endpoints(
        &self,
        organization_id: &str,
        limit: u32,
        after: Option<&Cursor>,
    ) -> Result<(Vec<EndpointRecord>, Option<Cursor>), sqlx::Error> {
        let mut q = Sql::new(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE deleted_at IS NULL \
             AND organization_id = "
        ));
        q.bind(organization_id);
        if let Some(c) = after {
            q.push(" AND (created_at < ")
                .bind(c.at)
                .push(" OR (created_at = ")
                .bind(c.at)
                .push(" AND id < ")
                .bind(c.id.as_str())
                .push("))");
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .bind(i64::from(limit) + 1);
        let rows = q.query().fetch_all(&self.db.pool).await?;
        let mut records = rows
            .iter()
            .map(EndpointRecord::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(&mut records, limit, |r| (r.created_at, r.id.clone())))
    }

    pub async fn get_endpoint(
        &self,
        organization_id: &str,
        id: &str,
    ) -> Result<Option<EndpointRecord>, sqlx::Error> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 \
             AND organization_id = $2 AND deleted_at IS NULL"
        )))
        .bind(id)
        .bind(organization_id)
        .fetch_optional(&self.db.pool)
        .await?
        .as_ref()
        .map(EndpointRecord::from_row)
        .transpose()
    }

    /// An endpoint by id alone (the workers'), deleted ones included.
    pub async fn endpoint_by_id(&self, id: &str) -> Result<Option<EndpointRecord>, sqlx::Error> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL"
        )))
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?
        .as_ref()
        .map(EndpointRecord::from_row)
        .transpose()
    }

    async fn lock_endpoint(
        &self,
        tx: &mut Transaction<'static, Any>,
        organization_id: &str,
        id: &str,
    ) -> Result<Option<EndpointRecord>, sqlx::Error> {
        let lock = lock_clause(self.db.backend);
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 \
             AND organization_id = $2 AND deleted_at IS NULL{lock}"
        )))
        .bind(id)
        .bind(organization_id)
        .fetch_optional(&mut **tx)
        .await?
        .as_ref()
        .map(EndpointRecord::from_row)
        .transpose()
    }

    pub async fn update_endpoint(
        &self,
        organization_id: &str,
        id: &str,
        actor: &str,
        changes: EndpointChanges,
        now: i64,
        finish: Option<&Finish<'_, EndpointRecord>>,
    ) -> Result<Option<Updated>, sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        let Some(before) = self.lock_endpoint(&mut tx, organization_id, id).await? else {
            return Ok(None);
        };
        let mut diff = serde_json::Map::new();
        let mut after = before.clone();
        if let Some(url) = changes.url.filter(|u| *u != before.url) {
            diff.insert("url".into(), json!({"from": before.url, "to": url}));
            after.url = url;
        }
        if let Some(d) = changes.description.filter(|d| *d != before.description) {
            diff.insert(
                "description".into(),
                json!({"from": before.description, "to": d}),
            );
            after.description = d;
        }
        if let Some(t) = changes.event_types.filter(|t| *t != before.event_types) {
            diff.insert(
                "eventTypes".into(),
                json!({"from": before.event_types, "to": t}),
            );
            after.event_types = t;
        }
        let mut recovered = 0;
        let mut reenabled_since = None;
        if let Some(disabled) = changes.disabled.filter(|d| *d != before.disabled) {
            diff.insert(
                "disabled".into(),
                json!({"from": before.disabled, "to": disabled}),
            );
            after.disabled = disabled;
            if disabled {
                after.disabled_reason = Some("manual".to_owned());
                after.disabled_at = Some(now);
            } else {
                reenabled_since = before.failing_since.or(before.disabled_at);
                after.disabled_reason = None;
                after.disabled_at = None;
                after.failing_since = None;
            }
        }
        if diff.is_empty() {
            commit(tx, finish, &before, now).await?;
            return Ok(Some(Updated {
                record: before,
                changed: false,
                recovered: 0,
            }));
        }
        after.updated_at = now;
        sqlx::query(
            "UPDATE webhook_endpoints SET url = $1, description = $2, event_types = $3, \
             disabled = $4, disabled_reason = $5, disabled_at = $6, failing_since = $7, \
             updated_at = $8 WHERE id = $9",
        )
        .bind(&after.url)
        .bind(&after.description)
        .bind(types_json(&after.event_types))
        .bind(i64::from(after.disabled))
        .bind(after.disabled_reason.clone())
        .bind(after.disabled_at)
        .bind(after.failing_since)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if let Some(since) = reenabled_since {
            // Re-enabling recovers what failed while the endpoint was failing: each failed
            // delivery gets one more attempt, now.
            recovered = sqlx::query(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, \
                 finished_at = NULL WHERE endpoint_id = $2 AND status = 'failed' \
                 AND finished_at >= $3",
            )
            .bind(now)
            .bind(id)
            .bind(since)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            diff.insert("recoveredDeliveries".into(), json!(recovered));
        }
        let fields: Vec<&str> = diff.keys().map(String::as_str).collect();
        let event = AuditEvent {
            event_type: "outbound_webhook_endpoint.updated",
            actor: actor.to_owned(),
            message: format!(
                "Outbound webhook endpoint {} updated: {}",
                after.url,
                fields.join(", ")
            ),
            metadata: json!({ "changes": diff }),
        };
        insert_outbox(&mut tx, organization_id, id, &event, now).await?;
        commit(tx, finish, &after, now).await?;
        Ok(Some(Updated {
            record: after,
            changed: true,
            recovered,
        }))
    }

    /// Delete: the endpoint disappears from the API and its pending deliveries are
    /// cancelled (its attempts stay listable under their events).
    pub async fn delete_endpoint(
        &self,
        organization_id: &str,
        id: &str,
        actor: &str,
        now: i64,
        finish: Option<&Finish<'_, EndpointRecord>>,
    ) -> Result<Option<(EndpointRecord, u64)>, sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        let Some(record) = self.lock_endpoint(&mut tx, organization_id, id).await? else {
            return Ok(None);
        };
        sqlx::query("UPDATE webhook_endpoints SET deleted_at = $1, updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let cancelled = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'cancelled', finished_at = $1, \
             next_attempt_at = NULL WHERE endpoint_id = $2 AND status = 'pending'",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let event = AuditEvent {
            event_type: "outbound_webhook_endpoint.deleted",
            actor: actor.to_owned(),
            message: format!("Outbound webhook endpoint {} deleted", record.url),
            metadata: json!({ "url": record.url, "cancelledDeliveries": cancelled }),
        };
        insert_outbox(&mut tx, organization_id, id, &event, now).await?;
        commit(tx, finish, &record, now).await?;
        Ok(Some((record, cancelled)))
    }

    /// Replace the signing secret; the old one keeps signing until `previous_until`.
    #[allow(clippy::too_many_arguments)]
    pub async fn rotate_secret(
        &self,
        organization_id: &str,
        id: &str,
        actor: &str,
        new_sealed: String,
        previous_until: i64,
        now: i64,
        finish: Option<&Finish<'_, EndpointRecord>>,
    ) -> Result<Option<EndpointRecord>, sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        let Some(mut record) = self.lock_endpoint(&mut tx, organization_id, id).await? else {
            return Ok(None);
        };
        record.previous_secret_sealed =
            Some(std::mem::replace(&mut record.secret_sealed, new_sealed));
        record.previous_secret_expires_at = Some(previous_until);
        record.updated_at = now;
        sqlx::query(
            "UPDATE webhook_endpoints SET secret_sealed = $1, previous_secret_sealed = $2, \
             previous_secret_expires_at = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(&record.secret_sealed)
        .bind(record.previous_secret_sealed.clone())
        .bind(previous_until)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let event = AuditEvent {
            event_type: "outbound_webhook_endpoint.secret_rotated",
            actor: actor.to_owned(),
            message: format!(
                "Signing secret of outbound webhook endpoint {} rotated",
                record.url
            ),
            metadata: json!({
                "previousSecretExpiresAt": rl_contract::time_fmt::format_ms(previous_until),
            }),
        };
        insert_outbox(&mut tx, organization_id, id, &event, now).await?;
        commit(tx, finish, &record, now).await?;
        Ok(Some(record))
    }
}

// ---------------------------------------------------------------------------------------
// Events and deliveries.

/// A queued event as stored: `payload` is the exact body every attempt sends.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub organization_id: String,
    pub id: String,
    pub event_type: String,
    pub payload: String,
    pub created_at: i64,
    /// Derived from its deliveries when listed.
    pub status: String,
}

impl EventRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            organization_id: row.try_get("organization_id")?,
            id: row.try_get("id")?,
            event_type: row.try_get("event_type")?,
            payload: row.try_get("payload")?,
            created_at: row.try_get("created_at")?,
            status: row.try_get("status")?,
        })
    }
}

/// One delivery of an event to one endpoint, as the API shows it.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// The status of an event: pending while any delivery is; else failed if any failed; else
/// succeeded if any succeeded; else cancelled; `none` when no endpoint was subscribed.
const EVENT_STATUS: &str = "CASE \
    WHEN EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.organization_id = e.organization_id \
        AND d.event_id = e.id AND d.status = 'pending') THEN 'pending' \
    WHEN EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.organization_id = e.organization_id \
        AND d.event_id = e.id AND d.status = 'failed') THEN 'failed' \
    WHEN EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.organization_id = e.organization_id \
        AND d.event_id = e.id AND d.status = 'succeeded') THEN 'succeeded' \
    WHEN EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.organization_id = e.organization_id \
        AND d.event_id = e.id) THEN 'cancelled' \
    ELSE 'none' END";

pub struct NewEvent {
    pub organization_id: String,
    pub id: String,
    pub event_type: String,
    pub payload: String,
}

/// What queueing an event did.
pub struct Queued {
    pub event: EventRecord,
    /// False when the event id was already queued: nothing was queued again.
    pub created: bool,
    pub deliveries: u64,
}

impl Store {
    /// Queue an event and one delivery per enabled, subscribed endpoint, atomically. An event
    /// id already queued for this organization queues nothing and returns the first.
    pub async fn queue_event(
        &self,
        new: NewEvent,
        first_delay_ms: i64,
        now: i64,
        finish: Option<&Finish<'_, Queued>>,
    ) -> Result<Queued, sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO webhook_events (organization_id, id, event_type, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (organization_id, id) DO NOTHING",
        )
        .bind(&new.organization_id)
        .bind(&new.id)
        .bind(&new.event_type)
        .bind(&new.payload)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            let event = self
                .event_in(&mut tx, &new.organization_id, &new.id)
                .await?
                .ok_or(sqlx::Error::RowNotFound)?;
            let queued = Queued {
                event,
                created: false,
                deliveries: 0,
            };
            commit(tx, finish, &queued, now).await?;
            return Ok(queued);
        }
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE organization_id = $1 \
             AND deleted_at IS NULL AND disabled = 0"
        )))
        .bind(&new.organization_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut deliveries = 0;
        for row in &rows {
            let endpoint = EndpointRecord::from_row(row)?;
            if !endpoint.subscribed(&new.event_type) {
                continue;
            }
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, organization_id, event_id, endpoint_id, \
                 status, attempts, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6)",
            )
            .bind(uuid::Uuid::now_v7().hyphenated().to_string())
            .bind(&new.organization_id)
            .bind(&new.id)
            .bind(&endpoint.id)
            .bind(now + first_delay_ms)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            deliveries += 1;
        }
        let queued = Queued {
            event: EventRecord {
                organization_id: new.organization_id,
                id: new.id,
                event_type: new.event_type,
                payload: new.payload,
                created_at: now,
                status: if deliveries > 0 { "pending" } else { "none" }.to_owned(),
            },
            created: true,
            deliveries,
        };
        commit(tx, finish, &queued, now).await?;
        Ok(queued)
    }

    async fn event_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        organization_id: &str,
        id: &str,
    ) -> Result<Option<EventRecord>, sqlx::Error> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT e.organization_id, e.id, e.event_type, e.payload, e.created_at, \
             {EVENT_STATUS} AS status FROM webhook_events e \
             WHERE e.organization_id = $1 AND e.id = $2"
        )))
        .bind(organization_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .as_ref()
        .map(EventRecord::from_row)
        .transpose()
    }

    pub async fn get_event(
        &self,
        organization_id: &str,
        id: &str,
    ) -> Result<Option<EventRecord>, sqlx::Error> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT e.organization_id, e.id, e.event_type, e.payload, e.created_at, \
             {EVENT_STATUS} AS status FROM webhook_events e \
             WHERE e.organization_id = $1 AND e.id = $2"
        )))
        .bind(organization_id)
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?
        .as_ref()
        .map(EventRecord::from_row)
        .transpose()
    }

    pub async fn list_events(
        &self,
        organization_id: &str,
        limit: u32,
        after: Option<&Cursor>,
        event_type: Option<&str>,
        status: Option<&str>,
    ) -> Result<(Vec<EventRecord>, Option<Cursor>), sqlx::Error> {
        let mut q = Sql::new(&format!(
            "SELECT * FROM (SELECT e.organization_id, e.id, e.event_type, e.payload, \
             e.created_at, {EVENT_STATUS} AS status FROM webhook_events e \
             WHERE e.organization_id = "
        ));
        q.bind(organization_id);
        if let Some(t) = event_type {
            q.push(" AND e.event_type = ").bind(t);
        }
        if let Some(c) = after {
            q.push(" AND (e.created_at < ")
                .bind(c.at)
                .push(" OR (e.created_at = ")
                .bind(c.at)
                .push(" AND e.id < ")
                .bind(c.id.as_str())
                .push("))");
        }
        q.push(") listed");
        if let Some(s) = status {
            q.push(" WHERE status = ").bind(s);
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .bind(i64::from(limit) + 1);
        let rows = q.query().fetch_all(&self.db.pool).await?;
        let mut records = rows
            .iter()
            .map(EventRecord::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(&mut records, limit, |r| (r.created_at, r.id.clone())))
    }

    /// The deliveries of these events, for the list view.
    pub async fn deliveries_of(
        &self,
        organization_id: &str,
        event_ids: &[String],
    ) -> Result<Vec<DeliveryRecord>, sqlx::Error> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = Sql::new(
            "SELECT id, event_id, endpoint_id, status, attempts, next_attempt_at, finished_at \
             FROM webhook_deliveries WHERE organization_id = ",
        );
        q.bind(organization_id)
            .push(" AND event_id IN (")
            .bind_list(event_ids.iter().map(String::as_str))
            .push(") ORDER BY created_at, id");
        q.query()
            .fetch_all(&self.db.pool)
            .await?
            .iter()
            .map(delivery_from_row)
            .collect()
    }

    pub async fn delivery_for(
        &self,
        organization_id: &str,
        event_id: &str,
        endpoint_id: &str,
    ) -> Result<Option<DeliveryRecord>, sqlx::Error> {
        sqlx::query(
            "SELECT id, event_id, endpoint_id, status, attempts, next_attempt_at, finished_at \
             FROM webhook_deliveries WHERE organization_id = $1 AND event_id = $2 \
             AND endpoint_id = $3",
        )
        .bind(organization_id)
        .bind(event_id)
        .bind(endpoint_id)
        .fetch_optional(&self.db.pool)
        .await?
        .as_ref()
        .map(delivery_from_row)
        .transpose()
    }

    /// The delivery a manual resend records its attempt under (created when the endpoint
    /// was not subscribed, or did not exist, when the event was queued).
    pub async fn ensure_delivery(
        &self,
        organization_id: &str,
        event_id: &str,
        endpoint_id: &str,
        now: i64,
    ) -> Result<DeliveryRecord, sqlx::Error> {
        if let Some(d) = self
            .delivery_for(organization_id, event_id, endpoint_id)
            .await?
        {
            return Ok(d);
        }
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, organization_id, event_id, endpoint_id, \
             status, attempts, created_at) VALUES ($1, $2, $3, $4, 'manual', 0, $5) \
             ON CONFLICT (organization_id, event_id, endpoint_id) DO NOTHING",
        )
        .bind(uuid::Uuid::now_v7().hyphenated().to_string())
        .bind(organization_id)
        .bind(event_id)
        .bind(endpoint_id)
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        self.delivery_for(organization_id, event_id, endpoint_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
}

fn delivery_from_row(row: &AnyRow) -> Result<DeliveryRecord, sqlx::Error> {
    Ok(DeliveryRecord {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        endpoint_id: row.try_get("endpoint_id")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn page<T>(
    records: &mut Vec<T>,
    limit: u32,
    key: impl Fn(&T) -> (i64, String),
) -> (Vec<T>, Option<Cursor>) {
    let next = if records.len() > limit as usize {
        records.truncate(limit as usize);
        records.last().map(|r| {
            let (at, id) = key(r);
            Cursor { at, id }
        })
    } else {
        None
    };
    (std::mem::take(records), next)
}

// ---------------------------------------------------------------------------------------
// Attempts.

#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub id: String,
    pub delivery_id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub attempt_number: i64,
    /// `scheduled` (a worker) or `manual` (a resend through the API).
    pub trigger: String,
    pub attempted_at: i64,
    pub duration_ms: i64,
    /// `succeeded` or `failed`.
    pub result: String,
    pub http_status: Option<i64>,
    pub error_class: Option<String>,
    pub response_body: Option<String>,
}

const ATTEMPT_COLUMNS: &str = "id, delivery_id, event_id, endpoint_id, attempt_number, \
    trigger_kind, attempted_at, duration_ms, result, http_status, error_class, response_body";

impl AttemptRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            delivery_id: row.try_get("delivery_id")?,
            event_id: row.try_get("event_id")?,
            endpoint_id: row.try_get("endpoint_id")?,
            attempt_number: row.try_get("attempt_number")?,
            trigger: row.try_get("trigger_kind")?,
            attempted_at: row.try_get("attempted_at")?,
            duration_ms: row.try_get("duration_ms")?,
            result: row.try_get("result")?,
            http_status: row.try_get("http_status")?,
            error_class: row.try_get("error_class")?,
            response_body: row.try_get("response_body")?,
        })
    }
}

/// What the worker decided after an attempt.
#[derive(Debug, Clone)]
pub enum NextStep {
    Succeeded,
    RetryAt(i64),
    Failed,
}

/// What an attempt does to its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointEffect {
    /// A success: the endpoint is healthy again.
    Healthy,
    /// A failure: the endpoint is failing (since the first failure of the streak).
    Failing,
    /// `410 Gone`, or failing for longer than allowed: disable it.
    Disable(&'static str),
}

/// A claimed delivery, ready to attempt.
#[derive(Debug, Clone)]
pub struct Job {
    pub delivery_id: String,
    pub organization_id: String,
    pub event_id: String,
    pub endpoint_id: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub created_at: i64,
}

pub struct AttemptOutcome<'a> {
    pub attempt: &'a AttemptRecord,
    pub organization_id: &'a str,
    pub next: NextStep,
    pub effect: EndpointEffect,
    /// The lease this attempt ran under (`None`: a manual resend, no lease).
    pub lease_owner: Option<&'a str>,
    pub disable_after_ms: i64,
}

impl Store {
    pub async fn list_attempts(
        &self,
        organization_id: &str,
        event_id: &str,
        endpoint_id: Option<&str>,
        limit: u32,
        after: Option<&Cursor>,
    ) -> Result<(Vec<AttemptRecord>, Option<Cursor>), sqlx::Error> {
        let mut q = Sql::new(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE organization_id = "
        ));
        q.bind(organization_id)
            .push(" AND event_id = ")
            .bind(event_id);
        if let Some(e) = endpoint_id {
            q.push(" AND endpoint_id = ").bind(e);
        }
        if let Some(c) = after {
            q.push(" AND (attempted_at > ")
                .bind(c.at)
                .push(" OR (attempted_at = ")
                .bind(c.at)
                .push(" AND id > ")
                .bind(c.id.as_str())
                .push("))");
        }
        q.push(" ORDER BY attempted_at, id LIMIT ")
            .bind(i64::from(limit) + 1);
        let rows = q.query().fetch_all(&self.db.pool).await?;
        let mut records = rows
            .iter()
            .map(AttemptRecord::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(&mut records, limit, |r| {
            (r.attempted_at, r.id.clone())
        }))
    }

    /// Claim up to `batch` due deliveries for `owner` until `lease_until`, at most
    /// `per_endpoint` in flight per endpoint (counting every worker's live leases), never a
    /// delivery of a disabled or deleted endpoint.
    pub async fn claim(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        batch: i64,
        per_endpoint: i64,
    ) -> Result<Vec<Job>, sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        let skip_locked = match self.db.backend {
            Backend::Postgres => {
                // Claims are short; taking them one at a time keeps the per-endpoint limit
                // exact across replicas. SKIP LOCKED still passes over rows a resend holds.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext('webhooks-claim'))")
                    .execute(&mut *tx)
                    .await?;
                " FOR UPDATE OF d SKIP LOCKED"
            }
            Backend::Sqlite => "",
        };
        // Attempts in flight per endpoint (live leases), counted once; endpoints at their
        // limit are left out of the candidates, so a slow endpoint's backlog never fills a
        // claim while other endpoints' deliveries wait.
        let mut in_flight: std::collections::HashMap<String, i64> = Default::default();
        for row in sqlx::query(
            "SELECT endpoint_id, COUNT(*) AS n FROM webhook_deliveries \
             WHERE status = 'pending' AND lease_until >= $1 GROUP BY endpoint_id",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?
        {
            in_flight.insert(row.try_get("endpoint_id")?, row.try_get("n")?);
        }
        let saturated: Vec<&str> = in_flight
            .iter()
            .filter(|(_, n)| **n >= per_endpoint)
            .map(|(e, _)| e.as_str())
            .collect();
        let mut q = Sql::new(
            "SELECT d.id, d.organization_id, d.event_id, d.endpoint_id, d.attempts, d.created_at \
             FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= ",
        );
        q.bind(now)
            .push(" AND (d.lease_until IS NULL OR d.lease_until < ")
            .bind(now)
            .push(") AND e.disabled = 0 AND e.deleted_at IS NULL");
        if !saturated.is_empty() {
            q.push(" AND d.endpoint_id NOT IN (")
                .bind_list(saturated.iter().copied())
                .push(")");
        }
        q.push(" ORDER BY d.next_attempt_at, d.id LIMIT ")
            .bind(batch)
            .push(skip_locked);
        let rows = q.query().fetch_all(&mut *tx).await?;
        let mut jobs = Vec::new();
        for row in &rows {
            let endpoint_id: String = row.try_get("endpoint_id")?;
            let used = in_flight.get(&endpoint_id).copied().unwrap_or(0);
            if used >= per_endpoint {
                continue;
            }
            in_flight.insert(endpoint_id.clone(), used + 1);
            jobs.push(Job {
                delivery_id: row.try_get("id")?,
                organization_id: row.try_get("organization_id")?,
                event_id: row.try_get("event_id")?,
                endpoint_id,
                attempts: row.try_get("attempts")?,
                created_at: row.try_get("created_at")?,
            });
        }
        if !jobs.is_empty() {
            let mut q = Sql::new("UPDATE webhook_deliveries SET lease_owner = ");
            q.bind(owner)
                .push(", lease_until = ")
                .bind(lease_until)
                .push(" WHERE id IN (")
                .bind_list(jobs.iter().map(|j| j.delivery_id.as_str()))
                .push(")");
            q.query().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(jobs)
    }

    /// Record an attempt and its consequences in one transaction. Returns whether the
    /// delivery was still ours (its lease held) and whether the endpoint was disabled.
    pub async fn record_attempt(
        &self,
        o: AttemptOutcome<'_>,
        finish: Option<&Finish<'_, AttemptRecord>>,
    ) -> Result<(bool, Option<&'static str>), sqlx::Error> {
        let a = o.attempt;
        let now = a.attempted_at + a.duration_ms;
        let mut tx = self.db.begin_write().await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO webhook_attempts ({ATTEMPT_COLUMNS}, organization_id, worker) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        )))
        .bind(&a.id)
        .bind(&a.delivery_id)
        .bind(&a.event_id)
        .bind(&a.endpoint_id)
        .bind(a.attempt_number)
        .bind(&a.trigger)
        .bind(a.attempted_at)
        .bind(a.duration_ms)
        .bind(&a.result)
        .bind(a.http_status)
        .bind(a.error_class.clone())
        .bind(a.response_body.clone())
        .bind(o.organization_id)
        .bind(o.lease_owner.unwrap_or("api"))
        .execute(&mut *tx)
        .await?;
        let (status, next_at, finished) = match o.next {
            NextStep::Succeeded => ("succeeded", None, Some(now)),
            NextStep::RetryAt(at) => ("pending", Some(at), None),
            NextStep::Failed => ("failed", None, Some(now)),
        };
        let owned = match o.lease_owner {
            Some(owner) => {
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = $1, attempts = $2, \
                     next_attempt_at = $3, finished_at = $4, lease_owner = NULL, \
                     lease_until = NULL WHERE id = $5 AND lease_owner = $6 \
                     AND status = 'pending'",
                )
                .bind(status)
                .bind(a.attempt_number)
                .bind(next_at)
                .bind(finished)
                .bind(&a.delivery_id)
                .bind(owner)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1
            }
            None => {
                // A manual resend counts as an attempt; a success settles the delivery, a
                // failure leaves its schedule alone.
                let settle = matches!(o.next, NextStep::Succeeded);
                sqlx::query(
                    "UPDATE webhook_deliveries SET attempts = attempts + 1, \
                     status = CASE WHEN $1 = 1 THEN 'succeeded' ELSE status END, \
                     next_attempt_at = CASE WHEN $1 = 1 THEN NULL ELSE next_attempt_at END, \
                     finished_at = CASE WHEN $1 = 1 THEN $2 ELSE finished_at END \
                     WHERE id = $3",
                )
                .bind(i64::from(settle))
                .bind(now)
                .bind(&a.delivery_id)
                .execute(&mut *tx)
                .await?;
                true
            }
        };
        let disabled = self
            .apply_effect(
                &mut tx,
                o.organization_id,
                &a.endpoint_id,
                o.effect,
                o.disable_after_ms,
                now,
            )
            .await?;
        if let Some(f) = finish {
            f.claim
                .complete(&mut tx, f.status, &(f.render)(a), now)
                .await?;
        }
        tx.commit().await?;
        Ok((owned, disabled))
    }

    async fn apply_effect(
        &self,
        tx: &mut Transaction<'static, Any>,
        organization_id: &str,
        endpoint_id: &str,
        effect: EndpointEffect,
        disable_after_ms: i64,
        now: i64,
    ) -> Result<Option<&'static str>, sqlx::Error> {
        match effect {
            EndpointEffect::Healthy => {
                sqlx::query(
                    "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 \
                     AND failing_since IS NOT NULL",
                )
                .bind(endpoint_id)
                .execute(&mut **tx)
                .await?;
                Ok(None)
            }
            EndpointEffect::Failing | EndpointEffect::Disable(_) => {
                sqlx::query(
                    "UPDATE webhook_endpoints SET failing_since = $1 WHERE id = $2 \
                     AND failing_since IS NULL",
                )
                .bind(now)
                .bind(endpoint_id)
                .execute(&mut **tx)
                .await?;
                let reason = match effect {
                    EndpointEffect::Disable(r) => Some(r),
                    _ => {
                        let since: Option<i64> = sqlx::query(
                            "SELECT failing_since FROM webhook_endpoints WHERE id = $1",
                        )
                        .bind(endpoint_id)
                        .fetch_optional(&mut **tx)
                        .await?
                        .map(|r| r.try_get("failing_since"))
                        .transpose()?
                        .flatten();
                        since
                            .filter(|s| now - s >= disable_after_ms)
                            .map(|_| "failing")
                    }
                };
                let Some(reason) = reason else {
                    return Ok(None);
                };
                let changed = sqlx::query(
                    "UPDATE webhook_endpoints SET disabled = 1, disabled_reason = $1, \
                     disabled_at = $2, updated_at = $2 WHERE id = $3 AND disabled = 0 \
                     AND deleted_at IS NULL",
                )
                .bind(reason)
                .bind(now)
                .bind(endpoint_id)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if changed == 0 {
                    return Ok(None);
                }
                let message = match reason {
                    "gone" => "Outbound webhook endpoint disabled: it answered 410 Gone",
                    _ => "Outbound webhook endpoint disabled: it has been failing for too long",
                };
                let event = AuditEvent {
                    event_type: "outbound_webhook_endpoint.disabled",
                    actor: SYSTEM_ACTOR.to_owned(),
                    message: message.to_owned(),
                    metadata: json!({ "reason": reason }),
                };
                insert_outbox(tx, organization_id, endpoint_id, &event, now).await?;
                Ok(Some(reason))
            }
        }
    }

    /// Record that this worker made progress.
    pub async fn heartbeat(&self, worker: &str, now: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO worker_heartbeats (worker_id, beat_at) VALUES ($1, $2) \
             ON CONFLICT (worker_id) DO UPDATE SET beat_at = excluded.beat_at",
        )
        .bind(worker)
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        // Forget workers gone for a day.
        sqlx::query("DELETE FROM worker_heartbeats WHERE beat_at < $1")
            .bind(now - 86_400_000)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// The most recent heartbeat of any worker, if any.
    pub async fn last_heartbeat(&self) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query("SELECT MAX(beat_at) AS at FROM worker_heartbeats")
            .fetch_one(&self.db.pool)
            .await?
            .try_get("at")
    }

    /// Pending deliveries and the age of the oldest due one.
    pub async fn queue_stats(&self, now: i64) -> Result<(i64, Option<i64>), sqlx::Error> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(next_attempt_at) AS oldest FROM webhook_deliveries \
             WHERE status = 'pending' AND next_attempt_at <= $1",
        )
        .bind(now)
        .fetch_one(&self.db.pool)
        .await?;
        let n: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM webhook_deliveries WHERE status = 'pending'")
                .fetch_one(&self.db.pool)
                .await?
                .try_get("n")?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok((n, oldest.map(|o| (now - o).max(0))))
    }

    pub async fn disabled_endpoints(&self) -> Result<i64, sqlx::Error> {
        sqlx::query(
            "SELECT COUNT(*) AS n FROM webhook_endpoints WHERE disabled = 1 AND deleted_at IS NULL",
        )
        .fetch_one(&self.db.pool)
        .await?
        .try_get("n")
    }

    pub async fn event_payload(
        &self,
        organization_id: &str,
        event_id: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query("SELECT payload FROM webhook_events WHERE organization_id = $1 AND id = $2")
            .bind(organization_id)
            .bind(event_id)
            .fetch_optional(&self.db.pool)
            .await?
            .map(|r| r.try_get("payload"))
            .transpose()
    }
}

/// An endpoint change's audit event, in its transaction (`rl_contract::outbox`).
async fn insert_outbox(
    tx: &mut Transaction<'static, Any>,
    organization_id: &str,
    endpoint_id: &str,
    event: &AuditEvent,
    now: i64,
) -> Result<(), sqlx::Error> {
    rl_contract::outbox::insert(
        tx,
        &event.event(organization_id, "outbound_webhook_endpoint", endpoint_id),
        now,
    )
    .await
}
