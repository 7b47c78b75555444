//! Invariants: what the gateway signs verifies for exactly that method and target; any
//! change to method, target, timestamp or an identity header is refused; fuzzed signature
//! headers never verify.
#![no_main]
use http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use rl_contract::identity::OWNED_HEADERS;
use rl_contract::signing::{SIGNATURE_HEADER, Secrets, TIMESTAMP_HEADER};

const NOW: i64 = 1_900_000_000;

fuzz_target!(|data: &[u8]| {
    let secrets = Secrets::new(Some("0123456789abcdef0123456789abcdef-fuzz"), None, false);
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1}');
    let target = parts.next().unwrap_or("/");
    let org = parts.next().unwrap_or("org");
    let forged_sig = parts.next();
    let Ok(org_value) = HeaderValue::from_str(org) else {
        return;
    };
    let identity = [(OWNED_HEADERS[0], org)];
    let text = |v: &str| v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    let Ok(sig) = secrets.sign(NOW, "GET", target, &identity) else {
        // Refused only for values no header could carry as text.
        assert!(!text(org) || !text(target), "refused to sign {target:?} {org:?}");
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(OWNED_HEADERS[0], org_value);
    headers.insert(TIMESTAMP_HEADER, HeaderValue::from(NOW));
    headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(&sig).expect("hex"));
    assert!(secrets.verify(&headers, &Method::GET, target, NOW).is_ok());
    assert!(secrets.verify(&headers, &Method::POST, target, NOW).is_err());
    assert!(secrets.verify(&headers, &Method::GET, &format!("{target}x"), NOW).is_err());
    assert!(secrets.verify(&headers, &Method::GET, target, NOW + 3600).is_err());
    let mut other = headers.clone();
    other.insert(OWNED_HEADERS[0], HeaderValue::from_static("org_other"));
    if org != "org_other" {
        assert!(secrets.verify(&other, &Method::GET, target, NOW).is_err());
    }
    if let Some(f) = forged_sig
        && let Ok(v) = HeaderValue::from_str(f)
        && f != sig
    {
        headers.insert(SIGNATURE_HEADER, v);
        assert!(secrets.verify(&headers, &Method::GET, target, NOW).is_err());
    }
});
