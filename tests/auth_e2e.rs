//! Token policy end to end through the proxy: what happens when a
//! connected client's token expires, JWKS by URL with key rotation picked
//! up without a restart, and refusals counted by reason.

mod support;

use support::{pg, rowgate, JwksServer, TestKeys};

fn config(db: &support::TestDb, auth: &str) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[upstream]
url = "{}"
pool_size = 2
[auth]
{auth}
"#,
        db.authenticator_url()
    )
}

fn pem_auth(extra: &str) -> String {
    format!(
        "issuer = \"{}\"\npublic_key_file = \"{}\"\n{extra}",
        support::ISSUER,
        support::keys().public_pem_path.display()
    )
}

/// A token for `sub` that expires `secs` from now.
fn short_token(sub: &str, secs: u64) -> String {
    let mut claims = support::clerk_claims(sub);
    claims["exp"] = (support::unix_now() + secs).into();
    support::token_with(claims)
}

async fn who(c: &tokio_postgres::Client) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(c.query_one("select auth.user_id()", &[]).await?.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_lets_the_running_transaction_finish_then_refuses_new_ones() {
    let db = pg().new_database();
    let proxy = rowgate(&config(&db, &pem_auth("leeway_secs = 0"))).await;
    let alice = proxy.connect(&short_token("user_alice", 2)).await.unwrap();
    alice.batch_execute("begin").await.unwrap();
    assert_eq!(who(&alice).await.unwrap().as_deref(), Some("user_alice"));
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    // The open transaction finishes normally.
    assert_eq!(who(&alice).await.unwrap().as_deref(), Some("user_alice"));
    alice.batch_execute("commit").await.unwrap();
    // The next one is refused with 28000 and advice.
    let err = who(&alice).await.unwrap_err();
    let db_err = err.as_db_error().expect("an error from rowgate");
    assert_eq!(db_err.code().code(), "28000");
    assert!(
        db_err.message().contains("reconnect with a fresh token"),
        "{}",
        db_err.message()
    );
    // The connection stays usable for the error path (simple protocol too).
    assert!(alice.simple_query("select 1").await.is_err());
    // A new connection with a fresh token works.
    let fresh = proxy.connect(&support::token("user_alice")).await.unwrap();
    assert_eq!(who(&fresh).await.unwrap().as_deref(), Some("user_alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_expiry_allow_treats_the_token_like_a_password() {
    let db = pg().new_database();
    let proxy = rowgate(&config(
        &db,
        &pem_auth("leeway_secs = 0\non_expiry = \"allow\""),
    ))
    .await;
    let alice = proxy.connect(&short_token("user_alice", 2)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    assert_eq!(who(&alice).await.unwrap().as_deref(), Some("user_alice"));
    // But a new connection with the expired token is refused.
    let err = proxy.connect(&short_token("user_alice", 0)).await.err();
    assert!(err.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_by_url_picks_up_a_rotated_key_without_restart() {
    let jwks = JwksServer::start().await;
    let db = pg().new_database();
    let auth = format!(
        "issuer = \"{}\"\njwks_url = \"{}\"\nallow_http_jwks = true\njwks_min_refetch_secs = 0\n",
        support::ISSUER,
        jwks.url()
    );
    let proxy = rowgate(&config(&db, &auth)).await;
    let alice = proxy.connect(&support::token("user_alice")).await.unwrap();
    assert_eq!(who(&alice).await.unwrap().as_deref(), Some("user_alice"));

    // The issuer rotates: a new key is published next to the old one.
    let next = TestKeys::generate("rotated-2");
    let both = serde_json::json!({ "keys": [support::keys().jwks["keys"][0].clone(), next.jwks["keys"][0].clone()] });
    jwks.set_keys(both);
    let bob = proxy
        .connect(&support::sign_rs256(
            &next,
            support::clerk_claims("user_bob"),
        ))
        .await
        .expect("new kid is fetched on first sight");
    assert_eq!(who(&bob).await.unwrap().as_deref(), Some("user_bob"));
    // Old tokens keep working while their key is published.
    let again = proxy.connect(&support::token("user_carol")).await.unwrap();
    assert_eq!(who(&again).await.unwrap().as_deref(), Some("user_carol"));
}

#[tokio::test]
async fn refusals_are_counted_by_reason_and_never_echo_the_token() {
    let db = pg().new_database();
    let proxy = rowgate(&config(&db, &pem_auth(""))).await;
    // Only this test in this binary sends a token from another issuer.
    let before = rowgate::metrics::get("rowgate_auth_failures_total", "bad_issuer");
    let mut claims = support::clerk_claims("user_alice");
    claims["iss"] = "https://impostor.example".into();
    let forged = support::token_with(claims);
    let err = proxy.connect(&forged).await.unwrap_err();
    let msg = err.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("issuer"), "{msg}");
    assert!(!msg.contains(&forged) && !msg.contains(forged.split('.').nth(1).unwrap()));
    assert_eq!(
        rowgate::metrics::get("rowgate_auth_failures_total", "bad_issuer"),
        before + 1
    );
    let text = rowgate::metrics::render();
    assert!(
        text.contains("rowgate_auth_failures_total{reason=\"bad_issuer\"}"),
        "{text}"
    );
}
