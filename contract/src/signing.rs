//! Signed identity: the gateway signs what it injects, services verify it, so a request
//! that reaches a service without passing the gateway carries no identity anyone trusts.
//!
//! The signature is HMAC-SHA256 over
//!
//! ```text
//! v1\n<unix seconds>\n<METHOD>\n<path?query as forwarded>\n<name>:<value>\n… (every
//! identity header of contract::identity::OWNED_HEADERS, in that order; absent = empty)
//! ```
//!
//! sent as `x-reconlayer-identity-timestamp` and `x-reconlayer-identity-signature: v1=<hex>`.
//! Binding method and target means a captured identity cannot be replayed onto another
//! request; the timestamp bounds replays of the same one to `MAX_AGE`. Two secrets are
//! accepted (current and previous), so the secret can be rotated without downtime.
//!
//! Internal endpoints (`/internal/*`) take `x-reconlayer-internal-token`, an HMAC of a fixed
//! label under the same secret, so only holders of the secret reach them.

use std::time::Duration;

use hmac::{Hmac, Mac};
use http::{HeaderMap, Method};
use sha2::Sha256;

#[cfg(feature = "service")]
use crate::error::{ErrorCode, ErrorResponse, messages};
#[cfg(feature = "service")]
use crate::identity::Identity;
use crate::identity::OWNED_HEADERS;
use crate::settings::{self, SettingsError};

pub const TIMESTAMP_HEADER: &str = "x-reconlayer-identity-timestamp";
pub const SIGNATURE_HEADER: &str = "x-reconlayer-identity-signature";
pub const INTERNAL_TOKEN_HEADER: &str = "x-reconlayer-internal-token";
pub const MAX_AGE: Duration = Duration::from_secs(60);

pub const SECRET: &str = "IDENTITY_SIGNING_SECRET";
pub const PREVIOUS_SECRET: &str = "IDENTITY_SIGNING_SECRET_PREVIOUS";
pub const VERIFICATION: &str = "IDENTITY_VERIFICATION";
const MIN_SECRET_LEN: usize = 32;
const INTERNAL_LABEL: &[u8] = b"reconlayer-internal-v1";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// The signing secrets, loaded once from the environment. Each is kept as an HMAC already
/// keyed with it, cloned per use: the key schedule is paid once, not per request.
#[derive(Clone)]
pub struct Secrets {
    current: Option<HmacSha256>,
    previous: Option<HmacSha256>,
    /// Explicit local-development opt-out: unsigned identity is accepted.
    pub verification_off: bool,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("current", &self.current.as_ref().map(|_| "<redacted>"))
            .field("previous", &self.previous.as_ref().map(|_| "<redacted>"))
            .field("verification_off", &self.verification_off)
            .finish()
    }
}

impl Secrets {
    pub fn new(current: Option<&str>, previous: Option<&str>, verification_off: bool) -> Self {
        Self {
            current: current.map(|s| mac(s.as_bytes())),
            previous: previous.map(|s| mac(s.as_bytes())),
            verification_off,
        }
    }

