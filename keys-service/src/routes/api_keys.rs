//! `/v1/api-keys`: the public key-management API, reached through the gateway.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rl_contract::http::JsonObject;
use rl_contract::idempotency::{self, Claim};
use rl_contract::signing::VerifiedIdentity;
use rl_contract::time_fmt::{format_ms, now_ms};
use rl_contract::{AuthType, Identity};
use serde::Serialize;

use crate::AppState;
use crate::api_key::{self, NewKey};
use crate::error::ApiError;
use crate::store::{Finish, KeyRecord, NewKeyRequest};
use rl_contract::page::{self, Cursor, Page};

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
    /// On a replayed create (`Idempotent-Replayed: true`): the plaintext was returned by the
    /// first response only and is not returned again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_omitted: Option<bool>,
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
            key_omitted: None,
        }
    }

    fn json(&self) -> String {
        // A struct of strings and options: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The `Idempotency-Key` claim for this write, or the response that ends it here: a
/// replay of the stored outcome, `409` while the first attempt runs, `422` for a different
/// request under the same key, `400` for a malformed key.
async fn claim(
    state: &AppState,
    caller: &Identity,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Option<Claim>, Box<Response>> {
    let key = idempotency::key_from_headers(headers).map_err(|e| Box::new(e.into_response()))?;
    let Some(key) = key else {
        return Ok(None);
    };
    let request = idempotency::Request {
        organization_id: caller.organization_id.clone(),
        caller: caller.actor(),
        key,
        method: method.to_owned(),
        path: path.to_owned(),
        body_hash: idempotency::body_hash(body),
    };
    let begun = idempotency::begin(
        state.store.database(),
        request,
        now_ms(),
        &state.settings.idempotency,
    )
    .await
    .map_err(|e| Box::new(ApiError::from(e).into_response()))?;
    begun.response().map(Some)
}

/// Release the claim of a write that did not commit, so a retry executes.
async fn settle<T>(state: &AppState, claim: Option<Claim>, result: &Result<T, ApiError>) {
    if let (Some(c), Err(_)) = (claim, result) {
        c.release(state.store.database()).await;
    }
}

async fn list(
    State(state): State<AppState>,
    Manager(caller): Manager,
    params: Result<Query<page::PageParams>, QueryRejection>,
) -> Result<Json<Page<ApiKeyView>>, ApiError> {
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
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let now = now_ms();
    let name = api_key::validate_name(body.get("name"))?;
    let scopes = api_key::validate_scopes(body.get("scopes"))?;
    let expires_at = api_key::validate_expires_at(body.get("expiresAt"), now)?;
    let body = serde_json::Value::Object(body);
    let claim = match claim(
        &state,
        &caller,
        &headers,
        "POST",
        "/v1/api-keys",
        Some(&body),
    )
    .await
    {
        Ok(c) => c,
        Err(done) => return Ok(*done),
    };
    let result = create_key(
        &state,
        &caller,
        name,
        scopes,
        expires_at,
        now,
        claim.as_ref(),
    )
    .await;
    settle(&state, claim, &result).await;
    let (record, plaintext) = result?;
    let mut view = ApiKeyView::of(record, now);
    view.key = Some(plaintext);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn create_key(
    state: &AppState,
    caller: &Identity,
    name: String,
    scopes: Vec<String>,
    expires_at: Option<i64>,
    now: i64,
    claim: Option<&Claim>,
) -> Result<(KeyRecord, String), ApiError> {
    let key = NewKey::generate().map_err(|e| {
        tracing::error!(error = %e, "the OS random number generator failed");
        ApiError::Envelope(rl_contract::error::ErrorResponse::new(
            rl_contract::ErrorCode::InternalError,
            "An internal error occurred.",
        ))
    })?;
    // A replay returns the key as created, without its plaintext: shown once, only ever.
    let render = |r: &KeyRecord| {
        let mut view = ApiKeyView::of(r.clone(), now);
        view.key_omitted = Some(true);
        view.json()
    };
    let finish = claim.map(|claim| Finish {
        claim,
        status: 201,
        render: &render,
    });
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
            finish.as_ref(),
        )
        .await?;
    state.relay_wake();
    tracing::info!(key_id = %record.id, prefix = %record.prefix, "api key created");
    Ok((record, key.plaintext))
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
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
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
    let body = serde_json::Value::Object(body);
    let route = format!("/v1/api-keys/{id}");
    let claim = match claim(&state, &caller, &headers, "PATCH", &route, Some(&body)).await {
        Ok(c) => c,
        Err(done) => return Ok(*done),
    };
    let now = now_ms();
    let render = |r: &KeyRecord| ApiKeyView::of(r.clone(), now).json();
    let finish = claim.as_ref().map(|claim| Finish {
        claim,
        status: 200,
        render: &render,
    });
    let result = state
        .store
        .update(
            &caller.organization_id,
            &id,
            &caller.actor(),
            crate::store::KeyChanges { name, scopes },
            now,
            finish.as_ref(),
        )
        .await
        .map_err(ApiError::from)
        .and_then(|u| u.ok_or(ApiError::NotFound));
    settle(&state, claim, &result).await;
    let updated = result?;
    if updated.changed {
        state.publish_change(&updated.record).await;
        state.relay_wake();
    }
    Ok(Json(ApiKeyView::of(updated.record, now)).into_response())
}

async fn revoke(
    State(state): State<AppState>,
    Manager(caller): Manager,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = key_id(path)?;
    let route = format!("/v1/api-keys/{id}");
    let claim = match claim(&state, &caller, &headers, "DELETE", &route, None).await {
        Ok(c) => c,
        Err(done) => return Ok(*done),
    };
    let now = now_ms();
    let render = |r: &KeyRecord| ApiKeyView::of(r.clone(), now).json();
    let finish = claim.as_ref().map(|claim| Finish {
        claim,
        status: 200,
        render: &render,
    });
    let result = state
        .store
        .revoke(
            &caller.organization_id,
            &id,
            &caller.actor(),
            now,
            finish.as_ref(),
        )
        .await
        .map_err(ApiError::from)
        .and_then(|u| u.ok_or(ApiError::NotFound));
    settle(&state, claim, &result).await;
    let revoked = result?;
    // Publish even when it was already revoked: a repeated revoke repairs any gateway that
    // somehow missed the first notice.
    state.publish_change(&revoked.record).await;
    if revoked.changed {
        state.relay_wake();
        tracing::info!(key_id = %revoked.record.id, "api key revoked");
    }
    Ok(Json(ApiKeyView::of(revoked.record, now)).into_response())
}
