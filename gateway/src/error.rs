//! Every way the gateway refuses a request, mapped to the documented envelope.

use rl_contract::error::{ErrorCode, messages};

use crate::api_key::Rejection;
use crate::request_rules::Refusal;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing bearer credential")]
    MissingCredential,
    #[error("invalid api key ({})", .0.label())]
    InvalidApiKey(Rejection),
    #[error("invalid session ({0})")]
    InvalidSession(&'static str),
    #[error("signed-in session required")]
    SessionRequired,
    #[error("{0}")]
    Forbidden(String),
    #[error("no such route")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("key verification unavailable")]
    KeysUnavailable,
    #[error("identity provider unavailable")]
    IdentityUnavailable,
    #[error("{}", .0.message)]
    Refused(Refusal),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("request body too slow")]
    BodyTimeout,
    #[error("too many unknown keys from this client")]
    RateLimited,
    #[error("upstream unavailable")]
    BadGateway,
    #[error("upstream timed out")]
    GatewayTimeout,
}

impl GatewayError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest(_) => ErrorCode::InvalidRequest,
            Self::MissingCredential | Self::InvalidApiKey(_) | Self::InvalidSession(_) => {
                ErrorCode::Unauthorized
            }
            Self::SessionRequired | Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::KeysUnavailable | Self::IdentityUnavailable => ErrorCode::ServiceUnavailable,
            Self::Refused(r) => r.code,
            Self::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            Self::BodyTimeout => ErrorCode::RequestTimeout,
            Self::RateLimited => ErrorCode::TooManyRequests,
            Self::BadGateway => ErrorCode::BadGateway,
            Self::GatewayTimeout => ErrorCode::GatewayTimeout,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::BadRequest(m) | Self::Forbidden(m) => m,
            Self::MissingCredential => messages::MISSING_BEARER,
            Self::InvalidApiKey(_) => messages::INVALID_API_KEY,
            Self::InvalidSession(_) => messages::INVALID_SESSION,
            Self::SessionRequired => messages::SESSION_REQUIRED,
            Self::NotFound => "No such route.",
            Self::MethodNotAllowed => "Method not allowed on this route.",
            Self::KeysUnavailable => {
                "API key verification is temporarily unavailable. Retry shortly."
            }
            Self::IdentityUnavailable => {
                "Organization membership could not be checked. Retry shortly."
            }
            Self::Refused(r) => &r.message,
            Self::PayloadTooLarge => "The request body is too large for this route.",
            Self::BodyTimeout => "The request body was not received in time.",
            Self::RateLimited => {
                "Too many lookups of unknown API keys from this client. Retry shortly."
            }
            Self::BadGateway => "The upstream service is unavailable.",
            Self::GatewayTimeout => "The upstream service did not respond in time.",
        }
    }

    /// Which credential the refused request presented (a metrics label).
    pub fn credential_kind(&self) -> &'static str {
        match self {
            Self::InvalidApiKey(_) | Self::KeysUnavailable | Self::RateLimited => "api_key",
            Self::InvalidSession(_) | Self::IdentityUnavailable => "session",
            _ => "none",
        }
    }

    /// A bounded label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::MissingCredential => "missing_credential",
            Self::InvalidApiKey(r) => r.label(),
            Self::InvalidSession(r) => r,
            Self::SessionRequired => "session_required",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::KeysUnavailable => "keys_unavailable",
            Self::IdentityUnavailable => "identity_unavailable",
            Self::Refused(r) => r.reason(),
            Self::PayloadTooLarge => "payload_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::RateLimited => "rate_limited",
            Self::BadGateway => "bad_gateway",
            Self::GatewayTimeout => "gateway_timeout",
        }
    }
}
