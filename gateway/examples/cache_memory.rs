//! How much memory the in-process API-key cache takes per cached key.
//!
//!     cargo run --release -p gateway --example cache_memory [-- 1000000]
//!
//! Fills the cache with N distinct key records shaped like real ones (UUID id, Clerk-style
//! organization id, two scopes) and prints the process's resident memory before and after.

use std::sync::Arc;

// The gateway binary's allocator, so the figure is the gateway's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Duration;

use gateway::api_key::{ApiKeyVerifier, CacheSettings, VerifiedKey};
use gateway::keys_client::KeysClient;
use sha2::{Digest, Sha256};

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let verifier = ApiKeyVerifier::new(
        KeysClient::new("127.0.0.1:9".into(), Duration::from_secs(1), None),
        &CacheSettings {
            capacity: n,
            lookup_rate: 1000,
            lookup_rate_per_client: 1000,
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(10),
            unsynced_ttl: Duration::from_secs(3600),
            lookup_concurrency: 64,
            lookup_timeout: Duration::from_secs(1),
        },
        Arc::new(gateway::metrics::Metrics::new()),
        None,
    );
    // What the gateway does on a miss: organization ids and scope sets are shared.
    let interner = gateway::api_key::Interner::default();
    let before = rss_mb();
    for i in 0..n {
        let hash: [u8; 32] = Sha256::digest(i.to_le_bytes()).into();
        verifier
            .prefill(
                hash,
                VerifiedKey {
                    id: uuid::Uuid::from_u128(u128::from(i))
                        .hyphenated()
                        .to_string()
                        .into_boxed_str(),
                    organization_id: interner.intern(&format!("org_2abcdefghij{:08}", i % 5000)),
                    scopes_header: interner
                        .intern("payment_intents:read,reconciliation_cases:read"),
                    expires_at: None,
                    revoked_at: None,
                },
            )
            .await;
    }
    verifier.settle().await;
    let after = rss_mb();
    println!(
        "{} cached keys: RSS {:.1} MB -> {:.1} MB ({:.1} MB, {:.0} bytes per key)",
        verifier.cached_entries(),
        before,
        after,
        after - before,
        (after - before) * 1024.0 * 1024.0 / n as f64
    );
}
