//! health-service settings, read once from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use rl_contract::settings::{self, SettingsError};

pub const LISTEN_ADDR: &str = "HEALTH_LISTEN_ADDR";
pub const ADMIN_ADDR: &str = "HEALTH_ADMIN_ADDR";
pub const SHUTDOWN_GRACE_PERIOD_MS: &str = "SHUTDOWN_GRACE_PERIOD_MS";
pub const KEYS_SERVICE_URL: &str = "KEYS_SERVICE_URL";
pub const AUDIT_SERVICE_URL: &str = "AUDIT_SERVICE_URL";
pub const WEBHOOKS_SERVICE_URL: &str = "WEBHOOKS_SERVICE_URL";
pub const CHECK_TIMEOUT_MS: &str = "HEALTH_CHECK_TIMEOUT_MS";
pub const REDIS_URL: &str = "REDIS_URL";
pub const CACHE_TTL_MS: &str = "HEALTH_CACHE_TTL_MS";

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen_addr: SocketAddr,
    /// `/metrics`, `/livez`, `/readyz`.
    pub admin_addr: SocketAddr,
    pub shutdown_grace: Duration,
    pub keys_service_url: String,
    pub audit_service_url: String,
    /// webhooks-service, checked when set: its readiness and whether its delivery workers
    /// are making progress.
    pub webhooks_service_url: Option<String>,
    /// Checked when set.
    pub redis_url: Option<String>,
    pub check_timeout: Duration,
    pub cache_ttl: Duration,
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Ok(Self {
            listen_addr: settings::parse(LISTEN_ADDR, ([127, 0, 0, 1], 8083).into())?,
            admin_addr: settings::parse(ADMIN_ADDR, ([127, 0, 0, 1], 9083).into())?,
            shutdown_grace: settings::millis(SHUTDOWN_GRACE_PERIOD_MS, 10_000)?,
            keys_service_url: base_url(KEYS_SERVICE_URL, "http://127.0.0.1:8081"),
            audit_service_url: base_url(AUDIT_SERVICE_URL, "http://127.0.0.1:8082"),
            webhooks_service_url: settings::raw(WEBHOOKS_SERVICE_URL)
                .map(|u| u.trim_end_matches('/').to_owned()),
            redis_url: settings::raw(REDIS_URL),
            check_timeout: settings::millis(CHECK_TIMEOUT_MS, 1_000)?,
            cache_ttl: settings::millis(CACHE_TTL_MS, 2_000)?,
        })
    }
}

fn base_url(name: &'static str, default: &str) -> String {
    settings::string(name, default)
        .trim_end_matches('/')
        .to_owned()
}
