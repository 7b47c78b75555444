//! `Idempotency-Key` on every write, black-box on SQLite and Postgres: replays, mismatches,
//! concurrent duplicates (two keys-service replicas on one database), a claim left by a
//! crashed request, organization isolation, retention, and the audit trail.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    Backend, ORG, Stack, StackOptions, assert_envelope, consistently, eventually, status_json,
};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    a_retried_create_replays_the_first_response_without_the_secret,
    a_different_request_under_the_same_key_is_422,
    concurrent_duplicates_write_once_across_replicas,
    a_claim_left_by_a_crashed_request_does_not_block_a_retry_for_ever,
    keys_are_scoped_to_the_organization,
    records_expire_after_the_retention,
    updates_and_revokes_replay_too,
);

const BODY: &str = r#"{"name":"idem","scopes":["payment_intents:read"]}"#;

fn create(stack: &Stack, org: &str, key: &str, body: &str) -> reqwest::RequestBuilder {
    stack
        .as_dev(Method::POST, "/v1/api-keys", org)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_owned())
}

async fn keys_of(stack: &Stack, org: &str) -> Vec<Value> {
    let r = stack
        .as_dev(Method::GET, "/v1/api-keys?limit=100", org)
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!(s, 200);
    v["data"].as_array().unwrap().clone()
}

/// The number of `api_key.created` events of `org` once `expect` have arrived through the
/// outbox and no more come for a while.
async fn created_events(stack: &Stack, org: &str, expect: usize) -> usize {
    let count = || async {
        let r = stack
            .as_dev(
                Method::GET,
                "/v1/audit-events?limit=100&eventType=api_key.created",
                org,
            )
            .send()
            .await
            .unwrap();
        status_json(r).await.1["data"].as_array().unwrap().len()
    };
    eventually("the created events", Duration::from_secs(15), || async {
        count().await >= expect
    })
    .await;
    consistently(
        "no further created event",
        Duration::from_millis(700),
        || async { count().await == expect },
    )
    .await;
    count().await
}

async fn a_retried_create_replays_the_first_response_without_the_secret(backend: Backend) {
    let stack = Stack::start(backend).await;
    let first = create(&stack, ORG, "retry-1", BODY).send().await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let plaintext = first["key"].as_str().unwrap().to_owned();
    // Same body with other whitespace and key order: the same request.
    for body in [
        BODY,
        r#"{ "scopes": ["payment_intents:read"], "name": "idem" }"#,
    ] {
        let again = create(&stack, ORG, "retry-1", body).send().await.unwrap();
        assert_eq!(again.status(), 201);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        let again: Value = again.json().await.unwrap();
        assert_eq!(again["id"], first["id"]);
        assert_eq!(again["prefix"], first["prefix"]);
        assert_eq!(again["createdAt"], first["createdAt"]);
        assert!(
            again.get("key").is_none(),
            "the secret was returned twice: {again}"
        );
        assert_eq!(again["keyOmitted"], true);
        assert!(!again.to_string().contains(&plaintext));
    }
    assert_eq!(keys_of(&stack, ORG).await.len(), 1);
    assert_eq!(
        created_events(&stack, ORG, 1).await,
        1,
        "one audit event per executed write"
    );
    // The key created works; the stored replay never held the plaintext.
    let r = stack
        .with_key(Method::GET, "/v1/payment-intents", &plaintext)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        !std::fs::read_dir(stack.dir.path())
            .unwrap()
            .flatten()
            .any(|f| {
                std::fs::read(f.path()).is_ok_and(|b| {
                    b.windows(plaintext.len())
                        .any(|w| w == plaintext.as_bytes())
                })
            })
    );
    // Malformed keys are refused before anything runs.
    for bad in ["has space", &"k".repeat(256), ""] {
        let r = create(&stack, ORG, bad, BODY).send().await.unwrap();
        let (s, v) = status_json(r).await;
        assert_eq!(s, 400, "{bad:?}");
        assert_envelope(&v, "invalid_request");
    }
    let r = stack
        .as_dev(Method::POST, "/v1/api-keys", ORG)
        .header("content-type", "application/json")
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(keys_of(&stack, ORG).await.len(), 1);
}

