//! API-key verification: shape check, SHA-256, the in-process key cache, keys-service.
//!
//! # Freshness
//! Cached records are dropped when keys-service's change feed names their hash, so a
//! revoked key is refused within the feed's latency, not after a TTL. A lookup that was in
//! flight when the change arrived must not re-insert the old record: every entry remembers
//! the invalidation generation at which its fetch *started*, and an entry older than an
//! invalidation of its hash (or a full reset) is treated as absent.
//!
//! While the feed is disconnected, entries older than a short "unsynced" TTL are refreshed
//! before use; if keys-service cannot be reached for the refresh, the cached record keeps
//! serving until its normal TTL (no revocation can have happened through a keys-service
//! nobody can reach). An entry dropped by an explicit invalidation is never served stale.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::credential::{is_well_formed_api_key, key_hash};
use crate::keys_client::{KeyRecord, KeysClient, KeysError};

pub type Hash = [u8; 32];

/// A verified key, as the proxy injects it.
#[derive(Debug)]
pub struct VerifiedKey {
    /// A boxed `str`, not a `String`: a million cached keys, 8 bytes and a size class each.
    pub id: Box<str>,
    /// Shared by every key of the organization (interned).
    pub organization_id: Arc<str>,
    /// Comma-joined, ready for the `x-api-key-scopes` header; interned (keys share sets).
    pub scopes_header: Arc<str>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// Organization ids and scope sets repeat across keys: one allocation each, shared. The
/// table is bounded; past its size new strings are simply not shared.
#[derive(Default)]
pub struct Interner {
    table: std::sync::Mutex<std::collections::HashSet<Arc<str>>>,
}

const INTERNER_MAX: usize = 200_000;

impl Interner {
    pub fn intern(&self, s: &str) -> Arc<str> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = table.get(s) {
            return existing.clone();
        }
        let fresh: Arc<str> = Arc::from(s);
        if table.len() < INTERNER_MAX {
            table.insert(fresh.clone());
        }
        fresh
    }
}

impl VerifiedKey {
    pub fn from_record(r: KeyRecord, interner: &Interner) -> Self {
        Self {
            scopes_header: interner.intern(&r.scopes.join(",")),
            organization_id: interner.intern(&r.organization_id),
            id: r.id.into_boxed_str(),
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    key: Option<Arc<VerifiedKey>>,
    fetched_gen: u64,
    fetched_at: Instant,
}

/// Why a key was refused: bounded labels for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    Unknown,
    Revoked,
    Expired,
}

impl Rejection {
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

#[derive(Debug)]
pub enum Outcome {
    Valid(Arc<VerifiedKey>),
    Invalid(Rejection),
    /// keys-service could not answer and nothing usable is cached: `503`, retryable.
    Unavailable,
    /// This client spent its own lookup budget on keys nobody had cached: `429`.
    Throttled,
}

/// A token bucket: at most `rate` lookups per second, bursts up to `rate`.
pub struct LookupBudget {
    rate: f64,
    state: std::sync::Mutex<(f64, Instant)>,
}

impl LookupBudget {
    pub fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            state: std::sync::Mutex::new((rate, Instant::now())),
        }
    }

    pub fn try_take(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.rate);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One lookup budget per client address (an IPv6 /64 counts as one client), so a flood of
/// unknown keys from one place spends its own budget and not the one every other client's
/// first lookup needs.
pub struct ClientBudgets {
    rate: u32,
    budgets: moka::sync::Cache<u128, Arc<LookupBudget>>,
}

impl ClientBudgets {
    pub fn new(rate: u32) -> Self {
        Self {
            rate,
            budgets: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(60))
                .build(),
        }
    }

    /// Take one lookup from `client`'s budget. A request with no known address (a test
    /// harness, a Unix socket) is bound by the global budget only.
    pub fn try_take(&self, client: Option<std::net::IpAddr>) -> bool {
        let Some(ip) = client else {
            return true;
        };
        self.budgets
            .get_with(client_key(ip), || Arc::new(LookupBudget::new(self.rate)))
            .try_take()
    }
}

