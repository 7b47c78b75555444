//! The HTTP surface of audit-service: the public feed, internal ingestion, probes.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use rl_contract::http::JsonObject;
use rl_contract::page::{self, Cursor, Page};
use rl_contract::signing::{Internal, VerifiedIdentity};
use rl_contract::time_fmt::{now_ms, parse_rfc3339_ms};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::event::{self, AuditEvent, is_identifier};
use crate::store::Filter;

pub const MAX_EVENT_TYPE_FILTERS: usize = 20;

pub fn router(state: AppState) -> Router {
    let max_body = state.settings.max_body_bytes;
    let router = Router::new()
        .route("/v1/audit-events", get(list))
        .route("/internal/v1/audit-events/batch", post(ingest))
        .route("/livez", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz));
    let http_metrics = state.metrics.http.clone();
    rl_contract::http::finish(router, max_body)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            http_metrics,
            rl_contract::metrics::observe,
        ))
}

#[derive(Debug, Default)]
struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    filter: Filter,
}

fn parse_query(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery::default();
    let invalid = |m: String| ApiError::InvalidRequest(m);
    fn once(slot: &mut Option<String>, name: &str, value: String) -> Result<(), ApiError> {
        if slot.replace(value).is_some() {
            return Err(ApiError::InvalidRequest(format!(
                "{name} may be given only once."
            )));
        }
        Ok(())
    }
    let mut after = None;
    let mut before = None;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "limit" => once(&mut q.limit, "limit", value)?,
            "cursor" => once(&mut q.cursor, "cursor", value)?,
            "actor" => once(&mut q.filter.actor, "actor", value)?,
            "resourceType" => once(&mut q.filter.resource_type, "resourceType", value)?,
            "resourceId" => once(&mut q.filter.resource_id, "resourceId", value)?,
            "occurredAfter" => once(&mut after, "occurredAfter", value)?,
            "occurredBefore" => once(&mut before, "occurredBefore", value)?,
            "eventType" => {
                if q.filter.event_types.len() >= MAX_EVENT_TYPE_FILTERS {
                    return Err(invalid("at most 20 eventType filters.".to_owned()));
                }
                q.filter.event_types.push(value);
            }
            _ => {}
        }
    }
    for (name, value) in [
        ("actor", &q.filter.actor),
        ("resourceType", &q.filter.resource_type),
        ("resourceId", &q.filter.resource_id),
    ] {
        if value.as_deref().is_some_and(|v| !is_identifier(v)) {
            return Err(invalid(format!(
                "{name} must be 1-200 visible ASCII characters."
            )));
        }
    }
    if q.filter.event_types.iter().any(|t| !is_identifier(t)) {
        return Err(invalid(
            "eventType must be 1-200 visible ASCII characters.".to_owned(),
        ));
    }
    let time = |name: &str, v: Option<String>| -> Result<Option<i64>, ApiError> {
        v.map(|s| {
            parse_rfc3339_ms(&s)
                .ok_or_else(|| invalid(format!("{name} must be an RFC 3339 timestamp.")))
        })
        .transpose()
    };
    q.filter.occurred_after = time("occurredAfter", after)?;
    q.filter.occurred_before = time("occurredBefore", before)?;
    Ok(q)
}

async fn list(
    State(state): State<AppState>,
    identity: Result<VerifiedIdentity, rl_contract::error::ErrorResponse>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Page<AuditEvent>>, ApiError> {
    let VerifiedIdentity(identity) = identity.map_err(|_| ApiError::Unauthenticated)?;
    let q = parse_query(raw.as_deref())?;
    let limit = page::parse_limit(q.limit.as_deref())?;
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| Cursor::decode(c, is_identifier))
        .transpose()?;
    let (events, next) = state
        .store
        .list(&identity.organization_id, &q.filter, limit, cursor.as_ref())
        .await?;
    Ok(Json(Page {
        data: events,
        next_cursor: next.map(|c| c.encode()),
    }))
}

async fn ingest(
    _: Internal,
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let events = event::parse_batch(Value::Object(body)).map_err(ApiError::InvalidRequest)?;
    let result = state.store.ingest(&events, now_ms()).await?;
    state
        .metrics
        .ingested
        .with_label_values(&["accepted"])
        .inc_by(result.accepted);
    state
        .metrics
        .ingested
        .with_label_values(&["duplicate"])
        .inc_by(result.duplicates);
    Ok(Json(json!({
        "accepted": result.accepted,
        "duplicates": result.duplicates,
    })))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    rl_contract::db::readyz(state.store.database()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = parse_query(Some(
            "eventType=api_key.created&eventType=api_key.revoked&actor=user_1&limit=5\
             &occurredAfter=2026-01-01T00:00:00Z&unknown=1",
        ))
        .expect("valid");
        assert_eq!(
            q.filter.event_types,
            vec!["api_key.created", "api_key.revoked"]
        );
        assert_eq!(q.filter.actor.as_deref(), Some("user_1"));
        assert_eq!(q.limit.as_deref(), Some("5"));
        assert!(q.filter.occurred_after.is_some());
        assert!(parse_query(Some("actor=a&actor=b")).is_err());
        assert!(parse_query(Some("occurredBefore=yesterday")).is_err());
        assert!(parse_query(Some("actor=")).is_err());
        assert!(parse_query(None).is_ok());
    }
}
