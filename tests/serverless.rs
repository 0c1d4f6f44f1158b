//! The Neon serverless driver through rowgate: the real npm packages
//! (`@neondatabase/serverless`, `ws`, `drizzle-orm`, installed by
//! `scripts/ensure-deps.sh` from `tests/serverless/package-lock.json`) run
//! the scenarios of `tests/serverless/scenarios.mjs` against rowgate's
//! `[http]` listener, on a real PostgreSQL. Each scenario prints what it
//! saw; the assertions are here. A raw WebSocket client checks the framing
//! rules the driver relies on (pipelined startup, messages split across
//! frames), and plain HTTP requests check CORS and the limits.

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use support::{pg, proxy_config, rowgate, token, token_with, RunningProxy, TestDb};
use tokio_tungstenite::tungstenite::Message;

fn node_dir() -> &'static Path {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/serverless"));
    if !dir
        .join("node_modules/@neondatabase/serverless/package.json")
        .is_file()
    {
        panic!(
            "the npm packages are missing: run scripts/ensure-deps.sh (npm ci in tests/serverless)"
        );
    }
    dir
}

/// rowgate with `[http]` on a free port, pool `pool`, extra `[http]` lines.
async fn serverless_rowgate(db: &TestDb, pool: usize, http_extra: &str) -> RunningProxy {
    let config = format!(
        "{}\n[http]\naddr = \"127.0.0.1:0\"\n{http_extra}\n",
        proxy_config(db, pool, "")
    );
    rowgate(&config).await
}

/// Runs one scenario with `tokens`; returns what it printed.
async fn scenario(proxy: &RunningProxy, name: &str, tokens: Value) -> Value {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("scenarios.mjs")
        .arg(name)
        .current_dir(node_dir())
        .env("ROWGATE_HTTP", proxy.http_addr().to_string())
        .env("ROWGATE_TOKENS", tokens.to_string())
        .env("ROWGATE_DBNAME", proxy.dbname())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("scenario {name} did not finish in 60 s"))
        .expect("node runs (scripts/ensure-deps.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scenario {name} failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("scenario {name} printed no JSON ({e}): {stdout}"))
}

#[tokio::test]
async fn http_queries_parameters_and_errors_with_sqlstate() {
    let db = pg().new_database();
    let proxy = serverless_rowgate(&db, 2, "").await;
    let v = scenario(
        &proxy,
        "http_basics",
        json!({ "alice": token("user_alice") }),
    )
    .await;

    assert_eq!(v["tagged"], json!([{ "me": "user_alice", "n": 42 }]));
    assert_eq!(
        v["typed"],
        json!([{ "t": "a \"quoted\", text", "arr": [1, 2, 3], "j": { "k": [1, "x"] },
                 "nul": null, "b": true, "num": "12.50", "later": true }])
    );
    assert_eq!(v["insert"]["command"], "INSERT");
    assert_eq!(v["insert"]["rowCount"], 2);
    assert_eq!(
        v["insert"]["fields"],
        json!([["user_id", 25], ["message", 25]])
    );
    assert_eq!(
        v["mine"],
        json!([{ "user_id": "user_alice", "message": "one from alice" },
               { "user_id": "user_alice", "message": "two from alice" }])
    );
    let division = &v["division"]["error"];
    assert_eq!(division["neon"], true, "{v}");
    assert_eq!(division["code"], "22012");
    assert_eq!(division["message"], "division by zero");
    assert_eq!(v["syntax"]["error"]["code"], "42601");
    assert!(v["syntax"]["error"]["position"].is_string(), "{v}");
    // The guard answers over HTTP as over TCP.
    assert_eq!(v["guard"]["error"]["code"], "42501", "{v}");
    assert_eq!(v["arrayMode"], json!([[1, 2]]));
}

