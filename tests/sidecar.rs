//! rowgate as a sidecar for legacy services (docs/sidecar.md): a service
//! logs in with a static password (SCRAM-SHA-256) and names each
//! transaction's user in-band with a verified token. Real PostgreSQL, real
//! drivers: tokio-postgres for the protocol details, and three legacy-style
//! services with long-lived pools (JDBC + HikariCP, psycopg_pool,
//! node-postgres `Pool`) under concurrency, each showing that every request
//! sees only its user's rows and a request without a token sees none.
//!
//! Every test also captures rowgate's log at TRACE level and checks that no
//! token appears in it, and that no token reached `pg_stat_activity`.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use support::{pg, proxy_config, rowgate, token, TestDb};

const SERVICE: &str = "legacy";
const PASSWORD: &str = "legacy-secret";
/// Users of the example services, and requests per user per service.
const USERS: usize = 50;
const ROUNDS: usize = 2;

// ---------------------------------------------------------------- logging

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// rowgate's whole log (TRACE) in this test binary.
fn log() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let c = Captured::default();
        let w = c.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("rowgate=trace"))
            .with_writer(move || w.clone())
            .try_init();
        c
    })
}

fn assert_not_logged(tokens: &[&str]) {
    let text = String::from_utf8_lossy(&log().0.lock().unwrap()).into_owned();
    assert!(!text.is_empty(), "the log capture works");
    for t in tokens {
        // The signature part alone must not appear either.
        let sig = t.rsplit('.').next().unwrap_or(t);
        assert!(!text.contains(sig), "a token appeared in rowgate's log");
    }
}

// ---------------------------------------------------------------- set-up

fn sub(i: usize) -> String {
    format!("user_{i:02}")
}

/// A database with `notes` under RLS: two rows for each of the users, and
/// one of a user nobody is.
async fn notes_db(users: usize) -> TestDb {
    let db = pg().new_database();
    let admin = db.admin_client().await;
    let mut sql = String::from(
        "create table notes (owner text not null default auth.user_id(), body text not null);
         alter table notes enable row level security;
         alter table notes force row level security;
         create policy own on notes using (owner = (select auth.user_id()));
         grant select, insert on notes to rowgate_user;
         grant select, insert on notes to authenticator;
         insert into notes values ('user_zz', 'nobody may see this');",
    );
    for i in 0..users {
        let u = sub(i);
        sql.push_str(&format!(
            "insert into notes values ('{u}', 'a note of {u}'), ('{u}', 'another note of {u}');"
        ));
    }
    admin.batch_execute(&sql).await.expect("schema");
    db
}

fn config(db: &TestDb, pool: usize, extra: &str) -> String {
    format!(
        "{}\n[[services]]\nname = \"{SERVICE}\"\npassword = \"{PASSWORD}\"\n{extra}",
        proxy_config(db, pool, "")
    )
}

fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    let d = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    (d.code().code().to_string(), d.message().to_string())
}

async fn owners(c: &impl tokio_postgres::GenericClient, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .await
        .expect(sql)
        .iter()
        .map(|r| r.get(0))
        .collect()
}

// ---------------------------------------------------------------- logins

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_logs_in_with_scram_and_a_wrong_password_looks_like_an_unknown_name() {
    log();
    let db = notes_db(1).await;
    let proxy = rowgate(&config(&db, 2, "")).await;
    let c = proxy
        .connect_as(SERVICE, PASSWORD)
        .await
        .expect("SCRAM login");
    // No user identity by default: RLS shows nothing.
    assert!(owners(&c, "select owner from notes").await.is_empty());
    let row = c.query_one("select auth.user_id()", &[]).await.unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None);

    let wrong = proxy
        .connect_as(SERVICE, "not-the-password")
        .await
        .unwrap_err();
    let unknown = proxy
        .connect_as("nobody", "legacy-secret")
        .await
        .unwrap_err();
    let (wc, wm) = db_error(&wrong);
    let (uc, um) = db_error(&unknown);
    assert_eq!((wc.as_str(), uc.as_str()), ("28P01", "28P01"));
    assert_eq!(
        wm.replace(SERVICE, "X"),
        um.replace("nobody", "X"),
        "same message, whichever it is"
    );
    assert_eq!(wm, "password authentication failed for user \"legacy\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_identity_is_the_identity_of_transactions_without_a_token() {
    log();
    let db = notes_db(2).await;
    let proxy = rowgate(&config(&db, 2, "default_identity = { sub = \"user_01\" }")).await;
    let c = proxy.connect_as(SERVICE, PASSWORD).await.unwrap();
    assert_eq!(
        owners(&c, "select owner from notes").await,
        vec!["user_01", "user_01"]
    );
    let t = token("user_00");
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("SET LOCAL rowgate.token = '{t}'"))
        .await
        .unwrap();
    assert_eq!(
        owners(&c, "select owner from notes").await,
        vec!["user_00", "user_00"]
    );
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        owners(&c, "select owner from notes").await,
        vec!["user_01", "user_01"],
        "back to the default"
    );
    assert_not_logged(&[&t]);
}

