//! The delivery worker: claims due deliveries with a lease, attempts each (bounded overall
//! and per endpoint), records the attempt and schedules the next one.
//!
//! Nothing is lost to a crash: a claimed delivery carries `lease_until`; if its worker dies
//! (even `kill -9`) the lease runs out and any worker claims it again, with the same
//! `webhook-id`. A lease always outlasts an attempt (settings refuse otherwise), so one
//! attempt is never sent twice at once. A slow or dead endpoint holds at most its
//! per-endpoint share of the worker, so other endpoints' deliveries keep flowing.
//!
//! The worker records a heartbeat every loop; `/readyz` and `/health` report workers that
//! stopped making progress (see `routes::ops`).

use std::sync::Arc;
use std::time::Duration;

use rl_contract::time_fmt::now_ms;
use tokio::sync::{Semaphore, watch};

use crate::AppState;
use crate::schedule;
use crate::store::{AttemptOutcome, AttemptRecord, EndpointEffect, EndpointRecord, Job, NextStep};

/// `scheduled` attempts come from a worker, `manual` ones from the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Scheduled,
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Manual => "manual",
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Run the worker until `stop` turns true, then let in-flight attempts finish.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let settings = state.settings.clone();
    let id = format!("worker-{}", uuid::Uuid::new_v4().simple());
    let permits = Arc::new(Semaphore::new(settings.worker_concurrency));
    let beat_every =
        (settings.worker_stall / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut last_beat: Option<tokio::time::Instant> = None;
    tracing::info!(worker = %id, concurrency = settings.worker_concurrency, per_endpoint = settings.endpoint_concurrency, "delivery worker started");
    loop {
        if *stop.borrow() {
            break;
        }
        if last_beat.is_none_or(|t| t.elapsed() >= beat_every) {
            let now = now_ms();
            match state.store.heartbeat(&id, now).await {
                Ok(()) => {
                    last_beat = Some(tokio::time::Instant::now());
                    state.metrics.worker_heartbeat.set(now / 1000);
                }
                Err(e) => tracing::warn!(error = %e, "worker heartbeat not recorded"),
            }
        }
        let free = permits.available_permits();
        let mut claimed = 0;
        if free > 0 {
            let now = now_ms();
            match state
                .store
                .claim(
                    &id,
                    now,
                    now + ms(settings.lease),
                    i64::try_from(free).unwrap_or(1),
                    i64::from(settings.endpoint_concurrency),
                )
                .await
            {
                Ok(jobs) => {
                    claimed = jobs.len();
                    for job in jobs {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            break;
                        };
                        let state = state.clone();
                        let owner = id.clone();
                        tokio::spawn(async move {
                            process(&state, job, &owner).await;
                            drop(permit);
                            state.worker_wake.notify_one();
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not claim deliveries"),
            }
        }
        if claimed > 0 && claimed == free {
            continue;
        }
        tokio::select! {
            () = state.worker_wake.notified() => {},
            () = tokio::time::sleep(settings.poll_interval) => {},
            _ = stop.changed() => {},
        }
    }
    // Let attempts in flight finish (each is bounded by the request timeout).
    let all = u32::try_from(settings.worker_concurrency).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(
        settings.request_timeout + Duration::from_secs(1),
        permits.acquire_many(all),
    )
    .await;
    tracing::info!(worker = %id, "delivery worker stopped");
}

async fn process(state: &AppState, job: Job, owner: &str) {
    let endpoint = match state.store.endpoint_by_id(&job.endpoint_id).await {
        Ok(Some(e)) => e,
        // Deleted meanwhile: its deliveries were cancelled.
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "could not load the endpoint of a claimed delivery; retried after the lease");
            return;
        }
    };
    let payload = match state
        .store
        .event_payload(&job.organization_id, &job.event_id)
        .await
    {
        Ok(Some(p)) => p,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "could not load the event of a claimed delivery; retried after the lease");
            return;
        }
    };
    let attempt_number = job.attempts + 1;
    if let Err(e) = attempt(
        state,
        &endpoint,
        &job.event_id,
        &job.delivery_id,
        &payload,
        attempt_number,
        Trigger::Scheduled,
        Some(owner),
        Some(job.created_at),
        None,
    )
    .await
    {
        tracing::warn!(error = %e, "could not record a delivery attempt; the delivery is retried after its lease");
    }
}

