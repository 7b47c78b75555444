//! What each route requires of an authenticated caller: built-in defaults, replaced by a
//! JSON file when `GATEWAY_ROUTE_POLICY_FILE` is set.
//!
//! ```json
//! {"rules": [
//!   {"path": "/v1/api-keys", "sessionOnly": true, "permission": "api_keys_manage"},
//!   {"path": "/v1/outbound-webhook-*", "permission": "webhooks_manage"},
//!   {"path": "/v1/reconciliation-cases", "methods": ["POST","PUT","PATCH","DELETE"],
//!    "permission": "cases_action"},
//!   {"path": "/v1/payment-intents", "methods": ["GET"], "scope": "payment_intents:read"}
//! ]}
//! ```
//!
//! `path` matches case-insensitively: `/x` matches `/x` and everything under `/x/`; a
//! trailing `*` makes it a plain prefix. Every matching rule applies. `sessionOnly` refuses
//! API keys (the seed's 403); `permission` applies to sessions (`org:admin` holds all;
//! `api_keys_manage` and Clerk's `org:api_keys:manage` are the same permission); `scope`
//! applies to API keys.

use http::Method;
use serde::Deserialize;

use crate::caller::{Caller, SessionUser};
use crate::error::GatewayError;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub path: String,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub session_only: bool,
    #[serde(default)]
    pub permission: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// `api_keys_manage` → `org:api_keys:manage`; Clerk-form keys are kept as they are.
pub fn permission_key(p: &str) -> String {
    if p.starts_with("org:") {
        return p.to_owned();
    }
    match p.rsplit_once('_') {
        Some((feature, action)) if !feature.is_empty() && !action.is_empty() => {
            format!("org:{feature}:{action}")
        }
        _ => format!("org:{p}"),
    }
}

pub fn holds(user: &SessionUser, permission: &str) -> bool {
    if user.role.as_deref() == Some("org:admin") {
        return true;
    }
    let wanted = permission_key(permission);
    user.permissions.iter().any(|p| permission_key(p) == wanted)
}

/// The same matching as route classes: a trailing `*` is a plain prefix, otherwise the
/// rule's path and everything under it.
fn path_matches(rule: &str, path: &str) -> bool {
    match rule.strip_suffix('*') {
        Some(prefix) => crate::routes::starts_with_ci(path, prefix),
        None => crate::routes::under(path, rule),
    }
}

impl Rule {
    fn matches(&self, method: &Method, path: &str) -> bool {
        path_matches(&self.path, path)
            && self.methods.as_ref().is_none_or(|ms| {
                ms.iter().any(|m| {
                    m == "*"
                        || m.eq_ignore_ascii_case(method.as_str())
                        // Frameworks answer HEAD with the GET handler (and its length).
                        || (*method == Method::HEAD && m.eq_ignore_ascii_case("GET"))
                })
            })
    }
}

impl Default for Policy {
    fn default() -> Self {
        let rule = |path: &str, methods: Option<&[&str]>, session_only, permission: &str| Rule {
            path: path.to_owned(),
            methods: methods.map(|m| m.iter().map(|s| (*s).to_owned()).collect()),
            session_only,
            permission: Some(permission.to_owned()),
            scope: None,
        };
        Self {
            rules: vec![
                rule("/v1/api-keys", None, true, "api_keys_manage"),
                rule("/v1/outbound-webhook-*", None, true, "webhooks_manage"),
                rule(
                    "/v1/reconciliation-cases",
                    Some(&["POST", "PUT", "PATCH", "DELETE"]),
                    false,
                    "cases_action",
                ),
            ],
        }
    }
}

impl Policy {
    pub fn from_json(text: &str) -> Result<Self, String> {
        let file: PolicyFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        for r in &file.rules {
            if !r.path.starts_with('/') {
                return Err(format!("rule path {:?} must start with /", r.path));
            }
        }
        Ok(Self { rules: file.rules })
    }

