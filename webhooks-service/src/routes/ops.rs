//! Liveness and readiness, for Kubernetes probes and health-service. `/readyz` also says
//! whether delivery workers are making progress: a worker that silently stopped while the
//! API still answers is visible (`"workers": "stalled"`), and health-service reports it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/livez", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (code, Json(mut body)) = rl_contract::db::readyz(state.store.database()).await;
    if code != StatusCode::OK {
        return (code, Json(body));
    }
    let now = rl_contract::time_fmt::now_ms();
    let stall = i64::try_from(state.settings.worker_stall.as_millis()).unwrap_or(i64::MAX);
    let (workers, last) = match state.store.last_heartbeat().await {
        Ok(Some(at)) if now - at <= stall => ("ok", Some(at)),
        Ok(last) => ("stalled", last),
        Err(_) => ("unknown", None),
    };
    body["checks"]["workers"] = json!(workers);
    body["lastWorkerHeartbeatAt"] = json!(last.map(rl_contract::time_fmt::format_ms));
    (code, Json(body))
}
