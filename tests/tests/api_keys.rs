//! `/v1/api-keys` through the real gateway and keys-service, on SQLite and on Postgres.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Backend, ORG, Stack, assert_envelope, eventually, status_json};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    create_returns_the_plaintext_once_with_the_documented_fields,
    list_is_newest_first_paginated_and_never_shows_secrets,
    read_update_and_revoke,
    bad_input_gets_a_400_envelope_naming_the_problem,
    organizations_never_see_each_others_keys,
    concurrent_creates_all_succeed_with_distinct_keys,
    the_plaintext_is_stored_nowhere,
    expiry_is_derived_when_read_and_enforced,
);

async fn create_returns_the_plaintext_once_with_the_documented_fields(backend: Backend) {
    let stack = Stack::start(backend).await;
    let r = stack
        .as_dev(Method::POST, "/v1/api-keys", ORG)
        .json(&json!({"name": "ci", "scopes": ["payment_intents:read", "custom:scope"]}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 201, "{body}");
    let obj = body.as_object().unwrap();
    let mut fields: Vec<&str> = obj.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "createdAt",
            "expiresAt",
            "id",
            "key",
            "lastUsedAt",
            "name",
            "prefix",
            "revokedAt",
            "scopes",
            "status"
        ]
    );
    let key = body["key"].as_str().unwrap();
    assert!(key.starts_with("rl_live_") && key.len() == 51, "{key}");
    assert!(
        key[8..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_eq!(body["prefix"], json!(&key[..16]));
    assert_eq!(body["status"], "active");
    assert_eq!(
        body["scopes"],
        json!(["payment_intents:read", "custom:scope"])
    );
    assert_eq!(body["expiresAt"], Value::Null);
    assert_eq!(body["revokedAt"], Value::Null);
    assert_eq!(body["lastUsedAt"], Value::Null);
    assert!(body["createdAt"].as_str().unwrap().ends_with('Z'));

    // Never again: not in the single read, not in the list.
    let id = body["id"].as_str().unwrap();
    let (_, one) = status_json(
        stack
            .as_dev(Method::GET, &format!("/v1/api-keys/{id}"), ORG)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(one.get("key").is_none(), "{one}");
    let list = stack
        .as_dev(Method::GET, "/v1/api-keys", ORG)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!list.contains(key), "plaintext in list");
    assert!(!list.contains("hash"), "hash in list");
}

async fn list_is_newest_first_paginated_and_never_shows_secrets(backend: Backend) {
    let stack = Stack::start(backend).await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            stack.create_key(ORG, &format!("k{i}")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    created.reverse(); // newest first
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/api-keys?limit=3&cursor={c}"),
            None => "/v1/api-keys?limit=3".to_owned(),
        };
        let (status, page) =
            status_json(stack.as_dev(Method::GET, &path, ORG).send().await.unwrap()).await;
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 3);
        for k in data {
            assert!(k.get("key").is_none() && k.get("keyHash").is_none(), "{k}");
            seen.push(k["id"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, created);
}

async fn read_update_and_revoke(backend: Backend) {
    let stack = Stack::start(backend).await;
    let created = stack.create_key(ORG, "before").await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/api-keys/{id}");

    let (s, got) = status_json(stack.as_dev(Method::GET, &path, ORG).send().await.unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(got["name"], "before");
    assert_eq!(got["prefix"], created["prefix"]);

    let (s, updated) = status_json(
        stack
            .as_dev(Method::PATCH, &path, ORG)
            .json(&json!({"name": "after", "scopes": ["imports:write"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{updated}");
    assert_eq!(updated["name"], "after");
    assert_eq!(updated["scopes"], json!(["imports:write"]));
    assert!(updated.get("key").is_none());

    // Name only leaves scopes alone.
    let (_, renamed) = status_json(
        stack
            .as_dev(Method::PATCH, &path, ORG)
            .json(&json!({"name": "again"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(renamed["scopes"], json!(["imports:write"]));

    let (s, revoked) = status_json(
        stack
            .as_dev(Method::DELETE, &path, ORG)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    let revoked_at = revoked["revokedAt"].as_str().unwrap().to_owned();

    // Revoking again changes nothing and does not fail.
    let (s, again) = status_json(
        stack
            .as_dev(Method::DELETE, &path, ORG)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(again["revokedAt"], json!(revoked_at));
    assert_eq!(again["status"], "revoked");

    // Unknown but well-formed id: 404 in the envelope.
    let missing = "/v1/api-keys/00000000-0000-7000-8000-000000000000";
    for m in [Method::GET, Method::PATCH, Method::DELETE] {
        let mut req = stack.as_dev(m.clone(), missing, ORG);
        if m == Method::PATCH {
            req = req.json(&json!({"name": "x"}));
        }
        let (s, body) = status_json(req.send().await.unwrap()).await;
        assert_eq!(s, 404, "{m} {body}");
        assert_envelope(&body, "not_found");
    }
}

async fn bad_input_gets_a_400_envelope_naming_the_problem(backend: Backend) {
    let stack = Stack::start(backend).await;
    let long = "n".repeat(201);
    let cases: Vec<(&str, String)> = vec![
        ("malformed json", "{\"name\": ".to_owned()),
        ("not an object", "[1,2]".to_owned()),
        ("empty body", String::new()),
        ("missing name", json!({"scopes": ["a"]}).to_string()),
        (
            "empty name",
            json!({"name": "", "scopes": ["a"]}).to_string(),
        ),
        (
            "blank name",
            json!({"name": "   ", "scopes": ["a"]}).to_string(),
        ),
        (
            "name not string",
            json!({"name": 7, "scopes": ["a"]}).to_string(),
        ),
        (
            "name too long",
            json!({"name": long, "scopes": ["a"]}).to_string(),
        ),
        ("missing scopes", json!({"name": "n"}).to_string()),
        (
            "scopes empty",
            json!({"name": "n", "scopes": []}).to_string(),
        ),
        (
            "scopes not array",
            json!({"name": "n", "scopes": "a"}).to_string(),
        ),
        (
            "scope empty string",
            json!({"name": "n", "scopes": [""]}).to_string(),
        ),
        (
            "scope not string",
            json!({"name": "n", "scopes": [1]}).to_string(),
        ),
        (
            "expiresAt garbage",
            json!({"name": "n", "scopes": ["a"], "expiresAt": "soon"}).to_string(),
        ),
        (
            "expiresAt number",
            json!({"name": "n", "scopes": ["a"], "expiresAt": 5}).to_string(),
        ),
        (
            "expiresAt past",
            json!({"name": "n", "scopes": ["a"], "expiresAt": "2020-01-01T00:00:00Z"}).to_string(),
        ),
    ];
    for (what, body) in cases {
        let (s, resp) = status_json(
            stack
                .as_dev(Method::POST, "/v1/api-keys", ORG)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 400, "{what}: {resp}");
        assert_envelope(&resp, "invalid_request");
    }
    // Exactly 200 characters is fine.
    let ok = stack
        .as_dev(Method::POST, "/v1/api-keys", ORG)
        .json(&json!({"name": "é".repeat(200), "scopes": ["a"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);

    // Bad key ids, bad updates, bad pagination.
    for path in ["/v1/api-keys/not-a-uuid", "/v1/api-keys/123"] {
        let (s, b) = status_json(stack.as_dev(Method::GET, path, ORG).send().await.unwrap()).await;
        assert_eq!(s, 400, "{path} {b}");
        assert_envelope(&b, "invalid_request");
    }
    let id = stack.create_key(ORG, "x").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for body in [
        json!({}),
        json!({"name": ""}),
        json!({"scopes": []}),
        json!({"other": 1}),
    ] {
        let (s, b) = status_json(
            stack
                .as_dev(Method::PATCH, &format!("/v1/api-keys/{id}"), ORG)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 400, "{body} {b}");
        assert_envelope(&b, "invalid_request");
    }
    for q in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "cursor=@@@",
        "cursor=MTIz",
    ] {
        let (s, b) = status_json(
            stack
                .as_dev(Method::GET, &format!("/v1/api-keys?{q}"), ORG)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 400, "{q} {b}");
        assert_envelope(&b, "invalid_request");
    }
    // Oversized body.
    let huge = json!({"name": "n", "scopes": ["a"], "pad": "x".repeat(64 * 1024)});
    let (s, b) = status_json(
        stack
            .as_dev(Method::POST, "/v1/api-keys", ORG)
            .json(&huge)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 413, "{b}");
    assert_envelope(&b, "payload_too_large");
    // Nothing was half-written: only the two valid keys exist.
    let (_, list) = status_json(
        stack
            .as_dev(Method::GET, "/v1/api-keys", ORG)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    // Wrong method on a known route.
    let (s, b) = status_json(
        stack
            .as_dev(Method::PUT, "/v1/api-keys", ORG)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 405, "{b}");
    assert_envelope(&b, "method_not_allowed");
}

async fn organizations_never_see_each_others_keys(backend: Backend) {
    let stack = Stack::start(backend).await;
    let a = stack.create_key("org_a", "a-key").await;
    let a_id = a["id"].as_str().unwrap();
    stack.create_key("org_b", "b-key").await;
    let path = format!("/v1/api-keys/{a_id}");
    for m in [Method::GET, Method::PATCH, Method::DELETE] {
        let mut req = stack.as_dev(m.clone(), &path, "org_b");
        if m == Method::PATCH {
            req = req.json(&json!({"name": "stolen"}));
        }
        let (s, b) = status_json(req.send().await.unwrap()).await;
        assert_eq!(s, 404, "{m}: {b}");
        assert_envelope(&b, "not_found");
    }
    let (_, list_b) = status_json(
        stack
            .as_dev(Method::GET, "/v1/api-keys", "org_b")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let names: Vec<&str> = list_b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b-key"]);
    // org_a's key is untouched.
    let (_, still) = status_json(
        stack
            .as_dev(Method::GET, &path, "org_a")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(still["name"], "a-key");
    assert_eq!(still["status"], "active");
    // An API key of org_a, with a forged organization header, still acts for org_a.
    let key = a["key"].as_str().unwrap();
    let (s, echo) = status_json(
        stack
            .with_key(Method::GET, "/v1/payment-intents", key)
            .header("x-organization-id", "org_b")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(echo["headers"]["x-organization-id"], json!(["org_a"]));
}

async fn concurrent_creates_all_succeed_with_distinct_keys(backend: Backend) {
    let stack = Stack::start(backend).await;
    let n = 40;
    let results = futures::future::join_all((0..n).map(|i| {
        stack
            .as_dev(Method::POST, "/v1/api-keys", ORG)
            .json(&json!({"name": format!("c{i}"), "scopes": ["a"]}))
            .send()
    }))
    .await;
    let mut keys = HashSet::new();
    let mut ids = HashSet::new();
    for r in results {
        let (s, b) = status_json(r.unwrap()).await;
        assert_eq!(s, 201, "{b}");
        keys.insert(b["key"].as_str().unwrap().to_owned());
        ids.insert(b["id"].as_str().unwrap().to_owned());
    }
    assert_eq!((keys.len(), ids.len()), (n, n));
    let (_, list) = status_json(
        stack
            .as_dev(Method::GET, "/v1/api-keys?limit=100", ORG)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["data"].as_array().unwrap().len(), n);
}

async fn the_plaintext_is_stored_nowhere(backend: Backend) {
    let stack = Stack::start(backend).await;
    let created = stack.create_key(ORG, "secret-check").await;
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    // Use it, update it and revoke it, so every write path has run.
    let r = stack
        .with_key(Method::GET, "/v1/payment-intents", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    stack
        .as_dev(Method::PATCH, &format!("/v1/api-keys/{id}"), ORG)
        .json(&json!({"name": "renamed"}))
        .send()
        .await
        .unwrap();
    stack
        .as_dev(Method::DELETE, &format!("/v1/api-keys/{id}"), ORG)
        .send()
        .await
        .unwrap();
    // Every write path has reached audit-service too (through the outbox).
    eventually(
        "the key's three audit events",
        Duration::from_secs(10),
        || async {
            let (_, feed) = status_json(
                stack
                    .as_dev(Method::GET, "/v1/audit-events?limit=100", ORG)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            feed["data"].as_array().map(Vec::len) == Some(3)
        },
    )
    .await;

    let secret_body = &key[8..];
    match backend {
        Backend::Sqlite => {
            for entry in std::fs::read_dir(stack.dir.path()).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    let bytes = std::fs::read(&path).unwrap();
                    let hay = String::from_utf8_lossy(&bytes);
                    assert!(
                        !hay.contains(secret_body),
                        "plaintext in {}",
                        path.display()
                    );
                }
            }
        }
        Backend::Postgres => {
            sqlx::any::install_default_drivers();
            // Every table of both databases, listed from the catalogue (a failing query
            // fails the test: nothing is skipped).
            for url in [&stack.keys_db, &stack.audit_db] {
                let pool = sqlx::AnyPool::connect(url).await.unwrap();
                let tables: Vec<String> = sqlx::query(
                    "SELECT table_name::text AS name FROM information_schema.tables \
                     WHERE table_schema = 'public'",
                )
                .fetch_all(&pool)
                .await
                .unwrap()
                .iter()
                .map(|row| sqlx::Row::get(row, "name"))
                .collect();
                assert!(tables.len() >= 2, "{url}: tables {tables:?}");
                for table in tables {
                    let q = format!(
                        "SELECT COALESCE(string_agg(t::text, '|'), '') AS dump FROM \"{table}\" t"
                    );
                    let row = sqlx::query(sqlx::AssertSqlSafe(q))
                        .fetch_one(&pool)
                        .await
                        .unwrap_or_else(|e| panic!("reading {table}: {e}"));
                    let dump: String = sqlx::Row::get(&row, "dump");
                    assert!(!dump.contains(secret_body), "plaintext in {table}");
                }
                pool.close().await;
            }
        }
    }
    assert!(
        !stack.all_logs().contains(secret_body),
        "plaintext in a log"
    );
}

async fn expiry_is_derived_when_read_and_enforced(backend: Backend) {
    let stack = Stack::start(backend).await;
    let soon = time_in(Duration::from_secs(2));
    let (s, created) = status_json(
        stack
            .as_dev(Method::POST, "/v1/api-keys", ORG)
            .json(&json!({"name": "short-lived", "scopes": ["a"], "expiresAt": soon}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["status"], "active");
    let key = created["key"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    let r = stack
        .with_key(Method::GET, "/v1/payment-intents", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "usable before expiry");
    // The gateway's cache still holds the record; expiry is checked on every request, so
    // the key stops working within moments of its expiry, not when the cache entry ages out.
    let (s, b) = eventually(
        "the key refused after expiry",
        Duration::from_secs(5),
        || async {
            let (s, b) = status_json(
                stack
                    .with_key(Method::GET, "/v1/payment-intents", key)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            (s != 200).then_some((s, b))
        },
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(
        b,
        json!({"error": "unauthorized", "message": "Invalid, revoked, or expired API key."})
    );
    let (_, got) = status_json(
        stack
            .as_dev(Method::GET, &format!("/v1/api-keys/{id}"), ORG)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got["status"], "expired");
}

fn time_in(d: Duration) -> String {
    let t = std::time::SystemTime::now() + d;
    let ms = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    rl_contract::time_fmt::format_ms(ms)
}
