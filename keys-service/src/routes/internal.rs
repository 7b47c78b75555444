//! Internal endpoints for gateways. The gateway never routes `/internal/*` from its public
//! listener; in Kubernetes a NetworkPolicy keeps everyone but the gateway away from them.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use rl_contract::http::JsonObject;
use rl_contract::signing::Internal;
use rl_contract::wire::{KeyChanges, KeyLookupRequest, KeyRecord, UsageReport};
use serde::Deserialize;

use crate::AppState;
use crate::api_key::KeyHash;
use crate::error::ApiError;

pub const MAX_USAGE_BATCH: usize = 10_000;

/// An internal message, read as its wire type (`rl_contract::wire`).
fn typed<T: serde::de::DeserializeOwned>(
    body: serde_json::Map<String, serde_json::Value>,
) -> Result<T, ApiError> {
    serde_json::from_value(serde_json::Value::Object(body))
        .map_err(|e| ApiError::InvalidRequest(format!("Malformed message: {e}")))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/internal/v1/api-keys/lookup", post(lookup))
        .route("/internal/v1/api-keys/usage", post(usage))
        .route("/internal/v1/key-changes", get(changes))
        .route("/internal/v1/api-keys/verify", get(verify))
}

async fn lookup(
    _: Internal,
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Result<Json<KeyRecord>, ApiError> {
    let request: KeyLookupRequest = typed(body)?;
    let hash = KeyHash::parse(&request.key_hash)
        .ok_or_else(|| ApiError::InvalidRequest("keyHash must be hex SHA-256.".to_owned()))?;
    let found = state.store.lookup(&hash).await?;
    if let Some(redis) = &state.redis {
        redis.fill(&hash.0, found.as_ref()).await;
    }
    found.map(Json).ok_or(ApiError::NotFound)
}

/// Verify the `Authorization: Bearer rl_live_…` header of the request itself: `204` with
/// the key's organization in `x-organization-id`, or `401`. This is what an nginx
/// `auth_request` setup calls on every request (the do-it-yourself pattern the gateway is
/// benchmarked against); the gateway itself uses `lookup` behind its caches.
async fn verify(
    _: Internal,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let unauthorized = || {
        rl_contract::error::ErrorResponse::new(
            rl_contract::ErrorCode::Unauthorized,
            rl_contract::error::messages::INVALID_API_KEY,
        )
        .into_response()
    };
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| t.starts_with(crate::api_key::KEY_PREFIX));
    let Some(token) = token else {
        return Ok(unauthorized());
    };
    let now = rl_contract::time_fmt::now_ms();
    match state.store.lookup(&KeyHash::of(token)).await? {
        Some(r) if r.revoked_at.is_none() && r.expires_at.is_none_or(|e| e > now) => Ok((
            StatusCode::NO_CONTENT,
            [(rl_contract::identity::ORGANIZATION_ID, r.organization_id)],
        )
            .into_response()),
        _ => Ok(unauthorized()),
    }
}

async fn usage(
    _: Internal,
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Result<StatusCode, ApiError> {
    let report: UsageReport = typed(body)?;
    if report.usage.len() > MAX_USAGE_BATCH {
        return Err(ApiError::InvalidRequest(
            "usage batch too large.".to_owned(),
        ));
    }
    let mut batch = Vec::with_capacity(report.usage.len());
    for item in report.usage {
        batch.push((
            crate::api_key::parse_key_id(&item.key_id)?,
            item.last_used_at,
        ));
    }
    state.store.record_usage(&batch).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangesParams {
    epoch: Option<String>,
    after: Option<u64>,
    wait_ms: Option<u64>,
}

async fn changes(
    _: Internal,
    State(state): State<AppState>,
    Query(p): Query<ChangesParams>,
) -> Json<KeyChanges> {
    let wait =
        Duration::from_millis(p.wait_ms.unwrap_or(0)).min(state.settings.change_feed_max_wait);
    Json(
        state
            .changes
            .wait_for(p.epoch.as_deref(), p.after.unwrap_or(0), wait)
            .await,
    )
}
