//! rowgate end to end against a real PostgreSQL: identity in every
//! transaction, nothing left behind on pooled connections, errors and
//! transaction status exactly as PostgreSQL reports them.

mod support;

use support::{pg, proxy_config, rowgate, token, RawClient, RunningProxy};
use tokio_postgres::{Client, SimpleQueryMessage};

async fn setup(pool_size: usize) -> (support::TestDb, RunningProxy) {
    let db = pg().new_database();
    let admin = db.admin_client().await;
    admin
        .batch_execute(
            "INSERT INTO user_messages (user_id, message) VALUES
             ('user_alice', 'alice 1'), ('user_alice', 'alice 2'), ('user_bob', 'bob 1')",
        )
        .await
        .unwrap();
    let proxy = rowgate(&proxy_config(&db, pool_size, "")).await;
    (db, proxy)
}

/// First column of every row of a simple query.
async fn simple_col(c: &Client, sql: &str) -> Vec<Option<String>> {
    first_col(c.simple_query(sql).await.unwrap())
}

/// First column of every row in a simple query's messages.
fn first_col(messages: Vec<SimpleQueryMessage>) -> Vec<Option<String>> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn every_statement_sees_the_verified_identity() {
    let (_db, proxy) = setup(2).await;
    let alice = proxy.connect(&token("user_alice")).await.unwrap();

    // Simple protocol, autocommit.
    assert_eq!(
        simple_col(&alice, "select current_setting('app.user_id', true)").await,
        [Some("user_alice".to_string())]
    );
    // Extended protocol (tokio-postgres prepares a named statement).
    let row = alice
        .query_one(
            "select auth.user_id(), auth.claims()->>'sub', auth.claims()->>'iss', \
             current_setting('request.jwt.claims', true)::jsonb->>'azp'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("user_alice")
    );
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("user_alice")
    );
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some(support::ISSUER)
    );
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some(support::AZP)
    );
    // RLS: only alice's rows.
    let rows = alice
        .query("select message from user_messages order by id", &[])
        .await
        .unwrap();
    let msgs: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(msgs, ["alice 1", "alice 2"]);
    // Inserts get the identity as the default owner and pass WITH CHECK.
    alice
        .execute(
            "insert into user_messages (message) values ($1)",
            &[&"alice 3"],
        )
        .await
        .unwrap();
    // Explicit transaction: identity inside, status reported as PostgreSQL does.
    alice.batch_execute("begin").await.unwrap();
    assert_eq!(
        simple_col(&alice, "select auth.user_id()").await,
        [Some("user_alice".into())]
    );
    alice.batch_execute("commit").await.unwrap();
    // A statement after COMMIT in the same string runs in a new transaction
    // rowgate did not open: the pooled connection itself holds no identity.
    assert_eq!(
        simple_col(
            &alice,
            "commit; select coalesce(current_setting('app.user_id', true), '')"
        )
        .await,
        [Some(String::new())]
    );
}

