//! The Standard Webhooks signature scheme (<https://www.standardwebhooks.com/>).
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`. `webhook-signature` is a
//! space-separated list of `version,base64`: `v1` is HMAC-SHA256 keyed with the secret's
//! bytes (the base64 after `whsec_`) — during a rotation one `v1` per live secret — and
//! `v1a` is an ed25519 signature of the same content, verifiable with the endpoint's public
//! key alone (no shared secret on the receiver's side).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signer as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::SigningSecret;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    content
}

/// `v1,<base64 HMAC-SHA256>` for one secret.
pub fn v1(secret: &SigningSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(&signed_content(id, timestamp, body));
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// `v1a,<base64 ed25519 signature>`.
pub fn v1a(key: &ed25519_dalek::SigningKey, id: &str, timestamp: i64, body: &[u8]) -> String {
    let sig = key.sign(&signed_content(id, timestamp, body));
    format!("v1a,{}", STANDARD.encode(sig.to_bytes()))
}

/// The whole `webhook-signature` value: `v1` under every live secret (current first), then
/// `v1a`.
pub fn header(
    secrets: &[&SigningSecret],
    key: &ed25519_dalek::SigningKey,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut parts: Vec<String> = secrets.iter().map(|s| v1(s, id, timestamp, body)).collect();
    parts.push(v1a(key, id, timestamp, body));
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier as _;

    /// The example of the Standard Webhooks specification and its reference libraries.
    #[test]
    fn the_specification_example() {
        let secret =
            SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let sig = v1(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotation_signs_with_both_and_v1a_verifies_with_the_public_key() {
        let a = SigningSecret(vec![1; 32]);
        let b = SigningSecret(vec![2; 32]);
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let h = header(&[&a, &b], &key, "evt_1", 1_700_000_000, b"{}");
        let parts: Vec<&str> = h.split(' ').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], v1(&a, "evt_1", 1_700_000_000, b"{}"));
        assert_eq!(parts[1], v1(&b, "evt_1", 1_700_000_000, b"{}"));
        let raw = STANDARD
            .decode(parts[2].strip_prefix("v1a,").expect("v1a"))
            .expect("base64");
        let sig = ed25519_dalek::Signature::from_slice(&raw).expect("sig");
        assert!(
            key.verifying_key()
                .verify(b"evt_1.1700000000.{}", &sig)
                .is_ok()
        );
        assert!(
            key.verifying_key()
                .verify(b"evt_1.1700000001.{}", &sig)
                .is_err()
        );
    }
}
