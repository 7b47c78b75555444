//! The request target the gateway authorizes is exactly the one it forwards.
//!
//! pingora normalizes nothing, so two parsers — ours and an upstream's — could read one
//! target two ways (`/public/../v1/x`, `%2e%2e`, `%2F`, `\`, `;jsessionid`, overlong UTF-8).
//! This module decides one canonical form or refuses the request:
//!
//! - origin-form only (`/…`); `*`, absolute-form and fragments are refused;
//! - in the path: percent-encoded unreserved characters (`%41` → `A`) are decoded; the hex of
//!   every other escape is upper-cased; an escape that decodes to `.`, `/`, `\`, `%`, `;`, a
//!   control byte, or bytes that are not valid UTF-8 is refused; raw `\`, `;`, controls,
//!   spaces and non-ASCII bytes are refused;
//! - empty segments (`//`) and dot segments (`.`, `..`) are refused (a single trailing `/`
//!   is kept);
//! - percent-encoded non-ASCII (`%C5%BF`, `%EF%BC%8F`) is refused unless the deployment
//!   allows it (`GATEWAY_ALLOW_NON_ASCII_PATHS`): frameworks fold Unicode lookalikes
//!   (`ſ` → `s`, `K` → `k`, fullwidth `／` → `/`) onto the ASCII routes the policy protects;
//! - the query is passed through if it is visible ASCII with well-formed escapes.
//!
//! Route matching then runs on the canonical path only, and the canonical target is written
//! onto the upstream request.

pub const MAX_TARGET_LEN: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The canonical path, starting with `/`.
    pub path: String,
    /// The raw query after `?`, if any (without the `?`).
    pub query: Option<String>,
}

impl Target {
    /// Path plus query, as written onto the upstream request.
    pub fn to_request_target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("Request target must be an absolute path.")]
    NotOriginForm,
    #[error("Request target is too long.")]
    TooLong,
    #[error("Request path contains a character that is not allowed.")]
    ForbiddenByte,
    #[error("Request path contains a malformed or forbidden percent-encoding.")]
    BadEscape,
    #[error("Request path contains empty, dot or ambiguous segments.")]
    BadSegment,
    #[error("Request query contains a character that is not allowed.")]
    BadQuery,
    #[error("Request path contains percent-encoded non-ASCII characters.")]
    NonAscii,
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Bytes allowed raw in a path segment: unreserved, sub-delims except `;`, `:` and `@`.
fn is_path_byte(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        )
}

/// A segment some framework reads as a dot segment or as another segment: `.`, `..`, a
/// dot segment followed by a suffix it strips (`..:verb`, `..;x`, `.~`), or a trailing dot or
/// space (IIS trims both from every segment: `api-keys.` is `api-keys`).
fn is_ambiguous_segment(seg: &str) -> bool {
    let continues =
        |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    let b = seg.as_bytes();
    let dots = b.iter().take_while(|&&c| c == b'.').count();
    (dots == b.len())
        || ((dots == 1 || dots == 2) && !continues(b.get(dots)))
        || seg.ends_with('.')
        || seg.ends_with("%20")
        || seg.ends_with("%09")
}

/// Decide the canonical form of a raw request target, or refuse it (strict: no
/// percent-encoded non-ASCII).
pub fn canonicalize(raw: &[u8]) -> Result<Target, TargetError> {
    canonicalize_with(raw, false)
}

