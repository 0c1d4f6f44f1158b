//! RS256 test keys and Clerk-shaped session tokens. The key pair is made
//! fresh per test binary, so no private key is ever committed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::OnceLock;

/// `iss` of every test token: a Clerk-style frontend API URL.
pub const ISSUER: &str = "https://clerk.test.example";
/// `azp` of every test token: the app origin Clerk would name.
pub const AZP: &str = "http://localhost:3000";

/// An RS256 key pair in the shapes rowgate may be configured with.
pub struct TestKeys {
    /// Key id, in the JWKS and in the `kid` header of tokens.
    pub kid: String,
    /// PKCS#8 PEM private key.
    pub private_pem: String,
    /// SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`).
    pub public_pem: String,
    /// `{"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid":..,"n":..,"e":..}]}`.
    pub jwks: Value,
    /// A file holding `public_pem`.
    pub public_pem_path: PathBuf,
    /// A file holding `jwks`.
    pub jwks_path: PathBuf,
}

impl TestKeys {
    /// A new 2048-bit pair with the given `kid`, its files in a temp dir that
    /// is removed at exit. Use it for "signed by an unknown key" cases.
    pub fn generate(kid: &str) -> TestKeys {
        let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA keygen");
        let private_pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .expect("encode private key")
            .to_string();
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("encode public key");
        let b64 = |n: &rsa::BigUint| URL_SAFE_NO_PAD.encode(n.to_bytes_be());
        let jwks = json!({ "keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": b64(private.n()), "e": b64(private.e()),
        }]});

        // 0755 so a rowgate child process running as another user could read it.
        let dir = std::env::temp_dir().join(format!(
            "rowgate-keys-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let cleanup = dir.clone();
        super::at_exit(move || {
            let _ = std::fs::remove_dir_all(cleanup);
        });
        let public_pem_path = dir.join("public.pem");
        let jwks_path = dir.join("jwks.json");
        std::fs::write(&public_pem_path, &public_pem).expect("write public.pem");
        std::fs::write(&jwks_path, jwks.to_string()).expect("write jwks.json");

        TestKeys {
            kid: kid.to_string(),
            private_pem,
            public_pem,
            jwks,
            public_pem_path,
            jwks_path,
        }
    }
}

/// The test binary's signing keys, kid `rowgate-test-1`, made on first use.
pub fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| TestKeys::generate("rowgate-test-1"))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// The claims of a Clerk v2 session token for `sub`, valid for 10 minutes.
/// Edit the returned value and pass it to [`token_with`] for odd cases.
pub fn clerk_claims(sub: &str) -> Value {
    let now = unix_now();
    json!({
        "iss": ISSUER,
        "azp": AZP,
        "sub": sub,
        "sid": format!("sess_test_{:016x}", rand::random::<u64>()),
        "sts": "active",
        "v": 2,
        "exp": now + 600,
        "nbf": now - 5,
        "iat": now - 5,
    })
}

/// A valid RS256 session token for `sub`, signed with [`keys`].
pub fn token(sub: &str) -> String {
    token_with(clerk_claims(sub))
}

/// Signs exactly `claims` (nothing added) with [`keys`], RS256, kid header.
pub fn token_with(claims: Value) -> String {
    sign_rs256(keys(), claims)
}

/// Signs `claims` with `keys`, RS256, `kid` = `keys.kid`.
pub fn sign_rs256(keys: &TestKeys, claims: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(keys.kid.clone());
    let key = EncodingKey::from_rsa_pem(keys.private_pem.as_bytes()).expect("test RSA key");
    jsonwebtoken::encode(&header, &claims, &key).expect("sign RS256 token")
}

/// Signs `claims` with HMAC-SHA256 under `secret`; no `kid`.
pub fn sign_hs256(secret: impl AsRef<[u8]>, claims: Value) -> String {
    let key = EncodingKey::from_secret(secret.as_ref());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("sign HS256 token")
}
