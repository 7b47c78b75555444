//! Where webhooks may be delivered: a destination is resolved, **every** resolved address is
//! classified, and the connection is made only to an address that passed (the resolver the
//! HTTP client uses is [`FilteringResolver`], so no second lookup can rebind the name to an
//! internal address between check and connect). A URL whose host is an IP literal never
//! reaches a resolver, so [`check_url`] classifies those itself.
//!
//! Always refused: unspecified and "this network" (`0.0.0.0/8`, `::`), broadcast, multicast,
//! documentation, benchmarking and reserved ranges, cloud metadata (`169.254.169.254`,
//! `fd00:ec2::254`), and IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64,
//! 6to4, Teredo) whose IPv4 address is refused. Refused unless
//! `WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS=1` (local development and tests): loopback, private
//! (RFC 1918), CGNAT `100.64.0.0/10`, link-local, unique-local `fc00::/7`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Refused unless private destinations are allowed.
    Private(&'static str),
    /// Refused always.
    Forbidden(&'static str),
}

impl Refusal {
    pub fn class(self) -> &'static str {
        match self {
            Self::Private(c) | Self::Forbidden(c) => c,
        }
    }
}

fn v4_in(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn v6_in(ip: Ipv6Addr, net: Ipv6Addr, bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u128::MAX << (128 - bits)
    };
    u128::from(ip) & mask == u128::from(net) & mask
}

pub fn classify_v4(ip: Ipv4Addr) -> Option<Refusal> {
    use Refusal::{Forbidden, Private};
    const FORBIDDEN: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "unspecified"),
        ([169, 254, 169, 254], 32, "cloud_metadata"),
        ([192, 0, 0, 0], 24, "reserved"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "reserved"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([255, 255, 255, 255], 32, "broadcast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    const PRIVATE: &[([u8; 4], u32, &str)] = &[
        ([127, 0, 0, 0], 8, "loopback"),
        ([10, 0, 0, 0], 8, "private"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 168, 0, 0], 16, "private"),
        ([100, 64, 0, 0], 10, "cgnat"),
        ([169, 254, 0, 0], 16, "link_local"),
    ];
    if let Some((_, _, c)) = FORBIDDEN.iter().find(|(n, b, _)| v4_in(ip, *n, *b)) {
        return Some(Forbidden(c));
    }
    PRIVATE
        .iter()
        .find(|(n, b, _)| v4_in(ip, *n, *b))
        .map(|(_, _, c)| Private(c))
}

pub fn classify_v6(ip: Ipv6Addr) -> Option<Refusal> {
    use Refusal::{Forbidden, Private};
    let seg = ip.segments();
    let embedded = |hi: usize| {
        Ipv4Addr::new(
            (seg[hi] >> 8) as u8,
            seg[hi] as u8,
            (seg[hi + 1] >> 8) as u8,
            seg[hi + 1] as u8,
        )
    };
    if ip.is_unspecified() {
        return Some(Forbidden("unspecified"));
    }
    if ip.is_loopback() {
        return Some(Private("loopback"));
    }
    // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d): judge the IPv4 address.
    if seg[..5] == [0; 5] && (seg[5] == 0xffff || seg[5] == 0) {
        return classify_v4(embedded(6))
            .or(Some(Forbidden("ipv4_compatible")).filter(|_| seg[5] == 0));
    }
    let net = |s: &str| s.parse::<Ipv6Addr>().unwrap_or(Ipv6Addr::UNSPECIFIED);
    // NAT64 (64:ff9b::/96) carries an IPv4 address; judge it (and refuse the local-use range).
    if v6_in(ip, net("64:ff9b::"), 96) {
        return classify_v4(embedded(6));
    }
    if v6_in(ip, net("64:ff9b:1::"), 48) {
        return Some(Private("nat64_local"));
    }
    // 6to4 (2002::/16) embeds the IPv4 address in bits 16–48.
    if v6_in(ip, net("2002::"), 16) {
        return classify_v4(embedded(1)).or(Some(Forbidden("6to4")));
    }
    if ip == net("fd00:ec2::254") {
        return Some(Forbidden("cloud_metadata"));
    }
    const FORBIDDEN: &[(&str, u32, &str)] = &[
        ("100::", 64, "discard"),
        ("2001::", 32, "teredo"),
        ("2001::", 23, "reserved"),
        ("2001:db8::", 32, "documentation"),
        ("3fff::", 20, "documentation"),
        ("ff00::", 8, "multicast"),
        ("fec0::", 10, "site_local"),
    ];
    const PRIVATE: &[(&str, u32, &str)] =
        &[("fc00::", 7, "unique_local"), ("fe80::", 10, "link_local")];
    if let Some((_, _, c)) = FORBIDDEN.iter().find(|(n, b, _)| v6_in(ip, net(n), *b)) {
        return Some(Forbidden(c));
    }
    PRIVATE
        .iter()
        .find(|(n, b, _)| v6_in(ip, net(n), *b))
        .map(|(_, _, c)| Private(c))
}

pub fn classify(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// The delivery policy.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub allow_private: bool,
    pub require_https: bool,
}

impl Policy {
    /// `Some(class)` when `ip` may not be connected to.
    pub fn refuses(&self, ip: IpAddr) -> Option<&'static str> {
        match classify(ip)? {
            Refusal::Private(_) if self.allow_private => None,
            r => Some(r.class()),
        }
    }
}

