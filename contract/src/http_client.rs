//! The one way binaries build an outgoing HTTP client: timeouts are mandatory, and a client
//! that cannot be built is a start-up error — never a silent fallback to a client without
//! timeouts.

use std::time::Duration;

/// A client whose every request ends within `timeout` (connecting within
/// `connect_timeout`).
pub fn build(
    timeout: Duration,
    connect_timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(connect_timeout.min(timeout))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
}
