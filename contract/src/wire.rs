//! Every message that crosses between the binaries, defined once and used by both sides.
//! No internal JSON is built with `json!` or parsed by hand.
//!
//! | message | from → to |
//! |---|---|
//! | [`KeyLookupRequest`] → [`KeyRecord`] | gateway → keys-service `POST /internal/v1/api-keys/lookup` |
//! | [`UsageReport`] | gateway → keys-service `POST /internal/v1/api-keys/usage` |
//! | [`KeyChanges`] | keys-service → gateway `GET /internal/v1/key-changes` |
//! | [`RedisKeyRecord`] | keys-service → Redis `rl:key:<hash>` → gateway |
//! | [`AuditEvent`], [`AuditEventBatch`] | keys-service, webhooks-service → audit-service `POST /internal/v1/audit-events/batch` |
//!
//! Messages that outlive a process (the Redis record) carry a version: during a rolling
//! deploy a reader that does not know a version treats the record as absent (a cache miss),
//! never as something else.

use serde::{Deserialize, Serialize};

/// "Which key has this hash?"
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyLookupRequest {
    /// Hex SHA-256 of the whole key.
    pub key_hash: String,
}

/// What a gateway needs to authenticate with a key (and caches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    pub id: String,
    pub organization_id: String,
    pub scopes: Vec<String>,
    /// Unix milliseconds.
    pub expires_at: Option<i64>,
    /// Unix milliseconds.
    pub revoked_at: Option<i64>,
}

/// A key's last use, as a gateway saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyUsage {
    pub key_id: String,
    /// Unix milliseconds.
    pub last_used_at: i64,
}

/// The gateways' batched `lastUsedAt` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageReport {
    pub usage: Vec<KeyUsage>,
}

/// The key-change feed: hashes whose record changed after `seq`, or `reset` (a new epoch,
/// or the gateway fell behind): drop everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyChanges {
    pub epoch: String,
    pub seq: u64,
    pub reset: bool,
    pub key_hashes: Vec<String>,
}

/// A key record as stored in Redis: found or known missing, versioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "v")]
pub enum RedisKeyRecord {
    #[serde(rename = "1")]
    V1 {
        /// `None`: no key has this hash (a negative entry).
        record: Option<KeyRecord>,
    },
}

impl RedisKeyRecord {
    pub fn new(record: Option<KeyRecord>) -> Self {
        Self::V1 { record }
    }

    pub fn encode(&self) -> String {
        // A struct of strings and numbers: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `None` for anything unreadable or of an unknown version: a cache miss.
    pub fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    pub fn record(self) -> Option<KeyRecord> {
        match self {
            Self::V1 { record } => record,
        }
    }
}

/// One audit event, as the services record it and audit-service ingests it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Unique; audit-service ingests idempotently by it.
    pub id: String,
    pub organization_id: String,
    /// RFC 3339.
    pub occurred_at: String,
    pub actor: String,
    pub event_type: String,
    pub message: Option<String>,
    pub resource_type: String,
    pub resource_id: String,
    #[serde(default)]
    pub metadata: serde_json::Value,
}

/// `POST /internal/v1/audit-events/batch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEventBatch {
    pub events: Vec<AuditEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> KeyRecord {
        KeyRecord {
            id: "0195d6b2-c0a8-7e1f-9a3b-2c4d5e6f7a8b".into(),
            organization_id: "org_1".into(),
            scopes: vec!["a:read".into()],
            expires_at: Some(1_900_000_000_000),
            revoked_at: None,
        }
    }

    fn round_trip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(v: &T) {
        let text = serde_json::to_string(v).expect("serialize");
        let back: T = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(&back, v, "{text}");
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(&KeyLookupRequest {
            key_hash: "ab".repeat(32),
        });
        round_trip(&record());
        round_trip(&UsageReport {
            usage: vec![KeyUsage {
                key_id: "k".into(),
                last_used_at: 5,
            }],
        });
        round_trip(&KeyChanges {
            epoch: "e".into(),
            seq: 3,
            reset: false,
            key_hashes: vec!["h".into()],
        });
        round_trip(&AuditEventBatch {
            events: vec![AuditEvent {
                id: "e1".into(),
                organization_id: "org".into(),
                occurred_at: "2026-11-23T13:40:05.123Z".into(),
                actor: "user_1".into(),
                event_type: "api_key.created".into(),
                message: Some("m".into()),
                resource_type: "api_key".into(),
                resource_id: "k".into(),
                metadata: serde_json::json!({"name": "x"}),
            }],
        });
    }

    #[test]
    fn the_wire_names_are_the_documented_ones() {
        let text = serde_json::to_string(&record()).expect("json");
        assert!(text.contains(r#""organizationId":"org_1""#) && text.contains(r#""expiresAt":"#));
        let usage = serde_json::to_string(&UsageReport {
            usage: vec![KeyUsage {
                key_id: "k".into(),
                last_used_at: 5,
            }],
        })
        .expect("json");
        assert_eq!(usage, r#"{"usage":[{"keyId":"k","lastUsedAt":5}]}"#);
    }

    #[test]
    fn redis_records_are_versioned_and_unknown_versions_are_misses() {
        for r in [
            RedisKeyRecord::new(Some(record())),
            RedisKeyRecord::new(None),
        ] {
            let text = r.encode();
            assert!(text.starts_with(r#"{"v":"1""#), "{text}");
            assert_eq!(RedisKeyRecord::decode(&text), Some(r));
        }
        assert_eq!(RedisKeyRecord::decode(r#"{"v":"2","record":null}"#), None);
        assert_eq!(RedisKeyRecord::decode(r#"{"missing":true}"#), None);
        assert_eq!(RedisKeyRecord::decode("garbage"), None);
    }
}