    /// Read `IDENTITY_SIGNING_SECRET[_PREVIOUS]` and `IDENTITY_VERIFICATION`.
    /// `require` (the services): without a secret, refuse to start unless verification is
    /// explicitly `off`.
    pub fn from_env(require: bool) -> Result<Self, SettingsError> {
        let check = |name: &'static str| -> Result<Option<String>, SettingsError> {
            match settings::raw(name) {
                Some(s) if s.len() < MIN_SECRET_LEN => Err(SettingsError::new(
                    name,
                    "<redacted>",
                    format!("must be at least {MIN_SECRET_LEN} characters"),
                )),
                other => Ok(other),
            }
        };
        let current = check(SECRET)?;
        let previous = check(PREVIOUS_SECRET)?;
        let verification_off = match settings::raw(VERIFICATION).as_deref() {
            None | Some("on") => false,
            Some("off") => true,
            Some(other) => {
                return Err(SettingsError::new(
                    VERIFICATION,
                    other,
                    "expected on or off",
                ));
            }
        };
        if require && current.is_none() && !verification_off {
            return Err(SettingsError::new(
                SECRET,
                "",
                "required: services refuse unsigned identity (set IDENTITY_VERIFICATION=off only for local development)",
            ));
        }
        if verification_off {
            tracing::warn!(
                "IDENTITY_VERIFICATION=off: identity headers are trusted unsigned. Local development only."
            );
        }
        Ok(Self::new(
            current.as_deref(),
            previous.as_deref(),
            verification_off,
        ))
    }

    pub fn can_sign(&self) -> bool {
        self.current.is_some()
    }

    fn accepted(&self) -> impl Iterator<Item = &HmacSha256> {
        self.current.iter().chain(self.previous.iter())
    }

    /// The signature header value for one request. Values must be what a header can carry
    /// as text (`verify` reads them with `HeaderValue::to_str`): anything else is refused
    /// here, so nothing is ever signed that could not be verified as sent.
    pub fn sign(
        &self,
        timestamp: i64,
        method: &str,
        target: &str,
        identity: &[(&str, &str)],
    ) -> Result<String, SignError> {
        let values = std::array::from_fn(|i| {
            identity
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(OWNED_HEADERS[i]))
                .map_or("", |(_, v)| *v)
        });
        self.sign_values(timestamp, method, target, &values)
    }

    /// [`Secrets::sign`] for the identity as one value per [`OWNED_HEADERS`] entry, in its
    /// order (`""` for a header not sent): what the gateway signs on every request, so the
    /// canonical form is written into one buffer and the signature into one string.
    pub fn sign_values(
        &self,
        timestamp: i64,
        method: &str,
        target: &str,
        values: &[&str; OWNED_HEADERS.len()],
    ) -> Result<String, SignError> {
        let text_ok = |v: &str| v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
        if !text_ok(method) || !text_ok(target) || !values.iter().all(|v| text_ok(v)) {
            return Err(SignError::Unsignable);
        }
        let mut m = self.current.clone().ok_or(SignError::NoSecret)?;
        m.update(&canonical(timestamp, method, target, values));
        let mut hex = [0u8; 64];
        hex::encode_to_slice(m.finalize().into_bytes(), &mut hex)
            .unwrap_or_else(|_| unreachable!("64 hex digits for 32 bytes"));
        let mut out = String::with_capacity(3 + hex.len());
        out.push_str("v1=");
        out.extend(hex.iter().map(|&b| char::from(b)));
        Ok(out)
    }

    /// The token internal endpoints accept.
    pub fn internal_token(&self) -> Option<String> {
        let mut m = self.current.clone()?;
        m.update(INTERNAL_LABEL);
        Some(hex::encode(m.finalize().into_bytes()))
    }

    pub fn verify_internal(&self, headers: &HeaderMap) -> bool {
        if self.verification_off {
            return true;
        }
        let Some(Ok(token)) = headers.get(INTERNAL_TOKEN_HEADER).map(|v| v.to_str()) else {
            return false;
        };
        let Ok(token) = hex::decode(token) else {
            return false;
        };
        self.accepted().any(|keyed| {
            let mut m = keyed.clone();
            m.update(INTERNAL_LABEL);
            m.verify_slice(&token).is_ok()
        })
    }

    /// Verify the identity headers of a request against its method and target.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        method: &Method,
        target: &str,
        now: i64,
    ) -> Result<(), &'static str> {
        if self.verification_off {
            return Ok(());
        }
        let single = |name: &str| -> Result<Option<&str>, &'static str> {
            let mut all = headers.get_all(name).iter();
            let first = all.next();
            if all.next().is_some() {
                return Err("duplicated");
            }
            first
                .map(|v| v.to_str().map_err(|_| "malformed"))
                .transpose()
        };
        let ts: i64 = single(TIMESTAMP_HEADER)?
            .ok_or("missing")?
            .parse()
            .map_err(|_| "malformed")?;
        if (now - ts).unsigned_abs() > MAX_AGE.as_secs() {
            return Err("stale");
        }
        let sig = single(SIGNATURE_HEADER)?
            .ok_or("missing")?
            .strip_prefix("v1=")
            .and_then(|h| hex::decode(h).ok())
            .ok_or("malformed")?;
        let mut values = [""; OWNED_HEADERS.len()];
        for (value, name) in values.iter_mut().zip(OWNED_HEADERS) {
            *value = single(name)?.unwrap_or("");
        }
        let message = canonical(ts, method.as_str(), target, &values);
        let ok = self.accepted().any(|keyed| {
            let mut m = keyed.clone();
            m.update(&message);
            m.verify_slice(&sig).is_ok()
        });
        if ok { Ok(()) } else { Err("forged") }
    }
}

