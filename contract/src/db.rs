//! How every service supports both SQLite (the embedded default) and Postgres (production),
//! decided once, here: sqlx's `Any` driver, portable SQL (`$1` placeholders, `BIGINT` Unix
//! milliseconds, `TEXT` ids), and one migration list per backend.
//!
//! Each service keeps its own migrations table (`dangerous_set_table_name`), so several
//! services may share one Postgres database without their version numbers colliding. On
//! Postgres the migrator holds an advisory lock, so replicas starting together run each
//! migration exactly once.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Executor, Transaction};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// One migration, in the two dialects.
pub struct MigrationSource {
    pub version: i64,
    pub description: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported DATABASE_URL scheme (use sqlite:… or postgres://…)")]
    UnsupportedUrl,
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[derive(Debug, Clone)]
pub struct Database {
    pub pool: AnyPool,
    pub backend: Backend,
}

#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

pub const DATABASE_URL: &str = "DATABASE_URL";
pub const DATA_DIR: &str = "DATA_DIR";
pub const DB_MAX_CONNECTIONS: &str = "DATABASE_MAX_CONNECTIONS";
pub const DB_ACQUIRE_TIMEOUT_MS: &str = "DATABASE_ACQUIRE_TIMEOUT_MS";

impl PoolSettings {
    /// `DATABASE_MAX_CONNECTIONS` (10) and `DATABASE_ACQUIRE_TIMEOUT_MS` (3000).
    pub fn from_env() -> Result<Self, crate::settings::SettingsError> {
        Ok(Self {
            max_connections: crate::settings::parse(DB_MAX_CONNECTIONS, 10)?,
            acquire_timeout: crate::settings::millis(DB_ACQUIRE_TIMEOUT_MS, 3000)?,
        })
    }
}

/// What a service needs to reach its database — and all its `migrate` subcommand needs.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// May carry a password: a secret, never printed.
    pub url: secrecy::SecretString,
    pub pool: PoolSettings,
}

impl DatabaseSettings {
    /// The service's own variable (`KEYS_DATABASE_URL`, …), else `DATABASE_URL`, else the
    /// SQLite file `file` under `DATA_DIR`; a URL of another kind stops the binary at start,
    /// naming the variable.
    pub fn from_env(
        service_var: &'static str,
        file: &str,
    ) -> Result<Self, crate::settings::SettingsError> {
        let from = if crate::settings::raw(service_var).is_some() {
            service_var
        } else {
            DATABASE_URL
        };
        let url = url_from_env(service_var, file);
        if Backend::from_url(&url).is_none() {
            return Err(crate::settings::SettingsError::new(
                from,
                "<url>",
                "unsupported scheme (use sqlite:… or postgres://…)",
            ));
        }
        Ok(Self {
            url: url.into(),
            pool: PoolSettings::from_env()?,
        })
    }
}

/// A service's database: its own variable (`KEYS_DATABASE_URL`, …), else `DATABASE_URL`,
/// else the SQLite file `file` under `DATA_DIR` (default `./data`).
pub fn url_from_env(service_var: &'static str, file: &str) -> String {
    let data_dir = std::path::PathBuf::from(crate::settings::string(DATA_DIR, "./data"));
    crate::settings::raw(service_var)
        .or_else(|| crate::settings::raw(DATABASE_URL))
        .unwrap_or_else(|| sqlite_url(&data_dir, file))
}

/// A database failure as every service answers it — each service's error enum wraps this
/// one (`#[from]`), so the classification is made in one place.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another attempt took over this request's `Idempotency-Key`: nothing was written
    /// here (`409`, retry).
    #[error("the Idempotency-Key claim was taken over by another attempt")]
    ClaimLost,
    /// Unreachable, pool exhausted, or SQLite still locked after its busy timeout (`503`,
    /// retryable).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else (`500`; the cause is logged, never shown).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if crate::idempotency::is_claim_lost(&e) {
            Self::ClaimLost
        } else if is_unavailable(&e) {
            Self::Unavailable(e)
        } else {
            Self::Database(e)
        }
    }
}

impl StoreError {
    /// The envelope for this failure; `unavailable_message` names the store ("The key store
    /// is temporarily unavailable. Retry shortly.").
    pub fn response(&self, unavailable_message: &str) -> crate::error::ErrorResponse {
        use crate::error::{ErrorCode, ErrorResponse};
        match self {
            Self::ClaimLost => ErrorResponse::new(
                ErrorCode::Conflict,
                "A request with this Idempotency-Key is still in progress. Retry shortly.",
            ),
            Self::Unavailable(e) => {
                tracing::warn!(error = %e, "database unavailable");
                ErrorResponse::new(ErrorCode::ServiceUnavailable, unavailable_message)
            }
            Self::Database(e) => {
                tracing::error!(error = ?e, "database error");
                ErrorResponse::new(ErrorCode::InternalError, "An internal error occurred.")
            }
        }
    }
}

/// `GET /readyz` on a service's main listener: its database answers.
pub async fn readyz(db: &Database) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    match db.ping().await {
        Ok(()) => (
            axum::http::StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok", "checks": {"database": "ok"}})),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"status": "down", "checks": {"database": "down"}})),
            )
        }
    }
}

/// `db_pool_connections{state="in_use"|"idle"}`, refreshed at each scrape.
#[derive(Clone)]
pub struct PoolMetrics {
    connections: prometheus::IntGaugeVec,
}

