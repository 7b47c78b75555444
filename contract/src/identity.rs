//! Who is calling: the identity the gateway resolves and injects as headers.
//!
//! The gateway owns every header named here. It removes each client-sent copy before it
//! injects its own, and signs what it injects: services read an identity only through
//! `signing::VerifiedIdentity`, never from these headers alone.

use http::HeaderMap;

pub const ORGANIZATION_ID: &str = "x-organization-id";
pub const AUTH_TYPE: &str = "x-auth-type";
pub const USER_ID: &str = "x-user-id";
pub const SESSION_ID: &str = "x-session-id";
pub const API_KEY_ID: &str = "x-api-key-id";
pub const API_KEY_SCOPES: &str = "x-api-key-scopes";
pub const ORG_ROLE: &str = "x-org-role";
pub const ORG_PERMISSIONS: &str = "x-org-permissions";
pub const REQUEST_ID: &str = "x-request-id";

/// Every header the gateway owns. Client-sent copies are always removed.
pub const OWNED_HEADERS: &[&str] = &[
    ORGANIZATION_ID,
    AUTH_TYPE,
    USER_ID,
    SESSION_ID,
    API_KEY_ID,
    API_KEY_SCOPES,
    ORG_ROLE,
    ORG_PERMISSIONS,
];

/// Any header starting with this prefix is the gateway's too (signatures, future fields).
pub const OWNED_PREFIX: &str = "x-reconlayer-";

/// Whether `name` (any case) is a header only the gateway may set.
pub fn is_owned_header(name: &str) -> bool {
    OWNED_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
        || (name.len() >= OWNED_PREFIX.len()
            && name.as_bytes()[..OWNED_PREFIX.len()].eq_ignore_ascii_case(OWNED_PREFIX.as_bytes()))
}

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    ApiKey,
    Session,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Session => "session",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "api_key" => Some(Self::ApiKey),
            "session" => Some(Self::Session),
            _ => None,
        }
    }
}

/// The value of a header sent exactly once, as visible ASCII. Two copies of a header
/// the gateway reads are refused outright: two parsers may pick different ones.
pub fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// A request id worth keeping: 1–128 of `[A-Za-z0-9._:-]`.
pub fn is_well_formed_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// An organization id as Clerk issues them (`org_…`) or as a developer names one locally.
pub fn is_valid_organization_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The resolved caller, exactly one organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub organization_id: String,
    pub auth_type: AuthType,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub api_key_id: Option<String>,
    pub scopes: Vec<String>,
    pub role: Option<String>,
    pub permissions: Vec<String>,
}

impl Identity {
    /// Who did it, as the audit trail records it: the user, or `api_key:<keyId>`.
    pub fn actor(&self) -> String {
        match (self.auth_type, &self.user_id, &self.api_key_id) {
            (AuthType::Session, Some(user), _) => user.clone(),
            (AuthType::ApiKey, _, Some(key)) => format!("api_key:{key}"),
            _ => "system".to_owned(),
        }
    }

    /// The headers to inject, in a stable order. Values are ASCII by construction.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (ORGANIZATION_ID, self.organization_id.clone()),
            (AUTH_TYPE, self.auth_type.as_str().to_owned()),
        ];
        let optional = [
            (USER_ID, &self.user_id),
            (SESSION_ID, &self.session_id),
            (API_KEY_ID, &self.api_key_id),
            (ORG_ROLE, &self.role),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                out.push((name, v.clone()));
            }
        }
        if self.auth_type == AuthType::ApiKey {
            out.push((API_KEY_SCOPES, self.scopes.join(",")));
        }
        if !self.permissions.is_empty() {
            out.push((ORG_PERMISSIONS, self.permissions.join(",")));
        }
        out
    }

    /// Read the identity the gateway injected. `None` when it is missing or malformed.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let get = |name: &str| -> Option<String> {
            single_header(headers, name)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let list = |name: &str| -> Vec<String> {
            get(name)
                .map(|s| {
                    s.split(',')
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let organization_id = get(ORGANIZATION_ID).filter(|o| is_valid_organization_id(o))?;
        let auth_type = AuthType::parse(&get(AUTH_TYPE)?)?;
        Some(Self {
            organization_id,
            auth_type,
            user_id: get(USER_ID),
            session_id: get(SESSION_ID),
            api_key_id: get(API_KEY_ID),
            scopes: list(API_KEY_SCOPES),
            role: get(ORG_ROLE),
            permissions: list(ORG_PERMISSIONS),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn session() -> Identity {
        Identity {
            organization_id: "org_acme".into(),
            auth_type: AuthType::Session,
            user_id: Some("user_1".into()),
            session_id: Some("sess_1".into()),
            api_key_id: None,
            scopes: vec![],
            role: Some("org:admin".into()),
            permissions: vec!["org:api_keys:manage".into()],
        }
    }

    #[test]
    fn headers_round_trip() {
        let id = session();
        let mut map = HeaderMap::new();
        for (k, v) in id.to_headers() {
            map.insert(k, HeaderValue::from_str(&v).expect("ascii"));
        }
        assert_eq!(Identity::from_headers(&map), Some(id));
    }

    #[test]
    fn duplicated_or_malformed_identity_is_refused() {
        let mut map = HeaderMap::new();
        map.append(ORGANIZATION_ID, HeaderValue::from_static("org_a"));
        map.append(ORGANIZATION_ID, HeaderValue::from_static("org_b"));
        map.insert(AUTH_TYPE, HeaderValue::from_static("session"));
        assert_eq!(Identity::from_headers(&map), None);
        map.remove(ORGANIZATION_ID);
        map.insert(ORGANIZATION_ID, HeaderValue::from_static("org a"));
        assert_eq!(Identity::from_headers(&map), None);
    }

    #[test]
    fn owned_headers_match_any_case_and_prefix() {
        assert!(is_owned_header("X-Organization-Id"));
        assert!(is_owned_header("x-reconlayer-signature"));
        assert!(is_owned_header("X-RECONLAYER-anything"));
        assert!(!is_owned_header("x-request-id"));
        assert!(!is_owned_header("content-type"));
    }

    #[test]
    fn actor_names_the_user_or_the_key() {
        assert_eq!(session().actor(), "user_1");
        let key = Identity {
            auth_type: AuthType::ApiKey,
            user_id: None,
            api_key_id: Some("k1".into()),
            ..session()
        };
        assert_eq!(key.actor(), "api_key:k1");
    }
}
