//! The HTTP surface of webhooks-service, one module per audience, merged here.

pub mod endpoints;
pub mod events;
pub mod internal;
pub mod ops;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use rl_contract::idempotency::{self, Claim};
use rl_contract::signing::VerifiedIdentity;
use rl_contract::time_fmt::now_ms;
use rl_contract::{AuthType, Identity};

use crate::AppState;
use crate::error::ApiError;

pub fn router(state: AppState) -> Router {
    let max_body = state.settings.max_body_bytes;
    let router = Router::new()
        .merge(endpoints::router())
        .merge(events::router())
        .merge(internal::router())
        .merge(ops::router());
    let http_metrics = state.metrics.http.clone();
    rl_contract::http::finish(router, max_body)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            http_metrics,
            rl_contract::metrics::observe,
        ))
}

/// A caller allowed to manage webhooks: a signed-in dashboard session, never an API key
/// (the gateway also requires `webhooks_manage`).
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

/// The `Idempotency-Key` claim for this write, or the response that ends it here: a
/// replay of the stored outcome, `409` while the first attempt runs, `422` for a different
/// request under the same key, `400` for a malformed key.
pub async fn claim(
    state: &AppState,
    organization_id: &str,
    caller: &str,
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
        organization_id: organization_id.to_owned(),
        caller: caller.to_owned(),
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
pub async fn settle<T>(state: &AppState, claim: Option<Claim>, result: &Result<T, ApiError>) {
    if let (Some(c), Err(_)) = (claim, result) {
        c.release(state.store.database()).await;
    }
}

/// Serialize a view for a stored idempotent response (plain structs: cannot fail).
pub fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
