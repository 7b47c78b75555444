//! The admin listener every service runs beside its main one: `/metrics` (Prometheus
//! text), `/livez` (the process runs) and `/readyz` (it can do its job) for Kubernetes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::Registry;
use tokio::net::TcpListener;

pub type ReadinessFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Whether the service can do its job now (its database answers, …).
pub type Readiness = Arc<dyn Fn() -> ReadinessFuture + Send + Sync>;

/// Called just before each scrape, to refresh gauges that are sampled (pool usage, …).
pub type OnScrape = Arc<dyn Fn() -> ReadinessFuture + Send + Sync>;

#[derive(Clone)]
struct Admin {
    registry: Registry,
    readiness: Readiness,
    on_scrape: Option<OnScrape>,
}

async fn metrics(State(a): State<Admin>) -> impl IntoResponse {
    if let Some(f) = &a.on_scrape {
        f().await;
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::encode(&a.registry),
    )
}

async fn readyz(State(a): State<Admin>) -> (StatusCode, &'static str) {
    if (a.readiness)().await {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

pub fn router(registry: Registry, readiness: Readiness, on_scrape: Option<OnScrape>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Admin {
            registry,
            readiness,
            on_scrape,
        })
}

/// Bind the admin listener and serve it in the background until `shutdown` resolves.
pub async fn spawn(
    addr: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
    });
    Ok(bound)
}

/// A readiness check that always passes.
pub fn always_ready() -> Readiness {
    Arc::new(|| Box::pin(async { true }))
}
