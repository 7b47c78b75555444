//! Every database statement of keys-service. Each write that changes a key also writes its
//! audit event into `audit_outbox` in the same transaction, so a key change and its audit
//! event are committed together or not at all.

use rl_contract::db::{Backend, Database, MigrationSource};
use rl_contract::page::Cursor;
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use crate::api_key::{KeyHash, NewKey};

pub const MIGRATIONS_TABLE: &str = "_keys_service_migrations";

pub const MIGRATIONS: &[MigrationSource] = &[
    MigrationSource {
        version: 1,
        description: "api keys and audit outbox",
        sqlite: include_str!("../migrations/0001_api_keys.sqlite.sql"),
        postgres: include_str!("../migrations/0001_api_keys.postgres.sql"),
    },
    MigrationSource {
        version: 2,
        description: "idempotency keys",
        sqlite: rl_contract::idempotency::MIGRATION,
        postgres: rl_contract::idempotency::MIGRATION,
    },
];

/// A write made under an `Idempotency-Key`: its response is stored by the write's own
/// transaction (`rl_contract::idempotency`).
pub struct Finish<'a> {
    pub claim: &'a rl_contract::idempotency::Claim,
    pub status: u16,
    /// The response body a replay returns, from the record as committed.
    pub render: &'a (dyn Fn(&KeyRecord) -> String + Send + Sync),
}

impl Finish<'_> {
    async fn complete(
        &self,
        tx: &mut Transaction<'static, Any>,
        record: &KeyRecord,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        self.claim
            .complete(tx, self.status, &(self.render)(record), now)
            .await
    }
}

/// Complete `finish` (if any) in `tx`, then commit.
async fn commit(
    mut tx: Transaction<'static, Any>,
    finish: Option<&Finish<'_>>,
    record: &KeyRecord,
    now: i64,
) -> Result<(), sqlx::Error> {
    if let Some(f) = finish {
        f.complete(&mut tx, record, now).await?;
    }
    tx.commit().await
}

const KEY_COLUMNS: &str = "id, organization_id, name, prefix, key_hash, scopes, created_at, \
                           expires_at, revoked_at, last_used_at";

/// A stored key. `key_hash` never leaves the service except through the internal lookup.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub prefix: String,
    pub key_hash: String,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl KeyRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let scopes: String = row.try_get("scopes")?;
        Ok(Self {
            id: row.try_get("id")?,
            organization_id: row.try_get("organization_id")?,
            name: row.try_get("name")?,
            prefix: row.try_get("prefix")?,
            key_hash: row.try_get("key_hash")?,
            scopes: serde_json::from_str(&scopes).map_err(|e| sqlx::Error::Decode(e.into()))?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
            last_used_at: row.try_get("last_used_at")?,
        })
    }

    /// What gateways cache for this key (`rl_contract::wire::KeyRecord`).
    pub fn wire(&self) -> rl_contract::wire::KeyRecord {
        rl_contract::wire::KeyRecord {
            id: self.id.clone(),
            organization_id: self.organization_id.clone(),
            scopes: self.scopes.clone(),
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
        }
    }

    /// Derived when read: revoked wins, then expiry, else active.
    pub fn status(&self, now_ms: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now_ms) {
            "expired"
        } else {
            "active"
        }
    }
}

/// One audit event, as this service records it (`rl_contract::outbox`).
pub use rl_contract::outbox::Change as AuditEvent;

#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
}

pub struct NewKeyRequest {
    pub organization_id: String,
    pub actor: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
}

/// What an update asks to change (`None`: leave as is).
pub struct KeyChanges {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
}

