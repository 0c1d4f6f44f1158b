//! Several databases behind one rowgate: the startup `database` picks the
//! `[databases.NAME]` entry (or the single `[upstream]`, for the database
//! its URL names), each with its own pool and optional own `[auth]` /
//! `[identity]`; `[databases."*"]` serves every database of one server; a
//! name nobody serves gets `FATAL 3D000 database "x" does not exist`, as
//! from PostgreSQL and PgBouncer. Through psql and tokio-postgres.

mod support;

use support::{keys, pg, proxy_config, psql, rowgate, sign_hs256, token, TestDb, ISSUER};
use tokio_postgres::error::SqlState;

const PREVIEW_ISSUER: &str = "https://preview.clerk.test";
const PREVIEW_SECRET: &str = "preview-secret-preview-secret-0123456789";

fn auth_section() -> String {
    format!(
        "[auth]\nissuer = \"{ISSUER}\"\npublic_key_file = \"{}\"\nleeway_secs = 5\n",
        keys().public_pem_path.display()
    )
}

/// Connects to rowgate at `port` asking for `dbname`.
async fn connect(
    port: u16,
    dbname: &str,
    tok: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("anyone")
        .dbname(dbname)
        .password(tok)
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// `current_database()` and `auth.user_id()` of one transaction.
async fn where_and_who(c: &tokio_postgres::Client) -> (String, String) {
    let row = c
        .query_one("select current_database(), auth.user_id()", &[])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

fn psql_through(port: u16, dbname: &str, tok: &str, sql: &str) -> std::process::Output {
    psql(
        &format!("host=127.0.0.1 port={port} dbname={dbname} user=anyone sslmode=disable"),
        tok,
        sql,
    )
}

fn assert_no_such_database(err: &tokio_postgres::Error, name: &str) {
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {err}"));
    assert_eq!(db.code(), &SqlState::INVALID_CATALOG_NAME, "{db:?}");
    assert_eq!(db.message(), format!("database \"{name}\" does not exist"));
}

#[tokio::test]
async fn two_databases_and_an_unknown_one() {
    let (main, preview) = (pg().new_database(), pg().new_database());
    let config = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\
         [databases.main]\nurl = \"{}\"\npool_size = 2\n\
         [databases.app_preview]\nurl = \"{}\"\npool_size = 1\n{}",
        main.authenticator_url(),
        preview.authenticator_url(),
        auth_section()
    );
    let proxy = rowgate(&config).await;
    let port = proxy.port();

    // A driver: each name reaches its own database, with the identity.
    let a = connect(port, "main", &token("user_alice")).await.unwrap();
    let b = connect(port, "app_preview", &token("user_bob"))
        .await
        .unwrap();
    assert_eq!(
        where_and_who(&a).await,
        (main.name().into(), "user_alice".into())
    );
    assert_eq!(
        where_and_who(&b).await,
        (preview.name().into(), "user_bob".into())
    );
    // Each has its own pool: preview's single connection busy in a
    // transaction does not hold main up.
    b.batch_execute("begin; select 1").await.unwrap();
    assert_eq!(where_and_who(&a).await.0, main.name());
    b.batch_execute("commit").await.unwrap();
    let err = connect(port, "nosuchdb", &token("user_alice"))
        .await
        .unwrap_err();
    assert_no_such_database(&err, "nosuchdb");
    // The upstream database's own name is not a configured name either.
    let err = connect(port, main.name(), &token("user_alice"))
        .await
        .unwrap_err();
    assert_no_such_database(&err, main.name());

    // psql, as a person would see it.
    let tok = token("user_carol");
    let out = tokio::task::spawn_blocking(move || {
        let ok = psql_through(
            port,
            "app_preview",
            &tok,
            "select current_database() || ' ' || auth.user_id()",
        );
        let bad = psql_through(port, "nosuchdb", &tok, "select 1");
        (ok, bad)
    })
    .await
    .unwrap();
    assert!(
        out.0.status.success(),
        "{}",
        String::from_utf8_lossy(&out.0.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.0.stdout).trim(),
        format!("{} user_carol", preview.name())
    );
    assert!(!out.1.status.success());
    let stderr = String::from_utf8_lossy(&out.1.stderr);
    assert!(
        stderr.contains("FATAL:  database \"nosuchdb\" does not exist"),
        "{stderr}"
    );
    // Pool metrics carry the database's configured name.
    assert!(rowgate::metrics::get("rowgate_upstream_connects_total", "app_preview") >= 1);
}

#[tokio::test]
async fn upstream_serves_exactly_the_database_of_its_url() {
    let db = pg().new_database();
    let proxy = rowgate(&proxy_config(&db, 1, "")).await;
    let c = connect(proxy.port(), db.name(), &token("user_alice"))
        .await
        .unwrap();
    assert_eq!(where_and_who(&c).await.0, db.name());
    let err = connect(proxy.port(), "app", &token("user_alice"))
        .await
        .unwrap_err();
    assert_no_such_database(&err, "app");
    // No database in the startup packet means the user's name, as libpq.
    let Err(err) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(proxy.port())
        .user("alice")
        .password(token("user_alice"))
        .connect(tokio_postgres::NoTls)
        .await
    else {
        panic!("connected to a database named after the user");
    };
    assert_no_such_database(&err, "alice");
}

#[tokio::test]
async fn a_database_may_verify_and_inject_its_own_way() {
    let (main, preview) = (pg().new_database(), pg().new_database());
    // [upstream] plus a [databases] entry with its own issuer and an extra
    // identity setting.
    let config = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\
         [upstream]\nurl = \"{}\"\npool_size = 1\n\
         [databases.preview]\nurl = \"{}\"\npool_size = 1\n\
         [databases.preview.auth]\nissuer = \"{PREVIEW_ISSUER}\"\nhs256_secret = \"{PREVIEW_SECRET}\"\n\
         [databases.preview.identity.settings]\n\"app.user_id\" = \"sub\"\n\"app.branch_user\" = \"sub\"\n{}",
        main.authenticator_url(),
        preview.authenticator_url(),
        auth_section()
    );
    let proxy = rowgate(&config).await;
    let port = proxy.port();
    let mut claims = support::clerk_claims("user_tester");
    claims["iss"] = PREVIEW_ISSUER.into();
    let test_token = sign_hs256(PREVIEW_SECRET, claims);

    let p = connect(port, "preview", &test_token).await.unwrap();
    let row = p
        .query_one(
            "select current_database(), auth.user_id(), current_setting('app.branch_user', true)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), preview.name());
    assert_eq!(row.get::<_, String>(1), "user_tester");
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("user_tester")
    );
    // The test issuer's token does not open the main database, and the
    // production token does not open the preview (its issuers replaced).
    let err = connect(port, main.name(), &test_token).await.unwrap_err();
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.code().code().starts_with("28")),
        "{err}"
    );
    let err = connect(port, "preview", &token("user_alice"))
        .await
        .unwrap_err();
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.code().code().starts_with("28")),
        "{err}"
    );
    let m = connect(port, main.name(), &token("user_alice"))
        .await
        .unwrap();
    let row = m
        .query_one(
            "select auth.user_id(), current_setting('app.branch_user', true)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "user_alice");
    assert_eq!(row.get::<_, Option<String>>(1).unwrap_or_default(), "");
}

