//! Verification keys: loading PEM, JWKS and secrets into [`KeySet`]s, and
//! the rule for which algorithm a key may verify. The key (and the issuer's
//! allowlist) decides the algorithm, never the token header alone.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::{IssuerSpec, KeySourceSpec};
use super::error::AuthConfigError;

/// What kind of key this is; it fixes which algorithms can use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
    Hmac,
}

impl KeyKind {
    /// Whether `alg` is an algorithm for this kind of key at all. This is
    /// the check that defeats RS/HS confusion: an RSA public key is never
    /// used as an HMAC secret.
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::EcP256 => alg == ES256,
            KeyKind::EcP384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
            KeyKind::Hmac => matches!(alg, HS256 | HS384 | HS512),
        }
    }

    /// The algorithm allowed when neither the issuer nor the JWK names one.
    fn default_alg(self) -> Algorithm {
        match self {
            KeyKind::Rsa => Algorithm::RS256,
            KeyKind::EcP256 => Algorithm::ES256,
            KeyKind::EcP384 => Algorithm::ES384,
            KeyKind::Ed25519 => Algorithm::EdDSA,
            KeyKind::Hmac => Algorithm::HS256,
        }
    }

    fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "an RSA key",
            KeyKind::EcP256 => "a P-256 key",
            KeyKind::EcP384 => "a P-384 key",
            KeyKind::Ed25519 => "an Ed25519 key",
            KeyKind::Hmac => "a shared secret",
        }
    }
}

/// One key that can verify signatures.
pub(crate) struct VerifyKey {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The JWK's own `alg`, which pins the key to that algorithm.
    pub pinned: Option<Algorithm>,
    pub key: DecodingKey,
    /// sha256 over the key material: lets the token cache tell whether the
    /// key a token was verified with is still in the current set.
    pub fingerprint: [u8; 32],
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("pinned", &self.pinned)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// Whether this key may verify a token signed with `alg` for an issuer
    /// with the given allowlist (`None` = default from the key).
    pub(crate) fn permits(
        &self,
        alg: Algorithm,
        allow: Option<&[Algorithm]>,
    ) -> Result<(), String> {
        let kid = self.kid.as_deref().unwrap_or("(no kid)");
        if !self.kind.fits(alg) {
            return Err(format!(
                "key {kid:?} is {} and cannot verify {alg:?}",
                self.kind.name()
            ));
        }
        if let Some(pin) = self.pinned {
            if pin != alg {
                return Err(format!("key {kid:?} is pinned to {pin:?} by its JWK alg"));
            }
        }
        match allow {
            Some(list) if !list.contains(&alg) => {
                Err(format!("not in the issuer's algorithms {list:?}"))
            }
            None if self.pinned.is_none() && alg != self.kind.default_alg() => Err(format!(
                "key {kid:?} defaults to {:?}; list {alg:?} in the issuer's algorithms to allow it",
                self.kind.default_alg()
            )),
            _ => Ok(()),
        }
    }
}

/// An issuer's keys at one moment.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    pub keys: Vec<Arc<VerifyKey>>,
    fingerprints: HashSet<[u8; 32]>,
}

/// The result of looking a header's `kid` up in a [`KeySet`].
pub(crate) enum Pick<'a> {
    /// Keys with that kid (or the only key, when the header has none).
    Found(Vec<&'a Arc<VerifyKey>>),
    UnknownKid,
    /// No kid in the header and this many keys to choose from.
    Ambiguous(usize),
    Empty,
}

impl KeySet {
    pub(crate) fn new(keys: Vec<VerifyKey>) -> KeySet {
        let fingerprints = keys.iter().map(|k| k.fingerprint).collect();
        KeySet {
            keys: keys.into_iter().map(Arc::new).collect(),
            fingerprints,
        }
    }

    pub(crate) fn contains(&self, fingerprint: &[u8; 32]) -> bool {
        self.fingerprints.contains(fingerprint)
    }

