//! Invariant: no token an attacker can write verifies — the verifier trusts one RSA public
//! key (the test fixture's) whose private half the fuzzer does not have; every input is
//! refused with a reason, never accepted, never a panic.
#![no_main]
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gateway::jwks::{Jwks, KeySource, VerifyingKey};
use gateway::session::{SessionSettings, SessionVerifier};
use libfuzzer_sys::fuzz_target;

struct Harness {
    rt: tokio::runtime::Runtime,
    verifier: SessionVerifier,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let pem = include_bytes!("../../tests/fixtures/clerk_a.pub.pem");
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(pem).expect("fixture key");
        let metrics = Arc::new(gateway::metrics::Metrics::new());
        let jwks = Arc::new(Jwks::new(
            KeySource::Pem(VerifyingKey { key: Arc::new(key), alg: None }),
            Duration::from_secs(1),
            Duration::from_secs(30),
            metrics.clone(),
        )
        .expect("http client"));
        let verifier = SessionVerifier::new(
            SessionSettings {
                algorithms: vec![jsonwebtoken::Algorithm::RS256],
                clock_skew: Duration::from_secs(5),
                issuer: None,
                authorized_parties: vec![],
                max_token_bytes: 8192,
                cache_capacity: 16,
            },
            jwks,
            metrics,
        );
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        Harness { rt, verifier }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let h = harness();
    let outcome = h.rt.block_on(h.verifier.verify_uncached(token, 1_900_000_000));
    assert!(outcome.is_err(), "a forged token verified: {token:?}");
});
