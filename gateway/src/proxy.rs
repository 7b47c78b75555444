//! The pingora `ProxyHttp` implementation. It stays short: the decisions are the plain
//! functions in `path`, `routes`, `credential`, `auth` and `identity`.
//!
//! - `request_filter` decides: request id, head rules (`request_rules`), canonical target,
//!   route, identity, policy. A refusal is written here and the request ends.
//! - `request_body_filter` bounds the body on public routes (size and total time).
//! - `upstream_peer` routes by route class.
//! - `upstream_request_filter` writes the canonical target and the identity headers.
//! - `fail_to_proxy` turns upstream failures into `502`/`504` in the envelope.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use rl_contract::ErrorBody;
use rl_contract::identity::REQUEST_ID;

use crate::GatewayState;
use crate::auth;
use crate::caller::Caller;
use crate::conn_guard::{self, ConnPhase};
use crate::error::GatewayError;
use crate::path::{self, Target};
use crate::request_id;
use crate::request_rules;
use crate::routes::{self, Route};

pub struct Gateway {
    pub state: Arc<GatewayState>,
}

pub struct RequestCtx {
    pub request_id: String,
    pub started: Instant,
    pub route: Route,
    pub target: Option<Target>,
    pub caller: Option<Caller>,
    pub refusal: Option<&'static str>,
    pub upstream: &'static str,
    pub upstream_started: Option<Instant>,
    /// The connection guard's view of this connection (heads vs. bodies).
    pub phase: Option<Arc<ConnPhase>>,
    /// Public routes: the body may be at most this large, and must be in by the deadline.
    pub body_limit: Option<u64>,
    pub body_deadline: Option<Instant>,
    pub body_seen: u64,
    /// The connection guard already applied the head rules to this request's head.
    pub head_checked: bool,
    /// `request_id` as a header value, made once for the upstream request and the response.
    request_id_value: Option<http::HeaderValue>,
}

impl RequestCtx {
    /// The request id as a header value (a shared buffer: each use is a reference count).
    fn request_id_value(&mut self) -> Result<http::HeaderValue> {
        if let Some(value) = &self.request_id_value {
            return Ok(value.clone());
        }
        let value = http::HeaderValue::from_str(&self.request_id)
            .or_err(InvalidHTTPHeader, "request id is not header text")?;
        self.request_id_value = Some(value.clone());
        Ok(value)
    }
}

/// A status code as a label without allocating (`0`: no response was written).
fn status_label(status: u16) -> &'static str {
    static LABELS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let labels = LABELS.get_or_init(|| (0..600).map(|s: u16| s.to_string()).collect());
    labels.get(usize::from(status)).map_or("0", String::as_str)
}