    pub(crate) fn pick(&self, kid: Option<&str>) -> Pick<'_> {
        if self.keys.is_empty() {
            return Pick::Empty;
        }
        match kid {
            Some(kid) => {
                let found: Vec<_> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if !found.is_empty() {
                    Pick::Found(found)
                } else if self.keys.len() == 1 && self.keys[0].kid.is_none() {
                    // A single key without a kid (a PEM such as Clerk's
                    // CLERK_JWT_KEY) verifies whatever kid the token names.
                    Pick::Found(vec![&self.keys[0]])
                } else {
                    Pick::UnknownKid
                }
            }
            None if self.keys.len() == 1 => Pick::Found(vec![&self.keys[0]]),
            None => Pick::Ambiguous(self.keys.len()),
        }
    }
}

/// Parses an algorithm name exactly as JOSE spells it (`none` is not one).
pub(crate) fn parse_alg(name: &str) -> Option<Algorithm> {
    use Algorithm::*;
    Some(match name {
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "EdDSA" => EdDSA,
        "HS256" => HS256,
        "HS384" => HS384,
        "HS512" => HS512,
        _ => return None,
    })
}

fn fingerprint(kind: KeyKind, material: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([kind as u8]);
    for m in material {
        h.update((m.len() as u64).to_be_bytes());
        h.update(m);
    }
    h.finalize().into()
}

/// Loads keys that need no network: PEM, JWKS file, secret. `Ok(None)` for
/// a JWKS URL (fetched later). Used by `validate` and at start.
pub(crate) fn load_static(spec: &IssuerSpec) -> Result<Option<KeySet>, AuthConfigError> {
    let at = format!("[auth] issuer {:?}", spec.issuer);
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| AuthConfigError::ReadFile {
            at: at.clone(),
            path: path.to_owned(),
            source,
        })
    };
    let bad = |what: String| AuthConfigError::invalid(at.clone(), what);
    let set = match &spec.source {
        KeySourceSpec::JwksUrl(_) => return Ok(None),
        KeySourceSpec::JwksFile(path) => {
            let bytes = read(path)?;
            let set = parse_jwks(&bytes)
                .map_err(|e| bad(format!("jwks_file {}: {e}", path.display())))?;
            for (i, skipped) in set.1.iter().enumerate() {
                tracing::warn!(issuer = %spec.issuer, "jwks_file key #{i} skipped: {skipped}");
            }
            set.0
        }
        KeySourceSpec::PemFile(path) => {
            let bytes = read(path)?;
            let text = String::from_utf8(bytes).map_err(|_| {
                bad(format!(
                    "public_key_file {} is not text (PEM)",
                    path.display()
                ))
            })?;
            let key = key_from_pem(&text)
                .map_err(|e| bad(format!("public_key_file {}: {e}", path.display())))?;
            KeySet::new(vec![key])
        }
        KeySourceSpec::PemInline(text) => KeySet::new(vec![
            key_from_pem(text).map_err(|e| bad(format!("public_key: {e}")))?
        ]),
        KeySourceSpec::Hmac(secret) => {
            let bytes = secret.0.as_bytes();
            if bytes.len() < 32 {
                tracing::warn!(
                    issuer = %spec.issuer,
                    "HMAC secret is shorter than 32 bytes; it can be brute-forced offline"
                );
            }
            KeySet::new(vec![VerifyKey {
                kid: None,
                kind: KeyKind::Hmac,
                pinned: None,
                key: DecodingKey::from_secret(bytes),
                fingerprint: fingerprint(KeyKind::Hmac, &[bytes]),
            }])
        }
    };
    // A secret fits every HS* algorithm; a public key must fit at least one
    // of the allowlisted algorithms or nothing could ever verify.
    if let Some(list) = &spec.algorithms {
        for k in &set.keys {
            if !list.iter().any(|a| k.kind.fits(*a)) {
                return Err(bad(format!(
                    "the key {:?} is {} but algorithms is {list:?}",
                    k.kid.as_deref().unwrap_or("(no kid)"),
                    k.kind.name()
                )));
            }
        }
    }
    Ok(Some(set))
}