/// The result of an update: the record after it, and the key hash for invalidation.
pub struct Updated {
    pub record: KeyRecord,
    pub changed: bool,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub async fn create(
        &self,
        req: NewKeyRequest,
        key: &NewKey,
        now: i64,
        finish: Option<&Finish<'_>>,
    ) -> Result<KeyRecord, sqlx::Error> {
        let record = KeyRecord {
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            organization_id: req.organization_id,
            name: req.name,
            prefix: key.prefix.clone(),
            key_hash: key.hash.0.clone(),
            scopes: req.scopes,
            created_at: now,
            expires_at: req.expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        let event = AuditEvent {
            event_type: "api_key.created",
            actor: req.actor.clone(),
            message: format!("API key \"{}\" ({}) created", record.name, record.prefix),
            metadata: json!({
                "name": record.name,
                "prefix": record.prefix,
                "scopes": record.scopes,
                "expiresAt": record.expires_at.map(rl_contract::time_fmt::format_ms),
            }),
        };
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, organization_id, name, prefix, key_hash, scopes, \
             created_at, expires_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&record.id)
        .bind(&record.organization_id)
        .bind(&record.name)
        .bind(&record.prefix)
        .bind(&record.key_hash)
        .bind(scopes_json(&record.scopes))
        .bind(record.created_at)
        .bind(record.expires_at)
        .bind(&req.actor)
        .execute(&mut *tx)
        .await?;
        insert_outbox(&mut tx, &record, &event, now).await?;
        commit(tx, finish, &record, now).await?;
        Ok(record)
    }

