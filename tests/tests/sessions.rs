//! Clerk session tokens at the real gateway, against a fake Clerk.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::clerk::{self, FakeClerk, ISSUER, now, sign, sign_with, token, v1_claims};
use common::{Backend, Stack, StackOptions, assert_envelope, eventually, status_json};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

const BAD_SESSION: &str =
    r#"{"error":"unauthorized","message":"Invalid session token or no active organization."}"#;

async fn stack_with(clerk: &FakeClerk, extra: &[(&str, &str)]) -> Stack {
    let mut opts = StackOptions::new(Backend::Sqlite);
    opts.dev_bypass = false;
    opts.gateway_env = clerk.gateway_env();
    for (k, v) in extra {
        opts.gateway_env.push(((*k).to_owned(), (*v).to_owned()));
    }
    Stack::start_with(opts).await
}

async fn call(stack: &Stack, token: &str) -> (u16, Value) {
    status_json(
        stack
            .with_key(Method::GET, "/v1/payment-intents", token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn refused(stack: &Stack, token: &str, what: &str) {
    let r = stack
        .with_key(Method::GET, "/v1/payment-intents", token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!((status, body.as_str()), (401, BAD_SESSION), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_v1_and_v2_tokens_carry_their_identity() {
    let clerk = FakeClerk::start().await;
    let stack = stack_with(&clerk, &[]).await;
    let v1 = token(&v1_claims(
        "user_1",
        Some("org_acme"),
        "org:member",
        &["org:cases:action"],
    ));
    let (s, echo) = call(&stack, &v1).await;
    assert_eq!(s, 200, "{echo}");
    let h = &echo["headers"];
    assert_eq!(h["x-organization-id"], json!(["org_acme"]));
    assert_eq!(h["x-auth-type"], json!(["session"]));
    assert_eq!(h["x-user-id"], json!(["user_1"]));
    assert_eq!(h["x-session-id"], json!(["sess_2abc"]));
    assert_eq!(h["x-org-role"], json!(["org:member"]));
    assert_eq!(h["x-org-permissions"], json!(["org:cases:action"]));
    assert!(h.get("authorization").is_none());

    // v2, with the documented fpm example.
    let now = now();
    let v2 = token(&json!({
        "v": 2, "iss": ISSUER, "sub": "user_2", "sid": "sess_v2", "iat": now, "nbf": now, "exp": now + 60,
        "fea": "o:dashboard,o:teams",
        "o": {"id": "org_v2", "rol": "member", "slg": "acme", "per": "manage,read", "fpm": "3,2"}
    }));
    let (s, echo) = call(&stack, &v2).await;
    assert_eq!(s, 200, "{echo}");
    let h = &echo["headers"];
    assert_eq!(h["x-organization-id"], json!(["org_v2"]));
    assert_eq!(h["x-org-role"], json!(["org:member"]));
    assert_eq!(
        h["x-org-permissions"],
        json!(["org:dashboard:manage,org:dashboard:read,org:teams:read"])
    );
    // A client-sent organization never overrides the token's.
    let (_, echo) = status_json(
        stack
            .with_key(Method::GET, "/v1/x", &v1)
            .header("x-organization-id", "org_other")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(echo["headers"]["x-organization-id"], json!(["org_acme"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_refused_with_the_session_body() {
    let clerk = FakeClerk::start().await;
    let stack = stack_with(
        &clerk,
        &[(
            "CLERK_AUTHORIZED_PARTIES",
            "https://dashboard.example,https://other.example",
        )],
    )
    .await;
    let base = v1_claims("user_1", Some("org_acme"), "org:admin", &[]);
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = base.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let now = now();
    // Within the 5 s skew: accepted.
    for (what, claims) in [
        ("exp 3 s ago", with("exp", json!(now - 3))),
        ("nbf 3 s ahead", with("nbf", json!(now + 3))),
        (
            "other allowed azp",
            with("azp", json!("https://other.example")),
        ),
    ] {
        let (s, b) = call(&stack, &token(&claims)).await;
        assert_eq!(s, 200, "{what}: {b}");
    }
    let cases: Vec<(&str, String)> = vec![
        ("expired beyond skew", token(&with("exp", json!(now - 30)))),
        (
            "not yet valid beyond skew",
            token(&with("nbf", json!(now + 30))),
        ),
        (
            "issued in the future",
            token(&with("iat", json!(now + 120))),
        ),
        (
            "nbf of the wrong type",
            token(&with("nbf", json!(format!("{}", now + 9999)))),
        ),
        ("exp of the wrong type", token(&with("exp", json!("never")))),
        (
            "wrong issuer",
            token(&with("iss", json!("https://evil.example"))),
        ),
        ("no issuer", token(&without("iss"))),
        (
            "wrong azp",
            token(&with("azp", json!("https://evil.example"))),
        ),
        ("missing azp", token(&without("azp"))),
        ("missing sid", token(&without("sid"))),
        ("missing sub", token(&without("sub"))),
        ("missing exp", token(&without("exp"))),
        ("machine subject", token(&with("sub", json!("mch_123")))),
        (
            "signed by another key under our kid",
            sign("attacker", Some("kid_clerk_a"), &base),
        ),
        ("unknown kid", sign("attacker", Some("kid_attacker"), &base)),
        ("no kid", sign("clerk_a", None, &base)),
        ("garbage", "a.b.c".to_owned()),
        (
            "oversized",
            format!("{}.{}.x", "e".repeat(5000), "e".repeat(5000)),
        ),
    ];
    for (what, t) in &cases {
        refused(&stack, t, what).await;
    }
    // typ at+jwt (an OAuth access token), alg none, HS256 keyed with the public key.
    let mut at = Header::new(Algorithm::RS256);
    at.kid = Some("kid_clerk_a".into());
    at.typ = Some("at+jwt".into());
    refused(&stack, &sign_with("clerk_a", at, &base), "typ at+jwt").await;
    let payload = URL_SAFE_NO_PAD.encode(base.to_string());
    let none = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"kid_clerk_a"}"#)
    );
    refused(&stack, &none, "alg none").await;
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("kid_clerk_a".into());
    let public_pem = clerk::fixture("clerk_a.pub.pem");
    let hs_token =
        jsonwebtoken::encode(&hs, &base, &EncodingKey::from_secret(public_pem.as_bytes())).unwrap();
    refused(&stack, &hs_token, "HS256 with the public key as secret").await;
    // A template token (no sid) for the same user is still no session.
    let mut rs384 = Header::new(Algorithm::RS384);
    rs384.kid = Some("kid_clerk_a".into());
    refused(
        &stack,
        &sign_with("clerk_a", rs384, &base),
        "RS384 when only RS256 is allowed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_is_picked_up_after_one_refetch() {
    let clerk = FakeClerk::start().await;
    let stack = stack_with(&clerk, &[("CLERK_JWKS_MIN_REFETCH_INTERVAL_MS", "300")]).await;
    let claims = v1_claims("user_1", Some("org_acme"), "org:admin", &[]);
    assert_eq!(call(&stack, &token(&claims)).await.0, 200);
    // Clerk rotates: key B appears. The first token signed with it triggers one refetch.
    clerk.state.keys.lock().unwrap().push(clerk::jwk("clerk_b"));
    // Time has to pass here, nothing to observe: refetches are at most one per 300 ms.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let before = clerk.jwks_requests();
    let b_token = sign("clerk_b", Some("kid_clerk_b"), &claims);
    let (s, body) = call(&stack, &b_token).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(clerk.jwks_requests() - before, 1, "exactly one refetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_forged_kids_costs_at_most_one_fetch_per_interval() {
    let clerk = FakeClerk::start().await;
    let stack = stack_with(&clerk, &[("CLERK_JWKS_MIN_REFETCH_INTERVAL_MS", "60000")]).await;
    let claims = v1_claims("user_1", Some("org_acme"), "org:admin", &[]);
    // Warm: the start-up fetch has happened once a valid token verifies.
    assert_eq!(call(&stack, &token(&claims)).await.0, 200);
    let before = clerk.jwks_requests();
    let tokens: Vec<String> = (0..1000)
        .map(|i| sign("attacker", Some(&format!("forged_{i}")), &claims))
        .collect();
    let started = Instant::now();
    for chunk in tokens.chunks(50) {
        let results = futures::future::join_all(chunk.iter().map(|t| call(&stack, t))).await;
        for (s, b) in results {
            assert_eq!(s, 401, "{b}");
        }
    }
    let fetched = clerk.jwks_requests() - before;
    eprintln!(
        "1000 forged kids in {:?}: {fetched} JWKS fetch(es)",
        started.elapsed()
    );
    assert!(fetched <= 1, "{fetched} JWKS fetches for 1000 forged kids");
    // And valid traffic is unaffected.
    assert_eq!(call(&stack, &token(&claims)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_jwks_endpoint_does_not_break_a_warm_cache() {
    let clerk = FakeClerk::start().await;
    let stack = stack_with(
        &clerk,
        &[
            ("CLERK_JWKS_MIN_REFETCH_INTERVAL_MS", "100"),
            ("CLERK_JWKS_REFRESH_INTERVAL_MS", "200"),
        ],
    )
    .await;
    assert_eq!(
        call(
            &stack,
            &token(&v1_claims("user_1", Some("org_acme"), "r", &[]))
        )
        .await
        .0,
        200
    );
    let before = clerk.jwks_requests();
    clerk.state.jwks_down.store(true, Ordering::SeqCst);
    // Two background refreshes fail meanwhile.
    eventually(
        "two failed JWKS refreshes",
        Duration::from_secs(5),
        || async { clerk.jwks_requests() >= before + 2 },
    )
    .await;
    // A token never seen before (new user) still verifies against the cached key set.
    let fresh = token(&v1_claims("user_2", Some("org_acme"), "r", &[]));
    let (s, b) = call(&stack, &fresh).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_organization_membership_decides() {
    let clerk = FakeClerk::start().await;
    clerk.add_membership("user_m", "org_member", "org:member", &["org:cases:action"]);
    let stack = stack_with(&clerk, &[]).await;
    let t = token(&v1_claims("user_m", None, "", &[]));
    // No organization at all.
    refused(&stack, &t, "no organization").await;
    // A member organization: allowed, with the membership's role and permissions.
    for _ in 0..3 {
        let (s, echo) = status_json(
            stack
                .with_key(Method::GET, "/v1/x", &t)
                .header("x-organization-id", "org_member")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200, "{echo}");
        assert_eq!(echo["headers"]["x-organization-id"], json!(["org_member"]));
        assert_eq!(echo["headers"]["x-org-role"], json!(["org:member"]));
        assert_eq!(
            echo["headers"]["x-org-permissions"],
            json!(["org:cases:action"])
        );
    }
    assert_eq!(
        clerk.state.membership_requests.load(Ordering::SeqCst),
        1,
        "membership is cached"
    );
    // Not a member.
    let r = stack
        .with_key(Method::GET, "/v1/x", &t)
        .header("x-organization-id", "org_stranger")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.text().await.unwrap(), BAD_SESSION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_decide_the_protected_routes() {
    let clerk = FakeClerk::start().await;
    let stack = stack_with(&clerk, &[]).await;
    let member = token(&v1_claims("user_1", Some("org_acme"), "org:member", &[]));
    let manager = token(&v1_claims(
        "user_2",
        Some("org_acme"),
        "org:member",
        &["org:api_keys:manage"],
    ));
    let admin = token(&v1_claims("user_3", Some("org_acme"), "org:admin", &[]));
    let seed_spelling = token(&v1_claims(
        "user_4",
        Some("org_acme"),
        "org:member",
        &["api_keys_manage"],
    ));
    let cases = [
        (Method::GET, "/v1/api-keys", &member, 403),
        (Method::GET, "/v1/api-keys", &manager, 200),
        (Method::GET, "/v1/api-keys", &admin, 200),
        (Method::GET, "/v1/api-keys", &seed_spelling, 200),
        (Method::POST, "/v1/reconciliation-cases", &member, 403),
        (
            Method::DELETE,
            "/v1/reconciliation-cases/rc_1",
            &member,
            403,
        ),
        (Method::GET, "/v1/reconciliation-cases", &member, 200),
        (Method::POST, "/v1/reconciliation-cases", &admin, 200),
        (Method::GET, "/v1/outbound-webhook-endpoints", &member, 403),
        (Method::POST, "/v1/outbound-webhook-events", &admin, 200),
    ];
    for (m, path, t, want) in cases {
        let (s, b) = status_json(stack.with_key(m.clone(), path, t).send().await.unwrap()).await;
        assert_eq!(s, want, "{m} {path}: {b}");
        if want == 403 {
            assert_envelope(&b, "forbidden");
        }
    }
    // A session with the permission manages keys end to end.
    let (s, created) = status_json(
        stack
            .with_key(Method::POST, "/v1/api-keys", &manager)
            .json(&json!({"name": "from a session", "scopes": ["a"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{created}");
}
