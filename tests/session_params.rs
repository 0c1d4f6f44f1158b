//! A client's session parameters (SET, RESET, startup parameters and
//! options) stay with that client on every later transaction, whichever
//! pooled connection it lands on, and never reach another client.

mod support;

use support::{pg, proxy_config, rowgate, token, RunningProxy};
use tokio_postgres::{Client, SimpleQueryMessage};

async fn one(c: &Client, sql: &str) -> Option<String> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
            _ => None,
        })
        .flatten()
}

const CHECK: &str = "select current_setting('statement_timeout') || ' ' || \
    coalesce(nullif(current_setting('myapp.tenant', true), ''), '-') || ' ' || current_setting('application_name') || ' ' || auth.user_id()";

async fn proxy(pool: usize) -> (support::TestDb, RunningProxy) {
    let db = pg().new_database();
    let p = rowgate(&proxy_config(&db, pool, "")).await;
    (db, p)
}

/// With the statement guard off: RESET ALL (which the guard refuses, as it
/// would clear the identity too) is the client's own business then, and
/// only `[session_state]` stands between a client and session state.
async fn proxy_without_guard(pool: usize) -> (support::TestDb, RunningProxy) {
    let db = pg().new_database();
    let p = rowgate(&(proxy_config(&db, pool, "") + "[guard]\nprofile = \"off\"\n")).await;
    (db, p)
}

#[tokio::test]
async fn a_session_set_stays_with_its_client_and_never_reaches_another() {
    let (_db, proxy) = proxy_without_guard(1).await;
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    let bob = proxy.connect(&token("user_bob")).await.unwrap();
    alice
        .batch_execute("SET statement_timeout = '1234ms'")
        .await
        .unwrap();
    alice
        .batch_execute("set myapp.tenant to 'acme'; SET application_name = 'alice-app'")
        .await
        .unwrap();
    // Both share the only pooled connection, in turns.
    for _ in 0..3 {
        assert_eq!(
            one(&alice, CHECK).await.as_deref(),
            Some("1234ms acme alice-app user_alice")
        );
        assert_eq!(one(&bob, CHECK).await.as_deref(), Some("0 -  user_bob"));
        // Extended protocol sees the same.
        let r = alice
            .query_one("select current_setting('statement_timeout')", &[])
            .await
            .unwrap();
        assert_eq!(r.get::<_, String>(0), "1234ms");
    }
    // SHOW answers the client's value.
    assert_eq!(
        one(&alice, "show statement_timeout").await.as_deref(),
        Some("1234ms")
    );
    // RESET one setting, then RESET ALL.
    alice
        .batch_execute("RESET statement_timeout")
        .await
        .unwrap();
    assert_eq!(
        one(&alice, CHECK).await.as_deref(),
        Some("0 acme alice-app user_alice")
    );
    alice.batch_execute("RESET ALL").await.unwrap();
    assert_eq!(
        one(&alice, "select current_setting('application_name')")
            .await
            .as_deref(),
        Some("")
    );
    assert_eq!(
        one(
            &alice,
            "select coalesce(current_setting('myapp.tenant', true), '')"
        )
        .await
        .as_deref(),
        Some("")
    );
}

#[tokio::test]
async fn a_set_in_a_rolled_back_transaction_does_not_stick() {
    let (_db, proxy) = proxy(2).await;
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    alice
        .batch_execute("begin; set statement_timeout = '5s'; rollback")
        .await
        .unwrap();
    assert_eq!(
        one(&alice, "show statement_timeout").await.as_deref(),
        Some("0")
    );
    alice.batch_execute("begin").await.unwrap();
    alice
        .batch_execute("set statement_timeout = '6s'")
        .await
        .unwrap();
    alice.batch_execute("commit").await.unwrap();
    assert_eq!(
        one(&alice, "show statement_timeout").await.as_deref(),
        Some("6s")
    );
    // A later SET that rolls back leaves the client's earlier value, not
    // the pooled connection's default.
    alice
        .batch_execute("begin; set statement_timeout = '9s'; rollback")
        .await
        .unwrap();
    assert_eq!(
        one(&alice, "show statement_timeout").await.as_deref(),
        Some("6s")
    );
    assert!(alice
        .batch_execute("set statement_timeout = '8s'; select 1/0")
        .await
        .is_err());
    assert_eq!(
        one(&alice, "show statement_timeout").await.as_deref(),
        Some("6s")
    );
    // SET LOCAL is the client's own business inside one transaction.
    alice
        .batch_execute("begin; set local statement_timeout = '7s'")
        .await
        .unwrap();
    assert_eq!(
        one(&alice, "show statement_timeout").await.as_deref(),
        Some("7s")
    );
    alice.batch_execute("commit").await.unwrap();
    assert_eq!(
        one(&alice, "show statement_timeout").await.as_deref(),
        Some("6s")
    );
}

