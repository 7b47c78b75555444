//! One delivery attempt over HTTP: sign the stored body (Standard Webhooks), send it to an
//! address the SSRF policy allows, never follow a redirect, and classify what happened.

use std::time::{Duration, Instant};

use crate::secret::{self, EncryptionKey, SigningSecret};
use crate::signature;
use crate::ssrf::{self, Policy};
use crate::store::EndpointRecord;

/// The most of a response body an attempt keeps.
pub const MAX_RESPONSE_BODY: usize = 1024;

pub const USER_AGENT: &str = concat!("ReconLayer-Webhooks/", env!("CARGO_PKG_VERSION"));

/// What one attempt observed.
#[derive(Debug, Clone)]
pub struct Sent {
    pub http_status: Option<u16>,
    /// `None` on success; else `http`, `timeout`, `connect`, `dns`, `blocked_destination`
    /// (or `internal` when the service could not sign).
    pub error_class: Option<&'static str>,
    pub response_body: Option<String>,
    pub retry_after: Option<Duration>,
    pub duration: Duration,
}

impl Sent {
    pub fn succeeded(&self) -> bool {
        self.error_class.is_none()
    }

    fn failed(class: &'static str, started: Instant) -> Self {
        Self {
            http_status: None,
            error_class: Some(class),
            response_body: None,
            retry_after: None,
            duration: started.elapsed(),
        }
    }
}

#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: Policy,
    timeout: Duration,
    key: EncryptionKey,
}

impl Sender {
    pub fn new(policy: Policy, timeout: Duration, key: EncryptionKey) -> Self {
        let client = reqwest::Client::builder()
            // Every name goes through the filtering resolver; the addresses it returns are
            // the only ones the connector may use (no second lookup, no rebinding).
            .dns_resolver(ssrf::resolver(policy))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the name itself, outside the filter.
            .no_proxy()
            // One request is one attempt: the client must not resend on its own.
            .retry(reqwest::retry::never())
            .http1_only()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(8)
            .user_agent(USER_AGENT)
            .build()
            .unwrap_or_else(|e| {
                // Only a TLS backend failing to initialize can make this fail.
                tracing::error!(error = %e, "could not build the webhook HTTP client");
                reqwest::Client::new()
            });
        Self {
            client,
            policy,
            timeout,
            key,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Send `payload` (the stored body) to `endpoint` as message `message_id`.
    pub async fn send(&self, endpoint: &EndpointRecord, message_id: &str, payload: &str) -> Sent {
        let started = Instant::now();
        let now = rl_contract::time_fmt::now_ms();
        let Ok(url) = url::Url::parse(&endpoint.url) else {
            return Sent::failed("blocked_destination", started);
        };
        // Literal addresses never reach the resolver: judge them here (and the scheme, in
        // case the policy changed since the endpoint was saved).
        if let Err(refused) = ssrf::check_url(&url, &self.policy) {
            tracing::info!(endpoint_id = %endpoint.id, reason = %refused.message, "delivery refused: blocked destination");
            return Sent::failed("blocked_destination", started);
        }
        let signature = match self.signature_header(endpoint, message_id, now / 1000, payload) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(endpoint_id = %endpoint.id, error = %e, "cannot sign: endpoint key material does not decrypt");
                return Sent::failed("internal", started);
            }
        };
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(signature::ID_HEADER, message_id)
            .header(signature::TIMESTAMP_HEADER, (now / 1000).to_string())
            .header(signature::SIGNATURE_HEADER, signature)
            .body(payload.to_owned());
        let attempt = async {
            let mut response = request.send().await?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| crate::schedule::parse_retry_after(v, now));
            let mut body = Vec::new();
            while body.len() < MAX_RESPONSE_BODY {
                match response.chunk().await? {
                    Some(chunk) => body.extend_from_slice(&chunk),
                    None => break,
                }
            }
            Ok::<_, reqwest::Error>((status, retry_after, body))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Err(_) => Sent::failed("timeout", started),
            Ok(Err(e)) => Sent::failed(classify(&e), started),
            Ok(Ok((status, retry_after, body))) => Sent {
                http_status: Some(status),
                error_class: (!(200..300).contains(&status)).then_some("http"),
                response_body: Some(truncate(&body)),
                retry_after,
                duration: started.elapsed(),
            },
        }
    }

    fn signature_header(
        &self,
        endpoint: &EndpointRecord,
        id: &str,
        timestamp: i64,
        payload: &str,
    ) -> Result<String, secret::SecretError> {
        let open_secret = |sealed: &str| {
            self.key
                .open(sealed, &secret::context(&endpoint.id, "secret"))
                .map(SigningSecret)
        };
        let current = open_secret(&endpoint.secret_sealed)?;
        let previous = endpoint
            .live_previous_secret(rl_contract::time_fmt::now_ms())
            .map(open_secret)
            .transpose()?;
        let seed = self.key.open(
            &endpoint.signing_key_sealed,
            &secret::context(&endpoint.id, "signing_key"),
        )?;
        let key = secret::signing_key_from_seed(&seed)?;
        let mut secrets = vec![&current];
        if let Some(p) = &previous {
            secrets.push(p);
        }
        Ok(signature::header(
            &secrets,
            &key,
            id,
            timestamp,
            payload.as_bytes(),
        ))
    }
}

fn classify(e: &reqwest::Error) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<ssrf::Blocked>() {
            return "blocked_destination";
        }
        if s.is::<ssrf::NotResolved>() {
            return "dns";
        }
        source = s.source();
    }
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "http"
    }
}

fn truncate(body: &[u8]) -> String {
    let mut end = body.len().min(MAX_RESPONSE_BODY);
    let text = loop {
        match std::str::from_utf8(&body[..end]) {
            Ok(t) => break t.to_owned(),
            // Cut inside a multi-byte character: back off to its start.
            Err(e) if e.error_len().is_none() => end = e.valid_up_to(),
            Err(_) => break String::from_utf8_lossy(&body[..end]).into_owned(),
        }
    };
    // Lossy replacement can lengthen the text; keep the documented bound in bytes.
    let mut t = text;
    while t.len() > MAX_RESPONSE_BODY {
        t.pop();
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_bodies_are_bounded_on_a_character_boundary() {
        assert_eq!(truncate(b"ok"), "ok");
        let long = "é".repeat(1000);
        let t = truncate(long.as_bytes());
        assert!(t.len() <= MAX_RESPONSE_BODY && t.len() >= MAX_RESPONSE_BODY - 1);
        assert!(t.chars().all(|c| c == 'é'));
        assert!(truncate(&[0xff; 2000]).len() <= MAX_RESPONSE_BODY);
    }
}