    /// The rules that apply to `method` on `path`, in file order.
    pub fn matching<'a>(
        &'a self,
        method: &'a Method,
        path: &'a str,
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |r| r.matches(method, path))
    }

    pub fn check(&self, method: &Method, path: &str, caller: &Caller) -> Result<(), GatewayError> {
        for rule in self.matching(method, path) {
            match caller {
                Caller::ApiKey(key) => {
                    if rule.session_only {
                        return Err(GatewayError::SessionRequired);
                    }
                    if let Some(scope) = &rule.scope
                        && !key.scopes_header.split(',').any(|s| s == scope)
                    {
                        return Err(GatewayError::Forbidden(format!(
                            "This API key does not have the {scope} scope required for this action."
                        )));
                    }
                }
                Caller::Session(user) => {
                    if let Some(permission) = &rule.permission
                        && !holds(user, permission)
                    {
                        return Err(GatewayError::Forbidden(format!(
                            "You do not have the {permission} permission required for this action."
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_key::VerifiedKey;
    use std::sync::Arc;

    fn user(role: Option<&str>, perms: &[&str]) -> Caller {
        Caller::Session(Arc::new(SessionUser {
            organization_id: "org".into(),
            user_id: "user".into(),
            session_id: None,
            role: role.map(str::to_owned),
            permissions: perms.iter().map(|p| (*p).to_owned()).collect(),
        }))
    }

    fn key(scopes: &str) -> Caller {
        Caller::ApiKey(Arc::new(VerifiedKey {
            id: "k".into(),
            organization_id: "org".into(),
            scopes_header: scopes.into(),
            expires_at: None,
            revoked_at: None,
        }))
    }

    #[test]
    fn defaults() {
        let p = Policy::default();
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            p.check(&get, "/v1/api-keys", &key("x")),
            Err(GatewayError::SessionRequired)
        );
        assert!(
            p.check(&get, "/v1/api-keys", &user(Some("org:member"), &[]))
                .is_err()
        );
        assert!(
            p.check(
                &get,
                "/v1/api-keys/1",
                &user(None, &["org:api_keys:manage"])
            )
            .is_ok()
        );
        assert!(
            p.check(&get, "/v1/api-keys", &user(None, &["api_keys_manage"]))
                .is_ok()
        );
        assert!(
            p.check(&get, "/v1/api-keys", &user(Some("org:admin"), &[]))
                .is_ok()
        );
        assert!(
            p.check(&get, "/v1/outbound-webhook-events", &user(None, &[]))
                .is_err()
        );
        assert!(
            p.check(
                &get,
                "/v1/outbound-webhook-endpoints/1",
                &user(None, &["org:webhooks:manage"])
            )
            .is_ok()
        );
        assert!(
            p.check(&get, "/v1/reconciliation-cases", &user(None, &[]))
                .is_ok()
        );
        assert!(
            p.check(&post, "/v1/reconciliation-cases/1/close", &user(None, &[]))
                .is_err()
        );
        assert!(
            p.check(
                &post,
                "/v1/Reconciliation-Cases",
                &user(None, &["org:cases:action"])
            )
            .is_ok()
        );
        assert!(p.check(&post, "/v1/reconciliation-cases", &key("")).is_ok());
        assert!(p.check(&get, "/v1/payment-intents", &key("")).is_ok());
    }

    #[test]
    fn scope_rules_from_a_file() {
        let p = Policy::from_json(
            r#"{"rules":[{"path":"/v1/payment-intents","methods":["GET"],"scope":"payment_intents:read"}]}"#,
        )
        .expect("valid");
        assert!(
            p.check(
                &Method::GET,
                "/v1/payment-intents/1",
                &key("a,payment_intents:read")
            )
            .is_ok()
        );
        assert!(matches!(
            p.check(
                &Method::GET,
                "/v1/payment-intents",
                &key("payment_intents:write")
            ),
            Err(GatewayError::Forbidden(_))
        ));
        assert!(
            p.check(&Method::POST, "/v1/payment-intents", &key(""))
                .is_ok()
        );
        assert!(
            p.check(&Method::HEAD, "/v1/payment-intents", &key(""))
                .is_err(),
            "HEAD runs the GET handler: a GET rule covers it"
        );
        assert!(
            p.check(&Method::GET, "/v1/payment-intents", &user(None, &[]))
                .is_ok()
        );
        assert!(Policy::from_json(r#"{"rules":[{"path":"x"}]}"#).is_err());
        assert!(Policy::from_json(r#"{"rules":[{"path":"/x","bogus":1}]}"#).is_err());
    }

    #[test]
    fn the_documented_example_file_parses() {
        let p = Policy::from_json(include_str!("../../deploy/policy.example.json")).expect("valid");
        assert_eq!(p.rules.len(), 6);
    }

    #[test]
    fn permission_spellings() {
        assert_eq!(permission_key("api_keys_manage"), "org:api_keys:manage");
        assert_eq!(permission_key("cases_action"), "org:cases:action");
        assert_eq!(permission_key("org:cases:action"), "org:cases:action");
    }
}