/// A URL that cannot be an endpoint, and why (the API says exactly this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlRefusal {
    pub message: String,
    /// The address class, for a literal address that is refused.
    pub blocked: Option<&'static str>,
}

/// What can be decided from the URL alone: scheme, host, no credentials, and an IP-literal
/// host's address class. Hostnames are checked when resolved, at each delivery.
pub fn check_url(url: &url::Url, policy: &Policy) -> Result<(), UrlRefusal> {
    let refuse = |m: &str| UrlRefusal {
        message: m.to_owned(),
        blocked: None,
    };
    match url.scheme() {
        "https" => {}
        "http" if !policy.require_https => {}
        "http" => return Err(refuse("url must use https.")),
        _ => return Err(refuse("url must be an http or https URL.")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("url must not contain credentials."));
    }
    if url.fragment().is_some() {
        return Err(refuse("url must not contain a fragment."));
    }
    let ip = match url.host() {
        None => return Err(refuse("url must name a host.")),
        Some(url::Host::Domain(d)) => {
            if d.is_empty() {
                return Err(refuse("url must name a host."));
            }
            return Ok(());
        }
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
    };
    match policy.refuses(ip) {
        None => Ok(()),
        Some(class) => Err(UrlRefusal {
            message: format!(
                "url points to a forbidden destination: {ip} is a {} address. Webhooks are \
                 delivered only to public internet addresses.",
                class.replace('_', "-")
            ),
            blocked: Some(class),
        }),
    }
}

/// The marker error the resolver returns when every address of a name was refused; the
/// delivery code finds it in the error chain and records `blocked_destination`.
#[derive(Debug)]
pub struct Blocked {
    pub host: String,
    pub class: &'static str,
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} resolves only to refused addresses ({})",
            self.host, self.class
        )
    }
}

impl std::error::Error for Blocked {}

/// The marker error for a name that does not resolve.
#[derive(Debug)]
pub struct NotResolved(pub String);

impl std::fmt::Display for NotResolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} did not resolve", self.0)
    }
}

impl std::error::Error for NotResolved {}

/// Resolves with the system resolver, then keeps only allowed addresses. If any address of
/// a name is refused, the whole name is refused: a name that mixes public and internal
/// addresses is the DNS-rebinding pattern, and picking "the good one" would let the
/// attacker win whenever the order changes.
pub struct FilteringResolver {
    pub policy: Policy,
}

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| {
                    Box::new(NotResolved(host.clone())) as Box<dyn std::error::Error + Send + Sync>
                })?
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(NotResolved(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            if let Some(class) = addrs.iter().find_map(|a| policy.refuses(a.ip())) {
                return Err(
                    Box::new(Blocked { host, class }) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

pub fn resolver(policy: Policy) -> Arc<FilteringResolver> {
    Arc::new(FilteringResolver { policy })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<&'static str> {
        classify(s.parse().expect("ip")).map(Refusal::class)
    }

    #[test]
    fn every_internal_class_is_refused() {
        for (ip, want) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "cgnat"),
            ("100.127.255.254", "cgnat"),
            ("169.254.169.254", "cloud_metadata"),
            ("169.254.1.1", "link_local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("192.0.2.10", "documentation"),
            ("198.51.100.1", "documentation"),
            ("203.0.113.9", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("240.0.0.1", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "cloud_metadata"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::7f00:1", "loopback"),
            ("2002:7f00:1::", "loopback"),
            ("fc00::1", "unique_local"),
            ("fd12:3456::1", "unique_local"),
            ("fd00:ec2::254", "cloud_metadata"),
            ("fe80::1", "link_local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("2001:0:4136:e378::1", "teredo"),
            ("fec0::1", "site_local"),
        ] {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
            "172.32.0.1",
            "100.128.0.1",
            "::ffff:8.8.8.8",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "64:ff9b::808:808",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn the_private_flag_allows_private_ranges_but_never_metadata() {
        let open = Policy {
            allow_private: true,
            require_https: false,
        };
        let closed = Policy {
            allow_private: false,
            require_https: false,
        };
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(open.refuses(ip("127.0.0.1")), None);
        assert_eq!(closed.refuses(ip("127.0.0.1")), Some("loopback"));
        assert_eq!(open.refuses(ip("169.254.169.254")), Some("cloud_metadata"));
        assert_eq!(open.refuses(ip("0.0.0.0")), Some("unspecified"));
    }

    #[test]
    fn urls() {
        let p = Policy {
            allow_private: false,
            require_https: true,
        };
        let u = |s: &str| url::Url::parse(s).expect("url");
        assert!(check_url(&u("https://hooks.example.com/x"), &p).is_ok());
        assert!(check_url(&u("http://hooks.example.com/x"), &p).is_err());
        assert!(check_url(&u("ftp://hooks.example.com/x"), &p).is_err());
        assert!(check_url(&u("https://user:pw@hooks.example.com/x"), &p).is_err());
        for literal in [
            "https://127.0.0.1/",
            "https://127.1/",
            "https://2130706433/",
            "https://0x7f000001/",
            "https://[::1]/",
            "https://[::ffff:169.254.169.254]/",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/",
            "https://0.0.0.0/",
        ] {
            let e = check_url(&u(literal), &p).expect_err(literal);
            assert!(e.blocked.is_some(), "{literal}");
        }
    }
}
