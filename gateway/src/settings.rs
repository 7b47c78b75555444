//! Gateway settings, read once from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use rl_contract::settings::{self, SettingsError};

pub const LISTEN_ADDR: &str = "GATEWAY_LISTEN_ADDR";
pub const ADMIN_ADDR: &str = "GATEWAY_ADMIN_ADDR";
pub const THREADS: &str = "GATEWAY_THREADS";
pub const KEYS_SERVICE_URL: &str = "KEYS_SERVICE_URL";
pub const AUDIT_SERVICE_URL: &str = "AUDIT_SERVICE_URL";
pub const HEALTH_SERVICE_URL: &str = "HEALTH_SERVICE_URL";
pub const WEBHOOKS_SERVICE_URL: &str = "WEBHOOKS_SERVICE_URL";
pub const DEFAULT_UPSTREAM_URL: &str = "DEFAULT_UPSTREAM_URL";
pub const UPSTREAM_CONNECT_TIMEOUT_MS: &str = "GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS";
pub const UPSTREAM_READ_TIMEOUT_MS: &str = "GATEWAY_UPSTREAM_READ_TIMEOUT_MS";
pub const KEY_LOOKUP_TIMEOUT_MS: &str = "GATEWAY_KEY_LOOKUP_TIMEOUT_MS";
pub const KEY_LOOKUP_CONCURRENCY: &str = "GATEWAY_KEY_LOOKUP_CONCURRENCY";
pub const KEY_LOOKUP_RATE: &str = "GATEWAY_KEY_LOOKUP_RATE";
pub const KEY_CACHE_CAPACITY: &str = "GATEWAY_KEY_CACHE_CAPACITY";
pub const KEY_CACHE_TTL_MS: &str = "GATEWAY_KEY_CACHE_TTL_MS";
pub const KEY_NEGATIVE_TTL_MS: &str = "GATEWAY_KEY_NEGATIVE_TTL_MS";
pub const KEY_CACHE_UNSYNCED_TTL_MS: &str = "GATEWAY_KEY_CACHE_UNSYNCED_TTL_MS";
pub const USAGE_FLUSH_INTERVAL_MS: &str = "GATEWAY_USAGE_FLUSH_INTERVAL_MS";
pub const GRACE_PERIOD_SECONDS: &str = "GATEWAY_GRACE_PERIOD_SECONDS";
pub const SHUTDOWN_TIMEOUT_SECONDS: &str = "GATEWAY_SHUTDOWN_TIMEOUT_SECONDS";
pub const AUTH_DEV_BYPASS: &str = "AUTH_DEV_BYPASS";
pub const NODE_ENV: &str = "NODE_ENV";
pub const REDIS_URL: &str = "REDIS_URL";
pub const REDIS_TIMEOUT_MS: &str = "REDIS_TIMEOUT_MS";
pub const CLERK_JWKS_URL: &str = "CLERK_JWKS_URL";
pub const CLERK_JWT_KEY: &str = "CLERK_JWT_KEY";
pub const CLERK_SECRET_KEY: &str = "CLERK_SECRET_KEY";
pub const CLERK_API_URL: &str = "CLERK_API_URL";
pub const CLERK_PUBLISHABLE_KEY: &str = "CLERK_PUBLISHABLE_KEY";
pub const CLERK_FRONTEND_API_URL: &str = "CLERK_FRONTEND_API_URL";
pub const CLERK_ISSUER: &str = "CLERK_ISSUER";
pub const CLERK_AUTHORIZED_PARTIES: &str = "CLERK_AUTHORIZED_PARTIES";
pub const CLERK_ALGORITHMS: &str = "CLERK_ALGORITHMS";
pub const CLERK_CLOCK_SKEW_SECONDS: &str = "CLERK_CLOCK_SKEW_SECONDS";
pub const CLERK_JWKS_TIMEOUT_MS: &str = "CLERK_JWKS_TIMEOUT_MS";
pub const CLERK_JWKS_REFRESH_INTERVAL_MS: &str = "CLERK_JWKS_REFRESH_INTERVAL_MS";
pub const CLERK_JWKS_MIN_REFETCH_INTERVAL_MS: &str = "CLERK_JWKS_MIN_REFETCH_INTERVAL_MS";
pub const CLERK_MAX_TOKEN_BYTES: &str = "CLERK_MAX_TOKEN_BYTES";
pub const CLERK_MEMBERSHIP_CACHE_TTL_MS: &str = "CLERK_MEMBERSHIP_CACHE_TTL_MS";
pub const SESSION_CACHE_CAPACITY: &str = "GATEWAY_SESSION_CACHE_CAPACITY";
pub const ROUTE_POLICY_FILE: &str = "GATEWAY_ROUTE_POLICY_FILE";
pub const REQUEST_HEADER_TIMEOUT_MS: &str = "GATEWAY_REQUEST_HEADER_TIMEOUT_MS";
pub const KEEPALIVE_TIMEOUT_SECONDS: &str = "GATEWAY_KEEPALIVE_TIMEOUT_SECONDS";
pub const MAX_REQUEST_HEADER_BYTES: &str = "GATEWAY_MAX_REQUEST_HEADER_BYTES";
pub const MAX_REQUEST_HEADERS: &str = "GATEWAY_MAX_REQUEST_HEADERS";
pub const UNDERSCORE_HEADERS_ALLOW: &str = "GATEWAY_UNDERSCORE_HEADERS_ALLOW";
pub const ALLOW_NON_ASCII_PATHS: &str = "GATEWAY_ALLOW_NON_ASCII_PATHS";
pub const PUBLIC_MAX_BODY_BYTES: &str = "GATEWAY_PUBLIC_MAX_BODY_BYTES";
pub const BODY_READ_TIMEOUT_MS: &str = "GATEWAY_BODY_READ_TIMEOUT_MS";
pub const KEY_LOOKUP_RATE_PER_CLIENT: &str = "GATEWAY_KEY_LOOKUP_RATE_PER_CLIENT";

