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
    /// Checked when set; parsed at start (a typo stops the service, exit 64).
    pub redis: Option<redis::Client>,
    pub check_timeout: Duration,
    pub cache_ttl: Duration,
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Ok(Self {
            listen_addr: settings::parse(LISTEN_ADDR, ([127, 0, 0, 1], 8083).into())?,
            admin_addr: settings::parse(ADMIN_ADDR, ([127, 0, 0, 1], 9083).into())?,
            shutdown_grace: settings::millis(SHUTDOWN_GRACE_PERIOD_MS, 10_000)?,
            keys_service_url: base_url(KEYS_SERVICE_URL, "http://127.0.0.1:8081")?,
            audit_service_url: base_url(AUDIT_SERVICE_URL, "http://127.0.0.1:8082")?,
            webhooks_service_url: settings::raw(WEBHOOKS_SERVICE_URL)
                .map(|_| base_url(WEBHOOKS_SERVICE_URL, ""))
                .transpose()?,
            redis: settings::raw(REDIS_URL)
                .map(|u| {
                    redis::Client::open(u.as_str())
                        .map_err(|e| SettingsError::new(REDIS_URL, "<url>", e))
                })
                .transpose()?,
            check_timeout: settings::millis(CHECK_TIMEOUT_MS, 1_000)?,
            cache_ttl: settings::millis(CACHE_TTL_MS, 2_000)?,
        })
    }
}

impl Settings {
    /// Settings for tests: port 0 on loopback, the given dependencies, short timeouts.
    pub fn for_tests(keys_service_url: &str, audit_service_url: &str) -> Self {
        Self {
            listen_addr: ([127, 0, 0, 1], 0).into(),
            admin_addr: ([127, 0, 0, 1], 0).into(),
            shutdown_grace: Duration::from_secs(1),
            keys_service_url: keys_service_url.to_owned(),
            audit_service_url: audit_service_url.to_owned(),
            webhooks_service_url: None,
            redis: None,
            check_timeout: Duration::from_millis(300),
            cache_ttl: Duration::from_millis(500),
        }
    }
}

/// `http://host:port` (the services are reached inside the cluster), checked at start.
fn base_url(name: &'static str, default: &str) -> Result<String, SettingsError> {
    let url = settings::string(name, default);
    let rest = url.strip_prefix("http://").unwrap_or("");
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '@', '?', '#', ' ']) {
        return Err(SettingsError::new(
            name,
            url.clone(),
            "must be http://host:port",
        ));
    }
    Ok(format!("http://{authority}"))
}
