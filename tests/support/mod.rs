//! Shared support for rowgate's integration tests. Each test binary does
//! `mod support;` and gets one real PostgreSQL server, a fresh database per
//! test, RS256 test keys and tokens, a JWKS server and a `psql` runner.
//!
//! Nothing here mocks PostgreSQL: the server is started from the machine's
//! own binaries by [`rowgate::embedded`], on loopback only.

// Every test binary compiles this module but uses only part of it.
#![allow(dead_code, unused_imports)]

mod jwks;
pub mod ops;
mod proxy;
mod raw;
mod tokens;

pub use jwks::{JwksMode, JwksServer};
pub use proxy::{proxy_config, rowgate, try_rowgate, RunningProxy};
pub use raw::RawClient;
pub use tokens::{
    clerk_claims, keys, sign_hs256, sign_rs256, token, token_with, unix_now, TestKeys, AZP, ISSUER,
};

use rowgate::embedded::{LocalPostgres, LocalPostgresOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once, OnceLock};

/// Password of the test server's `postgres` superuser.
pub const SUPERUSER_PASSWORD: &str = "rowgate-test-superuser";
/// The role rowgate logs in as upstream: LOGIN, NOSUPERUSER, NOBYPASSRLS.
pub const AUTHENTICATOR: &str = "authenticator";
/// Password of [`AUTHENTICATOR`], stored as SCRAM.
pub const AUTHENTICATOR_PASSWORD: &str = "authpass";
/// Every test database is copied from this one, which holds the migrations.
pub const TEMPLATE_DB: &str = "rowgate_template";

// ---------------------------------------------------------------------------
// support::rowgate(config_toml: &str) -> RunningProxy
//
// The proxy engineer adds it here (e.g. in tests/support/proxy.rs, re-exported
// from this module). Register its cleanup with `at_exit` if it spawns a
// process that must not outlive the test binary.
// ---------------------------------------------------------------------------

/// The one PostgreSQL server of this test binary, started on first use with
/// `max_connections = 200`, the `authenticator` role and the
/// `rowgate_template` database with every `migrations/*.sql` applied.
///
/// If that fails, every test that calls it fails at once with the same
/// message, rather than each trying (and failing) to start its own server.
pub fn pg() -> &'static TestPg {
    static PG: OnceLock<Result<TestPg, String>> = OnceLock::new();
    match PG.get_or_init(TestPg::start) {
        Ok(pg) => pg,
        Err(e) => panic!("{e}"),
    }
}

/// Handle to the shared test server. The server itself is stopped when the
/// test process exits (atexit handler, plus a watchdog if that never runs).
pub struct TestPg {
    port: u16,
    bin_dir: PathBuf,
    next_db: AtomicU32,
}

