//! The internal message product services send to webhooks-service to queue an outbound
//! webhook event for an organization (`POST /internal/v1/outbound-webhook-events`, with the
//! internal token). A retry with the same `event_id` queues nothing twice.

use serde::{Deserialize, Serialize};

pub const QUEUE_EVENT_PATH: &str = "/internal/v1/outbound-webhook-events";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueEvent {
    pub organization_id: String,
    /// `payment_intent.succeeded`: letters, digits, `_ . : -`, at most 100.
    pub event_type: String,
    /// Any JSON; sent to receivers as the body's `data`.
    pub data: serde_json::Value,
    /// Chosen by the sender so a retried call is not queued twice (1–128 of
    /// `A-Z a-z 0-9 _ - . :`); generated when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}