async fn a_different_request_under_the_same_key_is_422(backend: Backend) {
    let stack = Stack::start(backend).await;
    let r = create(&stack, ORG, "k-422", BODY).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = r#"{"name":"other","scopes":["payment_intents:read"]}"#;
    let r = create(&stack, ORG, "k-422", other).send().await.unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!(s, 422, "{v}");
    assert_envelope(&v, "unprocessable_entity");
    assert!(
        v["message"].as_str().unwrap().contains("different body"),
        "{v}"
    );
    // The same key on another route or method is a different request too.
    let r = stack
        .as_dev(Method::DELETE, &format!("/v1/api-keys/{id}"), ORG)
        .header("idempotency-key", "k-422")
        .send()
        .await
        .unwrap();
    let (s, v) = status_json(r).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains("different"), "{v}");
    assert_eq!(keys_of(&stack, ORG).await.len(), 1);
    assert_eq!(keys_of(&stack, ORG).await[0]["status"], "active");
}

async fn concurrent_duplicates_write_once_across_replicas(backend: Backend) {
    let stack = Stack::start(backend).await;
    // A second keys-service replica on the same database (on SQLite: the same file).
    let second = stack.start_keys_replica("keys-service-2", &[]).await;
    let second_url = second.url.clone();
    let sent = 40;
    let mut tasks = Vec::new();
    for i in 0..sent {
        let base = if i % 2 == 0 {
            stack.keys_url.clone()
        } else {
            second_url.clone()
        };
        let req = stack
            .signed(Method::POST, &base, "/v1/api-keys", ORG)
            .header("content-type", "application/json")
            .header("idempotency-key", "burst")
            .body(BODY);
        tasks.push(tokio::spawn(async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let replayed = r.headers().contains_key("idempotent-replayed");
            (status, replayed, r.json::<Value>().await.unwrap())
        }));
    }
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    let mut ids = std::collections::HashSet::new();
    let mut with_secret = 0;
    for t in tasks {
        let (status, replayed, body) = t.await.unwrap();
        *by_status.entry(status).or_default() += 1;
        match status {
            201 => {
                ids.insert(body["id"].as_str().unwrap().to_owned());
                if body.get("key").is_some() {
                    with_secret += 1;
                    assert!(!replayed);
                } else {
                    assert!(replayed);
                }
            }
            409 => assert_envelope(&body, "conflict"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    eprintln!(
        "{backend:?}: {sent} concurrent requests with one key over two replicas → {by_status:?}"
    );
    assert_eq!(ids.len(), 1, "more than one key written: {ids:?}");
    assert_eq!(with_secret, 1, "the plaintext went out {with_secret} times");
    // Exactly one row: read the database itself.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&stack.keys_db).await.unwrap();
    let row = sqlx::query("SELECT COUNT(*) AS n FROM api_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sqlx::Row::get::<i64, _>(&row, "n"), 1);
    pool.close().await;
    // After the burst every retry is a replay.
    let r = stack
        .signed(Method::POST, &second_url, "/v1/api-keys", ORG)
        .header("content-type", "application/json")
        .header("idempotency-key", "burst")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
}

async fn a_claim_left_by_a_crashed_request_does_not_block_a_retry_for_ever(backend: Backend) {
    let stack = Stack::start(backend).await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&stack.keys_db).await.unwrap();
    let now = rl_contract::time_fmt::now_ms();
    let body: Value = serde_json::from_str(BODY).unwrap();
    let hash = rl_contract::idempotency::body_hash(Some(&body));
    // What a replica that died between claiming and committing leaves behind: a claim,
    // no key, no stored response. One with its lease running, one whose lease ran out.
    for (key, locked_until) in [("crashed-fresh", now + 60_000), ("crashed-old", now - 1)] {
        sqlx::query(
            "INSERT INTO idempotency_keys (organization_id, caller, idem_key, request_method, \
             request_path, body_hash, state, locked_until, created_at, expires_at) \
             VALUES ($1, 'user_dev', $2, 'POST', '/v1/api-keys', $3, 'in_progress', $4, $5, $6)",
        )
        .bind(ORG)
        .bind(key)
        .bind(&hash)
        .bind(locked_until)
        .bind(now)
        .bind(now + 86_400_000)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
    let r = create(&stack, ORG, "crashed-fresh", BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    let (s, v) = status_json(r).await;
    assert_eq!(s, 409, "{v}");
    assert_envelope(&v, "conflict");
    let r = create(&stack, ORG, "crashed-old", BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "an abandoned claim is taken over");
    let first: Value = r.json().await.unwrap();
    assert!(first["key"].is_string());
    let r = create(&stack, ORG, "crashed-old", BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(keys_of(&stack, ORG).await.len(), 1);
    // A request that fails before committing leaves nothing: a retry runs again.
    let missing = "/v1/api-keys/0195d6b2-c0a8-7e1f-9a3b-2c4d5e6f7a8b";
    for _ in 0..2 {
        let r = stack
            .as_dev(Method::DELETE, missing, ORG)
            .header("idempotency-key", "revoke-missing")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert!(r.headers().get("idempotent-replayed").is_none());
    }
}

async fn keys_are_scoped_to_the_organization(backend: Backend) {
    let stack = Stack::start(backend).await;
    let a = create(&stack, "org_a", "shared-key", BODY)
        .send()
        .await
        .unwrap();
    let b = create(&stack, "org_b", "shared-key", BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 201);
    assert_eq!(b.status(), 201);
    assert!(b.headers().get("idempotent-replayed").is_none());
    let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
    assert_ne!(a["id"], b["id"]);
    assert!(a["key"].is_string() && b["key"].is_string());
    assert_eq!(keys_of(&stack, "org_a").await.len(), 1);
    assert_eq!(keys_of(&stack, "org_b").await.len(), 1);
}

async fn records_expire_after_the_retention(backend: Backend) {
    let stack = Stack::start_with(StackOptions {
        keys_env: vec![("IDEMPOTENCY_RETENTION_MS".to_owned(), "1000".to_owned())],
        ..StackOptions::new(backend)
    })
    .await;
    assert_eq!(
        create(&stack, ORG, "short", BODY)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let r = create(&stack, ORG, "short", BODY).send().await.unwrap();
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    // Purged in the background (every second at this retention): the key is new again.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&stack.keys_db).await.unwrap();
    eventually(
        "idempotency records purged",
        Duration::from_secs(10),
        || async {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM idempotency_keys")
                .fetch_one(&pool)
                .await
                .unwrap();
            sqlx::Row::get::<i64, _>(&row, "n") == 0
        },
    )
    .await;
    pool.close().await;
    let r = create(&stack, ORG, "short", BODY).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("idempotent-replayed").is_none());
    assert_eq!(keys_of(&stack, ORG).await.len(), 2);
}

async fn updates_and_revokes_replay_too(backend: Backend) {
    let stack = Stack::start(backend).await;
    let created = stack.create_key(ORG, "to-change").await;
    let path = format!("/v1/api-keys/{}", created["id"].as_str().unwrap());
    let patch = |name: &str| {
        stack
            .as_dev(Method::PATCH, &path, ORG)
            .header("idempotency-key", "rename-1")
            .json(&json!({ "name": name }))
    };
    let first = patch("renamed").send().await.unwrap();
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let again = patch("renamed").send().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(patch("other").send().await.unwrap().status(), 422);
    let revoke = || {
        stack
            .as_dev(Method::DELETE, &path, ORG)
            .header("idempotency-key", "revoke-1")
    };
    let r1 = revoke().send().await.unwrap();
    assert_eq!(r1.status(), 200);
    let r1: Value = r1.json().await.unwrap();
    assert_eq!(r1["status"], "revoked");
    let r2 = revoke().send().await.unwrap();
    assert_eq!(r2.headers()["idempotent-replayed"], "true");
    assert_eq!(r2.json::<Value>().await.unwrap(), r1);
    // Audit: one update and one revoke, however many retries.
    let counts = || async {
        let r = stack
            .as_dev(Method::GET, "/v1/audit-events?limit=100", ORG)
            .send()
            .await
            .unwrap();
        let events = status_json(r).await.1["data"].as_array().unwrap().clone();
        let count = |t: &str| events.iter().filter(|e| e["eventType"] == t).count();
        (count("api_key.updated"), count("api_key.revoked"))
    };
    eventually(
        "the update and revoke events",
        Duration::from_secs(15),
        || async { counts().await == (1, 1) },
    )
    .await;
    consistently(
        "one update and one revoke event",
        Duration::from_secs(1),
        || async { counts().await == (1, 1) },
    )
    .await;
}
