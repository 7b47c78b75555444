//! Black-box test support, and the echo upstream the local stack runs as `demo-upstream`.
//!
//! The echo upstream answers every request with what it received — method, path, query and
//! the identity headers — so a new user (and a test) sees exactly what the product's
//! services get from the gateway.

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::Json;
use serde_json::{Map, Value, json};

/// Headers the echo reports (all copies of each, so a duplicated header would show).
pub const ECHOED_HEADERS: &[&str] = &[
    "x-organization-id",
    "x-auth-type",
    "x-user-id",
    "x-session-id",
    "x-api-key-id",
    "x-api-key-scopes",
    "x-org-role",
    "x-org-permissions",
    "x-request-id",
    "authorization",
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "forwarded",
    "x-http-method-override",
    "x-original-url",
];

fn echoed(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for name in ECHOED_HEADERS {
        let values: Vec<Value> = headers
            .get_all(*name)
            .iter()
            .map(|v| Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        if !values.is_empty() {
            out.insert((*name).to_owned(), Value::Array(values));
        }
    }
    let mut extra: Vec<String> = headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("x-reconlayer-"))
        .collect();
    extra.sort();
    extra.dedup();
    for name in extra {
        let values: Vec<Value> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        out.insert(name, Value::Array(values));
    }
    Value::Object(out)
}

async fn echo(request: Request) -> Json<Value> {
    let (parts, _body) = request.into_parts();
    Json(json!({
        "service": "demo-upstream",
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": echoed(&parts.headers),
    }))
}

/// A router that echoes every request.
pub fn echo_router() -> Router {
    Router::new().fallback(echo)
}
