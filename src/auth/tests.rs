//! Behaviour tests of the whole authenticator: Clerk-shaped tokens, the
//! cache, user and role policies, several key types, and JWKS fetching
//! against a local server (rotation, rate limit, single flight, failures).
//! The table of hostile tokens lives in `tests/auth_hostile.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{json, Value};

use super::mint::{clerk_session_claims, jwk_from_public_pem, sign_hs256, sign_rs256};
use super::test_jwks_server::{JwksServer, Mode};
use super::test_keys::{ec_p256, ec_p384, ed25519, rsa_a, rsa_b, rsa_c};
use super::*;

const ISS: &str = "https://clerk.test";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn configs(text: &str) -> (AuthConfig, IdentityConfig) {
    #[derive(Deserialize)]
    struct Both {
        auth: AuthConfig,
        #[serde(default)]
        identity: IdentityConfig,
    }
    let b: Both = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    (b.auth, b.identity)
}

async fn authenticator(text: &str) -> Arc<Authenticator> {
    let (a, i) = configs(text);
    Authenticator::new(&a, &i).await.unwrap()
}

/// `[auth]` with rsa_a's public key inline.
fn pem_config(extra: &str) -> String {
    format!(
        "[auth]\nissuer = \"{ISS}\"\npublic_key = '''\n{}'''\n{extra}",
        rsa_a().1
    )
}

fn clerk_v2_with_org() -> Value {
    let mut c = clerk_session_claims("user_2NNEqL2nrIRdJ194ndJqAHwEfxC", ISS, 60);
    c["o"] = json!({"id": "org_2abc", "slg": "acme", "rol": "admin", "per": "read,manage"});
    c
}

#[tokio::test]
async fn clerk_v2_session_token_authenticates_with_expected_settings() {
    let a = authenticator(&pem_config(
        "authorized_parties = [\"http://localhost:3000\"]\nrequire_sid = true\n",
    ))
    .await;
    assert_eq!(
        a.setting_names(),
        ["app.user_id", "request.jwt.claims", "app.org_id"]
    );
    let claims = clerk_v2_with_org();
    let token = sign_rs256(rsa_a().0, Some("ins_abc"), &claims).unwrap();
    let id = a.authenticate(&token, "anyone").await.unwrap();
    assert_eq!(id.subject, "user_2NNEqL2nrIRdJ194ndJqAHwEfxC");
    assert_eq!(id.values.len(), 3);
    assert_eq!(id.values[0], "user_2NNEqL2nrIRdJ194ndJqAHwEfxC");
    let all: Value = serde_json::from_str(&id.values[1]).unwrap();
    assert_eq!(all, claims);
    assert_eq!(id.values[2], "org_2abc");
    assert_eq!(id.expires_at, claims["exp"].as_u64());
    assert_eq!(id.token_id.len(), 12);
    assert_eq!(id.token_id, token_id(&token));
    assert!(!token.contains(&id.token_id) || id.token_id.len() < 16);
    assert_eq!(a.on_expiry(), OnExpiry::RejectTransactions);
}

#[tokio::test]
async fn clerk_v1_flat_org_claims_and_org_paths() {
    let a = authenticator(&pem_config(
        "[identity.settings]\n\"app.user_id\" = \"sub\"\n\"app.org_id\" = \"org_id\"\n\
         \"app.org_role\" = \"org_role\"\n\"app.org_slug\" = \"org_slug\"\n\"app.plan\" = \"pla\"\n\
         \"app.fva\" = \"fva\"\n",
    ))
    .await;
    let mut v1 = clerk_session_claims("user_1", ISS, 60);
    v1["org_id"] = json!("org_v1");
    v1["org_role"] = json!("org:member");
    v1["org_slug"] = json!("v1co");
    let id = a
        .authenticate(&sign_rs256(rsa_a().0, None, &v1).unwrap(), "x")
        .await
        .unwrap();
    assert_eq!(
        &id.values[..],
        [
            "user_1",
            "org_v1",
            "org:member",
            "v1co",
            "u:free_user",
            "[0,-1]"
        ]
    );
    // v2 `o` wins over flat claims; no org at all gives "".
    let v2 = clerk_v2_with_org();
    let id = a
        .authenticate(&sign_rs256(rsa_a().0, None, &v2).unwrap(), "x")
        .await
        .unwrap();
    assert_eq!(&id.values[1..4], ["org_2abc", "admin", "acme"]);
    let none = clerk_session_claims("user_3", ISS, 60);
    let id = a
        .authenticate(&sign_rs256(rsa_a().0, None, &none).unwrap(), "x")
        .await
        .unwrap();
    assert_eq!(&id.values[1..4], ["", "", ""]);
}

