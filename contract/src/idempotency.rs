//! `Idempotency-Key` on every write: a retried request never acts twice.
//!
//! One implementation for every service that writes (keys-service; webhooks-service as it
//! lands). The database decides, never process memory, so it holds across replicas:
//!
//! 1. **Claim** ([`begin`], its own short transaction): insert `(organization, caller, key)`
//!    as `in_progress` with a lease. If the row exists: a different request under the same
//!    key is [`Begin::Mismatch`] (`422`); a completed one is replayed ([`Begin::Replay`]);
//!    one still executing is [`Begin::InProgress`] (`409`, retryable); one whose lease ran
//!    out (its replica crashed) is taken over.
//! 2. **Execute**: the write and [`Claim::complete`] — which stores the response — commit in
//!    the *same* transaction: there is never a write without its record, nor a stored
//!    response without its write. A claim whose lease was taken over cannot complete (the
//!    write rolls back).
//! 3. **Fail**: a request that fails before its commit releases the claim
//!    ([`Claim::release`]); a crash leaves it to expire with its lease. Either way a retry
//!    executes once.
//!
//! Keys are 1–255 visible ASCII characters, scoped to the organization and the caller, kept
//! for `IDEMPOTENCY_RETENTION_MS` (default 24 h) and then purged ([`purge_expired`]).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use sqlx::{Any, Row, Transaction};

use crate::db::Database;
use crate::error::{ErrorCode, ErrorResponse};
use crate::settings::{self, SettingsError};

pub const HEADER: &str = "idempotency-key";
/// On a replayed response: `Idempotent-Replayed: true`.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
pub const MAX_KEY_LEN: usize = 255;
pub const RETENTION_MS: &str = "IDEMPOTENCY_RETENTION_MS";
pub const LEASE_MS: &str = "IDEMPOTENCY_LEASE_MS";

