//! Invariants: one Authorization header yields at most one credential; an API-key credential
//! starts with `rl_live_`; a well-formed key is exactly 51 characters whose body decodes to
//! 32 bytes; anything else is a session candidate, never an API key.
#![no_main]
use gateway::credential::{Credential, CredentialError, from_headers, is_well_formed_api_key, key_hash};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (first, second) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let mut headers = HeaderMap::new();
    let Ok(v) = HeaderValue::from_bytes(first) else {
        return;
    };
    headers.append(http::header::AUTHORIZATION, v);
    if let Some(s) = second
        && let Ok(v) = HeaderValue::from_bytes(s)
    {
        headers.append(http::header::AUTHORIZATION, v);
    }
    match from_headers(&headers) {
        Err(CredentialError::Duplicate) => assert!(second.is_some()),
        Err(_) | Ok(None) => {}
        Ok(Some(Credential::ApiKey(token))) => {
            assert!(second.is_none() || headers.get_all(http::header::AUTHORIZATION).iter().count() == 1);
            assert!(token.starts_with("rl_live_"));
            if is_well_formed_api_key(token) {
                assert_eq!(token.len(), 51);
            }
            let _ = key_hash(token);
        }
        Ok(Some(Credential::Session(token))) => {
            assert!(!token.starts_with("rl_live_"));
            assert!(!token.is_empty());
        }
    }
});
