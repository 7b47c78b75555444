//! What an audit event is, and the rules an ingested one must follow.

use rl_contract::time_fmt::{format_ms, parse_rfc3339_ms};
use serde::Serialize;
use serde_json::{Map, Value};

pub const MAX_BATCH: usize = 1000;
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
pub const MAX_MESSAGE_CHARS: usize = 1000;
pub const MAX_FIELD_LEN: usize = 200;

/// An event as stored and as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub id: String,
    pub organization_id: String,
    #[serde(serialize_with = "ms_as_rfc3339")]
    pub occurred_at: i64,
    pub actor: String,
    pub event_type: String,
    pub message: Option<String>,
    pub resource_type: String,
    pub resource_id: String,
    pub metadata: Value,
}

fn ms_as_rfc3339<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_ms(*ms))
}

/// Ids and other identifiers: 1–200 visible ASCII characters.
pub fn is_identifier(s: &str) -> bool {
    (1..=MAX_FIELD_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Dotted lowercase names: `api_key.created`.
pub fn is_event_type(s: &str) -> bool {
    s.len() <= MAX_FIELD_LEN
        && s.split('.').count() >= 2
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

fn identifier(value: String, name: &str, index: usize) -> Result<String, String> {
    if is_identifier(&value) {
        Ok(value)
    } else {
        Err(format!(
            "events[{index}].{name} must be 1-200 visible ASCII characters."
        ))
    }
}

/// Validate one ingested event (already read as its wire type, `rl_contract::wire`).
pub fn validate(e: rl_contract::wire::AuditEvent, index: usize) -> Result<AuditEvent, String> {
    let event_type = identifier(e.event_type, "eventType", index)?;
    if !is_event_type(&event_type) {
        return Err(format!(
            "events[{index}].eventType must be dotted lowercase, e.g. api_key.created."
        ));
    }
    let occurred_at = parse_rfc3339_ms(&e.occurred_at)
        .ok_or_else(|| format!("events[{index}].occurredAt must be an RFC 3339 timestamp."))?;
    if e.message
        .as_ref()
        .is_some_and(|m| m.chars().count() > MAX_MESSAGE_CHARS)
    {
        return Err(format!(
            "events[{index}].message must be a string of at most 1000 characters."
        ));
    }
    let metadata = match e.metadata {
        Value::Null => Value::Object(Map::new()),
        m @ Value::Object(_) if m.to_string().len() <= MAX_METADATA_BYTES => m,
        Value::Object(_) => {
            return Err(format!("events[{index}].metadata must be at most 8 KiB."));
        }
        _ => return Err(format!("events[{index}].metadata must be a JSON object.")),
    };
    let organization_id = identifier(e.organization_id, "organizationId", index)?;
    if !rl_contract::identity::is_valid_organization_id(&organization_id) {
        return Err(format!("events[{index}].organizationId is not valid."));
    }
    Ok(AuditEvent {
        id: identifier(e.id, "id", index)?,
        organization_id,
        occurred_at,
        actor: identifier(e.actor, "actor", index)?,
        event_type,
        message: e.message,
        resource_type: identifier(e.resource_type, "resourceType", index)?,
        resource_id: identifier(e.resource_id, "resourceId", index)?,
        metadata,
    })
}

/// Read a batch as its wire type; a field of the wrong type is named with its path
/// (`events[3].actor: invalid type …`), then every event is validated.
pub fn parse_batch(body: Value) -> Result<Vec<AuditEvent>, String> {
    let batch: rl_contract::wire::AuditEventBatch = serde_path_to_error::deserialize(body)
        .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
    if batch.events.len() > MAX_BATCH {
        return Err(format!("at most {MAX_BATCH} events per batch."));
    }
    batch
        .events
        .into_iter()
        .enumerate()
        .map(|(i, e)| validate(e, i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "id": "0195d6b2-c0a8-7e1f-9a3b-2c4d5e6f7a8b",
            "organizationId": "org_a",
            "occurredAt": "2026-11-23T10:00:00.000Z",
            "actor": "user_1",
            "eventType": "api_key.created",
            "message": "API key created",
            "resourceType": "api_key",
            "resourceId": "k1",
            "metadata": {"name": "ci"}
        })
    }

    fn parse(v: &Value, index: usize) -> Result<AuditEvent, String> {
        let mut events = vec![good(); index];
        events.push(v.clone());
        parse_batch(json!({ "events": events })).map(|mut all| all.remove(index))
    }

    #[test]
    fn a_complete_event_parses_and_serializes_back() {
        let e = parse(&good(), 0).expect("valid");
        assert_eq!(serde_json::to_value(&e).expect("json"), good());
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            ("eventType", json!("Created")),
            ("eventType", json!("api_key")),
            ("occurredAt", json!("yesterday")),
            ("id", json!("")),
            ("actor", json!(5)),
            ("metadata", json!([1])),
            ("metadata", json!({"x": "y".repeat(9000)})),
            ("message", json!("m".repeat(1001))),
            ("organizationId", json!("org a")),
        ];
        for (name, value) in cases {
            let mut v = good();
            v[name] = value;
            let err = parse(&v, 3).expect_err(name);
            assert!(err.contains(&format!("events[3].{name}")), "{err}");
        }
    }
}
