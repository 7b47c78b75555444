//! Structured logs for every binary: JSON lines by default, human-readable on a terminal or
//! with `LOG_FORMAT=pretty`; level from `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Install the global subscriber once. Safe to call twice (the second call does nothing),
/// which lets tests start services in-process.
pub fn init(service: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let pretty = match std::env::var("LOG_FORMAT").ok().as_deref() {
        Some("json") => false,
        Some("pretty") => true,
        _ => std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if pretty {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    };
    if result.is_ok() {
        tracing::debug!(service, "telemetry initialised");
    }
}
