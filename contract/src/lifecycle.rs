//! The life of every axum service, written once: bind the listeners, serve the admin
//! listener (`/metrics`, `/livez`, `/readyz`) from the start, run the audit relay and the
//! idempotency purge beside the routes, and on SIGTERM stop taking work, drain in-flight
//! requests within the grace period, flush the audit outbox, and return.
//!
//! ```text
//! let running = lifecycle::start(name, db, admin, shutdown).await?;   // admin up, stop flag
//! running.spawn_relay(relay);                                       // writing services
//! running.spawn_idempotency_purge(retention);
//! ... the service's own background tasks, watching running.stop() ...
//! running.serve(listener, router, grace, after_drain).await           // until stopped
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::OnScrape;
use crate::db::{Database, PoolMetrics};

/// How long the admin listener keeps answering (not ready) after the stop signal, so
/// Kubernetes sees `/readyz` fail before the port closes.
const ADMIN_LINGER: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("server: {0}")]
    Serve(std::io::Error),
}

/// Bind a service's main listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, LifecycleError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| LifecycleError::Listen(addr, e))
}

/// The admin listener of a service.
pub struct Admin {
    pub addr: SocketAddr,
    pub registry: Registry,
    /// `db_pool_connections`, refreshed at every scrape.
    pub pool: PoolMetrics,
    /// The service's own sampled gauges, refreshed at every scrape after the pool's.
    pub on_scrape: Option<OnScrape>,
}

/// A started service: admin listener up, stop flag armed, background tasks running.
pub struct Running {
    name: &'static str,
    database: Database,
    stop: watch::Receiver<bool>,
    relay: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

/// Arm the stop flag (it turns on when `shutdown` resolves) and start the admin listener:
/// `/readyz` answers 200 while the database answers and the service is not stopping.
pub async fn start(
    name: &'static str,
    database: Database,
    admin: Admin,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, LifecycleError> {
    let stop = crate::shutdown::flag(shutdown);
    let on_scrape: OnScrape = {
        let (pool, db, extra) = (admin.pool, database.clone(), admin.on_scrape);
        Arc::new(move || {
            pool.set(&db);
            let extra = extra.clone();
            Box::pin(async move {
                if let Some(f) = extra {
                    f().await;
                }
                true
            })
        })
    };
    let router = crate::admin::router(
        admin.registry,
        crate::db::readiness(database.clone(), stop.clone()),
        Some(on_scrape),
    );
    let linger = {
        let stop = stop.clone();
        async move {
            crate::shutdown::stopped(stop).await;
            tokio::time::sleep(ADMIN_LINGER).await;
        }
    };
    let bound = crate::admin::spawn(admin.addr, router, linger)
        .await
        .map_err(|e| LifecycleError::Listen(admin.addr, e))?;
    tracing::info!(addr = %bound, "{name} admin listening");
    Ok(Running {
        name,
        database,
        stop,
        relay: None,
    })
}

impl Running {
    /// The stop flag: `true` once the shutdown signal has come.
    pub fn stop(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// Run the audit outbox relay; it is stopped and drained after the last request.
    pub fn spawn_relay(&mut self, relay: crate::outbox::Relay) {
        let (stop_relay, relay_stopped) = watch::channel(false);
        self.relay = Some((stop_relay, tokio::spawn(relay.run(relay_stopped))));
    }

    /// Drop idempotency records past `retention`, every tenth of it (1 s to 5 min), and once
    /// at start.
    pub fn spawn_idempotency_purge(&self, retention: Duration) {
        let db = self.database.clone();
        let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(300));
        tokio::spawn(async move {
            loop {
                let now = crate::time_fmt::now_ms();
                match crate::idempotency::purge_expired(&db, now).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::debug!(purged = n, "idempotency records past retention removed")
                    }
                    Err(e) => tracing::warn!(error = %e, "could not purge idempotency records"),
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Serve `router` until the stop flag turns, let in-flight requests finish within
    /// `grace`, wait for `after_drain` (the service's own workers), then flush the audit
    /// outbox and return.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: axum::Router,
        grace: Duration,
        after_drain: impl Future<Output = ()>,
    ) -> Result<(), LifecycleError> {
        let served = crate::shutdown::serve(listener, router, self.stop, grace)
            .await
            .map_err(LifecycleError::Serve);
        after_drain.await;
        // In-flight requests are done; flush what they wrote to the outbox.
        if let Some((stop_relay, relay)) = self.relay {
            stop_relay.send_replace(true);
            let _ = relay.await;
        }
        tracing::info!("{} stopped", self.name);
        served
    }
}

/// Connect and apply `migrations` (the Kubernetes migration Job runs `<binary> migrate`).
pub async fn migrate(
    settings: &crate::db::DatabaseSettings,
    table: &'static str,
    migrations: &[crate::db::MigrationSource],
) -> Result<(), crate::db::DbError> {
    use secrecy::ExposeSecret as _;
    let db = Database::connect(settings.url.expose_secret(), &settings.pool).await?;
    db.migrate(table, migrations).await?;
    tracing::info!(database = db.backend.as_str(), "migrations applied");
    Ok(())
}