/// The unit a budget belongs to: an IPv4 address, or an IPv6 /64 (one host's usual
/// allocation; IPv4-mapped addresses count as their IPv4 address).
pub fn client_key(ip: std::net::IpAddr) -> u128 {
    match ip {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)),
        std::net::IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => u128::from(a) & !u128::from(u64::MAX),
        },
    }
}

pub struct CacheSettings {
    pub capacity: u64,
    /// keys-service lookups per second (flood protection); 0 means 1.
    pub lookup_rate: u32,
    /// ... of which one client may start this many per second.
    pub lookup_rate_per_client: u32,
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub unsynced_ttl: Duration,
    pub lookup_concurrency: usize,
    pub lookup_timeout: Duration,
}

pub struct ApiKeyVerifier {
    /// Known keys: a compact, bounded cache (64 bytes a slot; see `key_cache`), so a
    /// million keys fit a sidecar's memory.
    cache: crate::key_cache::KeyCache<VerifiedKey>,
    /// Lookups in flight, one per hash: every caller asking at once shares its answer.
    inflight: std::sync::Mutex<
        std::collections::HashMap<Hash, Arc<tokio::sync::OnceCell<Option<Entry>>>>,
    >,
    /// "No such key", briefly (bounded to a tenth of the capacity).
    negative: moka::future::Cache<Hash, Entry>,
    interner: Interner,
    /// Hash → the generation at which it was last invalidated.
    invalidated: moka::sync::Cache<Hash, u64>,
    generation: AtomicU64,
    reset_generation: AtomicU64,
    /// keys-service's change feed is being followed.
    feed_synced: AtomicBool,
    /// Redis pub/sub is subscribed (only meaningful with `redis`).
    pubsub_synced: AtomicBool,
    redis: Option<crate::redis_tier::RedisTier>,
    unsynced_ttl: Duration,
    lookup_permits: Semaphore,
    lookup_budget: LookupBudget,
    client_budgets: ClientBudgets,
    lookup_timeout: Duration,
    client: KeysClient,
    metrics: Arc<crate::metrics::Metrics>,
}

impl ApiKeyVerifier {
    pub fn new(
        client: KeysClient,
        s: &CacheSettings,
        metrics: Arc<crate::metrics::Metrics>,
        redis: Option<crate::redis_tier::RedisTier>,
    ) -> Self {
        Self {
            interner: Interner::default(),
            cache: crate::key_cache::KeyCache::new(s.capacity, s.ttl),
            inflight: std::sync::Mutex::default(),
            negative: moka::future::Cache::builder()
                .max_capacity(s.capacity / 10 + 1)
                .time_to_live(s.negative_ttl)
                .build(),
            // Markers must outlive any cached record they may have to veto.
            invalidated: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(s.ttl.max(Duration::from_secs(120)) + Duration::from_secs(10))
                .build(),
            generation: AtomicU64::new(0),
            reset_generation: AtomicU64::new(0),
            feed_synced: AtomicBool::new(false),
            pubsub_synced: AtomicBool::new(false),
            redis,
            unsynced_ttl: s.unsynced_ttl,
            lookup_permits: Semaphore::new(s.lookup_concurrency.max(1)),
            lookup_budget: LookupBudget::new(s.lookup_rate),
            client_budgets: ClientBudgets::new(s.lookup_rate_per_client),
            lookup_timeout: s.lookup_timeout,
            client,
            metrics,
        }
    }

    pub fn client(&self) -> &KeysClient {
        &self.client
    }

    /// Drop one key's cached record (its hash arrived on the change feed).
    pub async fn invalidate(&self, hash: Hash) {
        let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.invalidated.insert(hash, g);
        self.cache.invalidate(&hash);
        self.negative.invalidate(&hash).await;
    }

    /// Drop everything (the feed said `reset`: a restart, or we fell behind).
    pub fn invalidate_all(&self) {
        let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.reset_generation.store(g, Ordering::SeqCst);
        self.cache.invalidate_all();
        self.negative.invalidate_all();
    }

