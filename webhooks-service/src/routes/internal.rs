//! The internal API for product services: queue an event for an organization. Never routed
//! by the gateway; it takes the internal token (`x-reconlayer-internal-token`), as
//! audit-service's ingestion does. The message is `rl_contract::webhooks::QueueEvent`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use rl_contract::http::JsonObject;
use rl_contract::signing::Internal;
use serde_json::Value;

use super::events::{event_input, queue};
use crate::AppState;
use crate::endpoint;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route(rl_contract::webhooks::QUEUE_EVENT_PATH, post(enqueue))
}

async fn enqueue(
    State(state): State<AppState>,
    _: Internal,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    endpoint::only_fields(&body, &["organizationId", "eventType", "data", "eventId"])?;
    let organization_id = match body.get("organizationId") {
        Some(Value::String(s)) if rl_contract::identity::is_valid_organization_id(s) => s.clone(),
        _ => {
            return Err(ApiError::InvalidRequest(
                "organizationId is required and must be a valid organization id.".to_owned(),
            ));
        }
    };
    let input = event_input(&state, &body)?;
    let (status, view) = queue(&state, &organization_id, input, None).await?;
    Ok((status, Json(view)).into_response())
}
