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
use tokio::net::TcpListener;

pub use settings::Settings;
use store::Store;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
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
        let db = Database::connect(&settings.database_url, &settings.pool).await?;
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
                settings: Arc::new(settings),
                store: Store::new(db),
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
        axum::serve(self.listener, routes::router(self.state))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(StartError::Serve)
    }
}

pub async fn run(settings: Settings) -> Result<(), StartError> {
    Application::build(settings)
        .await?
        .run_until_stopped(rl_contract::shutdown::signal())
        .await
}