    pub fn set_feed_synced(&self, synced: bool) {
        self.feed_synced.store(synced, Ordering::SeqCst);
    }

    pub fn set_pubsub_synced(&self, synced: bool) {
        self.pubsub_synced.store(synced, Ordering::SeqCst);
    }

    pub fn redis(&self) -> Option<&crate::redis_tier::RedisTier> {
        self.redis.as_ref()
    }

    /// Whether change notices are reaching this gateway. With Redis, only its pub/sub
    /// reaches every keys-service replica's changes; without, keys-service's feed does.
    pub fn is_synced(&self) -> bool {
        if self.redis.is_some() {
            self.pubsub_synced.load(Ordering::SeqCst)
        } else {
            self.feed_synced.load(Ordering::SeqCst)
        }
    }

    pub fn cached_entries(&self) -> u64 {
        self.cache.len() + self.negative.entry_count()
    }

    fn invalidated_since(&self, hash: &Hash, entry: &Entry) -> bool {
        // Only invalidations move the generation: if it has not moved since this entry's
        // fetch began (nearly always), nothing can have invalidated it — no map lookup.
        if entry.fetched_gen == self.generation.load(Ordering::SeqCst) {
            return false;
        }
        entry.fetched_gen < self.reset_generation.load(Ordering::SeqCst)
            || self
                .invalidated
                .get(hash)
                .is_some_and(|g| g > entry.fetched_gen)
    }

    async fn fetch(&self, hash: Hash, request_id: Option<&str>) -> Result<Entry, KeysError> {
        let fetched_gen = self.generation.load(Ordering::SeqCst);
        let fetched_at = Instant::now();
        // Redis first — unless this gateway was just told the key changed: then only
        // keys-service's answer counts, so a record Redis failed to update can never bring
        // a revoked key back.
        if let Some(redis) = &self.redis
            && self.invalidated.get(&hash).is_none()
        {
            let hex_hash = hex::encode(hash);
            let (result, entry) = match redis.get(&hex_hash).await {
                Ok(Some(cached)) => {
                    let key = match cached {
                        crate::redis_tier::Cached::Found(r) => {
                            Some(Arc::new(VerifiedKey::from_record(r, &self.interner)))
                        }
                        crate::redis_tier::Cached::Missing => None,
                    };
                    ("hit", Some(key))
                }
                Ok(None) => ("miss", None),
                Err(()) => ("error", None),
            };
            self.metrics
                .cache
                .with_label_values(&["api_key", "redis", result])
                .inc();
            if let Some(key) = entry {
                return Ok(Entry {
                    key,
                    fetched_gen,
                    fetched_at,
                });
            }
        }
        // Flood protection: unknown keys cost keys-service a lookup each (they never repeat,
        // so negative caching cannot help); past the budget they get a retryable 503
        // instead. Cached keys never reach this point.
        if !self.lookup_budget.try_take() {
            return Err(KeysError::Throttled);
        }
        let _permit = tokio::time::timeout(self.lookup_timeout, self.lookup_permits.acquire())
            .await
            .map_err(|_| KeysError::Timeout)?
            .map_err(|_| KeysError::Timeout)?;
        let started = Instant::now();
        let record = self.client.lookup(&hex::encode(hash), request_id).await;
        let result = match &record {
            Ok(Some(_)) => "found",
            Ok(None) => "not_found",
            Err(_) => "error",
        };
        self.metrics
            .key_lookup_duration
            .with_label_values(&[result])
            .observe(started.elapsed().as_secs_f64());
        let record = record?;
        Ok(Entry {
            key: record.map(|r| Arc::new(VerifiedKey::from_record(r, &self.interner))),
            fetched_gen,
            fetched_at,
        })
    }

    /// Put a verified record in the in-process cache (benchmarks and the memory probe).
    #[doc(hidden)]
    pub async fn prefill(&self, hash: Hash, key: VerifiedKey) {
        let entry = Entry {
            key: Some(Arc::new(key)),
            fetched_gen: self.generation.load(Ordering::SeqCst),
            fetched_at: Instant::now(),
        };
        self.store(hash, entry).await;
    }

