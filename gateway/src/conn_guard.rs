//! The client connection as the gateway sees it, before pingora does: a wrapper around
//! every accepted stream that watches each request head as it arrives.
//!
//! pingora (0.9) gives no hook before it has parsed a request head, and reads a head with a
//! per-read timeout only: a client trickling one byte every few seconds holds a connection
//! for ever (slowloris), heads up to 1 MiB are buffered, and a head it cannot parse gets an
//! empty `400` or a dropped connection. The guard closes those gaps at the stream level:
//!
//! - **deadline**: the whole head must arrive within `header_timeout`, counted from the
//!   connection's accept for its first request and from the first byte for later ones
//!   (idle keep-alive between requests is pingora's keepalive timeout); else `408`;
//! - **size**: a head larger than the limit is refused with `431` as soon as it is seen;
//! - **validity**: a complete head is parsed (httparse, as pingora does) and checked with
//!   [`request_rules::check_head`]; a refusal is written by the guard in the documented
//!   envelope and pingora sees a closed connection.
//!
//! After answering, the guard half-closes and drains what the client is still sending for a
//! short while (nginx's lingering close), so the client reads the answer instead of a reset.
//!
//! The guard knows where heads start from the proxy: `request_filter` marks a request in
//! progress (the head was accepted) and `logging` marks it finished, through
//! [`ConnPhase`], which `request_filter` finds by downcasting the session's stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use http::HeaderValue;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use rl_contract::ErrorBody;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::path::MAX_TARGET_LEN;
use crate::request_rules::{self, HeadLimits, Refusal};

/// httparse's header array; `GATEWAY_MAX_REQUEST_HEADERS` is capped below it.
pub const MAX_PARSED_HEADERS: usize = 256;
/// After an answer, read and discard at most this much, for at most `LINGER`.
const LINGER_BYTES: usize = 1024 * 1024;
const LINGER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct GuardSettings {
    pub header_timeout: Duration,
    pub head: HeadLimits,
}

/// Where the connection is between heads: shared by the guard and the proxy phases.
#[derive(Debug, Default)]
pub struct ConnPhase {
    in_request: AtomicBool,
    finished: AtomicU64,
    /// The guard checked the head pingora is about to hand to `request_filter`.
    head_checked: AtomicBool,
    /// The client's address as a header value, made once per connection.
    client_ip: OnceLock<Option<HeaderValue>>,
}

impl ConnPhase {
    /// pingora accepted a head: what follows is this request's body. Returns whether the
    /// guard already checked that head with `request_rules::check_head` (so the proxy need
    /// not check it twice).
    pub fn request_started(&self) -> bool {
        self.in_request.store(true, Ordering::Relaxed);
        self.head_checked.swap(false, Ordering::Relaxed)
    }

    /// The client's address as a header value: made by `make` for the connection's first
    /// request, then reused.
    pub fn client_ip_value(
        &self,
        make: impl FnOnce() -> Option<HeaderValue>,
    ) -> Option<HeaderValue> {
        self.client_ip.get_or_init(make).clone()
    }