#[tokio::test]
async fn reconnect_storm_verifies_once_and_rechecks_time() {
    let a = authenticator(&pem_config("leeway_secs = 0\n")).await;
    let mut claims = clerk_session_claims("user_storm", ISS, 60);
    claims["exp"] = json!(now() + 2);
    let token = sign_rs256(rsa_a().0, None, &claims).unwrap();
    let mut joins = Vec::new();
    a.authenticate(&token, "u").await.unwrap();
    for _ in 0..200 {
        let a = a.clone();
        let t = token.clone();
        joins.push(tokio::spawn(async move { a.authenticate(&t, "u").await }));
    }
    for j in joins {
        j.await.unwrap().unwrap();
    }
    assert_eq!(a.verifications(), 1, "cache hits must not redo RSA work");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let e = a.authenticate(&token, "u").await.unwrap_err();
    assert_eq!(e.reason(), "expired");
    assert!(e.to_string().starts_with("token expired at 20"), "{e}");
    assert_eq!(
        a.verifications(),
        1,
        "expiry is re-checked on the cached entry"
    );
}

#[tokio::test]
async fn user_policies() {
    let a = authenticator(&pem_config("user_policy = \"match_sub\"\n")).await;
    let token = sign_rs256(rsa_a().0, None, &clerk_session_claims("user_9", ISS, 60)).unwrap();
    a.authenticate(&token, "user_9").await.unwrap();
    let e = a.authenticate(&token, "postgres").await.unwrap_err();
    assert_eq!(e.reason(), "user_mismatch");
    assert_eq!(e.sqlstate(), "28000");
    assert!(e.to_string().contains("\"postgres\""), "{e}");

    // A map to a role outside allowed_roles is a config error, caught at start.
    let (bad_auth, bad_ident) = configs(&pem_config(
        "user_policy = \"map\"\nusers = { app = \"app_user\", admin = \"app_admin\" }\n\
         [identity]\nallowed_roles = [\"app_user\"]\n",
    ));
    let e = Authenticator::new(&bad_auth, &bad_ident).await.unwrap_err();
    assert!(e.to_string().contains("\"app_admin\""), "{e}");
    let a = authenticator(&pem_config(
        "user_policy = \"map\"\nusers = { app = \"app_user\" }\n\
         [identity]\nallowed_roles = [\"app_user\"]\n",
    ))
    .await;
    assert_eq!(a.setting_names().last().map(String::as_str), Some("role"));
    let id = a.authenticate(&token, "app").await.unwrap();
    assert_eq!(id.values.last().map(String::as_str), Some("app_user"));
    assert_eq!(id.values.len(), a.setting_names().len());
    let e = a.authenticate(&token, "nobody").await.unwrap_err();
    assert_eq!(e.reason(), "user_mismatch");
}

#[tokio::test]
async fn role_claim_switch_with_allowlist() {
    let a = authenticator(&pem_config(
        "[identity]\nrole_claim = \"metadata.role\"\nallowed_roles = [\"authenticated\", \"editor\"]\n",
    ))
    .await;
    assert_eq!(
        a.setting_names(),
        ["app.user_id", "request.jwt.claims", "app.org_id", "role"]
    );
    let with = |role: Value| {
        let mut c = clerk_session_claims("user_r", ISS, 60);
        c["metadata"] = json!({ "role": role });
        sign_rs256(rsa_a().0, None, &c).unwrap()
    };
    let id = a.authenticate(&with(json!("editor")), "u").await.unwrap();
    assert_eq!(id.values[3], "editor");
    let e = a
        .authenticate(&with(json!("postgres")), "u")
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "role_not_allowed");
    assert!(e.to_string().contains("\"postgres\""), "{e}");
    let e = a
        .authenticate(&with(json!(["editor"])), "u")
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "bad_claim");
    let plain = sign_rs256(rsa_a().0, None, &clerk_session_claims("u", ISS, 60)).unwrap();
    let e = a.authenticate(&plain, "u").await.unwrap_err();
    assert_eq!(e.reason(), "bad_claim");

    let fixed = authenticator(&pem_config("[identity]\nrole = \"authenticated\"\n")).await;
    let id = fixed.authenticate(&plain, "u").await.unwrap();
    assert_eq!(id.values.last().map(String::as_str), Some("authenticated"));
}

