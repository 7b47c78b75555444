//! Field rules for endpoints and events: what a request may say, and the message when it
//! may not. Shape errors are `400`; a well-formed value that is refused (a forbidden
//! destination, a limit) is `422`.

use serde_json::Value;

use crate::error::ApiError;
use crate::ssrf::{self, Policy};

pub const MAX_URL_LEN: usize = 2048;
pub const MAX_DESCRIPTION_LEN: usize = 500;
pub const MAX_EVENT_TYPE_LEN: usize = 100;
pub const MAX_EVENT_ID_LEN: usize = 128;

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest(m.into())
}

/// A destination URL, normalized. Refused destinations are `422` with the reason.
pub fn validate_url(v: Option<&Value>, policy: &Policy) -> Result<String, ApiError> {
    let text = match v {
        Some(Value::String(s)) => s.trim(),
        None | Some(Value::Null) => return Err(bad("url is required.")),
        Some(_) => return Err(bad("url must be a string.")),
    };
    if text.is_empty() {
        return Err(bad("url must not be empty."));
    }
    if text.len() > MAX_URL_LEN {
        return Err(bad(format!(
            "url must be at most {MAX_URL_LEN} characters."
        )));
    }
    let url = url::Url::parse(text).map_err(|e| bad(format!("url is not a valid URL: {e}.")))?;
    ssrf::check_url(&url, policy).map_err(|r| ApiError::Unprocessable(r.message))?;
    let normalized = url.to_string();
    if normalized.len() > MAX_URL_LEN {
        return Err(bad(format!(
            "url must be at most {MAX_URL_LEN} characters."
        )));
    }
    Ok(normalized)
}

pub fn validate_description(v: Option<&Value>) -> Result<String, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => {
            if s.chars().count() > MAX_DESCRIPTION_LEN {
                return Err(bad(format!(
                    "description must be at most {MAX_DESCRIPTION_LEN} characters."
                )));
            }
            if s.chars().any(char::is_control) {
                return Err(bad("description must not contain control characters."));
            }
            Ok(s.clone())
        }
        Some(_) => Err(bad("description must be a string.")),
    }
}

/// `a-z A-Z 0-9 _ . : -`, starting with a letter or digit, at most 100 characters
/// (`payment_intent.succeeded`).
pub fn is_event_type(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_EVENT_TYPE_LEN
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

pub fn validate_event_type(v: Option<&Value>) -> Result<String, ApiError> {
    match v {
        Some(Value::String(s)) if is_event_type(s) => Ok(s.clone()),
        Some(Value::String(_)) => Err(bad(
            "eventType must be 1 to 100 characters of letters, digits, '_', '.', ':' or '-', \
             starting with a letter or digit.",
        )),
        None | Some(Value::Null) => Err(bad("eventType is required.")),
        Some(_) => Err(bad("eventType must be a string.")),
    }
}

/// `null` or absent: every event type. Otherwise a non-empty list (duplicates dropped).
pub fn validate_event_types(
    v: Option<&Value>,
    max: usize,
) -> Result<Option<Vec<String>>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(bad(
                "eventTypes must be an array of event types, or null for every type.",
            ));
        }
    };
    if list.is_empty() {
        return Err(bad(
            "eventTypes must not be empty: use null to receive every event type.",
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for item in list {
        let t = validate_event_type(Some(item)).map_err(|_| {
            bad("each of eventTypes must be 1 to 100 characters of letters, digits, '_', '.', ':' or '-', starting with a letter or digit.")
        })?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.len() > max {
        return Err(ApiError::Unprocessable(format!(
            "an endpoint subscribes to at most {max} event types."
        )));
    }
    Ok(Some(out))
}

pub fn validate_bool(name: &str, v: Option<&Value>) -> Result<Option<bool>, ApiError> {
    match v {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(format!("{name} must be true or false."))),
    }
}

/// A caller-chosen event id: 1–128 of `A-Z a-z 0-9 _ - . :`.
pub fn is_event_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_EVENT_ID_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

pub fn validate_event_id(v: Option<&Value>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if is_event_id(s) => Ok(Some(s.clone())),
        Some(_) => Err(bad(
            "eventId must be 1 to 128 characters of letters, digits, '_', '-', '.' or ':'.",
        )),
    }
}

pub fn new_event_id() -> String {
    format!("evt_{}", uuid::Uuid::now_v7().simple())
}

/// Refuse fields the API does not know, so a typo is not silently ignored.
pub fn only_fields(
    body: &serde_json::Map<String, Value>,
    allowed: &[&str],
) -> Result<(), ApiError> {
    match body.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(format!(
            "Unknown field {k:?}. Allowed: {}.",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

pub fn parse_uuid(raw: &str, what: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw)
        .ok()
        .map(|u| u.hyphenated().to_string())
        .filter(|u| u == raw)
        .ok_or_else(|| bad(format!("{what} must be a UUID.")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OPEN: Policy = Policy {
        allow_private: false,
        require_https: false,
    };

    #[test]
    fn urls_event_types_and_ids() {
        assert!(validate_url(Some(&json!("https://hooks.example.com/a")), &OPEN).is_ok());
        assert!(matches!(
            validate_url(Some(&json!("http://169.254.169.254/")), &OPEN),
            Err(ApiError::Unprocessable(_))
        ));
        assert!(matches!(
            validate_url(Some(&json!("not a url")), &OPEN),
            Err(ApiError::InvalidRequest(_))
        ));
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(matches!(
            validate_url(Some(&json!(long)), &OPEN),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(is_event_type("payment_intent.succeeded"));
        assert!(!is_event_type(".x") && !is_event_type("a b") && !is_event_type(""));
        assert_eq!(
            validate_event_types(Some(&json!(["a", "a", "b"])), 5).expect("ok"),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert!(validate_event_types(Some(&json!([])), 5).is_err());
        assert!(matches!(
            validate_event_types(Some(&json!(["a", "b", "c"])), 2),
            Err(ApiError::Unprocessable(_))
        ));
        assert_eq!(
            validate_event_types(Some(&Value::Null), 5).expect("ok"),
            None
        );
        assert!(is_event_id("order-42:created") && !is_event_id("a/b"));
    }
}
