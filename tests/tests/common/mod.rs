//! The harness every black-box test uses: real binaries on free loopback ports, a fresh
//! database per test (a SQLite file, or a Postgres database when `RL_TEST_POSTGRES_URL`
//! is set), an in-process echo upstream, and process logs kept for failure reports.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod clerk;

pub const ORG: &str = "org_test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Instantiate an `async fn(Backend)` test for SQLite and for Postgres.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if $crate::common::postgres_admin_url().is_none() {
                        $crate::common::skip(&format!(
                            "{} on Postgres (RL_TEST_POSTGRES_URL is not set)",
                            stringify!($name)
                        ));
                        return;
                    }
                    super::$name($crate::common::Backend::Postgres).await;
                }
            }
        )+
    };
}

/// Skip a test whose prerequisite is missing — except under `CI=true`, where a skip would
/// be a green run that tested nothing: there it fails.
pub fn skip(what: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} under CI=true: refusing to skip"
    );
    eprintln!("SKIPPED: {what}");
}

pub fn postgres_admin_url() -> Option<String> {
    std::env::var("RL_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// A port no other test of this machine is using: chosen outside the kernel's ephemeral
/// range (so no outgoing connection holds it) and claimed with an exclusive lock file, so
/// parallel test processes can never pick the same one between "free" and "bound".
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join("rl-e2e-ports");
    let _ = std::fs::create_dir_all(&dir);
    if NEXT.load(Ordering::Relaxed) == 0 {
        // Forget claims from runs long gone.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(1800));
                if old {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let seed = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0),
        );
        NEXT.store(seed | 1, Ordering::Relaxed);
    }
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(7_919, Ordering::Relaxed);
        let port = (LOW + n % SPAN) as u16;
        let claimed = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(port.to_string()))
            .is_ok();
        if claimed && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// A spawned binary, killed on drop; its stdout/stderr go to a log file.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, env: &[(String, String)], log_dir: &Path) -> Self {
        Self::spawn_with_args(name, program, &[], env, log_dir)
    }

    pub fn spawn_with_args(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> Self {
        let mut p = Self {
            name: name.to_owned(),
            child: None,
            log: log_dir.join(format!("{name}.log")),
            program: program.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: env.to_vec(),
        };
        p.start();
        p
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn"));
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `within` for exit; returns the exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (without signalling) up to `within` for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        let c = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh database for one test.
pub async fn database(backend: Backend, dir: &Path, name: &str) -> String {
    match backend {
        Backend::Sqlite => format!(
            "sqlite://{}?mode=rwc",
            dir.join(format!("{name}.db")).display()
        ),
        Backend::Postgres => {
            let admin = postgres_admin_url().expect("RL_TEST_POSTGRES_URL");
            let db = format!("rl_test_{}", uuid::Uuid::new_v4().simple());
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&admin)
                .await
                .expect("postgres admin");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                .execute(&pool)
                .await
                .expect("create database");
            pool.close().await;
            let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
            format!("{base}/{db}")
        }
    }
}

/// What an [`eventually`] probe returns: done (with a value), or not yet (with what it saw,
/// for the failure message).
pub trait Outcome {
    type Value;
    fn check(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn check(self) -> Result<(), String> {
        if self { Ok(()) } else { Err("false".into()) }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn check(self) -> Result<T, String> {
        self.ok_or_else(|| "None".into())
    }
}

impl<T, E: std::fmt::Display> Outcome for Result<T, E> {
    type Value = T;
    fn check(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Poll `probe` until it succeeds and return its value; panic naming `what` and the last
/// observation if it has not succeeded within `within`. The pause between probes starts at
/// 5 ms and doubles up to 100 ms, so a fast condition costs little and a slow one few calls.
/// Use this instead of a fixed sleep whenever the test waits for something observable.
pub async fn eventually<O, F, Fut>(what: &str, within: Duration, mut probe: F) -> O::Value
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = O>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match probe().await.check() {
            Ok(v) => return v,
            Err(last) => assert!(
                started.elapsed() < within,
                "{what}: not within {within:?} (last seen: {last})"
            ),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Assert `probe` holds at every check for the whole of `during` — for what must NOT happen
/// (a second delivery, a revoked key accepted again). The one place a test lets time pass on
/// purpose: absence can only be observed over a period.
pub async fn consistently<O, F, Fut>(what: &str, during: Duration, mut probe: F)
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = O>,
{
    let started = Instant::now();
    loop {
        if let Err(seen) = probe().await.check() {
            panic!("{what}: broke after {:?} (seen: {seen})", started.elapsed());
        }
        if started.elapsed() >= during {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50).min(during)).await;
    }
}

/// Wait until `url` answers any HTTP status (or panic with the process logs).
pub async fn wait_http(client: &reqwest::Client, url: &str, proc: &mut Proc) {
    const WITHIN: Duration = Duration::from_secs(30);
    let name = proc.name.clone();
    // The log is read once, on failure (exit or timeout), not at every probe.
    let answered = tokio::time::timeout(
        WITHIN,
        eventually(&format!("{name} answering {url}"), Duration::MAX, || {
            let exited = (!proc.is_running()).then(|| proc.logs());
            let request = client.get(url).send();
            let name = name.clone();
            async move {
                if let Some(logs) = exited {
                    panic!("{name} exited during start:\n{logs}");
                }
                request.await.map(drop)
            }
        }),
    )
    .await;
    if answered.is_err() {
        panic!(
            "{name} did not answer {url} within {WITHIN:?}:\n{}",
            proc.logs()
        );
    }
}

/// An in-process HTTP server (the echo upstream, or a fake), stopped on drop.
pub struct LocalServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl LocalServer {
    pub async fn start(router: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a test's stack consists of. Every black-box test starts its processes through
/// [`Stack::start_with`]: one gateway by default, more with [`Stack::start_replica`];
/// SQLite or Postgres; a Redis of its own with `redis`.
#[derive(Clone)]
pub struct StackOptions {
    pub backend: Backend,
    pub dev_bypass: bool,
    pub node_env: Option<&'static str>,
    /// Extra settings for every gateway (the first and any replica).
    pub gateway_env: Vec<(String, String)>,
    /// Extra settings for every keys-service replica.
    pub keys_env: Vec<(String, String)>,
    /// Extra settings for keys-service and audit-service alike.
    pub services_env: Vec<(String, String)>,
    /// Default upstream URL; `None` = the in-process echo server.
    pub upstream_url: Option<String>,
    /// Start the real webhooks-service (else outbound-webhook routes reach the echo
    /// upstream) and have health-service check it.
    pub webhooks: bool,
    /// Extra settings for webhooks-service (and replicas started with
    /// [`Stack::start_webhooks_replica`]).
    pub webhooks_env: Vec<(String, String)>,
    /// A redis-server of the stack's own; `REDIS_URL` for keys-service and every gateway.
    /// When set, `start_with` returns once the gateway receives key-change notices.
    pub redis: bool,
    /// keys-service's database URL instead of a fresh one (e.g. through a link the test can
    /// cut).
    pub keys_db: Option<String>,
}

impl StackOptions {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            dev_bypass: true,
            node_env: None,
            gateway_env: Vec::new(),
            keys_env: Vec::new(),
            services_env: Vec::new(),
            upstream_url: None,
            webhooks: false,
            webhooks_env: Vec::new(),
            redis: false,
            keys_db: None,
        }
    }
}

/// A running service process: its public URL, its admin listener, the process.
pub struct Service {
    pub url: String,
    pub admin: String,
    pub proc: Proc,
}

/// A running webhooks-service replica.
pub type WebhooksReplica = Service;

impl Service {
    /// Start `binary` on fresh ports (`{prefix}_LISTEN_ADDR`, `{prefix}_ADMIN_ADDR`) with
    /// `env`, without waiting for it (see [`Service::ready`]).
    pub fn launch(
        name: &str,
        binary: &str,
        prefix: &str,
        env: &[(String, String)],
        log_dir: &Path,
    ) -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let mut all = vec![
            kv(&format!("{prefix}_LISTEN_ADDR"), listen.clone()),
            kv(&format!("{prefix}_ADMIN_ADDR"), admin.clone()),
        ];
        all.extend(env.iter().cloned());
        Self {
            url: format!("http://{listen}"),
            admin: format!("http://{admin}"),
            proc: Proc::spawn(name, &bin(binary), &all, log_dir),
        }
    }

    /// Wait until `path` on its public port answers (panics with its log if it exits).
    pub async fn ready(mut self, client: &reqwest::Client, path: &str) -> Self {
        wait_http(client, &format!("{}{path}", self.url), &mut self.proc).await;
        self
    }
}

/// [`Service::launch`], then [`Service::ready`].
pub async fn spawn_service(
    client: &reqwest::Client,
    name: &str,
    binary: &str,
    prefix: &str,
    env: &[(String, String)],
    ready_path: &str,
    log_dir: &Path,
) -> Service {
    Service::launch(name, binary, prefix, env, log_dir)
        .ready(client, ready_path)
        .await
}

/// The webhooks-service of a stack: its database, the settings every replica shares, and
/// the first replica.
pub struct Webhooks {
    pub db: String,
    pub env: Vec<(String, String)>,
    pub main: WebhooksReplica,
    /// The AES key its secrets are encrypted with (hex).
    pub encryption_key: String,
}

/// A fresh `WEBHOOKS_ENCRYPTION_KEY` (32 random bytes as hex).
pub fn new_encryption_key() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A redis-server of the test's own, on a claimed port (it keeps nothing on disk).
pub struct Redis {
    pub proc: Proc,
    pub url: String,
    pub port: u16,
}

impl Redis {
    /// `None` when there is no `redis-server` on `PATH` (the caller skips).
    pub async fn start(dir: &Path) -> Option<Self> {
        let path = std::env::var_os("PATH")?;
        let exe = std::env::split_paths(&path)
            .map(|d| d.join("redis-server"))
            .find(|p| p.exists())?;
        let port = free_port();
        let proc = Proc::spawn_with_args(
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
        let mut redis = Self {
            proc,
            url: format!("redis://127.0.0.1:{port}"),
            port,
        };
        redis.wait_up().await;
        Some(redis)
    }

    /// Wait until it accepts connections (after `start` or a restart).
    pub async fn wait_up(&mut self) {
        let port = self.port;
        assert!(
            self.proc.is_running(),
            "redis-server exited: {}",
            self.proc.logs()
        );
        eventually(
            "redis-server accepting",
            Duration::from_secs(10),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map(drop)
            },
        )
        .await;
    }
}

/// Another keys-service + gateway pair on the stack's database and Redis.
pub struct Replica {
    pub keys: Service,
    pub gateway: Service,
}

/// The real processes of one test: keys-service, audit-service, health-service and the
/// gateway (plus webhooks-service, Redis and more replicas when asked), and an in-process
/// echo upstream. Everything stops when it is dropped.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    pub gateway_url: String,
    pub keys_url: String,
    pub audit_url: String,
    pub keys_db: String,
    pub audit_db: String,
    pub health_url: String,
    /// Admin listeners (`/metrics`, `/livez`, `/readyz`).
    pub gateway_admin: String,
    pub keys_admin: String,
    pub audit_admin: String,
    pub health_admin: String,
    pub gateway: Proc,
    pub keys: Proc,
    pub audit: Proc,
    pub health: Proc,
    /// When started with `StackOptions::webhooks`.
    pub webhooks: Option<Webhooks>,
    /// When started with `StackOptions::redis`.
    pub redis: Option<Redis>,
    pub echo: LocalServer,
    /// The identity-signing secret this stack shares.
    pub secret: String,
    /// Settings every keys-service replica starts with (ports aside).
    keys_env: Vec<(String, String)>,
    /// Settings every gateway starts with (ports and `KEYS_SERVICE_URL` aside).
    gateway_env: Vec<(String, String)>,
}

/// A fresh signing secret for one test stack.
pub fn new_secret() -> String {
    format!("test-secret-{}", uuid::Uuid::new_v4().simple())
}

pub fn kv(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

/// Wait until the gateway behind `admin` receives key-change notices (feed or Redis).
pub async fn wait_gateway_synced(client: &reqwest::Client, admin: &str) {
    let url = format!("{admin}/metrics");
    eventually(
        "gateway_key_invalidation_connected 1",
        Duration::from_secs(15),
        || async {
            let text = client.get(&url).send().await.ok()?.text().await.ok()?;
            let scrape =
                prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).ok()?;
            scrape
                .samples
                .iter()
                .any(|s| {
                    s.metric == "gateway_key_invalidation_connected"
                        && matches!(s.value, prometheus_parse::Value::Gauge(v) if v == 1.0)
                })
                .then_some(())
        },
    )
    .await;
}

impl Stack {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(StackOptions::new(backend)).await
    }

    /// The stack for `opts`; `None` only when `opts.redis` is set and this machine has no
    /// redis-server (the caller returns: a skip, which fails under `CI=true`).
    pub async fn try_start_with(opts: StackOptions) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let redis = if opts.redis {
            let Some(r) = Redis::start(dir.path()).await else {
                skip("Redis tests: no redis-server on PATH");
                return None;
            };
            Some(r)
        } else {
            None
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let echo = LocalServer::start(e2e::echo_router()).await;
        let secret = new_secret();
        let keys_db = match &opts.keys_db {
            Some(db) => db.clone(),
            None => database(opts.backend, dir.path(), "keys").await,
        };
        let audit_db = database(opts.backend, dir.path(), "audit").await;

        let mut audit_env = vec![
            kv("DATABASE_URL", audit_db.clone()),
            kv("IDENTITY_SIGNING_SECRET", secret.clone()),
        ];
        audit_env.extend(opts.services_env.iter().cloned());
        // The services start together; the gateway once they answer.
        let audit = Service::launch(
            "audit-service",
            "audit-service",
            "AUDIT",
            &audit_env,
            dir.path(),
        );
        let mut keys_env = vec![
            kv("DATABASE_URL", keys_db.clone()),
            kv("AUDIT_SERVICE_URL", audit.url.clone()),
            kv("KEYS_AUDIT_RELAY_MAX_BACKOFF_MS", "500"),
            kv("IDENTITY_SIGNING_SECRET", secret.clone()),
        ];
        if let Some(r) = &redis {
            keys_env.push(kv("REDIS_URL", r.url.clone()));
        }
        keys_env.extend(opts.services_env.iter().cloned());
        keys_env.extend(opts.keys_env.iter().cloned());
        let keys = Service::launch(
            "keys-service",
            "keys-service",
            "KEYS",
            &keys_env,
            dir.path(),
        );
        let webhooks = if opts.webhooks {
            let db = database(opts.backend, dir.path(), "webhooks").await;
            let encryption_key = new_encryption_key();
            let mut env = vec![
                kv("DATABASE_URL", db.clone()),
                kv("AUDIT_SERVICE_URL", audit.url.clone()),
                kv("WEBHOOKS_AUDIT_RELAY_MAX_BACKOFF_MS", "500"),
                kv("IDENTITY_SIGNING_SECRET", secret.clone()),
                kv("WEBHOOKS_ENCRYPTION_KEY", encryption_key.clone()),
                kv("WEBHOOKS_POLL_INTERVAL_MS", "100"),
            ];
            env.extend(opts.webhooks_env.iter().cloned());
            let main = spawn_webhooks(&client, "webhooks-service", &env, dir.path()).await;
            Some(Webhooks {
                db,
                env,
                main,
                encryption_key,
            })
        } else {
            None
        };
        let mut health_env = vec![
            kv("KEYS_SERVICE_URL", keys.url.clone()),
            kv("AUDIT_SERVICE_URL", audit.url.clone()),
            kv("HEALTH_CACHE_TTL_MS", "200"),
        ];
        if let Some(w) = &webhooks {
            health_env.push(kv("WEBHOOKS_SERVICE_URL", w.main.url.clone()));
        }
        let health = Service::launch(
            "health-service",
            "health-service",
            "HEALTH",
            &health_env,
            dir.path(),
        );
        let audit = audit.ready(&client, "/livez").await;
        let keys = keys.ready(&client, "/livez").await;
        let health = health.ready(&client, "/livez").await;

        let mut gateway_env = vec![
            kv("GATEWAY_THREADS", "2"),
            kv("AUDIT_SERVICE_URL", audit.url.clone()),
            kv("HEALTH_SERVICE_URL", health.url.clone()),
            // Outbound-webhook routes reach the echo upstream unless a test starts
            // webhooks-service itself.
            kv(
                "WEBHOOKS_SERVICE_URL",
                webhooks
                    .as_ref()
                    .map_or_else(|| echo.url(), |w| w.main.url.clone()),
            ),
            kv(
                "DEFAULT_UPSTREAM_URL",
                opts.upstream_url.clone().unwrap_or_else(|| echo.url()),
            ),
            kv("GATEWAY_GRACE_PERIOD_SECONDS", "0"),
            kv("GATEWAY_SHUTDOWN_TIMEOUT_SECONDS", "2"),
            kv("IDENTITY_SIGNING_SECRET", secret.clone()),
        ];
        if let Some(r) = &redis {
            gateway_env.push(kv("REDIS_URL", r.url.clone()));
        }
        if opts.dev_bypass {
            gateway_env.push(kv("AUTH_DEV_BYPASS", "1"));
        }
        if let Some(env) = opts.node_env {
            gateway_env.push(kv("NODE_ENV", env));
        }
        gateway_env.extend(opts.gateway_env.iter().cloned());
        let gateway = spawn_gateway(&client, "gateway", &gateway_env, &keys.url, dir.path()).await;
        if redis.is_some() {
            wait_gateway_synced(&client, &gateway.admin).await;
        }
        Some(Self {
            dir,
            client,
            gateway_url: gateway.url,
            keys_url: keys.url,
            audit_url: audit.url,
            keys_db,
            audit_db,
            health_url: health.url,
            gateway_admin: gateway.admin,
            keys_admin: keys.admin,
            audit_admin: audit.admin,
            health_admin: health.admin,
            gateway: gateway.proc,
            keys: keys.proc,
            audit: audit.proc,
            health: health.proc,
            webhooks,
            redis,
            echo,
            secret,
            keys_env,
            gateway_env,
        })
    }

    /// [`Stack::try_start_with`] for options that need nothing this machine may lack.
    pub async fn start_with(opts: StackOptions) -> Self {
        assert!(
            !opts.redis,
            "a stack with Redis can be skipped: use try_start_with"
        );
        Self::try_start_with(opts)
            .await
            .expect("stack without optional parts")
    }

    /// Another keys-service replica on the stack's database (and Redis), settings as the
    /// first's plus `extra`.
    pub async fn start_keys_replica(&self, name: &str, extra: &[(String, String)]) -> Service {
        let mut env = self.keys_env.clone();
        env.extend(extra.iter().cloned());
        spawn_service(
            &self.client,
            name,
            "keys-service",
            "KEYS",
            &env,
            "/livez",
            self.dir.path(),
        )
        .await
    }

    /// Replica `n` of the keys-service + gateway pair (the first pair is the stack's own),
    /// returned once its gateway receives key-change notices.
    pub async fn start_replica(&self, n: usize) -> Replica {
        let keys = self
            .start_keys_replica(&format!("keys-service-{n}"), &[])
            .await;
        let gateway = spawn_gateway(
            &self.client,
            &format!("gateway-{n}"),
            &self.gateway_env,
            &keys.url,
            self.dir.path(),
        )
        .await;
        wait_gateway_synced(&self.client, &gateway.admin).await;
        Replica { keys, gateway }
    }

    /// Another webhooks-service replica on the same database (settings: the stack's, then
    /// `extra`).
    pub async fn start_webhooks_replica(
        &self,
        name: &str,
        extra: &[(String, String)],
    ) -> WebhooksReplica {
        let w = self.webhooks.as_ref().expect("stack started with webhooks");
        let mut env = w.env.clone();
        env.extend(extra.iter().cloned());
        spawn_webhooks(&self.client, name, &env, self.dir.path()).await
    }

    pub fn secrets(&self) -> rl_contract::signing::Secrets {
        rl_contract::signing::Secrets::new(Some(&self.secret), None, false)
    }

    /// The token internal endpoints accept.
    pub fn internal_token(&self) -> String {
        self.secrets().internal_token().unwrap()
    }

    /// A request straight to a service (not through the gateway), carrying a session
    /// identity for `org` signed as the gateway would sign it.
    pub fn signed(
        &self,
        method: reqwest::Method,
        base: &str,
        target: &str,
        org: &str,
    ) -> reqwest::RequestBuilder {
        signed_request(&self.client, &self.secrets(), method, base, target, org)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway_url)
    }

    /// A request through the gateway as the dev-bypass user of `org`.
    pub fn as_dev(
        &self,
        method: reqwest::Method,
        path: &str,
        org: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("x-organization-id", org)
    }

    pub fn with_key(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
    ) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(key)
    }

    /// Create a key for `org` through the gateway; returns the create response body.
    pub async fn create_key(&self, org: &str, name: &str) -> Value {
        let r = self
            .as_dev(reqwest::Method::POST, "/v1/api-keys", org)
            .json(&json!({"name": name, "scopes": ["payment_intents:read", "reconciliation_cases:read"]}))
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), 201, "create failed");
        r.json().await.expect("json")
    }

    pub fn all_logs(&self) -> String {
        let mut procs = vec![&self.gateway, &self.keys, &self.audit, &self.health];
        if let Some(w) = &self.webhooks {
            procs.push(&w.main.proc);
        }
        procs
            .iter()
            .map(|p| p.logs())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Start one webhooks-service replica with `env` (plus its own ports).
pub async fn spawn_webhooks(
    client: &reqwest::Client,
    name: &str,
    env: &[(String, String)],
    log_dir: &Path,
) -> WebhooksReplica {
    spawn_service(
        client,
        name,
        "webhooks-service",
        "WEBHOOKS",
        env,
        "/livez",
        log_dir,
    )
    .await
}

/// Start a gateway with `env` in front of the keys-service at `keys_url`.
async fn spawn_gateway(
    client: &reqwest::Client,
    name: &str,
    env: &[(String, String)],
    keys_url: &str,
    log_dir: &Path,
) -> Service {
    let mut all = vec![kv("KEYS_SERVICE_URL", keys_url)];
    all.extend(env.iter().cloned());
    spawn_service(client, name, "gateway", "GATEWAY", &all, "/", log_dir).await
}

/// A request carrying a dashboard-session identity for `org`, signed with `secrets`.
pub fn signed_request(
    client: &reqwest::Client,
    secrets: &rl_contract::signing::Secrets,
    method: reqwest::Method,
    base: &str,
    target: &str,
    org: &str,
) -> reqwest::RequestBuilder {
    use rl_contract::signing::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
    let identity = [
        ("x-organization-id", org),
        ("x-auth-type", "session"),
        ("x-user-id", "user_direct"),
    ];
    let ts = rl_contract::time_fmt::now_ms() / 1000;
    let sig = secrets
        .sign(ts, method.as_str(), target, &identity)
        .unwrap();
    let mut req = client
        .request(method, format!("{base}{target}"))
        .header(TIMESTAMP_HEADER, ts.to_string())
        .header(SIGNATURE_HEADER, sig);
    for (k, v) in identity {
        req = req.header(k, v);
    }
    req
}

/// Status and parsed JSON body of a response.
pub async fn status_json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Assert an error envelope with exactly these fields.
pub fn assert_envelope(body: &Value, error: &str) {
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"));
    assert_eq!(
        obj.get("error").and_then(Value::as_str),
        Some(error),
        "{body}"
    );
    assert!(
        obj.get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(obj.len(), 2, "envelope has extra fields: {body}");
}

/// Send raw bytes as one HTTP/1.1 request (for targets and headers an HTTP client would
/// refuse or normalize) and return the status and body of the response.
pub async fn raw_request(addr: &str, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 8192];
        loop {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if let Some(len) = len
                    && buf.len() >= end + 4 + len
                {
                    break;
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no complete response within 10 s");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