    /// The request is answered: the next bytes start a new head.
    pub fn request_finished(&self) {
        self.in_request.store(false, Ordering::Relaxed);
        self.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// The connection phase of a session's stream, when it is a guarded one.
pub fn phase_of(stream: Option<&Stream>) -> Option<Arc<ConnPhase>> {
    stream?
        .as_any()
        .downcast_ref::<GuardedStream>()
        .map(|g| g.phase.clone())
}

enum State {
    /// Watching a head: bytes seen so far (empty while the head arrives in one read).
    Head,
    /// The head passed; pingora owns the stream until the request finishes.
    Passed,
    /// Writing a refusal, then lingering.
    Replying {
        bytes: Vec<u8>,
        written: usize,
    },
    Lingering {
        drained: usize,
    },
    Closed,
}

pub struct GuardedStream {
    inner: Stream,
    phase: Arc<ConnPhase>,
    settings: Arc<GuardSettings>,
    state: State,
    head: Vec<u8>,
    seen_finished: u64,
    /// When the head being read must be complete (`None` between requests: idle keep-alive
    /// is pingora's keepalive timeout).
    head_deadline: Option<Instant>,
    /// The timer that wakes the connection at `head_deadline` (or at the end of lingering).
    /// Armed only when a read would block: a head that arrives in one read — nearly every
    /// head — never touches tokio's timer wheel.
    timer: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl GuardedStream {
    pub fn new(inner: Stream, settings: Arc<GuardSettings>) -> Self {
        // The first head's deadline runs from the accept: a connection that sends nothing
        // is closed as surely as one that sends slowly.
        let head_deadline = Some(Instant::now() + settings.header_timeout);
        Self {
            inner,
            phase: Arc::new(ConnPhase::default()),
            settings,
            state: State::Head,
            head: Vec::new(),
            seen_finished: 0,
            head_deadline,
            timer: None,
        }
    }

    fn max_block(&self) -> usize {
        self.settings.head.max_header_bytes + MAX_TARGET_LEN + 1024
    }

    fn refuse(&mut self, refusal: &Refusal) {
        self.state = State::Replying {
            bytes: reply_bytes(refusal),
            written: 0,
        };
        self.head = Vec::new();
        self.head_deadline = None;
        self.timer = Some(Box::pin(tokio::time::sleep(LINGER)));
    }

    /// New bytes of a head arrived: decide whether it is complete, and whether it passes.
    fn observe(&mut self, new: &[u8]) -> Result<(), Refusal> {
        let scan_from = self.head.len().saturating_sub(3);
        let whole: &[u8] = if self.head.is_empty() {
            new
        } else {
            self.head.extend_from_slice(new);
            &self.head
        };
        // A head can only end at a blank line; parse only then (bounded work per head).
        let tail = &whole[scan_from.min(whole.len())..];
        if !ends_head(tail) {
            if whole.len() > self.max_block() {
                return Err(Refusal::too_large(format!(
                    "Request header fields are too large (at most {} bytes).",
                    self.settings.head.max_header_bytes
                )));
            }
            if self.head.is_empty() {
                self.head.extend_from_slice(new);
            }
            return Ok(());
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_PARSED_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let outcome = match req.parse(whole) {
            Ok(httparse::Status::Complete(_)) => request_rules::check_head(
                req.method.unwrap_or("").as_bytes(),
                req.version == Some(1),
                req.headers.iter().map(|h| (h.name.as_bytes(), h.value)),
                &self.settings.head,
            ),
            // A blank line inside a value cannot be; anything else incomplete is malformed.
            Ok(httparse::Status::Partial) => Err(Refusal::malformed()),
            Err(httparse::Error::TooManyHeaders) => Err(Refusal::too_large(format!(
                "Too many request header fields (at most {}).",
                self.settings.head.max_headers
            ))),
            Err(_) => Err(Refusal::malformed()),
        };
        outcome?;
        self.phase.head_checked.store(true, Ordering::Relaxed);
        self.head = Vec::new();
        self.state = State::Passed;
        self.head_deadline = None;
        self.timer = None;
        Ok(())
    }

    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            match &mut self.state {
                State::Replying { bytes, written } => {
                    while *written < bytes.len() {
                        match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                                self.state = State::Closed;
                                return Poll::Ready(Ok(()));
                            }
                            Poll::Ready(Ok(n)) => *written += n,
                            Poll::Pending => return self.poll_deadline_or_pending(cx),
                        }
                    }
                    match Pin::new(&mut self.inner).poll_flush(cx) {
                        Poll::Pending => return self.poll_deadline_or_pending(cx),
                        Poll::Ready(_) => {}
                    }
                    // Half-close: the client sees the end of the answer.
                    let _ = Pin::new(&mut self.inner).poll_shutdown(cx);
                    self.state = State::Lingering { drained: 0 };
                }
                State::Lingering { drained } => {
                    let mut scratch = [0u8; 8192];
                    let mut rb = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                        Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                            *drained += rb.filled().len();
                            if *drained > LINGER_BYTES {
                                self.state = State::Closed;
                            }
                        }
                        Poll::Ready(_) => self.state = State::Closed,
                        Poll::Pending => return self.poll_deadline_or_pending(cx),
                    }
                }
                // End of stream for pingora: it drops the connection.
                _ => return Poll::Ready(Ok(())),
            }
        }
    }

    fn poll_deadline_or_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let expired = self
            .timer
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready());
        if expired {
            self.state = State::Closed;
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

/// Whether `bytes` hold the blank line that ends a head (`\n\n` or `\n\r\n`). Looks only
/// at the line feeds (memchr), a handful per head, not at every byte twice.
fn ends_head(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).any(|i| match bytes.get(i + 1) {
        Some(b'\n') => true,
        Some(b'\r') => bytes.get(i + 2) == Some(&b'\n'),
        _ => false,
    })
}

