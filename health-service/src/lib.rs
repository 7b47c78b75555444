//! health-service answers `GET /health`: the live status of the API, checked at request
//! time against what the API needs (keys-service and audit-service readiness, which include
//! their databases; webhooks-service and whether its delivery workers make progress, and
//! Redis, when configured).
//!
//! Each check has a timeout, and one round of checks serves every `/health` call for a
//! short interval (single-flight), so a flood of status-page polls is not a flood of
//! database queries. The public body names each dependency and its status, never a host,
//! a connection string or an error chain.
//!
//! # Layout
//! - [`settings`]: typed configuration.
//! - [`checks`]: the dependency checks and the cached report.
//! - this file: the router and `Application`.

pub mod checks;
pub mod settings;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

pub use settings::Settings;

use checks::{HealthReport, Monitor};

#[derive(Clone)]
pub struct AppState {
    pub monitor: Arc<Monitor>,
    pub registry: prometheus::Registry,
    pub http: rl_contract::metrics::HttpMetrics,
}

async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthReport>) {
    let report = state.monitor.report().await;
    let code = if report.status == checks::Status::Ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report))
}

pub fn router(state: AppState) -> Router {
    let http_metrics = state.http.clone();
    let router = Router::new()
        .route("/health", get(health))
        .route("/livez", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(|| async { Json(json!({"status": "ok"})) }));
    rl_contract::http::finish(router, 1024)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            http_metrics,
            rl_contract::metrics::observe,
        ))
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> std::io::Result<Self> {
        let listener = TcpListener::bind(settings.listen_addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "health-service listening");
        let registry = rl_contract::metrics::registry("health-service");
        let http = rl_contract::metrics::HttpMetrics::new(&registry);
        Ok(Self {
            listener,
            state: AppState {
                monitor: Arc::new(
                    Monitor::new(&settings, &registry).map_err(std::io::Error::other)?,
                ),
                registry,
                http,
            },
            settings,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stop = rl_contract::shutdown::flag(shutdown);
        let admin = rl_contract::admin::router(
            self.state.registry.clone(),
            rl_contract::admin::always_ready(),
            None,
        );
        let bound = rl_contract::admin::spawn(
            self.settings.admin_addr,
            admin,
            rl_contract::shutdown::stopped(stop.clone()),
        )
        .await?;
        tracing::info!(addr = %bound, "health-service admin listening");
        rl_contract::shutdown::serve(
            self.listener,
            router(self.state),
            stop,
            self.settings.shutdown_grace,
        )
        .await
    }
}

pub async fn run(settings: Settings) -> std::io::Result<()> {
    Application::build(settings)
        .await?
        .run_until_stopped(rl_contract::shutdown::signal())
        .await
}
