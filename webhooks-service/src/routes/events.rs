//! `/v1/outbound-webhook-events`: queue an event (fanned out to every enabled endpoint
//! subscribed to its type), list events with their delivery status, list an event's
//! attempts, and attempt a delivery now (a manual resend, recorded like any attempt).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rl_contract::http::JsonObject;
use rl_contract::page::{self, Cursor, Page};
use rl_contract::time_fmt::{format_ms, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Manager, claim, settle, to_json};
use crate::AppState;
use crate::endpoint;
use crate::error::ApiError;
use crate::store::{AttemptRecord, DeliveryRecord, EventRecord, Finish, NewEvent, Queued};
use crate::worker::{self, Trigger};

const BASE: &str = "/v1/outbound-webhook-events";
const NOT_FOUND: &str = "Outbound webhook event not found.";
pub const STATUSES: &[&str] = &["pending", "succeeded", "failed", "cancelled", "none"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route(BASE, get(list).post(create))
        .route("/v1/outbound-webhook-events/{event_id}", get(show))
        .route(
            "/v1/outbound-webhook-events/{event_id}/attempts",
            get(attempts).post(attempt_now),
        )
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub endpoint_id: String,
    /// `pending`, `succeeded`, `failed`, `cancelled` (endpoint deleted), or `manual` (only
    /// attempted by hand).
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<String>,
    pub finished_at: Option<String>,
}

