//! The identity headers on the upstream request: every client-sent copy removed, then the
//! gateway's own injected. The client's credential is not forwarded: services read the
//! injected identity, never the key or token.

use std::borrow::Cow;

use http::HeaderValue;
use pingora::Result;
use pingora::http::RequestHeader;
use rl_contract::AuthType;
use rl_contract::identity::{self as id, is_owned_header};

use crate::caller::Caller;

/// Headers some upstream frameworks honour to change the method or the path of a request
/// after the gateway decided on it (`X-HTTP-Method-Override: DELETE` on an allowed `GET`,
/// `X-Original-URL: /v1/api-keys`). The decided method and path are final: these never pass
/// (nor does anything starting with one of [`OWNED_PREFIXES`], e.g. `x-original-uri`).
pub const OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-rewrite-url",
    "x-override-url",
];

/// Client-supplied hop, address, scheme and identity information that proxies and
/// frameworks believe: the edge states the hop itself, and identity comes from the
/// credential only.
pub const FORWARDING_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded",
    "x-real-ip",
    "x-client-ip",
    "client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-originating-ip",
    "x-proxyuser-ip",
    "x-host",
    "x-url-scheme",
    "x-scheme",
    "front-end-https",
    "x-arr-ssl",
    "x-arr-clientcert",
    "x-client-cert",
    "x-ssl-client-cert",
    "ssl-client-cert",
    "x-client-verify",
    "remote-user",
    "remote-addr",
    "x-user",
    "x-email",
    "x-user-email",
    "x-user-groups",
    "x-webauth-user",
    "proxy-connection",
];

/// Whole namespaces the edge owns: forwarding (`x-forwarded-for`, `-host`, `-prefix`,
/// `-uri`, `-user`, `-email`, `-access-token`, …), rewrites (`x-original-url`, `-uri`,
/// `-method`), other proxies' internal and identity headers (Envoy, oauth2-proxy, AWS ALB,
/// Google IAP, Azure App Service, Cloudflare Access, Kong).
pub const OWNED_PREFIXES: &[&str] = &[
    "x-forwarded-",
    "x-original-",
    "x-envoy-",
    "x-auth-request-",
    "x-amzn-oidc-",
    "x-goog-authenticated-",
    "x-ms-client-principal",
    "cf-access-",
    "x-consumer-",
    "x-credential-",
    "x-remote-",
    "x-authenticated-",
];

/// Whether a client-sent header `name` (any case, `_` or `-`) is one the edge owns.
pub fn is_edge_owned(name: &str) -> bool {
    let folded: std::borrow::Cow<'_, str> =
        if name.bytes().any(|b| b == b'_' || b.is_ascii_uppercase()) {
            name.to_ascii_lowercase().replace('_', "-").into()
        } else {
            name.into()
        };
    let n = folded.as_ref();
    // Every name on the lists starts with one of these letters: `accept`, `host`,
    // `user-agent`, `content-type` … leave after one comparison.
    if !matches!(
        n.as_bytes().first(),
        Some(b'x' | b'f' | b'c' | b't' | b'r' | b'p' | b's')
    ) {
        return false;
    }
    is_owned_header(n)
        || OVERRIDE_HEADERS.contains(&n)
        || FORWARDING_HEADERS.contains(&n)
        || OWNED_PREFIXES.iter().any(|p| n.starts_with(p))
}

/// Remove every header the gateway owns (any case, `_` for `-`, any number of copies), the
/// caller's credential, method/path override headers and client-supplied forwarding and
/// identity headers. (`Connection` naming any of them is refused in `request_rules`;
/// pingora strips hop-by-hop headers and the ones `Connection` names.)
pub fn strip(req: &mut RequestHeader) {
    // Most requests carry none: look before collecting anything.
    if req.headers.keys().any(|name| is_edge_owned(name.as_str())) {
        let owned: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|name| is_edge_owned(name.as_str()))
            .cloned()
            .collect();
        for name in owned {
            req.remove_header(&name);
        }
    }
    req.remove_header(&http::header::AUTHORIZATION);
}