#[tokio::test]
async fn startup_parameters_and_options_apply_to_every_transaction() {
    let (_db, proxy) = proxy_without_guard(1).await;
    let (alice, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(proxy.port())
        .user("alice")
        .password(token("user_alice"))
        .dbname(proxy.dbname())
        .application_name("alice-startup")
        .options("-c statement_timeout=777 -c myapp.tenant=from-options")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let bob = proxy.connect(&token("user_bob")).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            one(&alice, CHECK).await.as_deref(),
            Some("777ms from-options alice-startup user_alice")
        );
        assert_eq!(one(&bob, CHECK).await.as_deref(), Some("0 -  user_bob"));
    }
    // RESET ALL returns to the startup values, as PostgreSQL does.
    alice
        .batch_execute("SET statement_timeout = 5; RESET ALL")
        .await
        .unwrap();
    assert_eq!(
        one(&alice, CHECK).await.as_deref(),
        Some("777ms from-options alice-startup user_alice")
    );
}

#[tokio::test]
async fn set_config_at_session_level_is_kept_for_the_client_only() {
    let (_db, proxy) = proxy(1).await;
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    let bob = proxy.connect(&token("user_bob")).await.unwrap();
    alice
        .query(
            "select set_config('myapp.tenant', $1, false)",
            &[&"via-function"],
        )
        .await
        .unwrap();
    assert_eq!(
        one(&alice, CHECK).await.as_deref(),
        Some("0 via-function  user_alice")
    );
    assert_eq!(one(&bob, CHECK).await.as_deref(), Some("0 -  user_bob"));
}

#[tokio::test]
async fn session_state_is_refused_by_default_with_advice() {
    let (_db, proxy) = proxy(1).await;
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    for sql in [
        "LISTEN secrets",
        "create temp table scratch (a int)",
        "select pg_advisory_lock(42)",
        "PREPARE q AS select 1",
        "begin; declare c cursor with hold for select 1; commit",
    ] {
        let err = alice.simple_query(sql).await.expect_err(sql);
        let db_err = err.as_db_error().expect(sql);
        // The statement guard refuses temporary objects and WITH HOLD
        // cursors itself (42501); [session_state] refuses the rest (0A000).
        assert!(
            ["0A000", "42501"].contains(&db_err.code().code()),
            "{sql}: {db_err}"
        );
        assert!(db_err.message().contains("rowgate"), "{}", db_err.message());
    }
    // Refused inside a transaction, it aborts the transaction like any error.
    alice.batch_execute("begin").await.unwrap();
    assert!(alice.simple_query("listen x").await.is_err());
    let err = alice.simple_query("select 1").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
    );
    alice.batch_execute("rollback").await.unwrap();
    assert_eq!(
        one(&alice, "select auth.user_id()").await.as_deref(),
        Some("user_alice")
    );
}

#[tokio::test]
async fn a_setting_changed_inside_a_do_block_does_not_reach_the_next_client() {
    // The standard profile lets DO blocks through; rowgate cannot see into
    // them, so a `set_config` it cannot read as a call makes it reset the
    // connection after the transaction.
    let db = pg().new_database();
    let proxy = rowgate(&(proxy_config(&db, 1, "") + "[guard]\nprofile = \"standard\"\n")).await;
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    let bob = proxy.connect(&token("user_bob")).await.unwrap();
    let default = one(&bob, "show work_mem").await;
    alice
        .batch_execute("do $$ begin perform set_config('work_mem', '77kB', false); end $$")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(one(&bob, "show work_mem").await, default);
    }
}

#[tokio::test]
async fn session_state_is_found_by_the_parser_even_with_the_guard_off() {
    let (_db, proxy) = proxy_without_guard(1).await;
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    for sql in [
        "/* why */ LISTEN secrets",
        "select * from pg_advisory_lock(42)",
        "select x from (values (1)) v(x) where pg_catalog.pg_try_advisory_lock(x)",
        "create temp view v as select 1",
        "create type pg_temp.pair as (a int, b int)",
        "create table t1 (a int); create temp table t2 (a int) on commit preserve rows",
        "declare c cursor with hold for select 1",
    ] {
        let err = alice.simple_query(sql).await.expect_err(sql);
        let db_err = err.as_db_error().expect(sql);
        assert_eq!(db_err.code().code(), "0A000", "{sql}: {db_err}");
    }
    // Extended protocol: refused at Parse.
    let err = alice
        .prepare("select pg_advisory_lock_shared($1::bigint)")
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("0A000"));
    // Words in strings, transaction-scoped locks and ON COMMIT DROP are fine.
    alice
        .batch_execute(
            "select 'listen', 'pg_temp.x', 'hold'; select pg_advisory_xact_lock(7); \
             begin; create temp table scratch (a int) on commit drop; commit",
        )
        .await
        .unwrap();
    assert_eq!(
        one(&alice, "select auth.user_id()").await.as_deref(),
        Some("user_alice")
    );
}

