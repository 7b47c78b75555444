//! A fake Clerk for the black-box tests: a JWKS endpoint (whose key set, availability and
//! request count the test controls), a Backend API membership endpoint, and a minter of
//! session tokens signed with the fixture keys.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::LocalServer;

pub const ISSUER: &str = "https://clerk.test.example";
pub const SECRET: &str = "sk_test_fake_secret";

pub fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

pub fn jwk(name: &str) -> Value {
    serde_json::from_str(&fixture(&format!("{name}.jwk.json"))).unwrap()
}

/// user id → [(org id, role, permissions)]
pub type MembershipTable = HashMap<String, Vec<(String, String, Vec<String>)>>;

#[derive(Default)]
pub struct ClerkState {
    pub keys: Mutex<Vec<Value>>,
    pub jwks_down: AtomicBool,
    pub jwks_requests: AtomicU64,
    pub membership_requests: AtomicU64,
    pub memberships: Mutex<MembershipTable>,
}

pub struct FakeClerk {
    pub state: Arc<ClerkState>,
    pub server: LocalServer,
}

async fn jwks(State(s): State<Arc<ClerkState>>) -> (StatusCode, Json<Value>) {
    s.jwks_requests.fetch_add(1, Ordering::SeqCst);
    if s.jwks_down.load(Ordering::SeqCst) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"errors": []})),
        );
    }
    let keys = s.keys.lock().unwrap().clone();
    (StatusCode::OK, Json(json!({ "keys": keys })))
}

async fn memberships(
    State(s): State<Arc<ClerkState>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    s.membership_requests.fetch_add(1, Ordering::SeqCst);
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {SECRET}"))
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"errors": [{"code": "authentication_invalid"}]})),
        );
    }
    let list = s
        .memberships
        .lock()
        .unwrap()
        .get(&user)
        .cloned()
        .unwrap_or_default();
    let data: Vec<Value> = list
        .into_iter()
        .map(|(org, role, perms)| {
            json!({
                "object": "organization_membership",
                "id": format!("orgmem_{org}"),
                "role": role,
                "permissions": perms,
                "organization": {"object": "organization", "id": org, "name": "Org", "slug": "org"},
            })
        })
        .collect();
    let total = data.len();
    (
        StatusCode::OK,
        Json(json!({"data": data, "total_count": total})),
    )
}

impl FakeClerk {
    pub async fn start() -> Self {
        let state = Arc::new(ClerkState::default());
        state.keys.lock().unwrap().push(jwk("clerk_a"));
        let router = Router::new()
            .route("/.well-known/jwks.json", get(jwks))
            .route(
                "/v1/users/{user}/organization_memberships",
                get(memberships),
            )
            .with_state(state.clone());
        Self {
            state,
            server: LocalServer::start(router).await,
        }
    }

    /// The gateway settings that point at this fake.
    pub fn gateway_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "CLERK_JWKS_URL".into(),
                format!("{}/.well-known/jwks.json", self.server.url()),
            ),
            ("CLERK_API_URL".into(), self.server.url()),
            ("CLERK_SECRET_KEY".into(), SECRET.into()),
            ("CLERK_ISSUER".into(), ISSUER.into()),
        ]
    }

    pub fn jwks_requests(&self) -> u64 {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }

    pub fn add_membership(&self, user: &str, org: &str, role: &str, perms: &[&str]) {
        self.state
            .memberships
            .lock()
            .unwrap()
            .entry(user.to_owned())
            .or_default()
            .push((
                org.to_owned(),
                role.to_owned(),
                perms.iter().map(|p| (*p).to_owned()).collect(),
            ));
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of a valid v1 session token in `org`.
pub fn v1_claims(user: &str, org: Option<&str>, role: &str, perms: &[&str]) -> Value {
    let now = now();
    let mut c = json!({
        "iss": ISSUER,
        "sub": user,
        "sid": "sess_2abc",
        "azp": "https://dashboard.example",
        "iat": now,
        "nbf": now - 1,
        "exp": now + 60,
    });
    if let Some(org) = org {
        c["org_id"] = json!(org);
        c["org_role"] = json!(role);
        c["org_permissions"] = json!(perms);
    }
    c
}

/// Sign `claims` with the fixture key `key` (clerk_a, clerk_b, attacker) as `kid`.
pub fn sign(key: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    header.typ = Some("JWT".into());
    sign_with(key, header, claims)
}

pub fn sign_with(key: &str, header: Header, claims: &Value) -> String {
    let pem = fixture(&format!("{key}.key.pem"));
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A well-signed token from the default key.
pub fn token(claims: &Value) -> String {
    sign("clerk_a", Some("kid_clerk_a"), claims)
}
