//! What the leak and perf benchmarks share: a throwaway PostgreSQL with
//! rowgate's migrations, an RS256 signing key and Clerk-shaped tokens, a
//! rowgate config, PgBouncer in transaction mode, and small helpers.
//!
//! Everything listens on 127.0.0.1 only. Everything started here is stopped
//! by its handle's `Drop`, by process id, never by name.

// Each bench binary uses a different part of this module.
#![allow(dead_code)]

use rowgate::embedded::{LocalPostgres, LocalPostgresOptions};
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

/// The role rowgate and the app-side baselines log in as: LOGIN,
/// NOSUPERUSER, NOBYPASSRLS, so RLS applies to it.
pub const AUTHENTICATOR: &str = "authenticator";
/// Its password (SCRAM on the server; plain in PgBouncer's auth_file).
pub const AUTHENTICATOR_PASSWORD: &str = "authpass";
/// `iss` of every bench token.
pub const ISSUER: &str = "https://clerk.bench.example";
/// How long bench tokens stay valid: longer than any run.
pub const TOKEN_TTL_SECS: u64 = 6 * 3600;

/// Where reports go: `<crate>/target/bench/`, whatever CARGO_TARGET_DIR is,
/// so the path in the docs is always right.
pub fn report_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench")
}

/// The crate root (scripts and docs paths are relative to it).
pub fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A private temp dir, removed on drop. World-readable (0755) so servers
/// running as the `postgres` OS user can read config files in it.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Result<TempDir, String> {
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    /// Set ROWGATE_BENCH_KEEP_TMP=1 to keep configs and logs for a post-mortem.
    fn drop(&mut self) {
        if std::env::var_os("ROWGATE_BENCH_KEEP_TMP").is_some() {
            eprintln!("kept {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A local PostgreSQL with one database holding rowgate's migrations and
/// the `authenticator` role. Stopped when dropped.
pub struct Cluster {
    pub pg: LocalPostgres,
    pub db: String,
    /// The `postgres` superuser's password (for pgbench -i and psql).
    pub superuser_password: String,
}

impl Cluster {
    /// Starts the server (fsync off: a throwaway cluster, and we measure the
    /// proxy, not the disk), creates the role and the database, and applies
    /// the migrations as `rowgate migrate --grant-to authenticator` would.
    pub async fn start(max_connections: u32, db: &str) -> Result<Cluster, String> {
        let superuser_password = format!("{:032x}", rand::random::<u128>());
        let opts = LocalPostgresOptions {
            superuser_password: superuser_password.clone(),
            extra_conf: [
                ("max_connections", max_connections.to_string()),
                ("fsync", "off".into()),
                ("synchronous_commit", "off".into()),
                ("full_page_writes", "off".into()),
                ("shared_buffers", "256MB".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            port: None,
            data_dir: None,
            // The system temp dir, as a deployment would have a disk.
            run_dir_base: None,
        };
        let pg = tokio::task::spawn_blocking(move || LocalPostgres::start(opts))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("could not start PostgreSQL: {e}"))?;
        if let Err(e) = pg.spawn_exit_watchdog() {
            eprintln!("warning: no exit watchdog for the bench PostgreSQL: {e}");
        }
        let admin = connect(&pg.superuser_url("postgres")).await?;
        // Separate statements: CREATE DATABASE refuses a transaction block,
        // and a multi-statement query is one.
        for sql in [
            format!(
                "CREATE ROLE {AUTHENTICATOR} LOGIN PASSWORD '{AUTHENTICATOR_PASSWORD}' \
                 NOSUPERUSER NOBYPASSRLS"
            ),
            format!("CREATE DATABASE {db}"),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .map_err(|e| format!("{sql}: {}", pg_error(&e)))?;
        }
        rowgate::migrate::apply(&pg.superuser_url(db), &[AUTHENTICATOR.to_string()]).await?;
        Ok(Cluster {
            pg,
            db: db.to_string(),
            superuser_password,
        })
    }

    pub fn port(&self) -> u16 {
        self.pg.port()
    }

    /// The superuser's URL for the bench database.
    pub fn admin_url(&self) -> String {
        self.pg.superuser_url(&self.db)
    }

    /// What rowgate uses upstream.
    pub fn authenticator_url(&self) -> String {
        format!(
            "postgres://{AUTHENTICATOR}:{AUTHENTICATOR_PASSWORD}@127.0.0.1:{}/{}",
            self.port(),
            self.db
        )
    }

    /// A superuser connection to the bench database.
    pub async fn admin(&self) -> Result<Client, String> {
        connect(&self.admin_url()).await
    }
}

/// An error with the server's own message, which `Display` leaves out.
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Connects with tokio-postgres over loopback and spawns the connection.
pub async fn connect(url: &str) -> Result<Client, String> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| format!("connect {}: {e}", redact(url)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// An RS256 key pair made for this run (no key is ever committed), its
/// public half in a PEM file rowgate reads.
pub struct Signer {
    private_pem: String,
    public_pem_path: PathBuf,
    _dir: TempDir,
}

impl Signer {
    pub fn new() -> Result<Signer, String> {
        let (private_pem, public_pem) =
            rowgate::auth::mint::generate_rsa_keypair().map_err(|e| e.to_string())?;
        let dir = TempDir::new("rowgate-bench-keys")?;
        let public_pem_path = dir.path().join("public.pem");
        std::fs::write(&public_pem_path, public_pem)
            .map_err(|e| format!("write {}: {e}", public_pem_path.display()))?;
        let _ = std::fs::set_permissions(&public_pem_path, std::fs::Permissions::from_mode(0o644));
        Ok(Signer {
            private_pem,
            public_pem_path,
            _dir: dir,
        })
    }

    pub fn public_pem_path(&self) -> &Path {
        &self.public_pem_path
    }

    /// The claims of a Clerk v2 session token for `sub` in organisation
    /// `org` (as the `org_id` claim rowgate maps to `app.org_id`).
    pub fn claims(&self, sub: &str, org: &str) -> serde_json::Value {
        let mut claims = rowgate::auth::mint::clerk_session_claims(sub, ISSUER, TOKEN_TTL_SECS);
        claims["org_id"] = org.into();
        claims
    }

    /// Signs `claims` (RS256, with a kid).
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        rowgate::auth::mint::sign_rs256(&self.private_pem, Some("bench-1"), claims)
            .expect("signing with a key made a moment ago")
    }
}

/// rowgate's config: PEM key, the given pool, optional metrics endpoint.
pub fn rowgate_toml(
    listen: &str,
    upstream_url: &str,
    pool_size: usize,
    pem: &Path,
    metrics_addr: Option<&str>,
) -> String {
    let metrics = metrics_addr
        .map(|a| format!("[metrics]\naddr = \"{a}\"\n"))
        .unwrap_or_default();
    format!(
        r#"[listen]
addr = "{listen}"
[upstream]
url = "{upstream_url}"
pool_size = {pool_size}
acquire_timeout = "30s"
[auth]
issuer = "{ISSUER}"
public_key_file = "{pem}"
leeway_secs = 5
{metrics}"#,
        pem = pem.display()
    )
}

/// A free TCP port on 127.0.0.1 (bound then released: racy, but only
/// against other processes on this machine).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "nothing listens on 127.0.0.1:{port} after {timeout:?}"
    ))
}

/// uid and gid of an OS user, if it exists.
fn os_user(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we
    // copy the two integers out at once, on this thread.
    unsafe {
        let pw = libc::getpwnam(cname.as_ptr());
        if pw.is_null() {
            None
        } else {
            Some(((*pw).pw_uid, (*pw).pw_gid))
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The PgBouncer binary, if installed.
pub fn pgbouncer_binary() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from("/usr/sbin/pgbouncer"),
        PathBuf::from("/usr/bin/pgbouncer"),
    ];
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Some(p.clone());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("pgbouncer"))
            .find(|p| p.is_file())
    })
}

