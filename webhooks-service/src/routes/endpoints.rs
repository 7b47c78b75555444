//! `/v1/outbound-webhook-endpoints`: register, list, read, update, delete endpoints and
//! rotate their signing secrets. The secret (`whsec_…`) is in the create and rotate
//! responses only; a replayed request (same `Idempotency-Key`) returns the endpoint without
//! it (`secretOmitted: true`).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rl_contract::http::JsonObject;
use rl_contract::page::{self, Cursor, Page};
use rl_contract::time_fmt::{format_ms, now_ms};
use serde::Serialize;

use super::{Manager, claim, settle, to_json};
use crate::AppState;
use crate::endpoint;
use crate::error::ApiError;
use crate::secret::{self, SigningSecret};
use crate::store::{CreateError, EndpointChanges, EndpointRecord, Finish, NewEndpoint};

const BASE: &str = "/v1/outbound-webhook-endpoints";
const NOT_FOUND: &str = "Outbound webhook endpoint not found.";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(BASE, get(list).post(create))
        .route(
            "/v1/outbound-webhook-endpoints/{endpoint_id}",
            get(show).patch(update).delete(remove),
        )
        .route(
            "/v1/outbound-webhook-endpoints/{endpoint_id}/rotate-secret",
            post(rotate),
        )
}

/// The public view of an endpoint: never a sealed value; the secret only on create/rotate.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub description: String,
    /// `null`: every event type.
    pub event_types: Option<Vec<String>>,
    pub disabled: bool,
    /// `manual`, `gone` (the endpoint answered 410) or `failing` (failed for too long).
    pub disabled_reason: Option<String>,
    /// Base64 of the ed25519 public key that verifies the `v1a` signature.
    pub signing_public_key: String,
    /// Until when the previous secret still signs, after a rotation.
    pub previous_secret_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_omitted: Option<bool>,
}

impl EndpointView {
    pub fn of(r: &EndpointRecord, now: i64) -> Self {
        Self {
            id: r.id.clone(),
            url: r.url.clone(),
            description: r.description.clone(),
            event_types: r.event_types.clone(),
            disabled: r.disabled,
            disabled_reason: r.disabled_reason.clone(),
            signing_public_key: r.signing_public_key.clone(),
            previous_secret_expires_at: r
                .previous_secret_expires_at
                .filter(|t| *t > now)
                .map(format_ms),
            created_at: format_ms(r.created_at),
            updated_at: format_ms(r.updated_at),
            secret: None,
            secret_omitted: None,
        }
    }