/// An upstream as configured: `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `host:port`, resolved when the gateway starts and re-resolved in the background.
    pub authority: String,
}

impl std::str::FromStr for UpstreamUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("http://")
            .ok_or("must start with http:// (TLS to upstreams is terminated by the mesh)")?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            return Err("must be http://host:port with no path".into());
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self { authority })
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen_addr: SocketAddr,
    /// `/metrics`, `/livez`, `/readyz`.
    pub admin_addr: SocketAddr,
    pub threads: usize,
    pub keys_service: UpstreamUrl,
    pub audit_service: UpstreamUrl,
    pub health_service: UpstreamUrl,
    pub webhooks_service: UpstreamUrl,
    pub default_upstream: UpstreamUrl,
    pub upstream_connect_timeout: Duration,
    pub upstream_read_timeout: Duration,
    pub key_lookup_timeout: Duration,
    pub key_lookup_concurrency: usize,
    /// keys-service lookups per second this gateway may start (a token bucket).
    pub key_lookup_rate: u32,
    pub key_cache_capacity: u64,
    pub key_cache_ttl: Duration,
    pub key_negative_ttl: Duration,
    /// While the change feed is not connected, cached keys live at most this long.
    pub key_cache_unsynced_ttl: Duration,
    pub usage_flush_interval: Duration,
    pub grace_period_seconds: u64,
    pub shutdown_timeout_seconds: u64,
    /// The local-development bypass, already checked against `NODE_ENV`.
    pub dev_bypass: bool,
    /// The shared Redis tier and its invalidation channel, when configured.
    /// May carry a password: a secret, never printed.
    pub redis_url: Option<secrecy::SecretString>,
    pub redis_timeout: Duration,
    pub clerk: ClerkSettings,
    /// Signs the injected identity (and authenticates internal calls).
    pub secrets: rl_contract::signing::Secrets,
    /// The route policy, already loaded (built-in defaults unless a file replaces them).
    pub policy: crate::policy::Policy,
    /// Limits on each request head, and its deadline (`conn_guard`, `request_rules`).
    pub guard: crate::conn_guard::GuardSettings,
    /// Idle time allowed between requests on a client connection.
    pub keepalive_timeout_seconds: u64,
    /// Percent-encoded UTF-8 in paths (off: refused with `400`).
    pub allow_non_ascii_paths: bool,
    /// Body limit on the public routes (`/webhooks/*`, `/health`, docs): no credential
    /// vouches for these clients.
    pub public_max_body_bytes: u64,
    /// The whole request body must arrive within this on public routes; on authenticated
    /// routes it bounds each read.
    pub body_read_timeout: Duration,
    /// keys-service lookups per second one client address (IPv6: one /64) may cause.
    pub key_lookup_rate_per_client: u32,
}

