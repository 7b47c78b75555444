//! Operations: `/health`, Prometheus metrics on every admin listener, request ids across
//! services, and graceful shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get};
use common::{
    Backend, LocalServer, ORG, Proc, Stack, StackOptions, eventually, kv, spawn_service,
    status_json,
};
use reqwest::Method;
use serde_json::Value;

async fn health(stack: &Stack) -> (u16, Value) {
    status_json(stack.client.get(stack.url("/health")).send().await.unwrap()).await
}

/// Poll /health until `want` (or fail after 5 s).
async fn health_becomes(stack: &Stack, want: &str) -> Value {
    let (s, body) = eventually(
        &format!("health {want}"),
        Duration::from_secs(5),
        || async {
            let (s, body) = health(stack).await;
            if body["status"] == want {
                Ok((s, body))
            } else {
                Err(body.to_string())
            }
        },
    )
    .await;
    assert_eq!(s, if want == "ok" { 200 } else { 503 }, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_its_dependencies_down_and_back() {
    let mut stack = Stack::start(Backend::Sqlite).await;
    let ok = health_becomes(&stack, "ok").await;
    assert!(ok["checkedAt"].is_string());
    assert_eq!(ok["lastSuccessfulCheckAt"], ok["checkedAt"]);
    for dep in ["keys_service", "audit_service"] {
        assert_eq!(ok["checks"][dep]["status"], "ok", "{ok}");
        assert!(ok["checks"][dep]["latencyMs"].is_u64(), "{ok}");
    }
    let last_ok = ok["lastSuccessfulCheckAt"].clone();

    stack.audit.kill();
    let degraded = health_becomes(&stack, "degraded").await;
    assert_eq!(degraded["checks"]["audit_service"]["status"], "down");
    assert!(degraded["checks"]["audit_service"]["error"].is_string());
    assert!(degraded["lastSuccessfulCheckAt"].as_str() >= last_ok.as_str());
    let text = degraded.to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.contains("http://"),
        "internal detail leaked: {text}"
    );

    stack.keys.kill();
    health_becomes(&stack, "down").await;

    stack.keys.start();
    stack.audit.start();
    health_becomes(&stack, "ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_health_calls_is_not_a_flood_of_checks() {
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let dependency = LocalServer::start(Router::new().route(
        "/readyz",
        get(move || {
            let c = counter.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        }),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let health = spawn_service(
        &client,
        "health-service",
        "health-service",
        "HEALTH",
        &[
            kv("KEYS_SERVICE_URL", dependency.url()),
            kv("AUDIT_SERVICE_URL", dependency.url()),
            kv("HEALTH_CACHE_TTL_MS", "1500"),
        ],
        "/livez",
        dir.path(),
    )
    .await;
    let url = format!("{}/health", health.url);
    let results = futures::future::join_all((0..300).map(|_| client.get(&url).send())).await;
    for r in results {
        assert_eq!(r.unwrap().status(), 200);
    }
    let n = calls.load(Ordering::SeqCst);
    // Two dependencies, one round of checks (two if the interval rolled over).
    assert!(n <= 4, "{n} dependency checks for 300 /health calls");
    // The cached result expires: a later call checks again.
    eventually(
        "a fresh round of checks",
        Duration::from_secs(5),
        || async {
            assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
            calls.load(Ordering::SeqCst) > n
        },
    )
    .await;
}

fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// Sum of a metric's samples whose labels include `labels`.
fn total(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => {
                h.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

async fn scrape(client: &reqwest::Client, admin: &str) -> (String, prometheus_parse::Scrape) {
    let r = client.get(format!("{admin}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    let parsed = parse_metrics(&text);
    (text, parsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_binary_serves_parseable_metrics_that_move_with_traffic() {
    let stack = Stack::start(Backend::Sqlite).await;
    let c = &stack.client;
    for admin in [
        &stack.gateway_admin,
        &stack.keys_admin,
        &stack.audit_admin,
        &stack.health_admin,
    ] {
        for probe in ["livez", "readyz"] {
            let r = c.get(format!("{admin}/{probe}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{admin}/{probe}");
        }
    }
    let (_, before) = scrape(c, &stack.gateway_admin).await;
    // Traffic: a key created, used (miss then hit), a bad key, a bad path.
    let key = stack.create_key(ORG, "metrics").await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..3 {
        assert_eq!(
            stack
                .with_key(Method::GET, "/v1/x", &key)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    stack
        .with_key(Method::GET, "/v1/x", "rl_live_bad")
        .send()
        .await
        .unwrap();
    stack.client.get(stack.url("/health")).send().await.unwrap();

    let (text, after) = scrape(c, &stack.gateway_admin).await;
    for name in [
        "gateway_requests_total",
        "gateway_request_duration_seconds",
        "gateway_auth_total",
        "gateway_cache_lookups_total",
        "gateway_upstream_duration_seconds",
        "gateway_key_lookup_duration_seconds",
        "gateway_key_invalidation_connected",
        "gateway_cached_keys",
    ] {
        assert!(
            text.contains(name),
            "{name} missing from the gateway's metrics"
        );
    }
    assert!(
        total(
            &after,
            "gateway_requests_total",
            &[("route", "api"), ("status", "200")]
        ) >= 3.0
    );
    assert!(
        total(&after, "gateway_requests_total", &[])
            > total(&before, "gateway_requests_total", &[])
    );
    assert_eq!(
        total(
            &after,
            "gateway_auth_total",
            &[
                ("credential", "api_key"),
                ("outcome", "rejected"),
                ("reason", "malformed")
            ]
        ),
        1.0
    );
    assert!(
        total(
            &after,
            "gateway_cache_lookups_total",
            &[("cache", "api_key"), ("result", "hit")]
        ) >= 2.0
    );
    assert!(
        total(
            &after,
            "gateway_cache_lookups_total",
            &[("cache", "api_key"), ("result", "miss")]
        ) >= 1.0
    );
    assert!(!text.contains(&key[8..]), "key material in metrics");

    let (keys_text, keys) = scrape(c, &stack.keys_admin).await;
    for name in [
        "http_requests_total",
        "http_request_duration_seconds",
        "db_pool_connections",
        "keys_audit_outbox_backlog",
        "keys_audit_relay_events_total",
    ] {
        assert!(keys_text.contains(name), "{name} missing from keys-service");
    }
    assert!(
        total(
            &keys,
            "http_requests_total",
            &[
                ("route", "/v1/api-keys"),
                ("method", "POST"),
                ("status", "201")
            ]
        ) >= 1.0
    );
    assert!(
        total(
            &keys,
            "http_requests_total",
            &[("route", "/internal/v1/api-keys/lookup")]
        ) >= 1.0
    );
    let (audit_text, _) = scrape(c, &stack.audit_admin).await;
    assert!(
        audit_text.contains("audit_events_ingested_total")
            && audit_text.contains("db_pool_connections")
    );
    let (health_text, _) = scrape(c, &stack.health_admin).await;
    assert!(health_text.contains("health_dependency_checks_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_travels_end_to_end() {
    let stack = Stack::start(Backend::Sqlite).await;
    // Through the gateway to keys-service, and back.
    let r = stack
        .as_dev(Method::POST, "/v1/api-keys", ORG)
        .header("x-request-id", "e2e-trace-0001")
        .json(&serde_json::json!({"name": "traced", "scopes": ["a"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-request-id"], "e2e-trace-0001");
    let key = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // An API-key request: the gateway's lookup to keys-service carries the same id.
    let r = stack
        .with_key(Method::GET, "/v1/x", &key)
        .header("x-request-id", "e2e-trace-0002")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "e2e-trace-0002");
    let echo: Value = r.json().await.unwrap();
    assert_eq!(
        echo["headers"]["x-request-id"],
        serde_json::json!(["e2e-trace-0002"])
    );
    // A malformed id is replaced, never echoed.
    let r = stack
        .as_dev(Method::GET, "/v1/x", ORG)
        .header("x-request-id", "bad id <script>")
        .send()
        .await
        .unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36);
    let lines_with = |logs: &str, id: &str| logs.lines().filter(|l| l.contains(id)).count();
    let keys_logs = eventually(
        "keys-service logging both request ids",
        Duration::from_secs(5),
        || async {
            let logs = stack.keys.logs();
            (lines_with(&logs, "e2e-trace-0001") >= 1 && lines_with(&logs, "e2e-trace-0002") >= 1)
                .then_some(logs)
        },
    )
    .await;
    assert!(
        lines_with(&keys_logs, "e2e-trace-0001") >= 1,
        "keys-service never logged the request id"
    );
    assert!(
        lines_with(&keys_logs, "e2e-trace-0002") >= 1,
        "the lookup did not carry the request id"
    );
    assert!(lines_with(&stack.gateway.logs(), "e2e-trace-0001") >= 1);
    // Every keys-service line is JSON.
    for line in keys_logs.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
    assert!(!stack.all_logs().contains(&key[8..]), "a key in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_flushes_usage() {
    let arrived = Arc::new(AtomicU64::new(0));
    let slow = LocalServer::start(Router::new().fallback(any({
        let arrived = arrived.clone();
        move || async move {
            arrived.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "finished"
        }
    })))
    .await;
    let mut opts = StackOptions::new(Backend::Sqlite);
    opts.upstream_url = Some(slow.url());
    opts.gateway_env
        .push(("GATEWAY_GRACE_PERIOD_SECONDS".into(), "4".into()));
    opts.gateway_env
        .push(("GATEWAY_USAGE_FLUSH_INTERVAL_MS".into(), "600000".into()));
    let mut stack = Stack::start_with(opts).await;
    let created = stack.create_key(ORG, "drain").await;
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();

    let in_flight = {
        let req = stack.with_key(Method::GET, "/v1/slow", &key);
        tokio::spawn(async move { req.send().await })
    };
    eventually(
        "the request in flight at the upstream",
        Duration::from_secs(5),
        || async { arrived.load(Ordering::SeqCst) == 1 },
    )
    .await;
    let pid = stack.gateway.pid();
    let stopper = tokio::task::spawn_blocking({
        let mut gw = std::mem::replace(
            &mut stack.gateway,
            Proc::spawn(
                "placeholder",
                std::path::Path::new("/bin/true"),
                &[],
                stack.dir.path(),
            ),
        );
        move || gw.terminate(Duration::from_secs(20))
    });
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(
        response.status(),
        200,
        "in-flight request cut by SIGTERM (pid {pid})"
    );
    assert_eq!(response.text().await.unwrap(), "finished");
    assert_eq!(stopper.await.unwrap(), Some(0), "gateway did not exit 0");

    // The usage batch was flushed on the way out.
    let (_, got) = status_json(
        stack
            .signed(
                Method::GET,
                &stack.keys_url,
                &format!("/v1/api-keys/{id}"),
                ORG,
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        got["lastUsedAt"].is_string(),
        "usage not flushed at shutdown: {got}"
    );

    // The axum services drain and exit 0 too.
    for p in [&mut stack.keys, &mut stack.audit, &mut stack.health] {
        assert_eq!(
            p.terminate(Duration::from_secs(15)),
            Some(0),
            "{} did not exit 0",
            p.name
        );
    }
}
