//! The audit trail: keys-service's outbox, audit-service's ingestion and the feed through
//! the gateway, on SQLite and on Postgres.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{Backend, ORG, Stack, assert_envelope, consistently, eventually, status_json};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    a_key_lifecycle_shows_three_events_newest_first,
    every_filter_alone_and_combined,
    pagination_never_skips_or_repeats_while_events_arrive,
    organizations_never_see_each_others_events,
    bad_parameters_get_a_400_and_bad_batches_write_nothing,
    ingestion_is_idempotent_by_event_id,
    the_outbox_delivers_everything_after_an_audit_outage,
);

fn ts(ms: i64) -> String {
    rl_contract::time_fmt::format_ms(ms)
}

fn event(
    id: &str,
    org: &str,
    at_ms: i64,
    actor: &str,
    kind: &str,
    rtype: &str,
    rid: &str,
) -> Value {
    json!({
        "id": id, "organizationId": org, "occurredAt": ts(at_ms), "actor": actor,
        "eventType": kind, "message": format!("{kind} by {actor}"),
        "resourceType": rtype, "resourceId": rid, "metadata": {"n": id},
    })
}

async fn ingest(stack: &Stack, events: &[Value]) -> (u16, Value) {
    status_json(
        stack
            .client
            .post(format!(
                "{}/internal/v1/audit-events/batch",
                stack.audit_url
            ))
            .header(
                rl_contract::signing::INTERNAL_TOKEN_HEADER,
                stack.internal_token(),
            )
            .json(&json!({ "events": events }))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn feed(stack: &Stack, org: &str, query: &str) -> (u16, Value) {
    status_json(
        stack
            .as_dev(Method::GET, &format!("/v1/audit-events?{query}"), org)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Every event id the feed returns for `query`, following cursors.
async fn all_ids(stack: &Stack, org: &str, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("{query}&limit=100&cursor={c}"),
            None => format!("{query}&limit=100"),
        };
        let (s, page) = feed(stack, org, &q).await;
        assert_eq!(s, 200, "{q}: {page}");
        for e in page["data"].as_array().unwrap() {
            assert_eq!(e["organizationId"], json!(org));
            ids.push(e["id"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
}

async fn a_key_lifecycle_shows_three_events_newest_first(backend: Backend) {
    let stack = Stack::start(backend).await;
    let created = stack.create_key(ORG, "ci key").await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/api-keys/{id}");
    let r = stack
        .as_dev(Method::PATCH, &path, ORG)
        .json(&json!({"name": "deploy key"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = stack
        .as_dev(Method::DELETE, &path, ORG)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let page = eventually(
        "three events in the feed",
        Duration::from_secs(10),
        || async {
            let (s, page) = feed(&stack, ORG, "limit=100").await;
            assert_eq!(s, 200, "{page}");
            (page["data"].as_array().unwrap().len() >= 3).then_some(page)
        },
    )
    .await;
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{page}");
    let types: Vec<&str> = data
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["api_key.revoked", "api_key.updated", "api_key.created"]
    );
    for e in data {
        assert_eq!(e["actor"], "user_dev");
        assert_eq!(e["resourceType"], "api_key");
        assert_eq!(e["resourceId"], json!(id));
        assert!(e["occurredAt"].as_str().unwrap().ends_with('Z'));
        assert!(e["message"].as_str().unwrap().contains("key"), "{e}");
    }
    assert_eq!(
        data[1]["metadata"]["changes"]["name"],
        json!({"from": "ci key", "to": "deploy key"})
    );
    // No key material in the trail.
    let text = page.to_string();
    assert!(!text.contains(created["key"].as_str().unwrap()));
    // API keys of the organization read the same feed.
    let reader = stack.create_key(ORG, "reader").await;
    let (s, via_key) = status_json(
        stack
            .with_key(
                Method::GET,
                "/v1/audit-events?limit=100&eventType=api_key.revoked",
                reader["key"].as_str().unwrap(),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{via_key}");
    assert_eq!(via_key["data"].as_array().unwrap().len(), 1);
}

async fn every_filter_alone_and_combined(backend: Backend) {
    let stack = Stack::start(backend).await;
    let base = 1_800_000_000_000i64;
    let types = ["api_key.created", "api_key.revoked", "case.closed"];
    let actors = ["user_a", "user_b", "api_key:k1"];
    let rtypes = ["api_key", "case"];
    let mut events = Vec::new();
    for i in 0..60i64 {
        events.push(event(
            &format!("evt_{i:03}"),
            ORG,
            base + i * 1000,
            actors[(i % 3) as usize],
            types[(i % 3) as usize],
            rtypes[(i % 2) as usize],
            &format!("res_{}", i % 5),
        ));
    }
    let (s, r) = ingest(&stack, &events).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["accepted"], 60);

    let expect = |pred: &dyn Fn(&Value) -> bool| -> Vec<String> {
        let mut v: Vec<&Value> = events.iter().filter(|e| pred(e)).collect();
        v.sort_by(|a, b| b["occurredAt"].as_str().cmp(&a["occurredAt"].as_str()));
        v.iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let after = ts(base + 20_000);
    let before = ts(base + 40_000);
    type Case<'a> = (String, Box<dyn Fn(&Value) -> bool + 'a>);
    let cases: Vec<Case> = vec![
        (
            "eventType=case.closed".into(),
            Box::new(|e| e["eventType"] == "case.closed"),
        ),
        (
            "eventType=api_key.created&eventType=api_key.revoked".into(),
            Box::new(|e| e["eventType"] != "case.closed"),
        ),
        ("actor=user_b".into(), Box::new(|e| e["actor"] == "user_b")),
        (
            "actor=api_key%3Ak1".into(),
            Box::new(|e| e["actor"] == "api_key:k1"),
        ),
        (
            "resourceType=case".into(),
            Box::new(|e| e["resourceType"] == "case"),
        ),
        (
            "resourceId=res_3".into(),
            Box::new(|e| e["resourceId"] == "res_3"),
        ),
        (
            format!("occurredAfter={after}"),
            Box::new(|e| e["occurredAt"].as_str().unwrap() > ts(base + 20_000).as_str()),
        ),
        (
            format!("occurredBefore={before}"),
            Box::new(|e| e["occurredAt"].as_str().unwrap() < ts(base + 40_000).as_str()),
        ),
        (
            format!(
                "occurredAfter={after}&occurredBefore={before}&resourceType=api_key&eventType=api_key.created&eventType=case.closed"
            ),
            Box::new(|e| {
                let t = e["occurredAt"].as_str().unwrap();
                t > ts(base + 20_000).as_str()
                    && t < ts(base + 40_000).as_str()
                    && e["resourceType"] == "api_key"
                    && e["eventType"] != "api_key.revoked"
            }),
        ),
        (
            "actor=user_a&resourceId=res_0".into(),
            Box::new(|e| e["actor"] == "user_a" && e["resourceId"] == "res_0"),
        ),
        ("actor=nobody".into(), Box::new(|_| false)),
    ];
    for (q, pred) in cases {
        let got = all_ids(&stack, ORG, &q).await;
        assert_eq!(got, expect(pred.as_ref()), "{q}");
    }
    // The default page is 50, newest first.
    let (_, page) = feed(&stack, ORG, "").await;
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 50);
    assert_eq!(data[0]["id"], "evt_059");
    assert!(page["nextCursor"].is_string());
}

async fn pagination_never_skips_or_repeats_while_events_arrive(backend: Backend) {
    let stack = Stack::start(backend).await;
    let base = 1_800_000_000_000i64;
    let original: Vec<Value> = (0..1200i64)
        .map(|i| {
            event(
                &format!("o_{i:05}"),
                ORG,
                base + (i / 3) * 10,
                "user_a",
                "case.updated",
                "case",
                "c",
            )
        })
        .collect();
    for chunk in original.chunks(400) {
        assert_eq!(ingest(&stack, chunk).await.0, 200);
    }
    // While one reader pages through, a writer keeps adding events: some newer than
    // everything, some in the middle of the range already being read.
    let writer = {
        let client = stack.client.clone();
        let url = format!("{}/internal/v1/audit-events/batch", stack.audit_url);
        let token = stack.internal_token();
        tokio::spawn(async move {
            for round in 0..30i64 {
                let batch: Vec<Value> = (0..10i64)
                    .map(|j| {
                        let at = if j % 2 == 0 {
                            base + 10_000_000 + round * 10 + j
                        } else {
                            base + (round * 97 + j) % 4000
                        };
                        event(
                            &format!("n_{round:03}_{j}"),
                            ORG,
                            at,
                            "user_b",
                            "case.updated",
                            "case",
                            "c",
                        )
                    })
                    .collect();
                let r = client
                    .post(&url)
                    .header(rl_contract::signing::INTERNAL_TOKEN_HEADER, &token)
                    .json(&json!({"events": batch}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let seen = all_ids(&stack, ORG, "").await;
    writer.await.unwrap();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an event was returned twice");
    let missing: Vec<&str> = original
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .filter(|id| !unique.contains(&(*id).to_owned()))
        .collect();
    assert!(
        missing.is_empty(),
        "skipped {} original events",
        missing.len()
    );
    eprintln!(
        "paged {} events ({} original, {} inserted during paging seen)",
        seen.len(),
        original.len(),
        seen.len() - original.len()
    );
}

async fn organizations_never_see_each_others_events(backend: Backend) {
    let stack = Stack::start(backend).await;
    let base = 1_800_000_000_000i64;
    let mut events = Vec::new();
    for i in 0..20i64 {
        events.push(event(
            &format!("a_{i}"),
            "org_a",
            base + i,
            "user_x",
            "api_key.created",
            "api_key",
            "shared",
        ));
        events.push(event(
            &format!("b_{i}"),
            "org_b",
            base + i,
            "user_x",
            "api_key.created",
            "api_key",
            "shared",
        ));
    }
    assert_eq!(ingest(&stack, &events).await.0, 200);
    for q in [
        "",
        "actor=user_x",
        "resourceId=shared",
        "eventType=api_key.created",
        "resourceType=api_key&actor=user_x",
    ] {
        let ids = all_ids(&stack, "org_a", q).await;
        assert_eq!(ids.len(), 20, "{q}");
        assert!(ids.iter().all(|id| id.starts_with("a_")), "{q}: {ids:?}");
    }
    // A cursor from org_b's pages reveals nothing of org_b to org_a.
    let (_, b_page) = feed(&stack, "org_b", "limit=5").await;
    let cursor = b_page["nextCursor"].as_str().unwrap();
    let (s, a_page) = feed(&stack, "org_a", &format!("limit=100&cursor={cursor}")).await;
    assert_eq!(s, 200);
    for e in a_page["data"].as_array().unwrap() {
        assert_eq!(e["organizationId"], "org_a");
    }
    // Without identity, nothing.
    let r = stack
        .client
        .get(stack.url("/v1/audit-events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

async fn bad_parameters_get_a_400_and_bad_batches_write_nothing(backend: Backend) {
    let stack = Stack::start(backend).await;
    for q in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=-1",
        "limit=",
        "limit=1.5",
        "cursor=***",
        "cursor=bm90LWEtY3Vyc29y",
        "occurredAfter=yesterday",
        "occurredBefore=2026-13-01T00:00:00Z",
        "actor=a&actor=b",
        "limit=1&limit=2",
        "actor=",
        "resourceId=",
    ] {
        let (s, b) = feed(&stack, ORG, q).await;
        assert_eq!(s, 400, "{q}: {b}");
        assert_envelope(&b, "invalid_request");
    }
    let good = event(
        "ok_1",
        ORG,
        1_800_000_000_000,
        "user_a",
        "case.closed",
        "case",
        "c1",
    );
    let mut bad = good.clone();
    bad["id"] = json!("ok_2");
    bad["eventType"] = json!("NotDotted");
    let (s, b) = ingest(&stack, &[good.clone(), bad]).await;
    assert_eq!(s, 400, "{b}");
    assert_envelope(&b, "invalid_request");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("events[1].eventType"),
        "{b}"
    );
    for body in [json!({}), json!({"events": "x"}), json!([1])] {
        let r = stack
            .client
            .post(format!(
                "{}/internal/v1/audit-events/batch",
                stack.audit_url
            ))
            .header(
                rl_contract::signing::INTERNAL_TOKEN_HEADER,
                stack.internal_token(),
            )
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }
    let (_, page) = feed(&stack, ORG, "").await;
    assert_eq!(
        page["data"].as_array().unwrap().len(),
        0,
        "a rejected batch wrote something"
    );
}

async fn ingestion_is_idempotent_by_event_id(backend: Backend) {
    let stack = Stack::start(backend).await;
    let batch: Vec<Value> = (0..25i64)
        .map(|i| {
            event(
                &format!("idem_{i}"),
                ORG,
                1_800_000_000_000 + i,
                "user_a",
                "case.closed",
                "case",
                "c",
            )
        })
        .collect();
    let (_, first) = ingest(&stack, &batch).await;
    assert_eq!(
        (first["accepted"].as_u64(), first["duplicates"].as_u64()),
        (Some(25), Some(0))
    );
    let (_, again) = ingest(&stack, &batch).await;
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(25))
    );
    // A retried batch that overlaps a new one stores only the new events.
    let mut mixed = batch[20..].to_vec();
    mixed.push(event(
        "idem_new",
        ORG,
        1_800_000_000_100,
        "user_a",
        "case.closed",
        "case",
        "c",
    ));
    let (_, m) = ingest(&stack, &mixed).await;
    assert_eq!(
        (m["accepted"].as_u64(), m["duplicates"].as_u64()),
        (Some(1), Some(5))
    );
    assert_eq!(all_ids(&stack, ORG, "").await.len(), 26);
}

async fn the_outbox_delivers_everything_after_an_audit_outage(backend: Backend) {
    let mut stack = Stack::start(backend).await;
    stack.audit.kill();
    let started = Instant::now();
    let mut expected: HashMap<&str, usize> = HashMap::new();
    for i in 0..12 {
        let created = stack.create_key(ORG, &format!("outage {i}")).await;
        *expected.entry("api_key.created").or_default() += 1;
        let path = format!("/v1/api-keys/{}", created["id"].as_str().unwrap());
        if i % 2 == 0 {
            let r = stack
                .as_dev(Method::PATCH, &path, ORG)
                .json(&json!({"scopes": ["x"]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            *expected.entry("api_key.updated").or_default() += 1;
        }
        if i % 3 == 0 {
            let r = stack
                .as_dev(Method::DELETE, &path, ORG)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            *expected.entry("api_key.revoked").or_default() += 1;
        }
    }
    let management_time = started.elapsed();
    assert!(
        management_time < Duration::from_secs(10),
        "key management blocked on audit: {management_time:?}"
    );
    let total: usize = expected.values().sum();
    // Failed deliveries are counted on their rows (on Postgres too: the statement once used
    // `?` placeholders and its error was discarded).
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&stack.keys_db).await.unwrap();
    eventually(
        "failed deliveries recorded on the outbox rows",
        Duration::from_secs(10),
        || async {
            let row =
                sqlx::query("SELECT MIN(attempts) AS lo, MAX(attempts) AS hi FROM audit_outbox")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            let (lo, hi): (i64, i64) = (sqlx::Row::get(&row, "lo"), sqlx::Row::get(&row, "hi"));
            if lo >= 1 && hi >= 2 {
                Ok(())
            } else {
                Err(format!("attempts min {lo}, max {hi}"))
            }
        },
    )
    .await;
    pool.close().await;
    stack.audit.start();
    let client = stack.client.clone();
    let livez = format!("{}/livez", stack.audit_url);
    common::wait_http(&client, &livez, &mut stack.audit).await;
    // Read audit-service directly: the gateway route is the same data.
    let ids = eventually(
        "every event delivered after the restart",
        Duration::from_secs(30),
        || async {
            let ids = all_ids(&stack, ORG, "").await;
            if ids.len() >= total {
                Ok(ids)
            } else {
                Err(format!("{} of {total}", ids.len()))
            }
        },
    )
    .await;
    // No duplicate appears later either.
    consistently(
        "no event delivered twice",
        Duration::from_millis(1500),
        || async { all_ids(&stack, ORG, "").await.len() == total },
    )
    .await;
    let ids_after = all_ids(&stack, ORG, "").await;
    let unique: HashSet<&String> = ids_after.iter().collect();
    eprintln!(
        "outage: {total} events written while audit-service was down; {} delivered after restart, {} unique",
        ids.len(),
        unique.len()
    );
    assert_eq!(ids_after.len(), total, "lost or duplicated events");
    assert_eq!(unique.len(), total);
    let (_, page) = feed(&stack, ORG, "limit=100").await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for e in page["data"].as_array().unwrap() {
        *counts
            .entry(e["eventType"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for (k, v) in expected {
        assert_eq!(counts.get(k).copied().unwrap_or(0), v, "{k}");
    }
    // And the outbox is empty: delivered rows were deleted, not redelivered forever.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&stack.keys_db).await.unwrap();
    eventually("the outbox emptied", Duration::from_secs(10), || async {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM audit_outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        match sqlx::Row::get::<i64, _>(&row, "n") {
            0 => Ok(()),
            n => Err(format!("{n} rows left")),
        }
    })
    .await;
    pool.close().await;
}
