//! The developer-settings page (`/dashboard`): a static, data-free page shipped inside the
//! binary. Every byte of data it shows comes from the public API with the caller's own
//! credential; the gateway only serves the files and a small configuration document
//! (`/dashboard/config.json`: local development mode, or the Clerk publishable key and
//! Frontend API origin for sign-in).
//!
//! Its Content-Security-Policy allows the gateway itself and, when Clerk sign-in is
//! configured, the Clerk Frontend API origin (ClerkJS is loaded from there) — nothing else.

use crate::docs::Asset;

const INDEX_HTML: &[u8] = include_bytes!("../dashboard/index.html");
const APP_JS: &[u8] = include_bytes!("../dashboard/app.js");
const STYLE_CSS: &[u8] = include_bytes!("../dashboard/style.css");

/// What the page needs to know about this deployment, computed once at start.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub config_json: bytes::Bytes,
    pub csp: String,
}

/// `CLERK_PUBLISHABLE_KEY` is `pk_(test|live)_` + base64 of `<frontend-api-host>$`.
pub fn frontend_api_origin(publishable_key: &str) -> Option<String> {
    use base64::Engine;
    let encoded = publishable_key
        .strip_prefix("pk_test_")
        .or_else(|| publishable_key.strip_prefix("pk_live_"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded))
        .ok()?;
    let host = std::str::from_utf8(&decoded).ok()?.strip_suffix('$')?;
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
    valid.then(|| format!("https://{host}"))
}

impl Dashboard {
    pub fn new(
        dev_bypass: bool,
        publishable_key: Option<&str>,
        frontend_api: Option<&str>,
    ) -> Self {
        let origin = frontend_api
            .map(|u| u.trim_end_matches('/').to_owned())
            .or_else(|| publishable_key.and_then(frontend_api_origin));
        let mode = match (publishable_key, &origin) {
            (Some(_), Some(_)) => "clerk",
            _ if dev_bypass => "local",
            _ => "unconfigured",
        };
        let config = serde_json::json!({
            "mode": mode,
            "clerkPublishableKey": if mode == "clerk" { publishable_key } else { None },
            "clerkFrontendApi": if mode == "clerk" { origin.as_deref() } else { None },
        });
        let extra = if mode == "clerk" {
            origin.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let csp = format!(
            "default-src 'self'; script-src 'self' {extra}; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data: {extra}; connect-src 'self' {extra}; frame-src {frame}; \
             worker-src 'self' blob:; font-src 'self' data:; object-src 'none'; \
             base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            frame = if extra.is_empty() {
                "'none'"
            } else {
                extra.as_str()
            },
        );
        Self {
            config_json: serde_json::to_vec(&config).unwrap_or_default().into(),
            csp: csp.split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }

    /// The asset at a canonical path under `/dashboard`, if any.
    pub fn asset(&self, path: &str) -> Option<Asset> {
        let (content_type, body, html): (&str, &[u8], bool) = match path {
            "/dashboard" | "/dashboard/" | "/dashboard/index.html" => {
                ("text/html; charset=utf-8", INDEX_HTML, true)
            }
            "/dashboard/app.js" => ("text/javascript; charset=utf-8", APP_JS, false),
            "/dashboard/style.css" => ("text/css; charset=utf-8", STYLE_CSS, false),
            _ => return None,
        };
        Some(Asset {
            content_type,
            body: bytes::Bytes::from_static(body),
            html,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontend_api_from_the_publishable_key() {
        // "clerk.example.com$"
        let pk = "pk_live_Y2xlcmsuZXhhbXBsZS5jb20k";
        assert_eq!(
            frontend_api_origin(pk).as_deref(),
            Some("https://clerk.example.com")
        );
        assert_eq!(frontend_api_origin("sk_live_x"), None);
        assert_eq!(frontend_api_origin("pk_test_!!!"), None);
    }

    #[test]
    fn csp_names_clerk_only_when_configured() {
        let local = Dashboard::new(true, None, None);
        assert!(!local.csp.contains("https://"));
        assert!(String::from_utf8_lossy(&local.config_json).contains(r#""mode":"local""#));
        let clerk = Dashboard::new(false, Some("pk_live_Y2xlcmsuZXhhbXBsZS5jb20k"), None);
        assert!(
            clerk
                .csp
                .contains("script-src 'self' https://clerk.example.com;")
        );
        assert!(String::from_utf8_lossy(&clerk.config_json).contains(r#""mode":"clerk""#));
        assert!(clerk.asset("/dashboard").is_some());
        assert!(clerk.asset("/dashboard/../x").is_none());
    }
}