/// Write an error envelope as the whole response.
pub async fn respond(session: &mut Session, error: &GatewayError, request_id: &str) -> Result<()> {
    let code = error.code();
    let body = Bytes::from(ErrorBody::new(code, error.message()).to_json());
    let mut resp = ResponseHeader::build(code.status().as_u16(), Some(6))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header(REQUEST_ID, request_id)?;
    match code.status().as_u16() {
        401 => resp.insert_header("www-authenticate", "Bearer realm=\"reconlayer\"")?,
        405 if matches!(error, GatewayError::Refused(_)) => {
            resp.insert_header("allow", request_rules::ALLOW_HEADER)?;
        }
        429 | 503 => resp.insert_header("retry-after", "1")?,
        _ => {}
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

impl Gateway {
    /// Sign the injected identity for this method and target (see `contract::signing`).
    fn sign_identity(
        &self,
        req: &mut RequestHeader,
        target: &str,
        injected: &crate::identity::Injected<'_>,
    ) -> Result<()> {
        let ts = rl_contract::time_fmt::now_ms().div_euclid(1000);
        let values = std::array::from_fn(|i| injected[i].as_ref());
        let signature =
            match self
                .state
                .settings
                .secrets
                .sign_values(ts, req.method.as_str(), target, &values)
            {
                Ok(s) => s,
                // Unsigned: the services refuse it (logged at start).
                Err(rl_contract::signing::SignError::NoSecret) => return Ok(()),
                Err(e) => return Error::e_explain(InternalError, e.to_string()),
            };
        req.insert_header(rl_contract::signing::TIMESTAMP_HEADER, ts)?;
        req.insert_header(rl_contract::signing::SIGNATURE_HEADER, signature)?;
        Ok(())
    }

    /// Everything `request_filter` decides, as a plain result.
    async fn decide(&self, session: &Session, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
        // Framing (Content-Length vs Transfer-Encoding) is pingora's: with both, it drops
        // Content-Length, reads chunked, and closes the connection after (RFC 9112 §6.3).
        let req = session.req_header();
        let headers = &req.headers;
        let settings = &self.state.settings;
        // The guard checks each raw head as it arrives; a head it never saw as bytes
        // (pipelined behind another) gets the same rules here, on what pingora parsed.
        if !ctx.head_checked {
            request_rules::check_head(
                req.method.as_str().as_bytes(),
                req.version == http::Version::HTTP_11,
                headers
                    .iter()
                    .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
                &settings.guard.head,
            )
            .map_err(GatewayError::Refused)?;
        }
        let target = path::canonicalize_with(req.raw_path(), settings.allow_non_ascii_paths)
            .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
        ctx.route = routes::classify(&target.path);
        if ctx.route.is_public() {
            // No credential vouches for these clients: bound what they may send.
            let declared = headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > settings.public_max_body_bytes) {
                return Err(GatewayError::PayloadTooLarge);
            }
            ctx.body_limit = Some(settings.public_max_body_bytes);
            ctx.body_deadline = Some(Instant::now() + settings.body_read_timeout);
        }
        if ctx.route == Route::Docs {
            ctx.target = Some(target);
            return Ok(());
        }
        if ctx.route.is_public() {
            ctx.target = Some(target);
            return Ok(());
        }
        let now = rl_contract::time_fmt::now_ms();
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let caller =
            match auth::authenticate(&self.state, headers, now, &ctx.request_id, client_ip).await {
                Ok(c) => {
                    let hot = &self.state.metrics.hot;
                    match c {
                        Caller::ApiKey(_) => hot.auth_api_key_accepted.inc(),
                        Caller::Session(_) => hot.auth_session_accepted.inc(),
                    }
                    c
                }
                Err(e) => {
                    self.state
                        .metrics
                        .auth
                        .with_label_values(&[e.credential_kind(), "rejected", e.reason()])
                        .inc();
                    return Err(e);
                }
            };
        auth::authorize(
            &self.state.settings.policy,
            ctx.route,
            &req.method,
            &target.path,
            &caller,
        )?;
        if let Caller::ApiKey(key) = &caller {
            self.state.usage.record(&key.id, now);
        }
        ctx.target = Some(target);
        ctx.caller = Some(caller);
        Ok(())
    }
}

impl Gateway {
    /// The built-in document and explorer (`GET`/`HEAD` only).
    async fn serve_docs(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let path = ctx.target.as_ref().map_or("", |t| t.path.as_str());
        let method = session.req_header().method.clone();
        let dashboard = &self.state.dashboard;
        let in_dashboard = crate::routes::under(path, "/dashboard");
        let asset = if path == "/dashboard/config.json" {
            Some(crate::docs::Asset {
                content_type: "application/json",
                body: dashboard.config_json.clone(),
                html: false,
            })
        } else if in_dashboard {
            dashboard.asset(path)
        } else {
            crate::docs::asset(path)
        };
        let error = match (&asset, method.as_str()) {
            (None, _) => Some(GatewayError::NotFound),
            (Some(_), "GET" | "HEAD") => None,
            (Some(_), _) => Some(GatewayError::MethodNotAllowed),
        };
        if let Some(e) = error {
            ctx.refusal = Some(e.reason());
            return respond(session, &e, &ctx.request_id).await;
        }
        let Some(asset) = asset else {
            return Ok(());
        };
        let mut resp = ResponseHeader::build(200, Some(6))?;
        resp.insert_header("content-type", asset.content_type)?;
        resp.insert_header("content-length", asset.body.len().to_string())?;
        // The page changes with the binary: revalidate it; the document and explorer may
        // be cached briefly.
        let cache = if in_dashboard {
            "no-cache"
        } else {
            "public, max-age=300"
        };
        resp.insert_header("cache-control", cache)?;
        resp.insert_header("x-content-type-options", "nosniff")?;
        resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        if asset.html {
            let csp = if in_dashboard {
                dashboard.csp.as_str()
            } else {
                crate::docs::CSP
            };
            resp.insert_header("content-security-policy", csp)?;
            resp.insert_header("referrer-policy", "no-referrer")?;
            resp.insert_header("x-frame-options", "DENY")?;
        }
        let head = method == http::Method::HEAD;
        session.write_response_header(Box::new(resp), head).await?;
        if !head {
            session.write_response_body(Some(asset.body), true).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            request_id: String::new(),
            started: Instant::now(),
            route: Route::Unknown,
            target: None,
            caller: None,
            refusal: None,
            upstream: "",
            upstream_started: None,
            phase: None,
            body_limit: None,
            body_deadline: None,
            body_seen: 0,
            head_checked: false,
            request_id_value: None,
        }
    }

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {
        // pingora's default adds a (disabled) compression module, built for every request;
        // the gateway compresses nothing, so it adds no module at all.
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // The head is in: what follows on this connection is this request's body.
        ctx.phase = conn_guard::phase_of(session.stream());
        ctx.head_checked = ctx.phase.as_ref().is_some_and(|p| p.request_started());
        // pingora keeps idle client connections forever by default (pingora#447).
        session.set_keepalive(Some(self.state.settings.keepalive_timeout_seconds));
        // Each body read is bounded (pingora's default is 60 s).
        session.set_read_timeout(Some(self.state.settings.body_read_timeout));
        ctx.request_id = request_id::from_headers(&session.req_header().headers);
        match self.decide(session, ctx).await {
            Ok(()) if ctx.route == Route::Docs => {
                self.serve_docs(session, ctx).await?;
                Ok(true)
            }
            Ok(()) => Ok(false),
            Err(e) => {
                ctx.refusal = Some(e.reason());
                respond(session, &e, &ctx.request_id).await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let Some(limit) = ctx.body_limit else {
            return Ok(());
        };
        ctx.body_seen += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.body_seen > limit {
            return Error::e_explain(HTTPStatus(413), "public route body over the limit");
        }
        if !end_of_stream && ctx.body_deadline.is_some_and(|d| Instant::now() > d) {
            return Error::e_explain(HTTPStatus(408), "public route body too slow");
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let u = &self.state.upstreams;
        let upstream = match ctx.route {
            Route::Health => &u.health,
            Route::ApiKeys => &u.keys,
            Route::AuditEvents => &u.audit,
            Route::OutboundWebhooks => &u.webhooks,
            Route::Api | Route::Webhooks => &u.default,
            Route::Docs | Route::Unknown => {
                return Err(Error::explain(HTTPStatus(404), "route has no upstream"));
            }
        };
        ctx.upstream = upstream.name;
        upstream.peer().ok_or_else(|| {
            Error::explain(
                ConnectNoRoute,
                format!("{} is not resolvable", upstream.name),
            )
        })
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // The path authorized is the path proxied: write the canonical target back.
        let target = ctx
            .target
            .as_ref()
            .ok_or_else(|| Error::explain(InternalError, "no decided target"))?;
        let request_target = target.to_request_target();
        // Nearly every request arrives canonical: rebuilding the URI would change nothing.
        if upstream_request.raw_path() != request_target.as_bytes() {
            upstream_request.set_raw_path(request_target.as_bytes())?;
        }
        crate::identity::strip(upstream_request);
        let client_ip = || {
            session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| crate::identity::client_ip_value(a.ip()))
        };
        let client_ip = match &ctx.phase {
            Some(phase) => phase.client_ip_value(client_ip),
            None => client_ip(),
        };
        crate::identity::forwarded_for(upstream_request, client_ip)?;
        upstream_request.insert_header(REQUEST_ID, ctx.request_id_value()?)?;
        if let Some(caller) = &ctx.caller {
            let injected = crate::identity::inject(upstream_request, caller)?;
            self.sign_identity(upstream_request, &request_target, &injected)?;
        }
        ctx.upstream_started = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(t) = ctx.upstream_started {
            self.state
                .metrics
                .upstream_duration
                .with_label_values(&[ctx.upstream])
                .observe(t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        upstream_response.insert_header(REQUEST_ID, ctx.request_id_value()?)?;
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let error = match e.etype() {
            HTTPStatus(404) => Some(GatewayError::NotFound),
            HTTPStatus(400) => Some(GatewayError::BadRequest("Malformed request.".to_owned())),
            HTTPStatus(413) => Some(GatewayError::PayloadTooLarge),
            HTTPStatus(408) => Some(GatewayError::BodyTimeout),
            // pingora's own head checks (e.g. Connection nominations) that ours did not catch.
            InvalidHTTPHeader => Some(GatewayError::BadRequest("Malformed request.".to_owned())),
            ReadTimedout if e.esource() == &ErrorSource::Downstream => {
                Some(GatewayError::BodyTimeout)
            }
            _ if e.esource() == &ErrorSource::Downstream => None,
            ConnectTimedout | ReadTimedout | WriteTimedout => Some(GatewayError::GatewayTimeout),
            _ => Some(GatewayError::BadGateway),
        };
        let mut error_code = 0;
        if let Some(error) = error {
            error_code = error.code().status().as_u16();
            ctx.refusal = Some(error.reason());
            if session.response_written().is_none()
                && let Err(write_err) = respond(session, &error, &ctx.request_id).await
            {
                tracing::debug!(error = %write_err, "could not write the error response");
            }
        }
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        if let Some(phase) = &ctx.phase {
            phase.request_finished();
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let method = rl_contract::metrics::method_label(&session.req_header().method);
        let elapsed = ctx.started.elapsed();
        let m = &self.state.metrics;
        m.requests
            .with_label_values(&[ctx.route.label(), method, status_label(status)])
            .inc();
        m.request_duration
            .with_label_values(&[ctx.route.label()])
            .observe(elapsed.as_secs_f64());
        tracing::info!(
            request_id = %ctx.request_id,
            method,
            route = ctx.route.label(),
            status,
            credential = ctx.caller.as_ref().map_or("none", Caller::kind),
            refusal = ctx.refusal.unwrap_or(""),
            error = e.map(|e| e.etype().as_str()).unwrap_or(""),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    }
}