/// The table, the same on SQLite and Postgres; each service adds it to its migrations.
pub const MIGRATION: &str = "\
CREATE TABLE IF NOT EXISTS idempotency_keys (
    organization_id TEXT NOT NULL,
    caller          TEXT NOT NULL,
    idem_key        TEXT NOT NULL,
    request_method  TEXT NOT NULL,
    request_path    TEXT NOT NULL,
    body_hash       TEXT NOT NULL,
    state           TEXT NOT NULL,
    locked_until    BIGINT NOT NULL,
    response_status BIGINT,
    response_body   TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    PRIMARY KEY (organization_id, caller, idem_key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_expires ON idempotency_keys (expires_at);
";

/// The error a store returns when its claim was taken over before it could commit.
pub const CLAIM_LOST: &str = "idempotency claim lost";

#[derive(Debug, Clone)]
pub struct IdempotencySettings {
    /// How long a completed response is kept for replay.
    pub retention: Duration,
    /// How long a claim blocks duplicates before it counts as abandoned (its replica died).
    pub lease: Duration,
}

impl IdempotencySettings {
    pub fn from_env() -> Result<Self, SettingsError> {
        let s = Self {
            retention: settings::millis(RETENTION_MS, 24 * 60 * 60 * 1000)?,
            lease: settings::millis(LEASE_MS, 30_000)?,
        };
        if s.lease.is_zero() {
            return Err(SettingsError::new(LEASE_MS, "0", "must be positive"));
        }
        Ok(s)
    }
}

fn bad(message: impl Into<String>) -> ErrorResponse {
    ErrorResponse::new(ErrorCode::InvalidRequest, message)
}

/// The request's `Idempotency-Key`, if any: one header of 1–255 visible ASCII characters.
pub fn key_from_headers(headers: &HeaderMap) -> Result<Option<String>, ErrorResponse> {
    let mut all = headers.get_all(HEADER).iter();
    let Some(value) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(bad("Send one Idempotency-Key header."));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(bad(
            "Idempotency-Key must be 1 to 255 visible ASCII characters.",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// A stable fingerprint of a JSON body: object keys sorted at every depth, so the same
/// request written with other whitespace or key order is the same request.
pub fn body_hash(body: Option<&serde_json::Value>) -> String {
    fn canonical(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::from(k.as_str()).to_string());
                    out.push(':');
                    canonical(&m[k], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    if let Some(b) = body {
        canonical(b, &mut text);
    }
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// What a write is, for comparing a retry with the first attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub organization_id: String,
    /// Who sent it: the user, or `api_key:<id>` (`Identity::actor`).
    pub caller: String,
    pub key: String,
    pub method: String,
    pub path: String,
    pub body_hash: String,
}

/// A stored outcome, replayed for a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub status: u16,
    pub body: String,
}

impl IntoResponse for Stored {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut r = (status, self.body).into_response();
        r.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
        r
    }
}

#[derive(Debug)]
pub enum Begin {
    /// First use (or an abandoned claim taken over): execute, then complete or release.
    Execute(Claim),
    Replay(Stored),
    /// The first request with this key is still executing: `409`, retry later.
    InProgress,
    /// The key was used for a different request: `422`, naming what differs.
    Mismatch(&'static str),
}

impl Begin {
    /// The claim to execute under, or the response for every other outcome.
    pub fn response(self) -> Result<Claim, Box<Response>> {
        match self {
            Self::Execute(c) => Ok(c),
            Self::Replay(s) => Err(Box::new(s.into_response())),
            Self::InProgress => {
                let mut r = ErrorResponse::new(
                    ErrorCode::Conflict,
                    "A request with this Idempotency-Key is still in progress. Retry shortly.",
                )
                .into_response();
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from_static("1"));
                Err(Box::new(r))
            }
            Self::Mismatch(what) => Err(Box::new(
                ErrorResponse::new(
                    ErrorCode::UnprocessableEntity,
                    format!(
                        "This Idempotency-Key was already used for a different request ({what}). \
                     Use a new key for a new request."
                    ),
                )
                .into_response(),
            )),
        }
    }
}

/// The right to execute one request under one key.
#[derive(Debug)]
#[must_use = "complete the claim in the write's transaction, or release it"]
pub struct Claim {
    request: Request,
    retention_ms: i64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Claim `request`'s key, or say why it cannot run now.
pub async fn begin(
    db: &Database,
    request: Request,
    now_ms: i64,
    settings: &IdempotencySettings,
) -> Result<Begin, sqlx::Error> {
    let lease_until = now_ms.saturating_add(ms(settings.lease));
    let retention_ms = ms(settings.retention);
    let mut tx = db.begin_write().await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (organization_id, caller, idem_key, request_method, \
         request_path, body_hash, state, locked_until, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'in_progress', $7, $8, $9) \
         ON CONFLICT (organization_id, caller, idem_key) DO NOTHING",
    )
    .bind(&request.organization_id)
    .bind(&request.caller)
    .bind(&request.key)
    .bind(&request.method)
    .bind(&request.path)
    .bind(&request.body_hash)
    .bind(lease_until)
    .bind(now_ms)
    .bind(now_ms.saturating_add(retention_ms))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        tx.commit().await?;
        return Ok(Begin::Execute(Claim {
            request,
            retention_ms,
        }));
    }
    let row = sqlx::query(
        "SELECT request_method, request_path, body_hash, state, locked_until, \
         response_status, response_body FROM idempotency_keys \
         WHERE organization_id = $1 AND caller = $2 AND idem_key = $3",
    )
    .bind(&request.organization_id)
    .bind(&request.caller)
    .bind(&request.key)
    .fetch_one(&mut *tx)
    .await?;
    let method: String = row.try_get("request_method")?;
    let path: String = row.try_get("request_path")?;
    let hash: String = row.try_get("body_hash")?;
    let outcome = if method != request.method {
        Begin::Mismatch("different method")
    } else if path != request.path {
        Begin::Mismatch("different path")
    } else if hash != request.body_hash {
        Begin::Mismatch("different body")
    } else if row.try_get::<String, _>("state")? == "completed" {
        let status: i64 = row.try_get("response_status")?;
        Begin::Replay(Stored {
            status: u16::try_from(status).unwrap_or(200),
            body: row.try_get("response_body")?,
        })
    } else if row.try_get::<i64, _>("locked_until")? > now_ms {
        Begin::InProgress
    } else {
        // Abandoned: its request died before committing. Take it over, once.
        let taken = sqlx::query(
            "UPDATE idempotency_keys SET locked_until = $1 WHERE organization_id = $2 \
             AND caller = $3 AND idem_key = $4 AND state = 'in_progress' AND locked_until <= $5",
        )
        .bind(lease_until)
        .bind(&request.organization_id)
        .bind(&request.caller)
        .bind(&request.key)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if taken == 1 {
            tx.commit().await?;
            return Ok(Begin::Execute(Claim {
                request,
                retention_ms,
            }));
        }
        Begin::InProgress
    };
    tx.commit().await?;
    Ok(outcome)
}

impl Claim {
    /// Store the outcome in the write's own transaction. Fails (rolling the write back) if
    /// the claim was taken over meanwhile — then another attempt owns the key.
    pub async fn complete(
        &self,
        tx: &mut Transaction<'static, Any>,
        status: u16,
        body: &str,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let r = &self.request;
        let done = sqlx::query(
            "UPDATE idempotency_keys SET state = 'completed', response_status = $1, \
             response_body = $2, expires_at = $3 WHERE organization_id = $4 AND caller = $5 \
             AND idem_key = $6 AND state = 'in_progress'",
        )
        .bind(i64::from(status))
        .bind(body)
        .bind(now_ms.saturating_add(self.retention_ms))
        .bind(&r.organization_id)
        .bind(&r.caller)
        .bind(&r.key)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if done == 1 {
            Ok(())
        } else {
            Err(sqlx::Error::Protocol(CLAIM_LOST.to_owned()))
        }
    }

    /// The request failed before committing: free the key for a retry.
    pub async fn release(self, db: &Database) {
        let r = &self.request;
        let released = sqlx::query(
            "DELETE FROM idempotency_keys WHERE organization_id = $1 AND caller = $2 \
             AND idem_key = $3 AND state = 'in_progress'",
        )
        .bind(&r.organization_id)
        .bind(&r.caller)
        .bind(&r.key)
        .execute(&db.pool)
        .await;
        if let Err(e) = released {
            // The lease expires by itself; a retry until then gets a retryable 409.
            tracing::warn!(error = %e, "could not release an idempotency claim");
        }
    }
}

/// Whether a store error means the claim was taken over (answer `409`, nothing written).
pub fn is_claim_lost(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Protocol(m) if m == CLAIM_LOST)
}

/// Remove records past their retention (and claims abandoned that long ago).
pub async fn purge_expired(db: &Database, now_ms: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM idempotency_keys WHERE expires_at < $1 \
         AND (state = 'completed' OR locked_until < $1)",
    )
    .bind(now_ms)
    .execute(&db.pool)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let mut h = HeaderMap::new();
        assert_eq!(key_from_headers(&h).ok(), Some(None));
        h.insert(HEADER, HeaderValue::from_static("abc-123_!~"));
        assert_eq!(
            key_from_headers(&h).ok(),
            Some(Some("abc-123_!~".to_owned()))
        );
        for bad in ["a b", "", "\t"] {
            h.insert(HEADER, HeaderValue::from_str(bad).expect("value"));
            assert!(key_from_headers(&h).is_err(), "{bad:?}");
        }
        h.insert(HEADER, HeaderValue::from_str(&"a".repeat(255)).expect("v"));
        assert!(key_from_headers(&h).is_ok());
        h.insert(HEADER, HeaderValue::from_str(&"a".repeat(256)).expect("v"));
        assert!(key_from_headers(&h).is_err());
        h.insert(HEADER, HeaderValue::from_static("a"));
        h.append(HEADER, HeaderValue::from_static("b"));
        assert!(key_from_headers(&h).is_err());
    }

    #[test]
    fn body_hash_ignores_key_order_and_whitespace() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"name":"x","scopes":["a","b"],"n":{"z":1,"y":2}}"#)
                .expect("json");
        let b: serde_json::Value =
            serde_json::from_str(r#"{ "n": {"y":2, "z":1}, "scopes": ["a","b"], "name": "x" }"#)
                .expect("json");
        let c: serde_json::Value =
            serde_json::from_str(r#"{"name":"x","scopes":["b","a"],"n":{"z":1,"y":2}}"#)
                .expect("json");
        assert_eq!(body_hash(Some(&a)), body_hash(Some(&b)));
        assert_ne!(body_hash(Some(&a)), body_hash(Some(&c)));
        assert_ne!(body_hash(None), body_hash(Some(&a)));
    }
}
