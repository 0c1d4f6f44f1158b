//! Splitting and decoding a compact JWS before any key is involved. Every
//! failure is a static message: nothing from the token's text gets into an
//! error (only an escaped `alg`), and no input can make this panic.

use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::error::{quoted, AuthError};
use super::keys::parse_alg;

/// Larger tokens are refused before any decoding. Clerk session tokens are
/// 1-3 KiB; 16 KiB leaves room for generous custom claims while bounding the
/// work a hostile client can ask for.
pub(crate) const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A decoded, not yet verified token.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    /// The base64url signature, decoded by the verifier.
    pub signature: &'a str,
    pub claims: Map<String, Value>,
}

fn b64_json(
    part: &str,
    what_b64: &'static str,
    what_json: &'static str,
) -> Result<Map<String, Value>, AuthError> {
    // RFC 7515: base64url without padding, so padding is refused too.
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.as_bytes())
        .map_err(|_| AuthError::Malformed(what_b64))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(AuthError::Malformed(what_json)),
    }
}

/// Decodes `token` (already trimmed).
pub(crate) fn parse(token: &str) -> Result<Parsed<'_>, AuthError> {
    if token.is_empty() {
        return Err(AuthError::Malformed(
            "the password is empty; send the JWT as the password",
        ));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed("token is larger than 16 KiB"));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let (header, payload, signature) = match parts.as_slice() {
        [h, p, s] => (*h, *p, *s),
        [_, _, _, _, _] => {
            return Err(AuthError::Malformed(
                "encrypted tokens (JWE) are not supported",
            ))
        }
        _ => {
            return Err(AuthError::Malformed(
                "not a JWT (expected three dot-separated base64url parts)",
            ))
        }
    };
    let header = b64_json(
        header,
        "header is not base64url",
        "header is not a JSON object",
    )?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a,
        _ => return Err(AuthError::Malformed("header has no alg")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(AuthError::AlgNotAllowed {
            alg: quoted(alg),
            why: "unsigned tokens are never accepted".into(),
        });
    }
    let alg = parse_alg(alg).ok_or_else(|| AuthError::AlgNotAllowed {
        alg: quoted(alg),
        why: "unknown algorithm".into(),
    })?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(AuthError::Malformed("header kid is not a string")),
    };
    if header.contains_key("crit") {
        // RFC 7515 4.1.11: extensions we do not understand must be refused.
        return Err(AuthError::Malformed(
            "header has crit extensions, which are not supported",
        ));
    }
    let claims = b64_json(
        payload,
        "payload is not base64url",
        "payload is not a JSON object",
    )?;
    if signature.is_empty() {
        return Err(AuthError::BadSignature);
    }
    let signing_input = &token[..header_payload_len(token)];
    Ok(Parsed {
        alg,
        kid,
        signing_input,
        signature,
        claims,
    })
}

/// Length of `header.payload` (everything before the last dot).
fn header_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn decodes_a_well_formed_token() {
        let t = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","kid":"k"}"#),
            b64(r#"{"sub":"u"}"#)
        );
        let p = parse(&t).unwrap();
        assert_eq!(p.alg, Algorithm::RS256);
        assert_eq!(p.kid.as_deref(), Some("k"));
        assert_eq!(p.signature, "c2ln");
        assert_eq!(p.signing_input.matches('.').count(), 1);
    }

    #[test]
    fn hostile_shapes_never_panic() {
        let h = b64(r#"{"alg":"RS256"}"#);
        let c = b64(r#"{"sub":"u"}"#);
        let cases = vec![
            String::new(),
            ".".into(),
            "..".into(),
            "a.b.c".into(),
            format!("{h}.{c}"),
            format!("{h}.{c}."),
            format!("{h}.{c}.x.y"),
            format!("{h}=.{c}.sig"),
            format!("{}.{c}.sig", b64("[1,2]")),
            format!("{}.{c}.sig", b64(r#"{"alg":5}"#)),
            format!("{}.{c}.sig", b64(r#"{"alg":"RS256","kid":7}"#)),
            format!("{}.{c}.sig", b64(r#"{"alg":"RS256","crit":["b64"]}"#)),
            format!("{h}.{}.sig", b64("not json")),
            format!("{h}.{}.sig", b64("\"string\"")),
            format!("{h}.{}.sig", b64(&"[".repeat(5000))),
            format!("{h}.{c}.{}", "A".repeat(20_000)),
            "\u{0}\u{ffff}.é.☃".into(),
        ];
        for t in cases {
            assert!(parse(&t).is_err(), "accepted {t:?}");
        }
    }

    #[test]
    fn alg_none_and_unknown_are_named() {
        let c = b64(r#"{"sub":"u"}"#);
        for alg in ["none", "None", "RSA-OAEP", "HS1"] {
            let t = format!("{}.{c}.", b64(&format!(r#"{{"alg":"{alg}"}}"#)));
            let e = parse(&t).unwrap_err();
            assert_eq!(e.reason(), "alg_not_allowed", "{alg}");
        }
    }
}
