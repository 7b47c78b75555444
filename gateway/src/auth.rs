//! Authentication and route policy: from request headers to exactly one organization.

use std::sync::Arc;

use http::HeaderMap;
use rl_contract::identity::{ORGANIZATION_ID, is_valid_organization_id, single_header};

use crate::GatewayState;
use crate::api_key::Outcome;
pub use crate::caller::{Caller, SessionUser};
use crate::credential::{self, Credential, CredentialError};
use crate::error::GatewayError;
use crate::policy::Policy;
use crate::routes::Route;

/// The user the local-development bypass acts as.
pub const DEV_USER_ID: &str = "user_dev";

pub async fn authenticate(
    state: &GatewayState,
    headers: &HeaderMap,
    now_ms: i64,
    request_id: &str,
    client: Option<std::net::IpAddr>,
) -> Result<Caller, GatewayError> {
    match credential::from_headers(headers) {
        Err(CredentialError::Duplicate) => Err(GatewayError::BadRequest(
            "Send exactly one Authorization header.".to_owned(),
        )),
        Err(CredentialError::NotBearer) => Err(GatewayError::MissingCredential),
        Ok(None) if state.settings.dev_bypass => dev_bypass(headers),
        Ok(None) => Err(GatewayError::MissingCredential),
        Ok(Some(Credential::ApiKey(token))) => {
            match state
                .keys
                .verify(token, now_ms, Some(request_id), client)
                .await
            {
                Outcome::Valid(key) => Ok(Caller::ApiKey(key)),
                Outcome::Invalid(reason) => Err(GatewayError::InvalidApiKey(reason)),
                Outcome::Unavailable => Err(GatewayError::KeysUnavailable),
                Outcome::Throttled => Err(GatewayError::RateLimited),
            }
        }
        Ok(Some(Credential::Session(token))) => session(state, headers, token, now_ms).await,
    }
}

/// A Clerk session: the token's organization, or the `x-organization-id` fallback for an
/// organization the user belongs to.
async fn session(
    state: &GatewayState,
    headers: &HeaderMap,
    token: &str,
    now_ms: i64,
) -> Result<Caller, GatewayError> {
    let verified = state
        .sessions
        .verify(token, now_ms.div_euclid(1000))
        .await
        .map_err(GatewayError::InvalidSession)?;
    if let Some(user) = &verified.user {
        return Ok(Caller::Session(user.clone()));
    }
    let org = single_header(headers, ORGANIZATION_ID)
        .filter(|o| is_valid_organization_id(o))
        .ok_or(GatewayError::InvalidSession("no_organization"))?;
    match state.memberships.find(&verified.user_id, org).await {
        Ok(Some(m)) => Ok(Caller::Session(Arc::new(SessionUser {
            organization_id: m.id,
            user_id: verified.user_id.clone(),
            session_id: Some(verified.session_id.clone()),
            role: m.role.filter(|r| crate::session::is_header_safe(r)),
            permissions: m
                .permissions
                .into_iter()
                .filter(|p| crate::session::is_header_safe(p))
                .collect(),
        }))),
        Ok(None) => Err(GatewayError::InvalidSession("not_a_member")),
        Err(e) => {
            tracing::warn!(error = %e, "organization membership check failed");
            match *e {
                crate::membership::MembershipError::NotConfigured => {
                    Err(GatewayError::InvalidSession("no_organization"))
                }
                crate::membership::MembershipError::Unavailable(_) => {
                    Err(GatewayError::IdentityUnavailable)
                }
            }
        }
    }
}

/// `AUTH_DEV_BYPASS=1` (never with `NODE_ENV=production`): a request without
/// `Authorization` is identified by `x-organization-id` alone, as a signed-in developer.
fn dev_bypass(headers: &HeaderMap) -> Result<Caller, GatewayError> {
    if headers.get(ORGANIZATION_ID).is_none() {
        return Err(GatewayError::MissingCredential);
    }
    let org = single_header(headers, ORGANIZATION_ID)
        .filter(|o| is_valid_organization_id(o))
        .ok_or(GatewayError::InvalidSession("bad_organization_header"))?;
    Ok(Caller::Session(Arc::new(SessionUser {
        organization_id: org.to_owned(),
        user_id: DEV_USER_ID.to_owned(),
        session_id: None,
        role: Some("org:admin".to_owned()),
        permissions: Vec::new(),
    })))
}

/// What a route requires of an authenticated caller. Key management and outbound-webhook
/// administration are session-only whatever the policy file says; unknown routes are `404` after
/// authentication.
pub fn authorize(
    policy: &Policy,
    route: Route,
    method: &http::Method,
    path: &str,
    caller: &Caller,
) -> Result<(), GatewayError> {
    match (route, caller) {
        (Route::ApiKeys | Route::OutboundWebhooks, Caller::ApiKey(_)) => {
            return Err(GatewayError::SessionRequired);
        }
        (Route::Unknown, _) => return Err(GatewayError::NotFound),
        _ => {}
    }
    policy.check(method, path, caller)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_key::VerifiedKey;
    use http::HeaderValue;

    #[test]
    fn dev_bypass_needs_one_valid_organization() {
        let mut h = HeaderMap::new();
        assert_eq!(dev_bypass(&h).err(), Some(GatewayError::MissingCredential));
        h.insert(ORGANIZATION_ID, HeaderValue::from_static("org dev"));
        assert!(matches!(
            dev_bypass(&h),
            Err(GatewayError::InvalidSession(_))
        ));
        h.insert(ORGANIZATION_ID, HeaderValue::from_static("org_dev"));
        let Ok(Caller::Session(user)) = dev_bypass(&h) else {
            panic!("bypass should identify the developer");
        };
        assert_eq!(user.organization_id, "org_dev");
        h.append(ORGANIZATION_ID, HeaderValue::from_static("org_other"));
        assert!(dev_bypass(&h).is_err());
    }

    #[test]
    fn api_keys_cannot_manage_keys() {
        let key = Caller::ApiKey(Arc::new(VerifiedKey {
            id: "k".into(),
            organization_id: "o".into(),
            scopes_header: "".into(),
            expires_at: None,
            revoked_at: None,
        }));
        let p = Policy::default();
        let get = http::Method::GET;
        assert_eq!(
            authorize(&p, Route::ApiKeys, &get, "/v1/api-keys", &key),
            Err(GatewayError::SessionRequired)
        );
        assert_eq!(authorize(&p, Route::Api, &get, "/v1/x", &key), Ok(()));
        assert_eq!(
            authorize(&p, Route::Unknown, &get, "/x", &key),
            Err(GatewayError::NotFound)
        );
        // An empty policy file cannot open key management to API keys.
        let empty = Policy::from_json(r#"{"rules":[]}"#).expect("valid");
        assert_eq!(
            authorize(&empty, Route::ApiKeys, &get, "/v1/api-keys", &key),
            Err(GatewayError::SessionRequired)
        );
    }
}