/// What the edge says about the hop: the client's address and the scheme it used.
/// `client` is the `x-forwarded-for` value (see [`client_ip_value`]).
pub fn forwarded_for(req: &mut RequestHeader, client: Option<HeaderValue>) -> Result<()> {
    if let Some(ip) = client {
        req.insert_header("x-forwarded-for", ip)?;
    }
    req.insert_header("x-forwarded-proto", "http")?;
    Ok(())
}

/// The client's address as a header value. Formatting an address costs more than the rest
/// of `forwarded_for`: the proxy keeps one per connection.
pub fn client_ip_value(ip: std::net::IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string())
        .unwrap_or_else(|_| unreachable!("an IP address is header text"))
}

/// The injected identity, one value per [`id::OWNED_HEADERS`] entry in its order (`""`:
/// not sent) — exactly what is signed.
pub type Injected<'a> = [Cow<'a, str>; id::OWNED_HEADERS.len()];

/// Inject the resolved identity; returns what was injected, for the signature.
pub fn inject<'a>(req: &mut RequestHeader, caller: &'a Caller) -> Result<Injected<'a>> {
    let mut values: Injected<'a> = Default::default();
    let mut put = |name: &'static str, value: Cow<'a, str>| -> Result<()> {
        req.insert_header(name, &*value)?;
        if let Some(i) = id::OWNED_HEADERS.iter().position(|n| *n == name) {
            values[i] = value;
        }
        Ok(())
    };
    match caller {
        Caller::ApiKey(key) => {
            put(id::ORGANIZATION_ID, Cow::Borrowed(&*key.organization_id))?;
            put(id::AUTH_TYPE, Cow::Borrowed(AuthType::ApiKey.as_str()))?;
            put(id::API_KEY_ID, Cow::Borrowed(&*key.id))?;
            put(id::API_KEY_SCOPES, Cow::Borrowed(&*key.scopes_header))?;
        }
        Caller::Session(user) => {
            put(id::ORGANIZATION_ID, Cow::Borrowed(&user.organization_id))?;
            put(id::AUTH_TYPE, Cow::Borrowed(AuthType::Session.as_str()))?;
            put(id::USER_ID, Cow::Borrowed(&user.user_id))?;
            if let Some(s) = &user.session_id {
                put(id::SESSION_ID, Cow::Borrowed(s))?;
            }
            if let Some(r) = &user.role {
                put(id::ORG_ROLE, Cow::Borrowed(r))?;
            }
            if !user.permissions.is_empty() {
                put(id::ORG_PERMISSIONS, Cow::Owned(user.permissions.join(",")))?;
            }
        }
    }
    Ok(values)
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
        for (n, v) in [
            ("X-Forwarded-Prefix", "/admin"),
            ("x-forwarded-uri", "/v1/api-keys"),
            ("x-forwarded-user", "admin"),
            ("x-forwarded-email", "a@b"),
            ("x-original-method", "DELETE"),
            ("x-envoy-original-path", "/v1/api-keys"),
            ("true-client-ip", "1.2.3.4"),
            ("x-auth-request-user", "admin"),
            ("x_forwarded_host", "evil"),
            ("X_Real-IP", "1.2.3.4"),
            ("x-http_method-override", "DELETE"),
            ("remote-user", "admin"),
        ] {
            req.append_header(n, v).expect("h");
        }
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
            "x-forwarded-prefix",
            "x-forwarded-uri",
            "x-forwarded-user",
            "x-forwarded-email",
            "x-original-method",
            "x-envoy-original-path",
            "true-client-ip",
            "x-auth-request-user",
            "x_forwarded_host",
            "x_real-ip",
            "x-http_method-override",
            "remote-user",
        ] {
            assert!(all(gone).is_empty(), "{gone} passed");
        }
    }
}