/// [`canonicalize`], optionally allowing percent-encoded UTF-8 (valid, never overlong) in
/// path segments.
pub fn canonicalize_with(raw: &[u8], allow_non_ascii: bool) -> Result<Target, TargetError> {
    if raw.len() > MAX_TARGET_LEN {
        return Err(TargetError::TooLong);
    }
    if raw.first() != Some(&b'/') {
        return Err(TargetError::NotOriginForm);
    }
    let (raw_path, raw_query) = match raw.iter().position(|&b| b == b'?') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };

    let mut path = String::with_capacity(raw_path.len());
    // Decoded bytes of segments that have escapes (their UTF-8 is checked); one buffer for
    // the whole target, so a clean path allocates nothing but its copy.
    let mut decoded: Vec<u8> = Vec::new();
    let mut segments = raw_path[1..].split(|&b| b == b'/').peekable();
    while let Some(seg) = segments.next() {
        path.push('/');
        if seg.is_empty() {
            // "/" alone, or one trailing slash, is fine; "//" anywhere else is not.
            if segments.peek().is_none() {
                continue;
            }
            return Err(TargetError::BadSegment);
        }
        let start = path.len();
        let escaped = seg.contains(&b'%');
        decoded.clear();
        let mut j = 0;
        while j < seg.len() {
            let b = seg[j];
            if b == b'%' {
                let (Some(h), Some(l)) = (
                    seg.get(j + 1).copied().and_then(hex_val),
                    seg.get(j + 2).copied().and_then(hex_val),
                ) else {
                    return Err(TargetError::BadEscape);
                };
                let d = (h << 4) | l;
                // `?` and `#` would split path from query (or fragment) in any upstream that
                // decodes before routing.
                if matches!(d, b'.' | b'/' | b'\\' | b'%' | b';' | b'?' | b'#')
                    || d < 0x20
                    || d == 0x7f
                {
                    return Err(TargetError::BadEscape);
                }
                if d >= 0x80 && !allow_non_ascii {
                    return Err(TargetError::NonAscii);
                }
                if is_unreserved(d) {
                    path.push(char::from(d));
                } else {
                    path.push('%');
                    path.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                    path.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
                }
                decoded.push(d);
                j += 3;
            } else if is_path_byte(b) {
                path.push(char::from(b));
                if escaped {
                    decoded.push(b);
                }
                j += 1;
            } else {
                return Err(TargetError::ForbiddenByte);
            }
        }
        // Raw bytes are ASCII (checked above); only decoded escapes can be bad UTF-8.
        if escaped && std::str::from_utf8(&decoded).is_err() {
            return Err(TargetError::BadEscape);
        }
        if is_ambiguous_segment(&path[start..]) {
            return Err(TargetError::BadSegment);
        }
    }

    let query = match raw_query {
        None => None,
        Some(q) => {
            let mut k = 0;
            while k < q.len() {
                let b = q[k];
                if b == b'%' {
                    if q.get(k + 1).copied().and_then(hex_val).is_none()
                        || q.get(k + 2).copied().and_then(hex_val).is_none()
                    {
                        return Err(TargetError::BadQuery);
                    }
                    k += 3;
                    continue;
                }
                if !b.is_ascii_graphic() || b == b'#' {
                    return Err(TargetError::BadQuery);
                }
                k += 1;
            }
            // Verified visible ASCII just above.
            Some(String::from_utf8_lossy(q).into_owned())
        }
    };
    Ok(Target { path, query })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        canonicalize(raw.as_bytes())
            .unwrap_or_else(|e| panic!("{raw}: {e}"))
            .to_request_target()
    }

    fn err(raw: &[u8]) -> TargetError {
        canonicalize(raw).expect_err(&String::from_utf8_lossy(raw))
    }

    #[test]
    fn clean_targets_pass_unchanged() {
        for t in [
            "/",
            "/health",
            "/v1/api-keys",
            "/v1/api-keys/0195d6b2-c0a8-7e1f-9a3b-2c4d5e6f7a8b",
            "/v1/payment-intents?limit=10&cursor=abc%3D%3D",
            "/v1/x:y@z/!$&'()*+,=",
            "/v1/api-keys/",
            "/v1/search?q=a+b&tags[]=x",
        ] {
            assert_eq!(ok(t), t);
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_uppercased() {
        assert_eq!(ok("/v1/api%2Dkeys"), "/v1/api-keys");
        assert_eq!(ok("/v1/%61pi-keys"), "/v1/api-keys");
        assert_eq!(ok("/v1/a%3ab"), "/v1/a%3Ab");
        assert_eq!(
            canonicalize_with(b"/v1/caf%c3%a9", true).map(|t| t.path),
            Ok("/v1/caf%C3%A9".to_owned())
        );
        assert_eq!(ok("/v1/a%20b"), "/v1/a%20b");
    }

    #[test]
    fn traversal_and_ambiguity_are_refused() {
        assert_eq!(err(b"/public/../v1/x"), TargetError::BadSegment);
        assert_eq!(err(b"/v1/./api-keys"), TargetError::BadSegment);
        assert_eq!(err(b"/v1/.."), TargetError::BadSegment);
        for ambiguous in [
            &b"/docs/..:close"[..],
            b"/webhooks/..~/v1",
            b"/webhooks/.!/v1",
            b"/v1./api-keys",
            b"/v1/api-keys.",
            b"/v1/api-keys%20",
            b"/v1/api-keys%20/x",
            b"/v1/...",
        ] {
            assert_eq!(err(ambiguous), TargetError::BadSegment);
        }
        assert_eq!(ok("/.well-known/x"), "/.well-known/x");
        assert_eq!(ok("/v1/a.b/c.json"), "/v1/a.b/c.json");
        assert_eq!(err(b"/v1/."), TargetError::BadSegment);
        assert_eq!(err(b"//v1/api-keys"), TargetError::BadSegment);
        assert_eq!(err(b"/v1//api-keys"), TargetError::BadSegment);
        assert_eq!(err(b"/v1/%2e%2e/x"), TargetError::BadEscape);
        assert_eq!(err(b"/v1/%2E/x"), TargetError::BadEscape);
        assert_eq!(err(b"/v1/.%2e/x"), TargetError::BadEscape);
        assert_eq!(err(b"/v1%2fapi-keys"), TargetError::BadEscape);
        assert_eq!(err(b"/v1%2Fapi-keys"), TargetError::BadEscape);
        assert_eq!(err(b"/v1%5capi-keys"), TargetError::BadEscape);
        assert_eq!(err(b"/v1/%252e%252e/"), TargetError::BadEscape);
        assert_eq!(err(b"/v1/a%00b"), TargetError::BadEscape);
        assert_eq!(err(b"/v1/a%0ab"), TargetError::BadEscape);
        assert_eq!(err(b"/v1/a%3bb"), TargetError::BadEscape);
        assert_eq!(err(b"/v1/api-keys%3F.json"), TargetError::BadEscape);
        assert_eq!(err(b"/v1/api-keys%23x"), TargetError::BadEscape);
        assert_eq!(
            canonicalize_with(b"/v1/%c0%ae%c0%ae/x", true),
            Err(TargetError::BadEscape)
        );
        assert_eq!(err(b"/v1/%c0%ae%c0%ae/x"), TargetError::NonAscii);
        // Lookalikes a framework folds onto ASCII: long s, Kelvin sign, fullwidth solidus
        // and full stop, one-dot leader.
        for lookalike in [
            &b"/v1/reconciliation-ca%C5%BFes"[..],
            b"/v1/api-%E2%84%AAeys",
            b"/webhooks/x%EF%BC%8F..%EF%BC%8Fv1",
            b"/webhooks/%EF%BC%8E%EF%BC%8E/v1",
            b"/webhooks/%E2%80%A4%E2%80%A4/v1",
            b"/v1/caf%c3%a9",
        ] {
            assert_eq!(err(lookalike), TargetError::NonAscii);
        }
        assert_eq!(err(b"/v1/%zz"), TargetError::BadEscape);
        assert_eq!(err(b"/v1/%4"), TargetError::BadEscape);
        assert_eq!(err(b"/v1\\api-keys"), TargetError::ForbiddenByte);
        assert_eq!(err(b"/v1/api-keys;/../x"), TargetError::ForbiddenByte);
        assert_eq!(err(b"/v1/a b"), TargetError::ForbiddenByte);
        assert_eq!(err(b"/v1/a\0b"), TargetError::ForbiddenByte);
        assert_eq!(err(b"/v1/a\tb"), TargetError::ForbiddenByte);
        assert_eq!(err(b"/v1/caf\xc3\xa9"), TargetError::ForbiddenByte);
        assert_eq!(err(b"/v1/a#frag"), TargetError::ForbiddenByte);
    }

    #[test]
    fn only_origin_form_is_accepted() {
        assert_eq!(err(b"v1/x"), TargetError::NotOriginForm);
        assert_eq!(err(b"http://evil/v1/x"), TargetError::NotOriginForm);
        assert_eq!(err(b"*"), TargetError::NotOriginForm);
        assert_eq!(err(b""), TargetError::NotOriginForm);
        assert_eq!(err(&vec![b'/'; MAX_TARGET_LEN + 1]), TargetError::TooLong);
    }

    #[test]
    fn query_must_be_visible_ascii_with_valid_escapes() {
        assert_eq!(err(b"/v1/x?a=%zz"), TargetError::BadQuery);
        assert_eq!(err(b"/v1/x?a=b c"), TargetError::BadQuery);
        assert_eq!(err(b"/v1/x?a=\x01"), TargetError::BadQuery);
        assert_eq!(ok("/v1/x?"), "/v1/x?");
        assert_eq!(ok("/v1/x?a=/../b"), "/v1/x?a=/../b");
    }
}