    /// Let pending cache maintenance run (so entry counts are exact).
    #[doc(hidden)]
    pub async fn settle(&self) {
        self.negative.run_pending_tasks().await;
    }

    async fn store(&self, hash: Hash, entry: Entry) {
        match &entry.key {
            Some(key) => self.cache.insert(
                hash,
                crate::key_cache::Cached {
                    value: key.clone(),
                    fetched_gen: entry.fetched_gen,
                    fetched_at: entry.fetched_at,
                },
            ),
            None => self.negative.insert(hash, entry).await,
        }
    }

    fn cached(&self, hash: &Hash) -> Option<Entry> {
        self.cache.get(hash).map(|c| Entry {
            key: Some(c.value),
            fetched_gen: c.fetched_gen,
            fetched_at: c.fetched_at,
        })
    }

    /// The cached answer for `hash`, or one fetch shared by every caller asking at once.
    async fn lookup(
        &self,
        hash: Hash,
        request_id: Option<&str>,
        client: Option<std::net::IpAddr>,
    ) -> Result<Entry, KeysError> {
        let cached = match self.cached(&hash) {
            Some(e) => Some(e),
            None => self.negative.get(&hash).await,
        };
        if let Some(e) = cached {
            self.metrics.hot.api_key_memory_hit.inc();
            return Ok(e);
        }
        self.metrics.hot.api_key_memory_miss.inc();
        if !self.client_budgets.try_take(client) {
            return Err(KeysError::ClientThrottled);
        }
        // One fetch per hash at a time; if the caller running it goes away, the next
        // waiter runs it instead (`OnceCell` semantics).
        let cell = self
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(hash)
            .or_default()
            .clone();
        let found = cell
            .get_or_init(|| async {
                match self.fetch(hash, request_id).await {
                    Ok(e) => {
                        self.store(hash, e.clone()).await;
                        Some(e)
                    }
                    // Every caller coalesced on this fetch sees `None` and nothing is
                    // cached: the lookup failed, for all of them at once.
                    Err(_) => None,
                }
            })
            .await
            .clone();
        {
            let mut inflight = self
                .inflight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if inflight.get(&hash).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                inflight.remove(&hash);
            }
        }
        found.ok_or_else(|| KeysError::Unreachable("lookup failed".to_owned()))
    }

    /// Verify a bearer token that starts with `rl_live_`.
    pub async fn verify(
        &self,
        token: &str,
        now_ms: i64,
        request_id: Option<&str>,
        client: Option<std::net::IpAddr>,
    ) -> Outcome {
        if !is_well_formed_api_key(token) {
            return Outcome::Invalid(Rejection::Malformed);
        }
        let hash = key_hash(token);
        for _ in 0..3 {
            let entry = match self.lookup(hash, request_id, client).await {
                Ok(e) => e,
                Err(KeysError::ClientThrottled) => return Outcome::Throttled,
                Err(e) => {
                    tracing::warn!(error = %e, "api key lookup failed");
                    return Outcome::Unavailable;
                }
            };
            if self.invalidated_since(&hash, &entry) {
                self.cache.invalidate(&hash);
                self.negative.invalidate(&hash).await;
                continue;
            }
            if !self.is_synced() && entry.fetched_at.elapsed() > self.unsynced_ttl {
                return match self.fetch(hash, request_id).await {
                    Ok(fresh) if self.invalidated_since(&hash, &fresh) => continue,
                    Ok(fresh) => {
                        self.store(hash, fresh.clone()).await;
                        evaluate(&fresh, now_ms)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "refresh failed; serving cached record");
                        evaluate(&entry, now_ms)
                    }
                };
            }
            return evaluate(&entry, now_ms);
        }
        // Invalidations keep racing our lookups: answer from a fetch that started after
        // all of them, without the cache.
        match self.fetch(hash, request_id).await {
            Ok(fresh) => evaluate(&fresh, now_ms),
            Err(_) => Outcome::Unavailable,
        }
    }
}

