//! Production topology: several gateways and keys-service replicas sharing one database
//! and Redis; revocation across replicas; faults injected and recovered from.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    Backend, Replica, Stack, StackOptions, assert_envelope, consistently, database, eventually, kv,
    postgres_admin_url, status_json,
};
use reqwest::Method;
use serde_json::json;

const ORG: &str = "org_topology";

/// The production topology: `replicas` × (keys-service + gateway) sharing one database and
/// one Redis — the first pair is the stack's own, the rest its replicas. `None` when this
/// machine has no redis-server (a skip; a failure under `CI=true`).
struct Cluster {
    stack: Stack,
    replicas: Vec<Replica>,
}

impl Cluster {
    async fn start(
        backend: Backend,
        replicas: usize,
        keys_db_override: Option<String>,
    ) -> Option<Self> {
        let mut opts = StackOptions::new(backend);
        opts.redis = true;
        opts.keys_db = keys_db_override;
        opts.keys_env
            .push(kv("DATABASE_ACQUIRE_TIMEOUT_MS", "1000"));
        opts.gateway_env
            .push(kv("GATEWAY_KEY_CACHE_UNSYNCED_TTL_MS", "500"));
        let stack = Stack::try_start_with(opts).await?;
        let mut others = Vec::new();
        for n in 1..replicas {
            others.push(stack.start_replica(n).await);
        }
        Some(Self {
            stack,
            replicas: others,
        })
    }

    /// Gateway `node`'s URL: 0 is the stack's own, the rest its replicas.
    fn gateway(&self, node: usize) -> &str {
        match node {
            0 => &self.stack.gateway_url,
            n => &self.replicas[n - 1].gateway.url,
        }
    }

