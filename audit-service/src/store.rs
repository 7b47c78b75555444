//! Every database statement of audit-service.

use rl_contract::db::{Database, MigrationSource, Sql};
use rl_contract::page::Cursor;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::event::AuditEvent;

pub const MIGRATIONS_TABLE: &str = "_audit_service_migrations";

// The audit table needs no dialect differences: one file serves both backends.
pub const MIGRATIONS: &[MigrationSource] = &[MigrationSource {
    version: 1,
    description: "audit events",
    sqlite: include_str!("../migrations/0001_audit_events.sql"),
    postgres: include_str!("../migrations/0001_audit_events.sql"),
}];

/// The feed's filters, all optional, always within one organization.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub event_types: Vec<String>,
    pub actor: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// Exclusive bounds, Unix milliseconds.
    pub occurred_after: Option<i64>,
    pub occurred_before: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct IngestResult {
    pub accepted: u64,
    pub duplicates: u64,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Insert a batch in one transaction; an id seen before is skipped, so a retried batch
    /// never duplicates.
    pub async fn ingest(
        &self,
        events: &[AuditEvent],
        now: i64,
    ) -> Result<IngestResult, sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        let mut result = IngestResult::default();
        for e in events {
            let inserted = sqlx::query(
                "INSERT INTO audit_events (id, organization_id, occurred_at, actor, event_type, \
                 message, resource_type, resource_id, metadata, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&e.id)
            .bind(&e.organization_id)
            .bind(e.occurred_at)
            .bind(&e.actor)
            .bind(&e.event_type)
            .bind(e.message.as_deref())
            .bind(&e.resource_type)
            .bind(&e.resource_id)
            .bind(e.metadata.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted > 0 {
                result.accepted += 1;
            } else {
                result.duplicates += 1;
            }
        }
        tx.commit().await?;
        Ok(result)
    }

    /// Newest first by (occurred_at, id); `limit + 1` rows tell whether there is a next page.
    pub async fn list(
        &self,
        organization_id: &str,
        filter: &Filter,
        limit: u32,
        after: Option<&Cursor>,
    ) -> Result<(Vec<AuditEvent>, Option<Cursor>), sqlx::Error> {
        let mut q = Sql::new(
            "SELECT id, organization_id, occurred_at, actor, event_type, message, resource_type, \
             resource_id, metadata FROM audit_events WHERE organization_id = ",
        );
        q.bind(organization_id);
        if !filter.event_types.is_empty() {
            q.push(" AND event_type IN (")
                .bind_list(filter.event_types.iter().map(String::as_str))
                .push(")");
        }
        for (clause, value) in [
            (" AND actor = ", &filter.actor),
            (" AND resource_type = ", &filter.resource_type),
            (" AND resource_id = ", &filter.resource_id),
        ] {
            if let Some(v) = value {
                q.push(clause).bind(v.as_str());
            }
        }
        if let Some(t) = filter.occurred_after {
            q.push(" AND occurred_at > ").bind(t);
        }
        if let Some(t) = filter.occurred_before {
            q.push(" AND occurred_at < ").bind(t);
        }
        if let Some(c) = after {
            q.push(" AND (occurred_at < ")
                .bind(c.at)
                .push(" OR (occurred_at = ")
                .bind(c.at)
                .push(" AND id < ")
                .bind(c.id.as_str())
                .push("))");
        }
        q.push(" ORDER BY occurred_at DESC, id DESC LIMIT ")
            .bind(i64::from(limit) + 1);
        let rows = q.query().fetch_all(&self.db.pool).await?;
        let mut events = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        let next = if events.len() > limit as usize {
            events.truncate(limit as usize);
            events.last().map(|e| Cursor {
                at: e.occurred_at,
                id: e.id.clone(),
            })
        } else {
            None
        };
        Ok((events, next))
    }
}

fn from_row(row: &AnyRow) -> Result<AuditEvent, sqlx::Error> {
    let metadata: String = row.try_get("metadata")?;
    Ok(AuditEvent {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        occurred_at: row.try_get("occurred_at")?,
        actor: row.try_get("actor")?,
        event_type: row.try_get("event_type")?,
        message: row.try_get("message")?,
        resource_type: row.try_get("resource_type")?,
        resource_id: row.try_get("resource_id")?,
        metadata: serde_json::from_str::<Value>(&metadata)
            .map_err(|e| sqlx::Error::Decode(e.into()))?,
    })
}