/// Send one attempt and record it. With `lease_owner`, the delivery's schedule moves on
/// (next attempt, success or final failure); without (a manual resend), only a success
/// settles it.
#[allow(clippy::too_many_arguments)]
pub async fn attempt(
    state: &AppState,
    endpoint: &EndpointRecord,
    event_id: &str,
    delivery_id: &str,
    payload: &str,
    attempt_number: i64,
    trigger: Trigger,
    lease_owner: Option<&str>,
    enqueued_at: Option<i64>,
    finish: Option<&crate::store::Finish<'_, AttemptRecord>>,
) -> Result<AttemptRecord, sqlx::Error> {
    let started_at = now_ms();
    let sent = state.sender.send(endpoint, event_id, payload).await;
    let duration_ms = ms(sent.duration);
    let finished_at = started_at + duration_ms;
    let result = sent.error_class.unwrap_or("succeeded");
    state
        .metrics
        .attempts
        .with_label_values(&[result, trigger.as_str()])
        .inc();
    state
        .metrics
        .attempt_duration
        .observe(sent.duration.as_secs_f64());
    let gone = sent.http_status == Some(410);
    let settings = &state.settings;
    let next = if sent.succeeded() {
        NextStep::Succeeded
    } else if gone {
        NextStep::Failed
    } else {
        match u32::try_from(attempt_number + 1)
            .ok()
            .and_then(|n| settings.retry.delay_before(n))
        {
            Some(delay) => {
                let random = u64::from_le_bytes(crate::secret::random::<8>().unwrap_or([0; 8]));
                let delay = schedule::with_jitter(delay, settings.retry_jitter_percent, random);
                let delay = schedule::next_delay(delay, sent.retry_after, settings.retry_after_max);
                NextStep::RetryAt(finished_at + ms(delay))
            }
            None => NextStep::Failed,
        }
    };
    let effect = if sent.succeeded() {
        EndpointEffect::Healthy
    } else if gone {
        EndpointEffect::Disable("gone")
    } else {
        EndpointEffect::Failing
    };
    let record = AttemptRecord {
        id: uuid::Uuid::now_v7().hyphenated().to_string(),
        delivery_id: delivery_id.to_owned(),
        event_id: event_id.to_owned(),
        endpoint_id: endpoint.id.clone(),
        attempt_number,
        trigger: trigger.as_str().to_owned(),
        attempted_at: started_at,
        duration_ms,
        result: if sent.succeeded() {
            "succeeded"
        } else {
            "failed"
        }
        .to_owned(),
        http_status: sent.http_status.map(i64::from),
        error_class: sent.error_class.map(str::to_owned),
        response_body: sent.response_body.clone(),
    };
    let (owned, disabled) = state
        .store
        .record_attempt(
            AttemptOutcome {
                attempt: &record,
                organization_id: &endpoint.organization_id,
                next: next.clone(),
                effect,
                lease_owner,
                disable_after_ms: ms(settings.disable_after),
            },
            finish,
        )
        .await?;
    if !owned {
        tracing::warn!(
            delivery_id,
            "a delivery's lease ran out during its attempt; another worker owns it now"
        );
    }
    if sent.succeeded()
        && let Some(at) = enqueued_at
    {
        state
            .metrics
            .delivery_latency
            .observe(ms_to_secs(finished_at - at));
    }
    if let Some(reason) = disabled {
        state.relay_wake();
        tracing::warn!(endpoint_id = %endpoint.id, reason, "endpoint disabled");
    }
    tracing::debug!(delivery_id, attempt_number, result, status = ?sent.http_status, "delivery attempt");
    Ok(record)
}

fn ms_to_secs(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}