#[tokio::test]
async fn two_users_never_see_each_other_through_a_small_pool() {
    let (_db, proxy) = setup(2).await;
    let mut tasks = Vec::new();
    for user in ["user_alice", "user_bob"] {
        for worker in 0..3 {
            let client = proxy.connect(&token(user)).await.unwrap();
            tasks.push(tokio::spawn(async move {
                let stmt = client
                    .prepare("select auth.user_id(), array_agg(distinct user_id) from user_messages")
                    .await
                    .unwrap();
                for i in 0..400 {
                    let (who, owners): (Option<String>, Option<Vec<String>>) = match (i + worker) % 3 {
                        0 => {
                            let r = client.query_one(&stmt, &[]).await.unwrap();
                            (r.get(0), r.get(1))
                        }
                        1 => {
                            let rows = client
                                .simple_query("select auth.user_id(), array_agg(distinct user_id)::text from user_messages")
                                .await
                                .unwrap();
                            let row = rows.iter().find_map(|m| match m {
                                SimpleQueryMessage::Row(r) => Some(r),
                                _ => None,
                            });
                            let row = row.unwrap();
                            let owners = row.get(1).map(|s| {
                                s.trim_matches(|c| c == '{' || c == '}')
                                    .split(',')
                                    .map(str::to_owned)
                                    .collect()
                            });
                            (row.get(0).map(str::to_owned), owners)
                        }
                        _ => {
                            client.batch_execute("begin").await.unwrap();
                            let r = client.query_one(&stmt, &[]).await.unwrap();
                            client.batch_execute("commit").await.unwrap();
                            (r.get(0), r.get(1))
                        }
                    };
                    assert_eq!(who.as_deref(), Some(user), "identity leaked");
                    assert_eq!(owners, Some(vec![user.to_string()]), "rows leaked");
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn errors_and_transaction_status_are_postgres_own() {
    let (db, proxy) = setup(1).await;
    let direct = db.authenticator_client().await;
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    for sql in [
        "select 1/0",
        "selec 1",
        "select nosuchcolumn from user_messages",
        "",
    ] {
        let via = alice.simple_query(sql).await;
        let raw = direct.simple_query(sql).await;
        match (via, raw) {
            (Ok(a), Ok(b)) => assert_eq!(a.len(), b.len(), "{sql}"),
            (Err(a), Err(b)) => {
                let (a, b) = (a.as_db_error().unwrap(), b.as_db_error().unwrap());
                assert_eq!(a.code(), b.code(), "{sql}");
                assert_eq!(a.message(), b.message(), "{sql}");
                assert_eq!(a.position(), b.position(), "{sql}");
            }
            (a, b) => panic!("{sql}: through rowgate {a:?}, directly {b:?}"),
        }
    }
    // Extended-protocol error, then the session goes on.
    assert!(alice.query("select $1::int / 0", &[&1i32]).await.is_err());
    // An error inside a transaction aborts it; ROLLBACK works; identity is back.
    alice.batch_execute("begin").await.unwrap();
    let err = alice.simple_query("select 1/0").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
    );
    let err = alice.simple_query("select 1").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
    );
    alice.batch_execute("rollback").await.unwrap();
    assert_eq!(
        simple_col(&alice, "select auth.user_id()").await,
        [Some("user_alice".into())]
    );
    // Notices pass through.
    alice
        .batch_execute("drop table if exists no_such_table_for_a_notice")
        .await
        .unwrap();
}

#[tokio::test]
async fn statements_that_refuse_a_transaction_still_run() {
    let (_db, proxy) = setup(1).await;
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    alice.batch_execute("vacuum user_messages").await.unwrap();
    alice.batch_execute("discard all").await.unwrap();
    alice
        .batch_execute("begin isolation level serializable")
        .await
        .unwrap();
    assert_eq!(
        simple_col(
            &alice,
            "select current_setting('transaction_isolation') || ' ' || auth.user_id()"
        )
        .await,
        [Some("serializable user_alice".into())]
    );
    alice.batch_execute("commit").await.unwrap();
    alice.batch_execute("begin").await.unwrap();
    alice
        .batch_execute("set transaction isolation level repeatable read")
        .await
        .unwrap();
    assert_eq!(
        simple_col(
            &alice,
            "select current_setting('transaction_isolation') || ' ' || auth.user_id()"
        )
        .await,
        [Some("repeatable read user_alice".into())]
    );
    alice.batch_execute("commit").await.unwrap();
    // Prepared statements still work after DISCARD ALL.
    let r = alice.query_one("select auth.user_id()", &[]).await.unwrap();
    assert_eq!(r.get::<_, Option<String>>(0).as_deref(), Some("user_alice"));
}

#[tokio::test]
async fn a_client_killed_mid_transaction_leaves_nothing_for_the_next_user() {
    let (db, proxy) = setup(1).await;
    {
        let alice = proxy.connect(&token("user_alice")).await.unwrap();
        alice.batch_execute("begin").await.unwrap();
        alice
            .batch_execute(
                "update user_messages set message = 'changed' where user_id = 'user_alice'",
            )
            .await
            .unwrap();
        alice
            .batch_execute("select set_config('myapp.custom', 'alice-was-here', true)")
            .await
            .unwrap();
        // Dropped here mid-transaction: the socket closes without Terminate.
    }
    // The only pooled connection goes to bob next.
    let bob = proxy.connect(&token("user_bob")).await.unwrap();
    let msgs = bob
        .simple_query("select auth.user_id(), coalesce(current_setting('myapp.custom', true), ''), txid_current_if_assigned()::text")
        .await
        .unwrap_or_else(|e| panic!("bob's query failed: {e}"));
    let seen = msgs.into_iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some((
            r.get(0).map(str::to_owned),
            r.get(1).map(str::to_owned),
            r.get(2).map(str::to_owned),
        )),
        _ => None,
    });
    assert_eq!(
        seen,
        Some((Some("user_bob".into()), Some(String::new()), None))
    );
    // Alice's update was rolled back.
    let admin = db.admin_client().await;
    let changed: i64 = admin
        .query_one(
            "select count(*) from user_messages where message = 'changed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(changed, 0);
}

#[tokio::test]
async fn a_full_pool_gives_a_clear_error_after_acquire_timeout() {
    let db = pg().new_database();
    let proxy = rowgate(&proxy_config(&db, 1, "acquire_timeout = \"200ms\"")).await;
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    let bob = proxy.connect(&token("user_bob")).await.unwrap();
    alice.batch_execute("begin").await.unwrap();
    alice.batch_execute("select 1").await.unwrap();
    let err = bob.simple_query("select 1").await.unwrap_err();
    let db_err = err.as_db_error().expect("an error from rowgate");
    assert_eq!(db_err.code().code(), "53300");
    assert!(
        db_err.message().contains("pool_size 1"),
        "{}",
        db_err.message()
    );
    alice.batch_execute("commit").await.unwrap();
    assert_eq!(
        simple_col(&bob, "select auth.user_id()").await,
        [Some("user_bob".into())]
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_with_a_reason_and_the_listener_stays_healthy() {
    let (_db, proxy) = setup(1).await;
    let now = support::unix_now();
    let mut expired = support::clerk_claims("user_alice");
    expired["exp"] = (now - 3600).into();
    expired["nbf"] = (now - 7200).into();
    expired["iat"] = (now - 7200).into();
    let mut wrong_iss = support::clerk_claims("user_alice");
    wrong_iss["iss"] = "https://evil.example".into();
    let other_key = support::TestKeys::generate("other");
    let cases = [
        ("expired", support::token_with(expired), "28000"),
        ("wrong issuer", support::token_with(wrong_iss), "28000"),
        (
            "other key",
            support::sign_rs256(&other_key, support::clerk_claims("user_alice")),
            "28P01",
        ),
        ("garbage", "not-a-jwt".to_string(), "28P01"),
    ];
    for (what, tok, _code) in &cases {
        let err = proxy
            .connect(tok)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what} accepted"));
        let db_err = err.as_db_error().unwrap_or_else(|| panic!("{what}: {err}"));
        assert!(
            db_err.code().code().starts_with("28"),
            "{what}: {} {}",
            db_err.code().code(),
            db_err.message()
        );
        assert!(
            !db_err.message().contains(tok.as_str()),
            "{what}: token echoed"
        );
    }
    // The listener still serves good tokens.
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    assert_eq!(
        simple_col(&alice, "select auth.user_id()").await,
        [Some("user_alice".into())]
    );
}

#[tokio::test]
async fn bytes_pipelined_after_the_startup_packet_are_kept() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_db, proxy) = setup(1).await;
    let tok = token("user_alice");
    // Startup, password and a query in one write, before any reply: what
    // @neondatabase/serverless does.
    let mut bytes = rowgate::wire::frontend::startup_message(&[
        ("user", "anyone"),
        ("database", proxy.dbname()),
    ])
    .to_vec();
    let mut msgs = bytes::BytesMut::new();
    rowgate::wire::put_frame(&mut msgs, b'p', |b| {
        rowgate::wire::put_cstr(b, tok.as_bytes())
    });
    rowgate::wire::frontend::put_query(&mut msgs, "select auth.user_id()");
    bytes.extend_from_slice(&msgs);
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    tcp.write_all(&bytes).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut tags = Vec::new();
    let mut data = Vec::new();
    'read: loop {
        assert!(
            tcp.read_buf(&mut buf).await.unwrap() > 0,
            "closed early: {tags:?}"
        );
        while let Some(f) = rowgate::wire::next_frame(&mut buf, 1 << 20).unwrap() {
            tags.push(f.tag() as char);
            if f.tag() == b'D' {
                data.push(String::from_utf8_lossy(f.body()).into_owned());
            }
            if f.tag() == b'Z' && tags.contains(&'D') {
                break 'read;
            }
        }
    }
    assert!(data[0].contains("user_alice"), "{data:?}");
    assert_eq!(tags.first(), Some(&'R'));
}

/// A PostgreSQL 18 client asks for protocol 3.2 (longer cancel keys);
/// rowgate speaks 3.0 and says so with NegotiateProtocolVersion, as a 3.0
/// server does, listing the protocol options it does not know, and the
/// session then works at 3.0 (a 4-byte cancel secret).
#[tokio::test]
async fn a_client_asking_for_protocol_3_2_is_served_at_3_0() {
    use bytes::{Buf, BufMut};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_db, proxy) = setup(1).await;
    let tok = token("user_alice");
    let mut body = bytes::BytesMut::new();
    body.put_i32(3 << 16 | 2);
    for (k, v) in [
        ("user", "anyone"),
        ("database", proxy.dbname()),
        ("_pq_.test_protocol_option", "1"),
    ] {
        rowgate::wire::put_cstr(&mut body, k.as_bytes());
        rowgate::wire::put_cstr(&mut body, v.as_bytes());
    }
    body.put_u8(0);
    let mut startup = bytes::BytesMut::new();
    startup.put_i32(body.len() as i32 + 4);
    startup.extend_from_slice(&body);
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    tcp.write_all(&startup).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut frames = Vec::new();
    let mut sent_password = false;
    'read: loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read_buf(&mut buf))
            .await
            .expect("a reply within 10 s")
            .unwrap();
        assert!(n > 0, "closed early: {frames:?}");
        while let Some(f) = rowgate::wire::next_frame(&mut buf, 1 << 20).unwrap() {
            frames.push((f.tag(), f.body().to_vec()));
            if f.tag() == b'R' && f.body() == [0, 0, 0, 3] && !sent_password {
                let mut pw = bytes::BytesMut::new();
                rowgate::wire::put_frame(&mut pw, b'p', |b| {
                    rowgate::wire::put_cstr(b, tok.as_bytes())
                });
                rowgate::wire::frontend::put_query(&mut pw, "select auth.user_id()");
                tcp.write_all(&pw).await.unwrap();
                sent_password = true;
            }
            if f.tag() == b'Z' && frames.iter().any(|(t, _)| *t == b'D') {
                break 'read;
            }
        }
    }
    let (tag, negotiate) = &frames[0];
    assert_eq!(*tag, b'v', "NegotiateProtocolVersion first: {frames:?}");
    let mut v = &negotiate[..];
    assert_eq!(v.get_i32(), 3 << 16, "the version served, whole: 3.0");
    assert_eq!(v.get_i32(), 1);
    assert_eq!(v, b"_pq_.test_protocol_option\0");
    // PostgreSQL itself answers an unknown protocol option the same way.
    let mut direct = tokio::net::TcpStream::connect(("127.0.0.1", _db.port()))
        .await
        .unwrap();
    let mut body = bytes::BytesMut::new();
    body.put_i32(3 << 16);
    for (k, val) in [
        ("user", support::AUTHENTICATOR),
        ("database", _db.name()),
        ("_pq_.test_protocol_option", "1"),
    ] {
        rowgate::wire::put_cstr(&mut body, k.as_bytes());
        rowgate::wire::put_cstr(&mut body, val.as_bytes());
    }
    body.put_u8(0);
    let mut startup = bytes::BytesMut::new();
    startup.put_i32(body.len() as i32 + 4);
    startup.extend_from_slice(&body);
    direct.write_all(&startup).await.unwrap();
    let mut dbuf = bytes::BytesMut::new();
    let first = loop {
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            direct.read_buf(&mut dbuf),
        )
        .await
        .expect("PostgreSQL replies")
        .unwrap();
        assert!(n > 0);
        if let Some(f) = rowgate::wire::next_frame(&mut dbuf, 1 << 20).unwrap() {
            break (f.tag(), f.body().to_vec());
        }
    };
    assert_eq!(
        &first, &frames[0],
        "as PostgreSQL's NegotiateProtocolVersion"
    );
    let key = frames
        .iter()
        .find(|(t, _)| *t == b'K')
        .expect("BackendKeyData");
    assert_eq!(key.1.len(), 8, "a 3.0 cancel key: pid and a 4-byte secret");
    let row = frames.iter().find(|(t, _)| *t == b'D').unwrap();
    assert!(String::from_utf8_lossy(&row.1).contains("user_alice"));
}

