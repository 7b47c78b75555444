//! Timestamps as the API writes them: RFC 3339, UTC, millisecond precision
//! (`2026-11-23T13:40:05.123Z`). Storage keeps Unix milliseconds, portable across SQLite
//! and Postgres and sortable.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

pub fn now_ms() -> i64 {
    to_ms(OffsetDateTime::now_utc())
}

pub fn to_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Format Unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn format_ms(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

/// Parse RFC 3339 (any offset) into Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    Some(to_ms(t.to_offset(UtcOffset::UTC)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        let ms = parse_rfc3339_ms("2030-01-02T03:04:05.678+01:00").expect("valid");
        assert_eq!(format_ms(ms), "2030-01-02T02:04:05.678Z");
        assert_eq!(parse_rfc3339_ms("2030-01-02"), None);
        assert_eq!(parse_rfc3339_ms("tomorrow"), None);
    }
}
