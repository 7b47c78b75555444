//! Invariants: a policy file either parses into rules whose paths start with `/`, or is
//! refused with a message; a parsed policy can never open key management to an API key.
#![no_main]
use std::sync::Arc;

use gateway::api_key::VerifiedKey;
use gateway::auth::authorize;
use gateway::caller::Caller;
use gateway::policy::Policy;
use gateway::routes::Route;
use http::Method;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::from_json(text) else {
        return;
    };
    let key = Caller::ApiKey(Arc::new(VerifiedKey {
        id: "k".into(),
        organization_id: "o".into(),
        scopes_header: "".into(),
        expires_at: None,
        revoked_at: None,
    }));
    for m in [Method::GET, Method::POST, Method::DELETE] {
        assert!(authorize(&policy, Route::ApiKeys, &m, "/v1/api-keys", &key).is_err());
        for path in ["/v1/x", "/v1/api-keys/1", "/", "/v1/reconciliation-cases.json"] {
            for rule in policy.matching(&m, path) {
                assert!(rule.path.starts_with('/'));
            }
        }
    }
});
