//! keys-service settings, read once from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use rl_contract::db::PoolSettings;
use rl_contract::settings::{self, SettingsError};

pub const LISTEN_ADDR: &str = "KEYS_LISTEN_ADDR";
pub const ADMIN_ADDR: &str = "KEYS_ADMIN_ADDR";
pub const SHUTDOWN_GRACE_PERIOD_MS: &str = "SHUTDOWN_GRACE_PERIOD_MS";
pub const KEYS_DATABASE_URL: &str = "KEYS_DATABASE_URL";
pub const MAX_BODY_BYTES: &str = "KEYS_MAX_BODY_BYTES";
pub const CHANGE_FEED_MAX_WAIT_MS: &str = "KEYS_CHANGE_FEED_MAX_WAIT_MS";
pub const AUDIT_SERVICE_URL: &str = "AUDIT_SERVICE_URL";
pub const REDIS_URL: &str = "REDIS_URL";
pub const REDIS_KEY_TTL_MS: &str = "REDIS_KEY_TTL_MS";
pub const REDIS_NEGATIVE_TTL_MS: &str = "REDIS_NEGATIVE_TTL_MS";
pub const REDIS_TIMEOUT_MS: &str = "REDIS_TIMEOUT_MS";
pub const RELAY_MAX_BACKOFF_MS: &str = "KEYS_AUDIT_RELAY_MAX_BACKOFF_MS";

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen_addr: SocketAddr,
    /// `/metrics`, `/livez`, `/readyz`.
    pub admin_addr: SocketAddr,
    pub shutdown_grace: Duration,
    /// May carry a password: a secret, never printed.
    pub database_url: secrecy::SecretString,
    pub pool: PoolSettings,
    pub max_body_bytes: usize,
    pub change_feed_max_wait: Duration,
    /// Where the outbox relay delivers audit events (`http://host:port`).
    pub audit_service_url: String,
    pub relay_max_backoff: Duration,
    /// The shared Redis tier, when configured.
    pub redis_url: Option<String>,
    pub redis_key_ttl: Duration,
    pub redis_negative_ttl: Duration,
    pub redis_timeout: Duration,
    /// Identity-signing secrets (services refuse unsigned identity unless turned off).
    pub secrets: rl_contract::signing::Secrets,
    /// `Idempotency-Key` retention and claim lease.
    pub idempotency: rl_contract::idempotency::IdempotencySettings,
}

/// `REDIS_URL`, checked at start: a typo stops the service instead of disabling the tier.
fn redis_url() -> Result<Option<String>, SettingsError> {
    let Some(url) = settings::raw(REDIS_URL) else {
        return Ok(None);
    };
    redis::Client::open(url.as_str()).map_err(|e| SettingsError::new(REDIS_URL, "<url>", e))?;
    Ok(Some(url))
}

/// The database settings alone: all `keys-service migrate` needs.
pub fn database_from_env() -> Result<rl_contract::db::DatabaseSettings, SettingsError> {
    rl_contract::db::DatabaseSettings::from_env(KEYS_DATABASE_URL, "keys.db")
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        let db = database_from_env()?;
        Ok(Self {
            listen_addr: settings::parse(LISTEN_ADDR, ([127, 0, 0, 1], 8081).into())?,
            admin_addr: settings::parse(ADMIN_ADDR, ([127, 0, 0, 1], 9081).into())?,
            shutdown_grace: settings::millis(SHUTDOWN_GRACE_PERIOD_MS, 10_000)?,
            database_url: db.url,
            pool: db.pool,
            max_body_bytes: settings::parse(MAX_BODY_BYTES, 16 * 1024)?,
            change_feed_max_wait: settings::millis(CHANGE_FEED_MAX_WAIT_MS, 25_000)?,
            audit_service_url: settings::string(AUDIT_SERVICE_URL, "http://127.0.0.1:8082")
                .trim_end_matches('/')
                .to_owned(),
            relay_max_backoff: settings::millis(RELAY_MAX_BACKOFF_MS, 30_000)?,
            redis_url: redis_url()?,
            redis_key_ttl: settings::millis(REDIS_KEY_TTL_MS, 300_000)?,
            redis_negative_ttl: settings::millis(REDIS_NEGATIVE_TTL_MS, 10_000)?,
            redis_timeout: settings::millis(REDIS_TIMEOUT_MS, 250)?,
            secrets: rl_contract::signing::Secrets::from_env(true)?,
            idempotency: rl_contract::idempotency::IdempotencySettings::from_env()?,
        })
    }

    /// Settings for tests: port 0 on loopback and the given database.
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        Self {
            listen_addr: ([127, 0, 0, 1], 0).into(),
            admin_addr: ([127, 0, 0, 1], 0).into(),
            shutdown_grace: Duration::from_secs(5),
            database_url: database_url.into().into(),
            pool: PoolSettings::default(),
            max_body_bytes: 16 * 1024,
            change_feed_max_wait: Duration::from_secs(25),
            audit_service_url: "http://127.0.0.1:9".to_owned(),
            relay_max_backoff: Duration::from_millis(500),
            redis_url: None,
            redis_key_ttl: Duration::from_secs(300),
            redis_negative_ttl: Duration::from_secs(10),
            redis_timeout: Duration::from_millis(250),
            secrets: rl_contract::signing::Secrets::new(None, None, true),
            idempotency: rl_contract::idempotency::IdempotencySettings {
                retention: Duration::from_secs(24 * 60 * 60),
                lease: Duration::from_secs(30),
            },
        }
    }
}
