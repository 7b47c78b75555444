//! The one error type of audit-service, mapped to the documented envelope.

use axum::response::{IntoResponse, Response};
use rl_contract::error::{ErrorCode, ErrorResponse, messages};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("missing identity")]
    Unauthenticated,
    #[error(transparent)]
    Store(#[from] rl_contract::db::StoreError),
    #[error("{}", .0.message)]
    Envelope(ErrorResponse),
}

impl From<ErrorResponse> for ApiError {
    fn from(e: ErrorResponse) -> Self {
        Self::Envelope(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, message) = match &self {
            Self::Envelope(e) => (e.code, e.message.clone()),
            Self::InvalidRequest(m) => (ErrorCode::InvalidRequest, m.clone()),
            Self::Unauthenticated => (ErrorCode::Unauthorized, messages::MISSING_BEARER.to_owned()),
            Self::Store(e) => {
                let r = e.response("The audit store is temporarily unavailable. Retry shortly.");
                (r.code, r.message)
            }
        };
        ErrorResponse::new(code, message).into_response()
    }
}