// DER prefixes of SubjectPublicKeyInfo for the fixed-size key types; DER is
// canonical, so a prefix match identifies the algorithm and curve exactly.
const SPKI_P256: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";
const SPKI_P384: &str = "3076301006072a8648ce3d020106052b81040022036200";
const SPKI_ED25519: &str = "302a300506032b6570032100";

/// Parses a PEM public key (SPKI or PKCS#1 RSA). Tolerates what env vars do
/// to PEM: literal `\n`, long lines, or a bare base64 body without armour
/// (Clerk's CLERK_JWT_KEY is sometimes pasted that way).
pub(crate) fn key_from_pem(text: &str) -> Result<VerifyKey, String> {
    let text = text.replace("\\n", "\n");
    let text = text.trim();
    let (label, body) = if let Some(rest) = text.strip_prefix("-----BEGIN ") {
        let (label, rest) = rest.split_once("-----").ok_or("PEM header is broken")?;
        let end = format!("-----END {label}-----");
        let body = rest
            .split(end.as_str())
            .next()
            .ok_or("PEM has no END line")?;
        if !rest.contains(end.as_str()) {
            return Err("PEM has no matching END line".into());
        }
        (label.to_string(), body)
    } else {
        ("PUBLIC KEY".to_string(), text)
    };
    if label.contains("PRIVATE") {
        return Err("this is a private key; give rowgate the public key only".into());
    }
    if label.contains("CERTIFICATE") {
        return Err("certificates are not supported; extract the public key \
             (openssl x509 -pubkey -noout)"
            .into());
    }
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| "PEM body is not valid base64")?;
    if label == "RSA PUBLIC KEY" {
        use rsa::pkcs1::DecodeRsaPublicKey;
        let pk =
            RsaPublicKey::from_pkcs1_der(&der).map_err(|e| format!("bad PKCS#1 RSA key: {e}"))?;
        return rsa_key(None, None, &pk);
    }
    if label != "PUBLIC KEY" {
        return Err(format!(
            "unsupported PEM type {label:?}; expected PUBLIC KEY"
        ));
    }
    let hexder = hex::encode(&der);
    for (prefix, kind, len) in [
        (SPKI_P256, KeyKind::EcP256, 65),
        (SPKI_P384, KeyKind::EcP384, 97),
        (SPKI_ED25519, KeyKind::Ed25519, 32),
    ] {
        if let Some(point_hex) = hexder.strip_prefix(prefix) {
            let point = hex::decode(point_hex).map_err(|_| "bad key bytes")?;
            if point.len() != len {
                return Err(format!("{} has the wrong length", kind.name()));
            }
            return raw_key(None, None, kind, point);
        }
    }
    use rsa::pkcs8::DecodePublicKey;
    let pk = RsaPublicKey::from_public_key_der(&der)
        .map_err(|_| "not an RSA, P-256, P-384 or Ed25519 public key")?;
    rsa_key(None, None, &pk)
}

fn rsa_key(
    kid: Option<String>,
    pinned: Option<Algorithm>,
    pk: &RsaPublicKey,
) -> Result<VerifyKey, String> {
    let bits = pk.n().bits();
    if bits < 2048 {
        return Err(format!(
            "RSA key has {bits} bits; at least 2048 are required"
        ));
    }
    let (n, e) = (pk.n().to_bytes_be(), pk.e().to_bytes_be());
    Ok(VerifyKey {
        kid,
        kind: KeyKind::Rsa,
        pinned,
        fingerprint: fingerprint(KeyKind::Rsa, &[&n, &e]),
        key: DecodingKey::from_rsa_raw_components(&n, &e),
    })
}