    fn omitted(r: &EndpointRecord, now: i64) -> String {
        let mut v = Self::of(r, now);
        v.secret_omitted = Some(true);
        to_json(&v)
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

async fn list(
    State(state): State<AppState>,
    Manager(caller): Manager,
    params: Result<Query<page::PageParams>, QueryRejection>,
) -> Result<Json<Page<EndpointView>>, ApiError> {
    let Query(params) =
        params.map_err(|_| ApiError::InvalidRequest("Malformed query string.".to_owned()))?;
    let limit = page::parse_limit(params.limit.as_deref())?;
    let cursor = params
        .cursor
        .as_deref()
        .map(|c| Cursor::decode(c, |id| endpoint::parse_uuid(id, "id").is_ok()))
        .transpose()?;
    let (records, next) = state
        .store
        .list_endpoints(&caller.organization_id, limit, cursor.as_ref())
        .await?;
    let now = now_ms();
    Ok(Json(Page {
        data: records.iter().map(|r| EndpointView::of(r, now)).collect(),
        next_cursor: next.map(|c| c.encode()),
    }))
}

async fn create(
    State(state): State<AppState>,
    Manager(caller): Manager,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    endpoint::only_fields(&body, &["url", "description", "eventTypes", "disabled"])?;
    let policy = *state.sender.policy();
    let url = endpoint::validate_url(body.get("url"), &policy)?;
    let description = endpoint::validate_description(body.get("description"))?;
    let event_types =
        endpoint::validate_event_types(body.get("eventTypes"), state.settings.max_event_types)?;
    let disabled = endpoint::validate_bool("disabled", body.get("disabled"))?.unwrap_or(false);
    let body = serde_json::Value::Object(body);
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
    let now = now_ms();
    let result = async {
        let id = uuid::Uuid::now_v7().hyphenated().to_string();
        let key = &state.settings.encryption_key;
        let signing_secret =
            SigningSecret::generate(state.settings.secret_bytes).map_err(internal)?;
        let signing_key = secret::generate_signing_key().map_err(internal)?;
        let new = NewEndpoint {
            organization_id: caller.organization_id.clone(),
            actor: caller.actor(),
            url,
            description,
            event_types,
            disabled,
            secret_sealed: key
                .seal(&signing_secret.0, &secret::context(&id, "secret"))
                .map_err(internal)?,
            signing_key_sealed: key
                .seal(signing_key.as_bytes(), &secret::context(&id, "signing_key"))
                .map_err(internal)?,
            signing_public_key: secret::public_key_text(&signing_key),
            id,
        };
        // A replay returns the endpoint as created, without its secret: shown once, only.
        let render = |r: &EndpointRecord| EndpointView::omitted(r, now);
        let finish = claim.as_ref().map(|claim| Finish {
            claim,
            status: 201,
            render: &render,
        });
        let record = state
            .store
            .create_endpoint(
                new,
                state.settings.max_endpoints_per_org,
                now,
                finish.as_ref(),
            )
            .await
            .map_err(|e| match e {
                CreateError::Limit(max) => ApiError::Unprocessable(format!(
                    "This organization already has {max} outbound webhook endpoints, the \
                     most allowed. Delete one first."
                )),
                CreateError::Db(e) => e.into(),
            })?;
        Ok::<_, ApiError>((record, signing_secret))
    }
    .await;
    settle(&state, claim, &result).await;
    let (record, signing_secret) = result?;
    state.relay_wake();
    tracing::info!(endpoint_id = %record.id, "outbound webhook endpoint created");
    let mut view = EndpointView::of(&record, now);
    view.secret = Some(signing_secret.display());
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

fn endpoint_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(raw) =
        path.map_err(|_| ApiError::InvalidRequest("endpointId must be a UUID.".to_owned()))?;
    endpoint::parse_uuid(&raw, "endpointId")
}

async fn show(
    State(state): State<AppState>,
    Manager(caller): Manager,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<EndpointView>, ApiError> {
    let id = endpoint_id(path)?;
    let record = state
        .store
        .get_endpoint(&caller.organization_id, &id)
        .await?
        .ok_or(ApiError::NotFound(NOT_FOUND))?;
    Ok(Json(EndpointView::of(&record, now_ms())))
}

async fn update(
    State(state): State<AppState>,
    Manager(caller): Manager,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let id = endpoint_id(path)?;
    endpoint::only_fields(&body, &["url", "description", "eventTypes", "disabled"])?;
    if body.is_empty() {
        return Err(ApiError::InvalidRequest(
            "Provide at least one of url, description, eventTypes, disabled.".to_owned(),
        ));
    }
    let policy = *state.sender.policy();
    let changes = EndpointChanges {
        url: body
            .contains_key("url")
            .then(|| endpoint::validate_url(body.get("url"), &policy))
            .transpose()?,
        description: body
            .contains_key("description")
            .then(|| endpoint::validate_description(body.get("description")))
            .transpose()?,
        event_types: body
            .contains_key("eventTypes")
            .then(|| {
                endpoint::validate_event_types(
                    body.get("eventTypes"),
                    state.settings.max_event_types,
                )
            })
            .transpose()?,
        disabled: endpoint::validate_bool("disabled", body.get("disabled"))?,
    };
    let body = serde_json::Value::Object(body);
    let route = format!("{BASE}/{id}");
    let claim = match claim(
        &state,
        &caller.organization_id,
        &caller.actor(),
        &headers,
        "PATCH",
        &route,
        Some(&body),
    )
    .await
    {
        Ok(c) => c,
        Err(done) => return Ok(*done),
    };
    let now = now_ms();
    let render = |r: &EndpointRecord| to_json(&EndpointView::of(r, now));
    let finish = claim.as_ref().map(|claim| Finish {
        claim,
        status: 200,
        render: &render,
    });
    let result = state
        .store
        .update_endpoint(
            &caller.organization_id,
            &id,
            &caller.actor(),
            changes,
            now,
            finish.as_ref(),
        )
        .await
        .map_err(ApiError::from)
        .and_then(|u| u.ok_or(ApiError::NotFound(NOT_FOUND)));
    settle(&state, claim, &result).await;
    let updated = result?;
    if updated.changed {
        state.relay_wake();
        state.worker_wake.notify_one();
        if updated.recovered > 0 {
            tracing::info!(endpoint_id = %id, recovered = updated.recovered, "endpoint re-enabled; failed deliveries queued again");
        }
    }
    Ok(Json(EndpointView::of(&updated.record, now)).into_response())
}

async fn remove(
    State(state): State<AppState>,
    Manager(caller): Manager,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = endpoint_id(path)?;
    let route = format!("{BASE}/{id}");
    let claim = match claim(
        &state,
        &caller.organization_id,
        &caller.actor(),
        &headers,
        "DELETE",
        &route,
        None,
    )
    .await
    {
        Ok(c) => c,
        Err(done) => return Ok(*done),
    };
    let now = now_ms();
    let render = |r: &EndpointRecord| to_json(&EndpointView::of(r, now));
    let finish = claim.as_ref().map(|claim| Finish {
        claim,
        status: 200,
        render: &render,
    });
    let result = state
        .store
        .delete_endpoint(
            &caller.organization_id,
            &id,
            &caller.actor(),
            now,
            finish.as_ref(),
        )
        .await
        .map_err(ApiError::from)
        .and_then(|u| u.ok_or(ApiError::NotFound(NOT_FOUND)));
    settle(&state, claim, &result).await;
    let (record, cancelled) = result?;
    state.relay_wake();
    tracing::info!(endpoint_id = %id, cancelled, "outbound webhook endpoint deleted");
    Ok(Json(EndpointView::of(&record, now)).into_response())
}

async fn rotate(
    State(state): State<AppState>,
    Manager(caller): Manager,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = endpoint_id(path)?;
    let route = format!("{BASE}/{id}/rotate-secret");
    let claim = match claim(
        &state,
        &caller.organization_id,
        &caller.actor(),
        &headers,
        "POST",
        &route,
        None,
    )
    .await
    {
        Ok(c) => c,
        Err(done) => return Ok(*done),
    };
    let now = now_ms();
    let result = async {
        let signing_secret =
            SigningSecret::generate(state.settings.secret_bytes).map_err(internal)?;
        let sealed = state
            .settings
            .encryption_key
            .seal(&signing_secret.0, &secret::context(&id, "secret"))
            .map_err(internal)?;
        let overlap =
            i64::try_from(state.settings.rotation_overlap.as_millis()).unwrap_or(i64::MAX);
        let render = |r: &EndpointRecord| EndpointView::omitted(r, now);
        let finish = claim.as_ref().map(|claim| Finish {
            claim,
            status: 200,
            render: &render,
        });
        let record = state
            .store
            .rotate_secret(
                &caller.organization_id,
                &id,
                &caller.actor(),
                sealed,
                now.saturating_add(overlap),
                now,
                finish.as_ref(),
            )
            .await?
            .ok_or(ApiError::NotFound(NOT_FOUND))?;
        Ok::<_, ApiError>((record, signing_secret))
    }
    .await;
    settle(&state, claim, &result).await;
    let (record, signing_secret) = result?;
    state.relay_wake();
    tracing::info!(endpoint_id = %id, "endpoint signing secret rotated");
    let mut view = EndpointView::of(&record, now);
    view.secret = Some(signing_secret.display());
    Ok(Json(view).into_response())
}