impl PoolMetrics {
    pub fn new(registry: &prometheus::Registry) -> Self {
        Self {
            connections: crate::metrics::register(
                registry,
                prometheus::IntGaugeVec::new(
                    prometheus::Opts::new(
                        "db_pool_connections",
                        "Database pool connections by state.",
                    ),
                    &["state"],
                )
                .expect("valid metric"),
            ),
        }
    }

    pub fn set(&self, db: &Database) {
        let (in_use, idle) = db.pool_usage();
        self.connections
            .with_label_values(&["in_use"])
            .set(i64::from(in_use));
        self.connections
            .with_label_values(&["idle"])
            .set(i64::from(idle));
    }
}

/// Admin `/readyz`: not while stopping, and only while the database answers.
pub fn readiness(
    db: Database,
    stop: tokio::sync::watch::Receiver<bool>,
) -> crate::admin::Readiness {
    std::sync::Arc::new(move || {
        let db = db.clone();
        let stopping = *stop.borrow();
        Box::pin(async move { !stopping && db.ping().await.is_ok() })
    })
}

/// The default SQLite URL for a file under `data_dir`.
pub fn sqlite_url(data_dir: &Path, file: &str) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join(file).display())
}

fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

impl Database {
    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<Self, DbError> {
        install_default_drivers();
        let backend = Backend::from_url(url).ok_or(DbError::UnsupportedUrl)?;
        if backend == Backend::Sqlite
            && let Some(parent) = sqlite_file(url).and_then(|f| Path::new(f).parent())
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| DbError::DataDir(parent.display().to_string(), e))?;
        }
        let mut options = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout);
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers proceed while one writer commits; the busy timeout
                    // makes concurrent writers queue instead of failing.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await?;
        Ok(Self { pool, backend })
    }

    /// Apply `migrations` (in this backend's dialect), recorded in `table`.
    pub async fn migrate(
        &self,
        table: &'static str,
        migrations: &[MigrationSource],
    ) -> Result<(), DbError> {
        let list = migrations
            .iter()
            .map(|m| {
                let sql = match self.backend {
                    Backend::Sqlite => m.sqlite,
                    Backend::Postgres => m.postgres,
                };
                Migration::new(
                    m.version,
                    Cow::Borrowed(m.description),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(sql),
                    false,
                )
            })
            .collect();
        let mut migrator = Migrator::with_migrations(list);
        migrator.dangerous_set_table_name(table);
        migrator.set_ignore_missing(true);
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// A write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`)
    /// so a read-then-write transaction queues behind other writers instead of failing
    /// with `SQLITE_BUSY` half-way.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Connections open and idle, for the pool-usage gauges.
    pub fn pool_usage(&self) -> (u32, u32) {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(size);
        (size.saturating_sub(idle), idle)
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}

/// A value bound to a dynamic statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Int(i64),
    Text(String),
}

impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<String> for Param {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

/// A statement assembled at run time with `$n` placeholders, which both SQLite and
/// Postgres accept. (sqlx's `QueryBuilder<Any>` writes `?`, which Postgres rejects.)
/// Only fixed SQL text is pushed; every value goes through [`Sql::bind`].
#[derive(Debug, Default, Clone)]
pub struct Sql {
    text: String,
    params: Vec<Param>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            params: Vec::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub fn bind(&mut self, value: impl Into<Param>) -> &mut Self {
        self.params.push(value.into());
        self.text.push('$');
        self.text.push_str(&self.params.len().to_string());
        self
    }

    /// `$a, $b, …` for each value (an `IN (…)` list).
    pub fn bind_list<T: Into<Param>>(&mut self, values: impl IntoIterator<Item = T>) -> &mut Self {
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(v);
        }
        self
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn query(&self) -> sqlx::query::Query<'_, Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(self.text.clone()));
        for p in &self.params {
            q = match p {
                Param::Int(v) => q.bind(*v),
                Param::Text(v) => q.bind(v.as_str()),
            };
        }
        q
    }
}

/// Whether an error means the database is unreachable (a retryable `503`), as opposed to a
/// bug or a constraint (a `500`).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // Postgres classes 08 (connection exception) and 57P (operator intervention);
        // SQLite BUSY (5), LOCKED (6) and BUSY_RECOVERY (261) / BUSY_SNAPSHOT (517) after the
        // busy timeout: contention, retryable.
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08") || c.starts_with("57P") || matches!(&*c, "5" | "6" | "261" | "517")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_statements_number_their_placeholders() {
        let mut q = Sql::new("SELECT 1 FROM t WHERE a = ");
        q.bind("x")
            .push(" AND b IN (")
            .bind_list([1i64, 2, 3])
            .push(") LIMIT ")
            .bind(5i64);
        assert_eq!(
            q.text(),
            "SELECT 1 FROM t WHERE a = $1 AND b IN ($2, $3, $4) LIMIT $5"
        );
    }

    #[test]
    fn backend_from_url() {
        assert_eq!(Backend::from_url("sqlite://x.db"), Some(Backend::Sqlite));
        assert_eq!(
            Backend::from_url("postgres://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::from_url("mysql://h/db"), None);
        assert_eq!(
            sqlite_file("sqlite://./data/k.db?mode=rwc"),
            Some("./data/k.db")
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
    }
}
