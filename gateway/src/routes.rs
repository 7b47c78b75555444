//! Which route class a canonical path belongs to, and where it goes.
//!
//! Static segments match case-insensitively: `/V1/API-KEYS` is treated as the key
//! management route (and refused for an API key), so a case-insensitive upstream can never
//! be reached around a stricter policy. A route (and a policy rule) covers its path followed
//! by anything that does not continue the name: `/v1/api-keys.json`, `/v1/api-keys:x` and
//! `/v1/api-keys%20` are `/v1/api-keys` to some framework (format suffixes, custom verbs,
//! trailing-space trimming), so they are to the edge too; `/v1/api-keys-archive` is not.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /health` → health-service. Public.
    Health,
    /// `/openapi.json`, `/openapi.yaml`, `/docs`, `/dashboard`: served by the gateway
    /// itself (static, data-free). Public.
    Docs,
    /// `/webhooks/*` → default upstream. Public, identity headers stripped.
    Webhooks,
    /// `/v1/api-keys*` → keys-service. Signed-in session only.
    ApiKeys,
    /// `/v1/audit-events*` → audit-service.
    AuditEvents,
    /// `/v1/outbound-webhook-endpoints*`, `/v1/outbound-webhook-events*` → webhooks-service.
    /// Account administration: a signed-in session (an API key gets the seed's `403`).
    OutboundWebhooks,
    /// Every other `/v1/*` → default upstream.
    Api,
    /// Anything else: authenticated, then `404`.
    Unknown,
}

impl Route {
    pub fn is_public(self) -> bool {
        matches!(self, Self::Health | Self::Docs | Self::Webhooks)
    }

    /// A short, bounded label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::Docs => "docs",
            Self::Webhooks => "webhooks",
            Self::ApiKeys => "api_keys",
            Self::AuditEvents => "audit_events",
            Self::OutboundWebhooks => "outbound_webhooks",
            Self::Api => "api",
            Self::Unknown => "unknown",
        }
    }
}

/// `path` starts with `prefix`, ignoring ASCII case.
pub(crate) fn starts_with_ci(path: &str, prefix: &str) -> bool {
    path.len() >= prefix.len()
        && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Bytes that continue a path segment's name; anything else after a route's path (`/`,
/// `.`, `:`, `%`, `~`, `!`, `+`, …) ends the name, so the route still covers it.
fn continues_name(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// `path` is `prefix`, or `prefix` followed by anything that does not continue its last
/// segment's name (a sub-path, a format suffix, a parameter).
pub(crate) fn under(path: &str, prefix: &str) -> bool {
    starts_with_ci(path, prefix)
        && path
            .as_bytes()
            .get(prefix.len())
            .is_none_or(|&b| !continues_name(b) || prefix.ends_with('/'))
}

pub fn classify(path: &str) -> Route {
    if path.eq_ignore_ascii_case("/health") {
        Route::Health
    } else if path.eq_ignore_ascii_case("/openapi.json")
        || path.eq_ignore_ascii_case("/openapi.yaml")
        || under(path, "/docs")
        || under(path, "/dashboard")
    {
        Route::Docs
    } else if starts_with_ci(path, "/webhooks/") {
        Route::Webhooks
    } else if under(path, "/v1/api-keys") {
        Route::ApiKeys
    } else if under(path, "/v1/audit-events") {
        Route::AuditEvents
    } else if under(path, "/v1/outbound-webhook-endpoints")
        || under(path, "/v1/outbound-webhook-events")
    {
        Route::OutboundWebhooks
    } else if under(path, "/v1") {
        Route::Api
    } else {
        Route::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify("/health"), Route::Health);
        assert_eq!(classify("/health/x"), Route::Unknown);
        assert_eq!(classify("/openapi.json"), Route::Docs);
        assert_eq!(classify("/openapi.yaml"), Route::Docs);
        assert_eq!(classify("/docs"), Route::Docs);
        assert_eq!(classify("/docs/app.js"), Route::Docs);
        assert_eq!(classify("/docsx"), Route::Unknown);
        assert_eq!(classify("/dashboard"), Route::Docs);
        assert_eq!(classify("/dashboard/app.js"), Route::Docs);
        assert_eq!(classify("/webhooks/stripe"), Route::Webhooks);
        assert_eq!(classify("/webhooks"), Route::Unknown);
        assert_eq!(classify("/v1/api-keys"), Route::ApiKeys);
        assert_eq!(classify("/v1/api-keys/"), Route::ApiKeys);
        assert_eq!(classify("/v1/api-keys/abc"), Route::ApiKeys);
        assert_eq!(classify("/V1/API-Keys"), Route::ApiKeys);
        assert_eq!(classify("/v1/api-keysx"), Route::Api);
        assert_eq!(classify("/v1/api-keys-archive"), Route::Api);
        for suffixed in [
            "/v1/api-keys.json",
            "/v1/API-KEYS.xml",
            "/v1/api-keys:search",
            "/v1/api-keys%20",
            "/v1/api-keys~",
            "/v1/api-keys!",
            "/v1/api-keys.",
            "/v1/api-keys/abc.json",
        ] {
            assert_eq!(classify(suffixed), Route::ApiKeys, "{suffixed}");
        }
        assert_eq!(classify("/v1/audit-events.json"), Route::AuditEvents);
        assert_eq!(classify("/v1/audit-events"), Route::AuditEvents);
        assert_eq!(
            classify("/v1/outbound-webhook-endpoints/x"),
            Route::OutboundWebhooks
        );
        assert_eq!(
            classify("/V1/Outbound-Webhook-Events.json"),
            Route::OutboundWebhooks
        );
        assert_eq!(classify("/v1/payment-intents"), Route::Api);
        assert_eq!(classify("/v1"), Route::Api);
        assert_eq!(classify("/v2/x"), Route::Unknown);
        assert_eq!(classify("/"), Route::Unknown);
        assert_eq!(classify("/internal/v1/api-keys/lookup"), Route::Unknown);
    }
}
