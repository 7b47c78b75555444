//! HTTP plumbing every axum service shares, so bad input gets the same envelope everywhere:
//! JSON bodies that fail with `400`/`413`, `404`/`405` fallbacks, a body limit, and panics
//! turned into a generic `500` instead of a dropped connection.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::{ErrorCode, ErrorResponse};

/// A request body parsed as a JSON object. Anything else is a `400` with a message saying
/// what is wrong; a body over the router's limit is a `413`.
pub struct JsonObject(pub serde_json::Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ErrorResponse;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ErrorResponse::new(ErrorCode::PayloadTooLarge, "Request body is too large.")
            } else {
                ErrorResponse::new(
                    ErrorCode::InvalidRequest,
                    "Could not read the request body.",
                )
            }
        })?;
        parse_object(&bytes).map(JsonObject)
    }
}

pub fn parse_object(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ErrorResponse> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ErrorResponse::new(
            ErrorCode::InvalidRequest,
            "Request body must be a JSON object.",
        ));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ErrorResponse::new(
            ErrorCode::InvalidRequest,
            "Request body must be a JSON object.",
        )),
        Err(e) => Err(ErrorResponse::new(
            ErrorCode::InvalidRequest,
            format!("Malformed JSON: {e}."),
        )),
    }
}

async fn not_found() -> ErrorResponse {
    ErrorResponse::new(ErrorCode::NotFound, "No such route.")
}

async fn method_not_allowed() -> ErrorResponse {
    ErrorResponse::new(
        ErrorCode::MethodNotAllowed,
        "Method not allowed on this route.",
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    ErrorResponse::new(ErrorCode::InternalError, "An internal error occurred.").into_response()
}

/// Add the shared fallbacks, the body limit and panic handling to a service's router.
pub fn finish<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    max_body_bytes: usize,
) -> Router<S> {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_objects_pass() {
        assert!(parse_object(b"{\"a\":1}").is_ok());
        for bad in [&b""[..], b"  ", b"[]", b"null", b"{", b"\"x\"", b"{\"a\":}"] {
            let e = parse_object(bad).expect_err("must fail");
            assert_eq!(e.code, ErrorCode::InvalidRequest);
        }
    }
}
