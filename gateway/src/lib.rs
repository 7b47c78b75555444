//! ReconLayer Edge gateway: the pingora proxy every API request passes through.
//!
//! It authenticates (API key or Clerk session), resolves exactly one organization, replaces
//! any client-sent identity headers with its own, and proxies to keys-service,
//! audit-service, health-service or the default upstream.
//!
//! # Layout
//! In the order a request meets them:
//! - [`conn_guard`]: every client connection, before pingora parses it: request-head
//!   deadline (slowloris), size, validity — refusals in the documented envelope.
//! - [`proxy`]: the `ProxyHttp` phases, kept short: the decisions are the modules below.
//! - [`request_id`]: the request id every line and response carries.
//! - [`request_rules`]: methods, `Host`, header names (no `_`), sizes, framing.
//! - [`path`]: the canonical request target (pingora normalizes nothing).
//! - [`routes`]: route classes and where they go.
//! - [`docs`], [`dashboard`]: `/openapi.*`, `/docs` and `/dashboard`, built in.
//! - [`credential`]: reading `Authorization`; API-key shape and hash.
//! - [`auth`]: authentication, from headers to exactly one [`caller::Caller`]:
//!   - [`api_key`]: the in-process cache ([`key_cache`], compact and bounded) in front of
//!     [`redis_tier`] and [`keys_client`] (keys-service), with change-feed invalidation,
//!     coalesced lookups and per-client lookup budgets;
//!   - [`jwks`], [`session`], [`membership`]: Clerk session tokens, verified offline.
//! - [`caller`]: the decision type (`Caller`, `SessionUser`) the modules around it share.
//! - [`policy`]: what each route requires (session only, permissions, scopes).
//! - [`identity`]: stripping the edge-owned headers and injecting (signed) identity.
//! - [`upstream`]: upstream peers, resolved off the request path.
//! - [`usage`]: batched `lastUsedAt` reports.
//! - [`error`]: every refusal, mapped to the documented envelope.
//! - [`metrics`]: Prometheus metrics and the admin listener (`/metrics`, `/livez`, `/readyz`).
//! - [`background`]: change feed, Redis invalidations, usage flushing, re-resolution.
//! - [`settings`]: typed configuration from the environment, validated at start.

pub mod api_key;
pub mod auth;
pub mod background;
pub mod caller;
pub mod conn_guard;
pub mod credential;
pub mod dashboard;
pub mod docs;
pub mod error;
pub mod identity;
pub mod jwks;
pub mod key_cache;
pub mod keys_client;
pub mod membership;
pub mod metrics;
pub mod path;
pub mod policy;
pub mod proxy;
pub mod redis_tier;
pub mod request_id;
pub mod request_rules;
pub mod routes;
pub mod session;
pub mod settings;
pub mod upstream;
pub mod usage;

use std::sync::Arc;

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use secrecy::ExposeSecret;

pub use settings::Settings;

use api_key::{ApiKeyVerifier, CacheSettings};
use keys_client::KeysClient;
use upstream::Upstreams;
use usage::UsageRecorder;

use jwks::{Jwks, KeySource};
use membership::Memberships;
use session::{SessionSettings, SessionVerifier};

/// Long-lived state shared by every request.
pub struct GatewayState {
    pub settings: Settings,
    pub metrics: Arc<metrics::Metrics>,
    pub keys: ApiKeyVerifier,
    pub sessions: SessionVerifier,
    pub memberships: Memberships,
    pub usage: UsageRecorder,
    pub upstreams: Upstreams,
    pub dashboard: dashboard::Dashboard,
}

