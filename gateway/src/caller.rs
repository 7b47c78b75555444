//! Who the gateway decided the caller is: the decision type that authentication produces
//! and that policy, identity injection and the proxy read. It imports none of them, so
//! `auth`, `policy`, `session` and `membership` depend on it, never on each other.

use std::sync::Arc;

use crate::api_key::VerifiedKey;

/// A signed-in dashboard user (a Clerk session, or the local-development bypass).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub organization_id: String,
    pub user_id: String,
    pub session_id: Option<String>,
    pub role: Option<String>,
    pub permissions: Vec<String>,
}

/// Who the gateway decided the caller is.
#[derive(Debug, Clone)]
pub enum Caller {
    ApiKey(Arc<VerifiedKey>),
    Session(Arc<SessionUser>),
}

impl Caller {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ApiKey(_) => "api_key",
            Self::Session(_) => "session",
        }
    }
}
