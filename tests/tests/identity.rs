//! Signed identity: what reaches a service without passing the gateway is refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    Backend, ORG, Service, Stack, StackOptions, assert_envelope, kv, signed_request, status_json,
};
use reqwest::Method;
use rl_contract::signing::{INTERNAL_TOKEN_HEADER, SIGNATURE_HEADER, Secrets, TIMESTAMP_HEADER};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_refuse_identity_the_gateway_did_not_sign() {
    let stack = Stack::start(Backend::Sqlite).await;
    let c = &stack.client;
    for base in [&stack.keys_url, &stack.audit_url] {
        let target = if base == &stack.keys_url {
            "/v1/api-keys"
        } else {
            "/v1/audit-events"
        };
        let url = format!("{base}{target}");
        // No identity; forged identity; identity signed with another secret; a stale
        // signature; a signature made for another target.
        let forged = c
            .get(&url)
            .header("x-organization-id", ORG)
            .header("x-auth-type", "session")
            .header("x-user-id", "user_x");
        let wrong_secret = signed_request(
            c,
            &Secrets::new(Some("a-completely-different-secret-32-chars"), None, false),
            Method::GET,
            base,
            target,
            ORG,
        );
        let ts = rl_contract::time_fmt::now_ms() / 1000 - 120;
        let identity = [
            ("x-organization-id", ORG),
            ("x-auth-type", "session"),
            ("x-user-id", "user_x"),
        ];
        let stale_sig = stack.secrets().sign(ts, "GET", target, &identity).unwrap();
        let mut stale = c
            .get(&url)
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, stale_sig);
        for (k, v) in identity {
            stale = stale.header(k, v);
        }
        let other_target = stack.signed(Method::GET, base, "/v1/elsewhere", ORG);
        let other_target = {
            let req = other_target.build().unwrap();
            let mut r = c.get(&url);
            for (k, v) in req.headers() {
                r = r.header(k, v);
            }
            r
        };
        for (what, req) in [
            ("no identity", c.get(&url)),
            ("unsigned identity", forged),
            ("wrong secret", wrong_secret),
            ("stale signature", stale),
            ("signature for another target", other_target),
        ] {
            let (s, b) = status_json(req.send().await.unwrap()).await;
            assert_eq!(s, 401, "{base} {what}: {b}");
            assert_envelope(&b, "unauthorized");
        }
        let (s, b) = status_json(
            stack
                .signed(Method::GET, base, target, ORG)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200, "{base}: a correctly signed identity: {b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_endpoints_need_the_internal_token() {
    let stack = Stack::start(Backend::Sqlite).await;
    let c = &stack.client;
    let calls = [
        (
            Method::POST,
            format!("{}/internal/v1/api-keys/lookup", stack.keys_url),
            json!({"keyHash": "0".repeat(64)}),
        ),
        (
            Method::POST,
            format!("{}/internal/v1/api-keys/usage", stack.keys_url),
            json!({"usage": []}),
        ),
        (
            Method::GET,
            format!("{}/internal/v1/key-changes", stack.keys_url),
            Value::Null,
        ),
        (
            Method::POST,
            format!("{}/internal/v1/audit-events/batch", stack.audit_url),
            json!({"events": []}),
        ),
    ];
    for (m, url, body) in &calls {
        let mut req = c.request(m.clone(), url);
        if !body.is_null() {
            req = req.json(body);
        }
        let (s, b) = status_json(req.send().await.unwrap()).await;
        assert_eq!(s, 401, "{url}: {b}");
        let mut req = c
            .request(m.clone(), url)
            .header(INTERNAL_TOKEN_HEADER, "00ff");
        if !body.is_null() {
            req = req.json(body);
        }
        assert_eq!(
            req.send().await.unwrap().status(),
            401,
            "{url} with a bad token"
        );
        let mut req = c
            .request(m.clone(), url)
            .header(INTERNAL_TOKEN_HEADER, stack.internal_token());
        if !body.is_null() {
            req = req.json(body);
        }
        let s = req.send().await.unwrap().status().as_u16();
        assert!(
            s == 200 || s == 204 || s == 404,
            "{url} with the token: {s}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_receive_an_identity_they_can_verify() {
    let stack = Stack::start(Backend::Sqlite).await;
    let key = stack.create_key(ORG, "verifiable").await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, echo) = status_json(
        stack
            .with_key(Method::PATCH, "/v1/payment-intents/pi_1?expand=x", &key)
            .header("x-reconlayer-identity-signature", "v1=forged")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    let h = &echo["headers"];
    let mut headers = axum::http::HeaderMap::new();
    for (name, values) in h.as_object().unwrap() {
        for v in values.as_array().unwrap() {
            headers.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                v.as_str().unwrap().parse().unwrap(),
            );
        }
    }
    assert_eq!(
        h["x-reconlayer-identity-signature"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "client copy not stripped"
    );
    let now = rl_contract::time_fmt::now_ms() / 1000;
    let secrets = stack.secrets();
    assert_eq!(
        secrets.verify(
            &headers,
            &axum::http::Method::PATCH,
            "/v1/payment-intents/pi_1?expand=x",
            now
        ),
        Ok(())
    );
    assert_eq!(
        secrets.verify(
            &headers,
            &axum::http::Method::GET,
            "/v1/payment-intents/pi_1?expand=x",
            now
        ),
        Err("forged")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_rotates_without_downtime() {
    // Services already accept the new secret and still the old; the gateway signs with the
    // old one until it is rolled.
    let old = common::new_secret();
    let mut opts = StackOptions::new(Backend::Sqlite);
    opts.gateway_env
        .push(("IDENTITY_SIGNING_SECRET".into(), old.clone()));
    opts.services_env
        .push(("IDENTITY_SIGNING_SECRET_PREVIOUS".into(), old));
    let stack = Stack::start_with(opts).await;
    let created = stack.create_key(ORG, "rotated").await;
    let r = stack
        .with_key(Method::GET, "/v1/x", created["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "lookup with the previous secret's internal token"
    );
    let (s, _) = status_json(
        stack
            .as_dev(Method::GET, "/v1/audit-events", ORG)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_a_secret_refuses_to_start_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
    let base = vec![kv("DATABASE_URL", db)];
    let launch = |name: &str, extra: Option<(&str, &str)>| {
        let mut env = base.clone();
        env.extend(extra.map(|(k, v)| kv(k, v)));
        Service::launch(name, "keys-service", "KEYS", &env, dir.path())
    };
    let mut p = launch("keys-no-secret", None).proc;
    assert_eq!(
        p.wait_exit(Duration::from_secs(10)),
        Some(64),
        "{}",
        p.logs()
    );
    let mut p = launch(
        "keys-short-secret",
        Some(("IDENTITY_SIGNING_SECRET", "short")),
    )
    .proc;
    assert_eq!(
        p.wait_exit(Duration::from_secs(10)),
        Some(64),
        "a short secret was accepted"
    );
    let dev = launch("keys-dev", Some(("IDENTITY_VERIFICATION", "off")))
        .ready(&reqwest::Client::new(), "/livez")
        .await;
    assert!(dev.proc.logs().contains("IDENTITY_VERIFICATION=off"));
}