/// How session tokens are verified. Production must set `CLERK_ISSUER`.
#[derive(Debug, Clone)]
pub struct ClerkSettings {
    pub jwks_url: Option<String>,
    /// PEM public key for networkless verification (`CLERK_JWT_KEY`), parsed once.
    pub jwt_key: Option<crate::jwks::VerifyingKey>,
    /// Clerk Backend API key: a secret, never printed.
    pub secret_key: Option<secrecy::SecretString>,
    pub api_url: String,
    /// The dashboard's sign-in (ClerkJS): `pk_live_…` / `pk_test_…`.
    pub publishable_key: Option<String>,
    /// The Frontend API origin ClerkJS loads from; derived from the publishable key when
    /// unset.
    pub frontend_api_url: Option<String>,
    pub issuer: Option<String>,
    pub authorized_parties: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub clock_skew: Duration,
    pub jwks_timeout: Duration,
    pub jwks_refresh_interval: Duration,
    pub jwks_min_refetch_interval: Duration,
    pub max_token_bytes: usize,
    pub membership_cache_ttl: Duration,
    pub session_cache_capacity: u64,
}

fn algorithms(raw: Option<String>) -> Result<Vec<Algorithm>, SettingsError> {
    let Some(raw) = raw else {
        return Ok(vec![Algorithm::RS256]);
    };
    let mut out = Vec::new();
    for a in raw.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        out.push(match a {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            other => {
                return Err(SettingsError::new(
                    CLERK_ALGORITHMS,
                    raw.clone(),
                    format!("{other} is not allowed (RS256, RS384, RS512)"),
                ));
            }
        });
    }
    if out.is_empty() {
        return Err(SettingsError::new(CLERK_ALGORITHMS, raw, "empty"));
    }
    Ok(out)
}

impl ClerkSettings {
    pub fn from_env() -> Result<Self, SettingsError> {
        let jwt_key = settings::raw(CLERK_JWT_KEY)
            .map(|k| {
                let pem = k.replace("\\n", "\n");
                jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes())
                    .map(|key| crate::jwks::VerifyingKey {
                        key: std::sync::Arc::new(key),
                        alg: None,
                    })
                    .map_err(|_| {
                        SettingsError::new(CLERK_JWT_KEY, "<pem>", "not an RSA public key in PEM")
                    })
            })
            .transpose()?;
        Ok(Self {
            jwks_url: settings::raw(CLERK_JWKS_URL),
            jwt_key,
            secret_key: settings::raw(CLERK_SECRET_KEY).map(Into::into),
            api_url: settings::string(CLERK_API_URL, "https://api.clerk.com"),
            publishable_key: publishable_key()?,
            frontend_api_url: frontend_api_url()?,
            issuer: settings::raw(CLERK_ISSUER),
            authorized_parties: settings::raw(CLERK_AUTHORIZED_PARTIES)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            algorithms: algorithms(settings::raw(CLERK_ALGORITHMS))?,
            clock_skew: Duration::from_secs(settings::parse(CLERK_CLOCK_SKEW_SECONDS, 5)?),
            jwks_timeout: settings::millis(CLERK_JWKS_TIMEOUT_MS, 3_000)?,
            jwks_refresh_interval: settings::millis(CLERK_JWKS_REFRESH_INTERVAL_MS, 300_000)?,
            jwks_min_refetch_interval: settings::millis(
                CLERK_JWKS_MIN_REFETCH_INTERVAL_MS,
                30_000,
            )?,
            max_token_bytes: settings::parse(CLERK_MAX_TOKEN_BYTES, 8 * 1024)?,
            membership_cache_ttl: settings::millis(CLERK_MEMBERSHIP_CACHE_TTL_MS, 60_000)?,
            session_cache_capacity: settings::parse(SESSION_CACHE_CAPACITY, 100_000)?,
        })
    }
}

