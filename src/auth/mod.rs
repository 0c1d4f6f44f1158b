//! TEMPORARY stand-in with the interface of the real auth module (being
//! written on the `auth` branch); replaced at merge.

use serde::Deserialize;
use std::sync::Arc;

/// `[auth]`.
#[derive(Clone, Debug, Deserialize)]
pub struct AuthConfig {
    /// Expected `iss`.
    pub issuer: Option<String>,
    /// HS256 secret.
    pub hs256_secret: Option<String>,
    /// PEM public key.
    pub public_key_file: Option<std::path::PathBuf>,
    /// Leeway.
    #[serde(default)]
    pub leeway_secs: u64,
}
impl AuthConfig {
    /// Validate.
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        Ok(())
    }
}
/// `[identity]`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct IdentityConfig {}
/// Config error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthConfigError(String);
/// Auth error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(String);
impl AuthError {
    /// SQLSTATE.
    pub fn sqlstate(&self) -> &'static str {
        "28000"
    }
    /// Label.
    pub fn reason(&self) -> &'static str {
        "invalid"
    }
}
/// Expiry policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExpiry {
    /// Reject.
    RejectTransactions,
    /// Allow.
    Allow,
}
/// Identity.
#[derive(Clone, Debug)]
pub struct Identity {
    /// sub.
    pub subject: String,
    /// values.
    pub values: Arc<[String]>,
    /// exp.
    pub expires_at: Option<u64>,
    /// hash.
    pub token_id: String,
}
/// Authenticator.
pub struct Authenticator {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
    names: Vec<String>,
}
impl Authenticator {
    /// New.
    pub async fn new(a: &AuthConfig, _i: &IdentityConfig) -> Result<Arc<Self>, AuthConfigError> {
        let (key, alg) = if let Some(s) = &a.hs256_secret {
            (
                jsonwebtoken::DecodingKey::from_secret(s.as_bytes()),
                jsonwebtoken::Algorithm::HS256,
            )
        } else if let Some(p) = &a.public_key_file {
            let pem = std::fs::read(p).map_err(|e| AuthConfigError(e.to_string()))?;
            (
                jsonwebtoken::DecodingKey::from_rsa_pem(&pem)
                    .map_err(|e| AuthConfigError(e.to_string()))?,
                jsonwebtoken::Algorithm::RS256,
            )
        } else {
            return Err(AuthConfigError("no key".into()));
        };
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.leeway = a.leeway_secs;
        validation.validate_aud = false;
        if let Some(i) = &a.issuer {
            validation.set_issuer(&[i]);
        }
        Ok(Arc::new(Authenticator {
            key,
            validation,
            names: vec![
                "app.user_id".into(),
                "request.jwt.claims".into(),
                "app.org_id".into(),
            ],
        }))
    }
    /// Names.
    pub fn setting_names(&self) -> &[String] {
        &self.names
    }
    /// Policy.
    pub fn on_expiry(&self) -> OnExpiry {
        OnExpiry::RejectTransactions
    }
    /// Verify.
    pub async fn authenticate(&self, token: &str, _user: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)
            .map_err(|e| AuthError(format!("invalid token: {e}")))?;
        let c = data.claims;
        let sub = c
            .get("sub")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let org = c
            .get("org_id")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        Ok(Identity {
            subject: sub.clone(),
            values: vec![sub, c.to_string(), org].into(),
            expires_at: c.get("exp").and_then(|v| v.as_u64()),
            token_id: String::new(),
        })
    }
}
/// Minting.
pub mod mint {
    /// HS256.
    pub fn sign_hs256(
        secret: &[u8],
        claims: &serde_json::Value,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
    }
}
