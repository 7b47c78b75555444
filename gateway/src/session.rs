//! Clerk session tokens, verified offline and more strictly than Clerk's SDKs:
//! allowed RS* algorithms only (never `none` or HMAC, never an algorithm the key's JWK does
//! not name), `typ` `JWT` when present, `exp`/`nbf`/`iat` with a configurable skew, `iss`
//! and `azp` when configured, `sub` and `sid` required, machine and OAuth tokens refused.
//!
//! A verified token is cached by its SHA-256 until its own `exp`, so a dashboard polling
//! with the same token pays for one signature check.
//!
//! The organization is the token's (v1 `org_*` claims, or v2 `o` with `fea`/`per`/`fpm`);
//! when the token has none, `x-organization-id` is accepted only for an organization the
//! user belongs to, checked through Clerk's Backend API and cached for a bounded time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::caller::SessionUser;
use crate::jwks::Jwks;

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub algorithms: Vec<Algorithm>,
    pub clock_skew: Duration,
    pub issuer: Option<String>,
    pub authorized_parties: Vec<String>,
    pub max_token_bytes: usize,
    pub cache_capacity: u64,
}

/// Why a token was refused (bounded labels for metrics and logs; never shown to clients).
pub type Reason = &'static str;

/// The organization a token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOrg {
    pub id: String,
    pub role: Option<String>,
    pub permissions: Vec<String>,
}

/// What a verified token says, cached by token hash.
#[derive(Debug)]
pub struct VerifiedSession {
    pub user_id: String,
    pub session_id: String,
    pub exp: i64,
    /// The identity to inject when the token carries an organization, built once.
    pub user: Option<Arc<SessionUser>>,
}

#[derive(Debug, Deserialize)]
struct OrgV2 {
    id: Option<String>,
    rol: Option<String>,
    per: Option<String>,
    fpm: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    sid: Option<String>,
    azp: Option<String>,
    exp: i64,
    iat: i64,
    v: Option<u64>,
    org_id: Option<String>,
    org_role: Option<String>,
    org_permissions: Option<Vec<String>>,
    o: Option<OrgV2>,
    fea: Option<String>,
}

/// Clerk's role keys are `org:<role>`; v2 tokens carry the bare role.
fn role_key(role: &str) -> String {
    if role.starts_with("org:") {
        role.to_owned()
    } else {
        format!("org:{role}")
    }
}

/// v2 permissions: for the i-th organization feature in `fea` and the i-th number in
/// `fpm`, every set bit j (least significant first) grants `org:<feature>:<per[j]>`.
pub fn v2_permissions(fea: Option<&str>, per: Option<&str>, fpm: Option<&str>) -> Vec<String> {
    let split = |s: Option<&str>| -> Vec<String> {
        s.unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let org_features: Vec<String> = split(fea)
        .into_iter()
        .filter_map(|f| {
            let (scope, name) = f.split_once(':')?;
            (scope.contains('o') && !name.is_empty()).then(|| name.to_owned())
        })
        .collect();
    let per = split(per);
    let fpm = split(fpm);
    let mut out = Vec::new();
    for (feature, mask) in org_features.iter().zip(fpm.iter()) {
        let Ok(mask) = mask.parse::<u64>() else {
            continue;
        };
        for (j, name) in per.iter().enumerate().take(64) {
            if mask & (1 << j) != 0 {
                out.push(format!("org:{feature}:{name}"));
            }
        }
    }
    out
}

fn token_org(c: &Claims) -> Option<TokenOrg> {
    if c.v == Some(2) {
        let o = c.o.as_ref()?;
        let id = o.id.clone()?;
        Some(TokenOrg {
            id,
            role: o.rol.as_deref().map(role_key),
            permissions: v2_permissions(c.fea.as_deref(), o.per.as_deref(), o.fpm.as_deref()),
        })
    } else {
        Some(TokenOrg {
            id: c.org_id.clone()?,
            role: c.org_role.as_deref().map(role_key),
            permissions: c.org_permissions.clone().unwrap_or_default(),
        })
    }
}

/// Ids that travel in headers and URL paths: `[A-Za-z0-9_-]`, 1–128.
fn is_clerk_id(s: &str) -> bool {
    rl_contract::identity::is_valid_organization_id(s)
}

/// A value that travels in a comma-separated identity header.
pub fn is_header_safe(s: &str) -> bool {
    s.len() <= 256 && s.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

pub struct SessionVerifier {
    settings: SessionSettings,
    jwks: Arc<Jwks>,
    metrics: Arc<crate::metrics::Metrics>,
    cache: moka::future::Cache<[u8; 32], Arc<VerifiedSession>>,
}

struct UntilExp {
    skew: Duration,
}

impl moka::Expiry<[u8; 32], Arc<VerifiedSession>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<VerifiedSession>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let now = rl_contract::time_fmt::now_ms() / 1000;
        let left = (value.exp - now).max(0) as u64;
        Some(Duration::from_secs(left) + self.skew)
    }
}

