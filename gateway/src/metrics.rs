//! The gateway's Prometheus metrics, served on its admin listener with `/livez` and
//! `/readyz` (a small pingora `ServeHttp` app, so the admin port shares pingora's runtime
//! and shutdown).

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use rl_contract::metrics::{LATENCY_BUCKETS, register};

use crate::GatewayState;

pub struct Metrics {
    pub registry: Registry,
    /// Requests by route class, method and status.
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    /// Authentication outcomes by credential type, outcome and reason.
    pub auth: IntCounterVec,
    /// Cache lookups by cache, tier and result.
    pub cache: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub jwks_fetches: IntCounterVec,
    pub key_lookup_duration: HistogramVec,
    /// 1 while the key change feed (or Redis invalidation) is connected.
    pub invalidation_connected: IntGauge,
    pub cached_keys: IntGauge,
    /// Pre-resolved series for the hot path (no label hashing per request).
    pub hot: Hot,
}

/// Series every request touches, resolved once.
pub struct Hot {
    pub api_key_memory_hit: prometheus::IntCounter,
    pub api_key_memory_miss: prometheus::IntCounter,
    pub session_memory_hit: prometheus::IntCounter,
    pub session_memory_miss: prometheus::IntCounter,
    pub auth_api_key_accepted: prometheus::IntCounter,
    pub auth_session_accepted: prometheus::IntCounter,
}

impl Hot {
    fn resolve(cache: &IntCounterVec, auth: &IntCounterVec) -> Self {
        Self {
            api_key_memory_hit: cache.with_label_values(&["api_key", "memory", "hit"]),
            api_key_memory_miss: cache.with_label_values(&["api_key", "memory", "miss"]),
            session_memory_hit: cache.with_label_values(&["session", "memory", "hit"]),
            session_memory_miss: cache.with_label_values(&["session", "memory", "miss"]),
            auth_api_key_accepted: auth.with_label_values(&["api_key", "accepted", ""]),
            auth_session_accepted: auth.with_label_values(&["session", "accepted", ""]),
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = rl_contract::metrics::registry("gateway");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                )
                .expect("valid metric"),
            )
        };
        let gauge =
            |name: &str, help: &str| register(&r, IntGauge::new(name, help).expect("valid metric"));
        let auth = counter(
            "gateway_auth_total",
            "Authentication outcomes by credential type, outcome and reason.",
            &["credential", "outcome", "reason"],
        );
        let cache = counter(
            "gateway_cache_lookups_total",
            "Cache lookups by cache, tier and result.",
            &["cache", "tier", "result"],
        );
        Self {
            hot: Hot::resolve(&cache, &auth),
            auth,
            cache,
            requests: counter(
                "gateway_requests_total",
                "Requests by route class, method and status.",
                &["route", "method", "status"],
            ),
            request_duration: histogram(
                "gateway_request_duration_seconds",
                "Time from request to response, by route class.",
                &["route"],
            ),
            upstream_duration: histogram(
                "gateway_upstream_duration_seconds",
                "Time from sending to an upstream to its response header.",
                &["upstream"],
            ),
            jwks_fetches: counter(
                "gateway_jwks_fetches_total",
                "JWKS fetches by result.",
                &["result"],
            ),
            key_lookup_duration: histogram(
                "gateway_key_lookup_duration_seconds",
                "keys-service lookups by result.",
                &["result"],
            ),
            invalidation_connected: gauge(
                "gateway_key_invalidation_connected",
                "1 while key-change notices are being received; 0 means cache TTLs are capped short.",
            ),
            cached_keys: gauge(
                "gateway_cached_keys",
                "API-key records in the in-process cache.",
            ),
            registry: r,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `/metrics`, `/livez`, `/readyz` on the admin listener.
pub struct AdminApp {
    pub state: Arc<GatewayState>,
}

fn text(status: u16, content_type: &str, body: String) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body.into_bytes())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/metrics" => {
                let m = &self.state.metrics;
                m.cached_keys
                    .set(i64::try_from(self.state.keys.cached_entries()).unwrap_or(i64::MAX));
                m.invalidation_connected
                    .set(i64::from(self.state.keys.is_synced()));
                text(
                    200,
                    "text/plain; version=0.0.4",
                    rl_contract::metrics::encode(&m.registry),
                )
            }
            "/livez" => text(200, "text/plain", "ok\n".into()),
            "/readyz" => {
                if self.state.is_ready() {
                    text(200, "text/plain", "ok\n".into())
                } else {
                    text(503, "text/plain", "not ready\n".into())
                }
            }
            _ => text(404, "text/plain", "not found\n".into()),
        }
    }
}