#[tokio::test]
async fn pinned_session_state_stays_with_its_client_and_is_discarded_after() {
    let db = pg().new_database();
    let config =
        proxy_config(&db, 2, "") + "[session_state]\nlisten = \"pin\"\ntemp_tables = \"pin\"\n";
    let proxy = rowgate(&config).await;
    // LISTEN: only the listener gets the notification.
    let mut alice = support::RawClient::connect(&proxy, &token("user_alice")).await;
    let mut q = bytes::BytesMut::new();
    rowgate::wire::frontend::put_query(&mut q, "LISTEN secrets");
    assert_eq!(alice.exchange(&q).await, ["C", "Z"]);
    let bob = proxy.connect(&token("user_bob")).await.unwrap();
    let carol = proxy.connect(&token("user_carol")).await.unwrap();
    bob.batch_execute("NOTIFY secrets, 'for alice'")
        .await
        .unwrap();
    assert_eq!(
        one(&carol, "select auth.user_id()").await.as_deref(),
        Some("user_carol")
    );
    let mut q = bytes::BytesMut::new();
    rowgate::wire::frontend::put_query(&mut q, "select 1");
    let tags = alice.exchange(&q).await;
    assert!(tags.contains(&"A".to_string()), "alice got {tags:?}");
    drop(alice);

    // A temporary table lives on for its client, across transactions.
    let dave = proxy.connect(&token("user_dave")).await.unwrap();
    dave.batch_execute("create temp table scratch (a int); insert into scratch values (1)")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            one(&dave, "select count(*)::text from scratch")
                .await
                .as_deref(),
            Some("1")
        );
        assert_eq!(
            one(&bob, "select auth.user_id()").await.as_deref(),
            Some("user_bob")
        );
    }
    drop(dave);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // After the pinned clients left, nobody sees their state.
    for _ in 0..4 {
        assert!(bob.simple_query("select * from scratch").await.is_err());
        assert_eq!(
            one(&bob, "select count(*)::text from pg_listening_channels()")
                .await
                .as_deref(),
            Some("0")
        );
    }
}

/// `set_config` with bind parameters: judged at Bind, with the values, as
/// PostgreSQL runs them. Harmless values work exactly as they do directly;
/// protected names and unsafe encodings are refused with 42501.
#[tokio::test]
async fn set_config_with_bound_values_is_judged_at_bind() {
    let (db, proxy) = proxy(1).await;
    let direct = db.admin_client().await;
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    let name_and_value = "select set_config($1, $2, false)";
    let encoding = "select set_config('client_encoding', $1, false)";
    for (sql, params) in [
        (name_and_value, vec!["myapp.theme", "dark"]),
        (encoding, vec!["LATIN1"]),
        (encoding, vec!["UTF8"]),
    ] {
        let p: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let want: String = direct.query_one(sql, &p).await.unwrap().get(0);
        let got: String = alice
            .query_one(sql, &p)
            .await
            .unwrap_or_else(|e| panic!("{sql} {params:?}: {e}"))
            .get(0);
        assert_eq!(got, want, "{sql} {params:?}");
    }
    for (sql, params) in [
        (name_and_value, vec!["app.user_id", "victim"]),
        (name_and_value, vec!["ROLE", "postgres"]),
        (encoding, vec!["SJIS"]),
    ] {
        let p: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let err = alice.query_one(sql, &p).await.expect_err("refused");
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "{sql} {params:?}: {err}"
        );
    }
    assert_eq!(
        one(&alice, "select auth.user_id()").await.as_deref(),
        Some("user_alice")
    );
}

