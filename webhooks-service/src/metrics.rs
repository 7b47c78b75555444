//! webhooks-service's Prometheus metrics. Never a secret, a URL or an event's data: labels
//! are fixed words.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use rl_contract::db::PoolMetrics;
use rl_contract::metrics::{HttpMetrics, register};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub http: HttpMetrics,
    pub pool: PoolMetrics,
    pub outbox_backlog: IntGauge,
    pub relay_events: IntCounterVec,
    /// Pending deliveries (sampled at scrape).
    pub queue_depth: IntGauge,
    /// Age of the oldest due delivery, seconds (sampled at scrape).
    pub oldest_pending_age: prometheus::Gauge,
    /// Attempts by result: `succeeded`, or the error class.
    pub attempts: IntCounterVec,
    /// Enqueue to successful delivery.
    pub delivery_latency: Histogram,
    /// One attempt, request to response.
    pub attempt_duration: Histogram,
    pub disabled_endpoints: IntGauge,
    pub events_queued: prometheus::IntCounter,
    /// Unix seconds of this process's last worker heartbeat.
    pub worker_heartbeat: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = rl_contract::metrics::registry("webhooks-service");
        let gauge = |name: &str, help: &str| {
            register(&registry, IntGauge::new(name, help).expect("valid metric"))
        };
        Self {
            http: HttpMetrics::new(&registry),
            pool: PoolMetrics::new(&registry),
            outbox_backlog: gauge(
                "webhooks_audit_outbox_backlog",
                "Audit events waiting in the outbox.",
            ),
            relay_events: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "webhooks_audit_relay_events_total",
                        "Outbox events the relay tried to deliver, by result.",
                    ),
                    &["result"],
                )
                .expect("valid metric"),
            ),
            queue_depth: gauge(
                "webhooks_queue_depth",
                "Deliveries waiting for an attempt (due or scheduled).",
            ),
            oldest_pending_age: register(
                &registry,
                prometheus::Gauge::new(
                    "webhooks_oldest_pending_age_seconds",
                    "How long the oldest due delivery has been waiting.",
                )
                .expect("valid metric"),
            ),
            attempts: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "webhooks_attempts_total",
                        "Delivery attempts by result (succeeded, http, timeout, connect, dns, \
                         blocked_destination).",
                    ),
                    &["result", "trigger"],
                )
                .expect("valid metric"),
            ),
            delivery_latency: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "webhooks_delivery_latency_seconds",
                        "From the event's enqueue to its successful delivery.",
                    )
                    .buckets(vec![
                        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                        1800.0, 7200.0, 36000.0, 100_000.0,
                    ]),
                )
                .expect("valid metric"),
            ),
            attempt_duration: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "webhooks_attempt_duration_seconds",
                        "One delivery attempt, request to response.",
                    )
                    .buckets(rl_contract::metrics::LATENCY_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            disabled_endpoints: gauge(
                "webhooks_disabled_endpoints",
                "Endpoints disabled (by a user, by 410 Gone, or for failing too long).",
            ),
            events_queued: register(
                &registry,
                prometheus::IntCounter::new("webhooks_events_queued_total", "Events queued.")
                    .expect("valid metric"),
            ),
            worker_heartbeat: gauge(
                "webhooks_worker_last_heartbeat_timestamp_seconds",
                "When this process's delivery worker last made progress.",
            ),
            registry,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
