//! Endpoint key material: the `whsec_` signing secret (shown once, at creation or rotation),
//! the per-endpoint ed25519 key of the `v1a` signature, and their encryption at rest.
//!
//! The service must keep each secret to sign with it, so a hash will not do: every secret
//! and private key is sealed with AES-256-GCM under `WEBHOOKS_ENCRYPTION_KEY` before it is
//! written, with the endpoint id and the purpose as associated data, so a ciphertext copied
//! onto another row (or into another column) does not decrypt. Plaintexts live only in
//! memory, never in logs, metrics, the audit trail or a later response (`Debug` redacts).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

pub const SECRET_PREFIX: &str = "whsec_";
const SEALED_VERSION: &str = "v1:";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the operating system's random number generator failed")]
    Random,
    #[error("a stored secret does not decrypt under the configured key")]
    Decrypt,
    #[error("a stored secret is malformed")]
    Malformed,
}

/// The at-rest key. `Debug` never shows it.
#[derive(Clone)]
pub struct EncryptionKey(Aes256Gcm);

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

impl EncryptionKey {
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self(Aes256Gcm::new(&key.into()))
    }

    /// 32 bytes written as 64 hex characters.
    pub fn from_hex(text: &str) -> Result<Self, &'static str> {
        let bytes = hex::decode(text.trim()).map_err(|_| "must be 64 hex characters")?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "must be 32 bytes written as 64 hex characters")?;
        Ok(Self::from_bytes(key))
    }

    pub fn generate() -> Result<Self, SecretError> {
        Ok(Self::from_bytes(random()?))
    }

    /// `v1:<base64 of nonce ‖ ciphertext>`, bound to `context` (endpoint id and purpose).
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<String, SecretError> {
        let nonce: [u8; 12] = random()?;
        let sealed = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Malformed)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{SEALED_VERSION}{}", STANDARD.encode(out)))
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SecretError> {
        let raw = sealed
            .strip_prefix(SEALED_VERSION)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|r| r.len() > 12)
            .ok_or(SecretError::Malformed)?;
        let (nonce, ciphertext) = raw.split_at(12);
        self.0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Decrypt)
    }
}

pub fn random<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|_| SecretError::Random)?;
    Ok(buf)
}

/// A signing secret's raw bytes (the HMAC key). `Debug` redacts.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(pub Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

impl SigningSecret {
    pub fn generate(bytes: usize) -> Result<Self, SecretError> {
        let full: [u8; 64] = random()?;
        Ok(Self(full[..bytes.clamp(24, 64)].to_vec()))
    }

    /// `whsec_<base64>`, as shown to the user once and as receivers' libraries take it.
    pub fn display(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    pub fn parse(text: &str) -> Option<Self> {
        let b64 = text.strip_prefix(SECRET_PREFIX)?;
        STANDARD.decode(b64).ok().map(Self)
    }
}

/// The ed25519 key of an endpoint's `v1a` signature.
pub fn generate_signing_key() -> Result<ed25519_dalek::SigningKey, SecretError> {
    Ok(ed25519_dalek::SigningKey::from_bytes(&random::<32>()?))
}

pub fn signing_key_from_seed(seed: &[u8]) -> Result<ed25519_dalek::SigningKey, SecretError> {
    let seed: [u8; 32] = seed.try_into().map_err(|_| SecretError::Malformed)?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// The public key as the API shows it: `ed25519_pk_`-less, plain base64 of 32 bytes.
pub fn public_key_text(key: &ed25519_dalek::SigningKey) -> String {
    STANDARD.encode(key.verifying_key().to_bytes())
}

/// Associated data binding a sealed value to its endpoint and purpose.
pub fn context(endpoint_id: &str, purpose: &str) -> String {
    format!("{endpoint_id}/{purpose}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_context_and_under_their_key() {
        let key = EncryptionKey::from_bytes([1; 32]);
        let sealed = key.seal(b"top secret", "ep_1/secret").expect("seal");
        assert!(!sealed.contains("top secret"));
        assert_eq!(
            key.open(&sealed, "ep_1/secret").expect("open"),
            b"top secret"
        );
        assert!(key.open(&sealed, "ep_2/secret").is_err());
        assert!(key.open(&sealed, "ep_1/signing_key").is_err());
        let other = EncryptionKey::from_bytes([2; 32]);
        assert!(other.open(&sealed, "ep_1/secret").is_err());
        assert!(key.open("v1:AAAA", "ep_1/secret").is_err());
        // The same plaintext seals differently each time (random nonce).
        assert_ne!(
            sealed,
            key.seal(b"top secret", "ep_1/secret").expect("seal")
        );
    }

    #[test]
    fn secrets_have_the_documented_shape() {
        for n in [24, 32, 64] {
            let s = SigningSecret::generate(n).expect("random");
            assert_eq!(s.0.len(), n);
            let text = s.display();
            assert!(text.starts_with("whsec_"));
            assert_eq!(SigningSecret::parse(&text), Some(s.clone()));
            assert_eq!(format!("{s:?}"), "SigningSecret(<redacted>)");
        }
        assert!(EncryptionKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(EncryptionKey::from_hex(&"ab".repeat(31)).is_err());
        assert!(EncryptionKey::from_hex("zz").is_err());
    }
}