impl SessionVerifier {
    pub fn new(
        settings: SessionSettings,
        jwks: Arc<Jwks>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(settings.cache_capacity)
            .expire_after(UntilExp {
                skew: settings.clock_skew,
            })
            .build();
        Self {
            settings,
            jwks,
            metrics,
            cache,
        }
    }

    pub fn jwks(&self) -> &Arc<Jwks> {
        &self.jwks
    }

    /// Verify a session token (cache first). `now` is Unix seconds.
    pub async fn verify(&self, token: &str, now: i64) -> Result<Arc<VerifiedSession>, Reason> {
        if token.len() > self.settings.max_token_bytes {
            return Err("oversized");
        }
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let skew = self.settings.clock_skew.as_secs() as i64;
        let hit = self.cache.get(&hash).await;
        if hit.is_some() {
            self.metrics.hot.session_memory_hit.inc();
        } else {
            self.metrics.hot.session_memory_miss.inc();
        }
        if let Some(hit) = hit {
            return if now <= hit.exp + skew {
                Ok(hit)
            } else {
                Err("expired")
            };
        }
        let verified = Arc::new(self.verify_signature_and_claims(token, now).await?);
        self.cache.insert(hash, verified.clone()).await;
        Ok(verified)
    }

    /// Verify without the verified-token cache (what a cache miss costs).
    #[doc(hidden)]
    pub async fn verify_uncached(&self, token: &str, now: i64) -> Result<VerifiedSession, Reason> {
        self.verify_signature_and_claims(token, now).await
    }

    async fn verify_signature_and_claims(
        &self,
        token: &str,
        now: i64,
    ) -> Result<VerifiedSession, Reason> {
        let header = decode_header(token).map_err(|_| "malformed")?;
        if !self.settings.algorithms.contains(&header.alg) {
            return Err("algorithm");
        }
        if header.typ.as_deref().is_some_and(|t| t != "JWT") {
            return Err("not_a_session_token");
        }
        let key = self
            .jwks
            .key(header.kid.as_deref())
            .await
            .ok_or("unknown_key")?;
        if key.alg.is_some_and(|a| a != header.alg) {
            return Err("algorithm_key_mismatch");
        }
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = self.settings.clock_skew.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        v.validate_aud = false;
        v.set_required_spec_claims(&["exp", "iat", "sub"]);
        if let Some(iss) = &self.settings.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".to_owned());
        }
        let data = decode::<Claims>(token, &key.key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => "expired",
                ErrorKind::ImmatureSignature => "not_yet_valid",
                ErrorKind::InvalidIssuer => "issuer",
                ErrorKind::InvalidSignature => "signature",
                ErrorKind::MissingRequiredClaim(_) => "missing_claim",
                _ => "invalid",
            }
        })?;
        let c = data.claims;
        let skew = self.settings.clock_skew.as_secs() as i64;
        if c.iat > now + skew {
            return Err("issued_in_future");
        }
        if !self.settings.authorized_parties.is_empty()
            && !c
                .azp
                .as_ref()
                .is_some_and(|azp| self.settings.authorized_parties.contains(azp))
        {
            return Err("authorized_party");
        }
        if c.sub.starts_with("mch_") || c.sub.starts_with("oat_") || !is_clerk_id(&c.sub) {
            return Err("not_a_user");
        }
        let session_id = c
            .sid
            .clone()
            .filter(|s| is_clerk_id(s))
            .ok_or("not_a_session_token")?;
        let user = match token_org(&c) {
            Some(org) if is_clerk_id(&org.id) => Some(Arc::new(SessionUser {
                organization_id: org.id,
                user_id: c.sub.clone(),
                session_id: Some(session_id.clone()),
                role: org.role.filter(|r| is_header_safe(r)),
                permissions: org
                    .permissions
                    .into_iter()
                    .filter(|p| is_header_safe(p))
                    .collect(),
            })),
            Some(_) => return Err("bad_organization"),
            None => None,
        };
        Ok(VerifiedSession {
            user_id: c.sub,
            session_id,
            exp: c.exp,
            user,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_permissions_match_the_documented_example() {
        assert_eq!(
            v2_permissions(
                Some("o:dashboard,o:teams"),
                Some("manage,read"),
                Some("3,2")
            ),
            vec![
                "org:dashboard:manage",
                "org:dashboard:read",
                "org:teams:read"
            ]
        );
    }

    #[test]
    fn v2_permissions_skip_user_features_and_garbage() {
        assert_eq!(
            v2_permissions(Some("u:billing,o:api_keys"), Some("manage"), Some("1")),
            vec!["org:api_keys:manage"]
        );
        assert!(v2_permissions(None, Some("manage"), Some("1")).is_empty());
        assert!(v2_permissions(Some("o:x"), Some("manage"), Some("zz")).is_empty());
        assert!(v2_permissions(Some("o:x"), None, Some("1")).is_empty());
    }

    #[test]
    fn roles_are_clerk_role_keys() {
        assert_eq!(role_key("admin"), "org:admin");
        assert_eq!(role_key("org:member"), "org:member");
    }
}
