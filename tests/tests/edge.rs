//! Edge hardening, black-box over the real binaries with raw sockets: what reaches the
//! upstream is recorded byte for byte by a raw TCP upstream, so "neutralized" means "never
//! arrived", not "an HTTP client normalized it away".
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Backend, ORG, Stack, StackOptions, raw_request};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw upstream: records every request head it receives, answers `200 ok`.
struct Recorder {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let h = heads.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(conn, h.clone()));
            }
        });
        Self { url, heads, task }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn serve(mut conn: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let end = loop {
            if let Some(e) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break e + 4;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let lower = head.to_ascii_lowercase();
        let len = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let chunked = lower.contains("transfer-encoding: chunked");
        heads.lock().unwrap().push(head);
        loop {
            let done = if chunked {
                buf.windows(5).any(|w| w == b"0\r\n\r\n")
            } else {
                buf.len() >= len
            };
            if done {
                break;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.clear();
        if conn
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn stack_with(recorder: &Recorder, gateway_env: &[(&str, &str)]) -> Stack {
    Stack::start_with(StackOptions {
        upstream_url: Some(recorder.url.clone()),
        gateway_env: gateway_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..StackOptions::new(Backend::Sqlite)
    })
    .await
}

fn addr(stack: &Stack) -> String {
    stack.url("").trim_start_matches("http://").to_owned()
}

fn envelope(body: &str, error: &str) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    assert_eq!(v["error"], error, "{body}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Every spelling of every header the edge owns: none reaches the upstream; the edge's own
/// forwarding headers arrive once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_identity_and_override_headers_never_reach_the_upstream() {
    let rec = Recorder::start().await;
    let stack = stack_with(&rec, &[]).await;
    let spoofed = [
        "X-Forwarded-For: 6.6.6.6",
        "X-Forwarded-Host: evil.example",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Port: 443",
        "X-Forwarded-Prefix: /admin",
        "X-Forwarded-Uri: /v1/api-keys",
        "X-Forwarded-Path: /v1/api-keys",
        "X-Forwarded-Scheme: https",
        "X-Forwarded-Ssl: on",
        "X-Forwarded-Server: evil",
        "X-Forwarded-User: admin",
        "X-Forwarded-Email: admin@example.com",
        "X-Forwarded-Preferred-Username: admin",
        "X-Forwarded-Groups: admins",
        "X-Forwarded-Access-Token: t",
        "Forwarded: for=6.6.6.6;proto=https",
        "X-Real-IP: 6.6.6.6",
        "X-Client-IP: 6.6.6.6",
        "True-Client-IP: 6.6.6.6",
        "CF-Connecting-IP: 6.6.6.6",
        "X-Cluster-Client-IP: 6.6.6.6",
        "Fastly-Client-IP: 6.6.6.6",
        "X-Original-URL: /v1/api-keys",
        "X-Original-URI: /v1/api-keys",
        "X-Original-Method: DELETE",
        "X-Rewrite-URL: /v1/api-keys",
        "X-HTTP-Method-Override: DELETE",
        "X-HTTP-Method: DELETE",
        "X-Method-Override: DELETE",
        "X-Envoy-Original-Path: /v1/api-keys",
        "X-Auth-Request-User: admin",
        "X-Auth-Request-Email: admin@example.com",
        "Remote-User: admin",
        "X-Remote-User: admin",
        "X-Authenticated-User: admin",
        "X-Api-Key-Id: forged",
        "X-Reconlayer-Identity-Signature: forged",
    ];
    let request = format!(
        "GET /v1/payment-intents HTTP/1.1\r\nHost: x\r\nx-organization-id: {ORG}\r\n{}\r\n\r\n",
        spoofed.join("\r\n")
    );
    let (status, body) = raw_request(&addr(&stack), request.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let heads = rec.heads();
    assert_eq!(heads.len(), 1);
    let head = heads[0].to_ascii_lowercase();
    for h in spoofed {
        let name = h.split_once(": ").unwrap().0.to_ascii_lowercase();
        if [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-reconlayer-identity-signature",
        ]
        .contains(&name.as_str())
        {
            continue; // the edge sets its own: values checked below
        }
        assert!(
            !head.contains(&format!("\n{name}:")),
            "{h} reached the upstream:\n{head}"
        );
    }
    assert!(
        !head.contains("6.6.6.6") && !head.contains("https"),
        "{head}"
    );
    assert_eq!(
        head.matches("x-forwarded-for: 127.0.0.1\r\n").count(),
        1,
        "{head}"
    );
    assert_eq!(
        head.matches("x-forwarded-proto: http\r\n").count(),
        1,
        "{head}"
    );
    assert_eq!(
        head.matches(&format!("x-organization-id: {}", ORG.to_ascii_lowercase()))
            .count(),
        1
    );
}

/// Underscore (and mixed) spellings are refused before anything is decided, unless the
/// deployment allow-lists a name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_with_underscores_are_refused_unless_allowed() {
    let rec = Recorder::start().await;
    let stack = stack_with(
        &rec,
        &[("GATEWAY_UNDERSCORE_HEADERS_ALLOW", "x_partner_ref")],
    )
    .await;
    for name in [
        "x_forwarded_for",
        "X_Forwarded-Host",
        "x-real_ip",
        "x_organization_id",
        "X_HTTP_METHOD_OVERRIDE",
        "x_original_url",
        "authorization_",
    ] {
        let request = format!(
            "GET /v1/payment-intents HTTP/1.1\r\nHost: x\r\nx-organization-id: {ORG}\r\n{name}: 1\r\n\r\n"
        );
        let (status, body) = raw_request(&addr(&stack), request.as_bytes()).await;
        assert_eq!(status, 400, "{name}: {body}");
        envelope(&body, "invalid_request");
    }
    let request = format!(
        "GET /v1/payment-intents HTTP/1.1\r\nHost: x\r\nx-organization-id: {ORG}\r\nX_Partner_Ref: 7\r\n\r\n"
    );
    let (status, _) = raw_request(&addr(&stack), request.as_bytes()).await;
    assert_eq!(status, 200);
    let heads = rec.heads();
    assert_eq!(heads.len(), 1, "only the allow-listed request was proxied");
    assert!(heads[0].to_ascii_lowercase().contains("x_partner_ref: 7"));
}

/// Non-ASCII lookalikes are refused; format suffixes and parameters of a protected segment
/// are covered by its rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_an_upstream_would_fold_cannot_escape_the_policy() {
    let rec = Recorder::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"rules":[
            {"path":"/v1/api-keys","sessionOnly":true,"permission":"api_keys_manage"},
            {"path":"/v1/reconciliation-cases","methods":["POST","PUT","PATCH","DELETE"],"permission":"cases_action","scope":"cases:write"}
        ]}"#,
    )
    .unwrap();
    let stack = stack_with(
        &rec,
        &[("GATEWAY_ROUTE_POLICY_FILE", policy.to_str().unwrap())],
    )
    .await;
    let created = stack.create_key(ORG, "edge").await;
    let key = created["key"].as_str().unwrap();
    let a = addr(&stack);
    let with_key = |method: &str, path: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\ncontent-length: 0\r\n\r\n"
        )
    };
    for path in [
        "/v1/reconciliation-cases.json",
        "/v1/reconciliation-cases.json/",
        "/v1/Reconciliation-Cases.xml",
        "/v1/reconciliation-cases:close",
        "/v1/reconciliation-cases~",
        "/v1/reconciliation-cases/1.json",
    ] {
        let (status, body) = raw_request(&a, with_key("POST", path).as_bytes()).await;
        assert_eq!(status, 403, "{path}: {body}");
        envelope(&body, "forbidden");
    }
    for path in [
        "/v1/api-keys.json",
        "/v1/API-KEYS.json",
        "/v1/api-keys:list",
    ] {
        let (status, body) = raw_request(&a, with_key("GET", path).as_bytes()).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    for path in [
        "/v1/reconciliation-ca%C5%BFes",
        "/v1/api-%E2%84%AAeys",
        "/webhooks/x%EF%BC%8F..%EF%BC%8Fv1%EF%BC%8Fapi-keys",
        "/webhooks/%EF%BC%8E%EF%BC%8E/v1/payment-intents",
        "/webhooks/%E2%80%A4%E2%80%A4/v1/payment-intents",
        "/webhooks/%C0%AE%C0%AE/v1/payment-intents",
        // Segments IIS trims, or a framework reads as dot segments.
        "/v1/reconciliation-cases%20",
        "/v1/reconciliation-cases.",
        "/v1./reconciliation-cases",
        "/webhooks/..:x/v1/payment-intents",
        "/webhooks/.~/v1/payment-intents",
    ] {
        for method in ["GET", "POST"] {
            let (status, body) = raw_request(&a, with_key(method, path).as_bytes()).await;
            assert_eq!(status, 400, "{path}: {body}");
            envelope(&body, "invalid_request");
        }
    }
    assert!(rec.heads().is_empty(), "{:?}", rec.heads());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_outside_the_allow_list_are_405_and_never_proxied() {
    let rec = Recorder::start().await;
    let stack = stack_with(&rec, &[]).await;
    for method in ["TRACE", "TRACK", "CONNECT", "PROPFIND", "DEBUG", "get"] {
        let target = if method == "CONNECT" {
            "x:443"
        } else {
            "/v1/payment-intents"
        };
        let request =
            format!("{method} {target} HTTP/1.1\r\nHost: x\r\nx-organization-id: {ORG}\r\n\r\n");
        let (status, body) = raw_request(&addr(&stack), request.as_bytes()).await;
        assert_eq!(status, 405, "{method}: {body}");
        envelope(&body, "method_not_allowed");
    }
    // (HEAD is answered without a body, which `raw_request` would wait for: reqwest below.)
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let request = format!(
            "{method} /v1/payment-intents HTTP/1.1\r\nHost: x\r\nx-organization-id: {ORG}\r\ncontent-length: 0\r\n\r\n"
        );
        let (status, _) = raw_request(&addr(&stack), request.as_bytes()).await;
        assert_eq!(status, 200, "{method}");
    }
    let head = stack
        .as_dev(reqwest::Method::HEAD, "/v1/payment-intents", ORG)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(rec.heads().len(), 7);
    assert!(
        rec.heads()
            .iter()
            .all(|h| !h.starts_with("TRACE") && !h.starts_with("TRACK"))
    );
}