#[tokio::test]
async fn http_transactions_take_their_options_and_roll_back_on_error() {
    let db = pg().new_database();
    let proxy = serverless_rowgate(&db, 2, "").await;
    let v = scenario(
        &proxy,
        "http_transactions",
        json!({ "alice": token("user_alice") }),
    )
    .await;

    assert_eq!(
        v["modes"],
        json!([[{ "iso": "serializable" }], [{ "ro": "on" }], [{ "def": "on" }], [{ "me": "user_alice" }]])
    );
    assert_eq!(v["defaults"][0], json!([{ "iso": "read committed" }]));
    // One transaction: both statements see the same transaction id.
    assert_eq!(v["defaults"][1][0]["a"], v["defaults"][2][0]["b"], "{v}");
    assert_eq!(v["readOnlyWrite"]["error"]["code"], "25006");
    assert_eq!(v["failing"]["error"]["code"], "22012");
    assert_eq!(v["committed"][1], json!([{ "n": 1 }]));
    assert_eq!(
        v["after"],
        json!([{ "message": "kept" }]),
        "the failed batch left nothing"
    );
    assert_eq!(v["badIsolation"]["error"]["code"], "08P01", "{v}");
}

#[tokio::test]
async fn bad_and_expired_tokens_are_refused_with_a_clear_error_and_no_rows() {
    let db = pg().new_database();
    db.admin_client()
        .await
        .batch_execute(
            "insert into user_messages (user_id, message) values ('user_alice', 'secret')",
        )
        .await
        .unwrap();
    let proxy = serverless_rowgate(&db, 2, "").await;
    let mut expired = support::clerk_claims("user_alice");
    let now = support::unix_now();
    expired["exp"] = json!(now - 120);
    expired["iat"] = json!(now - 180);
    expired["nbf"] = json!(now - 180);
    let stranger = support::TestKeys::generate("rowgate-test-1");
    let tokens = json!({
        "alice": token("user_alice"),
        "expired": token_with(expired),
        "unknown_key": support::sign_rs256(&stranger, support::clerk_claims("user_alice")),
        "garbage": "not-a-jwt",
    });
    let v = scenario(&proxy, "refused_tokens", tokens).await;

    for case in [
        "http_expired",
        "http_unknown_key",
        "http_garbage",
        "http_none",
        "ws_expired",
    ] {
        let e = &v[case]["error"];
        assert!(v[case].get("ok").is_none(), "{case} returned rows: {v}");
        let code = e["code"].as_str().unwrap_or_default();
        assert!(code == "28000" || code == "28P01", "{case}: {e}");
        assert!(
            e["message"].as_str().unwrap().starts_with("rowgate: "),
            "{case}: {e}"
        );
    }
    assert_eq!(v["http_expired"]["error"]["neon"], true);
    assert!(
        v["http_expired"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{v}"
    );
    assert!(
        v["http_none"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no token"),
        "{v}"
    );
    // Without a bearer token, the connection string's password is the token.
    assert_eq!(v["http_password"]["ok"], json!([{ "me": "user_alice" }]));
}

#[tokio::test]
async fn several_users_at_once_through_a_pool_of_two_each_see_their_own_rows() {
    let db = pg().new_database();
    let proxy = serverless_rowgate(&db, 2, "").await;
    let users: Vec<String> = (0..6).map(|k| format!("user_{k}")).collect();
    let tokens: serde_json::Map<String, Value> = users
        .iter()
        .map(|u| (u.clone(), Value::String(token(u))))
        .collect();
    let v = scenario(&proxy, "concurrent_users", Value::Object(tokens)).await;
    let results = v.as_array().expect("one result per user");
    assert_eq!(results.len(), users.len());
    for r in results {
        let name = r["name"].as_str().unwrap();
        assert_eq!(
            r["seen"],
            json!([name]),
            "{name} saw someone else's rows: {r}"
        );
        for w in r["ws"].as_array().unwrap() {
            assert_eq!(w, &json!({ "me": name, "n": 10 }), "{r}");
        }
    }
    assert!(proxy.idle_upstream() <= 2);
}

#[tokio::test]
async fn websocket_pool_and_client_with_pipelined_startup_transactions_and_named_statements() {
    let db = pg().new_database();
    let proxy = serverless_rowgate(&db, 2, "").await;
    let tokens = json!({ "alice": token("user_alice"), "bob": token("user_bob") });
    let v = scenario(&proxy, "websocket", tokens).await;

    assert_eq!(v["first"], json!([{ "me": "user_alice" }]));
    assert_eq!(v["inside"], 1);
    assert_eq!(v["afterRollback"], 0);
    assert_eq!(
        v["named"],
        json!([{ "me": "user_alice", "echo": "a" }, { "me": "user_alice", "echo": "b" },
               { "me": "user_alice", "echo": "c" }])
    );
    assert_eq!(v["error"]["error"]["code"], "42P01");
    assert_eq!(v["afterError"], json!([{ "one": 1 }]));
    assert_eq!(v["big"], 200_000);
    assert_eq!(v["poolIso"], "repeatable read");
    assert_eq!(
        v["poolRows"],
        json!([{ "user_id": "user_bob", "message": "bob via ws" }])
    );
}

#[tokio::test]
async fn drizzle_neon_http_and_neon_serverless_keep_users_apart() {
    let db = pg().new_database();
    let proxy = serverless_rowgate(&db, 2, "").await;
    let tokens = json!({ "alice": token("user_alice"), "bob": token("user_bob") });
    let v = scenario(&proxy, "drizzle", tokens).await;

    assert_eq!(
        v["http"],
        json!([{ "userId": "user_alice", "message": "drizzle http" }])
    );
    assert_eq!(v["httpBatch"][0], json!([{ "message": "batched" }]));
    assert_eq!(v["httpBatch"][1], json!([{ "n": 2 }]));
    assert_eq!(
        v["ws"],
        json!([{ "userId": "user_bob", "message": "drizzle ws" }])
    );
    assert_eq!(v["wsDelete"], 0, "bob cannot delete alice's rows");
    assert_eq!(v["aliceAfterBobsDelete"], 2);
}

// ---------------------------------------------------------------------------
// Raw WebSocket framing, without the driver.

fn startup_and_password(token: &str, dbname: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608i32.to_be_bytes());
    for s in ["user", "anyone", "database", dbname, ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(&message(b'p', &[token.as_bytes(), b"\0"].concat()));
    out
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn query(sql: &str) -> Vec<u8> {
    message(b'Q', &[sql.as_bytes(), b"\0"].concat())
}

/// Collects binary frames until `until` appears in the bytes (or 10 s).
async fn read_until<S>(ws: &mut S, until: &[u8]) -> Vec<u8>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !got.windows(until.len()).any(|w| w == until) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => got.extend_from_slice(&b),
            Ok(Some(Ok(_))) => {}
            other => panic!("no {until:?} in {got:?}: {other:?}"),
        }
    }
    got
}

