//! Dev/test helpers: make keys and sign tokens. Used by `rowgate token`,
//! `rowgate dev` and the tests. Nothing here is on the verification path.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::Rng;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};

/// Why minting failed.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// Key generation or PEM encoding failed.
    #[error("cannot generate or encode the RSA key: {0}")]
    Key(String),
    /// The PEM given is not what was expected.
    #[error("cannot read the PEM key: {0}")]
    Pem(String),
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// Generates a 2048-bit RSA key pair: (private PKCS#8 PEM, public SPKI PEM).
pub fn generate_rsa_keypair() -> Result<(String, String), MintError> {
    let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
        .map_err(|e| MintError::Key(e.to_string()))?;
    let private_pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| MintError::Key(e.to_string()))?
        .to_string();
    let public_pem = RsaPublicKey::from(&private)
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| MintError::Key(e.to_string()))?;
    Ok((private_pem, public_pem))
}

/// The RS256 JWK for an RSA public key (SPKI PEM):
/// `{kty, kid, use: "sig", alg: "RS256", n, e}`.
pub fn jwk_from_public_pem(kid: &str, public_pem: &str) -> Result<Value, MintError> {
    let public =
        RsaPublicKey::from_public_key_pem(public_pem).map_err(|e| MintError::Pem(e.to_string()))?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Ok(json!({
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
        "n": b64.encode(public.n().to_bytes_be()),
        "e": b64.encode(public.e().to_bytes_be()),
    }))
}

/// Signs `claims` with RS256 and a PKCS#8 (or PKCS#1) private PEM.
pub fn sign_rs256(
    private_pem: &str,
    kid: Option<&str>,
    claims: &Value,
) -> Result<String, MintError> {
    sign_rsa(Algorithm::RS256, private_pem, kid, claims)
}

/// Signs `claims` with any RSA algorithm (RS*/PS*); tests use it for
/// algorithms outside an issuer's allowlist.
pub fn sign_rsa(
    alg: Algorithm,
    private_pem: &str,
    kid: Option<&str>,
    claims: &Value,
) -> Result<String, MintError> {
    let private = RsaPrivateKey::from_pkcs8_pem(private_pem)
        .or_else(|_| {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            RsaPrivateKey::from_pkcs1_pem(private_pem)
        })
        .map_err(|e| MintError::Pem(e.to_string()))?;
    let der = private
        .to_pkcs1_der()
        .map_err(|e| MintError::Pem(e.to_string()))?;
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(der.as_bytes()))
        .map_err(|e| MintError::Sign(e.to_string()))
}

/// Signs `claims` with HS256 and a shared secret.
pub fn sign_hs256(secret: &[u8], claims: &Value) -> Result<String, MintError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| MintError::Sign(e.to_string()))
}

fn random_id(prefix: &str, len: usize) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let tail: String = (0..len)
        .map(|_| ALNUM[rng.gen_range(0..ALNUM.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

/// Claims shaped exactly like a Clerk v2 session token for `sub` (a
/// `user_...` id), valid from now for `ttl_secs` (Clerk's default is 60):
/// azp, exp, fva, iat, iss, jti, nbf, sid, sub, v = 2, pla, fea, sts. Add an
/// `o` object (`{id, slg, rol, per}`) for an active organization.
pub fn clerk_session_claims(sub: &str, issuer: &str, ttl_secs: u64) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({
        "azp": "http://localhost:3000",
        "exp": now + ttl_secs,
        "fva": [0, -1],
        "iat": now,
        "iss": issuer,
        "jti": hex::encode(rand::thread_rng().gen::<[u8; 10]>()),
        "nbf": now.saturating_sub(10),
        "sid": random_id("sess_", 27),
        "sub": sub,
        "v": 2,
        "pla": "u:free_user",
        "fea": "u:basic",
        "sts": "active",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_keys;

    #[test]
    fn signed_token_verifies_with_its_jwk() {
        let (private, public) = test_keys::rsa_a();
        let claims = clerk_session_claims("user_2abc", "https://clerk.test", 60);
        let token = sign_rs256(private, Some("k1"), &claims).unwrap();
        let jwk = jwk_from_public_pem("k1", public).unwrap();
        let key = jsonwebtoken::DecodingKey::from_rsa_components(
            jwk["n"].as_str().unwrap(),
            jwk["e"].as_str().unwrap(),
        )
        .unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
        v.set_issuer(&["https://clerk.test"]);
        let got = jsonwebtoken::decode::<Value>(&token, &key, &v).unwrap();
        assert_eq!(got.claims["sub"], "user_2abc");
        assert_eq!(got.header.kid.as_deref(), Some("k1"));
        for k in [
            "azp", "exp", "fva", "iat", "iss", "jti", "nbf", "sid", "sub", "v", "pla", "fea", "sts",
        ] {
            assert!(claims.get(k).is_some(), "missing {k}");
        }
        assert!(claims["sid"].as_str().unwrap().starts_with("sess_"));
    }

    #[test]
    fn generated_keypair_round_trips() {
        let (private, public) = generate_rsa_keypair().unwrap();
        let token = sign_rs256(&private, None, &json!({"sub": "x"})).unwrap();
        assert_eq!(token.split('.').count(), 3);
        jwk_from_public_pem("k", &public).unwrap();
    }
}
