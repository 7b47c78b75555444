//! Production topology: several gateways and keys-service replicas sharing one database
//! and Redis; revocation across replicas; faults injected and recovered from.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    Backend, Proc, assert_envelope, bin, database, free_port, postgres_admin_url, status_json,
    wait_http,
};
use reqwest::Method;
use serde_json::json;

const ORG: &str = "org_topology";

fn kv(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

/// A redis-server of the test's own, on a claimed port.
fn redis_server(dir: &std::path::Path) -> Option<(Proc, String)> {
    let path = std::env::var_os("PATH")?;
    let exe = std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|p| p.exists())?;
    let port = free_port();
    let mut p = Proc::spawn_with_args(
        "redis",
        &exe,
        &[
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        &[],
        dir,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(p.is_running(), "redis-server exited: {}", p.logs());
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((p, format!("redis://127.0.0.1:{port}")))
}

/// Held for their lifetime: dropping a `Proc` kills the process.
#[allow(dead_code)]
struct Node {
    keys: Proc,
    keys_url: String,
    gateway: Proc,
    gateway_url: String,
}

struct Cluster {
    dir: tempfile::TempDir,
    client: reqwest::Client,
    redis: Proc,
    redis_url: String,
    keys_db: String,
    _audit: Proc,
    nodes: Vec<Node>,
    _echo: common::LocalServer,
}

impl Cluster {
    /// `replicas` × (keys-service + gateway), sharing one database and one Redis.
    async fn start(
        backend: Backend,
        replicas: usize,
        keys_db_override: Option<String>,
    ) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let Some((redis, redis_url)) = redis_server(dir.path()) else {
            common::skip("Redis tests: no redis-server on PATH");
            return None;
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let echo = common::LocalServer::start(e2e::echo_router()).await;
        let keys_db = match keys_db_override {
            Some(db) => db,
            None => database(backend, dir.path(), "keys").await,
        };
        let audit_db = database(backend, dir.path(), "audit").await;
        let secret = common::new_secret();
        let audit_port = free_port();
        let audit_url = format!("http://127.0.0.1:{audit_port}");
        let mut audit = Proc::spawn(
            "audit-service",
            &bin("audit-service"),
            &[
                kv("AUDIT_LISTEN_ADDR", format!("127.0.0.1:{audit_port}")),
                kv("AUDIT_ADMIN_ADDR", format!("127.0.0.1:{}", free_port())),
                kv("DATABASE_URL", audit_db),
                kv("IDENTITY_SIGNING_SECRET", secret.clone()),
            ],
            dir.path(),
        );
        wait_http(&client, &format!("{audit_url}/livez"), &mut audit).await;
        let mut nodes = Vec::new();
        for i in 0..replicas {
            let keys_port = free_port();
            let keys_url = format!("http://127.0.0.1:{keys_port}");
            let mut keys = Proc::spawn(
                &format!("keys-service-{i}"),
                &bin("keys-service"),
                &[
                    kv("KEYS_LISTEN_ADDR", format!("127.0.0.1:{keys_port}")),
                    kv("KEYS_ADMIN_ADDR", format!("127.0.0.1:{}", free_port())),
                    kv("DATABASE_URL", keys_db.clone()),
                    kv("AUDIT_SERVICE_URL", audit_url.clone()),
                    kv("REDIS_URL", redis_url.clone()),
                    kv("DATABASE_ACQUIRE_TIMEOUT_MS", "1000"),
                    kv("IDENTITY_SIGNING_SECRET", secret.clone()),
                ],
                dir.path(),
            );
            wait_http(&client, &format!("{keys_url}/livez"), &mut keys).await;
            let gw_port = free_port();
            let gateway_url = format!("http://127.0.0.1:{gw_port}");
            let mut gateway = Proc::spawn(
                &format!("gateway-{i}"),
                &bin("gateway"),
                &[
                    kv("GATEWAY_LISTEN_ADDR", format!("127.0.0.1:{gw_port}")),
                    kv("GATEWAY_ADMIN_ADDR", format!("127.0.0.1:{}", free_port())),
                    kv("KEYS_SERVICE_URL", keys_url.clone()),
                    kv("AUDIT_SERVICE_URL", audit_url.clone()),
                    kv("DEFAULT_UPSTREAM_URL", echo.url()),
                    kv("REDIS_URL", redis_url.clone()),
                    kv("AUTH_DEV_BYPASS", "1"),
                    kv("GATEWAY_GRACE_PERIOD_SECONDS", "0"),
                    kv("GATEWAY_KEY_CACHE_UNSYNCED_TTL_MS", "500"),
                    kv("IDENTITY_SIGNING_SECRET", secret.clone()),
                ],
                dir.path(),
            );
            wait_http(&client, &format!("{gateway_url}/"), &mut gateway).await;
            nodes.push(Node {
                keys,
                keys_url,
                gateway,
                gateway_url,
            });
        }
        let cluster = Self {
            dir,
            client,
            redis,
            redis_url,
            keys_db,
            _audit: audit,
            nodes,
            _echo: echo,
        };
        // Both gateways subscribed before the test starts measuring.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Some(cluster)
    }

    async fn create_key(&self, node: usize) -> (String, String) {
        let (s, b) = status_json(
            self.client
                .post(format!("{}/v1/api-keys", self.nodes[node].gateway_url))
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
        self.client
            .get(format!("{}/v1/x", self.nodes[node].gateway_url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn revoke(&self, node: usize, id: &str) {
        let r = self
            .client
            .request(
                Method::DELETE,
                format!("{}/v1/api-keys/{id}", self.nodes[node].gateway_url),
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
    cluster.redis.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Verification continues through keys-service: new keys work, revocations hold.
    let (fresh, _) = cluster.create_key(0).await;
    assert_eq!(cluster.call(0, &fresh).await, 200);
    cluster.revoke(0, &revoked_id).await;
    let deadline = Instant::now() + Duration::from_secs(1);
    while cluster.call(0, &revoked_key).await != 401 {
        assert!(
            Instant::now() < deadline,
            "revoked key accepted while Redis is down"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Redis comes back (empty): the revoked key stays refused, the fresh one keeps working.
    cluster.redis.start();
    let redis_port = cluster
        .redis_url
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..20 {
        assert_eq!(cluster.call(0, &revoked_key).await, 401);
        assert_eq!(cluster.call(0, &fresh).await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = &cluster.dir;
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

    link.cut();
    let started = Instant::now();
    let (s, b) = status_json(
        cluster
            .client
            .post(format!("{}/v1/api-keys", cluster.nodes[0].gateway_url))
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
    let (s, _) = status_json(
        cluster
            .client
            .get(format!("{}/v1/api-keys", cluster.nodes[0].gateway_url))
            .header("x-organization-id", ORG)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 503);
    // A key already verified keeps working from the caches.
    assert_eq!(cluster.call(0, &key).await, 200);

    link.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = cluster
            .client
            .get(format!("{}/v1/api-keys", cluster.nodes[0].gateway_url))
            .header("x-organization-id", ORG)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let body: serde_json::Value = r.json().await.unwrap();
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
            break;
        }
        assert!(Instant::now() < deadline, "keys-service never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Direct check of the database: one key, one created event in the outbox or delivered.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&direct).await.unwrap();
    let row = sqlx::query("SELECT COUNT(*) AS n FROM api_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sqlx::Row::get::<i64, _>(&row, "n"), 1);
    pool.close().await;
    let _ = &cluster.keys_db;
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
    let mut procs: Vec<(Proc, String)> = (0..4)
        .map(|i| {
            let port = free_port();
            (
                Proc::spawn(
                    &format!("keys-{i}"),
                    &bin("keys-service"),
                    &[
                        kv("KEYS_LISTEN_ADDR", format!("127.0.0.1:{port}")),
                        kv("KEYS_ADMIN_ADDR", format!("127.0.0.1:{}", free_port())),
                        kv("DATABASE_URL", db.clone()),
                        kv("IDENTITY_VERIFICATION", "off"),
                    ],
                    dir.path(),
                ),
                format!("http://127.0.0.1:{port}/livez"),
            )
        })
        .collect();
    for (p, url) in &mut procs {
        wait_http(&client, url, p).await;
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
