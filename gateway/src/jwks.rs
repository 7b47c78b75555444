//! Clerk's signing keys: a JWKS fetched with a timeout, cached, refreshed in the
//! background, or a PEM public key for networkless verification (`CLERK_JWT_KEY`).
//!
//! An unknown `kid` may trigger a refetch, but at most one per `min_refetch` interval and
//! one at a time: a flood of forged `kid`s costs at most one JWKS request per interval.
//! When the endpoint fails, the last good key set keeps serving.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// A verification key, and the one algorithm it may be used with when the JWK names it.
#[derive(Clone)]
pub struct VerifyingKey {
    pub key: Arc<DecodingKey>,
    pub alg: Option<Algorithm>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

pub enum KeySource {
    /// Fetch from a JWKS URL; `bearer` is sent for Clerk's Backend API `/v1/jwks`.
    Jwks { url: String, bearer: Option<String> },
    /// One PEM public key, for every `kid`.
    Pem(VerifyingKey),
    /// No Clerk configured: every session token is refused.
    None,
}

pub struct Jwks {
    source: KeySource,
    client: reqwest::Client,
    keys: RwLock<Arc<HashMap<String, VerifyingKey>>>,
    last_attempt: std::sync::Mutex<Option<Instant>>,
    fetch_lock: tokio::sync::Mutex<()>,
    min_refetch: Duration,
    metrics: Arc<crate::metrics::Metrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS request failed: {0}")]
    Request(String),
    #[error("JWKS endpoint answered {0}")]
    Status(u16),
    #[error("JWKS is not a usable key set: {0}")]
    Malformed(String),
}

fn key_alg(a: KeyAlgorithm) -> Option<Algorithm> {
    match a {
        KeyAlgorithm::RS256 => Some(Algorithm::RS256),
        KeyAlgorithm::RS384 => Some(Algorithm::RS384),
        KeyAlgorithm::RS512 => Some(Algorithm::RS512),
        _ => None,
    }
}

/// The RSA signing keys of a JWKS, by `kid`. Keys of other types, keys meant for
/// encryption, keys without `kid` and keys naming a non-RSA algorithm are ignored.
pub fn parse_jwks(body: &[u8]) -> Result<HashMap<String, VerifyingKey>, JwksError> {
    let set: JwkSet =
        serde_json::from_slice(body).map_err(|e| JwksError::Malformed(e.to_string()))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if !matches!(jwk.algorithm, AlgorithmParameters::RSA(_)) {
            continue;
        }
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => match key_alg(a) {
                Some(alg) => Some(alg),
                None => continue,
            },
        };
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            keys.insert(
                kid,
                VerifyingKey {
                    key: Arc::new(key),
                    alg,
                },
            );
        }
    }
    Ok(keys)
}

impl Jwks {
    pub fn new(
        source: KeySource,
        timeout: Duration,
        min_refetch: Duration,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let client = rl_contract::http_client::build(timeout, timeout)?;
        Ok(Self {
            source,
            client,
            keys: RwLock::new(Arc::new(HashMap::new())),
            last_attempt: std::sync::Mutex::new(None),
            fetch_lock: tokio::sync::Mutex::new(()),
            min_refetch,
            metrics,
        })
    }

    pub fn is_configured(&self) -> bool {
        !matches!(self.source, KeySource::None)
    }

    pub fn fetches_from_network(&self) -> bool {
        matches!(self.source, KeySource::Jwks { .. })
    }

    fn cached(&self, kid: &str) -> Option<VerifyingKey> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(kid)
            .cloned()
    }

    /// Fetch the key set now and replace the cached one (kept on failure).
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let KeySource::Jwks { url, bearer } = &self.source else {
            return Ok(0);
        };
        *self.last_attempt.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let result = async {
            let mut req = self.client.get(url);
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| JwksError::Request(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(JwksError::Status(resp.status().as_u16()));
            }
            let body = resp
                .bytes()
                .await
                .map_err(|e| JwksError::Request(e.to_string()))?;
            parse_jwks(&body)
        }
        .await;
        let label = if matches!(&result, Ok(k) if !k.is_empty()) {
            "ok"
        } else {
            "error"
        };
        self.metrics.jwks_fetches.with_label_values(&[label]).inc();
        match result {
            Ok(keys) if !keys.is_empty() => {
                let n = keys.len();
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
                Ok(n)
            }
            Ok(_) => Err(JwksError::Malformed("no usable RSA signing key".into())),
            Err(e) => Err(e),
        }
    }

    /// The key for `kid`, refetching the set at most once per interval when it is unknown.
    pub async fn key(&self, kid: Option<&str>) -> Option<VerifyingKey> {
        match &self.source {
            KeySource::None => None,
            KeySource::Pem(k) => Some(k.clone()),
            KeySource::Jwks { .. } => {
                let kid = kid?;
                if let Some(k) = self.cached(kid) {
                    return Some(k);
                }
                let _guard = self.fetch_lock.lock().await;
                // Someone else may have fetched while we waited.
                if let Some(k) = self.cached(kid) {
                    return Some(k);
                }
                let recently = self
                    .last_attempt
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_some_and(|t| t.elapsed() < self.min_refetch);
                if recently {
                    return None;
                }
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "JWKS refetch for an unknown kid failed");
                }
                self.cached(kid)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWK_A: &str = include_str!("../../tests/fixtures/clerk_a.jwk.json");

    #[test]
    fn only_rsa_signing_keys_with_a_kid_are_kept() {
        let a: serde_json::Value = serde_json::from_str(JWK_A).expect("fixture");
        let mut enc = a.clone();
        enc["kid"] = "enc".into();
        enc["use"] = "enc".into();
        let mut nokid = a.clone();
        nokid.as_object_mut().expect("object").remove("kid");
        let mut hs = a.clone();
        hs["kid"] = "hs".into();
        hs["alg"] = "HS256".into();
        let ec = serde_json::json!({"kty": "EC", "kid": "ec", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let set = serde_json::json!({"keys": [a, enc, nokid, hs, ec]});
        let keys = parse_jwks(set.to_string().as_bytes()).expect("parse");
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["kid_clerk_a"]);
        assert_eq!(keys["kid_clerk_a"].alg, Some(Algorithm::RS256));
        assert!(parse_jwks(b"{\"nope\":1}").is_err());
    }
}