impl TestPg {
    fn start() -> Result<TestPg, String> {
        let opts = LocalPostgresOptions {
            superuser_password: SUPERUSER_PASSWORD.into(),
            extra_conf: [
                ("max_connections", "200"),
                // Durability buys nothing in a throwaway cluster and makes
                // CREATE DATABASE per test slow.
                ("fsync", "off"),
                ("synchronous_commit", "off"),
                ("full_page_writes", "off"),
                // Keeps the cluster small on tmpfs: each CREATE DATABASE
                // writes the template through the WAL.
                ("max_wal_size", "256MB"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            run_dir_base: test_run_dir_base(),
            ..Default::default()
        };
        let server = LocalPostgres::start(opts)
            .map_err(|e| format!("could not start the test PostgreSQL: {e}"))?;
        // Rust never drops statics: stop the server at exit, and have a
        // watchdog do it if the process dies without running atexit handlers.
        if let Err(e) = server.spawn_exit_watchdog() {
            eprintln!("warning: no exit watchdog for the test PostgreSQL: {e}");
        }
        let pg = TestPg {
            port: server.port(),
            bin_dir: server.bin_dir().to_path_buf(),
            next_db: AtomicU32::new(1),
        };
        at_exit(move || drop(server));
        pg.set_up_cluster()?;
        Ok(pg)
    }

    /// Creates the roles and the migrated template database, once.
    fn set_up_cluster(&self) -> Result<(), String> {
        let admin = self.superuser_url("postgres");
        psql_checked(
            &admin,
            &format!(
                "CREATE ROLE {AUTHENTICATOR} LOGIN PASSWORD '{AUTHENTICATOR_PASSWORD}' \
                 NOSUPERUSER NOBYPASSRLS"
            ),
        )?;
        psql_checked(&admin, &format!("CREATE DATABASE {TEMPLATE_DB}"))?;
        let template = self.superuser_url(TEMPLATE_DB);
        for file in migration_files() {
            let out = psql_command(&template, SUPERUSER_PASSWORD)
                .arg("-f")
                .arg(&file)
                .output()
                .map_err(|e| format!("could not run {}: {e}", psql_path().display()))?;
            if !out.status.success() {
                return Err(format!(
                    "migration {} failed:\n{}",
                    file.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        // What `rowgate migrate --grant-to authenticator` does.
        psql_checked(&admin, &format!("GRANT rowgate_user TO {AUTHENTICATOR}"))?;
        Ok(())
    }

    /// TCP port of the server on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// Where the server binaries (and usually `psql`) are.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// `postgres://postgres:...@127.0.0.1:PORT/dbname`.
    pub fn superuser_url(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{}/{dbname}",
            self.port
        )
    }

    /// A fresh database copied from `rowgate_template`, so each test starts
    /// from the migrated schema and cannot see another test's rows. Dropped
    /// again when the returned [`TestDb`] is.
    pub fn new_database(&self) -> TestDb {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{}_{n}", std::process::id());
        if let Err(e) = psql_checked(
            &self.superuser_url("postgres"),
            &format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"),
        ) {
            panic!("{e}");
        }
        TestDb {
            name,
            port: self.port,
        }
    }
}

/// One test's own database on the shared server.
pub struct TestDb {
    name: String,
    port: u16,
}

impl TestDb {
    /// The database name, `test_<pid>_<n>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// TCP port of the upstream server.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's URL for this database.
    pub fn admin_url(&self) -> String {
        format!(
            "postgres://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{}/{}",
            self.port, self.name
        )
    }

    /// `postgres://authenticator:authpass@127.0.0.1:PORT/<name>`: what
    /// rowgate uses upstream.
    pub fn authenticator_url(&self) -> String {
        format!(
            "postgres://{AUTHENTICATOR}:{AUTHENTICATOR_PASSWORD}@127.0.0.1:{}/{}",
            self.port, self.name
        )
    }

    /// A superuser connection to this database.
    pub async fn admin_client(&self) -> tokio_postgres::Client {
        connect(&self.admin_url()).await
    }

    /// A connection as `authenticator`, straight to PostgreSQL (no rowgate).
    pub async fn authenticator_client(&self) -> tokio_postgres::Client {
        connect(&self.authenticator_url()).await
    }
}

impl Drop for TestDb {
    /// Keeps the disk use of a long test binary flat; the whole cluster goes
    /// at exit anyway, so failure here is ignored.
    fn drop(&mut self) {
        let _ = psql(
            &pg().superuser_url("postgres"),
            SUPERUSER_PASSWORD,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Waits (10 s at most) until some backend of the shared server is running
/// exactly `sql`, as `pg_stat_activity` shows it. Tests that cancel a query
/// wait for this rather than a fixed time: on a loaded machine the query
/// may not have reached PostgreSQL yet, and a cancel for a connection with
/// nothing running does nothing.
pub async fn wait_until_running(sql: &str) {
    let admin = connect(&pg().superuser_url("postgres")).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let running: i64 = admin
            .query_one(
                "select count(*) from pg_stat_activity where state = 'active' and query = $1",
                &[&sql],
            )
            .await
            .unwrap()
            .get(0);
        if running > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no backend ran {sql:?} within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Connects with tokio-postgres (NoTls: loopback only) and spawns the
/// connection task on the current runtime. Panics with the server's error.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("could not connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// Runs the real `psql`: `psql -X -A -t -v ON_ERROR_STOP=1 -d CONN -c SQL`
/// with `PGPASSWORD` set. `conn` is a URL or a conninfo string.
pub fn psql(conn: &str, password: &str, sql: &str) -> Output {
    psql_command(conn, password)
        .arg("-c")
        .arg(sql)
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", psql_path().display()))
}

/// The `psql` command of [`psql`] without `-c`, for `-f FILE` or stdin.
pub fn psql_command(conn: &str, password: &str) -> Command {
    let mut cmd = Command::new(psql_path());
    cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conn])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10");
    cmd
}

/// Runs `sql` as the superuser; the error carries psql's stderr.
fn psql_checked(url: &str, sql: &str) -> Result<String, String> {
    let out = psql(url, SUPERUSER_PASSWORD, sql);
    if !out.status.success() {
        return Err(format!(
            "psql failed on `{sql}`:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `psql` beside the server binaries (same version), else from `PATH`.
pub fn psql_path() -> &'static Path {
    static PSQL: OnceLock<PathBuf> = OnceLock::new();
    PSQL.get_or_init(|| {
        let beside = rowgate::embedded::find_bin_dir().map(|d| d.join("psql"));
        match beside {
            Ok(p) if p.is_file() => p,
            _ => PathBuf::from("psql"),
        }
    })
}

/// `migrations/*.sql` of the crate, in name order; none if the folder is absent.
fn migration_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    files
}

type ExitHook = Box<dyn FnOnce() + Send>;
static EXIT_HOOKS: Mutex<Vec<ExitHook>> = Mutex::new(Vec::new());

/// Runs `f` when the test process exits normally (the harness calls
/// `exit`, which runs atexit handlers). For cleanup of statics, which Rust
/// never drops. Hooks run newest first.
pub fn at_exit(f: impl FnOnce() + Send + 'static) {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a plain extern "C" fn with no arguments.
        unsafe { libc::atexit(run_exit_hooks) };
    });
    EXIT_HOOKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Box::new(f));
}

extern "C" fn run_exit_hooks() {
    let hooks = std::mem::take(&mut *EXIT_HOOKS.lock().unwrap_or_else(|e| e.into_inner()));
    for hook in hooks.into_iter().rev() {
        // A panic must not unwind into libc.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook));
    }
}

/// Test clusters live on tmpfs when there is room (1 GiB free): on a VM's
/// disk, initdb and each test's CREATE DATABASE take several times longer.
/// `ROWGATE_TEST_PG_ON_DISK=1` keeps them in the temp dir.
fn test_run_dir_base() -> Option<PathBuf> {
    if std::env::var_os("ROWGATE_TEST_PG_ON_DISK").is_some() {
        return None;
    }
    rowgate::embedded::memory_dir(1 << 30)
}

/// A PostgreSQL of a test's own (for tests that restart it or change its
/// authentication), superuser password `pw`, started off the async runtime.
/// It stops when dropped.
pub async fn private_postgres() -> LocalPostgres {
    tokio::task::spawn_blocking(|| {
        LocalPostgres::start(LocalPostgresOptions {
            superuser_password: "pw".into(),
            run_dir_base: test_run_dir_base(),
            ..Default::default()
        })
    })
    .await
    .expect("the start task runs")
    .expect("postgres starts")
}