#[tokio::test]
async fn psql_sessions_with_different_tokens_see_only_their_rows() {
    let (_db, proxy) = setup(2).await;
    for (user, expected) in [("user_alice", "alice 1\nalice 2"), ("user_bob", "bob 1")] {
        let (conninfo, tok) = (proxy.conninfo(), token(user));
        // psql blocks; rowgate runs on this test's runtime and must keep going.
        let out = tokio::task::spawn_blocking(move || {
            support::psql(
                &conninfo,
                &tok,
                "select message from user_messages order by id",
            )
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
    }
}

#[tokio::test]
async fn a_cancel_request_reaches_the_running_query() {
    let (_db, proxy) = setup(1).await;
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    let cancel = alice.cancel_token();
    let canceller = tokio::spawn(async move {
        support::wait_until_running("select pg_sleep(30)").await;
        cancel.cancel_query(tokio_postgres::NoTls).await
    });
    let err = alice.simple_query("select pg_sleep(30)").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
    canceller.await.unwrap().unwrap();
    // PostgreSQL signals a cancelled backend twice (the process and its
    // group); on a loaded machine the second signal can land on the next
    // statement, as it would directly. A statement cancelled that way is
    // PostgreSQL's own race: ask again. Any other error fails the test.
    for attempt in 1.. {
        match alice.simple_query("select auth.user_id()").await {
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
                    && attempt < 3 =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            r => {
                assert_eq!(first_col(r.unwrap()), [Some("user_alice".to_string())]);
                break;
            }
        }
    }
}

#[tokio::test]
async fn deallocate_and_discard_all_behave_as_in_postgres() {
    let (_db, proxy) = setup(2).await;
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    // DEALLOCATE by the client's own name succeeds, and the statement is
    // gone (raw protocol: tokio-postgres does not expose its names).
    let mut raw = RawClient::connect(&proxy, &token("user_alice")).await;
    let mut out = bytes::BytesMut::new();
    rowgate::wire::frontend::put_parse(&mut out, b"s1", b"select auth.user_id()\0\0\0");
    rowgate::wire::frontend::put_sync(&mut out);
    assert_eq!(raw.exchange(&out).await, ["1", "Z"]);
    let mut out = bytes::BytesMut::new();
    rowgate::wire::frontend::put_query(&mut out, "DEALLOCATE s1");
    assert_eq!(raw.exchange(&out).await, ["C", "Z"]);
    let mut out = bytes::BytesMut::new();
    rowgate::wire::frontend::put_bind_text(&mut out, b"", b"s1", &[]);
    rowgate::wire::frontend::put_execute(&mut out, b"");
    rowgate::wire::frontend::put_sync(&mut out);
    assert_eq!(raw.exchange(&out).await, ["E26000", "Z"]);
    let stmt = alice.prepare("select auth.user_id()").await.unwrap();
    assert!(alice.query_one(&stmt, &[]).await.is_ok());
    // Preparing again works; DISCARD ALL drops it too.
    let again = alice.prepare("select auth.user_id()").await.unwrap();
    assert!(alice.query_one(&again, &[]).await.is_ok());
    alice.batch_execute("DISCARD ALL").await.unwrap();
    let err = alice.query_one(&again, &[]).await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_SQL_STATEMENT_NAME)
    );
    // Other statements keep working afterwards, with identity.
    let fresh = alice.prepare("select auth.user_id()").await.unwrap();
    let who: Option<String> = alice.query_one(&fresh, &[]).await.unwrap().get(0);
    assert_eq!(who.as_deref(), Some("user_alice"));
    // An unknown name gets PostgreSQL's error.
    let err = alice.batch_execute("DEALLOCATE nosuch").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_SQL_STATEMENT_NAME)
    );
}

