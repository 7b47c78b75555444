//! What an API key is: its format, its hash, and the rules for the fields a client sends.
//!
//! Key = `rl_live_` + 43 URL-safe base64 characters (32 bytes from the OS's CSPRNG, no
//! padding). Only the SHA-256 of the whole key is ever stored.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

pub const KEY_PREFIX: &str = "rl_live_";
pub const DISPLAY_PREFIX_LEN: usize = 16;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_SCOPES: usize = 50;
pub const MAX_SCOPE_LEN: usize = 100;

/// A freshly minted key. The plaintext lives only as long as the create response.
pub struct NewKey {
    pub plaintext: String,
    pub hash: KeyHash,
    pub prefix: String,
}

/// Hex SHA-256 of the whole key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHash(pub String);

impl KeyHash {
    pub fn of(plaintext: &str) -> Self {
        Self(hex::encode(Sha256::digest(plaintext.as_bytes())))
    }

    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(s.to_owned()))
    }
}

impl NewKey {
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        let plaintext = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        let prefix = plaintext[..DISPLAY_PREFIX_LEN].to_owned();
        let hash = KeyHash::of(&plaintext);
        Ok(Self {
            plaintext,
            hash,
            prefix,
        })
    }
}

/// `keyId` path segments are UUIDs in their hyphenated form (any case).
pub fn parse_key_id(raw: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::InvalidRequest("keyId must be a UUID.".to_owned());
    if raw.len() != 36 {
        return Err(invalid());
    }
    uuid::Uuid::try_parse(raw)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| invalid())
}

pub fn validate_name(value: Option<&Value>) -> Result<String, ApiError> {
    let invalid = |m: &str| ApiError::InvalidRequest(m.to_owned());
    let raw = match value {
        None | Some(Value::Null) => return Err(invalid("name is required.")),
        Some(Value::String(s)) => s,
        Some(_) => return Err(invalid("name must be a string.")),
    };
    if raw.chars().count() > MAX_NAME_CHARS {
        return Err(invalid("name must be at most 200 characters."));
    }
    if raw.chars().any(char::is_control) {
        return Err(invalid("name must not contain control characters."));
    }
    let name = raw.trim();
    if name.is_empty() {
        return Err(invalid("name must not be empty."));
    }
    Ok(name.to_owned())
}

/// Scopes are free-form (the dashboard's list is a default set, not a closed one), but each
/// must travel in a header to the services behind the gateway: visible ASCII, no commas.
pub fn validate_scopes(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let invalid = |m: &str| ApiError::InvalidRequest(m.to_owned());
    let items = match value {
        None | Some(Value::Null) => return Err(invalid("scopes is required.")),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid("scopes must be an array of strings.")),
    };
    if items.is_empty() {
        return Err(invalid("scopes must contain at least one scope."));
    }
    if items.len() > MAX_SCOPES {
        return Err(invalid("scopes must contain at most 50 scopes."));
    }
    let mut scopes: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(s) = item else {
            return Err(invalid("scopes must be an array of strings."));
        };
        if s.is_empty() {
            return Err(invalid("scopes must not contain empty strings."));
        }
        if s.len() > MAX_SCOPE_LEN {
            return Err(invalid("each scope must be at most 100 characters."));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(invalid(
                "scopes may contain only visible ASCII characters other than commas.",
            ));
        }
        if !scopes.contains(s) {
            scopes.push(s.clone());
        }
    }
    Ok(scopes)
}

/// `expiresAt`: absent or null for no expiry, else RFC 3339 strictly in the future.
pub fn validate_expires_at(value: Option<&Value>, now_ms: i64) -> Result<Option<i64>, ApiError> {
    let invalid = |m: &str| ApiError::InvalidRequest(m.to_owned());
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let ms = rl_contract::time_fmt::parse_rfc3339_ms(s)
                .ok_or_else(|| invalid("expiresAt must be an RFC 3339 timestamp."))?;
            if ms <= now_ms {
                return Err(invalid("expiresAt must be in the future."));
            }
            Ok(Some(ms))
        }
        Some(_) => Err(invalid("expiresAt must be an RFC 3339 timestamp string.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let k = NewKey::generate().expect("csprng");
        assert!(k.plaintext.starts_with("rl_live_"));
        assert_eq!(k.plaintext.len(), 8 + 43);
        let body = &k.plaintext[8..];
        assert!(
            body.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(body).expect("b64").len(), 32);
        assert_eq!(k.prefix, &k.plaintext[..16]);
        assert_eq!(k.hash, KeyHash::of(&k.plaintext));
        assert_eq!(k.hash.0.len(), 64);
        let other = NewKey::generate().expect("csprng");
        assert_ne!(k.plaintext, other.plaintext);
    }

    #[test]
    fn hash_is_sha256_of_the_whole_key() {
        assert_eq!(
            KeyHash::of("abc").0,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn key_ids_must_be_uuids() {
        assert!(parse_key_id("not-a-uuid").is_err());
        assert!(parse_key_id("0195d6b2c0a87e1f9a3b2c4d5e6f7a8b").is_err());
        assert_eq!(
            parse_key_id("0195D6B2-C0A8-7E1F-9A3B-2C4D5E6F7A8B").expect("uuid"),
            "0195d6b2-c0a8-7e1f-9a3b-2c4d5e6f7a8b"
        );
    }

    #[test]
    fn name_rules() {
        assert!(validate_name(None).is_err());
        assert!(validate_name(Some(&json!(""))).is_err());
        assert!(validate_name(Some(&json!("   "))).is_err());
        assert!(validate_name(Some(&json!(5))).is_err());
        assert!(validate_name(Some(&json!("a\u{0}b"))).is_err());
        assert!(validate_name(Some(&json!("x".repeat(201)))).is_err());
        assert_eq!(
            validate_name(Some(&json!("é".repeat(200))))
                .expect("200 chars")
                .chars()
                .count(),
            200
        );
    }

    #[test]
    fn scope_rules() {
        assert!(validate_scopes(None).is_err());
        assert!(validate_scopes(Some(&json!([]))).is_err());
        assert!(validate_scopes(Some(&json!("payment_intents:read"))).is_err());
        assert!(validate_scopes(Some(&json!([""]))).is_err());
        assert!(validate_scopes(Some(&json!([1]))).is_err());
        assert!(validate_scopes(Some(&json!(["a,b"]))).is_err());
        assert_eq!(
            validate_scopes(Some(&json!(["custom:thing", "custom:thing", "x"]))).expect("ok"),
            vec!["custom:thing", "x"]
        );
    }

    #[test]
    fn expiry_rules() {
        let now = rl_contract::time_fmt::parse_rfc3339_ms("2030-01-01T00:00:00Z").expect("ts");
        assert_eq!(validate_expires_at(None, now).expect("none"), None);
        assert!(validate_expires_at(Some(&json!("2029-12-31T00:00:00Z")), now).is_err());
        assert!(validate_expires_at(Some(&json!("2030-13-01")), now).is_err());
        assert!(validate_expires_at(Some(&json!(12345)), now).is_err());
        assert!(
            validate_expires_at(Some(&json!("2030-01-02T00:00:00Z")), now)
                .expect("future")
                .is_some()
        );
    }
}