fn sign_with(alg: Algorithm, key: EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &key).unwrap()
}

#[tokio::test]
async fn ec_ed_hmac_and_several_issuers() {
    let text = format!(
        "[auth]\n\
         [[auth.issuers]]\nissuer = \"ec\"\npublic_key = '''\n{}'''\n\
         [[auth.issuers]]\nissuer = \"ed\"\npublic_key = '''\n{}'''\n\
         [[auth.issuers]]\nissuer = \"ec384\"\npublic_key = '''\n{}'''\n\
         [[auth.issuers]]\nissuer = \"hs\"\nhmac_secret = \"0123456789abcdef0123456789abcdef\"\n\
         hmac_algorithms = [\"HS256\", \"HS512\"]\n\
         [[auth.issuers]]\nissuer = \"ps\"\npublic_key_file = \"{}/tests/fixtures/auth/rsa_b.pub.pem\"\n\
         algorithms = [\"PS256\", \"RS512\"]\n",
        ec_p256().1,
        ed25519().1,
        ec_p384().1,
        env!("CARGO_MANIFEST_DIR"),
    );
    let a = authenticator(&text).await;
    let claims = |iss: &str| json!({"iss": iss, "sub": "s", "exp": now() + 60});
    let ec = EncodingKey::from_ec_pem(ec_p256().0.as_bytes()).unwrap();
    a.authenticate(&sign_with(Algorithm::ES256, ec, &claims("ec")), "u")
        .await
        .unwrap();
    let ec384 = EncodingKey::from_ec_pem(ec_p384().0.as_bytes()).unwrap();
    a.authenticate(&sign_with(Algorithm::ES384, ec384, &claims("ec384")), "u")
        .await
        .unwrap();
    let ec256 = EncodingKey::from_ec_pem(ec_p256().0.as_bytes()).unwrap();
    let t = sign_with(Algorithm::ES256, ec256, &claims("ec384"));
    assert_eq!(
        a.authenticate(&t, "u").await.unwrap_err().reason(),
        "alg_not_allowed"
    );
    let ed = EncodingKey::from_ed_pem(ed25519().0.as_bytes()).unwrap();
    a.authenticate(&sign_with(Algorithm::EdDSA, ed, &claims("ed")), "u")
        .await
        .unwrap();
    let secret = b"0123456789abcdef0123456789abcdef";
    for alg in [Algorithm::HS256, Algorithm::HS512] {
        let t = sign_with(alg, EncodingKey::from_secret(secret), &claims("hs"));
        a.authenticate(&t, "u").await.unwrap();
    }
    let t = sign_with(
        Algorithm::HS384,
        EncodingKey::from_secret(secret),
        &claims("hs"),
    );
    assert_eq!(
        a.authenticate(&t, "u").await.unwrap_err().reason(),
        "alg_not_allowed"
    );
    for alg in [Algorithm::PS256, Algorithm::RS512] {
        let t = mint::sign_rsa(alg, rsa_b().0, None, &claims("ps")).unwrap();
        a.authenticate(&t, "u").await.unwrap();
    }
    let t = sign_rs256(rsa_b().0, None, &claims("ps")).unwrap();
    assert_eq!(
        a.authenticate(&t, "u").await.unwrap_err().reason(),
        "alg_not_allowed"
    );
    // A token from one issuer signed with another issuer's key.
    let t = sign_hs256(secret, &claims("ec")).unwrap();
    assert_eq!(
        a.authenticate(&t, "u").await.unwrap_err().reason(),
        "alg_not_allowed"
    );
    let t = sign_rs256(rsa_c().0, None, &claims("ps")).unwrap();
    assert_eq!(
        a.authenticate(&t, "u").await.unwrap_err().reason(),
        "alg_not_allowed"
    );
    let t = mint::sign_rsa(Algorithm::PS256, rsa_c().0, None, &claims("ps")).unwrap();
    assert_eq!(
        a.authenticate(&t, "u").await.unwrap_err().reason(),
        "bad_signature"
    );
}

