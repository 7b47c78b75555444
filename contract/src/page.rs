//! Keyset pagination shared by every list endpoint: `limit` (1–100, default 50) and an
//! opaque cursor naming the last item returned, as `(timestamp, id)` — a total order, so a
//! page never repeats or skips an item, whatever is inserted meanwhile.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{ErrorCode, ErrorResponse};

/// One page of a list endpoint: `{"data": [...], "nextCursor": "..." | null}`.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The query of a list endpoint without filters: `?limit=&cursor=`, validated by
/// [`parse_limit`] and [`Cursor::decode`].
#[derive(Debug, serde::Deserialize)]
pub struct PageParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 100;

pub fn parse_limit(raw: Option<&str>) -> Result<u32, ErrorResponse> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    raw.parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            ErrorResponse::new(
                ErrorCode::InvalidRequest,
                "limit must be an integer from 1 to 100.",
            )
        })
}

/// The position after the last item of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The item's sort timestamp, Unix milliseconds.
    pub at: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.at, self.id))
    }

    /// Decode a cursor; `valid_id` checks the id part with the list's own rules.
    pub fn decode(s: &str, valid_id: impl Fn(&str) -> bool) -> Result<Self, ErrorResponse> {
        let invalid = || ErrorResponse::new(ErrorCode::InvalidRequest, "cursor is not valid.");
        let raw = URL_SAFE_NO_PAD.decode(s).map_err(|_| invalid())?;
        let raw = String::from_utf8(raw).map_err(|_| invalid())?;
        let (at, id) = raw.split_once(':').ok_or_else(invalid)?;
        let at = at.parse().map_err(|_| invalid())?;
        if !valid_id(id) {
            return Err(invalid());
        }
        Ok(Self {
            at,
            id: id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(parse_limit(None).expect("default"), 50);
        assert_eq!(parse_limit(Some("1")).expect("min"), 1);
        assert_eq!(parse_limit(Some("100")).expect("max"), 100);
        for bad in ["0", "101", "-1", "abc", "", "1.5", "99999999999"] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            at: 1_700_000_000_123,
            id: "evt:1".into(),
        };
        assert_eq!(Cursor::decode(&c.encode(), |_| true).expect("ok"), c);
        assert!(Cursor::decode("!!!", |_| true).is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("x:1"), |_| true).is_err());
        assert!(Cursor::decode(&c.encode(), |_| false).is_err());
    }
}