/// `v1\n<timestamp>\n<method>\n<target>\n` then `<name>:<value>\n` for every owned header,
/// in [`OWNED_HEADERS`] order, `""` for one not sent.
fn canonical(
    timestamp: i64,
    method: &str,
    target: &str,
    values: &[&str; OWNED_HEADERS.len()],
) -> Vec<u8> {
    let mut ts = itoa::Buffer::new();
    let ts = ts.format(timestamp);
    let len = 6
        + ts.len()
        + method.len()
        + target.len()
        + OWNED_HEADERS
            .iter()
            .zip(values)
            .map(|(n, v)| n.len() + v.len() + 2)
            .sum::<usize>();
    let mut out = Vec::with_capacity(len);
    for part in [
        &b"v1\n"[..],
        ts.as_bytes(),
        b"\n",
        method.as_bytes(),
        b"\n",
        target.as_bytes(),
        b"\n",
    ] {
        out.extend_from_slice(part);
    }
    for (name, value) in OWNED_HEADERS.iter().zip(values) {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Why an identity was not signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("no identity-signing secret is configured")]
    NoSecret,
    #[error("an identity value is not header text")]
    Unsignable,
}

/// An identity the gateway injected *and signed* for this very request.
#[cfg(feature = "service")]
pub struct VerifiedIdentity(pub Identity);

#[cfg(feature = "service")]
impl<S> axum::extract::FromRequestParts<S> for VerifiedIdentity
where
    S: Send + Sync,
    std::sync::Arc<Secrets>: axum::extract::FromRef<S>,
{
    type Rejection = ErrorResponse;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let secrets = <std::sync::Arc<Secrets> as axum::extract::FromRef<S>>::from_ref(state);
        let target = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
        let now = crate::time_fmt::now_ms().div_euclid(1000);
        let unauthorized = || ErrorResponse::new(ErrorCode::Unauthorized, messages::MISSING_BEARER);
        if let Err(reason) = secrets.verify(&parts.headers, &parts.method, &target, now) {
            tracing::warn!(reason, "refused a request with unverified identity");
            return Err(unauthorized());
        }
        Identity::from_headers(&parts.headers)
            .map(Self)
            .ok_or_else(unauthorized)
    }
}

/// Internal endpoints: only holders of the signing secret.
#[cfg(feature = "service")]
pub struct Internal;

