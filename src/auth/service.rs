//! Service logins (`[[services]]`): a legacy service with one long-lived
//! pool logs in with a static password (SCRAM-SHA-256, see [`super::scram`])
//! and names each transaction's user in-band with a verified token
//! (docs/sidecar.md). This file turns the configuration into what a login
//! needs: the verifier, the issuers the service may present, and the
//! identity of a transaction that names no user.

use std::collections::HashMap;
use std::sync::Arc;

use rand::RngCore;
use serde_json::{Map, Value};

use super::config::AuthConfig;
use super::error::AuthConfigError;
use super::scram::Verifier;
use crate::config::ServiceConfig;

/// One configured service, ready for logins.
#[derive(Debug)]
pub struct Service {
    /// The startup `user` it logs in as; its name in logs.
    pub name: String,
    verifier: Verifier,
    /// Issuers whose tokens it may present; `None` = every configured one.
    pub allowed_issuers: Option<Vec<String>>,
    /// Claims for a transaction that names no user; `None` = no identity.
    pub default_identity: Option<Map<String, Value>>,
}

impl Service {
    /// Whether this service may present a token from `issuer`.
    pub fn allows_issuer(&self, issuer: &str) -> bool {
        self.allowed_issuers
            .as_ref()
            .is_none_or(|list| list.iter().any(|i| i == issuer))
    }
}

/// Every configured service, by name. Built once at start (and again on a
/// configuration reload, which is how passwords rotate).
#[derive(Debug)]
pub struct Services {
    by_name: HashMap<String, Arc<Service>>,
    /// Per-process secret from which unknown names get stable fake salts.
    dummy_secret: [u8; 32],
}

impl Services {
    /// Validates `[[services]]` against the configured issuers and derives
    /// each verifier (a plain password is hashed here, once).
    pub fn new(configs: &[ServiceConfig], auth: &AuthConfig) -> Result<Services, AuthConfigError> {
        let issuers: Vec<String> = if configs.is_empty() {
            Vec::new()
        } else {
            auth.issuer_specs()?.into_iter().map(|s| s.issuer).collect()
        };
        let mut by_name = HashMap::new();
        for c in configs {
            let at = format!("[[services]] {:?}", c.name);
            if c.name.is_empty() || c.name.contains('\0') {
                return Err(AuthConfigError::invalid(at, "name must be non-empty"));
            }
            let verifier = match (&c.password, &c.password_file, &c.scram_verifier) {
                (Some(p), None, None) if !p.0.is_empty() => Verifier::from_password(&p.0),
                (None, Some(path), None) => {
                    let text = std::fs::read_to_string(path).map_err(|source| {
                        AuthConfigError::ReadFile {
                            at: at.clone(),
                            path: path.clone(),
                            source,
                        }
                    })?;
                    let pw = text.trim();
                    if pw.is_empty() {
                        return Err(AuthConfigError::invalid(at, "password_file is empty"));
                    }
                    Verifier::from_password(pw)
                }
                (None, None, Some(v)) => {
                    Verifier::parse(v).map_err(|e| AuthConfigError::invalid(&at, e.to_string()))?
                }
                _ => {
                    return Err(AuthConfigError::invalid(
                        at,
                        "set exactly one of password, password_file or scram_verifier (a non-empty one)",
                    ))
                }
            };
            if let Some(list) = &c.allowed_issuers {
                if let Some(unknown) = list.iter().find(|i| !issuers.contains(i)) {
                    return Err(AuthConfigError::invalid(
                        at,
                        format!("allowed_issuers names {unknown:?}, which is not a configured [auth] issuer"),
                    ));
                }
            }
            let service = Service {
                name: c.name.clone(),
                verifier,
                allowed_issuers: c.allowed_issuers.clone(),
                default_identity: c.default_identity.clone(),
            };
            if by_name.insert(c.name.clone(), Arc::new(service)).is_some() {
                return Err(AuthConfigError::invalid(at, "two services have this name"));
            }
        }
        let mut dummy_secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut dummy_secret);
        Ok(Services {
            by_name,
            dummy_secret,
        })
    }

    /// Whether any service is configured (then service logins are tried).
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The service named `name`, if configured.
    pub fn get(&self, name: &str) -> Option<Arc<Service>> {
        self.by_name.get(name).cloned()
    }

    /// The verifier to run SCRAM against for the startup user `name`: the
    /// service's, or a dummy no password matches (same cost, same shape),
    /// so an unknown name and a wrong password look alike.
    pub fn verifier_for(&self, name: &str) -> (Option<Arc<Service>>, Verifier) {
        match self.by_name.get(name) {
            Some(s) => (Some(s.clone()), s.verifier.clone()),
            None => (None, Verifier::dummy(name, &self.dummy_secret)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> AuthConfig {
        toml::from_str(
            r#"issuer = "https://clerk.example.com"
hs256_secret = "dev-secret-dev-secret-dev-secret!""#,
        )
        .unwrap()
    }

    fn service(extra: &str) -> ServiceConfig {
        toml::from_str(&format!("name = \"billing\"\n{extra}")).unwrap()
    }

    #[test]
    fn exactly_one_password_source_is_required() {
        assert!(Services::new(&[service("password = \"pw\"")], &auth()).is_ok());
        let err = Services::new(&[service("")], &auth())
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly one of password"), "{err}");
        let both = service("password = \"pw\"\nscram_verifier = \"x\"");
        assert!(Services::new(&[both], &auth()).is_err());
        let bad = service("scram_verifier = \"md5abc\"");
        let err = Services::new(&[bad], &auth()).unwrap_err().to_string();
        assert!(err.contains("SCRAM-SHA-256$"), "{err}");
    }

    #[test]
    fn allowed_issuers_must_be_configured_issuers() {
        let s = service("password = \"pw\"\nallowed_issuers = [\"https://other\"]");
        let err = Services::new(&[s], &auth()).unwrap_err().to_string();
        assert!(err.contains("not a configured [auth] issuer"), "{err}");
        let s = service("password = \"pw\"\nallowed_issuers = [\"https://clerk.example.com\"]");
        let all = Services::new(&[s], &auth()).unwrap();
        let billing = all.get("billing").unwrap();
        assert!(billing.allows_issuer("https://clerk.example.com"));
        assert!(!billing.allows_issuer("https://evil"));
    }

    #[test]
    fn unknown_names_get_a_stable_dummy_verifier() {
        let all = Services::new(&[service("password = \"pw\"")], &auth()).unwrap();
        let (found, _) = all.verifier_for("billing");
        assert!(found.is_some());
        let (none, a) = all.verifier_for("nobody");
        let (_, b) = all.verifier_for("nobody");
        assert!(none.is_none());
        assert_eq!(a, b);
    }
}
