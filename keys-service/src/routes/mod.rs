//! The HTTP surface of keys-service, one module per audience, merged here.

pub mod api_keys;
pub mod internal;
pub mod ops;

use axum::Router;

use crate::AppState;

pub fn router(state: AppState) -> Router {
    let max_body = state.settings.max_body_bytes;
    let router = Router::new()
        .merge(api_keys::router())
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