/// A session-level identity value left on a pooled connection from inside
/// a function (which neither the guard, here off, nor the read-back of the
/// client's own SETs sees) is cleared by the next transaction's identity
/// statement, so it cannot surface where rowgate sets no identity: the
/// statement after a COMMIT in one string.
#[tokio::test]
async fn a_session_level_identity_left_behind_never_surfaces_for_the_next_client() {
    const LEAVE: &str = "select leave_identity()";
    const AFTER_COMMIT: &str =
        "begin; commit; select coalesce(current_setting('app.user_id', true), '')";
    let db = pg().new_database();
    db.admin_client()
        .await
        .batch_execute(
            "create function leave_identity() returns text language sql \
             as $$ select set_config('app.user_id', 'user_mallory', false) $$; \
             grant execute on function leave_identity() to public",
        )
        .await
        .unwrap();
    // Without rowgate, on one connection, the value does surface there.
    let direct = support::connect(&db.authenticator_url()).await;
    direct.simple_query(LEAVE).await.unwrap();
    assert_eq!(
        simple_col(&direct, AFTER_COMMIT).await,
        vec![Some("user_mallory".to_string())]
    );
    let proxy = rowgate(&(proxy_config(&db, 1, "") + "[guard]\nprofile = \"off\"\n")).await;
    let mallory = proxy.connect(&token("user_mallory")).await.unwrap();
    mallory.simple_query(LEAVE).await.unwrap();
    drop(mallory);
    let bob = proxy.connect(&token("user_bob")).await.unwrap();
    assert_eq!(
        simple_col(&bob, AFTER_COMMIT).await,
        vec![Some(String::new())],
        "the value the last client left on the one pooled connection"
    );
}
