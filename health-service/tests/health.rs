//! `GET /health` in-process on port 0 (`Application::build`), against fake dependencies:
//! each status, bounded checks, one round of checks shared by concurrent callers, and a
//! body that names dependencies and statuses only.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use health_service::{Application, Settings};
use serde_json::Value;

#[derive(Clone, Copy)]
enum Behaviour {
    Ready,
    NotReady,
    Hang,
}

/// A fake dependency's `/readyz`, counting its probes.
async fn dependency(behaviour: Behaviour) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new().route(
        "/readyz",
        get(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                // Slow enough that concurrent callers overlap with one round of checks.
                tokio::time::sleep(Duration::from_millis(50)).await;
                match behaviour {
                    Behaviour::Ready => StatusCode::OK,
                    Behaviour::NotReady => StatusCode::SERVICE_UNAVAILABLE,
                    Behaviour::Hang => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        StatusCode::OK
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

async fn start(settings: Settings) -> String {
    let app = Application::build(settings).await.unwrap();
    let url = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    url
}

async fn health(url: &str) -> (u16, Value, String) {
    let r = reqwest::get(format!("{url}/health")).await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap(), text)
}

#[tokio::test]
async fn every_status_and_what_the_body_says() {
    let cases = [
        (Behaviour::Ready, Behaviour::Ready, 200, "ok"),
        (Behaviour::Ready, Behaviour::NotReady, 503, "degraded"),
        (Behaviour::NotReady, Behaviour::Ready, 503, "down"),
        (Behaviour::NotReady, Behaviour::NotReady, 503, "down"),
    ];
    for (keys, audit, code, status) in cases {
        let (keys_url, _) = dependency(keys).await;
        let (audit_url, _) = dependency(audit).await;
        let url = start(Settings::for_tests(&keys_url, &audit_url)).await;
        let (c, body, text) = health(&url).await;
        assert_eq!(
            (c, body["status"].as_str().unwrap()),
            (code, status),
            "{text}"
        );
        assert!(body["checkedAt"].is_string());
        assert_eq!(body["checks"].as_object().unwrap().len(), 2);
        if status == "ok" {
            assert!(body["lastSuccessfulCheckAt"].is_string());
        } else {
            assert!(body["lastSuccessfulCheckAt"].is_null(), "{text}");
        }
        // Names and statuses only: no host, port, URL or error chain.
        for leak in [
            "127.0.0.1",
            "http",
            "readyz",
            &keys_url[17..],
            &audit_url[17..],
        ] {
            assert!(!text.contains(leak), "the body leaks {leak:?}: {text}");
        }
    }
}

#[tokio::test]
async fn a_hanging_dependency_is_reported_within_the_timeout() {
    let (keys_url, _) = dependency(Behaviour::Ready).await;
    let (audit_url, _) = dependency(Behaviour::Hang).await;
    let url = start(Settings::for_tests(&keys_url, &audit_url)).await;
    let started = Instant::now();
    let (code, body, _) = health(&url).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(code, 503);
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["audit_service"]["status"], "down");
    assert_eq!(body["checks"]["audit_service"]["error"], "timeout");
    // An unreachable dependency is down too, not an error of ours.
    let url = start(Settings::for_tests("http://127.0.0.1:9", &audit_url)).await;
    let (code, body, _) = health(&url).await;
    assert_eq!((code, body["status"].as_str().unwrap()), (503, "down"));
    assert_eq!(body["checks"]["keys_service"]["error"], "unreachable");
}

#[tokio::test]
async fn concurrent_callers_share_one_round_of_checks() {
    let (keys_url, keys_hits) = dependency(Behaviour::Ready).await;
    let (audit_url, audit_hits) = dependency(Behaviour::Ready).await;
    let url = start(Settings::for_tests(&keys_url, &audit_url)).await;
    let calls = futures::future::join_all((0..50).map(|_| health(&url))).await;
    assert!(calls.iter().all(|(c, _, _)| *c == 200));
    assert_eq!(
        keys_hits.load(Ordering::SeqCst),
        1,
        "one probe for 50 callers"
    );
    assert_eq!(audit_hits.load(Ordering::SeqCst), 1);
    // After the cache interval, a new round.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _ = health(&url).await;
    assert_eq!(keys_hits.load(Ordering::SeqCst), 2);
}
