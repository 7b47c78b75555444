//! Invariants: whatever the target and method, key management is never open to an API key;
//! a route the policy protects for a method is protected for the same path in any ASCII case
//! and with any format suffix; HEAD is held to GET's rules.
#![no_main]
use std::sync::Arc;

use gateway::api_key::VerifiedKey;
use gateway::auth::authorize;
use gateway::caller::{Caller, SessionUser};
use gateway::path::canonicalize;
use gateway::policy::Policy;
use gateway::routes::{Route, classify};
use http::Method;
use libfuzzer_sys::fuzz_target;

fn key() -> Caller {
    Caller::ApiKey(Arc::new(VerifiedKey {
        id: "k".into(),
        organization_id: "org".into(),
        scopes_header: "payment_intents:write".into(),
        expires_at: None,
        revoked_at: None,
    }))
}

fn member() -> Caller {
    Caller::Session(Arc::new(SessionUser {
        organization_id: "org".into(),
        user_id: "user".into(),
        session_id: None,
        role: Some("org:member".into()),
        permissions: vec![],
    }))
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, raw)) = data.split_first() else {
        return;
    };
    let method = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ][usize::from(m) % 7]
        .clone();
    let Ok(t) = canonicalize(raw) else {
        return;
    };
    let policy = Policy::default();
    let route = classify(&t.path);
    let key = key();
    let member = member();
    let key_result = authorize(&policy, route, &method, &t.path, &key);
    let member_result = authorize(&policy, route, &method, &t.path, &member);
    if route == Route::ApiKeys {
        assert!(key_result.is_err(), "API key reached key management: {:?}", t.path);
        assert!(member_result.is_err(), "member without api_keys_manage: {:?}", t.path);
    }
    let upper = t.path.to_ascii_uppercase();
    assert_eq!(classify(&upper), route, "case changed the route of {:?}", t.path);
    assert_eq!(
        authorize(&policy, classify(&upper), &method, &upper, &member).is_ok(),
        member_result.is_ok(),
        "case changed the decision for {:?}",
        t.path
    );
    let suffixed = format!("{}.json", t.path.trim_end_matches('/'));
    if member_result.is_err() && classify(&suffixed) == route && route != Route::Unknown {
        assert!(
            authorize(&policy, route, &method, &suffixed, &member).is_err(),
            "a format suffix escaped the policy: {suffixed:?}"
        );
    }
    if method == Method::GET {
        assert_eq!(
            authorize(&policy, route, &Method::HEAD, &t.path, &member).is_ok(),
            member_result.is_ok(),
            "HEAD and GET disagree on {:?}",
            t.path
        );
    }
});