#[tokio::test]
async fn refusals_are_counted_by_reason() {
    let a = authenticator(&pem_config("")).await;
    let before = crate::metrics::get("rowgate_auth_failures_total", "malformed");
    let _ = a.authenticate("garbage", "u").await;
    assert!(crate::metrics::get("rowgate_auth_failures_total", "malformed") > before);
}

// ---- JWKS over HTTP -------------------------------------------------------

fn jwk(kid: &str, public: &str) -> Value {
    jwk_from_public_pem(kid, public).unwrap()
}

fn jwks_config(url: &str, extra: &str) -> String {
    format!(
        "[auth]\nallow_http_jwks = true\nissuer = \"{ISS}\"\njwks_url = \"{url}\"\n\
         jwks_connect_timeout_ms = 500\njwks_timeout_ms = 800\n{extra}"
    )
}

fn token(kid: &str, private: &str) -> String {
    sign_rs256(
        private,
        Some(kid),
        &clerk_session_claims("user_jwks", ISS, 120),
    )
    .unwrap()
}

#[tokio::test]
async fn key_rotation_is_picked_up_without_restart() {
    let server = JwksServer::start(json!({"keys": [jwk("a", rsa_a().1)]})).await;
    let a = authenticator(&jwks_config(&server.url(), "jwks_min_refetch_secs = 0\n")).await;
    assert_eq!(server.hits(), 1, "fetched once at start");
    let old = token("a", rsa_a().0);
    a.authenticate(&old, "u").await.unwrap();

    // The issuer adds key b: a token with kid b triggers one refetch.
    server.set_jwks(json!({"keys": [jwk("a", rsa_a().1), jwk("b", rsa_b().1)]}));
    let new = token("b", rsa_b().0);
    a.authenticate(&new, "u").await.unwrap();
    assert_eq!(server.hits(), 2);
    a.authenticate(&old, "u").await.unwrap();

    // Key a leaves the set. The old token keeps working until rowgate sees
    // the new set, then is refused even though it was cached.
    server.set_jwks(json!({"keys": [jwk("b", rsa_b().1)]}));
    a.authenticate(&old, "u").await.unwrap();
    let other = token("c", rsa_c().0); // unknown kid: forces a refetch
    assert_eq!(
        a.authenticate(&other, "u").await.unwrap_err().reason(),
        "unknown_kid"
    );
    let e = a.authenticate(&old, "u").await.unwrap_err();
    assert_eq!(e.reason(), "unknown_kid", "{e}");
    assert!(e.to_string().contains("\"a\""), "{e}");
    a.authenticate(&new, "u").await.unwrap();
}

#[tokio::test]
async fn unknown_kid_refetch_is_rate_limited_and_single_flight() {
    let server = JwksServer::start(json!({"keys": [jwk("a", rsa_a().1)]})).await;
    let a = authenticator(&jwks_config(&server.url(), "jwks_min_refetch_secs = 1\n")).await;
    assert_eq!(server.hits(), 1);
    // The fetch at start counts against the limit too.
    let bogus = token("zzz", rsa_c().0);
    assert_eq!(
        a.authenticate(&bogus, "u").await.unwrap_err().reason(),
        "unknown_kid"
    );
    assert_eq!(server.hits(), 1, "start fetch was under a second ago");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Many concurrent callers with an unknown kid while the server is slow:
    // they all wait on one fetch.
    server.set_mode(Mode::Slow(Duration::from_millis(300)));
    let joins: Vec<_> = (0..50)
        .map(|_| {
            let (a, t) = (a.clone(), bogus.clone());
            tokio::spawn(async move { a.authenticate(&t, "u").await })
        })
        .collect();
    for j in joins {
        assert_eq!(j.await.unwrap().unwrap_err().reason(), "unknown_kid");
    }
    assert_eq!(server.hits(), 2, "one shared refetch");
    // Within jwks_min_refetch_secs no further fetch happens.
    server.set_mode(Mode::Serve);
    for _ in 0..20 {
        let _ = a.authenticate(&bogus, "u").await;
    }
    assert_eq!(server.hits(), 2, "rate limited");
    assert_eq!(a.jwks_fetches(), 2);
}

