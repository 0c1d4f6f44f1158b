//! Hostile tokens against the public `rowgate::auth` API: each must be
//! refused with the right `reason()` and SQLSTATE, without panicking and
//! without the token showing up in the error. Add a row to `cases()` to
//! extend the corpus.

use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use rand::Rng;
use rowgate::auth::mint::{
    clerk_session_claims, jwk_from_public_pem, sign_hs256, sign_rs256, sign_rsa,
};
use rowgate::auth::{AuthConfig, Authenticator, IdentityConfig};
use serde_json::{json, Value};

const CLERK: &str = "https://clerk.test";
const API: &str = "https://api.test";
const HS: &str = "https://hs.test";
const SECRET: &[u8] = b"hs-test-secret-0123456789abcdef!";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/auth/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

struct Keys {
    a: String,
    a_pub: String,
    b: String,
    b_pub: String,
    c: String,
}

fn keys() -> Keys {
    Keys {
        a: fixture("rsa_a.key.pem"),
        a_pub: fixture("rsa_a.pub.pem"),
        b: fixture("rsa_b.key.pem"),
        b_pub: fixture("rsa_b.pub.pem"),
        c: fixture("rsa_c.key.pem"),
    }
}

/// Three issuers: a Clerk-like one with a two-key JWKS file, an API issuer
/// with an audience and a PEM file, and an HS256 one.
async fn authenticator(k: &Keys) -> Arc<Authenticator> {
    let jwks = json!({"keys": [
        jwk_from_public_pem("a", &k.a_pub).unwrap(),
        jwk_from_public_pem("b", &k.b_pub).unwrap(),
    ]});
    // One file per call: the tests of this binary run in parallel, and a
    // shared name let one test read a file another was still writing.
    let path = std::env::temp_dir().join(format!(
        "rowgate-auth-hostile-{}-{:08x}.json",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::write(&path, jwks.to_string()).unwrap();
    let text = format!(
        r#"[auth]
leeway_secs = 5
[[auth.issuers]]
issuer = "{CLERK}"
jwks_file = "{jwks}"
authorized_parties = ["http://localhost:3000"]
require_sid = true
[[auth.issuers]]
issuer = "{API}"
public_key_file = "{dir}/tests/fixtures/auth/rsa_c.pub.pem"
audience = ["rowgate", "other"]
require_sid = false
[[auth.issuers]]
issuer = "{HS}"
hs256_secret = "{secret}"
"#,
        jwks = path.display(),
        dir = env!("CARGO_MANIFEST_DIR"),
        secret = std::str::from_utf8(SECRET).unwrap(),
    );
    #[derive(serde::Deserialize)]
    struct W {
        auth: AuthConfig,
    }
    let w: W = toml::from_str(&text).unwrap();
    w.auth.validate().unwrap();
    Authenticator::new(&w.auth, &IdentityConfig::default())
        .await
        .unwrap()
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn clerk() -> Value {
    clerk_session_claims("user_2hostile", CLERK, 60)
}

fn api() -> Value {
    json!({"iss": API, "sub": "svc_1", "aud": "rowgate", "exp": now() + 60, "iat": now()})
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    if let Some(m) = claims.as_object_mut() {
        m.remove(key);
    }
    claims
}

/// Any header, any payload text, signed with `alg` and `key`.
fn signed_raw(header: Value, payload: &str, alg: Algorithm, key: &EncodingKey) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

fn rsa_key(private_pem: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap()
}

struct Case {
    name: &'static str,
    token: String,
    reason: &'static str,
    sqlstate: &'static str,
}

fn case(name: &'static str, token: String, reason: &'static str) -> Case {
    let sqlstate = match reason {
        "bad_signature" | "malformed" => "28P01",
        _ => "28000",
    };
    Case {
        name,
        token,
        reason,
        sqlstate,
    }
}

fn cases(k: &Keys) -> Vec<Case> {
    let a = |claims: &Value| sign_rs256(&k.a, Some("a"), claims).unwrap();
    let c = |claims: &Value| sign_rs256(&k.c, None, claims).unwrap();
    let good = a(&clerk());
    let (head, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let rs256_a = json!({"alg": "RS256", "typ": "JWT", "kid": "a"});
    vec![
        case(
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(clerk().to_string().as_bytes())
            ),
            "alg_not_allowed",
        ),
        case(
            "RS/HS confusion: HS256 keyed with the RSA public key PEM",
            signed_raw(
                json!({"alg": "HS256", "kid": "a"}),
                &clerk().to_string(),
                Algorithm::HS256,
                &EncodingKey::from_secret(k.a_pub.as_bytes()),
            ),
            "alg_not_allowed",
        ),
        case(
            "HS256 with the HS issuer's secret but an RSA issuer's iss",
            sign_hs256(SECRET, &clerk()).unwrap(),
            "alg_not_allowed",
        ),
        case(
            "HS512 on an HS256-only issuer",
            signed_raw(
                json!({"alg": "HS512"}),
                &with(api(), "iss", json!(HS)).to_string(),
                Algorithm::HS512,
                &EncodingKey::from_secret(SECRET),
            ),
            "alg_not_allowed",
        ),
        case(
            "alg not in allowlist (RS384, key is RS256)",
            sign_rsa(Algorithm::RS384, &k.a, Some("a"), &clerk()).unwrap(),
            "alg_not_allowed",
        ),
        case(
            "unknown alg name",
            format!(
                "{}.{}.{sig}",
                b64(br#"{"alg":"RSA-OAEP","kid":"a"}"#),
                b64(clerk().to_string().as_bytes())
            ),
            "alg_not_allowed",
        ),
        case(
            "wrong kid",
            sign_rs256(&k.a, Some("zzz"), &clerk()).unwrap(),
            "unknown_kid",
        ),
        case(
            "missing kid with several keys",
            sign_rs256(&k.a, None, &clerk()).unwrap(),
            "missing_kid",
        ),
        case(
            "jku header is never followed",
            signed_raw(
                json!({"alg": "RS256", "kid": "evil", "jku": "https://evil.example/jwks.json"}),
                &clerk().to_string(),
                Algorithm::RS256,
                &rsa_key(&k.c),
            ),
            "unknown_kid",
        ),
        case(
            "embedded jwk header is never trusted",
            signed_raw(
                json!({"alg": "RS256", "kid": "c", "jwk": jwk_from_public_pem("c", &fixture("rsa_c.pub.pem")).unwrap()}),
                &clerk().to_string(),
                Algorithm::RS256,
                &rsa_key(&k.c),
            ),
            "unknown_kid",
        ),
        case(
            "signed by another issuer's key",
            sign_rs256(&k.b, Some("a"), &clerk()).unwrap(),
            "bad_signature",
        ),
        case(
            "payload swapped after signing",
            format!(
                "{head}.{}.{sig}",
                b64(with(clerk(), "sub", json!("user_admin"))
                    .to_string()
                    .as_bytes())
            ),
            "bad_signature",
        ),
        case(
            "truncated signature",
            good[..good.len() - 12].to_string(),
            "bad_signature",
        ),
        case(
            "signature stripped",
            format!("{head}.{}.", rest.split_once('.').unwrap().0),
            "bad_signature",
        ),
        case(
            "truncated mid-payload",
            good[..good.len() / 2].to_string(),
            "malformed",
        ),
        case(
            "expired",
            a(&with(clerk(), "exp", json!(now() - 100))),
            "expired",
        ),
        case(
            "exp negative",
            a(&with(clerk(), "exp", json!(-1))),
            "expired",
        ),
        case(
            "not yet valid",
            a(&with(clerk(), "nbf", json!(now() + 100))),
            "not_yet_valid",
        ),
        case(
            "nbf absurdly far (1e300)",
            a(&with(clerk(), "nbf", json!(1e300))),
            "not_yet_valid",
        ),
        case(
            "iat in the future",
            a(&with(clerk(), "iat", json!(now() + 100))),
            "iat_in_future",
        ),
        case("missing exp", a(&without(clerk(), "exp")), "missing_claim"),
        case(
            "exp wrong type",
            a(&with(clerk(), "exp", json!("tomorrow"))),
            "bad_claim",
        ),
        case("missing sub", a(&without(clerk(), "sub")), "missing_claim"),
        case(
            "sub wrong type",
            a(&with(clerk(), "sub", json!(42))),
            "bad_claim",
        ),
        case(
            "NUL in sub",
            a(&with(clerk(), "sub", json!("user_\u{0}x"))),
            "bad_claim",
        ),
        case(
            "wrong iss",
            a(&with(clerk(), "iss", json!("https://evil.example"))),
            "bad_issuer",
        ),
        case(
            "iss differs by a trailing slash",
            a(&with(clerk(), "iss", json!("https://clerk.test/"))),
            "bad_issuer",
        ),
        case("no iss", a(&without(clerk(), "iss")), "bad_issuer"),
        case(
            "iss wrong type",
            a(&with(clerk(), "iss", json!(["https://clerk.test"]))),
            "bad_claim",
        ),
        case(
            "wrong aud",
            c(&with(api(), "aud", json!("someone-else"))),
            "bad_audience",
        ),
        case(
            "aud list without ours",
            c(&with(api(), "aud", json!(["x", "y"]))),
            "bad_audience",
        ),
        case("no aud", c(&without(api(), "aud")), "bad_audience"),
        case(
            "aud wrong type",
            c(&with(api(), "aud", json!({"rowgate": true}))),
            "bad_audience",
        ),
        case(
            "azp not allowed",
            a(&with(clerk(), "azp", json!("https://evil.example"))),
            "bad_azp",
        ),
        case("azp missing", a(&without(clerk(), "azp")), "bad_azp"),
        case(
            "sts pending",
            a(&with(clerk(), "sts", json!("pending"))),
            "pending_session",
        ),
        case(
            "missing sid when required",
            a(&without(clerk(), "sid")),
            "missing_sid",
        ),
        case(
            "sid on an issuer that refuses session tokens",
            c(&with(api(), "sid", json!("sess_1"))),
            "unexpected_sid",
        ),
        case(
            "huge number (1e400) in payload",
            signed_raw(
                rs256_a.clone(),
                &format!(r#"{{"iss":"{CLERK}","sub":"u","exp":1e400}}"#),
                Algorithm::RS256,
                &rsa_key(&k.a),
            ),
            "malformed",
        ),
        case(
            "non-JSON payload",
            signed_raw(
                rs256_a.clone(),
                "hello, world",
                Algorithm::RS256,
                &rsa_key(&k.a),
            ),
            "malformed",
        ),
        case(
            "payload is a JSON array",
            signed_raw(rs256_a.clone(), "[1,2,3]", Algorithm::RS256, &rsa_key(&k.a)),
            "malformed",
        ),
        case(
            "deeply nested payload",
            signed_raw(
                rs256_a.clone(),
                &format!("{}{}", "[".repeat(4000), "]".repeat(4000)),
                Algorithm::RS256,
                &rsa_key(&k.a),
            ),
            "malformed",
        ),
        case("bad base64", "!!!.@@@.###".into(), "malformed"),
        case("padded base64", format!("{head}=.{rest}"), "malformed"),
        case("empty string", String::new(), "malformed"),
        case("only dots", "..".into(), "malformed"),
        case(
            "100 KB token",
            format!("{head}.{}.{sig}", "A".repeat(100 * 1024)),
            "malformed",
        ),
        case("JWE (five parts)", format!("{head}.a.b.c.d"), "malformed"),
        case(
            "crit header",
            signed_raw(
                json!({"alg": "RS256", "kid": "a", "crit": ["exp"]}),
                &clerk().to_string(),
                Algorithm::RS256,
                &rsa_key(&k.a),
            ),
            "malformed",
        ),
        case(
            "kid wrong type",
            signed_raw(
                json!({"alg": "RS256", "kid": 7}),
                &clerk().to_string(),
                Algorithm::RS256,
                &rsa_key(&k.a),
            ),
            "malformed",
        ),
        case(
            "not text at all",
            "\u{0}\u{1}\u{ffff}☃.é.\u{7f}".into(),
            "malformed",
        ),
    ]
}

#[tokio::test]
async fn valid_controls_are_accepted() {
    let k = keys();
    let auth = authenticator(&k).await;
    let clerk_token = sign_rs256(&k.a, Some("a"), &clerk()).unwrap();
    let id = auth.authenticate(&clerk_token, "app").await.unwrap();
    assert_eq!(id.subject, "user_2hostile");
    let b_token = sign_rs256(&k.b, Some("b"), &clerk()).unwrap();
    auth.authenticate(&b_token, "app").await.unwrap();
    auth.authenticate(&sign_rs256(&k.c, Some("any"), &api()).unwrap(), "app")
        .await
        .unwrap();
    auth.authenticate(
        &sign_hs256(SECRET, &with(api(), "iss", json!(HS))).unwrap(),
        "app",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn hostile_tokens_are_refused_with_the_right_reason() {
    let k = keys();
    let auth = authenticator(&k).await;
    let mut failures = Vec::new();
    for c in cases(&k) {
        match auth.authenticate(&c.token, "app").await {
            Ok(_) => failures.push(format!("{}: accepted", c.name)),
            Err(e) => {
                let shown = format!("{e} {e:?}");
                if e.reason() != c.reason || e.sqlstate() != c.sqlstate {
                    failures.push(format!(
                        "{}: got {} / {} ({e}), want {} / {}",
                        c.name,
                        e.reason(),
                        e.sqlstate(),
                        c.reason,
                        c.sqlstate
                    ));
                }
                let longest_part = c.token.split('.').map(str::len).max().unwrap_or(0);
                if longest_part >= 16
                    && c.token
                        .split('.')
                        .any(|p| p.len() >= 16 && shown.contains(p))
                {
                    failures.push(format!("{}: error shows the token: {shown}", c.name));
                }
                if shown.len() > 600 {
                    failures.push(format!("{}: error is {} bytes long", c.name, shown.len()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn mutated_and_random_tokens_never_panic_or_pass() {
    let k = keys();
    let auth = authenticator(&k).await;
    let good = sign_rs256(&k.a, Some("a"), &clerk()).unwrap();
    let bytes = good.as_bytes();
    for i in (0..bytes.len()).step_by(5) {
        let mut m = bytes.to_vec();
        m[i] = if m[i] == b'A' { b'B' } else { b'A' };
        let Ok(m) = String::from_utf8(m) else {
            continue;
        };
        if m == good {
            continue;
        }
        assert!(
            auth.authenticate(&m, "app").await.is_err(),
            "mutation at {i} passed"
        );
    }
    let mut rng = rand::thread_rng();
    let alphabet = b"AZaz09-_.=+/{}\":, \x00\xff";
    for _ in 0..500 {
        let len = rng.gen_range(0..400);
        let s: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect();
        let s = String::from_utf8_lossy(&s);
        assert!(auth.authenticate(&s, "app").await.is_err());
    }
}