    async fn create_key(&self, node: usize) -> (String, String) {
        let (s, b) = status_json(
            self.stack
                .client
                .post(format!("{}/v1/api-keys", self.gateway(node)))
                .header("x-organization-id", ORG)
                .json(&json!({"name": "replicated", "scopes": ["a"]}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        (
            b["key"].as_str().unwrap().to_owned(),
            b["id"].as_str().unwrap().to_owned(),
        )
    }

    async fn call(&self, node: usize, key: &str) -> u16 {
        self.stack
            .client
            .get(format!("{}/v1/x", self.gateway(node)))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn revoke(&self, node: usize, id: &str) {
        let r = self
            .stack
            .client
            .request(
                Method::DELETE,
                format!("{}/v1/api-keys/{id}", self.gateway(node)),
            )
            .header("x-organization-id", ORG)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

fn backend() -> Backend {
    if postgres_admin_url().is_some() {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_through_one_replica_is_refused_by_the_other_at_once() {
    let Some(cluster) = Cluster::start(backend(), 2, None).await else {
        return;
    };
    let rounds = 40;
    let mut millis = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (key, id) = cluster.create_key(0).await;
        // Warm both gateways' in-process caches (the second is filled from Redis).
        for node in [0, 1, 1] {
            assert_eq!(cluster.call(node, &key).await, 200);
        }
        cluster.revoke(0, &id).await;
        let revoked = Instant::now();
        loop {
            let s = cluster.call(1, &key).await;
            if s == 401 {
                break;
            }
            assert_eq!(s, 200);
            assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "replica 1 still accepts the key after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        millis.push(revoked.elapsed().as_secs_f64() * 1000.0);
    }
    millis.sort_by(f64::total_cmp);
    let pct = |p: f64| millis[((millis.len() as f64 - 1.0) * p).round() as usize];
    eprintln!(
        "cross-replica revocation over {rounds} keys ({:?}): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        backend(),
        pct(0.5),
        pct(0.99),
        millis[millis.len() - 1]
    );
    assert!(pct(0.99) < 1000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_degrades_to_keys_service_and_never_revives_a_revoked_key() {
    let Some(mut cluster) = Cluster::start(backend(), 1, None).await else {
        return;
    };
    let (revoked_key, revoked_id) = cluster.create_key(0).await;
    assert_eq!(cluster.call(0, &revoked_key).await, 200);
    let redis = cluster.stack.redis.as_mut().unwrap();
    redis.proc.kill();
    // Verification continues through keys-service: new keys work, revocations hold.
    let (fresh, _) = cluster.create_key(0).await;
    assert_eq!(cluster.call(0, &fresh).await, 200);
    cluster.revoke(0, &revoked_id).await;
    eventually(
        "the revoked key refused while Redis is down",
        Duration::from_secs(1),
        || async { cluster.call(0, &revoked_key).await == 401 },
    )
    .await;
    // Redis comes back (empty): the revoked key stays refused, the fresh one keeps working.
    let redis = cluster.stack.redis.as_mut().unwrap();
    redis.proc.start();
    redis.wait_up().await;
    consistently(
        "revoked key refused and fresh key accepted after Redis returns",
        Duration::from_secs(2),
        || async {
            (
                cluster.call(0, &revoked_key).await,
                cluster.call(0, &fresh).await,
            ) == (401, 200)
        },
    )
    .await;
}

/// A TCP forwarder the test can cut and restore: the "network" between keys-service and
/// its database.
struct Link {
    addr: String,
    up: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Link {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (u, c) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused-ish
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(task);
            }
        });
        Self { addr, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_is_503_with_nothing_half_written_then_recovers() {
    let Some(admin) = postgres_admin_url() else {
        common::skip("database fault test needs Postgres (RL_TEST_POSTGRES_URL)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let direct = database(Backend::Postgres, dir.path(), "keys").await;
    let pg_host = admin
        .split('@')
        .nth(1)
        .and_then(|h| h.split('/').next())
        .unwrap()
        .to_owned();
    let link = Link::start(pg_host.clone()).await;
    let through_link = direct.replacen(&pg_host, &link.addr, 1);
    let Some(cluster) = Cluster::start(Backend::Postgres, 1, Some(through_link)).await else {
        return;
    };
    let (key, _) = cluster.create_key(0).await;
    assert_eq!(cluster.call(0, &key).await, 200);
    let keys_list = || {
        cluster
            .stack
            .client
            .get(format!("{}/v1/api-keys", cluster.gateway(0)))
            .header("x-organization-id", ORG)
            .send()
    };

    link.cut();
    let started = Instant::now();
    let (s, b) = status_json(
        cluster
            .stack
            .client
            .post(format!("{}/v1/api-keys", cluster.gateway(0)))
            .header("x-organization-id", ORG)
            .json(&json!({"name": "during outage", "scopes": ["a"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 503, "{b}");
    assert_envelope(&b, "service_unavailable");
    assert!(started.elapsed() < Duration::from_secs(10));
    let (s, _) = status_json(keys_list().await.unwrap()).await;
    assert_eq!(s, 503);
    // A key already verified keeps working from the caches.
    assert_eq!(cluster.call(0, &key).await, 200);

    link.restore();
    let body = eventually(
        "keys-service recovering after the database returns",
        Duration::from_secs(20),
        || async {
            let (s, body) = status_json(keys_list().await.unwrap()).await;
            (s == 200).then_some(body)
        },
    )
    .await;
    let names: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["replicated"],
        "the failed create left something behind"
    );
    // Direct check of the database: one key.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&direct).await.unwrap();
    let row = sqlx::query("SELECT COUNT(*) AS n FROM api_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sqlx::Row::get::<i64, _>(&row, "n"), 1);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    if postgres_admin_url().is_none() {
        common::skip("concurrent migration test needs Postgres (RL_TEST_POSTGRES_URL)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = database(Backend::Postgres, dir.path(), "keys").await;
    let client = reqwest::Client::new();
    let env = [
        kv("DATABASE_URL", db.clone()),
        kv("IDENTITY_VERIFICATION", "off"),
    ];
    let launched: Vec<_> = (0..4)
        .map(|i| {
            common::Service::launch(
                &format!("keys-{i}"),
                "keys-service",
                "KEYS",
                &env,
                dir.path(),
            )
        })
        .collect();
    let mut running = Vec::new();
    for replica in launched {
        running.push(replica.ready(&client, "/livez").await);
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db).await.unwrap();
    let row = sqlx::query("SELECT COUNT(*) AS n FROM _keys_service_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        sqlx::Row::get::<i64, _>(&row, "n"),
        keys_service_migration_count()
    );
    pool.close().await;
}

fn keys_service_migration_count() -> i64 {
    // 0001 api keys and audit outbox, 0002 idempotency keys.
    2
}
