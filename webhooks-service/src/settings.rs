//! webhooks-service settings, read once from the environment and validated at start
//! (an invalid value names its variable and exits 64).

use std::net::SocketAddr;
use std::time::Duration;

use rl_contract::db::PoolSettings;
use rl_contract::settings::{self, SettingsError};

use crate::schedule::RetrySchedule;
use crate::secret::EncryptionKey;

pub const LISTEN_ADDR: &str = "WEBHOOKS_LISTEN_ADDR";
pub const ADMIN_ADDR: &str = "WEBHOOKS_ADMIN_ADDR";
pub const SHUTDOWN_GRACE_PERIOD_MS: &str = "SHUTDOWN_GRACE_PERIOD_MS";
pub const WEBHOOKS_DATABASE_URL: &str = "WEBHOOKS_DATABASE_URL";
pub const MAX_BODY_BYTES: &str = "WEBHOOKS_MAX_BODY_BYTES";
pub const AUDIT_SERVICE_URL: &str = "AUDIT_SERVICE_URL";
pub const RELAY_MAX_BACKOFF_MS: &str = "WEBHOOKS_AUDIT_RELAY_MAX_BACKOFF_MS";
pub const ENCRYPTION_KEY: &str = "WEBHOOKS_ENCRYPTION_KEY";
pub const DEV_EPHEMERAL_KEY: &str = "WEBHOOKS_DEV_EPHEMERAL_ENCRYPTION_KEY";
pub const SECRET_BYTES: &str = "WEBHOOKS_SECRET_BYTES";
pub const ROTATION_OVERLAP_MS: &str = "WEBHOOKS_SECRET_ROTATION_OVERLAP_MS";
pub const MAX_ENDPOINTS: &str = "WEBHOOKS_MAX_ENDPOINTS_PER_ORGANIZATION";
pub const MAX_EVENT_TYPES: &str = "WEBHOOKS_MAX_EVENT_TYPES_PER_ENDPOINT";
pub const MAX_EVENT_BYTES: &str = "WEBHOOKS_MAX_EVENT_BYTES";
pub const RETRY_SCHEDULE: &str = "WEBHOOKS_RETRY_SCHEDULE";
pub const RETRY_JITTER_PERCENT: &str = "WEBHOOKS_RETRY_JITTER_PERCENT";
pub const RETRY_AFTER_MAX_MS: &str = "WEBHOOKS_RETRY_AFTER_MAX_MS";
pub const REQUEST_TIMEOUT_MS: &str = "WEBHOOKS_REQUEST_TIMEOUT_MS";
pub const LEASE_MS: &str = "WEBHOOKS_LEASE_MS";
pub const WORKER_ENABLED: &str = "WEBHOOKS_WORKER_ENABLED";
pub const WORKER_CONCURRENCY: &str = "WEBHOOKS_WORKER_CONCURRENCY";
pub const ENDPOINT_CONCURRENCY: &str = "WEBHOOKS_ENDPOINT_CONCURRENCY";
pub const POLL_INTERVAL_MS: &str = "WEBHOOKS_POLL_INTERVAL_MS";
pub const DISABLE_AFTER_MS: &str = "WEBHOOKS_DISABLE_FAILING_ENDPOINT_AFTER_MS";
pub const WORKER_STALL_MS: &str = "WEBHOOKS_WORKER_STALL_MS";
pub const ALLOW_PRIVATE: &str = "WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS";
pub const REQUIRE_HTTPS: &str = "WEBHOOKS_REQUIRE_HTTPS";
pub const NODE_ENV: &str = "NODE_ENV";

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
    pub audit_service_url: String,
    pub relay_max_backoff: Duration,
    pub secrets: rl_contract::signing::Secrets,
    pub idempotency: rl_contract::idempotency::IdempotencySettings,
    /// Encrypts endpoint secrets and signing keys at rest (AES-256-GCM).
    pub encryption_key: EncryptionKey,
    /// Random bytes in a new `whsec_` secret (24–64).
    pub secret_bytes: usize,
    /// How long the previous secret keeps signing after a rotation.
    pub rotation_overlap: Duration,
    pub max_endpoints_per_org: u32,
    pub max_event_types: usize,
    /// Largest `data` of one event, serialized.
    pub max_event_bytes: usize,
    pub retry: RetrySchedule,
    pub retry_jitter_percent: u32,
    /// The longest delay a receiver's `Retry-After` can impose.
    pub retry_after_max: Duration,
    /// One delivery attempt, connect to last body byte.
    pub request_timeout: Duration,
    /// How long a worker owns a claimed delivery; another worker takes it over after that.
    pub lease: Duration,
    pub worker_enabled: bool,
    pub worker_concurrency: usize,
    pub endpoint_concurrency: u32,
    pub poll_interval: Duration,
    /// An endpoint failing without a single success for this long is disabled.
    pub disable_after: Duration,
    /// Workers that have not made progress for this long are reported stalled.
    pub worker_stall: Duration,
    pub allow_private_destinations: bool,
    pub require_https: bool,
}

