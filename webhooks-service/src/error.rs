//! The one error type of webhooks-service, mapped to the documented envelope.

use axum::response::{IntoResponse, Response};
use rl_contract::error::{ErrorCode, ErrorResponse, messages};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `400`: malformed input.
    #[error("{0}")]
    InvalidRequest(String),
    /// `422`: well-formed, but refused (a forbidden destination, a limit).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("missing identity")]
    Unauthenticated,
    #[error("session required")]
    SessionRequired,
    #[error("internal: {0}")]
    Internal(String),
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
            Self::Unprocessable(m) => (ErrorCode::UnprocessableEntity, m.clone()),
            Self::NotFound(m) => (ErrorCode::NotFound, (*m).to_owned()),
            Self::Unauthenticated => (ErrorCode::Unauthorized, messages::MISSING_BEARER.to_owned()),
            Self::SessionRequired => (ErrorCode::Forbidden, messages::SESSION_REQUIRED.to_owned()),
            Self::Internal(cause) => {
                tracing::error!(cause = %cause, "internal error");
                (
                    ErrorCode::InternalError,
                    "An internal error occurred.".to_owned(),
                )
            }
            Self::Store(e) => {
                let r = e.response("The webhook store is temporarily unavailable. Retry shortly.");
                (r.code, r.message)
            }
        };
        ErrorResponse::new(code, message).into_response()
    }
}