/// A complete HTTP/1.1 response in the documented envelope; the connection closes after it.
fn reply_bytes(refusal: &Refusal) -> Vec<u8> {
    let body = ErrorBody::new(refusal.code, refusal.message.clone()).to_json();
    let reason = http::StatusCode::from_u16(refusal.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let allow = if refusal.status == 405 {
        format!("allow: {}\r\n", request_rules::ALLOW_HEADER)
    } else {
        String::new()
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n{allow}x-request-id: {}\r\n\r\n",
        refusal.status,
        body.len(),
        uuid::Uuid::new_v4(),
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // A finished request means the next bytes start a new head.
        let finished = this.phase.finished.load(Ordering::Relaxed);
        if finished != this.seen_finished {
            this.seen_finished = finished;
            if matches!(this.state, State::Passed) {
                this.state = State::Head;
                this.head.clear();
            }
        }
        match this.state {
            State::Passed => return Pin::new(&mut this.inner).poll_read(cx, buf),
            State::Head if this.phase.in_request.load(Ordering::Relaxed) => {
                // A pipelined head pingora already had: nothing of it passes through here.
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            State::Head => {}
            _ => return this.poll_reply(cx),
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n == 0 {
                    return Poll::Ready(Ok(()));
                }
                // The first byte of a head starts its deadline.
                let now = Instant::now();
                let deadline = *this
                    .head_deadline
                    .get_or_insert(now + this.settings.header_timeout);
                let verdict = if now >= deadline {
                    Err(Refusal::timeout())
                } else {
                    this.observe(&buf.filled()[before..])
                };
                match verdict {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(refusal) => {
                        // Nothing of a refused head reaches pingora.
                        buf.set_filled(before);
                        tracing::debug!(
                            status = refusal.status,
                            reason = refusal.reason(),
                            "request head refused"
                        );
                        this.refuse(&refusal);
                        this.poll_reply(cx)
                    }
                }
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(deadline) = this.head_deadline else {
                    return Poll::Pending;
                };
                // While a head is read the timer, if any, is this head's: `observe` and
                // `refuse` drop or replace it whenever `head_deadline` changes.
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    if this.head.is_empty() && this.seen_finished == 0 {
                        // Nothing was ever sent: just close.
                        this.state = State::Closed;
                        return Poll::Ready(Ok(()));
                    }
                    this.refuse(&Refusal::timeout());
                    return this.poll_reply(cx);
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

// Peeking is only used to detect an h2c preface, which this gateway does not serve.
impl Peek for GuardedStream {}

/// A pingora application whose every connection is guarded before `inner` sees it.
pub struct GuardedApp<A> {
    inner: Arc<A>,
    settings: Arc<GuardSettings>,
}

impl<A> GuardedApp<A> {
    pub fn new(inner: A, settings: GuardSettings) -> Self {
        Self {
            inner: Arc::new(inner),
            settings: Arc::new(settings),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let guarded: Stream = Box::new(GuardedStream::new(session, self.settings.clone()));
        self.inner.process_new(guarded, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    #[test]
    fn a_head_ends_at_its_first_blank_line_whatever_the_line_endings() {
        for (bytes, ends) in [
            (&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], true),
            (b"GET / HTTP/1.1\nHost: a\n\n", true),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", true),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", false),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r", false),
            (b"\n\r", false),
            (b"\n", false),
            (b"", false),
            (b"\r\n\r\n", true),
        ] {
            assert_eq!(
                ends_head(bytes),
                ends,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    fn guard(client_side: DuplexStream, timeout: Duration) -> GuardedStream {
        GuardedStream::new(
            Box::new(client_side),
            Arc::new(GuardSettings {
                header_timeout: timeout,
                head: HeadLimits::default(),
            }),
        )
    }

    async fn read_all(g: &mut GuardedStream) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = g.read_to_end(&mut out).await;
        out
    }

    #[tokio::test]
    async fn a_good_head_passes_through_unchanged() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut g = guard(server, Duration::from_secs(5));
        let req = b"GET /v1/x HTTP/1.1\r\nHost: a\r\n\r\n";
        client.write_all(req).await.expect("write");
        let mut buf = vec![0u8; 1024];
        let n = g.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], req);
    }

    #[tokio::test]
    async fn a_head_split_over_reads_passes() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut g = guard(server, Duration::from_secs(5));
        let mut got = Vec::new();
        for part in [&b"GET /v1/x HT"[..], b"TP/1.1\r\nHost: a\r\n", b"\r\n"] {
            client.write_all(part).await.expect("write");
            let mut buf = vec![0u8; 1024];
            let n = g.read(&mut buf).await.expect("read");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"GET /v1/x HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[tokio::test]
    async fn refusals_are_answered_in_the_envelope() {
        for (req, status) in [
            (&b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n"[..], "405"),
            (b"GET / HTTP/1.1\r\n\r\n", "400"),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nx_forwarded_for: 1\r\n\r\n",
                "400",
            ),
            (b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n", "400"),
            (b"GET / HTTP/9.9\r\nHost: a\r\n\r\n", "400"),
        ] {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let mut g = guard(server, Duration::from_secs(5));
            client.write_all(req).await.expect("write");
            drop(AsyncWriteExt::shutdown(&mut client).await);
            // pingora sees at most a part of the head, then the end of the stream.
            let passed = read_all(&mut g).await;
            assert!(!passed.windows(4).any(|w| w == b"\r\n\r\n"));
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.expect("answer");
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "{answer}"
            );
            assert!(answer.contains("\"error\":"), "{answer}");
        }
    }

    #[tokio::test]
    async fn an_oversized_head_is_431() {
        let (mut client, server) = tokio::io::duplex(1024 * 1024);
        let mut g = guard(server, Duration::from_secs(5));
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nx-big: {}\r\n",
            "a".repeat(200 * 1024)
        );
        client.write_all(big.as_bytes()).await.expect("write");
        drop(AsyncWriteExt::shutdown(&mut client).await);
        let passed = read_all(&mut g).await;
        assert!(passed.len() < 64 * 1024, "{}", passed.len());
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("answer");
        assert!(answer.starts_with(b"HTTP/1.1 431 "));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_head_gets_408_at_the_deadline() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut g = guard(server, Duration::from_secs(10));
        let reader = tokio::spawn(async move { read_all(&mut g).await });
        for b in b"GET / HTTP/1.1\r\nHost: a\r\nx-a: b".iter() {
            if client.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let passed = reader.await.expect("reader");
        // Some bytes were handed on before the deadline; then the stream ended.
        assert!(passed.len() < 40);
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 408 "),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
}