    pub async fn list(
        &self,
        organization_id: &str,
        limit: u32,
        after: Option<&Cursor>,
    ) -> Result<(Vec<KeyRecord>, Option<Cursor>), sqlx::Error> {
        let fetch = i64::from(limit) + 1;
        let rows = match after {
            None => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE organization_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT $2"
                )))
                .bind(organization_id)
                .bind(fetch)
                .fetch_all(&self.db.pool)
                .await?
            }
            Some(c) => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE organization_id = $1 \
                     AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
                     ORDER BY created_at DESC, id DESC LIMIT $4"
                )))
                .bind(organization_id)
                .bind(c.at)
                .bind(&c.id)
                .bind(fetch)
                .fetch_all(&self.db.pool)
                .await?
            }
        };
        let mut records = rows
            .iter()
            .map(KeyRecord::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if records.len() > limit as usize {
            records.truncate(limit as usize);
            records.last().map(|r| Cursor {
                at: r.created_at,
                id: r.id.clone(),
            })
        } else {
            None
        };
        Ok((records, next))
    }

    pub async fn get(
        &self,
        organization_id: &str,
        id: &str,
    ) -> Result<Option<KeyRecord>, sqlx::Error> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND organization_id = $2"
        )))
        .bind(id)
        .bind(organization_id)
        .fetch_optional(&self.db.pool)
        .await?
        .as_ref()
        .map(KeyRecord::from_row)
        .transpose()
    }

    pub async fn update(
        &self,
        organization_id: &str,
        id: &str,
        actor: &str,
        KeyChanges { name, scopes }: KeyChanges,
        now: i64,
        finish: Option<&Finish<'_>>,
    ) -> Result<Option<Updated>, sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        let Some(before) = select_for_update(&mut tx, self.db.backend, organization_id, id).await?
        else {
            return Ok(None);
        };
        let mut changes = serde_json::Map::new();
        let mut after = before.clone();
        if let Some(name) = name.filter(|n| *n != before.name) {
            changes.insert("name".into(), json!({"from": before.name, "to": name}));
            after.name = name;
        }
        if let Some(scopes) = scopes.filter(|s| *s != before.scopes) {
            changes.insert(
                "scopes".into(),
                json!({"from": before.scopes, "to": scopes}),
            );
            after.scopes = scopes;
        }
        if changes.is_empty() {
            commit(tx, finish, &before, now).await?;
            return Ok(Some(Updated {
                record: before,
                changed: false,
            }));
        }
        sqlx::query(
            "UPDATE api_keys SET name = $1, scopes = $2 WHERE id = $3 AND organization_id = $4",
        )
        .bind(&after.name)
        .bind(scopes_json(&after.scopes))
        .bind(id)
        .bind(organization_id)
        .execute(&mut *tx)
        .await?;
        let fields: Vec<&str> = changes.keys().map(String::as_str).collect();
        let event = AuditEvent {
            event_type: "api_key.updated",
            actor: actor.to_owned(),
            message: format!(
                "API key \"{}\" ({}) updated: {}",
                after.name,
                after.prefix,
                fields.join(", ")
            ),
            metadata: json!({ "changes": changes }),
        };
        insert_outbox(&mut tx, &after, &event, now).await?;
        commit(tx, finish, &after, now).await?;
        Ok(Some(Updated {
            record: after,
            changed: true,
        }))
    }

    /// Revoke: sets `revoked_at` once. Revoking again returns the record unchanged.
    pub async fn revoke(
        &self,
        organization_id: &str,
        id: &str,
        actor: &str,
        now: i64,
        finish: Option<&Finish<'_>>,
    ) -> Result<Option<Updated>, sqlx::Error> {
        let mut tx = self.db.begin_write().await?;
        let Some(mut record) =
            select_for_update(&mut tx, self.db.backend, organization_id, id).await?
        else {
            return Ok(None);
        };
        if record.revoked_at.is_some() {
            commit(tx, finish, &record, now).await?;
            return Ok(Some(Updated {
                record,
                changed: false,
            }));
        }
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND organization_id = $3 \
             AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .bind(organization_id)
        .execute(&mut *tx)
        .await?;
        record.revoked_at = Some(now);
        let event = AuditEvent {
            event_type: "api_key.revoked",
            actor: actor.to_owned(),
            message: format!("API key \"{}\" ({}) revoked", record.name, record.prefix),
            metadata: json!({ "name": record.name, "prefix": record.prefix }),
        };
        insert_outbox(&mut tx, &record, &event, now).await?;
        commit(tx, finish, &record, now).await?;
        Ok(Some(Updated {
            record,
            changed: true,
        }))
    }

    /// The record gateways cache for a key hash (`rl_contract::wire::KeyRecord`).
    pub async fn lookup(
        &self,
        hash: &KeyHash,
    ) -> Result<Option<rl_contract::wire::KeyRecord>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT id, organization_id, scopes, expires_at, revoked_at FROM api_keys \
             WHERE key_hash = $1",
        )
        .bind(&hash.0)
        .fetch_optional(&self.db.pool)
        .await?;
        row.map(|row| {
            let scopes: String = row.try_get("scopes")?;
            Ok(rl_contract::wire::KeyRecord {
                id: row.try_get("id")?,
                organization_id: row.try_get("organization_id")?,
                scopes: serde_json::from_str(&scopes).map_err(|e| sqlx::Error::Decode(e.into()))?,
                expires_at: row.try_get("expires_at")?,
                revoked_at: row.try_get("revoked_at")?,
            })
        })
        .transpose()
    }

    /// Coalesced `lastUsedAt`: one statement per key per batch, never moving backwards.
    pub async fn record_usage(&self, usage: &[(String, i64)]) -> Result<(), sqlx::Error> {
        if usage.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write().await?;
        for (id, at) in usage {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 \
                 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(*at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }
}

fn scopes_json(scopes: &[String]) -> String {
    Value::from(scopes.to_vec()).to_string()
}

async fn select_for_update(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    organization_id: &str,
    id: &str,
) -> Result<Option<KeyRecord>, sqlx::Error> {
    // SQLite has no FOR UPDATE; its BEGIN IMMEDIATE already serializes writers. On Postgres
    // the row lock keeps two concurrent updates from losing one another's change.
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    sqlx::query(AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND organization_id = $2{lock}"
    )))
    .bind(id)
    .bind(organization_id)
    .fetch_optional(&mut **tx)
    .await?
    .as_ref()
    .map(KeyRecord::from_row)
    .transpose()
}

/// The key change's audit event, in its transaction (`rl_contract::outbox`).
async fn insert_outbox(
    tx: &mut Transaction<'static, Any>,
    record: &KeyRecord,
    event: &AuditEvent,
    now: i64,
) -> Result<(), sqlx::Error> {
    rl_contract::outbox::insert(
        tx,
        &event.event(&record.organization_id, "api_key", &record.id),
        now,
    )
    .await
}
