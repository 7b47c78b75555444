//! audit-service settings, read once from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use rl_contract::db::PoolSettings;
use rl_contract::settings::{self, SettingsError};

pub const LISTEN_ADDR: &str = "AUDIT_LISTEN_ADDR";
pub const ADMIN_ADDR: &str = "AUDIT_ADMIN_ADDR";
pub const SHUTDOWN_GRACE_PERIOD_MS: &str = "SHUTDOWN_GRACE_PERIOD_MS";
pub const AUDIT_DATABASE_URL: &str = "AUDIT_DATABASE_URL";
pub const MAX_BODY_BYTES: &str = "AUDIT_MAX_BODY_BYTES";

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
    /// Identity-signing secrets (refuses unsigned identity unless turned off).
    pub secrets: rl_contract::signing::Secrets,
}

/// The database settings alone: all `audit-service migrate` needs.
pub fn database_from_env() -> Result<rl_contract::db::DatabaseSettings, SettingsError> {
    rl_contract::db::DatabaseSettings::from_env(AUDIT_DATABASE_URL, "audit.db")
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        let db = database_from_env()?;
        Ok(Self {
            listen_addr: settings::parse(LISTEN_ADDR, ([127, 0, 0, 1], 8082).into())?,
            admin_addr: settings::parse(ADMIN_ADDR, ([127, 0, 0, 1], 9082).into())?,
            shutdown_grace: settings::millis(SHUTDOWN_GRACE_PERIOD_MS, 10_000)?,
            database_url: db.url,
            pool: db.pool,
            max_body_bytes: settings::parse(MAX_BODY_BYTES, 4 * 1024 * 1024)?,
            secrets: rl_contract::signing::Secrets::from_env(true)?,
        })
    }

    pub fn for_tests(database_url: impl Into<String>) -> Self {
        Self {
            listen_addr: ([127, 0, 0, 1], 0).into(),
            admin_addr: ([127, 0, 0, 1], 0).into(),
            shutdown_grace: Duration::from_secs(5),
            database_url: database_url.into().into(),
            pool: PoolSettings::default(),
            max_body_bytes: 4 * 1024 * 1024,
            secrets: rl_contract::signing::Secrets::new(None, None, true),
        }
    }
}