impl GatewayState {
    /// Everything a request needs, built once. Fails only if an HTTP client cannot be built.
    pub fn new(
        settings: Settings,
        redis: Option<redis_tier::RedisTier>,
    ) -> Result<Self, reqwest::Error> {
        let metrics = Arc::new(metrics::Metrics::new());
        let client = KeysClient::new(
            settings.keys_service.authority.clone(),
            settings.key_lookup_timeout,
            settings.secrets.internal_token(),
        );
        let keys = ApiKeyVerifier::new(
            client,
            &CacheSettings {
                capacity: settings.key_cache_capacity,
                lookup_rate: settings.key_lookup_rate,
                lookup_rate_per_client: settings.key_lookup_rate_per_client,
                ttl: settings.key_cache_ttl,
                negative_ttl: settings.key_negative_ttl,
                unsynced_ttl: settings.key_cache_unsynced_ttl,
                lookup_concurrency: settings.key_lookup_concurrency,
                lookup_timeout: settings.key_lookup_timeout,
            },
            metrics.clone(),
            redis,
        );
        let upstreams = Upstreams::new(&settings);
        let c = &settings.clerk;
        let source = match (&c.jwt_key, &c.jwks_url) {
            (Some(key), _) => KeySource::Pem(key.clone()),
            (None, Some(url)) => KeySource::Jwks {
                url: url.clone(),
                // The secret key authenticates to the Backend API's /v1/jwks only; the
                // Frontend API's public JWKS never sees it.
                bearer: c
                    .secret_key
                    .as_ref()
                    .filter(|_| url.trim_end_matches('/').ends_with("/v1/jwks"))
                    .map(|k| k.expose_secret().to_owned()),
            },
            (None, None) => KeySource::None,
        };
        let jwks = Arc::new(Jwks::new(
            source,
            c.jwks_timeout,
            c.jwks_min_refetch_interval,
            metrics.clone(),
        )?);
        let sessions = SessionVerifier::new(
            SessionSettings {
                algorithms: c.algorithms.clone(),
                clock_skew: c.clock_skew,
                issuer: c.issuer.clone(),
                authorized_parties: c.authorized_parties.clone(),
                max_token_bytes: c.max_token_bytes,
                cache_capacity: c.session_cache_capacity,
            },
            jwks,
            metrics.clone(),
        );
        let memberships = Memberships::new(
            c.api_url.clone(),
            c.secret_key.as_ref().map(|k| k.expose_secret().to_owned()),
            c.jwks_timeout,
            c.membership_cache_ttl,
        )?;
        let dashboard = dashboard::Dashboard::new(
            settings.dev_bypass,
            c.publishable_key.as_deref(),
            c.frontend_api_url.as_deref(),
        );
        Ok(Self {
            settings,
            metrics,
            keys,
            sessions,
            memberships,
            usage: UsageRecorder::default(),
            upstreams,
            dashboard,
        })
    }
}

impl GatewayState {
    /// Ready to take traffic: keys-service's address is known.
    pub fn is_ready(&self) -> bool {
        self.upstreams.keys.peer().is_some()
    }
}

/// Build the pingora server and serve until SIGTERM (graceful) or SIGINT (fast).
/// Blocks the calling thread; pingora owns its runtimes.
pub fn run(settings: Settings) {
    if settings.clerk.issuer.is_none()
        && (settings.clerk.jwks_url.is_some() || settings.clerk.jwt_key.is_some())
    {
        tracing::warn!(
            "CLERK_ISSUER is not set: session tokens of any issuer signed by these keys are accepted; set it in production"
        );
    }
    if !settings.secrets.can_sign() {
        tracing::warn!(
            "IDENTITY_SIGNING_SECRET is not set: injected identity is unsigned, and services \
             that verify it will refuse every request"
        );
    }
    if settings.dev_bypass {
        tracing::warn!(
            "AUTH_DEV_BYPASS is ON: requests without Authorization are trusted by \
             x-organization-id alone. Local development only."
        );
    }
    let conf = ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(settings.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(settings.shutdown_timeout_seconds),
        ..ServerConf::default()
    };
    let listen = settings.listen_addr.to_string();
    let admin = settings.admin_addr.to_string();
    let redis = match settings.redis_url.as_ref().map(|u| u.expose_secret()) {
        None => None,
        Some(url) => match redis_tier::RedisTier::new(url, settings.redis_timeout) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("configuration error: invalid setting REDIS_URL: {e}");
                std::process::exit(64);
            }
        },
    };
    let state = match GatewayState::new(settings, redis) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("start-up error: cannot build an HTTP client: {e}");
            std::process::exit(1);
        }
    };

    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    // Every client connection passes the guard (head deadline, size, validity) before
    // pingora's HTTP/1 session reads it.
    let app = pingora::proxy::http_proxy(
        &server.configuration,
        proxy::Gateway {
            state: state.clone(),
        },
    );
    let mut proxy = pingora::services::listening::Service::new(
        "reconlayer-gateway".to_owned(),
        conn_guard::GuardedApp::new(app, state.settings.guard.clone()),
    );
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    let mut admin_service = pingora::services::listening::Service::new(
        "gateway-admin".to_owned(),
        metrics::AdminApp {
            state: state.clone(),
        },
    );
    admin_service.add_tcp(&admin);
    server.add_service(admin_service);
    server.add_service(background_service(
        "gateway-background",
        background::Background { state },
    ));
    tracing::info!(addr = %listen, admin = %admin, "gateway listening");
    server.run(RunArgs::default());
}