/// HTTP/1.1 without Host, and heads pingora cannot parse, get the envelope — never a
/// dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_get_the_envelope() {
    let rec = Recorder::start().await;
    let stack = stack_with(&rec, &[]).await;
    let a = addr(&stack);
    let cases: Vec<Vec<u8>> = vec![
        b"GET /v1/payment-intents HTTP/1.1\r\nx-organization-id: org_test\r\n\r\n".to_vec(),
        b"GET /v1/payment-intents HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
        b"GET /v1/payment-intents HTTP/1.1\r\nHost: a\r\nbad header\r\n\r\n".to_vec(),
        b"GET /v1/payment-intents HTTP/1.1\r\nHost: a\r\nx-a\x01b: 1\r\n\r\n".to_vec(),
        b"GET /v1/payment-intents HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n".to_vec(),
        b"GET /v1/payment-intents HTTP/7.1\r\nHost: a\r\n\r\n".to_vec(),
        b"GET /v1/payment-intents HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
        b"GET /v1/payment-intents HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n".to_vec(),
        b"POST /v1/payment-intents HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        b"POST /v1/payment-intents HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
        b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        b"GET  /v1/payment-intents HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
    ];
    for request in cases {
        let (status, body) = raw_request(&a, &request).await;
        assert_eq!(status, 400, "{}: {body}", String::from_utf8_lossy(&request));
        envelope(&body, "invalid_request");
    }
    assert!(rec.heads().is_empty(), "{:?}", rec.heads());
}