/// `REDIS_URL`, checked now: a typo must stop the gateway at start, not disable the tier.
fn redis_url() -> Result<Option<secrecy::SecretString>, SettingsError> {
    let Some(url) = settings::raw(REDIS_URL) else {
        return Ok(None);
    };
    redis::Client::open(url.as_str()).map_err(|e| SettingsError::new(REDIS_URL, "<url>", e))?;
    Ok(Some(url.into()))
}

fn publishable_key() -> Result<Option<String>, SettingsError> {
    let Some(pk) = settings::raw(CLERK_PUBLISHABLE_KEY) else {
        return Ok(None);
    };
    if crate::dashboard::frontend_api_origin(&pk).is_none()
        && settings::raw(CLERK_FRONTEND_API_URL).is_none()
    {
        return Err(SettingsError::new(
            CLERK_PUBLISHABLE_KEY,
            "<key>",
            "not a Clerk publishable key (pk_live_… / pk_test_…)",
        ));
    }
    Ok(Some(pk))
}

fn frontend_api_url() -> Result<Option<String>, SettingsError> {
    let Some(url) = settings::raw(CLERK_FRONTEND_API_URL) else {
        return Ok(None);
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or("");
    let host = rest.trim_end_matches('/');
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':')
    {
        return Err(SettingsError::new(
            CLERK_FRONTEND_API_URL,
            url.clone(),
            "must be an origin: https://host[:port]",
        ));
    }
    Ok(Some(url.trim_end_matches('/').to_owned()))
}