fn evaluate(entry: &Entry, now_ms: i64) -> Outcome {
    match &entry.key {
        None => Outcome::Invalid(Rejection::Unknown),
        Some(k) if k.revoked_at.is_some() => Outcome::Invalid(Rejection::Revoked),
        Some(k) if k.expires_at.is_some_and(|e| e <= now_ms) => {
            Outcome::Invalid(Rejection::Expired)
        }
        Some(k) => Outcome::Valid(k.clone()),
    }
}

/// Parse a hex hash from the change feed.
pub fn parse_hash(hex_str: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: Option<VerifiedKey>) -> Entry {
        Entry {
            key: key.map(Arc::new),
            fetched_gen: 0,
            fetched_at: Instant::now(),
        }
    }

    fn key(expires_at: Option<i64>, revoked_at: Option<i64>) -> VerifiedKey {
        VerifiedKey {
            id: "k".into(),
            organization_id: "org".into(),
            scopes_header: "a,b".into(),
            expires_at,
            revoked_at,
        }
    }

    #[test]
    fn the_lookup_budget_refills_at_its_rate() {
        let b = LookupBudget::new(5);
        let taken = (0..20).filter(|_| b.try_take()).count();
        assert_eq!(taken, 5);
        std::thread::sleep(Duration::from_millis(450));
        assert!(b.try_take());
    }

    #[test]
    fn expiry_is_checked_at_every_use() {
        assert!(matches!(
            evaluate(&entry(None), 0),
            Outcome::Invalid(Rejection::Unknown)
        ));
        assert!(matches!(
            evaluate(&entry(Some(key(None, Some(1)))), 0),
            Outcome::Invalid(Rejection::Revoked)
        ));
        let e = entry(Some(key(Some(1_000), None)));
        assert!(matches!(evaluate(&e, 999), Outcome::Valid(_)));
        assert!(matches!(
            evaluate(&e, 1_000),
            Outcome::Invalid(Rejection::Expired)
        ));
    }

    /// A verifier whose keys-service never answers (port 9, discard).
    fn unreachable_verifier(timeout_ms: u64, concurrency: usize) -> ApiKeyVerifier {
        let timeout = Duration::from_millis(timeout_ms);
        ApiKeyVerifier::new(
            KeysClient::new("127.0.0.1:9".into(), timeout, None),
            &CacheSettings {
                capacity: 10,
                lookup_rate: 1000,
                lookup_rate_per_client: 1000,
                ttl: Duration::from_secs(60),
                negative_ttl: Duration::from_secs(1),
                unsynced_ttl: Duration::from_secs(1),
                lookup_concurrency: concurrency,
                lookup_timeout: timeout,
            },
            Arc::new(crate::metrics::Metrics::new()),
            None,
        )
    }

    #[tokio::test]
    async fn an_invalidation_during_a_fetch_makes_its_result_stale() {
        let v = unreachable_verifier(50, 1);
        let h = [7u8; 32];
        let started = Entry {
            fetched_gen: v.generation.load(Ordering::SeqCst),
            ..entry(Some(key(None, None)))
        };
        v.invalidate(h).await;
        assert!(v.invalidated_since(&h, &started));
        let after = Entry {
            fetched_gen: v.generation.load(Ordering::SeqCst),
            ..entry(Some(key(None, None)))
        };
        assert!(!v.invalidated_since(&h, &after));
        v.invalidate_all();
        assert!(v.invalidated_since(&[1u8; 32], &after));
    }

    #[tokio::test]
    async fn unreachable_keys_service_is_unavailable_not_invalid() {
        let v = unreachable_verifier(200, 4);
        let token = "rl_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(matches!(
            v.verify(token, 0, None, None).await,
            Outcome::Unavailable
        ));
        assert!(matches!(
            v.verify("rl_live_short", 0, None, None).await,
            Outcome::Invalid(Rejection::Malformed)
        ));
    }
}
