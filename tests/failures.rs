//! Failures a pooler must survive: the upstream restarting between and
//! during transactions, clients idling inside a transaction, and keeping
//! warm connections.

mod support;

use rowgate::embedded::LocalPostgres;
use support::{pg, proxy_config, rowgate, token};

/// A PostgreSQL of this test's own (the tests here restart it), with the
/// authenticator role and the migrations.
async fn own_postgres() -> LocalPostgres {
    let server = support::private_postgres().await;
    let admin = support::connect(&server.superuser_url("postgres")).await;
    admin
        .batch_execute("CREATE ROLE authenticator LOGIN PASSWORD 'authpass'")
        .await
        .unwrap();
    rowgate::migrate::apply(&server.superuser_url("postgres"), &["authenticator".into()])
        .await
        .unwrap();
    server
}

fn config_for(server: &LocalPostgres, extra: &str) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[upstream]
url = "postgres://authenticator:authpass@127.0.0.1:{}/postgres"
pool_size = 2
acquire_timeout = "10s"
{extra}
[auth]
issuer = "{}"
public_key_file = "{}"
"#,
        server.port(),
        support::ISSUER,
        support::keys().public_pem_path.display()
    )
}

async fn user_id(c: &tokio_postgres::Client) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(c.query_one("select auth.user_id()", &[]).await?.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_restart_between_transactions_goes_unnoticed() {
    let mut server = own_postgres().await;
    let proxy = rowgate(&config_for(&server, "")).await;
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    assert_eq!(
        user_id(&alice).await.unwrap().as_deref(),
        Some("user_alice")
    );
    let mut server = tokio::task::spawn_blocking(move || {
        server.restart().expect("restart");
        server
    })
    .await
    .unwrap();
    // The pooled connection died with the old server; rowgate notices it is
    // closed before lending it and connects anew.
    assert_eq!(
        user_id(&alice).await.unwrap().as_deref(),
        Some("user_alice")
    );
    // Down for a moment: the client waits (with backoff) instead of failing.
    server.stop_immediate().unwrap();
    let restarter = tokio::task::spawn_blocking(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        server.restart().expect("restart");
        server
    });
    assert_eq!(
        user_id(&alice).await.unwrap().as_deref(),
        Some("user_alice")
    );
    drop(restarter.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_killed_mid_transaction_gives_an_error_and_the_pool_recovers() {
    let server = own_postgres().await;
    let proxy = rowgate(&config_for(&server, "")).await;
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    alice.batch_execute("begin").await.unwrap();
    assert_eq!(
        user_id(&alice).await.unwrap().as_deref(),
        Some("user_alice")
    );
    let server = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.restart().expect("restart");
        server
    })
    .await
    .unwrap();
    let err = user_id(&alice).await.expect_err("the transaction was lost");
    assert!(err.is_closed() || err.as_db_error().is_some(), "{err}");
    // New clients are served by fresh connections.
    let bob = proxy.connect(&token("user_bob")).await.unwrap();
    assert_eq!(user_id(&bob).await.unwrap().as_deref(), Some("user_bob"));
    drop(server);
}

#[tokio::test]
async fn a_client_idle_in_a_transaction_is_closed_and_rolled_back() {
    let db = pg().new_database();
    let mut config = proxy_config(&db, 1, "");
    config = config.replace(
        "[listen]\n",
        "[listen]\nidle_in_transaction_timeout = \"300ms\"\n",
    );
    let proxy = rowgate(&config).await;
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    alice.batch_execute("begin").await.unwrap();
    alice
        .execute(
            "insert into user_messages (message) values ('never committed')",
            &[],
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert!(
        alice.batch_execute("commit").await.is_err(),
        "the session should be closed"
    );
    // The only pooled connection is free again, and clean.
    let bob = proxy.connect(&token("user_bob")).await.unwrap();
    assert_eq!(user_id(&bob).await.unwrap().as_deref(), Some("user_bob"));
    let admin = db.admin_client().await;
    let n: i64 = admin
        .query_one(
            "select count(*) from user_messages where message = 'never committed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn min_idle_keeps_connections_warm() {
    let db = pg().new_database();
    let proxy = rowgate(&proxy_config(&db, 3, "min_idle = 2")).await;
    let mut idle = 0;
    for _ in 0..50 {
        idle = proxy.idle_upstream();
        if idle >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(idle, 2);
}

#[tokio::test]
async fn a_copy_aborted_or_killed_midway_leaves_nothing_behind() {
    use futures_util::SinkExt;
    let db = pg().new_database();
    // COPY FROM is refused on tables with RLS; a plain one will do.
    db.admin_client()
        .await
        .batch_execute("CREATE TABLE copy_target (user_id text, message text); GRANT ALL ON copy_target TO rowgate_user")
        .await
        .unwrap();
    let proxy = rowgate(&proxy_config(&db, 1, "")).await;
    let row = bytes::Bytes::from_static(b"user_alice\tcopied\n");
    // Aborted: the sink is dropped unfinished, so the driver sends CopyFail.
    let alice = proxy.connect(&token("user_alice")).await.unwrap();
    {
        let sink = alice
            .copy_in::<_, bytes::Bytes>("COPY copy_target (user_id, message) FROM STDIN")
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        for _ in 0..1000 {
            sink.feed(row.clone()).await.unwrap();
        }
        sink.flush().await.unwrap();
    }
    assert_eq!(
        user_id(&alice).await.unwrap().as_deref(),
        Some("user_alice")
    );
    // Killed: the socket closes in the middle of the COPY, no CopyFail.
    {
        let mut doomed = support::RawClient::connect(&proxy, &token("user_alice")).await;
        let mut out = bytes::BytesMut::new();
        rowgate::wire::frontend::put_query(
            &mut out,
            "COPY copy_target (user_id, message) FROM STDIN",
        );
        doomed.send(&out).await;
        assert_eq!(doomed.until("G").await, ["G"]);
        let mut data = bytes::BytesMut::new();
        for _ in 0..1000 {
            rowgate::wire::put_frame(&mut data, b'd', |b| b.extend_from_slice(&row));
        }
        doomed.send(&data).await;
        drop(doomed);
    }
    // The only pooled connection serves the next user, clean.
    let bob = proxy.connect(&token("user_bob")).await.unwrap();
    assert_eq!(user_id(&bob).await.unwrap().as_deref(), Some("user_bob"));
    let admin = db.admin_client().await;
    let n: i64 = admin
        .query_one("select count(*) from copy_target", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // And a COPY that finishes works, in both directions.
    let sink = alice
        .copy_in::<_, bytes::Bytes>("COPY copy_target (user_id, message) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    for _ in 0..500 {
        sink.feed(row.clone()).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 500);
    let out = alice
        .copy_out("COPY (select message from copy_target) TO STDOUT")
        .await
        .unwrap();
    futures_util::pin_mut!(out);
    let mut bytes_out = 0;
    while let Some(chunk) = futures_util::StreamExt::next(&mut out).await {
        bytes_out += chunk.unwrap().len();
    }
    assert_eq!(bytes_out, 500 * "copied\n".len());
}