#[tokio::test]
async fn websocket_frames_may_pipeline_the_startup_and_split_messages_anywhere() {
    let db = pg().new_database();
    let proxy = serverless_rowgate(&db, 2, "").await;
    let url = format!("ws://{}/v2?address=db.rowgate.test:5432", proxy.http_addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();

    // Startup, password and a query in one frame, before any reply.
    let mut first = startup_and_password(&token("user_alice"), proxy.dbname());
    first.extend_from_slice(&query("select auth.user_id()"));
    ws.send(Message::Binary(first.into())).await.unwrap();
    let got = read_until(&mut ws, b"user_alice").await;
    assert!(
        got.windows(5).any(|w| w == b"R\0\0\0\x08"),
        "AuthenticationOk"
    );

    // A query split into 1-byte frames, then two queries in one frame.
    let split = query("select 'split' || 'ted'");
    for b in split {
        ws.send(Message::Binary(vec![b].into())).await.unwrap();
    }
    read_until(&mut ws, b"splitted").await;
    let mut joined = query("select 'one'||'1'");
    joined.extend_from_slice(&query("select 'two'||'2'"));
    ws.send(Message::Binary(joined.into())).await.unwrap();
    read_until(&mut ws, b"two2").await;

    // A text frame is refused: the connection closes with 1003.
    ws.send(Message::Text("select 1".into())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                assert_eq!(u16::from(frame.code), 1003);
                assert!(frame.reason.contains("binary frames"), "{}", frame.reason);
                break;
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Plain HTTP: CORS and limits.

async fn post_sql(
    proxy: &RunningProxy,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let client = http_client();
    let mut req = client
        .post(format!("http://{}/sql", proxy.http_addr()))
        .header(
            "Neon-Connection-String",
            format!("postgresql://anyone@db.rowgate.test/{}", proxy.dbname()),
        )
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("rowgate answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn cors_answers_configured_origins_only() {
    let db = pg().new_database();
    let proxy = serverless_rowgate(
        &db,
        2,
        "cors_allowed_origins = [\"http://app.localhost:3000\"]",
    )
    .await;
    let client = http_client();
    let url = format!("http://{}/sql", proxy.http_addr());

    let pre = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "http://app.localhost:3000")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, neon-connection-string",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status().as_u16(), 204);
    let h = pre.headers();
    assert_eq!(
        h["access-control-allow-origin"],
        "http://app.localhost:3000"
    );
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "authorization",
        "neon-connection-string",
        "neon-array-mode",
        "neon-raw-text-output",
        "neon-batch-isolation-level",
    ] {
        assert!(allowed.contains(name), "{name} in {allowed}");
    }
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));

    let alice = format!("Bearer {}", token("user_alice"));
    let (status, h, v) = post_sql(
        &proxy,
        &[
            ("Origin", "http://app.localhost:3000"),
            ("Authorization", &alice),
            ("Neon-Array-Mode", "true"),
        ],
        json!({ "query": "select auth.user_id()", "params": [] }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        h["access-control-allow-origin"],
        "http://app.localhost:3000"
    );
    assert_eq!(v["rows"], json!([["user_alice"]]));

    let (status, h, v) = post_sql(
        &proxy,
        &[
            ("Origin", "https://evil.example"),
            ("Authorization", &alice),
        ],
        json!({ "query": "select 1" }).to_string(),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    assert!(h.get("access-control-allow-origin").is_none());
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("cors_allowed_origins"),
        "{v}"
    );
    let pre = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status().as_u16(), 403);
}

