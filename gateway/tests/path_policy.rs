//! Property: for any request target the gateway accepts, the most lenient reading an
//! upstream framework could give the forwarded path never lands somewhere the gateway's
//! decision did not cover — no public classification for a protected route, and no policy
//! rule that applies to the upstream's reading but was not applied by the gateway.
//!
//! The lenient reader models what Rails, Rack/Puma, Express, Spring, ASP.NET Core and PHP
//! do between them: percent-decode everything, fold ASCII case, merge `//`, resolve dot
//! segments, treat `\` as `/`, drop `;params` from segments, drop a format suffix (`.json`)
//! and trailing dots/spaces (IIS), and take `:verb` custom methods as the resource.
#![allow(clippy::unwrap_used)]

use gateway::path::canonicalize;
use gateway::policy::Policy;
use gateway::routes::{Route, classify};
use http::Method;
use proptest::prelude::*;

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The most lenient reading of a forwarded path.
fn lenient(path: &str) -> String {
    let decoded = String::from_utf8_lossy(&percent_decode(path)).to_ascii_lowercase();
    let decoded = decoded.replace('\\', "/");
    let parts: Vec<&str> = decoded.split('/').collect();
    let last = parts.len() - 1;
    let mut segs: Vec<String> = Vec::new();
    for (i, seg) in parts.into_iter().enumerate() {
        let mut seg = seg.split(';').next().unwrap_or("").to_owned();
        // Custom verbs and format suffixes: the last segment only (Google APIs, Rails,
        // Spring's suffix matching).
        if i == last || (i + 1 == last && decoded.ends_with('/')) {
            if let Some((name, _)) = seg.split_once(':') {
                seg = name.to_owned();
            }
            if let Some(dot) = seg.rfind('.')
                && dot > 0
                && seg != ".."
            {
                seg.truncate(dot);
            }
        }
        // IIS trims trailing dots and spaces from every segment.
        let seg = if seg == ".." || seg == "." {
            seg
        } else {
            seg.trim_end_matches(['.', ' ']).to_owned()
        };
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            _ => segs.push(seg),
        }
    }
    format!("/{}", segs.join("/"))
}

fn segment() -> impl Strategy<Value = String> {
    let names = prop::sample::select(vec![
        "v1",
        "V1",
        "api-keys",
        "API-Keys",
        "reconciliation-cases",
        "payment-intents",
        "audit-events",
        "outbound-webhook-endpoints",
        "webhooks",
        "health",
        "docs",
        "dashboard",
        "x",
        "%61pi-keys",
        "api%2Dkeys",
        "reconciliation-ca%73es",
        ".",
        "..",
        "%2e",
        "%2E%2e",
        "%2f",
        "%5c",
        "%C5%BF",
        "%E2%84%AA",
        "%EF%BC%8F",
        "%c0%ae",
        "",
    ]);
    let suffixes = prop::sample::select(vec![
        "", "", "", ".json", ".xml", ";a=b", "%3Bx", "%20", "~", ":close", ".", "!", "+", "%00",
        "%3F", "%23", "-archive", "x",
    ]);
    (names, suffixes).prop_map(|(n, s)| format!("{n}{s}"))
}

fn target() -> impl Strategy<Value = String> {
    (prop::collection::vec(segment(), 1..5), prop::bool::ANY).prop_map(|(segs, slash)| {
        let mut t = format!("/{}", segs.join("/"));
        if slash {
            t.push('/');
        }
        t
    })
}

fn policy() -> Policy {
    Policy::from_json(
        r#"{"rules":[
          {"path":"/v1/api-keys","sessionOnly":true,"permission":"api_keys_manage"},
          {"path":"/v1/outbound-webhook-*","permission":"webhooks_manage"},
          {"path":"/v1/reconciliation-cases","methods":["POST","PUT","PATCH","DELETE"],"permission":"cases_action"},
          {"path":"/v1/payment-intents","methods":["GET"],"scope":"payment_intents:read"},
          {"path":"/v1/audit-events","methods":["GET"],"scope":"audit_events:read"}
        ]}"#,
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn the_upstreams_reading_never_escapes_the_decision(raw in target(), post in prop::bool::ANY) {
        let Ok(t) = canonicalize(raw.as_bytes()) else {
            return Ok(());
        };
        let method = if post { Method::POST } else { Method::GET };
        let read = lenient(&t.path);
        let decided = classify(&t.path);
        let upstream = classify(&read);
        // A public decision must not be read as one of the API's protected routes.
        let protected = matches!(upstream, Route::ApiKeys | Route::AuditEvents | Route::Api);
        prop_assert!(
            !(decided.is_public() && protected),
            "{raw} → {} decided {decided:?}, upstream reads {read} as {upstream:?}", t.path
        );
        if upstream == Route::ApiKeys {
            prop_assert_eq!(decided, Route::ApiKeys, "{} read as {}", t.path, read);
        }
        let p = policy();
        let applied: Vec<_> = p.matching(&method, &t.path).collect();
        for rule in p.matching(&method, &read) {
            prop_assert!(
                applied.contains(&rule),
                "{raw} → {}: the upstream reads {read}, where {:?} applies, but the gateway did not apply it",
                t.path, rule.path
            );
        }
    }

    #[test]
    fn canonicalize_is_idempotent_and_clean(raw in target()) {
        if let Ok(t) = canonicalize(raw.as_bytes()) {
            let again = canonicalize(t.to_request_target().as_bytes()).unwrap();
            prop_assert_eq!(&again, &t);
            for seg in t.path.split('/').skip(1) {
                prop_assert!(seg != "." && seg != "..");
                let upper = seg.to_ascii_uppercase();
                for bad in ["%2E", "%2F", "%5C", "%25", "%3B", "%00"] {
                    prop_assert!(!upper.contains(bad), "{}", t.path);
                }
            }
            prop_assert!(t.path.is_ascii());
        }
    }
}
