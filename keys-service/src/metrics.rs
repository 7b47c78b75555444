//! keys-service's Prometheus metrics.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use rl_contract::db::PoolMetrics;
use rl_contract::metrics::{HttpMetrics, register};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub http: HttpMetrics,
    pub pool: PoolMetrics,
    /// Audit events written but not yet delivered to audit-service.
    pub outbox_backlog: IntGauge,
    /// Relay delivery attempts by result (`delivered`, `failed`), counted in events.
    pub relay_events: IntCounterVec,
    /// Key changes published to gateways.
    pub key_changes: prometheus::IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = rl_contract::metrics::registry("keys-service");
        Self {
            http: HttpMetrics::new(&registry),
            pool: PoolMetrics::new(&registry),
            outbox_backlog: register(
                &registry,
                IntGauge::new(
                    "keys_audit_outbox_backlog",
                    "Audit events waiting in the outbox.",
                )
                .expect("valid metric"),
            ),
            relay_events: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "keys_audit_relay_events_total",
                        "Outbox events the relay tried to deliver, by result.",
                    ),
                    &["result"],
                )
                .expect("valid metric"),
            ),
            key_changes: register(
                &registry,
                prometheus::IntCounter::new(
                    "keys_key_changes_published_total",
                    "Key changes published to gateways.",
                )
                .expect("valid metric"),
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