#[tokio::test]
async fn limits_answer_413_507_and_a_timeout_with_57014() {
    let db = pg().new_database();
    let proxy = serverless_rowgate(
        &db,
        1,
        "max_request_bytes = 2000\nmax_response_bytes = 10000\nrequest_timeout = \"1s\"",
    )
    .await;
    let alice = format!("Bearer {}", token("user_alice"));
    let auth = [("Authorization", alice.as_str())];

    let (status, _, v) = post_sql(
        &proxy,
        &auth,
        json!({ "query": "x".repeat(3000) }).to_string(),
    )
    .await;
    assert_eq!(status, 413, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("max_request_bytes"),
        "{v}"
    );

    let (status, _, v) = post_sql(
        &proxy,
        &auth,
        json!({ "query": "select repeat('x', 100) from generate_series(1, 1000)" }).to_string(),
    )
    .await;
    assert_eq!(status, 507, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("max_response_bytes"),
        "{v}"
    );

    let started = std::time::Instant::now();
    let (status, _, v) = post_sql(
        &proxy,
        &auth,
        json!({ "query": "select pg_sleep(30)" }).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["code"], "57014", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("request_timeout"),
        "{v}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // The sleeping statement was cancelled and the pool of one is free
    // again: the next request gets it at once.
    let (status, _, v) = post_sql(
        &proxy,
        &[
            ("Authorization", alice.as_str()),
            ("Neon-Array-Mode", "true"),
        ],
        json!({ "query": "select auth.user_id()" }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rows"], json!([["user_alice"]]));
    let admin = db.admin_client().await;
    let sleeping: i64 = admin
        .query_one("select count(*) from pg_stat_activity where query like 'select pg_sleep(30)%' and state = 'active'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        sleeping, 0,
        "the timed-out statement was cancelled upstream"
    );
}

/// reqwest is built without a default TLS provider (rowgate picks ring);
/// install it once, then build a client (plain HTTP to loopback here).
fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
