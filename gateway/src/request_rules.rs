//! HTTP/1.1 rules the edge enforces on every request head before anything is decided, so
//! that no request reaches an upstream in a form a lenient framework could read differently.
//!
//! One function, [`check_head`], applied twice: by [`crate::conn_guard`] on the raw bytes of
//! each request head as it arrives (so even a head pingora itself would refuse gets the
//! documented envelope instead of a dropped connection), and by `request_filter` on the head
//! pingora parsed (which also covers pipelined requests the guard never saw as raw bytes).
//!
//! - methods: `GET HEAD POST PUT PATCH DELETE OPTIONS` only (`405`; `TRACE`/`TRACK` would
//!   reflect the injected identity, `CONNECT` would tunnel);
//! - at most `max_headers` header fields and `max_header_bytes` of them (`431`);
//! - no `_` in a header name unless allow-listed (`400`): CGI, PHP, Rack, Django and others
//!   fold `_` and `-` together, so `x_forwarded_for` or `x_organization_id` would otherwise
//!   arrive as the header the edge owns (Envoy's `headers_with_underscores_action: REJECT`);
//! - HTTP/1.1 needs exactly one `Host`, HTTP/1.0 at most one (`400`);
//! - `Connection` may name only ordinary headers (tokens, at most 8): naming `Host`, framing
//!   headers or one the edge owns would make a next hop drop what the edge set;
//! - framing: one `Content-Length` value, no `Transfer-Encoding` with `Content-Length` or on
//!   HTTP/1.0, `chunked` last when `Transfer-Encoding` is sent (`400`).

use rl_contract::error::ErrorCode;

/// The methods the edge proxies. Anything else is answered `405` and never forwarded.
pub const ALLOWED_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The value of `Allow` on a `405` for an unknown method.
pub const ALLOW_HEADER: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadLimits {
    pub max_headers: usize,
    pub max_header_bytes: usize,
    /// Header names (lower case) that may contain `_`.
    pub underscore_allowed: Vec<String>,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_headers: 100,
            max_header_bytes: 32 * 1024,
            underscore_allowed: Vec::new(),
        }
    }
}

/// Why a head is refused: a status and a message for the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub status: u16,
    pub message: String,
}

impl Refusal {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidRequest,
            status: 400,
            message: message.into(),
        }
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::RequestHeaderFieldsTooLarge,
            status: 431,
            message: message.into(),
        }
    }

    pub fn method() -> Self {
        Self {
            code: ErrorCode::MethodNotAllowed,
            status: 405,
            message: "Method not allowed.".to_owned(),
        }
    }

    pub fn malformed() -> Self {
        Self::bad("Malformed request.")
    }

    pub fn timeout() -> Self {
        Self {
            code: ErrorCode::RequestTimeout,
            status: 408,
            message: "The request header was not received in time.".to_owned(),
        }
    }

    /// A bounded label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self.status {
            405 => "method_not_allowed",
            408 => "request_timeout",
            431 => "header_too_large",
            _ => "bad_request",
        }
    }
}

pub fn is_allowed_method(method: &[u8]) -> bool {
    ALLOWED_METHODS.iter().any(|m| m.as_bytes() == method)
}

