//! Microbenchmarks of the gateway's per-request work (no network):
//!
//! - `api_key/pre_lookup`: Authorization parsing, the key's shape check and its SHA-256 —
//!   all a cache miss costs before the network;
//! - `api_key/cache_hit`: a full `verify` answered by the in-process cache;
//! - `session/cold` and `session/warm`: RS256 verification of a Clerk session token, and the
//!   same token from the verified-token cache;
//! - `identity/strip_inject`: removing client identity headers and injecting ours;
//! - `route/decide`: path canonicalization, route class and policy matching.
//!
//! `cargo bench -p gateway` (release profile). Compare runs, never assert on wall time.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::api_key::{ApiKeyVerifier, CacheSettings, VerifiedKey};
use gateway::caller::{Caller, SessionUser};
use gateway::jwks::{Jwks, KeySource, VerifyingKey};
use gateway::keys_client::KeysClient;
use gateway::metrics::Metrics;
use gateway::policy::Policy;
use gateway::session::{SessionSettings, SessionVerifier};
use gateway::{credential, identity, path, routes};
use http::{HeaderMap, HeaderValue, Method};
use pingora::http::RequestHeader;

const KEY: &str = "rl_live_0123456789abcdefghijklmnopqrstuvwxyzABCDEFA";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn verifier() -> ApiKeyVerifier {
    ApiKeyVerifier::new(
        KeysClient::new("127.0.0.1:9".into(), Duration::from_secs(1), None),
        &CacheSettings {
            capacity: 1_000_000,
            lookup_rate: 1000,
            lookup_rate_per_client: 1000,
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(10),
            unsynced_ttl: Duration::from_secs(3600),
            lookup_concurrency: 64,
            lookup_timeout: Duration::from_secs(1),
        },
        Arc::new(Metrics::new()),
        None,
    )
}

fn api_key(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap(),
    );
    c.bench_function("api_key/pre_lookup", |b| {
        b.iter(|| {
            let Ok(Some(credential::Credential::ApiKey(t))) = credential::from_headers(&headers)
            else {
                unreachable!()
            };
            assert!(credential::is_well_formed_api_key(t));
            std::hint::black_box(credential::key_hash(t))
        });
    });

    let rt = runtime();
    let v = verifier();
    rt.block_on(v.prefill(
        credential::key_hash(KEY),
        VerifiedKey {
            id: "0195d6b2-c0a8-7e1f-9a3b-2c4d5e6f7a8b".into(),
            organization_id: "org_bench".into(),
            scopes_header: "payment_intents:read".into(),
            expires_at: None,
            revoked_at: None,
        },
    ));
    // The verifier runs on the gateway's runtime; keep it (and its feed state) "synced".
    v.set_feed_synced(true);
    c.bench_function("api_key/cache_hit", |b| {
        b.to_async(&rt).iter(|| async {
            let out = v.verify(KEY, 1_700_000_000_000, None, None).await;
            assert!(matches!(out, gateway::api_key::Outcome::Valid(_)));
        });
    });
}

fn session(c: &mut Criterion) {
    let rt = runtime();
    let pem = include_str!("../../tests/fixtures/clerk_a.pub.pem");
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let jwks = Arc::new(
        Jwks::new(
            KeySource::Pem(VerifyingKey {
                key: Arc::new(key),
                alg: None,
            }),
            Duration::from_secs(1),
            Duration::from_secs(30),
            Arc::new(Metrics::new()),
        )
        .unwrap(),
    );
    let verifier = SessionVerifier::new(
        SessionSettings {
            algorithms: vec![jsonwebtoken::Algorithm::RS256],
            clock_skew: Duration::from_secs(5),
            issuer: Some("https://clerk.bench.example".into()),
            authorized_parties: vec![],
            max_token_bytes: 8192,
            cache_capacity: 10_000,
        },
        jwks,
        Arc::new(Metrics::new()),
    );
    // jsonwebtoken checks exp/nbf against the real clock: the token must be valid now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({
        "iss": "https://clerk.bench.example", "sub": "user_bench", "sid": "sess_bench",
        "iat": now, "nbf": now, "exp": now + 3600, "org_id": "org_bench", "org_role": "org:admin"
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("kid_clerk_a".into());
    let private = include_str!("../../tests/fixtures/clerk_a.key.pem");
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
    )
    .unwrap();
    c.bench_function("session/cold", |b| {
        b.to_async(&rt).iter(|| async {
            assert!(verifier.verify_uncached(&token, now).await.is_ok());
        });
    });
    c.bench_function("session/warm", |b| {
        b.to_async(&rt).iter(|| async {
            assert!(verifier.verify(&token, now).await.is_ok());
        });
    });
}

fn headers(c: &mut Criterion) {
    let mut template = RequestHeader::build("GET", b"/v1/payment-intents?limit=10", None).unwrap();
    for (k, v) in [
        ("host", "api.example"),
        ("accept", "application/json"),
        ("user-agent", "bench"),
        ("authorization", "Bearer x"),
        ("x-organization-id", "org_forged"),
        ("x-reconlayer-identity-signature", "v1=forged"),
    ] {
        template.append_header(k, v).unwrap();
    }
    let caller = Caller::Session(Arc::new(SessionUser {
        organization_id: "org_bench".into(),
        user_id: "user_bench".into(),
        session_id: Some("sess_bench".into()),
        role: Some("org:admin".into()),
        permissions: vec!["org:api_keys:manage".into()],
    }));
    c.bench_function("identity/strip_inject", |b| {
        b.iter(|| {
            let mut req = template.clone();
            identity::strip(&mut req);
            identity::inject(&mut req, &caller).unwrap();
            std::hint::black_box(req)
        });
    });
}

fn route(c: &mut Criterion) {
    let policy = Policy::default();
    let caller = Caller::Session(Arc::new(SessionUser {
        organization_id: "org".into(),
        user_id: "user".into(),
        session_id: None,
        role: None,
        permissions: vec!["org:cases:action".into()],
    }));
    c.bench_function("route/decide", |b| {
        b.iter(|| {
            let t =
                path::canonicalize(b"/v1/reconciliation-cases/rc_123/close?force=true").unwrap();
            let r = routes::classify(&t.path);
            std::hint::black_box(r);
            policy.check(&Method::POST, &t.path, &caller).unwrap();
        });
    });
}

criterion_group!(benches, api_key, session, headers, route);
criterion_main!(benches);
