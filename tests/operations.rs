//! Operating rowgate like PgBouncer (docs/operations.md): the admin
//! console through tokio-postgres and psql, reload under load, graceful
//! drain, limits, and `/metrics` read by a Prometheus text parser.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::ops::{
    code, connect_watched, console, http_get, ops_config, rows, text, ADMIN_PASSWORD,
};
use support::{clerk_claims, keys, pg, proxy_config, psql, rowgate, sign_rs256, token, TestKeys};

/// A proxy config with `listen_extra` lines in `[listen]`, the console
/// and metrics on, and `tail` sections appended.
fn config(db: &support::TestDb, pool_size: usize, listen_extra: &str, tail: &str) -> String {
    proxy_config(db, pool_size, "").replacen(
        "addr = \"127.0.0.1:0\"\n",
        &format!("addr = \"127.0.0.1:0\"\n{listen_extra}\n"),
        1,
    ) + &ops_config()
        + tail
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..250 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_command_answers_tokio_postgres() {
    let db = pg().new_database();
    let proxy = rowgate(&config(&db, 2, "", "")).await;
    let alice_token = token("user_alice");
    let app = proxy.connect(&alice_token).await.unwrap();
    app.simple_query("SELECT 1").await.unwrap();
    let c = console(proxy.port(), ADMIN_PASSWORD).await.unwrap();

    let pools = rows(&c, "SHOW POOLS").await;
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0]["pool_size"], "2");
    assert_eq!(pools[0]["cl_idle"], "1");
    assert_eq!(pools[0]["sv_idle"], "1");
    assert_eq!(pools[0]["paused"], "no");

    let clients = rows(&c, "show clients;").await;
    assert_eq!(clients.len(), 1, "the console is not a pooled client");
    assert_eq!(clients[0]["sub"], "user_alice");
    assert_eq!(clients[0]["database"], db.name());
    assert_eq!(clients[0]["state"], "idle");
    assert_eq!(clients[0]["transactions"], "1");
    assert!(clients[0]["connect_time"].ends_with("UTC"));

    let servers = rows(&c, "SHOW SERVERS").await;
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0]["state"], "idle");
    assert!(servers[0]["pid"].parse::<i32>().unwrap() > 0);

    let stats = rows(&c, "SHOW STATS").await;
    assert!(stats[0]["total_xact_count"].parse::<u64>().unwrap() >= 1);

    let config = rows(&c, "SHOW CONFIG").await;
    let pool_size = config
        .iter()
        .find(|r| r["key"] == format!("databases.{}.pool_size", db.name()))
        .unwrap();
    assert_eq!(pool_size["value"], "2");
    assert_eq!(pool_size["reloadable"], "yes");

    let keys_shown = rows(&c, "SHOW KEYS").await;
    assert_eq!(keys_shown.len(), 1);
    assert_eq!(keys_shown[0]["issuer"], support::ISSUER);
    assert_eq!(keys_shown[0]["source"], "pem");

    // Nothing the console shows holds the token.
    for cmd in ["SHOW CLIENTS", "SHOW CONFIG", "SHOW KEYS", "SHOW SERVERS"] {
        for r in rows(&c, cmd).await {
            assert!(r.values().all(|v| !v.contains(&alice_token)), "{cmd}");
        }
    }

    // PAUSE: new transactions wait until RESUME, then run.
    c.simple_query("PAUSE").await.unwrap();
    let waiting = tokio::spawn(async move { app.simple_query("SELECT 42").await.map(|_| app) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a transaction started while paused");
    let pools = rows(&c, "SHOW POOLS").await;
    assert_eq!(pools[0]["paused"], "yes");
    assert_eq!(pools[0]["cl_waiting"], "1");
    c.simple_query("RESUME").await.unwrap();
    let app = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("runs after RESUME")
        .unwrap()
        .expect("and succeeds");

    // KILL: the client gets 57P01 and its connection closes.
    let bob = connect_watched(proxy.port(), proxy.dbname(), &token("user_bob"))
        .await
        .unwrap();
    bob.client.simple_query("SELECT 1").await.unwrap();
    let id = rows(&c, "SHOW CLIENTS")
        .await
        .into_iter()
        .find(|r| r["sub"] == "user_bob")
        .unwrap()["id"]
        .clone();
    c.simple_query(&format!("KILL {id}")).await.unwrap();
    let (code_, message) = tokio::time::timeout(Duration::from_secs(5), bob.ended)
        .await
        .unwrap()
        .unwrap()
        .expect("a FATAL error");
    assert_eq!(code_, "57P01");
    assert!(message.contains("administrator"), "{message}");
    app.simple_query("SELECT 1")
        .await
        .expect("others are untouched");

    // Mistakes are errors, not a dead console.
    let e = c.simple_query("KILL 999999").await.unwrap_err();
    assert_eq!(code(&e), "42704");
    let e = c.simple_query("SHOW TOKENS").await.unwrap_err();
    assert_eq!(code(&e), "42601");
    let e = c.query("SHOW POOLS", &[]).await.unwrap_err();
    assert_eq!(code(&e), "0A000", "extended protocol is refused clearly");
    rows(&c, "SHOW POOLS").await;

    let e = console(proxy.port(), "wrong").await.unwrap_err();
    assert_eq!(code(&e), "28P01");

    // SHUTDOWN: the listener closes once the clients are gone.
    c.simple_query("SHUTDOWN").await.unwrap();
    let ended = proxy.connect(&token("user_late")).await;
    drop(app);
    wait_until("the listener closed", || {
        std::net::TcpStream::connect(proxy.addr()).is_err()
    })
    .await;
    let _ = ended;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_command_answers_psql() {
    let db = pg().new_database();
    let proxy = rowgate(&config(&db, 2, "", "")).await;
    let app = proxy.connect(&token("user_alice")).await.unwrap();
    app.simple_query("SELECT 1").await.unwrap();
    let pool_size_row = format!("databases.{}.pool_size|2|yes", db.name());
    let conninfo = format!(
        "host=127.0.0.1 port={} dbname=rowgate user=admin sslmode=disable",
        proxy.port()
    );
    for (cmd, expect) in [
        ("SHOW POOLS", "|2|no"),
        ("SHOW CLIENTS", "user_alice"),
        ("SHOW SERVERS", "idle"),
        ("SHOW STATS", db.name()),
        ("SHOW CONFIG", pool_size_row.as_str()),
        ("SHOW KEYS", support::ISSUER),
        ("PAUSE", ""),
        ("RESUME", ""),
    ] {
        let (c, cmd_) = (conninfo.clone(), cmd.to_string());
        let out = tokio::task::spawn_blocking(move || psql(&c, ADMIN_PASSWORD, &cmd_))
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(expect), "{cmd}: {stdout}");
    }
    let out = tokio::task::spawn_blocking(move || psql(&conninfo, "wrong", "SHOW POOLS"))
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_pool_size_and_keys_under_load_without_client_errors() {
    let db = pg().new_database();
    let dir = std::env::temp_dir().join(format!("rowgate-reload-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rowgate.toml");
    let before = config(&db, 1, "", "");
    std::fs::write(&path, &before).unwrap();
    let proxy = rowgate(&before).await;
    proxy.server().set_config_path(path.clone());

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for i in 0..4 {
        let client = proxy.connect(&token(&format!("user_{i}"))).await.unwrap();
        let (stop, done) = (stop.clone(), done.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                client
                    .batch_execute("BEGIN; SELECT count(*) FROM user_messages; COMMIT")
                    .await
                    .map_err(|e| e.to_string())?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, String>(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Rotation: a second key joins the first, in a JWKS file.
    let new_key = TestKeys::generate("rowgate-test-2");
    let mut both = keys().jwks.clone();
    both["keys"]
        .as_array_mut()
        .unwrap()
        .push(new_key.jwks["keys"][0].clone());
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, both.to_string()).unwrap();
    let after = config(&db, 3, "", "").replace(
        &format!("public_key_file = \"{}\"", keys().public_pem_path.display()),
        &format!("jwks_file = \"{}\"", jwks.display()),
    );
    assert_ne!(after, before);
    std::fs::write(&path, &after).unwrap();
    let c = console(proxy.port(), ADMIN_PASSWORD).await.unwrap();
    c.simple_query("RELOAD").await.expect("reload accepted");
    assert_eq!(rows(&c, "SHOW POOLS").await[0]["pool_size"], "3");
    let kids: Vec<String> = rows(&c, "SHOW KEYS")
        .await
        .into_iter()
        .map(|r| r["kid"].clone())
        .collect();
    assert!(kids.contains(&"rowgate-test-2".to_string()), "{kids:?}");

    let fresh = proxy
        .connect(&sign_rs256(&new_key, clerk_claims("user_new")))
        .await
        .expect("a token of the new key logs in");
    fresh.simple_query("SELECT 1").await.unwrap();
    proxy
        .connect(&token("user_old"))
        .await
        .expect("the old key still works");

    // A broken config keeps the one in force and says why.
    std::fs::write(&path, after.replace("pool_size = 3", "pool_size = 0")).unwrap();
    let e = c.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(code(&e), "F0000");
    assert!(text(&e).contains("pool_size"), "{e}");
    assert_eq!(rows(&c, "SHOW POOLS").await[0]["pool_size"], "3");
    // So does one that changes the server.
    let moved = after.replace(&format!("/{}", db.name()), "/elsewhere");
    let e = proxy
        .server()
        .reload(rowgate::Config::from_toml(&moved).unwrap())
        .await
        .unwrap_err();
    assert!(e.contains("restart"), "{e}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap().expect("no client noticed the reloads");
    }
    assert!(done.load(Ordering::Relaxed) > 10);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_an_open_transaction_commit_then_sends_57p01() {
    let db = pg().new_database();
    let proxy = rowgate(&config(&db, 2, "shutdown_accept_delay = \"500ms\"", "")).await;
    let maddr = proxy.server().metrics_addr().unwrap();
    assert_eq!(http_get(maddr, "/readyz").await.0, 200);
    let writer = connect_watched(proxy.port(), proxy.dbname(), &token("user_w"))
        .await
        .unwrap();
    writer
        .client
        .batch_execute("BEGIN; INSERT INTO user_messages (message) VALUES ('drained')")
        .await
        .unwrap();
    let idle = connect_watched(proxy.port(), proxy.dbname(), &token("user_i"))
        .await
        .unwrap();
    idle.client.simple_query("SELECT 1").await.unwrap();

    let shutdown = proxy
        .server()
        .spawn_shutdown(rowgate::admin::ShutdownMode::Graceful);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = http_get(maddr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    assert_eq!(http_get(maddr, "/healthz").await.0, 200);
    // Still accepting during shutdown_accept_delay (Kubernetes still routes).
    let late = proxy
        .connect(&token("user_late"))
        .await
        .expect("accepted during the delay");
    drop(late);

    // After the delay: the idle client is told and closed ...
    let (c, m) = tokio::time::timeout(Duration::from_secs(5), idle.ended)
        .await
        .unwrap()
        .unwrap()
        .expect("FATAL");
    assert_eq!(c, "57P01");
    assert!(m.contains("shutting down"), "{m}");
    wait_until("the listener closed", || {
        std::net::TcpStream::connect(proxy.addr()).is_err()
    })
    .await;
    // ... while the open transaction carries on and commits.
    writer
        .client
        .batch_execute("INSERT INTO user_messages (message) VALUES ('drained 2'); COMMIT")
        .await
        .expect("the open transaction finishes");
    let (c, _) = tokio::time::timeout(Duration::from_secs(5), writer.ended)
        .await
        .unwrap()
        .unwrap()
        .expect("FATAL after the transaction");
    assert_eq!(c, "57P01");
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown ends when the clients are gone")
        .unwrap();
    assert_eq!(proxy.server().client_count(), 0);
    let admin = db.admin_client().await;
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM user_messages WHERE message LIKE 'drained%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "the transaction committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_with_clear_errors_and_count_refusals() {
    let db = pg().new_database();
    let proxy = rowgate(&config(
        &db,
        2,
        "max_client_connections = 3\nmax_connections_per_user = 1\nlogin_timeout = \"300ms\"\n\
         max_message_size = 100000\nmax_transactions_per_second_per_user = 5",
        "[guard]\nmax_statement_size = 1000\n",
    ))
    .await;
    let a = proxy.connect(&token("user_a")).await.unwrap();
    let e = proxy.connect(&token("user_a")).await.unwrap_err();
    assert_eq!(code(&e), "53300");
    assert!(text(&e).contains("max_connections_per_user"), "{e}");
    let _b = proxy.connect(&token("user_b")).await.unwrap();
    let _c = proxy.connect(&token("user_c")).await.unwrap();
    let e = proxy.connect(&token("user_d")).await.unwrap_err();
    assert_eq!(code(&e), "53300");
    assert!(text(&e).contains("max_client_connections"), "{e}");
    assert!(rowgate::metrics::get("rowgate_refusals_total", "max_client_connections") >= 1);
    assert!(rowgate::metrics::get("rowgate_refusals_total", "max_connections_per_user") >= 1);
    drop(_c);

    // A statement over max_statement_size is refused by its size.
    let big = format!("SELECT '{}'", "x".repeat(2000));
    let e = a.simple_query(&big).await.unwrap_err();
    assert_eq!(code(&e), "42501");
    assert!(text(&e).contains("2009 bytes"), "{}", text(&e));
    assert!(text(&e).contains("max_statement_size"), "{}", text(&e));

    // The transaction rate: a burst of 5, then refusals; others unaffected.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut refused = 0;
    for _ in 0..10 {
        if let Err(e) = a.simple_query("SELECT 1").await {
            assert_eq!(code(&e), "53400");
            assert!(text(&e).contains("per second"), "{e}");
            refused += 1;
        }
    }
    assert!(refused >= 4, "refused {refused} of 10");
    _b.simple_query("SELECT 1")
        .await
        .expect("another user has their own budget");

    // A message over max_message_size ends the connection with 08P01.
    let huge = format!("SELECT '{}'", "y".repeat(200_000));
    let e = _b.simple_query(&huge).await.unwrap_err();
    assert!(e.is_closed() || code(&e) == "08P01", "{e}");
    assert!(rowgate::metrics::get("rowgate_refusals_total", "max_message_size") >= 1);

    // A client that never finishes logging in is closed at login_timeout.
    wait_until("a slot is free", || proxy.server().client_count() < 3).await;
    let mut raw = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::io::AsyncReadExt::read(&mut raw, &mut buf),
    )
    .await
    .expect("closed within the login timeout");
    assert_eq!(n.unwrap_or(0), 0);
    assert!(rowgate::metrics::get("rowgate_refusals_total", "login_timeout") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_with_latency_histograms() {
    let db = pg().new_database();
    let proxy = rowgate(&config(&db, 2, "", "")).await;
    let t = token("user_m");
    let app = proxy.connect(&t).await.unwrap();
    for _ in 0..3 {
        app.simple_query("SELECT 1").await.unwrap();
    }
    let e = app.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(code(&e), "22012");
    let _again = proxy.connect(&t).await.unwrap();
    let _ = proxy.connect("not-a-token").await.unwrap_err();
    let maddr = proxy.server().metrics_addr().unwrap();
    let (status, text) = http_get(maddr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(!text.contains(&t), "a token in the metrics");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text");
    let find = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
    };
    let histogram_count =
        |name: &str, label: Option<(&str, &str)>| match find(name, label).map(|s| &s.value) {
            Some(prometheus_parse::Value::Histogram(buckets)) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            other => panic!("{name}: {other:?}\n{text}"),
        };
    assert!(
        histogram_count(
            "rowgate_pool_acquire_seconds",
            Some(("database", db.name()))
        ) >= 3.0
    );
    assert!(histogram_count("rowgate_upstream_connect_seconds", Some(("kind", "ok"))) >= 1.0);
    assert!(histogram_count("rowgate_jwt_verify_seconds", Some(("kind", "miss"))) >= 1.0);
    assert!(histogram_count("rowgate_jwt_verify_seconds", Some(("kind", "hit"))) >= 1.0);
    assert!(
        histogram_count(
            "rowgate_transaction_duration_seconds",
            Some(("database", db.name()))
        ) >= 3.0
    );
    assert!(
        find("rowgate_clients", Some(("state", "idle"))).is_some(),
        "{text}"
    );
    assert!(find("rowgate_pool_size", None).is_some(), "{text}");
    assert!(
        find("rowgate_auth_failures_total", Some(("reason", "malformed"))).is_some(),
        "{text}"
    );
    assert!(find("rowgate_transactions_total", None).is_some(), "{text}");
    assert!(find("rowgate_statements_total", None).is_some(), "{text}");
    for direction in ["from_client", "from_server"] {
        assert!(
            find("rowgate_bytes_total", Some(("direction", direction))).is_some(),
            "{text}"
        );
    }
    assert!(
        find("rowgate_server_errors_total", Some(("class", "22"))).is_some(),
        "{text}"
    );
    assert_eq!(http_get(maddr, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(http_get(maddr, "/readyz").await, (200, "ready\n".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rotates_a_service_password_while_its_pool_stays_connected() {
    let db = pg().new_database();
    let service = |pw: &str| format!("[[services]]\nname = \"billing\"\npassword = \"{pw}\"\n");
    let before = config(&db, 2, "", &service("old-secret"));
    let proxy = rowgate(&before).await;
    let pooled = proxy
        .connect_as("billing", "old-secret")
        .await
        .expect("the service logs in");
    pooled.simple_query("SELECT 1").await.unwrap();

    let after = config(&db, 2, "", &service("new-secret"));
    proxy
        .server()
        .reload(rowgate::Config::from_toml(&after).unwrap())
        .await
        .expect("reload accepted");
    let e = proxy
        .connect_as("billing", "old-secret")
        .await
        .expect_err("the old password no longer logs in");
    assert_eq!(code(&e), "28P01");
    proxy
        .connect_as("billing", "new-secret")
        .await
        .expect("the new password logs in")
        .simple_query("SELECT 1")
        .await
        .unwrap();
    pooled
        .simple_query("SELECT 1")
        .await
        .expect("a connection opened with the old password stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_resizes_each_database_and_refuses_a_new_one() {
    let (a, b) = (pg().new_database(), pg().new_database());
    let text = |size_b: usize, extra: &str| {
        format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n\
             [databases.{an}]\nurl = \"{au}\"\npool_size = 2\n\
             [databases.{bn}]\nurl = \"{bu}\"\npool_size = {size_b}\n{extra}\
             [auth]\nissuer = \"{iss}\"\npublic_key_file = \"{pem}\"\n{ops}",
            an = a.name(),
            au = a.authenticator_url(),
            bn = b.name(),
            bu = b.authenticator_url(),
            iss = support::ISSUER,
            pem = keys().public_pem_path.display(),
            ops = ops_config(),
        )
    };
    let proxy = rowgate(&text(1, "")).await;
    let c = console(proxy.port(), ADMIN_PASSWORD).await.unwrap();
    let size_of = |pools: &[std::collections::HashMap<String, String>], name: &str| {
        pools.iter().find(|r| r["database"] == name).unwrap()["pool_size"].clone()
    };
    let pools = rows(&c, "SHOW POOLS").await;
    assert_eq!(pools.len(), 2, "one row per database");
    assert_eq!(size_of(&pools, b.name()), "1");

    proxy
        .server()
        .reload(rowgate::Config::from_toml(&text(4, "")).unwrap())
        .await
        .expect("reload accepted");
    let pools = rows(&c, "SHOW POOLS").await;
    assert_eq!(size_of(&pools, a.name()), "2");
    assert_eq!(size_of(&pools, b.name()), "4");

    // A database added by a reload needs a restart; nothing changes.
    let added = text(
        9,
        &format!("[databases.extra]\nurl = \"{}\"\n", a.authenticator_url()),
    );
    let e = proxy
        .server()
        .reload(rowgate::Config::from_toml(&added).unwrap())
        .await
        .unwrap_err();
    assert!(e.contains("restart"), "{e}");
    assert_eq!(size_of(&rows(&c, "SHOW POOLS").await, b.name()), "4");
}
