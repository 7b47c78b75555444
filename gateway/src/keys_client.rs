//! The gateway's client for keys-service's internal API (hyper-util, pooled keep-alive).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
pub use rl_contract::wire::{KeyChanges, KeyRecord};
use rl_contract::wire::{KeyLookupRequest, KeyUsage, UsageReport};

const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("keys-service unreachable: {0}")]
    Unreachable(String),
    #[error("keys-service timed out")]
    Timeout,
    #[error("key lookup budget exhausted (flood protection)")]
    Throttled,
    #[error("this client's key lookup budget is exhausted (flood protection)")]
    ClientThrottled,
    #[error("keys-service answered {0}")]
    Status(StatusCode),
    #[error("keys-service answered something unreadable: {0}")]
    Malformed(String),
}

#[derive(Debug, Clone)]
pub struct KeysClient {
    client: Client<HttpConnector, Full<Bytes>>,
    authority: String,
    timeout: Duration,
    internal_token: Option<String>,
}

impl KeysClient {
    pub fn new(authority: String, timeout: Duration, internal_token: Option<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(connector);
        Self {
            client,
            authority,
            timeout,
            internal_token,
        }
    }

    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        request_id: Option<&str>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), KeysError> {
        let uri = format!("http://{}{}", self.authority, path_and_query);
        let mut builder = Request::builder().method(method).uri(uri);
        if body.is_some() {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &self.internal_token {
            builder = builder.header(rl_contract::signing::INTERNAL_TOKEN_HEADER, token);
        }
        if let Some(id) = request_id {
            builder = builder.header(rl_contract::identity::REQUEST_ID, id);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| KeysError::Malformed(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| KeysError::Unreachable(e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| KeysError::Unreachable(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| KeysError::Timeout)?
    }

    /// `Ok(None)`: no key has this hash.
    pub async fn lookup(
        &self,
        hash_hex: &str,
        request_id: Option<&str>,
    ) -> Result<Option<KeyRecord>, KeysError> {
        let body = serde_json::to_vec(&KeyLookupRequest {
            key_hash: hash_hex.to_owned(),
        })
        .map_err(|e| KeysError::Malformed(e.to_string()))?;
        let (status, bytes) = self
            .call(
                Method::POST,
                "/internal/v1/api-keys/lookup",
                Some(body),
                request_id,
                self.timeout,
            )
            .await?;
        match status {
            StatusCode::OK => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| KeysError::Malformed(e.to_string())),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(KeysError::Status(other)),
        }
    }

    pub async fn report_usage(&self, usage: &[(String, i64)]) -> Result<(), KeysError> {
        let report = UsageReport {
            usage: usage
                .iter()
                .map(|(id, at)| KeyUsage {
                    key_id: id.clone(),
                    last_used_at: *at,
                })
                .collect(),
        };
        let body = serde_json::to_vec(&report).map_err(|e| KeysError::Malformed(e.to_string()))?;
        let (status, _) = self
            .call(
                Method::POST,
                "/internal/v1/api-keys/usage",
                Some(body),
                None,
                self.timeout,
            )
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(KeysError::Status(status))
        }
    }

    /// Long-poll the change feed: returns at once if something changed after `after`.
    pub async fn changes(
        &self,
        epoch: Option<&str>,
        after: u64,
        wait: Duration,
    ) -> Result<KeyChanges, KeysError> {
        let mut q = format!(
            "/internal/v1/key-changes?after={after}&waitMs={}",
            wait.as_millis()
        );
        if let Some(e) = epoch {
            q.push_str("&epoch=");
            q.push_str(e);
        }
        let (status, bytes) = self
            .call(Method::GET, &q, None, None, wait + self.timeout)
            .await?;
        if status != StatusCode::OK {
            return Err(KeysError::Status(status));
        }
        serde_json::from_slice(&bytes).map_err(|e| KeysError::Malformed(e.to_string()))
    }
}
