//! Proves the integration-test harness itself: a real PostgreSQL with a
//! database per test, both roles, token minting and the JWKS server.

mod support;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use support::{JwksMode, JwksServer, TestDb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connects as the superuser and as `authenticator`, checks each lands in
/// this test's own database, and that `authenticator` is subject to RLS.
async fn check_database(db: &TestDb) {
    let admin = db.admin_client().await;
    let row = admin
        .query_one("SELECT current_database(), current_user", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), db.name());
    assert_eq!(row.get::<_, String>(1), "postgres");
    // Same table name in every test: would clash if databases were shared.
    admin
        .batch_execute("CREATE TABLE smoke (id int); INSERT INTO smoke VALUES (1)")
        .await
        .unwrap();
    admin
        .batch_execute("GRANT SELECT ON smoke TO authenticator")
        .await
        .unwrap();

    let auth = db.authenticator_client().await;
    let row = auth
        .query_one(
            "SELECT current_user::text, rolsuper, rolbypassrls, (SELECT count(*) FROM smoke)
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "authenticator");
    assert!(
        !row.get::<_, bool>(1),
        "authenticator must not be superuser"
    );
    assert!(!row.get::<_, bool>(2), "authenticator must not bypass RLS");
    assert_eq!(row.get::<_, i64>(3), 1);

    // The stored password is SCRAM, so rowgate's upstream login exercises it.
    let row = admin
        .query_one(
            "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'authenticator'",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
}

/// Decodes an RS256 token against `key`, checking Clerk's issuer.
fn decode(token: &str, key: &DecodingKey) -> Value {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[support::ISSUER]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
    jsonwebtoken::decode::<Value>(token, key, &validation)
        .unwrap()
        .claims
}

/// A raw HTTP/1.1 GET; returns (status code, headers+body text).
async fn http_get(url: &str) -> std::io::Result<(u16, String, String)> {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = TcpStream::connect(authority).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    Ok((status, head.to_string(), body.to_string()))
}

#[tokio::test]
async fn database_token_and_jwks_fetch() {
    let db = support::pg().new_database();
    check_database(&db).await;

    // psql reaches the same database as authenticator over scram.
    let out = support::psql(
        &db.authenticator_url(),
        support::AUTHENTICATOR_PASSWORD,
        "SELECT current_user || '@' || current_database()",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("authenticator@{}", db.name())
    );

    let keys = support::keys();
    let token = support::token("user_smoke_1");
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(keys.kid.as_str()));
    let pem_key =
        DecodingKey::from_rsa_pem(&std::fs::read(&keys.public_pem_path).unwrap()).unwrap();
    let claims = decode(&token, &pem_key);
    assert_eq!(claims["sub"], "user_smoke_1");
    assert_eq!(claims["azp"], support::AZP);
    assert_eq!(claims["sts"], "active");
    assert_eq!(claims["v"], 2);

    // The JWKS served over HTTP verifies the same token.
    let server = JwksServer::start().await;
    let (status, _, body) = http_get(&server.url()).await.unwrap();
    assert_eq!(status, 200);
    let set: JwkSet = serde_json::from_str(&body).unwrap();
    let jwk = set.find(&keys.kid).expect("kid in served JWKS");
    let claims = decode(&token, &DecodingKey::from_jwk(jwk).unwrap());
    assert_eq!(claims["sub"], "user_smoke_1");
    assert_eq!(server.hits(), 1);
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&keys.jwks_path).unwrap()).unwrap();
    assert_eq!(on_disk, keys.jwks);
}

#[tokio::test]
async fn database_custom_tokens_and_jwks_modes() {
    let db = support::pg().new_database();
    check_database(&db).await;

    let mut claims = support::clerk_claims("user_smoke_2");
    claims["org_id"] = json!("org_1");
    let token = support::token_with(claims);
    let pem_key = DecodingKey::from_rsa_pem(support::keys().public_pem.as_bytes()).unwrap();
    assert_eq!(decode(&token, &pem_key)["org_id"], "org_1");

    let hs = support::sign_hs256("s3cret", support::clerk_claims("user_hs"));
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[support::ISSUER]);
    let decoded =
        jsonwebtoken::decode::<Value>(&hs, &DecodingKey::from_secret(b"s3cret"), &validation)
            .unwrap();
    assert_eq!(decoded.claims["sub"], "user_hs");
    // An RS256 token must not verify under an unrelated key pair.
    let other = support::TestKeys::generate("other");
    let other_key = DecodingKey::from_rsa_pem(other.public_pem.as_bytes()).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[support::ISSUER]);
    assert!(jsonwebtoken::decode::<Value>(&token, &other_key, &validation).is_err());

    let server = JwksServer::start().await;
    server.set_keys(other.jwks.clone());
    let (_, _, body) = http_get(&server.url()).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), other.jwks);

    server.set_mode(JwksMode::Down);
    // A reset surfaces as an I/O error or an empty reply, never a status.
    if let Ok((status, _, _)) = http_get(&server.url()).await {
        assert_eq!(status, 0, "a down server must reset, not answer");
    }

    server.set_mode(JwksMode::Slow(std::time::Duration::from_millis(200)));
    assert_eq!(http_get(&server.url()).await.unwrap().0, 200);

    server.set_mode(JwksMode::Redirect);
    let (status, head, _) = http_get(&server.url()).await.unwrap();
    assert_eq!(status, 302);
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("Location: "))
        .expect("Location header");
    let (status, _, body) = http_get(&format!("{}{location}", server.base_url()))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), other.jwks);

    server.set_mode(JwksMode::Oversized(2 * 1024 * 1024));
    let (status, _, body) = http_get(&server.url()).await.unwrap();
    assert_eq!(status, 200);
    assert!(body.len() >= 2 * 1024 * 1024);
    assert!(serde_json::from_str::<Value>(&body).is_ok());

    assert_eq!(server.hits(), 6);
}
