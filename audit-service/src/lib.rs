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
    pub pool: rl_contract::metrics::PoolMetrics,
    /// Ingested events by result (`accepted`, `duplicate`).
    pub ingested: prometheus::IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = rl_contract::metrics::registry("audit-service");
        Self {
            http: rl_contract::metrics::HttpMetrics::new(&registry),
            pool: rl_contract::metrics::PoolMetrics::new(&registry),
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
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("server: {0}")]
    Serve(std::io::Error),
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
        let listener = TcpListener::bind(settings.listen_addr)
            .await
            .map_err(|e| StartError::Listen(settings.listen_addr, e))?;
        tracing::info!(
            addr = %listener.local_addr().map_err(StartError::Serve)?,
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

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let state = self.state;
        let stop = rl_contract::shutdown::flag(shutdown);
        let admin_addr = state.settings.admin_addr;
        let readiness = rl_contract::db::readiness(state.store.database().clone(), stop.clone());
        let on_scrape: rl_contract::admin::OnScrape = {
            let state = state.clone();
            Arc::new(move || {
                state.metrics.pool.set(state.store.database());
                Box::pin(async { true })
            })
        };
        let admin =
            rl_contract::admin::router(state.metrics.registry.clone(), readiness, Some(on_scrape));
        let bound = rl_contract::admin::spawn(
            admin_addr,
            admin,
            rl_contract::shutdown::stopped(stop.clone()),
        )
        .await
        .map_err(|e| StartError::Listen(admin_addr, e))?;
        tracing::info!(addr = %bound, "audit-service admin listening");
        let grace = state.settings.shutdown_grace;
        let served =
            rl_contract::shutdown::serve(self.listener, routes::router(state), stop, grace)
                .await
                .map_err(StartError::Serve);
        tracing::info!("audit-service stopped");
        served
    }
}

/// Apply the migrations and return (the Kubernetes migration Job runs `<binary> migrate`).
pub async fn migrate(settings: &rl_contract::db::DatabaseSettings) -> Result<(), StartError> {
    let db = Database::connect(settings.url.expose_secret(), &settings.pool).await?;
    db.migrate(store::MIGRATIONS_TABLE, store::MIGRATIONS)
        .await?;
    tracing::info!(database = db.backend.as_str(), "migrations applied");
    Ok(())
}

pub async fn run(settings: Settings) -> Result<(), StartError> {
    Application::build(settings)
        .await?
        .run_until_stopped(rl_contract::shutdown::signal())
        .await
}