/// The database settings alone: all `webhooks-service migrate` needs.
pub fn database_from_env() -> Result<rl_contract::db::DatabaseSettings, SettingsError> {
    rl_contract::db::DatabaseSettings::from_env(WEBHOOKS_DATABASE_URL, "webhooks.db")
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        let db = database_from_env()?;
        let production = settings::raw(NODE_ENV).as_deref() == Some("production");
        let encryption_key = match settings::raw(ENCRYPTION_KEY) {
            Some(hex) => EncryptionKey::from_hex(&hex)
                .map_err(|reason| SettingsError::new(ENCRYPTION_KEY, "<redacted>", reason))?,
            None if settings::flag(DEV_EPHEMERAL_KEY, false)? && !production => {
                tracing::warn!(
                    "{DEV_EPHEMERAL_KEY}=1: endpoint secrets are encrypted with a key that lives \
                     only in this process. Every stored secret becomes unreadable at restart. \
                     LOCAL DEVELOPMENT ONLY."
                );
                EncryptionKey::generate()
                    .map_err(|e| SettingsError::new(DEV_EPHEMERAL_KEY, "1", e))?
            }
            None => {
                return Err(SettingsError::new(
                    ENCRYPTION_KEY,
                    "",
                    format!(
                        "required: 32 bytes as 64 hex characters (e.g. `openssl rand -hex 32`); \
                         {DEV_EPHEMERAL_KEY}=1 generates a throwaway one for local development"
                    ),
                ));
            }
        };
        let s = Self {
            listen_addr: settings::parse(LISTEN_ADDR, ([127, 0, 0, 1], 8084).into())?,
            admin_addr: settings::parse(ADMIN_ADDR, ([127, 0, 0, 1], 9084).into())?,
            shutdown_grace: settings::millis(SHUTDOWN_GRACE_PERIOD_MS, 10_000)?,
            database_url: db.url,
            pool: db.pool,
            max_body_bytes: settings::parse(MAX_BODY_BYTES, 256 * 1024)?,
            audit_service_url: settings::string(AUDIT_SERVICE_URL, "http://127.0.0.1:8082")
                .trim_end_matches('/')
                .to_owned(),
            relay_max_backoff: settings::millis(RELAY_MAX_BACKOFF_MS, 30_000)?,
            secrets: rl_contract::signing::Secrets::from_env(true)?,
            idempotency: rl_contract::idempotency::IdempotencySettings::from_env()?,
            encryption_key,
            secret_bytes: settings::parse(SECRET_BYTES, 32)?,
            rotation_overlap: settings::millis(ROTATION_OVERLAP_MS, 24 * 60 * 60 * 1000)?,
            max_endpoints_per_org: settings::parse(MAX_ENDPOINTS, 50)?,
            max_event_types: settings::parse(MAX_EVENT_TYPES, 50)?,
            max_event_bytes: settings::parse(MAX_EVENT_BYTES, 64 * 1024)?,
            retry: match settings::raw(RETRY_SCHEDULE) {
                None => RetrySchedule::default(),
                Some(v) => RetrySchedule::parse(&v)
                    .map_err(|reason| SettingsError::new(RETRY_SCHEDULE, v.clone(), reason))?,
            },
            retry_jitter_percent: settings::parse(RETRY_JITTER_PERCENT, 10)?,
            retry_after_max: settings::millis(RETRY_AFTER_MAX_MS, 60 * 60 * 1000)?,
            request_timeout: settings::millis(REQUEST_TIMEOUT_MS, 15_000)?,
            lease: settings::millis(LEASE_MS, 60_000)?,
            worker_enabled: settings::flag(WORKER_ENABLED, true)?,
            worker_concurrency: settings::parse(WORKER_CONCURRENCY, 32)?,
            endpoint_concurrency: settings::parse(ENDPOINT_CONCURRENCY, 4)?,
            poll_interval: settings::millis(POLL_INTERVAL_MS, 1_000)?,
            disable_after: settings::millis(DISABLE_AFTER_MS, 5 * 24 * 60 * 60 * 1000)?,
            worker_stall: settings::millis(WORKER_STALL_MS, 60_000)?,
            allow_private_destinations: settings::flag(ALLOW_PRIVATE, false)?,
            require_https: settings::flag(REQUIRE_HTTPS, production)?,
        };
        s.validate()?;
        if s.allow_private_destinations {
            tracing::warn!(
                "{ALLOW_PRIVATE}=1: webhooks may be delivered to loopback and private-network \
                 addresses. LOCAL DEVELOPMENT AND TESTS ONLY: never set this in production."
            );
        }
        Ok(s)
    }

    /// Cross-field rules: a value that would make the service misbehave is refused.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let num = |v: u64| v.to_string();
        if !(24..=64).contains(&self.secret_bytes) {
            return Err(SettingsError::new(
                SECRET_BYTES,
                num(self.secret_bytes as u64),
                "must be from 24 to 64",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(SettingsError::new(
                REQUEST_TIMEOUT_MS,
                "0",
                "must be positive",
            ));
        }
        // A lease shorter than an attempt would let a second worker start the same attempt
        // while the first is still sending it.
        if self.lease < self.request_timeout + Duration::from_secs(1) {
            return Err(SettingsError::new(
                LEASE_MS,
                num(self.lease.as_millis() as u64),
                format!(
                    "must exceed {REQUEST_TIMEOUT_MS} by at least 1000 ms, so an attempt ends \
                     before another worker may take its delivery over"
                ),
            ));
        }
        if self.worker_concurrency == 0 || self.worker_concurrency > 1024 {
            return Err(SettingsError::new(
                WORKER_CONCURRENCY,
                num(self.worker_concurrency as u64),
                "must be from 1 to 1024",
            ));
        }
        if self.endpoint_concurrency == 0 {
            return Err(SettingsError::new(
                ENDPOINT_CONCURRENCY,
                "0",
                "must be positive",
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(SettingsError::new(
                POLL_INTERVAL_MS,
                "0",
                "must be positive",
            ));
        }
        if self.max_endpoints_per_org == 0 {
            return Err(SettingsError::new(MAX_ENDPOINTS, "0", "must be positive"));
        }
        if self.retry_jitter_percent > 100 {
            return Err(SettingsError::new(
                RETRY_JITTER_PERCENT,
                num(u64::from(self.retry_jitter_percent)),
                "must be from 0 to 100",
            ));
        }
        Ok(())
    }

    /// Settings for tests: port 0 on loopback and the given database.
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        Self {
            listen_addr: ([127, 0, 0, 1], 0).into(),
            admin_addr: ([127, 0, 0, 1], 0).into(),
            shutdown_grace: Duration::from_secs(5),
            database_url: database_url.into().into(),
            pool: PoolSettings::default(),
            max_body_bytes: 256 * 1024,
            audit_service_url: "http://127.0.0.1:9".to_owned(),
            relay_max_backoff: Duration::from_millis(500),
            secrets: rl_contract::signing::Secrets::new(None, None, true),
            idempotency: rl_contract::idempotency::IdempotencySettings {
                retention: Duration::from_secs(24 * 60 * 60),
                lease: Duration::from_secs(30),
            },
            encryption_key: EncryptionKey::from_bytes([7; 32]),
            secret_bytes: 32,
            rotation_overlap: Duration::from_secs(60),
            max_endpoints_per_org: 50,
            max_event_types: 50,
            max_event_bytes: 64 * 1024,
            retry: RetrySchedule::default(),
            retry_jitter_percent: 10,
            retry_after_max: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(5),
            lease: Duration::from_secs(10),
            worker_enabled: true,
            worker_concurrency: 8,
            endpoint_concurrency: 4,
            poll_interval: Duration::from_millis(200),
            disable_after: Duration::from_secs(5 * 24 * 60 * 60),
            worker_stall: Duration::from_secs(30),
            allow_private_destinations: true,
            require_https: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_shorter_than_an_attempt_is_refused() {
        let mut s = Settings::for_tests("sqlite::memory:");
        assert!(s.validate().is_ok());
        s.lease = s.request_timeout;
        let e = s.validate().expect_err("refused");
        assert_eq!(e.name, LEASE_MS);
        s.lease = Duration::from_secs(60);
        s.secret_bytes = 16;
        assert_eq!(s.validate().expect_err("refused").name, SECRET_BYTES);
    }
}