/// PgBouncer in transaction mode in front of the bench database, logging
/// in upstream as `authenticator`. Its one database is called `bench`.
/// Stopped (SIGTERM, then SIGKILL, by pid) when dropped.
pub struct PgBouncer {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl PgBouncer {
    /// Starts PgBouncer with `pool_size` server connections at most.
    /// PgBouncer refuses to run as root, so as root it runs as `postgres`.
    pub fn start(cluster: &Cluster, pool_size: usize) -> Result<PgBouncer, String> {
        let bin = pgbouncer_binary().ok_or("pgbouncer is not installed")?;
        let dir = TempDir::new("rowgate-bench-pgbouncer")?;
        let port = free_port()?;
        let userlist = dir.path().join("userlist.txt");
        std::fs::write(
            &userlist,
            format!("\"{AUTHENTICATOR}\" \"{AUTHENTICATOR_PASSWORD}\"\n"),
        )
        .map_err(|e| format!("write {}: {e}", userlist.display()))?;
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]
bench = host=127.0.0.1 port={pg_port} dbname={db}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {userlist}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_db_connections = {pool_size}
max_client_conn = 12000
ignore_startup_parameters = extra_float_digits,options
logfile = {log}
log_connections = 0
log_disconnections = 0
stats_period = 3600
",
                pg_port = cluster.port(),
                db = cluster.db,
                userlist = userlist.display(),
                log = dir.path().join("pgbouncer.log").display(),
            ),
        )
        .map_err(|e| format!("write {}: {e}", ini.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if is_root() {
            let (uid, gid) = os_user("postgres").ok_or(
                "running as root, and PgBouncer refuses root, but there is no `postgres` user",
            )?;
            for f in [&userlist, &ini, &dir.path().to_path_buf()] {
                chown(f, uid, gid)?;
            }
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
            std::os::unix::process::CommandExt::gid(&mut cmd, gid);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        let mut bouncer = PgBouncer { child, port, dir };
        if let Err(e) = wait_for_port(port, Duration::from_secs(10)) {
            let log = std::fs::read_to_string(bouncer.dir.path().join("pgbouncer.log"))
                .unwrap_or_default();
            bouncer.stop();
            return Err(format!("{e}; PgBouncer log:\n{log}"));
        }
        Ok(bouncer)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Process id (for CPU accounting).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `postgres://authenticator:authpass@127.0.0.1:PORT/bench`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{AUTHENTICATOR}:{AUTHENTICATOR_PASSWORD}@127.0.0.1:{}/bench",
            self.port
        )
    }

    /// PgBouncer's version line, for the report.
    pub fn version() -> Option<String> {
        let out = Command::new(pgbouncer_binary()?)
            .arg("--version")
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(str::to_owned)
    }

    fn stop(&mut self) {
        stop_child(&mut self.child);
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", path.display()))
}

/// SIGTERM, a grace period, then SIGKILL: only the process we started.
pub fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill on a pid we spawned and have not reaped yet.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The `q`-quantile (0..=1) of sorted values; 0 when empty.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs a bench's async body on a multi-thread runtime. Its error, or the
/// runtime's, is printed under `name`; None then.
pub fn block_on<T>(
    name: &str,
    body: impl std::future::Future<Output = Result<T, String>>,
) -> Option<T> {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return None;
        }
    };
    runtime
        .block_on(body)
        .map_err(|e| eprintln!("{name}: {e}"))
        .ok()
}

/// Raises this process's open-file limit as far as allowed; children
/// inherit it. Returns the soft limit now in force.
// rlim_t is u64 on Linux x86_64 but not everywhere: the casts stay.
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let target = want.max(lim.rlim_cur as u64);
        if is_root() && (lim.rlim_max as u64) < target {
            lim.rlim_max = target as libc::rlim_t;
        }
        lim.rlim_cur = target.min(lim.rlim_max as u64) as libc::rlim_t;
        let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur as u64
}

/// Writes `value` as pretty JSON to `path`, creating its parent.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("write {}: {e}", path.display()))
}

/// Escapes text for SVG/XML.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Today's date (UTC), for reports, without a date dependency
/// (civil-from-days, Howard Hinnant's algorithm).
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
