//! The contract between the ReconLayer Edge gateway and the services behind it.
//!
//! # Layout
//! - [`metrics`]: Prometheus registries and the request-observing middleware.
//! - [`admin`]: the admin listener (`/metrics`, `/livez`, `/readyz`) of every axum service.
//! - [`error`]: the documented error envelope `{"error": "...", "message": "..."}` and its codes.
//! - [`http`]: request-body parsing and router finishing shared by the axum services.
//! - [`identity`]: the identity headers the gateway owns, strips from clients and injects.
//! - [`page`]: `limit` and the opaque keyset cursor of every list endpoint.
//! - [`redis`]: a Redis connection made in the background and kept.
//! - [`settings`]: reading typed settings from the environment (invalid = exit 64).
//! - [`telemetry`]: `tracing` set-up shared by every binary.
//! - [`db`]: one place that decides how SQLite and Postgres are both supported (and the
//!   pool gauge).
//! - [`signing`]: the signed identity and the internal-endpoint token.
//! - [`idempotency`]: `Idempotency-Key` on writes: claim, replay, complete in the write's
//!   transaction.
//! - [`shutdown`]: the SIGTERM / Ctrl-C future every axum service waits on.
//! - [`time_fmt`]: RFC 3339 timestamps as the API writes them.
//! - [`webhooks`]: the internal message that queues an outbound webhook event.
//! - [`wire`]: every message between the binaries (key lookup, key record, change feed,
//!   usage report, Redis record, audit events), one serde type each.
//! - [`lifecycle`]: the life of every axum service — admin listener, audit relay,
//!   idempotency purge, graceful drain, outbox flush — written once.
//! - [`outbox`]: the audit outbox every writing service shares, and its relay.
//! - [`backoff`]: capped exponential backoff with jitter, for every retry loop.
//! - [`http_client`]: outgoing HTTP clients, timeouts mandatory.
//!
//! The axum/sqlx scaffolding the services share (`admin`, `db`, `http`, `idempotency`,
//! `lifecycle`, `outbox`, `shutdown`, the metrics middleware, the identity extractors, the error
//! response) is behind the `service` feature, which the gateway does not enable: its
//! dependency tree has neither axum nor sqlx.
//!
//! Services never depend on each other's code; they talk HTTP. This crate holds only the
//! contract and shared infrastructure, never business logic.

#[cfg(feature = "service")]
pub mod admin;
pub mod backoff;
#[cfg(feature = "service")]
pub mod db;
pub mod error;
#[cfg(feature = "service")]
pub mod http;
pub mod http_client;
#[cfg(feature = "service")]
pub mod idempotency;
pub mod identity;
#[cfg(feature = "service")]
pub mod lifecycle;
pub mod metrics;
#[cfg(feature = "service")]
pub mod outbox;
pub mod page;
pub mod redis;
pub mod settings;
#[cfg(feature = "service")]
pub mod shutdown;
pub mod signing;
pub mod telemetry;
pub mod time_fmt;
pub mod webhooks;
pub mod wire;

pub use error::{ErrorBody, ErrorCode};
pub use identity::{AuthType, Identity};
