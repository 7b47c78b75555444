//! The dependency checks behind `/health`, and the short-lived cached report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rl_contract::time_fmt::{format_ms, now_ms};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::settings::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Degraded,
    Down,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub status: Status,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    pub status: Status,
    pub checked_at: String,
    pub last_successful_check_at: Option<String>,
    pub checks: BTreeMap<&'static str, CheckResult>,
}

/// One dependency: a name, whether the API is down without it, and how to probe it.
struct Dependency {
    name: &'static str,
    critical: bool,
    probe: Probe,
}

enum Probe {
    /// `GET` a readiness URL; any 2xx is ok.
    Http(String),
    /// webhooks-service's `/readyz`: ready, and its workers making progress
    /// (`checks.workers == "ok"`); a worker that silently stopped is reported.
    Webhooks(String),
    /// `PING` (the gateways fall back to keys-service without Redis: degraded, not down).
    Redis(redis::Client),
}

struct Cached {
    at: Instant,
    report: HealthReport,
}

pub struct Monitor {
    checks_total: prometheus::IntCounterVec,
    client: reqwest::Client,
    deps: Vec<Dependency>,
    timeout: Duration,
    ttl: Duration,
    cached: Mutex<Option<Cached>>,
    last_ok: std::sync::Mutex<Option<i64>>,
}

impl Monitor {
    pub fn new(s: &Settings, registry: &prometheus::Registry) -> Result<Self, reqwest::Error> {
        let client = rl_contract::http_client::build(s.check_timeout, s.check_timeout)?;
        Ok(Self {
            checks_total: rl_contract::metrics::register(
                registry,
                prometheus::IntCounterVec::new(
                    prometheus::Opts::new(
                        "health_dependency_checks_total",
                        "Dependency checks run, by dependency and result.",
                    ),
                    &["dependency", "status"],
                )
                .expect("valid metric"),
            ),
            client,
            deps: vec![
                Dependency {
                    // Without keys-service no API key can be verified: the API is down.
                    name: "keys_service",
                    critical: true,
                    probe: Probe::Http(format!("{}/readyz", s.keys_service_url)),
                },
                Dependency {
                    // Without audit-service the feed is unavailable; the API still serves.
                    name: "audit_service",
                    critical: false,
                    probe: Probe::Http(format!("{}/readyz", s.audit_service_url)),
                },
            ]
            .into_iter()
            .chain(s.webhooks_service_url.as_deref().map(|u| Dependency {
                // Without webhooks-service (or its workers) outbound webhooks wait in the
                // queue; the API still serves.
                name: "webhooks_service",
                critical: false,
                probe: Probe::Webhooks(format!("{u}/readyz")),
            }))
            .chain(s.redis.clone().map(|c| Dependency {
                name: "redis",
                critical: false,
                probe: Probe::Redis(c),
            }))
            .collect(),
            timeout: s.check_timeout,
            ttl: s.cache_ttl,
            cached: Mutex::new(None),
            last_ok: std::sync::Mutex::new(None),
        })
    }

    async fn check(&self, dep: &Dependency) -> CheckResult {
        let started = Instant::now();
        let error = match &dep.probe {
            Probe::Http(url) => {
                match tokio::time::timeout(self.timeout, self.client.get(url).send()).await {
                    Ok(Ok(r)) if r.status().is_success() => None,
                    Ok(Ok(_)) => Some("not ready"),
                    Ok(Err(e)) if e.is_timeout() => Some("timeout"),
                    Ok(Err(_)) => Some("unreachable"),
                    Err(_) => Some("timeout"),
                }
            }
            Probe::Webhooks(url) => {
                let probe = async {
                    let r = self.client.get(url).send().await?;
                    let ok = r.status().is_success();
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    Ok::<_, reqwest::Error>((ok, body))
                };
                match tokio::time::timeout(self.timeout, probe).await {
                    Ok(Ok((true, body))) if body["checks"]["workers"] == "ok" => None,
                    Ok(Ok((true, _))) => Some("workers stalled"),
                    Ok(Ok((false, _))) => Some("not ready"),
                    Ok(Err(e)) if e.is_timeout() => Some("timeout"),
                    Ok(Err(_)) => Some("unreachable"),
                    Err(_) => Some("timeout"),
                }
            }
            Probe::Redis(client) => {
                let ping = async {
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    redis::cmd("PING").query_async::<String>(&mut conn).await
                };
                match tokio::time::timeout(self.timeout, ping).await {
                    Ok(Ok(_)) => None,
                    Ok(Err(_)) => Some("unreachable"),
                    Err(_) => Some("timeout"),
                }
            }
        };
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.checks_total
            .with_label_values(&[dep.name, if error.is_none() { "ok" } else { "down" }])
            .inc();
        CheckResult {
            status: if error.is_none() {
                Status::Ok
            } else {
                Status::Down
            },
            latency_ms,
            error,
        }
    }

    async fn run_checks(&self) -> HealthReport {
        let results = futures::future::join_all(
            self.deps
                .iter()
                .map(|d| async move { (d, self.check(d).await) }),
        )
        .await;
        let mut status = Status::Ok;
        let mut checks = BTreeMap::new();
        for (dep, result) in results {
            if result.status != Status::Ok {
                status = match (status, dep.critical) {
                    (_, true) | (Status::Down, _) => Status::Down,
                    _ => Status::Degraded,
                };
            }
            checks.insert(dep.name, result);
        }
        let now = now_ms();
        let mut last_ok = self.last_ok.lock().unwrap_or_else(|p| p.into_inner());
        if status == Status::Ok {
            *last_ok = Some(now);
        }
        HealthReport {
            status,
            checked_at: format_ms(now),
            last_successful_check_at: last_ok.map(format_ms),
            checks,
        }
    }

    /// The current report: reused while younger than the cache interval; otherwise one
    /// caller runs the checks while the others wait for its result.
    pub async fn report(&self) -> HealthReport {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && c.at.elapsed() < self.ttl
        {
            return c.report.clone();
        }
        let report = self.run_checks().await;
        *cached = Some(Cached {
            at: Instant::now(),
            report: report.clone(),
        });
        report
    }
}
