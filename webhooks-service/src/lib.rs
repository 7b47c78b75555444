//! webhooks-service owns outbound webhooks: the endpoints an organization registers (with a
//! signing secret shown once and kept encrypted), the events product services and users
//! queue, and the workers that deliver them — Standard Webhooks signatures, retries on a
//! schedule, leases so a crashed worker loses nothing, SSRF-checked destinations. Every
//! endpoint change is recorded in the audit outbox.
//!
//! # Layout
//! - [`settings`]: typed configuration from the environment.
//! - [`endpoint`]: field rules of endpoints and events.
//! - [`secret`]: signing secrets, ed25519 keys, encryption at rest.
//! - [`signature`]: the Standard Webhooks signature (`v1` HMAC, `v1a` ed25519).
//! - [`ssrf`]: which destinations may be connected to, and the filtering resolver.
//! - [`schedule`]: the retry schedule, jitter and `Retry-After`.
//! - [`delivery`]: one HTTP attempt.
//! - [`worker`]: claims, attempts and reschedules deliveries.
//! - [`store`]: every SQL statement (SQLite or Postgres through sqlx `Any`).
//! - the audit outbox and its relay to audit-service: `rl_contract::outbox` (shared with
//!   keys-service).
//! - [`metrics`]: Prometheus metrics, served on the admin listener.
//! - [`routes`]: the public API, the internal enqueue, probes.
//! - [`error`]: the one error enum, mapped to the documented envelope.

pub mod delivery;
pub mod endpoint;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod schedule;
pub mod secret;
pub mod settings;
pub mod signature;
pub mod ssrf;
pub mod store;
pub mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use rl_contract::db::Database;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use settings::Settings;

use store::Store;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub metrics: metrics::Metrics,
    pub store: Store,
    pub relay: Arc<Notify>,
    /// Wakes the worker when a delivery becomes due (an event queued, an endpoint enabled).
    pub worker_wake: Arc<Notify>,
    pub sender: delivery::Sender,
    pub secrets: Arc<rl_contract::signing::Secrets>,
}

impl axum::extract::FromRef<AppState> for Arc<rl_contract::signing::Secrets> {
    fn from_ref(state: &AppState) -> Self {
        state.secrets.clone()
    }
}

impl AppState {
    /// Tell the audit relay there is something new in the outbox.
    pub fn relay_wake(&self) {
        self.relay.notify_one();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] rl_contract::db::DbError),
    #[error(transparent)]
    Lifecycle(#[from] rl_contract::lifecycle::LifecycleError),
    #[error("http client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Connect to the database, apply migrations and bind the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let db = Database::connect(settings.database_url.expose_secret(), &settings.pool).await?;
        db.migrate(store::MIGRATIONS_TABLE, store::MIGRATIONS)
            .await?;
        let listener = rl_contract::lifecycle::bind(settings.listen_addr).await?;
        tracing::info!(
            addr = %settings.listen_addr,
            database = db.backend.as_str(),
            workers = settings.worker_enabled,
            allow_private_destinations = settings.allow_private_destinations,
            require_https = settings.require_https,
            "webhooks-service listening"
        );
        let sender = delivery::Sender::new(
            ssrf::Policy {
                allow_private: settings.allow_private_destinations,
                require_https: settings.require_https,
            },
            settings.request_timeout,
            settings.encryption_key.clone(),
        );
        let state = AppState {
            secrets: Arc::new(settings.secrets.clone()),
            metrics: metrics::Metrics::new(),
            settings: Arc::new(settings),
            store: Store::new(db),
            relay: Arc::new(Notify::new()),
            worker_wake: Arc::new(Notify::new()),
            sender,
        };
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until `shutdown` resolves, then finish in-flight requests and attempts (within
    /// the grace period), flush the audit outbox, and return.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let state = self.state;
        let mut running = rl_contract::lifecycle::start(
            "webhooks-service",
            state.store.database().clone(),
            rl_contract::lifecycle::Admin {
                addr: state.settings.admin_addr,
                registry: state.metrics.registry.clone(),
                pool: state.metrics.pool.clone(),
                on_scrape: Some(on_scrape(state.clone())),
            },
            shutdown,
        )
        .await?;
        running.spawn_relay(rl_contract::outbox::Relay::new(
            state.store.database().clone(),
            &state.settings.audit_service_url,
            state.relay.clone(),
            state.settings.relay_max_backoff,
            state.metrics.relay_events.clone(),
            state.secrets.internal_token(),
        )?);
        running.spawn_idempotency_purge(state.settings.idempotency.retention);
        let workers = state
            .settings
            .worker_enabled
            .then(|| tokio::spawn(worker::run(state.clone(), running.stop())));
        let grace = state.settings.shutdown_grace;
        // Attempts in progress finish (or are released) before the outbox is flushed.
        let workers_done = async {
            if let Some(w) = workers {
                let _ = w.await;
            }
        };
        running
            .serve(self.listener, routes::router(state), grace, workers_done)
            .await?;
        Ok(())
    }
}

fn on_scrape(state: AppState) -> rl_contract::admin::OnScrape {
    Arc::new(move || {
        let state = state.clone();
        Box::pin(async move {
            if let Ok(n) = rl_contract::outbox::backlog(state.store.database()).await {
                state.metrics.outbox_backlog.set(n);
            }
            let now = rl_contract::time_fmt::now_ms();
            if let Ok((depth, oldest)) = state.store.queue_stats(now).await {
                state.metrics.queue_depth.set(depth);
                state
                    .metrics
                    .oldest_pending_age
                    .set(oldest.unwrap_or(0) as f64 / 1000.0);
            }
            if let Ok(n) = state.store.disabled_endpoints().await {
                state.metrics.disabled_endpoints.set(n);
            }
            true
        })
    })
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