fn policy_from_env() -> Result<crate::policy::Policy, SettingsError> {
    let Some(path) = settings::raw(ROUTE_POLICY_FILE) else {
        return Ok(crate::policy::Policy::default());
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| SettingsError::new(ROUTE_POLICY_FILE, path.clone(), e))?;
    crate::policy::Policy::from_json(&text)
        .map_err(|e| SettingsError::new(ROUTE_POLICY_FILE, path, e))
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        // Any spelling of production counts: the bypass must fail closed.
        let production = settings::raw(NODE_ENV).is_some_and(|v| {
            let v = v.trim().to_ascii_lowercase();
            v == "production" || v == "prod"
        });
        let bypass_requested = settings::flag(AUTH_DEV_BYPASS, false)?;
        if bypass_requested && production {
            tracing::error!(
                "AUTH_DEV_BYPASS is set but NODE_ENV=production: the bypass stays OFF; every \
                 request must present a Bearer credential"
            );
        }
        Ok(Self {
            listen_addr: settings::parse(LISTEN_ADDR, ([127, 0, 0, 1], 8080).into())?,
            admin_addr: settings::parse(ADMIN_ADDR, ([127, 0, 0, 1], 9080).into())?,
            threads: settings::parse(THREADS, 2)?,
            keys_service: settings::parse(KEYS_SERVICE_URL, url("127.0.0.1:8081"))?,
            audit_service: settings::parse(AUDIT_SERVICE_URL, url("127.0.0.1:8082"))?,
            health_service: settings::parse(HEALTH_SERVICE_URL, url("127.0.0.1:8083"))?,
            webhooks_service: settings::parse(WEBHOOKS_SERVICE_URL, url("127.0.0.1:8084"))?,
            default_upstream: settings::parse(DEFAULT_UPSTREAM_URL, url("127.0.0.1:8090"))?,
            upstream_connect_timeout: settings::millis(UPSTREAM_CONNECT_TIMEOUT_MS, 2_000)?,
            upstream_read_timeout: settings::millis(UPSTREAM_READ_TIMEOUT_MS, 30_000)?,
            key_lookup_timeout: settings::millis(KEY_LOOKUP_TIMEOUT_MS, 2_000)?,
            key_lookup_concurrency: settings::parse(KEY_LOOKUP_CONCURRENCY, 64)?,
            key_lookup_rate: settings::parse(KEY_LOOKUP_RATE, 2000)?,
            key_cache_capacity: settings::parse(KEY_CACHE_CAPACITY, 1_000_000)?,
            key_cache_ttl: settings::millis(KEY_CACHE_TTL_MS, 300_000)?,
            key_negative_ttl: settings::millis(KEY_NEGATIVE_TTL_MS, 10_000)?,
            key_cache_unsynced_ttl: settings::millis(KEY_CACHE_UNSYNCED_TTL_MS, 5_000)?,
            usage_flush_interval: settings::millis(USAGE_FLUSH_INTERVAL_MS, 10_000)?,
            grace_period_seconds: settings::parse(GRACE_PERIOD_SECONDS, 5)?,
            shutdown_timeout_seconds: settings::parse(SHUTDOWN_TIMEOUT_SECONDS, 10)?,
            dev_bypass: bypass_requested && !production,
            redis_url: redis_url()?,
            redis_timeout: settings::millis(REDIS_TIMEOUT_MS, 100)?,
            clerk: ClerkSettings::from_env()?,
            secrets: rl_contract::signing::Secrets::from_env(false)?,
            policy: policy_from_env()?,
            guard: crate::conn_guard::GuardSettings {
                header_timeout: settings::millis(REQUEST_HEADER_TIMEOUT_MS, 10_000)?,
                head: crate::request_rules::HeadLimits {
                    max_headers: max_headers()?,
                    max_header_bytes: settings::parse(MAX_REQUEST_HEADER_BYTES, 32 * 1024)?,
                    underscore_allowed: settings::raw(UNDERSCORE_HEADERS_ALLOW)
                        .map(|v| {
                            v.split(',')
                                .map(|h| h.trim().to_ascii_lowercase())
                                .filter(|h| !h.is_empty())
                                .collect()
                        })
                        .unwrap_or_default(),
                },
            },
            keepalive_timeout_seconds: settings::parse(KEEPALIVE_TIMEOUT_SECONDS, 60)?,
            allow_non_ascii_paths: settings::flag(ALLOW_NON_ASCII_PATHS, false)?,
            public_max_body_bytes: settings::parse(PUBLIC_MAX_BODY_BYTES, 1024 * 1024)?,
            body_read_timeout: settings::millis(BODY_READ_TIMEOUT_MS, 10_000)?,
            key_lookup_rate_per_client: settings::parse(KEY_LOOKUP_RATE_PER_CLIENT, 50)?,
        })
    }
}

fn max_headers() -> Result<usize, SettingsError> {
    let n: usize = settings::parse(MAX_REQUEST_HEADERS, 100)?;
    if n == 0 || n >= crate::conn_guard::MAX_PARSED_HEADERS {
        return Err(SettingsError::new(
            MAX_REQUEST_HEADERS,
            n.to_string(),
            format!("must be 1..{}", crate::conn_guard::MAX_PARSED_HEADERS - 1),
        ));
    }
    Ok(n)
}

fn url(authority: &str) -> UpstreamUrl {
    UpstreamUrl {
        authority: authority.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        assert_eq!(
            "http://keys:8081"
                .parse::<UpstreamUrl>()
                .expect("ok")
                .authority,
            "keys:8081"
        );
        assert_eq!(
            "http://keys/".parse::<UpstreamUrl>().expect("ok").authority,
            "keys:80"
        );
        assert!("https://keys:8081".parse::<UpstreamUrl>().is_err());
        assert!("http://keys:8081/path".parse::<UpstreamUrl>().is_err());
        assert!("keys:8081".parse::<UpstreamUrl>().is_err());
    }
}
