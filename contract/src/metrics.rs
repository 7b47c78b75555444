//! Prometheus metrics shared by the axum services, and the middleware that records every
//! request: count and latency by matched route, method and status, inside a span carrying
//! the request id so every log line about the request names it.

#[cfg(feature = "service")]
use std::time::Instant;

#[cfg(feature = "service")]
use axum::extract::{MatchedPath, Request, State};
#[cfg(feature = "service")]
use axum::middleware::Next;
#[cfg(feature = "service")]
use axum::response::Response;
use prometheus::{Encoder, Registry, TextEncoder};
#[cfg(feature = "service")]
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
#[cfg(feature = "service")]
use tracing::Instrument;

use crate::identity::REQUEST_ID;

/// A registry whose every series carries `service="<name>"`.
pub fn registry(service: &str) -> Registry {
    let labels = std::iter::once(("service".to_owned(), service.to_owned())).collect();
    Registry::new_custom(None, Some(labels)).unwrap_or_default()
}

/// The Prometheus text exposition of a registry.
pub fn encode(registry: &Registry) -> String {
    let mut buf = Vec::new();
    if TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .is_err()
    {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Latency buckets from 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Register a metric, panicking only on a programming error (a duplicate name).
pub fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
    registry
        .register(Box::new(m.clone()))
        .expect("metric names are unique per registry");
    m
}

#[cfg(feature = "service")]
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

#[cfg(feature = "service")]
impl HttpMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "http_requests_total",
                        "HTTP requests served, by route, method and status.",
                    ),
                    &["route", "method", "status"],
                )
                .expect("valid metric"),
            ),
            duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new("http_request_duration_seconds", "HTTP request latency.")
                        .buckets(LATENCY_BUCKETS.to_vec()),
                    &["route", "method"],
                )
                .expect("valid metric"),
            ),
        }
    }
}

/// A method label from a bounded set.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The request id the gateway set, if it is well-formed.
pub fn request_id(headers: &http::HeaderMap) -> Option<&str> {
    crate::identity::single_header(headers, REQUEST_ID)
        .filter(|id| crate::identity::is_well_formed_request_id(id))
}

#[cfg(feature = "service")]
/// axum middleware: metrics plus a span (with the request id) around every request, and
/// one access-log line when it completes.
pub async fn observe(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let request_id = request_id(request.headers()).unwrap_or("").to_owned();
    let span = tracing::info_span!("request", request_id = %request_id, method, route = %route);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics
        .requests
        .with_label_values(&[route.as_str(), method, &status.to_string()])
        .inc();
    metrics
        .duration
        .with_label_values(&[route.as_str(), method])
        .observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    });
    response
}