// ---------------------------------------------------------------- in-band

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_local_names_the_user_for_one_transaction_only() {
    log();
    let db = notes_db(3).await;
    let proxy = rowgate(&config(&db, 2, "")).await;
    let c = proxy.connect_as(SERVICE, PASSWORD).await.unwrap();
    let (t0, t1) = (token("user_00"), token("user_01"));

    // In a transaction block.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("SET LOCAL rowgate.token = '{t0}'"))
        .await
        .unwrap();
    assert_eq!(
        owners(&c, "select owner from notes").await,
        vec!["user_00"; 2]
    );
    // The token is nowhere in the server's view of the connections.
    let admin = db.admin_client().await;
    let seen: Vec<String> = admin
        .query("select coalesce(query, '') from pg_stat_activity", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        seen.iter()
            .all(|q| !q.contains("rowgate.token") && !q.contains(&t0)),
        "{seen:?}"
    );
    // The same token again is fine; another one is refused.
    c.batch_execute(&format!("SET LOCAL rowgate.token = '{t0}'"))
        .await
        .unwrap();
    let e = c
        .batch_execute(&format!("SET LOCAL rowgate.token = '{t1}'"))
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "42501");
    c.batch_execute("ROLLBACK").await.unwrap();
    // The transaction is over: no identity.
    assert!(owners(&c, "select owner from notes").await.is_empty());

    // First in a multi-statement query: one implicit transaction.
    let rows = c
        .simple_query(&format!(
            "SET LOCAL rowgate.token = '{t1}'; select owner from notes"
        ))
        .await
        .unwrap();
    let got: Vec<&str> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec!["user_01"; 2]);
    assert!(owners(&c, "select owner from notes").await.is_empty());
    assert_not_logged(&[&t0, &t1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extended_form_answers_as_postgres_does() {
    log();
    let db = notes_db(2).await;
    let proxy = rowgate(&config(&db, 2, "")).await;
    let mut c = proxy.connect_as(SERVICE, PASSWORD).await.unwrap();
    let t = token("user_01");
    let sql = "select set_config('rowgate.token', $1, true)";
    // PostgreSQL's own answer to the same statement (a harmless name).
    let direct = db.authenticator_client().await;
    let theirs = direct
        .prepare(&sql.replace("rowgate.token", "rowgate_test.token"))
        .await
        .unwrap();
    let ours = c.prepare(sql).await.unwrap();
    assert_eq!(ours.params(), theirs.params());
    assert_eq!(ours.columns()[0].name(), theirs.columns()[0].name());
    assert_eq!(ours.columns()[0].type_(), theirs.columns()[0].type_());

    let tx = c.transaction().await.unwrap();
    let row = tx.query_one(&ours, &[&t]).await.unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        t,
        "set_config returns the new value"
    );
    assert_eq!(
        owners(&tx, "select owner from notes").await,
        vec!["user_01"; 2]
    );
    tx.commit().await.unwrap();
    assert!(owners(&c, "select owner from notes").await.is_empty());
    assert_not_logged(&[&t]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_session_forms_are_refused_with_reasons() {
    log();
    let db = notes_db(1).await;
    let proxy = rowgate(&config(&db, 2, "")).await;
    let c = proxy.connect_as(SERVICE, PASSWORD).await.unwrap();

    // A bad token aborts the transaction like any error; ROLLBACK works.
    c.batch_execute("BEGIN").await.unwrap();
    let e = c
        .batch_execute("SET LOCAL rowgate.token = 'not.a.jwt'")
        .await
        .unwrap_err();
    let (code, msg) = db_error(&e);
    assert!(code == "28P01" || code == "28000", "{code}");
    assert!(msg.contains("rowgate.token refused"), "{msg}");
    let e = c.batch_execute("select 1").await.unwrap_err();
    assert_eq!(db_error(&e).0, "25P02");
    c.batch_execute("ROLLBACK").await.unwrap();

    let mut expired = support::clerk_claims("user_00");
    expired["exp"] = serde_json::json!(support::unix_now() - 600);
    let old = support::token_with(expired);
    let e = c
        .query_one("select set_config('rowgate.token', $1, true)", &[&old])
        .await
        .unwrap_err();
    let (code, msg) = db_error(&e);
    assert_eq!(code, "28000");
    assert!(msg.contains("expired"), "{msg}");

    for session_level in [
        "SET rowgate.token = 'x'".to_string(),
        "SET SESSION rowgate.token = 'x'".to_string(),
        "select set_config('rowgate.token', 'x', false)".to_string(),
        "RESET rowgate.token".to_string(),
    ] {
        let e = c.batch_execute(&session_level).await.unwrap_err();
        let (code, msg) = db_error(&e);
        assert_eq!(code, "42501", "{session_level}");
        assert!(msg.contains("outlive the request"), "{msg}");
    }
    let e = c
        .query_one("select set_config('rowgate.token', $1, false)", &[&"x"])
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "42501");

    // A user logged in with a JWT password cannot use it.
    let t = token("user_00");
    let user = proxy.connect(&t).await.unwrap();
    user.batch_execute("BEGIN").await.unwrap();
    let e = user
        .batch_execute(&format!("SET LOCAL rowgate.token = '{t}'"))
        .await
        .unwrap_err();
    let (code, msg) = db_error(&e);
    assert_eq!(code, "42501");
    assert!(msg.contains("only for service logins"), "{msg}");
    assert_not_logged(&[&t, &old]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_works_with_postgres_naming() {
    log();
    let db = notes_db(1).await;
    let dir = tempdir("sock");
    let cfg = config(&db, 2, "").replace(
        "[listen]\n",
        &format!("[listen]\nunix_socket_dir = \"{}\"\n", dir.display()),
    );
    let proxy = rowgate(&cfg).await;
    assert!(dir.join(format!(".s.PGSQL.{}", proxy.port())).exists());
    let (c, conn) = tokio_postgres::Config::new()
        .host_path(&dir)
        .port(proxy.port())
        .user(SERVICE)
        .dbname(proxy.dbname())
        .password(PASSWORD)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect over the Unix socket");
    tokio::spawn(conn);
    let t = token("user_00");
    let rows = c
        .simple_query(&format!(
            "SET LOCAL rowgate.token = '{t}'; select owner from notes"
        ))
        .await
        .unwrap();
    let n = rows
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(n, 2);
}

// ---------------------------------------------------------------- examples

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tempdir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "rowgate-sidecar-{what}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn missing(what: &str) -> ! {
    panic!("{what} is missing: run scripts/ensure-deps.sh (it installs what the sidecar examples need)")
}

/// Runs one example service against a fresh rowgate (pool of 4) with 50
/// users and checks it printed OK.
async fn run_example(name: &str, program: impl FnOnce(&[String]) -> tokio::process::Command) {
    log();
    let db = notes_db(USERS).await;
    let proxy = rowgate(&config(&db, 4, "")).await;
    let tokens: Vec<(String, String)> = (0..USERS).map(|i| (sub(i), token(&sub(i)))).collect();
    let dir = tempdir(name);
    let file = dir.join("tokens");
    let text: String = tokens.iter().map(|(u, t)| format!("{u} {t}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let args = vec![
        "127.0.0.1".to_string(),
        proxy.port().to_string(),
        proxy.dbname().to_string(),
        SERVICE.to_string(),
        PASSWORD.to_string(),
        file.display().to_string(),
        ROUNDS.to_string(),
    ];
    let mut cmd = program(&args);
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish in 180 s"))
        .unwrap_or_else(|e| panic!("{name} could not start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("OK requests={}", (USERS + 1) * ROUNDS);
    assert!(
        out.status.success() && stdout.contains(&expected),
        "{name}: {stdout}\n{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let all: Vec<&str> = tokens.iter().map(|(_, t)| t.as_str()).collect();
    assert_not_logged(&all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_hikaricp_service_with_a_pool_of_4_for_50_users() {
    let jars = [
        "HikariCP.jar",
        "slf4j-api.jar",
        "slf4j-nop.jar",
        "postgresql.jar",
    ]
    .map(|j| Path::new("/usr/share/java").join(j));
    if let Some(j) = jars.iter().find(|j| !j.is_file()) {
        missing(&j.display().to_string());
    }
    let cp = jars.map(|j| j.display().to_string()).join(":");
    run_example("jdbc-hikaricp", |args| {
        let mut c = tokio::process::Command::new("java");
        c.arg("-cp")
            .arg(&cp)
            .arg(root().join("tests/sidecar/HikariService.java"))
            .args(args);
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_pool_service_with_a_pool_of_4_for_50_users() {
    let py = root().join("target/driver-venv/bin/python");
    if !py.is_file() {
        missing(&format!("{} (psycopg, psycopg_pool)", py.display()));
    }
    run_example("psycopg-pool", |args| {
        let mut c = tokio::process::Command::new(&py);
        c.arg(root().join("tests/sidecar/psycopg_service.py"))
            .args(args);
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_pool_service_with_a_pool_of_4_for_50_users() {
    if !root()
        .join("tests/drivers/node/node_modules/pg/package.json")
        .is_file()
    {
        missing("node-postgres (tests/drivers/node/node_modules/pg)");
    }
    run_example("node-pg-pool", |args| {
        let mut c = tokio::process::Command::new("node");
        c.arg(root().join("tests/sidecar/node_service.js"))
            .args(args);
        c
    })
    .await;
}