/// Oversized header blocks and too many fields: `431` in the envelope, nothing proxied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_blocks_are_431() {
    let rec = Recorder::start().await;
    let stack = stack_with(&rec, &[]).await;
    let a = addr(&stack);
    let big = format!(
        "GET /v1/payment-intents HTTP/1.1\r\nHost: x\r\nx-organization-id: {ORG}\r\nx-big: {}\r\n\r\n",
        "a".repeat(300 * 1024)
    );
    let (status, body) = raw_request(&a, big.as_bytes()).await;
    assert_eq!(status, 431, "{body}");
    envelope(&body, "request_header_fields_too_large");
    let just_over = format!(
        "GET /v1/payment-intents HTTP/1.1\r\nHost: x\r\nx-organization-id: {ORG}\r\nx-big: {}\r\n\r\n",
        "a".repeat(33 * 1024)
    );
    let (status, _) = raw_request(&a, just_over.as_bytes()).await;
    assert_eq!(status, 431);
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let request = format!(
        "GET /v1/payment-intents HTTP/1.1\r\nHost: x\r\nx-organization-id: {ORG}\r\n{many}\r\n"
    );
    let (status, body) = raw_request(&a, request.as_bytes()).await;
    assert_eq!(status, 431, "{body}");
    let fits = format!(
        "GET /v1/payment-intents HTTP/1.1\r\nHost: x\r\nx-organization-id: {ORG}\r\nx-big: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let (status, _) = raw_request(&a, fits.as_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(rec.heads().len(), 1);
}

