//! The identity headers on the upstream request: every client-sent copy removed, then the
//! gateway's own injected. The client's credential is not forwarded: services read the
//! injected identity, never the key or token.

use pingora::Result;
use pingora::http::RequestHeader;
use rl_contract::AuthType;
use rl_contract::identity::{self as id, is_owned_header};

use crate::auth::Caller;

/// Headers some upstream frameworks honour to change the method or the path of a request
/// after the gateway decided on it (`X-HTTP-Method-Override: DELETE` on an allowed `GET`,
/// `X-Original-URL: /v1/api-keys`). The decided method and path are final: these never pass.
pub const OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
];

/// Client-supplied hop information: the edge states it, clients do not.
pub const FORWARDING_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
    "x-client-ip",
];

/// Remove every header the gateway owns (any case, any number of copies), the caller's
/// credential, method/path override headers and client-supplied forwarding headers.
pub fn strip(req: &mut RequestHeader) {
    for name in OVERRIDE_HEADERS.iter().chain(FORWARDING_HEADERS) {
        req.remove_header(*name);
    }
    let owned: Vec<http::HeaderName> = req
        .headers
        .keys()
        // `x_organization_id` reaches CGI/PHP/Rack upstreams as the same variable as
        // `x-organization-id`: underscore spellings of owned headers go too.
        .filter(|name| {
            is_owned_header(name.as_str()) || is_owned_header(&name.as_str().replace('_', "-"))
        })
        .cloned()
        .collect();
    for name in owned {
        req.remove_header(&name);
    }
    req.remove_header(&http::header::AUTHORIZATION);
}

/// What the edge says about the hop: the client's address and the scheme it used.
pub fn forwarded_for(req: &mut RequestHeader, client: Option<std::net::IpAddr>) -> Result<()> {
    if let Some(ip) = client {
        req.insert_header("x-forwarded-for", ip.to_string())?;
    }
    req.insert_header("x-forwarded-proto", "http")?;
    Ok(())
}

/// Inject the resolved identity.
pub fn inject(req: &mut RequestHeader, caller: &Caller) -> Result<()> {
    match caller {
        Caller::ApiKey(key) => {
            req.insert_header(id::ORGANIZATION_ID, &*key.organization_id)?;
            req.insert_header(id::AUTH_TYPE, AuthType::ApiKey.as_str())?;
            req.insert_header(id::API_KEY_ID, key.id.as_str())?;
            req.insert_header(id::API_KEY_SCOPES, &*key.scopes_header)?;
        }
        Caller::Session(user) => {
            req.insert_header(id::ORGANIZATION_ID, user.organization_id.as_str())?;
            req.insert_header(id::AUTH_TYPE, AuthType::Session.as_str())?;
            req.insert_header(id::USER_ID, user.user_id.as_str())?;
            if let Some(s) = &user.session_id {
                req.insert_header(id::SESSION_ID, s.as_str())?;
            }
            if let Some(r) = &user.role {
                req.insert_header(id::ORG_ROLE, r.as_str())?;
            }
            if !user.permissions.is_empty() {
                req.insert_header(id::ORG_PERMISSIONS, user.permissions.join(","))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_key::VerifiedKey;
    use std::sync::Arc;

    #[test]
    fn client_identity_is_replaced_by_the_keys_own() {
        let mut req = RequestHeader::build("GET", b"/v1/x", None).expect("request");
        req.append_header("X-Organization-Id", "org_evil")
            .expect("h");
        req.append_header("x-organization-id", "org_evil2")
            .expect("h");
        req.append_header("X-API-KEY-ID", "forged").expect("h");
        req.append_header("x-reconlayer-signature", "forged")
            .expect("h");
        req.append_header("x_organization_id", "org_evil3")
            .expect("h");
        req.append_header("authorization", "Bearer rl_live_secret")
            .expect("h");
        req.append_header("accept", "application/json").expect("h");
        req.append_header("X-HTTP-Method-Override", "DELETE")
            .expect("h");
        req.append_header("x-original-url", "/v1/api-keys")
            .expect("h");
        req.append_header("X-Forwarded-For", "10.0.0.1").expect("h");
        req.append_header("forwarded", "for=10.0.0.1").expect("h");
        strip(&mut req);
        let caller = Caller::ApiKey(Arc::new(VerifiedKey {
            id: "key_1".into(),
            organization_id: "org_real".into(),
            scopes_header: "a:read,b:write".into(),
            expires_at: None,
            revoked_at: None,
        }));
        inject(&mut req, &caller).expect("inject");
        let all = |n: &str| -> Vec<&str> {
            req.headers
                .get_all(n)
                .iter()
                .map(|v| v.to_str().expect("ascii"))
                .collect()
        };
        assert_eq!(all("x-organization-id"), vec!["org_real"]);
        assert_eq!(all("x-api-key-id"), vec!["key_1"]);
        assert_eq!(all("x-api-key-scopes"), vec!["a:read,b:write"]);
        assert_eq!(all("x-auth-type"), vec!["api_key"]);
        assert!(all("x-reconlayer-signature").is_empty());
        assert!(all("x_organization_id").is_empty());
        assert!(all("authorization").is_empty());
        assert_eq!(all("accept"), vec!["application/json"]);
        for gone in [
            "x-http-method-override",
            "x-original-url",
            "x-forwarded-for",
            "forwarded",
        ] {
            assert!(all(gone).is_empty(), "{gone} passed");
        }
    }
}
