//! Client authentication: a JWT sent as the Postgres password is verified
//! here (keys, JWKS, claim policy) and turned into the values rowgate
//! injects as transaction-local settings, so Row-Level Security sees the
//! real user. See `docs/auth.md` for the configuration reference.
//!
//! A token never appears in a log line, an error or a metric label: only
//! its [`token_id`] (a short sha256 prefix) does.

mod authenticator;
mod cache;
mod claims;
mod config;
mod error;
mod identity;
pub mod inband;
mod jwks;
mod keys;
pub mod mint;
pub mod scram;
mod service;
mod settings;
mod token;

#[cfg(test)]
mod test_jwks_server;
#[cfg(test)]
mod test_keys;
#[cfg(test)]
mod tests;

pub use authenticator::{token_id, Authenticator, KeyInfo, Prepared};
pub use config::{AuthConfig, IssuerConfig, OnExpiry, Secret, UserPolicy};
pub use error::{AuthConfigError, AuthError};
pub use identity::Identity;
pub use service::{Service, Services};
pub use settings::{validate, IdentityConfig};
