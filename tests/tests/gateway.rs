//! The gateway as a client sees it: the seed's bodies to the byte, credentials, identity
//! headers, routing, path tricks, revocation, and upstream faults.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::any;
use common::{
    Backend, LocalServer, ORG, Stack, StackOptions, assert_envelope, eventually, raw_request,
    status_json,
};
use reqwest::Method;
use serde_json::{Value, json};

const MISSING: &str = r#"{"error":"unauthorized","message":"Missing bearer credential. Provide an API key or session token."}"#;
const BAD_KEY: &str =
    r#"{"error":"unauthorized","message":"Invalid, revoked, or expired API key."}"#;
const BAD_SESSION: &str =
    r#"{"error":"unauthorized","message":"Invalid session token or no active organization."}"#;
const SESSION_REQUIRED: &str =
    r#"{"error":"forbidden","message":"This action requires a signed-in dashboard session."}"#;
const UNKNOWN_KEY: &str = "rl_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

async fn text(r: reqwest::RequestBuilder) -> (u16, String, reqwest::header::HeaderMap) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.text().await.unwrap(), headers)
}

fn no_bypass(backend: Backend) -> StackOptions {
    StackOptions {
        dev_bypass: false,
        ..StackOptions::new(backend)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_bodies_to_the_byte() {
    let stack = Stack::start_with(no_bypass(Backend::Sqlite)).await;
    let c = &stack.client;
    let url = stack.url("/v1/payment-intents");
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (c.get(&url), 401, MISSING),
        (
            c.get(&url).header("authorization", "Basic dXNlcjpwYXNz"),
            401,
            MISSING,
        ),
        (c.get(&url).header("authorization", "Bearer"), 401, MISSING),
        (
            c.get(&url).header("authorization", "Bearer   "),
            401,
            MISSING,
        ),
        (
            c.get(&url).header("authorization", "Token rl_live_x"),
            401,
            MISSING,
        ),
        (c.get(&url).header("x-organization-id", ORG), 401, MISSING),
        (c.get(&url).bearer_auth("rl_live_short"), 401, BAD_KEY),
        (
            c.get(&url).bearer_auth(format!("{UNKNOWN_KEY}A")),
            401,
            BAD_KEY,
        ),
        (c.get(&url).bearer_auth(UNKNOWN_KEY), 401, BAD_KEY),
        (
            c.get(&url).bearer_auth("eyJhbGciOiJSUzI1NiJ9.e30.sig"),
            401,
            BAD_SESSION,
        ),
        (c.get(&url).bearer_auth("not-a-jwt"), 401, BAD_SESSION),
    ];
    for (i, (req, status, body)) in cases.into_iter().enumerate() {
        let (s, b, h) = text(req).await;
        assert_eq!((s, b.as_str()), (status, body), "case {i}");
        assert_eq!(h["content-type"], "application/json", "case {i}");
        assert!(h.contains_key("x-request-id"), "case {i}");
    }

    // A valid key on a key-management route: the seed's 403, for every method.
    let bypass = Stack::start(Backend::Sqlite).await;
    let key = bypass.create_key(ORG, "k").await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    for (m, path) in [
        (Method::GET, "/v1/api-keys"),
        (Method::POST, "/v1/api-keys"),
        (
            Method::GET,
            "/v1/api-keys/00000000-0000-7000-8000-000000000000",
        ),
        (
            Method::PATCH,
            "/v1/api-keys/00000000-0000-7000-8000-000000000000",
        ),
        (
            Method::DELETE,
            "/v1/api-keys/00000000-0000-7000-8000-000000000000",
        ),
        (Method::GET, "/V1/API-KEYS"),
    ] {
        let (s, b, _) = text(bypass.with_key(m.clone(), path, &key)).await;
        assert_eq!((s, b.as_str()), (403, SESSION_REQUIRED), "{m} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_request_carries_the_keys_identity_and_nothing_the_client_forged() {
    let stack = Stack::start(Backend::Sqlite).await;
    let created = stack.create_key("org_real", "k").await;
    let key = created["key"].as_str().unwrap();
    let (s, echo) = status_json(
        stack
            .with_key(Method::POST, "/v1/payment-intents?limit=5", key)
            .header("x-organization-id", "org_forged")
            .header("X-Organization-Id", "org_forged2")
            .header("x-user-id", "user_forged")
            .header("x-auth-type", "session")
            .header("x-api-key-id", "forged")
            .header("x-api-key-scopes", "admin")
            .header("x-org-role", "org:admin")
            .header("x-org-permissions", "org:api_keys:manage")
            .header("x-session-id", "sess_forged")
            .header("x-reconlayer-anything", "forged")
            .header("x-request-id", "req-from-client-1")
            .header("x-http-method-override", "DELETE")
            .header("x-original-url", "/v1/api-keys")
            .header("x-forwarded-for", "203.0.113.9")
            .header("forwarded", "for=203.0.113.9")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{echo}");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/v1/payment-intents");
    assert_eq!(echo["query"], "limit=5");
    let h = &echo["headers"];
    assert_eq!(h["x-organization-id"], json!(["org_real"]));
    assert_eq!(h["x-auth-type"], json!(["api_key"]));
    assert_eq!(h["x-api-key-id"], json!([created["id"]]));
    assert_eq!(
        h["x-api-key-scopes"],
        json!(["payment_intents:read,reconciliation_cases:read"])
    );
    assert_eq!(h["x-request-id"], json!(["req-from-client-1"]));
    assert_eq!(
        h["x-forwarded-for"],
        json!(["127.0.0.1"]),
        "the edge states the peer"
    );
    assert_eq!(h["x-forwarded-proto"], json!(["http"]));
    for absent in [
        "x-user-id",
        "x-session-id",
        "x-org-role",
        "x-org-permissions",
        "authorization",
        "x-reconlayer-anything",
        "x-http-method-override",
        "x-original-url",
        "forwarded",
    ] {
        assert!(
            h.get(absent).is_none(),
            "{absent} reached the upstream: {h}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_bypass_acts_for_the_named_organization_and_a_bearer_is_still_verified() {
    let stack = Stack::start(Backend::Sqlite).await;
    let (s, echo) = status_json(
        stack
            .as_dev(Method::GET, "/v1/anything", "org_dev")
            .header("x-user-id", "user_forged")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(echo["headers"]["x-organization-id"], json!(["org_dev"]));
    assert_eq!(echo["headers"]["x-auth-type"], json!(["session"]));
    assert_eq!(echo["headers"]["x-user-id"], json!(["user_dev"]));
    // With a credential, the bypass never applies: a bad key is a bad key.
    let (s, b, _) = text(
        stack
            .as_dev(Method::GET, "/v1/anything", "org_dev")
            .bearer_auth(UNKNOWN_KEY),
    )
    .await;
    assert_eq!((s, b.as_str()), (401, BAD_KEY));
    // Two organization headers, or a malformed one, identify nobody.
    let (s, _, _) = text(
        stack
            .client
            .get(stack.url("/v1/anything"))
            .header("x-organization-id", "org_a")
            .header("x-organization-id", "org_b"),
    )
    .await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_never_enables_the_bypass() {
    let stack = Stack::start_with(StackOptions {
        node_env: Some("production"),
        ..StackOptions::new(Backend::Sqlite)
    })
    .await;
    let (s, b, _) = text(stack.as_dev(Method::GET, "/v1/payment-intents", ORG)).await;
    assert_eq!((s, b.as_str()), (401, MISSING));
    let (s, b, _) = text(stack.as_dev(Method::GET, "/v1/api-keys", ORG)).await;
    assert_eq!((s, b.as_str()), (401, MISSING));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_routes_need_no_credential_and_get_no_identity() {
    let stack = Stack::start(Backend::Sqlite).await;
    let (s, echo) = status_json(
        stack
            .client
            .post(stack.url("/webhooks/stripe"))
            .header("x-organization-id", "org_forged")
            .header("x-auth-type", "api_key")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(echo["path"], "/webhooks/stripe");
    assert!(echo["headers"].get("x-organization-id").is_none(), "{echo}");
    assert!(echo["headers"].get("x-auth-type").is_none(), "{echo}");
    let (s, health) =
        status_json(stack.client.get(stack.url("/health")).send().await.unwrap()).await;
    assert_eq!(s, 200, "{health}");
    assert_eq!(health["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_outside_the_api_are_404_after_authentication() {
    let stack = Stack::start_with(no_bypass(Backend::Sqlite)).await;
    for path in [
        "/",
        "/v2/things",
        "/internal/v1/api-keys/lookup",
        "/internal/v1/key-changes",
        "/livez",
    ] {
        let (s, b, _) = text(stack.client.get(stack.url(path))).await;
        assert_eq!((s, b.as_str()), (401, MISSING), "{path}");
    }
    let dev = Stack::start(Backend::Sqlite).await;
    let key = dev.create_key(ORG, "k").await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        "/",
        "/v2/things",
        "/internal/v1/api-keys/lookup",
        "/internal/v1/key-changes",
    ] {
        let (s, b) =
            status_json(dev.with_key(Method::POST, path, &key).send().await.unwrap()).await;
        assert_eq!(s, 404, "{path}");
        assert_envelope(&b, "not_found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_are_refused_before_anything_is_proxied() {
    let stack = Stack::start(Backend::Sqlite).await;
    let key = stack.create_key(ORG, "k").await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let addr = stack.gateway_url.trim_start_matches("http://").to_owned();
    let tricks: &[&[u8]] = &[
        b"/webhooks/../v1/api-keys",
        b"/webhooks/%2e%2e/v1/api-keys",
        b"/webhooks/%2E%2E%2Fv1%2Fapi-keys",
        b"/webhooks/..%2fv1/api-keys",
        b"/health/../v1/api-keys",
        b"/v1/./api-keys",
        b"//v1/api-keys",
        b"/v1//api-keys",
        b"/webhooks\\..\\v1\\api-keys",
        b"/v1/api-keys;/../x",
        b"/v1/api-keys%00",
        b"/v1/%252e%252e/api-keys",
        b"/v1/%c0%ae%c0%ae/api-keys",
        b"http://evil.example/v1/api-keys",
        b"v1/api-keys",
        b"*",
    ];
    for t in tricks {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(t);
        req.extend_from_slice(
            format!("{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n", "").as_bytes(),
        );
        let (s, body) = raw_request(&addr, &req).await;
        assert_eq!(s, 400, "{}: {body}", String::from_utf8_lossy(t));
        if !body.is_empty() {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if !v.is_null() {
                assert_envelope(&v, "invalid_request");
            }
        }
    }
    // An encoded unreserved character is decoded, so the route decided is the route
    // proxied: /v1/api%2Dkeys is the key-management route, refused for an API key.
    let (s, body) = raw_request(
        &addr,
        format!("GET /v1/api%2Dkeys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!((s, body.as_str()), (403, SESSION_REQUIRED));
    // And the canonical form is what the upstream receives.
    let (s, body) = raw_request(
        &addr,
        format!("GET /v1/pay%6dent-intents?x=%2e HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["path"], "/v1/payment-intents");
    assert_eq!(echo["query"], "x=%2e");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_headers_are_refused() {
    let stack = Stack::start(Backend::Sqlite).await;
    let key = stack.create_key(ORG, "k").await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let addr = stack.gateway_url.trim_start_matches("http://").to_owned();
    let two_auth = format!(
        "GET /v1/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nAuthorization: Bearer {UNKNOWN_KEY}\r\nConnection: close\r\n\r\n"
    );
    let (s, body) = raw_request(&addr, two_auth.as_bytes()).await;
    assert_eq!(s, 400, "{body}");
    assert_envelope(&serde_json::from_str(&body).unwrap(), "invalid_request");
    // CL.TE smuggling: the chunked framing wins, the connection closes after one
    // response, and the smuggled request behind it is never processed.
    let smuggled = "GET /v1/api-keys HTTP/1.1\r\nHost: x\r\nx-organization-id: org_x\r\n\r\n";
    let smuggle = format!(
        "POST /v1/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        5 + smuggled.len()
    );
    let all = read_to_close(&addr, smuggle.as_bytes()).await;
    assert_eq!(all.matches("HTTP/1.1 ").count(), 1, "{all}");
    assert!(!all.contains("api-keys"), "{all}");
}

async fn read_to_close(addr: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_within_a_second_of_the_revoke_returning() {
    let stack = Stack::start(Backend::Sqlite).await;
    let created = stack.create_key(ORG, "to-revoke").await;
    let key = created["key"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    // Warm the gateway's cache so the refusal cannot come from a cache miss.
    for _ in 0..3 {
        let r = stack
            .with_key(Method::GET, "/v1/payment-intents", key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = stack
        .as_dev(Method::DELETE, &format!("/v1/api-keys/{id}"), ORG)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let revoked_at = Instant::now();
    let b = eventually(
        "the revoked key refused",
        Duration::from_secs(1),
        || async {
            let (s, b, _) = text(stack.with_key(Method::GET, "/v1/payment-intents", key)).await;
            (s == 401).then_some(b)
        },
    )
    .await;
    assert_eq!(b, BAD_KEY);
    eprintln!("revocation observed after {:?}", revoked_at.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_service_down_means_503_for_unknown_keys_and_cached_keys_keep_working() {
    let mut stack = Stack::start(Backend::Sqlite).await;
    let cached = stack.create_key(ORG, "cached").await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let uncached = stack.create_key(ORG, "uncached").await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        stack
            .with_key(Method::GET, "/v1/x", &cached)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    stack.keys.kill();
    let (s, b) = status_json(
        stack
            .with_key(Method::GET, "/v1/x", &uncached)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 503, "{b}");
    assert_envelope(&b, "service_unavailable");
    assert_eq!(
        stack
            .with_key(Method::GET, "/v1/x", &cached)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Recovery: keys-service back, the uncached key verifies.
    stack.keys.start();
    eventually(
        "the uncached key verifying again",
        Duration::from_secs(10),
        || async {
            let s = stack
                .with_key(Method::GET, "/v1/x", &uncached)
                .send()
                .await
                .unwrap()
                .status();
            assert!(
                s == 200 || s == 503,
                "{s}: never 401 while keys-service is starting"
            );
            s == 200
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_or_slow_is_502_or_504_in_bounded_time() {
    let slow = LocalServer::start(Router::new().fallback(any(|| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        "late"
    })))
    .await;
    let mut opts = StackOptions::new(Backend::Sqlite);
    opts.upstream_url = Some(slow.url());
    opts.gateway_env
        .push(("GATEWAY_UPSTREAM_READ_TIMEOUT_MS".into(), "500".into()));
    let stack = Stack::start_with(opts).await;
    let started = Instant::now();
    let (s, b) = status_json(
        stack
            .as_dev(Method::GET, "/v1/x", ORG)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 504, "{b}");
    assert_envelope(&b, "gateway_timeout");
    assert!(started.elapsed() < Duration::from_secs(3));

    let mut down = StackOptions::new(Backend::Sqlite);
    down.upstream_url = Some(format!("http://127.0.0.1:{}", common::free_port()));
    let stack = Stack::start_with(down).await;
    let (s, b) = status_json(
        stack
            .as_dev(Method::GET, "/v1/x", ORG)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 502, "{b}");
    assert_envelope(&b, "bad_gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_used_at_is_reported_in_batches() {
    let mut opts = StackOptions::new(Backend::Sqlite);
    opts.gateway_env
        .push(("GATEWAY_USAGE_FLUSH_INTERVAL_MS".into(), "200".into()));
    let stack = Stack::start_with(opts).await;
    let created = stack.create_key(ORG, "used").await;
    let id = created["id"].as_str().unwrap();
    for _ in 0..5 {
        stack
            .with_key(Method::GET, "/v1/x", created["key"].as_str().unwrap())
            .send()
            .await
            .unwrap();
    }
    eventually("lastUsedAt reported", Duration::from_secs(5), || async {
        let (_, got) = status_json(
            stack
                .as_dev(Method::GET, &format!("/v1/api-keys/{id}"), ORG)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if got["lastUsedAt"].is_string() {
            Ok(())
        } else {
            Err(got.to_string())
        }
    })
    .await;
}
