//! audit-service owns audit events: idempotent batch ingestion from the other services
//! (internal, never routed by the gateway) and the filterable, organization-scoped
//! `GET /v1/audit-events` feed.
//!
//! # Layout
//! - [`settings`]: typed configuration from the environment.
//! - [`event`]: the event model and ingestion rules.
//! - [`store`]: every SQL statement (SQLite or Postgres through sqlx `Any`).
//! - [`routes`]: the feed, ingestion, probes.
//! - [`error`]: the one error enum, mapped to the documented envelope.

pub mod error;
pub mod event;
pub mod routes;
pub mod settings;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use rl_contract::db::Database;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

pub use settings::Settings;
use store::Store;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub metrics: Metrics,
    pub secrets: Arc<rl_contract::signing::Secrets>,
}

impl axum::extract::FromRef<AppState> for Arc<rl_contract::signing::Secrets> {
    fn from_ref(state: &AppState) -> Self {
        state.secrets.clone()
    }
}

/// audit-service's Prometheus metrics.
#[derive(Clone)]
pub struct Metrics {
    pub registry: prometheus::Registry,
    pub http: rl_contract::metrics::HttpMetrics,
    pub pool: rl_contract::db::PoolMetrics,
    /// Ingested events by result (`accepted`, `duplicate`).
    pub ingested: prometheus::IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = rl_contract::metrics::registry("audit-service");
        Self {
            http: rl_contract::metrics::HttpMetrics::new(&registry),
            pool: rl_contract::db::PoolMetrics::new(&registry),
            ingested: rl_contract::metrics::register(
                &registry,
                prometheus::IntCounterVec::new(
                    prometheus::Opts::new(
                        "audit_events_ingested_total",
                        "Ingested audit events by result.",
                    ),
                    &["result"],
                )
                .expect("valid metric"),
            ),
            registry,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] rl_contract::db::DbError),
    #[error(transparent)]
    Lifecycle(#[from] rl_contract::lifecycle::LifecycleError),
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let db = Database::connect(settings.database_url.expose_secret(), &settings.pool).await?;
        db.migrate(store::MIGRATIONS_TABLE, store::MIGRATIONS)
            .await?;
        let listener = rl_contract::lifecycle::bind(settings.listen_addr).await?;
        tracing::info!(
            addr = %settings.listen_addr,
            database = db.backend.as_str(),
            "audit-service listening"
        );
        Ok(Self {
            listener,
            state: AppState {
                secrets: Arc::new(settings.secrets.clone()),
                settings: Arc::new(settings),
                store: Store::new(db),
                metrics: Metrics::new(),
            },
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` resolves, then finish in-flight requests (within the grace
    /// period) and return.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let state = self.state;
        let running = rl_contract::lifecycle::start(
            "audit-service",
            state.store.database().clone(),
            rl_contract::lifecycle::Admin {
                addr: state.settings.admin_addr,
                registry: state.metrics.registry.clone(),
                pool: state.metrics.pool.clone(),
                on_scrape: None,
            },
            shutdown,
        )
        .await?;
        let grace = state.settings.shutdown_grace;
        running
            .serve(self.listener, routes::router(state), grace, async {})
            .await?;
        Ok(())
    }
}

/// Apply the migrations and return (the Kubernetes migration Job runs `<binary> migrate`).
pub async fn migrate(settings: &rl_contract::db::DatabaseSettings) -> Result<(), StartError> {
    rl_contract::lifecycle::migrate(settings, store::MIGRATIONS_TABLE, store::MIGRATIONS).await?;
    Ok(())
}

/// Build and serve until SIGTERM / Ctrl-C.
pub async fn run(settings: Settings) -> Result<(), StartError> {
    Application::build(settings)
        .await?
        .run_until_stopped(rl_contract::shutdown::signal())
        .await
}