#[cfg(feature = "service")]
impl<S> axum::extract::FromRequestParts<S> for Internal
where
    S: Send + Sync,
    std::sync::Arc<Secrets>: axum::extract::FromRef<S>,
{
    type Rejection = ErrorResponse;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        if <std::sync::Arc<Secrets> as axum::extract::FromRef<S>>::from_ref(state)
            .verify_internal(&parts.headers)
        {
            Ok(Self)
        } else {
            Err(ErrorResponse::new(
                ErrorCode::Unauthorized,
                "This endpoint is internal.",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const SECRET_A: &str = "a-secret-of-at-least-thirty-two-characters";
    const SECRET_B: &str = "another-secret-of-thirty-two-characters!!";

    fn signed(secrets: &Secrets, ts: i64, method: &str, target: &str) -> HeaderMap {
        let identity = [
            ("x-organization-id", "org_a"),
            ("x-auth-type", "api_key"),
            ("x-api-key-id", "k1"),
        ];
        let mut h = HeaderMap::new();
        for (k, v) in identity {
            h.insert(k, HeaderValue::from_static(v));
        }
        h.insert(
            TIMESTAMP_HEADER,
            HeaderValue::from_str(&ts.to_string()).expect("ascii"),
        );
        let sig = secrets.sign(ts, method, target, &identity).expect("secret");
        h.insert(
            SIGNATURE_HEADER,
            HeaderValue::from_str(&sig).expect("ascii"),
        );
        h
    }

    #[test]
    fn a_signed_identity_verifies_and_any_change_breaks_it() {
        let s = Secrets::new(Some(SECRET_A), None, false);
        let h = signed(&s, 1000, "GET", "/v1/x?y=1");
        assert_eq!(s.verify(&h, &Method::GET, "/v1/x?y=1", 1010), Ok(()));
        assert_eq!(
            s.verify(&h, &Method::POST, "/v1/x?y=1", 1010),
            Err("forged")
        );
        assert_eq!(s.verify(&h, &Method::GET, "/v1/x?y=2", 1010), Err("forged"));
        assert_eq!(s.verify(&h, &Method::GET, "/v1/x?y=1", 1061), Err("stale"));
        let mut tampered = h.clone();
        tampered.insert("x-organization-id", HeaderValue::from_static("org_b"));
        assert_eq!(
            s.verify(&tampered, &Method::GET, "/v1/x?y=1", 1010),
            Err("forged")
        );
        let mut added = h.clone();
        added.insert("x-org-role", HeaderValue::from_static("org:admin"));
        assert_eq!(
            s.verify(&added, &Method::GET, "/v1/x?y=1", 1010),
            Err("forged")
        );
        let mut doubled = h.clone();
        doubled.append("x-organization-id", HeaderValue::from_static("org_a"));
        assert_eq!(
            s.verify(&doubled, &Method::GET, "/v1/x?y=1", 1010),
            Err("duplicated")
        );
        let mut unsigned = h.clone();
        unsigned.remove(SIGNATURE_HEADER);
        assert_eq!(
            s.verify(&unsigned, &Method::GET, "/v1/x?y=1", 1010),
            Err("missing")
        );
        let other = Secrets::new(Some(SECRET_B), None, false);
        assert_eq!(
            other.verify(&h, &Method::GET, "/v1/x?y=1", 1010),
            Err("forged")
        );
    }

    #[test]
    fn rotation_accepts_the_previous_secret() {
        let old = Secrets::new(Some(SECRET_A), None, false);
        let rotated = Secrets::new(Some(SECRET_B), Some(SECRET_A), false);
        let h = signed(&old, 1000, "GET", "/v1/x");
        assert_eq!(rotated.verify(&h, &Method::GET, "/v1/x", 1000), Ok(()));
        let mut internal = HeaderMap::new();
        internal.insert(
            INTERNAL_TOKEN_HEADER,
            HeaderValue::from_str(&old.internal_token().expect("secret")).expect("ascii"),
        );
        assert!(rotated.verify_internal(&internal));
        assert!(!Secrets::new(Some(SECRET_B), None, false).verify_internal(&internal));
        assert!(!rotated.verify_internal(&HeaderMap::new()));
    }

    #[test]
    fn verification_off_accepts_anything_and_says_so() {
        let off = Secrets::new(None, None, true);
        assert_eq!(off.verify(&HeaderMap::new(), &Method::GET, "/", 0), Ok(()));
        assert!(off.verify_internal(&HeaderMap::new()));
        assert!(!off.can_sign());
    }

    #[test]
    fn nothing_is_signed_that_could_not_be_verified_as_sent() {
        // Found by fuzzing: a value with bytes a header cannot carry as text was signed,
        // and `verify` (which reads header text) could never accept it.
        let secrets = Secrets::new(Some(&"k".repeat(32)), None, false);
        assert_eq!(
            secrets.sign(
                1,
                "GET",
                "/v1/x",
                &[(crate::identity::ORGANIZATION_ID, "org\u{fffd}")]
            ),
            Err(SignError::Unsignable)
        );
        assert_eq!(
            secrets.sign(
                1,
                "GET",
                "/v1/\n",
                &[(crate::identity::ORGANIZATION_ID, "org")]
            ),
            Err(SignError::Unsignable)
        );
        assert!(
            secrets
                .sign(
                    1,
                    "GET",
                    "/v1/x",
                    &[(crate::identity::ORGANIZATION_ID, "org")]
                )
                .is_ok()
        );
        assert_eq!(
            Secrets::new(None, None, false).sign(1, "GET", "/", &[]),
            Err(SignError::NoSecret)
        );
    }

    /// The canonical form is a wire format between versions (gateways and services roll
    /// separately): this signature was computed outside Rust, from the documented form
    /// (`v1`, timestamp, method, target, then `name:value` for every owned header).
    #[test]
    fn the_signature_of_a_known_identity_is_stable() {
        let secrets = Secrets::new(Some("golden-secret-0123456789abcdef-0123"), None, false);
        let identity = [
            (crate::identity::ORGANIZATION_ID, "org_golden"),
            (crate::identity::AUTH_TYPE, "api_key"),
            (
                crate::identity::API_KEY_ID,
                "7d9f0c2e-1111-4a4a-8b8b-000000000001",
            ),
            (
                crate::identity::API_KEY_SCOPES,
                "payment_intents:read,refunds:write",
            ),
        ];
        let expected = "v1=3355918e86041b003381bb7d8e2116944959a35210091020fefe7f1cabf7af70";
        let by_pairs = secrets
            .sign(
                1_767_225_600,
                "POST",
                "/v1/payment_intents?limit=5",
                &identity,
            )
            .expect("signed");
        assert_eq!(by_pairs, expected);
        // The same identity in `OWNED_HEADERS` order, as the gateway passes it.
        let values = [
            "org_golden",
            "api_key",
            "",
            "",
            "7d9f0c2e-1111-4a4a-8b8b-000000000001",
            "payment_intents:read,refunds:write",
            "",
            "",
        ];
        let by_values = secrets
            .sign_values(
                1_767_225_600,
                "POST",
                "/v1/payment_intents?limit=5",
                &values,
            )
            .expect("signed");
        assert_eq!(by_values, expected);
    }
}