/// A notification from the client's own backend carries the pid of the
/// BackendKeyData the client got (rowgate's), as it carries the backend's
/// own pid on PostgreSQL: clients recognise their own notifications so.
#[tokio::test]
async fn a_notification_from_the_own_backend_carries_the_clients_pid() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = pg().new_database();
    let config = proxy_config(&db, 2, "") + "[session_state]\nlisten = \"pin\"\n";
    let proxy = rowgate(&config).await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let mut out =
        rowgate::wire::frontend::startup_message(&[("user", "raw"), ("database", proxy.dbname())])
            .to_vec();
    let mut b = bytes::BytesMut::new();
    rowgate::wire::put_frame(&mut b, b'p', |b| {
        rowgate::wire::put_cstr(b, token("user_alice").as_bytes())
    });
    rowgate::wire::frontend::put_query(&mut b, "LISTEN mine; NOTIFY mine, 'hello'");
    out.extend_from_slice(&b);
    tcp.write_all(&out).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let (mut key_pid, mut notified_pid) = (None, None);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while notified_pid.is_none() {
        while let Some(f) = rowgate::wire::next_frame(&mut buf, 1 << 20).unwrap() {
            let pid = f
                .body()
                .get(..4)
                .map(|p| i32::from_be_bytes([p[0], p[1], p[2], p[3]]));
            match f.tag() {
                b'K' => key_pid = pid,
                b'A' => notified_pid = pid,
                b'E' => panic!("error: {:?}", String::from_utf8_lossy(f.body())),
                _ => {}
            }
        }
        if notified_pid.is_some() {
            break;
        }
        let n = tokio::time::timeout_at(deadline, tcp.read_buf(&mut buf))
            .await
            .expect("a notification within 10 s")
            .unwrap();
        assert!(n > 0, "closed");
    }
    assert!(key_pid.is_some());
    assert_eq!(
        notified_pid, key_pid,
        "the notification names the client's own pid"
    );
}

/// The ParameterStatus values of a startup with `params`, logging in with
/// `password` by whatever the server asks (cleartext from rowgate, SCRAM
/// from PostgreSQL).
async fn startup_reports(
    port: u16,
    password: &str,
    params: &[(&str, &str)],
) -> Vec<(String, String)> {
    use bytes::{Buf, BytesMut};
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use postgres_protocol::message::frontend;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut out = BytesMut::new();
    frontend::startup_message(params.iter().copied(), &mut out).unwrap();
    tcp.write_all(&out).await.unwrap();
    let (mut buf, mut scram, mut reports) = (BytesMut::new(), None, Vec::new());
    loop {
        while buf.len() < 5
            || buf.len() < 1 + u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize
        {
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read_buf(&mut buf))
                    .await
                    .expect("startup reply within 10 s")
                    .unwrap();
            assert!(n > 0, "server closed during startup");
        }
        let tag = buf[0];
        let len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
        let body = buf.split_to(1 + len).split_off(5);
        let mut out = BytesMut::new();
        match tag {
            b'R' => match (&body[..]).get_i32() {
                0 => continue,
                3 => frontend::password_message(password.as_bytes(), &mut out).unwrap(),
                10 => {
                    let sc = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response("SCRAM-SHA-256", sc.message(), &mut out)
                        .unwrap();
                    scram = Some(sc);
                }
                11 => {
                    let sc = scram.as_mut().unwrap();
                    sc.update(&body[4..]).unwrap();
                    frontend::sasl_response(sc.message(), &mut out).unwrap();
                }
                12 => {
                    scram.as_mut().unwrap().finish(&body[4..]).unwrap();
                    continue;
                }
                n => panic!("unexpected authentication request {n}"),
            },
            b'S' => {
                let mut parts = body[..].split(|b: &u8| *b == 0);
                let name = String::from_utf8_lossy(parts.next().unwrap()).into_owned();
                let value = String::from_utf8_lossy(parts.next().unwrap()).into_owned();
                reports.push((name, value));
                continue;
            }
            b'E' => panic!("startup failed: {}", String::from_utf8_lossy(&body)),
            b'Z' => return reports,
            _ => continue,
        }
        tcp.write_all(&out).await.unwrap();
    }
}

/// `client_encoding` in the startup packet, in any spelling, is reported
/// back by the name PostgreSQL itself reports (`UTF8`, `EUC_JP`, ...):
/// drivers map their decoder from it.
#[tokio::test]
async fn startup_client_encoding_is_reported_as_postgresql_reports_it() {
    let db = pg().new_database();
    let proxy = rowgate(&proxy_config(&db, 1, "")).await;
    let tok = token("user_alice");
    for spelling in [
        "utf-8",
        "UTF8",
        "unicode",
        "euc-jp",
        "latin1",
        "ISO-8859-15",
        "win1252",
    ] {
        let encoding = |reports: &[(String, String)]| {
            reports
                .iter()
                .find(|(n, _)| n == "client_encoding")
                .map(|(_, v)| v.clone())
        };
        let direct = startup_reports(
            db.port(),
            support::AUTHENTICATOR_PASSWORD,
            &[
                ("user", support::AUTHENTICATOR),
                ("database", db.name()),
                ("client_encoding", spelling),
            ],
        )
        .await;
        let proxied = startup_reports(
            proxy.port(),
            &tok,
            &[
                ("user", "anyone"),
                ("database", proxy.dbname()),
                ("client_encoding", spelling),
            ],
        )
        .await;
        assert!(encoding(&direct).is_some(), "{spelling}: {direct:?}");
        assert_eq!(encoding(&proxied), encoding(&direct), "{spelling}");
    }
}