/// An EC point (0x04||x||y) or Ed25519 key, checked by a probe verification
/// so that a bad point is refused at load, not on every login.
fn raw_key(
    kid: Option<String>,
    pinned: Option<Algorithm>,
    kind: KeyKind,
    bytes: Vec<u8>,
) -> Result<VerifyKey, String> {
    let (key, alg) = match kind {
        KeyKind::EcP256 => (DecodingKey::from_ec_der(&bytes), Algorithm::ES256),
        KeyKind::EcP384 => (DecodingKey::from_ec_der(&bytes), Algorithm::ES384),
        KeyKind::Ed25519 if bytes.len() == 32 => {
            (DecodingKey::from_ed_der(&bytes), Algorithm::EdDSA)
        }
        _ => return Err(format!("{} has the wrong length", kind.name())),
    };
    if jsonwebtoken::crypto::verify("AA", b"probe", &key, alg).is_err() {
        return Err(format!("{} is not a valid point", kind.name()));
    }
    Ok(VerifyKey {
        kid,
        kind,
        pinned,
        fingerprint: fingerprint(kind, &[&bytes]),
        key,
    })
}

fn b64url(v: &Value, field: &str) -> Result<Vec<u8>, String> {
    let s = v
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing {field}"))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('=').as_bytes())
        .map_err(|_| format!("{field} is not base64url"))
}

