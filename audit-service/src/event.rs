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

fn field<'a>(obj: &'a Map<String, Value>, name: &str, index: usize) -> Result<&'a str, String> {
    match obj.get(name) {
        Some(Value::String(s)) if is_identifier(s) => Ok(s),
        Some(Value::String(_)) => Err(format!(
            "events[{index}].{name} must be 1-200 visible ASCII characters."
        )),
        _ => Err(format!(
            "events[{index}].{name} is required and must be a string."
        )),
    }
}

/// Validate one ingested event.
pub fn parse(value: &Value, index: usize) -> Result<AuditEvent, String> {
    let Value::Object(obj) = value else {
        return Err(format!("events[{index}] must be an object."));
    };
    let event_type = field(obj, "eventType", index)?;
    if !is_event_type(event_type) {
        return Err(format!(
            "events[{index}].eventType must be dotted lowercase, e.g. api_key.created."
        ));
    }
    let occurred_at = match obj.get("occurredAt") {
        Some(Value::String(s)) => parse_rfc3339_ms(s),
        _ => None,
    }
    .ok_or_else(|| format!("events[{index}].occurredAt must be an RFC 3339 timestamp."))?;
    let message = match obj.get("message") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_MESSAGE_CHARS => Some(s.clone()),
        Some(_) => {
            return Err(format!(
                "events[{index}].message must be a string of at most 1000 characters."
            ));
        }
    };
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(m @ Value::Object(_)) if m.to_string().len() <= MAX_METADATA_BYTES => m.clone(),
        Some(Value::Object(_)) => {
            return Err(format!("events[{index}].metadata must be at most 8 KiB."));
        }
        Some(_) => return Err(format!("events[{index}].metadata must be a JSON object.")),
    };
    let organization_id = field(obj, "organizationId", index)?;
    if !rl_contract::identity::is_valid_organization_id(organization_id) {
        return Err(format!("events[{index}].organizationId is not valid."));
    }
    Ok(AuditEvent {
        id: field(obj, "id", index)?.to_owned(),
        organization_id: organization_id.to_owned(),
        occurred_at,
        actor: field(obj, "actor", index)?.to_owned(),
        event_type: event_type.to_owned(),
        message,
        resource_type: field(obj, "resourceType", index)?.to_owned(),
        resource_id: field(obj, "resourceId", index)?.to_owned(),
        metadata,
    })
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