/// A head trickled one byte at a time, or never sent, is cut at the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_idle_connections_are_closed_at_the_deadline() {
    let rec = Recorder::start().await;
    let stack = stack_with(&rec, &[("GATEWAY_REQUEST_HEADER_TIMEOUT_MS", "1500")]).await;
    let a = addr(&stack);

    let started = Instant::now();
    let mut s = TcpStream::connect(&a).await.unwrap();
    let head = format!(
        "GET /v1/payment-intents HTTP/1.1\r\nHost: x\r\nx-organization-id: {ORG}\r\nx-slow: "
    );
    let mut answer = Vec::new();
    let trickle = async {
        for b in head.bytes().chain(std::iter::repeat(b'a')) {
            if s.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if started.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(12), trickle)
        .await
        .ok();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut answer)).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(8),
        "held open for {elapsed:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");

    // A connection that sends nothing is closed too.
    let started = Instant::now();
    let mut idle = TcpStream::connect(&a).await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(6), idle.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "an idle connection stayed open");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A normal request on a fresh connection is unaffected.
    let request =
        format!("GET /v1/payment-intents HTTP/1.1\r\nHost: x\r\nx-organization-id: {ORG}\r\n\r\n");
    let (status, _) = raw_request(&a, request.as_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(rec.heads().len(), 1);
}

/// `/webhooks/*` takes no credential: its bodies are bounded in size and time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_route_bodies_are_bounded() {
    let rec = Recorder::start().await;
    let stack = stack_with(
        &rec,
        &[
            ("GATEWAY_PUBLIC_MAX_BODY_BYTES", "1024"),
            ("GATEWAY_BODY_READ_TIMEOUT_MS", "1500"),
        ],
    )
    .await;
    let a = addr(&stack);
    let request = "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n";
    let (status, body) = raw_request(&a, request.as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    envelope(&body, "payload_too_large");

    let chunked = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n0\r\n\r\n",
        "a".repeat(2048)
    );
    let (status, body) = raw_request(&a, chunked.as_bytes()).await;
    assert!(status == 413, "{status} {body}");

    // A body that never completes is cut, and the connection does not stay open.
    let started = Instant::now();
    let mut s = TcpStream::connect(&a).await.unwrap();
    s.write_all(b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut answer)).await;
    assert!(r.is_ok(), "a stalled body held the connection");
    assert!(started.elapsed() < Duration::from_secs(6));

    let small = "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    let (status, _) = raw_request(&a, small.as_bytes()).await;
    assert_eq!(status, 200);
}

/// A flood of unknown keys from one address spends that address's budget; another
/// client's valid, uncached key still verifies during the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_flood_from_one_client_spends_only_its_own_budget() {
    let rec = Recorder::start().await;
    let stack = stack_with(
        &rec,
        &[
            ("GATEWAY_KEY_LOOKUP_RATE", "40"),
            ("GATEWAY_KEY_LOOKUP_RATE_PER_CLIENT", "10"),
        ],
    )
    .await;
    let created = stack.create_key(ORG, "other client").await;
    let valid = created["key"].as_str().unwrap().to_owned();
    let flooder = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 1]))
        .build()
        .unwrap();
    let url = stack.url("/v1/payment-intents");
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for i in 0..200 {
        let fake = format!("rl_live_{}", URL_SAFE_NO_PAD.encode([i as u8; 32]));
        let s = flooder
            .get(&url)
            .bearer_auth(fake)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        *statuses.entry(s).or_default() += 1;
    }
    assert!(
        statuses.get(&429).copied().unwrap_or(0) > 150,
        "{statuses:?}"
    );
    assert!(
        !statuses.contains_key(&503),
        "the flood spent the shared budget: {statuses:?}"
    );
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let r = other.get(&url).bearer_auth(&valid).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "another client's valid key during the flood"
    );
    // Still flooding: this client keeps getting 429 with Retry-After, not lookups.
    let mut throttled = None;
    for i in 0..40u8 {
        let r = flooder
            .get(&url)
            .bearer_auth(format!(
                "rl_live_{}",
                URL_SAFE_NO_PAD.encode([0xee ^ i; 32])
            ))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            throttled = Some(r);
            break;
        }
    }
    let r = throttled.expect("no 429 while flooding");
    assert_eq!(r.headers()["retry-after"], "1");
    let (s, body) = (r.status(), r.text().await.unwrap());
    assert_eq!(s, 429);
    envelope(&body, "too_many_requests");
}