/// One JWK. `Ok(None)`: a key rowgate deliberately does not use (`use` is
/// not `sig`, `key_ops` without `verify`, symmetric or unknown types).
pub(crate) fn key_from_jwk(v: &Value) -> Result<Option<VerifyKey>, String> {
    if !v.is_object() {
        return Err("not a JSON object".into());
    }
    let s = |f: &str| v.get(f).and_then(Value::as_str);
    if let Some(u) = v.get("use") {
        if u.as_str() != Some("sig") {
            return Ok(None);
        }
    }
    if let Some(ops) = v.get("key_ops") {
        let ok = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !ok {
            return Ok(None);
        }
    }
    let kid = match v.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err("kid is not a string".into()),
    };
    let pinned = match v.get("alg") {
        None => None,
        Some(a) => match a.as_str().and_then(parse_alg) {
            Some(alg) => Some(alg),
            // An encryption or unknown algorithm: not a key for us.
            None => return Ok(None),
        },
    };
    let key = match s("kty") {
        Some("RSA") => {
            let n = BigUint::from_bytes_be(&b64url(v, "n")?);
            let e = BigUint::from_bytes_be(&b64url(v, "e")?);
            let pk = RsaPublicKey::new(n, e).map_err(|e| format!("bad RSA key: {e}"))?;
            rsa_key(kid, pinned, &pk)?
        }
        Some("EC") => {
            let (kind, len) = match s("crv") {
                Some("P-256") => (KeyKind::EcP256, 32),
                Some("P-384") => (KeyKind::EcP384, 48),
                _ => return Ok(None),
            };
            let (x, y) = (b64url(v, "x")?, b64url(v, "y")?);
            if x.len() != len || y.len() != len {
                return Err("EC coordinates have the wrong length".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            raw_key(kid, pinned, kind, point)?
        }
        Some("OKP") if s("crv") == Some("Ed25519") => {
            raw_key(kid, pinned, KeyKind::Ed25519, b64url(v, "x")?)?
        }
        // Symmetric keys have no place in a published key set.
        _ => return Ok(None),
    };
    if let Some(pin) = key.pinned {
        if !key.kind.fits(pin) {
            return Err(format!("alg {pin:?} does not fit {}", key.kind.name()));
        }
    }
    Ok(Some(key))
}

/// Parses a JWKS document. Returns the usable keys and, for each key that
/// was broken, why (the caller logs them). A document without one usable
/// key is an error, so a broken response never replaces good keys.
pub(crate) fn parse_jwks(bytes: &[u8]) -> Result<(KeySet, Vec<String>), String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|_| "JWKS is not valid JSON")?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWKS has no \"keys\" array")?;
    let mut keys = Vec::new();
    let mut broken = Vec::new();
    for (i, k) in list.iter().enumerate() {
        match key_from_jwk(k) {
            Ok(Some(key)) => keys.push(key),
            Ok(None) => {}
            Err(e) => broken.push(format!("key #{i}: {e}")),
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "JWKS has no usable signing key ({} entries{})",
            list.len(),
            if broken.is_empty() {
                String::new()
            } else {
                format!("; {}", broken.join("; "))
            }
        ));
    }
    Ok((KeySet::new(keys), broken))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::mint;
    use crate::auth::test_keys;
    use serde_json::json;

    #[test]
    fn rsa_pem_spki_and_jwk_agree() {
        let (_, public) = test_keys::rsa_a();
        let pem_key = key_from_pem(public).unwrap();
        let jwk = mint::jwk_from_public_pem("k1", public).unwrap();
        let jwk_key = key_from_jwk(&jwk).unwrap().unwrap();
        assert_eq!(pem_key.fingerprint, jwk_key.fingerprint);
        assert_eq!(jwk_key.pinned, Some(Algorithm::RS256));
        // Env-var mangled forms still parse.
        let mangled = public.replace('\n', "\\n");
        assert_eq!(
            key_from_pem(&mangled).unwrap().fingerprint,
            pem_key.fingerprint
        );
        let bare: String = public.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(
            key_from_pem(&bare).unwrap().fingerprint,
            pem_key.fingerprint
        );
    }

    #[test]
    fn pem_mistakes_are_explained() {
        let (private, _) = test_keys::rsa_a();
        assert!(key_from_pem(private).unwrap_err().contains("private key"));
        assert!(
            key_from_pem("-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----")
                .unwrap_err()
                .contains("base64")
        );
        assert!(key_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n").is_err());
    }

    #[test]
    fn jwks_skips_what_it_must() {
        let (_, public) = test_keys::rsa_a();
        let good = mint::jwk_from_public_pem("good", public).unwrap();
        let mut enc = good.clone();
        enc["use"] = json!("enc");
        enc["kid"] = json!("enc");
        let oct = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "oct"});
        let broken = json!({"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"});
        let doc = json!({"keys": [good, enc, oct, broken, 7]});
        let (set, bad) = parse_jwks(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["good"]);
        assert_eq!(bad.len(), 2);
        assert!(parse_jwks(b"{\"keys\": []}").is_err());
        assert!(parse_jwks(b"not json").is_err());
    }

    #[test]
    fn ec_and_ed_jwks_load_and_bad_points_are_refused() {
        // RFC 7515 A.3 P-256 public key and RFC 8037 A.2 Ed25519 public key.
        let ec = json!({"kty":"EC","crv":"P-256","kid":"ec",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let k = key_from_jwk(&ec).unwrap().unwrap();
        assert_eq!(k.kind, KeyKind::EcP256);
        assert!(k.permits(Algorithm::ES256, None).is_ok());
        assert!(k.permits(Algorithm::RS256, None).is_err());
        let ed = json!({"kty":"OKP","crv":"Ed25519","kid":"ed",
            "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        assert_eq!(key_from_jwk(&ed).unwrap().unwrap().kind, KeyKind::Ed25519);
        let mut off = ec.clone();
        off["y"] = json!("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a1");
        assert!(key_from_jwk(&off).is_err());
        let short = json!({"kty":"OKP","crv":"Ed25519","x":"AAAA"});
        assert!(key_from_jwk(&short).is_err());
    }

    #[test]
    fn key_decides_the_algorithm() {
        let (_, public) = test_keys::rsa_a();
        let k = key_from_pem(public).unwrap();
        assert!(k.permits(Algorithm::RS256, None).is_ok());
        assert!(k.permits(Algorithm::RS384, None).is_err());
        assert!(k
            .permits(Algorithm::HS256, Some(&[Algorithm::HS256]))
            .is_err());
        assert!(k
            .permits(Algorithm::PS256, Some(&[Algorithm::PS256]))
            .is_ok());
    }
}
