//! Reading the `Authorization` header: which credential, if any, the caller presents.
//!
//! The split is the seed's: a bearer token starting `rl_live_` is an API key, anything else
//! a Clerk session token. An API key's shape is checked here, before any lookup, so a
//! malformed key costs no cache entry and no keys-service call.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use sha2::{Digest, Sha256};

pub const API_KEY_PREFIX: &str = "rl_live_";
const API_KEY_BODY_LEN: usize = 43;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    ApiKey(&'a str),
    Session(&'a str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    /// Two or more `Authorization` headers: refused outright (`400`).
    Duplicate,
    /// Present but not `Bearer <token>` (`401`, missing-bearer message).
    NotBearer,
}

/// `Ok(None)`: no `Authorization` header at all.
pub fn from_headers(headers: &HeaderMap) -> Result<Option<Credential<'_>>, CredentialError> {
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(CredentialError::Duplicate);
    }
    let value = value.to_str().map_err(|_| CredentialError::NotBearer)?;
    let (scheme, rest) = value.split_once(' ').ok_or(CredentialError::NotBearer)?;
    // The auth scheme is case-insensitive (RFC 9110 §11.1).
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(CredentialError::NotBearer);
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() {
        return Err(CredentialError::NotBearer);
    }
    Ok(Some(if token.starts_with(API_KEY_PREFIX) {
        Credential::ApiKey(token)
    } else {
        Credential::Session(token)
    }))
}

/// `rl_live_` + 43 URL-safe base64 characters that decode (canonically) to 32 bytes.
pub fn is_well_formed_api_key(token: &str) -> bool {
    let Some(body) = token.strip_prefix(API_KEY_PREFIX) else {
        return false;
    };
    body.len() == API_KEY_BODY_LEN
        && URL_SAFE_NO_PAD
            .decode(body)
            .is_ok_and(|bytes| bytes.len() == 32)
}

/// SHA-256 of the whole key, the only form in which a key is ever looked up or cached.
pub fn key_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(v).expect("ascii"),
            );
        }
        h
    }

    const KEY: &str = "rl_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn bearer_tokens_are_split_by_prefix() {
        let h = headers(&[&format!("Bearer {KEY}")]);
        assert_eq!(from_headers(&h), Ok(Some(Credential::ApiKey(KEY))));
        let h = headers(&["bearer  eyJabc.def.ghi "]);
        assert_eq!(
            from_headers(&h),
            Ok(Some(Credential::Session("eyJabc.def.ghi")))
        );
        assert_eq!(from_headers(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn anything_but_one_bearer_is_refused() {
        for v in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "Bearer    ",
            "Token abc",
            "Bearerabc",
        ] {
            assert_eq!(
                from_headers(&headers(&[v])),
                Err(CredentialError::NotBearer),
                "{v}"
            );
        }
        assert_eq!(
            from_headers(&headers(&["Bearer a", "Bearer b"])),
            Err(CredentialError::Duplicate)
        );
    }

    #[test]
    fn api_key_shape() {
        assert!(is_well_formed_api_key(KEY));
        assert!(is_well_formed_api_key(
            "rl_live_-_0123456789abcdefghijklmnopqrstuvwxyzABCDE"
        ));
        assert!(!is_well_formed_api_key("rl_live_"));
        assert!(!is_well_formed_api_key(&format!("{KEY}A")));
        assert!(!is_well_formed_api_key(&KEY[..KEY.len() - 1]));
        // '+' and '/' are standard base64, not URL-safe.
        assert!(!is_well_formed_api_key(
            "rl_live_+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        ));
        // Non-canonical trailing bits do not decode to the same 32 bytes.
        assert!(!is_well_formed_api_key(
            "rl_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB"
        ));
        assert!(!is_well_formed_api_key(
            "rl_test_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        ));
    }
}