#[tokio::test]
async fn the_wildcard_serves_every_database_of_its_server() {
    let (one, two) = (pg().new_database(), pg().new_database());
    let url = format!(
        "postgres://{}:{}@127.0.0.1:{}/{{dbname}}",
        support::AUTHENTICATOR,
        support::AUTHENTICATOR_PASSWORD,
        pg().port()
    );
    let config = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[databases.\"*\"]\nurl = \"{url}\"\npool_size = 1\n{}",
        auth_section()
    );
    let proxy = rowgate(&config).await;
    for (db, user) in [
        (&one, "user_alice"),
        (&two, "user_bob"),
        (&one, "user_carol"),
    ] {
        let c = connect(proxy.port(), db.name(), &token(user))
            .await
            .unwrap();
        assert_eq!(where_and_who(&c).await, (db.name().into(), user.into()));
    }
    // The server has no such database: said as PostgreSQL says it.
    let err = connect(proxy.port(), "no_such_tenant", &token("user_alice"))
        .await
        .unwrap_err();
    assert_no_such_database(&err, "no_such_tenant");
    // Labels stay bounded: every wildcard database counts under "*".
    assert!(rowgate::metrics::get("rowgate_upstream_connects_total", "*") >= 2);
    drop::<(TestDb, TestDb)>((one, two));
}

#[tokio::test]
async fn a_cancel_reaches_the_clients_own_database() {
    let (main, other) = (pg().new_database(), pg().new_database());
    let config = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\
         [databases.main]\nurl = \"{}\"\n[databases.other]\nurl = \"{}\"\n{}",
        main.authenticator_url(),
        other.authenticator_url(),
        auth_section()
    );
    let proxy = rowgate(&config).await;
    let c = connect(proxy.port(), "other", &token("user_alice"))
        .await
        .unwrap();
    let cancel = c.cancel_token();
    let started = std::time::Instant::now();
    let sleeper = tokio::spawn(async move { c.simple_query("select pg_sleep(30)").await });
    support::wait_until_running("select pg_sleep(30)").await;
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), sleeper)
        .await
        .expect("the cancel ends the query")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