#[tokio::test]
async fn jwks_down_at_start_then_recovers_on_first_use() {
    let server = JwksServer::start(json!({"keys": [jwk("a", rsa_a().1)]})).await;
    server.set_mode(Mode::Down);
    let started = Instant::now();
    let a = authenticator(&jwks_config(&server.url(), "")).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "start must not hang"
    );
    let t = token("a", rsa_a().0);
    let e = a.authenticate(&t, "u").await.unwrap_err();
    assert_eq!(e.reason(), "keys_unavailable");
    assert!(
        e.to_string().contains("JWKS fetch from http://127.0.0.1"),
        "{e}"
    );
    server.set_mode(Mode::Serve);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    a.authenticate(&t, "u").await.unwrap();
}

#[tokio::test]
async fn failed_refresh_keeps_last_good_keys() {
    let server = JwksServer::start(json!({"keys": [jwk("a", rsa_a().1)]})).await;
    let a = authenticator(&jwks_config(&server.url(), "jwks_min_refetch_secs = 0\n")).await;
    let t = token("a", rsa_a().0);
    let before = crate::metrics::get("rowgate_jwks_refresh_failures_total", "");
    for mode in [
        Mode::Down,
        Mode::Status(500),
        Mode::Redirect("https://evil.example/jwks".into()),
        Mode::Oversized(70 * 1024),
        Mode::OversizedNoLength(70 * 1024),
        Mode::Slow(Duration::from_secs(5)),
    ] {
        server.set_mode(mode.clone());
        let started = Instant::now();
        let bogus = token("nope", rsa_b().0);
        assert_eq!(
            a.authenticate(&bogus, "u").await.unwrap_err().reason(),
            "unknown_kid"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{mode:?} took too long"
        );
        a.authenticate(&t, "u").await.unwrap();
    }
    let after = crate::metrics::get("rowgate_jwks_refresh_failures_total", "");
    assert!(after >= before + 6, "failures counted: {before} -> {after}");
}

#[tokio::test]
async fn slow_or_redirecting_jwks_gives_a_clear_error() {
    let server = JwksServer::start(json!({"keys": [jwk("a", rsa_a().1)]})).await;
    server.set_mode(Mode::Slow(Duration::from_secs(10)));
    let started = Instant::now();
    let a = authenticator(&jwks_config(&server.url(), "")).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let e = a
        .authenticate(&token("a", rsa_a().0), "u")
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "keys_unavailable");
    assert!(e.to_string().contains("timed out"), "{e}");

    server.set_mode(Mode::Redirect("http://127.0.0.1:1/x".into()));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = a
        .authenticate(&token("a", rsa_a().0), "u")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("redirects are not followed"), "{e}");
}

#[tokio::test]
async fn background_refresh_picks_up_new_keys() {
    let server = JwksServer::start(json!({"keys": [jwk("a", rsa_a().1)]})).await;
    let a = authenticator(&jwks_config(
        &server.url(),
        "jwks_refresh_secs = 1\njwks_min_refetch_secs = 0\n",
    ))
    .await;
    server.set_jwks(json!({"keys": [jwk("b", rsa_b().1)]}));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(server.hits() >= 2, "refreshed in the background");
    let before = server.hits();
    a.authenticate(&token("b", rsa_b().0), "u").await.unwrap();
    assert_eq!(server.hits(), before, "kid b was already known");
    drop(a);
}

#[tokio::test]
async fn authenticator_and_its_future_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let a = authenticator(&pem_config("")).await;
    send_sync(&a);
    send(async move { a.authenticate("x", "u").await });
}
