//! Every binary validates every setting before it starts: a bad value stops it with exit
//! code 64 and a message naming the variable (never a late failure, never a silent default).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::bin;

/// Run `binary` with `env` (and nothing else but PATH); it must exit 64 within 10 s, naming
/// `var` on stderr.
fn refuses(binary: &str, args: &[&str], env: &[(&str, &str)], var: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin(binary));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", dir.path())
        .env("IDENTITY_SIGNING_SECRET", "s".repeat(40))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{binary} with {env:?} did not stop: it accepted a bad {var}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(64), "{binary} {env:?}: {stderr}");
    assert!(
        stderr.contains(var),
        "{binary}: the message does not name {var}: {stderr}"
    );
    // URLs may carry credentials: their values are never printed.
    for (k, v) in env {
        if k.ends_with("_URL") && v.contains('@') {
            assert!(!stderr.contains(v), "{binary} printed {k}: {stderr}");
            assert!(
                !stderr.contains("hunter2"),
                "{binary} printed a password: {stderr}"
            );
        }
    }
}

#[test]
fn the_gateway_refuses_bad_settings() {
    let cases: &[(&str, &str)] = &[
        ("GATEWAY_LISTEN_ADDR", "nowhere"),
        ("GATEWAY_THREADS", "two"),
        ("KEYS_SERVICE_URL", "ftp://keys:21"),
        ("WEBHOOKS_SERVICE_URL", "http://a/b"),
        ("GATEWAY_REQUEST_HEADER_TIMEOUT_MS", "soon"),
        ("GATEWAY_MAX_REQUEST_HEADERS", "0"),
        ("GATEWAY_MAX_REQUEST_HEADERS", "1000"),
        ("GATEWAY_ALLOW_NON_ASCII_PATHS", "maybe"),
        ("GATEWAY_KEY_LOOKUP_RATE_PER_CLIENT", "-5"),
        ("REDIS_URL", "not-a-redis-url"),
        (
            "CLERK_JWT_KEY",
            "-----BEGIN PUBLIC KEY-----\\nnot a key\\n-----END PUBLIC KEY-----",
        ),
        ("CLERK_ALGORITHMS", "HS256"),
        ("CLERK_PUBLISHABLE_KEY", "pk_live_!!!!"),
        ("CLERK_FRONTEND_API_URL", "javascript:alert(1)"),
        ("GATEWAY_ROUTE_POLICY_FILE", "/nonexistent/policy.json"),
    ];
    for (var, value) in cases {
        refuses("gateway", &[], &[(var, value)], var);
    }
}

#[test]
fn keys_service_refuses_bad_settings() {
    let cases: &[(&str, &str)] = &[
        ("KEYS_LISTEN_ADDR", "nowhere"),
        ("KEYS_MAX_BODY_BYTES", "-1"),
        ("DATABASE_URL", "mysql://root:hunter2@localhost/keys"),
        ("KEYS_DATABASE_URL", "mongodb://x"),
        ("DATABASE_MAX_CONNECTIONS", "many"),
        ("REDIS_URL", "rediss://:hunter2@[bad"),
        ("IDEMPOTENCY_LEASE_MS", "0"),
        ("IDEMPOTENCY_RETENTION_MS", "a day"),
        ("IDENTITY_VERIFICATION", "perhaps"),
    ];
    for (var, value) in cases {
        refuses("keys-service", &[], &[(var, value)], var);
    }
    // `migrate` reads the database settings only — and validates them.
    refuses(
        "keys-service",
        &["migrate"],
        &[("DATABASE_URL", "mysql://root@localhost/keys")],
        "DATABASE_URL",
    );
}

#[test]
fn keys_service_migrate_needs_no_other_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("keys-service"))
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", dir.path())
        // Deliberately broken settings `migrate` does not use.
        .env("KEYS_MAX_BODY_BYTES", "-1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("keys.db").exists());
}

#[test]
fn audit_service_refuses_bad_settings() {
    let cases: &[(&str, &str)] = &[
        ("AUDIT_LISTEN_ADDR", "nowhere"),
        ("AUDIT_MAX_BODY_BYTES", "big"),
        ("AUDIT_DATABASE_URL", "mysql://x"),
        ("DATABASE_ACQUIRE_TIMEOUT_MS", "later"),
        ("SHUTDOWN_GRACE_PERIOD_MS", "-3"),
    ];
    for (var, value) in cases {
        refuses("audit-service", &[], &[(var, value)], var);
    }
}

#[test]
fn health_service_refuses_bad_settings() {
    let cases: &[(&str, &str)] = &[
        ("HEALTH_LISTEN_ADDR", "nowhere"),
        ("KEYS_SERVICE_URL", "keys:8081"),
        ("AUDIT_SERVICE_URL", "https://audit/x"),
        ("WEBHOOKS_SERVICE_URL", "ftp://webhooks"),
        ("REDIS_URL", "rediss://:hunter2@[bad"),
        ("HEALTH_CHECK_TIMEOUT_MS", "fast"),
        ("HEALTH_CACHE_TTL_MS", "-1"),
    ];
    for (var, value) in cases {
        refuses("health-service", &[], &[(var, value)], var);
    }
}
