//! The public API document and its explorer, served by the gateway itself:
//! `/openapi.yaml` (the source, `gateway/openapi/openapi.yaml`), `/openapi.json` (the same
//! document, converted once at start) and `/docs` (Swagger UI, shipped inside the binary:
//! no CDN, works with no internet access).

use std::sync::OnceLock;

pub const OPENAPI_YAML: &str = include_str!("../openapi/openapi.yaml");
const SWAGGER_JS: &[u8] = include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_CSS: &[u8] = include_bytes!("../assets/swagger-ui/swagger-ui.css");

const INDEX_HTML: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>ReconLayer API explorer</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"##;

const INIT_JS: &str = r##"window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    tryItOutEnabled: true,
    persistAuthorization: false
  });
});
"##;

/// Only same-origin scripts and styles (Swagger UI sets inline styles); nothing external.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                       img-src 'self' data:; connect-src 'self'; font-src 'self' data:; \
                       object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub struct Asset {
    pub content_type: &'static str,
    pub body: bytes::Bytes,
    /// Served with the page's Content-Security-Policy.
    pub html: bool,
}

fn openapi_json() -> &'static [u8] {
    static JSON: OnceLock<Vec<u8>> = OnceLock::new();
    JSON.get_or_init(|| {
        serde_yaml_ng::from_str::<serde_json::Value>(OPENAPI_YAML)
            .ok()
            .and_then(|v| serde_json::to_vec_pretty(&v).ok())
            .unwrap_or_default()
    })
}

/// The asset at a canonical path of the `Docs` route class, if any.
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, body, html): (&str, &[u8], bool) = match path {
        "/openapi.json" => ("application/json", openapi_json(), false),
        "/openapi.yaml" => ("application/yaml", OPENAPI_YAML.as_bytes(), false),
        "/docs" | "/docs/" | "/docs/index.html" => {
            ("text/html; charset=utf-8", INDEX_HTML.as_bytes(), true)
        }
        "/docs/init.js" => ("text/javascript; charset=utf-8", INIT_JS.as_bytes(), false),
        "/docs/swagger-ui-bundle.js" => ("text/javascript; charset=utf-8", SWAGGER_JS, false),
        "/docs/swagger-ui.css" => ("text/css; charset=utf-8", SWAGGER_CSS, false),
        _ => return None,
    };
    Some(Asset {
        content_type,
        body: bytes::Bytes::from_static(body),
        html,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_parses_and_names_every_public_operation() {
        let doc: serde_json::Value = serde_json::from_slice(openapi_json()).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        for (path, methods) in [
            ("/v1/api-keys", &["get", "post"][..]),
            ("/v1/api-keys/{keyId}", &["get", "patch", "delete"][..]),
            ("/v1/audit-events", &["get"][..]),
            ("/health", &["get"][..]),
        ] {
            for m in methods {
                assert!(doc["paths"][path][m].is_object(), "{m} {path} missing");
            }
        }
        let unauthorized = doc["components"]["responses"]["Unauthorized"].to_string();
        for message in [
            rl_contract::error::messages::MISSING_BEARER,
            rl_contract::error::messages::INVALID_API_KEY,
            rl_contract::error::messages::INVALID_SESSION,
        ] {
            assert!(unauthorized.contains(message), "{message}");
        }
        assert!(
            doc["components"]["responses"]["Forbidden"]
                .to_string()
                .contains(rl_contract::error::messages::SESSION_REQUIRED)
        );
    }

    #[test]
    fn the_explorer_loads_nothing_from_elsewhere() {
        assert!(!INDEX_HTML.contains("http"));
        assert!(!INIT_JS.contains("http"));
        assert!(asset("/docs/swagger-ui-bundle.js").is_some_and(|a| a.body.len() > 100_000));
        assert!(asset("/docs/../etc/passwd").is_none());
    }
}
