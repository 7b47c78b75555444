//! The upstreams the gateway proxies to, resolved once at start and re-resolved in the
//! background (Kubernetes Service names), never on the request path.

use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::Duration;

use pingora::upstreams::peer::HttpPeer;

use crate::settings::Settings;

pub struct Upstream {
    pub name: &'static str,
    authority: String,
    addr: RwLock<Option<SocketAddr>>,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl Upstream {
    fn new(name: &'static str, authority: &str, s: &Settings) -> Self {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
            .ok()
            .and_then(|mut a| a.next());
        if addr.is_none() {
            tracing::warn!(
                upstream = name,
                authority,
                "cannot resolve upstream yet; will retry"
            );
        }
        Self {
            name,
            authority: authority.to_owned(),
            addr: RwLock::new(addr),
            connect_timeout: s.upstream_connect_timeout,
            read_timeout: s.upstream_read_timeout,
        }
    }

    pub async fn refresh(&self) {
        if let Ok(mut addrs) = tokio::net::lookup_host(&self.authority).await
            && let Some(a) = addrs.next()
        {
            *self.addr.write().unwrap_or_else(|p| p.into_inner()) = Some(a);
        }
    }

    /// A peer for one request, with bounded connect, read and write times.
    pub fn peer(&self) -> Option<Box<HttpPeer>> {
        let addr = (*self.addr.read().unwrap_or_else(|p| p.into_inner()))?;
        let mut peer = HttpPeer::new(addr, false, String::new());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.connect_timeout);
        o.total_connection_timeout = Some(self.connect_timeout);
        o.read_timeout = Some(self.read_timeout);
        o.write_timeout = Some(self.read_timeout);
        o.idle_timeout = Some(Duration::from_secs(60));
        Some(Box::new(peer))
    }
}

pub struct Upstreams {
    pub keys: Upstream,
    pub audit: Upstream,
    pub health: Upstream,
    pub webhooks: Upstream,
    pub default: Upstream,
}

impl Upstreams {
    pub fn new(s: &Settings) -> Self {
        Self {
            keys: Upstream::new("keys_service", &s.keys_service.authority, s),
            audit: Upstream::new("audit_service", &s.audit_service.authority, s),
            health: Upstream::new("health_service", &s.health_service.authority, s),
            webhooks: Upstream::new("webhooks_service", &s.webhooks_service.authority, s),
            default: Upstream::new("default", &s.default_upstream.authority, s),
        }
    }

    pub fn all(&self) -> [&Upstream; 5] {
        [
            &self.keys,
            &self.audit,
            &self.health,
            &self.webhooks,
            &self.default,
        ]
    }
}
