//! keys-service owns ReconLayer API keys: create, list, read, update and revoke them, store
//! only their SHA-256, answer gateways' lookups by hash, take their batched usage reports,
//! tell them when a key changes, and record every change in the audit outbox.
//!
//! # Layout
//! - [`settings`]: typed configuration from the environment.
//! - [`api_key`]: key format, hashing and field validation.
//! - [`store`]: every SQL statement (SQLite or Postgres through sqlx `Any`).
//! - [`changes`]: the change feed gateways long-poll to drop cached keys at once.
//! - [`metrics`]: Prometheus metrics, served on the admin listener.
//! - [`redis_tier`]: the shared Redis record cache and its change notices.
//! - the audit outbox and its relay to audit-service: `rl_contract::outbox`.
//! - [`routes`]: the public `/v1/api-keys` API, the internal gateway API, probes.
//! - [`error`]: the one error enum, mapped to the documented envelope.

pub mod api_key;
pub mod changes;
pub mod error;
pub mod metrics;
pub mod redis_tier;
pub mod routes;
pub mod settings;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use rl_contract::db::Database;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use settings::Settings;

use changes::ChangeFeed;
use store::Store;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub metrics: metrics::Metrics,
    pub store: Store,
    pub changes: Arc<ChangeFeed>,
    pub relay: Arc<Notify>,
    pub redis: Option<Arc<redis_tier::RedisTier>>,
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

    /// Tell gateways a key changed: the in-process feed, and Redis when configured.
    pub async fn publish_change(&self, record: &store::KeyRecord) {
        self.changes.publish(&record.key_hash);
        self.metrics.key_changes.inc();
        if let Some(redis) = &self.redis {
            redis.changed(&record.key_hash, &record.wire()).await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] rl_contract::db::DbError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
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
            "keys-service listening"
        );
        let redis = match &settings.redis_url {
            Some(url) => Some(Arc::new(redis_tier::RedisTier::new(
                url,
                settings.redis_key_ttl,
                settings.redis_negative_ttl,
                settings.redis_timeout,
            )?)),
            None => None,
        };
        let state = AppState {
            secrets: Arc::new(settings.secrets.clone()),
            redis,
            metrics: metrics::Metrics::new(),
            settings: Arc::new(settings),
            store: Store::new(db),
            changes: Arc::new(ChangeFeed::new()),
            relay: Arc::new(Notify::new()),
        };
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until `shutdown` resolves, then finish in-flight requests (within the grace
    /// period), flush the audit outbox, and return.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let state = self.state;
        let mut running = rl_contract::lifecycle::start(
            "keys-service",
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
        // Long-polling gateways are answered at once when the service stops.
        let (changes, stop) = (state.changes.clone(), running.stop());
        tokio::spawn(async move {
            rl_contract::shutdown::stopped(stop).await;
            changes.close();
        });
        if let Some(redis) = state.redis.clone() {
            // Changes Redis missed are retried until it answers again.
            tokio::spawn(async move {
                redis.connect_until_up().await;
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    redis.retry_pending().await;
                }
            });
        }
        let grace = state.settings.shutdown_grace;
        running
            .serve(self.listener, routes::router(state), grace, async {})
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
