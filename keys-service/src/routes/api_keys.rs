//! `/v1/api-keys`: the public key-management API, reached through the gateway.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use rl_contract::http::JsonObject;
use rl_contract::signing::VerifiedIdentity;
use rl_contract::time_fmt::{format_ms, now_ms};
use rl_contract::{AuthType, Identity};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api_key::{self, NewKey};
use crate::error::ApiError;
use crate::store::{KeyRecord, NewKeyRequest};
use rl_contract::page::{self, Cursor};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/api-keys", get(list).post(create))
        .route(
            "/v1/api-keys/{key_id}",
            get(show).patch(update).delete(revoke),
        )
}

/// A caller allowed to manage keys: a signed-in dashboard session, never an API key.
pub struct Manager(pub Identity);

impl FromRequestParts<AppState> for Manager {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let VerifiedIdentity(identity) = VerifiedIdentity::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::Unauthenticated)?;
        if identity.auth_type != AuthType::Session {
            return Err(ApiError::SessionRequired);
        }
        Ok(Self(identity))
    }
}

/// The public view of a key: never the hash, never the plaintext (except `key` on create).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub status: &'static str,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl ApiKeyView {
    fn of(r: KeyRecord, now: i64) -> Self {
        Self {
            status: r.status(now),
            id: r.id,
            name: r.name,
            prefix: r.prefix,
            scopes: r.scopes,
            created_at: format_ms(r.created_at),
            expires_at: r.expires_at.map(format_ms),
            revoked_at: r.revoked_at.map(format_ms),
            last_used_at: r.last_used_at.map(format_ms),
            key: None,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    pub data: Vec<ApiKeyView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Manager(caller): Manager,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(params) =
        params.map_err(|_| ApiError::InvalidRequest("Malformed query string.".to_owned()))?;
    let limit = page::parse_limit(params.limit.as_deref())?;
    let cursor = params
        .cursor
        .as_deref()
        .map(|c| Cursor::decode(c, |id| api_key::parse_key_id(id).is_ok_and(|p| p == id)))
        .transpose()?;
    let (records, next) = state
        .store
        .list(&caller.organization_id, limit, cursor.as_ref())
        .await?;
    let now = now_ms();
    Ok(Json(Page {
        data: records
            .into_iter()
            .map(|r| ApiKeyView::of(r, now))
            .collect(),
        next_cursor: next.map(|c| c.encode()),
    }))
}

async fn create(
    State(state): State<AppState>,
    Manager(caller): Manager,
    JsonObject(body): JsonObject,
) -> Result<impl IntoResponse, ApiError> {
    let now = now_ms();
    let name = api_key::validate_name(body.get("name"))?;
    let scopes = api_key::validate_scopes(body.get("scopes"))?;
    let expires_at = api_key::validate_expires_at(body.get("expiresAt"), now)?;
    let key = NewKey::generate().map_err(|e| {
        tracing::error!(error = %e, "the OS random number generator failed");
        ApiError::Envelope(rl_contract::error::ErrorResponse::new(
            rl_contract::ErrorCode::InternalError,
            "An internal error occurred.",
        ))
    })?;
    let record = state
        .store
        .create(
            NewKeyRequest {
                organization_id: caller.organization_id.clone(),
                actor: caller.actor(),
                name,
                scopes,
                expires_at,
            },
            &key,
            now,
        )
        .await?;
    state.relay_wake();
    tracing::info!(key_id = %record.id, prefix = %record.prefix, "api key created");
    let mut view = ApiKeyView::of(record, now);
    view.key = Some(key.plaintext);
    Ok((StatusCode::CREATED, Json(view)))
}

fn key_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(raw) =
        path.map_err(|_| ApiError::InvalidRequest("keyId must be a UUID.".to_owned()))?;
    api_key::parse_key_id(&raw)
}

async fn show(
    State(state): State<AppState>,
    Manager(caller): Manager,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ApiKeyView>, ApiError> {
    let id = key_id(path)?;
    let record = state
        .store
        .get(&caller.organization_id, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(ApiKeyView::of(record, now_ms())))
}

async fn update(
    State(state): State<AppState>,
    Manager(caller): Manager,
    path: Result<Path<String>, PathRejection>,
    JsonObject(body): JsonObject,
) -> Result<Json<ApiKeyView>, ApiError> {
    let id = key_id(path)?;
    let name = body
        .get("name")
        .map(|v| api_key::validate_name(Some(v)))
        .transpose()?;
    let scopes = body
        .get("scopes")
        .map(|v| api_key::validate_scopes(Some(v)))
        .transpose()?;
    if name.is_none() && scopes.is_none() {
        return Err(ApiError::InvalidRequest(
            "Provide name and/or scopes to update.".to_owned(),
        ));
    }
    let now = now_ms();
    let updated = state
        .store
        .update(
            &caller.organization_id,
            &id,
            &caller.actor(),
            name,
            scopes,
            now,
        )
        .await?
        .ok_or(ApiError::NotFound)?;
    if updated.changed {
        state.publish_change(&updated.record).await;
        state.relay_wake();
    }
    Ok(Json(ApiKeyView::of(updated.record, now)))
}

async fn revoke(
    State(state): State<AppState>,
    Manager(caller): Manager,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ApiKeyView>, ApiError> {
    let id = key_id(path)?;
    let now = now_ms();
    let revoked = state
        .store
        .revoke(&caller.organization_id, &id, &caller.actor(), now)
        .await?
        .ok_or(ApiError::NotFound)?;
    // Publish even when it was already revoked: a repeated revoke repairs any gateway that
    // somehow missed the first notice.
    state.publish_change(&revoked.record).await;
    if revoked.changed {
        state.relay_wake();
        tracing::info!(key_id = %revoked.record.id, "api key revoked");
    }
    Ok(Json(ApiKeyView::of(revoked.record, now)))
}
