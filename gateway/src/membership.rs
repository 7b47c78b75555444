//! "Is this user a member of that organization?" — Clerk's Backend API
//! (`GET /v1/users/{user_id}/organization_memberships`), cached per user for a bounded time.
//! Used only when a session token carries no active organization and the client names one
//! in `x-organization-id`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::session::TokenOrg;

#[derive(Debug, Deserialize)]
struct Page {
    data: Vec<Membership>,
}

#[derive(Debug, Deserialize)]
struct Membership {
    role: Option<String>,
    #[serde(default)]
    permissions: Vec<String>,
    organization: Organization,
}

#[derive(Debug, Deserialize)]
struct Organization {
    id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("Clerk Backend API is not configured (CLERK_SECRET_KEY)")]
    NotConfigured,
    #[error("Clerk Backend API unavailable: {0}")]
    Unavailable(String),
}

pub struct Memberships {
    api_url: String,
    secret: Option<String>,
    client: reqwest::Client,
    cache: moka::future::Cache<String, Arc<Vec<TokenOrg>>>,
}

impl Memberships {
    pub fn new(
        api_url: String,
        secret: Option<String>,
        timeout: Duration,
        ttl: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = rl_contract::http_client::build(timeout, timeout)?;
        Ok(Self {
            api_url: api_url.trim_end_matches('/').to_owned(),
            secret,
            client,
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
        })
    }

    async fn fetch(&self, user_id: &str) -> Result<Arc<Vec<TokenOrg>>, MembershipError> {
        let secret = self.secret.as_ref().ok_or(MembershipError::NotConfigured)?;
        let url = format!(
            "{}/v1/users/{user_id}/organization_memberships?limit=500",
            self.api_url
        );
        let resp = self
            .client
            .get(url)
            .bearer_auth(secret)
            .send()
            .await
            .map_err(|e| MembershipError::Unavailable(e.to_string()))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Arc::new(Vec::new()));
        }
        if !resp.status().is_success() {
            return Err(MembershipError::Unavailable(format!(
                "status {}",
                resp.status()
            )));
        }
        let page: Page = resp
            .json()
            .await
            .map_err(|e| MembershipError::Unavailable(e.to_string()))?;
        Ok(Arc::new(
            page.data
                .into_iter()
                .map(|m| TokenOrg {
                    id: m.organization.id,
                    role: m.role,
                    permissions: m.permissions,
                })
                .collect(),
        ))
    }

    /// The user's membership of `org_id`, if any. `user_id` was validated as a Clerk id.
    pub async fn find(
        &self,
        user_id: &str,
        org_id: &str,
    ) -> Result<Option<TokenOrg>, Arc<MembershipError>> {
        let all = self
            .cache
            .try_get_with(user_id.to_owned(), self.fetch(user_id))
            .await?;
        Ok(all.iter().find(|m| m.id == org_id).cloned())
    }
}