impl From<&DeliveryRecord> for DeliveryView {
    fn from(d: &DeliveryRecord) -> Self {
        Self {
            endpoint_id: d.endpoint_id.clone(),
            status: d.status.clone(),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.map(format_ms),
            finished_at: d.finished_at.map(format_ms),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub id: String,
    pub event_type: String,
    pub data: Value,
    /// `pending` while any delivery is; else `failed` if any failed; else `succeeded`;
    /// `cancelled` if every delivery was cancelled; `none` without subscribed endpoints.
    pub status: String,
    pub created_at: String,
    pub deliveries: Vec<DeliveryView>,
}

impl EventView {
    pub fn of(e: &EventRecord, deliveries: &[DeliveryRecord]) -> Self {
        let data = serde_json::from_str::<Value>(&e.payload)
            .ok()
            .and_then(|mut p| p.get_mut("data").map(Value::take))
            .unwrap_or(Value::Null);
        Self {
            id: e.id.clone(),
            event_type: e.event_type.clone(),
            data,
            status: e.status.clone(),
            created_at: format_ms(e.created_at),
            deliveries: deliveries
                .iter()
                .filter(|d| d.event_id == e.id)
                .map(DeliveryView::from)
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub attempt_number: i64,
    /// `scheduled` (the workers) or `manual` (a resend).
    pub trigger: String,
    pub attempted_at: String,
    pub duration_ms: i64,
    /// `succeeded` or `failed`.
    pub result: String,
    pub http_status: Option<i64>,
    /// `http`, `timeout`, `connect`, `dns`, `blocked_destination`; `null` on success.
    pub error_class: Option<String>,
    /// At most 1 KiB of the response body.
    pub response_body: Option<String>,
}

impl From<&AttemptRecord> for AttemptView {
    fn from(a: &AttemptRecord) -> Self {
        Self {
            id: a.id.clone(),
            event_id: a.event_id.clone(),
            endpoint_id: a.endpoint_id.clone(),
            attempt_number: a.attempt_number,
            trigger: a.trigger.clone(),
            attempted_at: format_ms(a.attempted_at),
            duration_ms: a.duration_ms,
            result: a.result.clone(),
            http_status: a.http_status,
            error_class: a.error_class.clone(),
            response_body: a.response_body.clone(),
        }
    }
}

/// A validated event to queue.
pub struct EventInput {
    pub event_type: String,
    pub data: Value,
    pub event_id: Option<String>,
}

/// Validate `eventType`, `data` (any JSON, at most the configured size) and `eventId`.
pub fn event_input(
    state: &AppState,
    body: &serde_json::Map<String, Value>,
) -> Result<EventInput, ApiError> {
    let event_type = endpoint::validate_event_type(body.get("eventType"))?;
    let data = body
        .get("data")
        .cloned()
        .ok_or_else(|| ApiError::InvalidRequest("data is required (any JSON value).".to_owned()))?;
    let size = data.to_string().len();
    if size > state.settings.max_event_bytes {
        return Err(ApiError::Unprocessable(format!(
            "data is {size} bytes serialized; at most {} are allowed.",
            state.settings.max_event_bytes
        )));
    }
    let event_id = endpoint::validate_event_id(body.get("eventId"))?;
    Ok(EventInput {
        event_type,
        data,
        event_id,
    })
}

/// Queue an event for `organization_id`. `202` when queued, `200` when its `eventId` had
/// already been queued (nothing queued again).
pub async fn queue(
    state: &AppState,
    organization_id: &str,
    input: EventInput,
    finish_claim: Option<&rl_contract::idempotency::Claim>,
) -> Result<(StatusCode, EventView), ApiError> {
    let now = now_ms();
    let id = input.event_id.unwrap_or_else(endpoint::new_event_id);
    // The body every attempt sends, fixed now: retries are byte-identical.
    let payload = serde_json::json!({
        "type": input.event_type,
        "timestamp": format_ms(now),
        "data": input.data,
    })
    .to_string();
    let first_delay = state
        .settings
        .retry
        .delay_before(1)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    let render = |q: &Queued| to_json(&EventView::of(&q.event, &[]));
    let finish = finish_claim.map(|claim| Finish {
        claim,
        // A replayed request says "accepted" as the first did.
        status: 202,
        render: &render,
    });
    let queued = state
        .store
        .queue_event(
            NewEvent {
                organization_id: organization_id.to_owned(),
                id,
                event_type: input.event_type,
                payload,
            },
            first_delay,
            now,
            finish.as_ref(),
        )
        .await?;
    let deliveries = state
        .store
        .deliveries_of(organization_id, std::slice::from_ref(&queued.event.id))
        .await?;
    if queued.created {
        state.metrics.events_queued.inc();
        if queued.deliveries > 0 {
            state.worker_wake.notify_one();
        }
    }
    let status = if queued.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, EventView::of(&queued.event, &deliveries)))
}

async fn create(
    State(state): State<AppState>,
    Manager(caller): Manager,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    endpoint::only_fields(&body, &["eventType", "data", "eventId"])?;
    let input = event_input(&state, &body)?;
    let body = Value::Object(body);
    let claim = match claim(
        &state,
        &caller.organization_id,
        &caller.actor(),
        &headers,
        "POST",
        BASE,
        Some(&body),
    )
    .await
    {
        Ok(c) => c,
        Err(done) => return Ok(*done),
    };
    let result = queue(&state, &caller.organization_id, input, claim.as_ref()).await;
    settle(&state, claim, &result).await;
    let (status, view) = result?;
    Ok((status, Json(view)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    limit: Option<String>,
    cursor: Option<String>,
    event_type: Option<String>,
    status: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Manager(caller): Manager,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page<EventView>>, ApiError> {
    let Query(params) =
        params.map_err(|_| ApiError::InvalidRequest("Malformed query string.".to_owned()))?;
    let limit = page::parse_limit(params.limit.as_deref())?;
    let cursor = params
        .cursor
        .as_deref()
        .map(|c| Cursor::decode(c, endpoint::is_event_id))
        .transpose()?;
    if let Some(t) = params.event_type.as_deref()
        && !endpoint::is_event_type(t)
    {
        return Err(ApiError::InvalidRequest(
            "eventType is not a valid event type.".to_owned(),
        ));
    }
    if let Some(s) = params.status.as_deref()
        && !STATUSES.contains(&s)
    {
        return Err(ApiError::InvalidRequest(format!(
            "status must be one of {}.",
            STATUSES.join(", ")
        )));
    }
    let (events, next) = state
        .store
        .list_events(
            &caller.organization_id,
            limit,
            cursor.as_ref(),
            params.event_type.as_deref(),
            params.status.as_deref(),
        )
        .await?;
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let deliveries = state
        .store
        .deliveries_of(&caller.organization_id, &ids)
        .await?;
    Ok(Json(Page {
        data: events
            .iter()
            .map(|e| EventView::of(e, &deliveries))
            .collect(),
        next_cursor: next.map(|c| c.encode()),
    }))
}

fn event_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(raw) = path.map_err(|_| ApiError::InvalidRequest("Malformed eventId.".to_owned()))?;
    if endpoint::is_event_id(&raw) {
        Ok(raw)
    } else {
        Err(ApiError::InvalidRequest(
            "eventId must be 1 to 128 characters of letters, digits, '_', '-', '.' or ':'."
                .to_owned(),
        ))
    }
}

async fn show(
    State(state): State<AppState>,
    Manager(caller): Manager,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<EventView>, ApiError> {
    let id = event_id(path)?;
    let event = state
        .store
        .get_event(&caller.organization_id, &id)
        .await?
        .ok_or(ApiError::NotFound(NOT_FOUND))?;
    let deliveries = state
        .store
        .deliveries_of(&caller.organization_id, std::slice::from_ref(&id))
        .await?;
    Ok(Json(EventView::of(&event, &deliveries)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptParams {
    limit: Option<String>,
    cursor: Option<String>,
    endpoint_id: Option<String>,
}

async fn attempts(
    State(state): State<AppState>,
    Manager(caller): Manager,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<AttemptParams>, QueryRejection>,
) -> Result<Json<Page<AttemptView>>, ApiError> {
    let id = event_id(path)?;
    let Query(params) =
        params.map_err(|_| ApiError::InvalidRequest("Malformed query string.".to_owned()))?;
    let limit = page::parse_limit(params.limit.as_deref())?;
    let cursor = params
        .cursor
        .as_deref()
        .map(|c| Cursor::decode(c, |id| endpoint::parse_uuid(id, "id").is_ok()))
        .transpose()?;
    let endpoint_id = params
        .endpoint_id
        .as_deref()
        .map(|e| endpoint::parse_uuid(e, "endpointId"))
        .transpose()?;
    if state
        .store
        .get_event(&caller.organization_id, &id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound(NOT_FOUND));
    }
    let (records, next) = state
        .store
        .list_attempts(
            &caller.organization_id,
            &id,
            endpoint_id.as_deref(),
            limit,
            cursor.as_ref(),
        )
        .await?;
    Ok(Json(Page {
        data: records.iter().map(AttemptView::from).collect(),
        next_cursor: next.map(|c| c.encode()),
    }))
}

async fn attempt_now(
    State(state): State<AppState>,
    Manager(caller): Manager,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let id = event_id(path)?;
    endpoint::only_fields(&body, &["endpointId"])?;
    let endpoint_id = match body.get("endpointId") {
        Some(Value::String(s)) => endpoint::parse_uuid(s, "endpointId")?,
        _ => {
            return Err(ApiError::InvalidRequest(
                "endpointId is required (the endpoint to deliver to now).".to_owned(),
            ));
        }
    };
    let org = caller.organization_id.clone();
    let payload = state
        .store
        .event_payload(&org, &id)
        .await?
        .ok_or(ApiError::NotFound(NOT_FOUND))?;
    let endpoint = state
        .store
        .get_endpoint(&org, &endpoint_id)
        .await?
        .ok_or(ApiError::NotFound("Outbound webhook endpoint not found."))?;
    let route = format!("{BASE}/{id}/attempts");
    let body = Value::Object(body);
    let claim = match claim(
        &state,
        &org,
        &caller.actor(),
        &headers,
        "POST",
        &route,
        Some(&body),
    )
    .await
    {
        Ok(c) => c,
        Err(done) => return Ok(*done),
    };
    let result = async {
        let delivery = state
            .store
            .ensure_delivery(&org, &id, &endpoint_id, now_ms())
            .await?;
        let render = |a: &AttemptRecord| to_json(&AttemptView::from(a));
        let finish = claim.as_ref().map(|claim| Finish {
            claim,
            status: 201,
            render: &render,
        });
        let record = worker::attempt(
            &state,
            &endpoint,
            &id,
            &delivery.id,
            &payload,
            delivery.attempts + 1,
            Trigger::Manual,
            None,
            None,
            finish.as_ref(),
        )
        .await?;
        Ok::<_, ApiError>(record)
    }
    .await;
    settle(&state, claim, &result).await;
    let record = result?;
    Ok((StatusCode::CREATED, Json(AttemptView::from(&record))).into_response())
}