/// Check one request head. `headers` yields each field's name and value as sent.
pub fn check_head<'a>(
    method: &[u8],
    http11: bool,
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    limits: &HeadLimits,
) -> Result<(), Refusal> {
    if !is_allowed_method(method) {
        return Err(Refusal::method());
    }
    let mut count = 0usize;
    let mut bytes = 0usize;
    let mut hosts = 0usize;
    let mut content_length: Option<&[u8]> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    for (name, value) in headers {
        count += 1;
        bytes += name.len() + value.len() + 4;
        if count > limits.max_headers {
            return Err(Refusal::too_large(format!(
                "Too many request header fields (at most {}).",
                limits.max_headers
            )));
        }
        if bytes > limits.max_header_bytes {
            return Err(Refusal::too_large(format!(
                "Request header fields are too large (at most {} bytes).",
                limits.max_header_bytes
            )));
        }
        if name.contains(&b'_')
            && !limits
                .underscore_allowed
                .iter()
                .any(|a| a.as_bytes().eq_ignore_ascii_case(name))
        {
            return Err(Refusal::bad(format!(
                "Header names with underscores are not accepted ({}).",
                String::from_utf8_lossy(name)
            )));
        }
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for v in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if v.is_empty() || !v.iter().all(u8::is_ascii_digit) || v.len() > 18 {
                    return Err(Refusal::bad("Invalid Content-Length."));
                }
                if content_length.is_some_and(|c| c != v) {
                    return Err(Refusal::bad("Conflicting Content-Length values."));
                }
                content_length = Some(v);
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            check_connection(value)?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if transfer_encoding.is_some() {
                return Err(Refusal::bad("Send Transfer-Encoding once."));
            }
            transfer_encoding = Some(value);
        }
    }
    if hosts > 1 || (http11 && hosts == 0) {
        return Err(Refusal::bad("Send exactly one Host header."));
    }
    if let Some(te) = transfer_encoding {
        if !http11 {
            return Err(Refusal::bad(
                "Transfer-Encoding is not allowed on HTTP/1.0.",
            ));
        }
        if content_length.is_some() {
            return Err(Refusal::bad(
                "Content-Length and Transfer-Encoding must not both be sent.",
            ));
        }
        let last = te.rsplit(|&b| b == b',').next().map(<[u8]>::trim_ascii);
        if !last.is_some_and(|l| l.eq_ignore_ascii_case(b"chunked")) {
            return Err(Refusal::bad("Transfer-Encoding must end with chunked."));
        }
    }
    Ok(())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_connection(value: &[u8]) -> Result<(), Refusal> {
    let tokens = value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    for (i, token) in tokens.enumerate() {
        let name = std::str::from_utf8(token).unwrap_or("");
        if i >= 8
            || name.is_empty()
            || !token.iter().copied().all(is_tchar)
            || crate::identity::is_edge_owned(name)
            || [
                "host",
                "content-length",
                "transfer-encoding",
                "authorization",
            ]
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
        {
            return Err(Refusal::bad(
                "Connection may only name ordinary headers (close, keep-alive, upgrade, ...).",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, http11: bool, headers: &[(&str, &str)]) -> Result<(), u16> {
        check_head(
            method.as_bytes(),
            http11,
            headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            &HeadLimits {
                underscore_allowed: vec!["x_allowed".to_owned()],
                ..HeadLimits::default()
            },
        )
        .map_err(|r| r.status)
    }

    #[test]
    fn methods() {
        for m in ALLOWED_METHODS {
            assert_eq!(check(m, true, &[("host", "x")]), Ok(()), "{m}");
        }
        for m in [
            "TRACE", "TRACK", "CONNECT", "PROPFIND", "get", "DEBUG", "FOO",
        ] {
            assert_eq!(check(m, true, &[("host", "x")]), Err(405), "{m}");
        }
    }

    #[test]
    fn host_rules() {
        assert_eq!(check("GET", true, &[]), Err(400));
        assert_eq!(check("GET", false, &[]), Ok(()));
        assert_eq!(
            check("GET", true, &[("Host", "a"), ("host", "b")]),
            Err(400)
        );
        assert_eq!(
            check("GET", false, &[("host", "a"), ("host", "a")]),
            Err(400)
        );
    }

    #[test]
    fn underscores() {
        for n in ["x_forwarded_for", "X_Organization-Id", "x-real_ip", "_"] {
            assert_eq!(
                check("GET", true, &[("host", "x"), (n, "1")]),
                Err(400),
                "{n}"
            );
        }
        assert_eq!(
            check("GET", true, &[("host", "x"), ("X_ALLOWED", "1")]),
            Ok(())
        );
    }

    #[test]
    fn sizes() {
        let many: Vec<(String, String)> = (0..101)
            .map(|i| (format!("x-h{i}"), "v".to_owned()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(check("GET", false, &many), Err(431));
        let big = "a".repeat(33 * 1024);
        assert_eq!(
            check("GET", true, &[("host", "x"), ("x-big", &big)]),
            Err(431)
        );
        let fits = "a".repeat(30 * 1024);
        assert_eq!(
            check("GET", true, &[("host", "x"), ("x-big", &fits)]),
            Ok(())
        );
    }

    #[test]
    fn connection_tokens() {
        for ok in ["close", "keep-alive", "Upgrade", "keep-alive, x-custom"] {
            assert_eq!(
                check("GET", true, &[("host", "x"), ("connection", ok)]),
                Ok(()),
                "{ok}"
            );
        }
        for bad in [
            "keep-alive, X-Forwarded-For",
            "x-organization-id",
            "x_real_ip",
            "host",
            "\"x-forwarded-for\"",
            "a,b,c,d,e,f,g,h,i",
            "Authorization",
            "x-reconlayer-identity-signature",
        ] {
            assert_eq!(
                check("GET", true, &[("host", "x"), ("connection", bad)]),
                Err(400),
                "{bad}"
            );
        }
    }

    #[test]
    fn framing() {
        let h = |extra: &[(&'static str, &'static str)]| {
            let mut v = vec![("host", "x")];
            v.extend_from_slice(extra);
            v
        };
        assert_eq!(check("POST", true, &h(&[("content-length", "5")])), Ok(()));
        assert_eq!(
            check("POST", true, &h(&[("content-length", "5, 5")])),
            Ok(())
        );
        assert_eq!(
            check("POST", true, &h(&[("content-length", "5, 6")])),
            Err(400)
        );
        assert_eq!(
            check(
                "POST",
                true,
                &h(&[("content-length", "5"), ("content-length", "6")])
            ),
            Err(400)
        );
        assert_eq!(
            check("POST", true, &h(&[("content-length", "-1")])),
            Err(400)
        );
        assert_eq!(
            check("POST", true, &h(&[("content-length", "+5")])),
            Err(400)
        );
        assert_eq!(
            check("POST", true, &h(&[("transfer-encoding", "chunked")])),
            Ok(())
        );
        assert_eq!(
            check("POST", true, &h(&[("transfer-encoding", "gzip, chunked")])),
            Ok(())
        );
        assert_eq!(
            check("POST", true, &h(&[("transfer-encoding", "chunked, gzip")])),
            Err(400)
        );
        assert_eq!(
            check(
                "POST",
                true,
                &h(&[("transfer-encoding", "chunked"), ("content-length", "3")])
            ),
            Err(400)
        );
        assert_eq!(
            check("POST", false, &[("transfer-encoding", "chunked")]),
            Err(400)
        );
        assert_eq!(
            check(
                "POST",
                true,
                &h(&[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked")
                ])
            ),
            Err(400)
        );
    }
}
