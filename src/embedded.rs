//! A throwaway local PostgreSQL server, started from the machine's own server
//! binaries (`initdb`, `pg_ctl`, `postgres`).
//!
//! Used by `rowgate dev`, by the integration tests and by the benchmarks, so
//! that everything runs against a real server instead of a mock. The server
//! listens on 127.0.0.1 only, plus a Unix socket in a private temp dir.
//!
//! `initdb` and `postgres` refuse to run as root. When this process is root
//! the data dir, socket dir and log file are handed to the `postgres` OS user
//! and every server binary is run through `runuser -u postgres --`.

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Environment variable naming a directory that holds `initdb`, `pg_ctl` and
/// `postgres`; it wins over every other place we look.
pub const PG_BIN_ENV: &str = "ROWGATE_PG_BIN";

/// Loopback address the server listens on; nothing else is ever exposed.
const HOST: &str = "127.0.0.1";

/// How many fresh ports to try when the one we picked was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// How to start a [`LocalPostgres`].
#[derive(Debug, Clone)]
pub struct LocalPostgresOptions {
    /// Password of the `postgres` superuser. Only applied when the cluster is
    /// created; a reused `data_dir` keeps the password it was created with.
    pub superuser_password: String,
    /// TCP port on 127.0.0.1; `None` picks a free one.
    pub port: Option<u16>,
    /// Extra `postgresql.conf` settings, e.g. `("max_connections", "200")`.
    /// Values are written quoted, so pass them without quotes.
    pub extra_conf: Vec<(String, String)>,
    /// Where the cluster lives. `None` makes a fresh temp dir that is removed
    /// on drop; `Some` is created if needed, reused if it already holds a
    /// cluster, and never removed. As root, the `postgres` user must be able
    /// to reach it.
    pub data_dir: Option<PathBuf>,
    /// Where the fresh run dir (socket, log, and the cluster when `data_dir`
    /// is `None`) is made. `None` is the system temp dir (`/tmp` as root).
    /// Tests pass [`memory_dir`]: a cluster on tmpfs starts and copies
    /// databases several times faster than on a VM's disk.
    pub run_dir_base: Option<PathBuf>,
}

impl Default for LocalPostgresOptions {
    /// A random superuser password, a free port, no extra settings and a temp
    /// data dir.
    fn default() -> Self {
        LocalPostgresOptions {
            superuser_password: format!("{:032x}", rand::random::<u128>()),
            port: None,
            extra_conf: Vec::new(),
            data_dir: None,
            run_dir_base: None,
        }
    }
}

/// Why a local server could not be started or stopped. Each message says what
/// to do about it and, when the server itself failed, ends with its log tail.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No usable server binaries anywhere we looked.
    #[error(
        "no PostgreSQL server binaries found (looked in {looked}); install them with \
         `apt-get install -y postgresql`, or set {PG_BIN_ENV} to the directory holding \
         initdb, pg_ctl and postgres"
    )]
    BinariesNotFound {
        /// The places searched, for the message.
        looked: String,
    },
    /// Running as root, but there is no unprivileged user to run the server as.
    #[error(
        "running as root, and PostgreSQL refuses to run as root, but there is no `postgres` \
         OS user to run it as; create one with `useradd --system --user-group postgres` \
         (installing the postgresql package does) or run as a non-root user"
    )]
    NoPostgresUser,
    /// A filesystem or process-spawning step failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What we were doing.
        action: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A PostgreSQL binary ran and reported failure.
    #[error("`{command}` failed ({status}); {hint}\n{output}{log_tail}")]
    Command {
        /// The command, e.g. `pg_ctl start`.
        command: String,
        /// Its exit status.
        status: String,
        /// What to try next.
        hint: String,
        /// Its own stdout and stderr.
        output: String,
        /// The last lines of the server log, with a heading, or empty.
        log_tail: String,
    },
}

type Result<T> = std::result::Result<T, EmbeddedError>;

fn io_err(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    let action = action.into();
    move |source| EmbeddedError::Io { action, source }
}

/// A running local PostgreSQL server. Dropping it stops the server and removes
/// its temp dir.
#[derive(Debug)]
pub struct LocalPostgres {
    bin_dir: PathBuf,
    /// Temp dir for the socket, log and (by default) data; removed on drop.
    run_dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    password: String,
    extra_conf: Vec<(String, String)>,
    /// `Some` when we are root and run the server as this OS user.
    run_as: Option<OsUser>,
    running: bool,
}

#[derive(Debug, Clone, Copy)]
struct OsUser {
    uid: u32,
    gid: u32,
}

impl LocalPostgres {
    /// Creates (or reuses) a cluster and starts the server, waiting until it
    /// accepts connections. Blocks for a second or two.
    pub fn start(opts: LocalPostgresOptions) -> Result<LocalPostgres> {
        let bin_dir = find_bin_dir()?;
        let run_as = if is_root() {
            Some(lookup_user("postgres").ok_or(EmbeddedError::NoPostgresUser)?)
        } else {
            None
        };
        // Absolute, because the server binaries run with the run dir as cwd.
        let data_dir = match opts.data_dir {
            Some(dir) => Some(
                std::path::absolute(&dir).map_err(io_err(format!("resolve {}", dir.display())))?,
            ),
            None => None,
        };
        let run_dir = match &opts.run_dir_base {
            Some(base) => make_run_dir_in(base)?,
            None => make_run_dir(run_as.is_some())?,
        };
        let mut pg = LocalPostgres {
            bin_dir,
            data_dir: data_dir.unwrap_or_else(|| run_dir.join("data")),
            log_file: run_dir.join("server.log"),
            run_dir,
            port: opts.port.unwrap_or(0),
            password: opts.superuser_password,
            extra_conf: opts.extra_conf,
            run_as,
            running: false,
        };
        // From here on, Drop cleans up the run dir if anything fails.
        pg.prepare_dirs()?;
        if !pg.data_dir.join("PG_VERSION").exists() {
            pg.initdb()?;
        }
        match opts.port {
            Some(_) => pg.start_server()?,
            None => pg.start_on_free_port()?,
        }
        Ok(pg)
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the server listens on: always `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/dbname`.
    pub fn superuser_url(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres:{}@{HOST}:{}/{dbname}",
            percent_encode(&self.password),
            self.port
        )
    }

    /// The directory the server binaries were taken from; `psql` of the same
    /// version usually sits beside them.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log, for debugging a failing test.
    pub fn log_path(&self) -> &Path {
        &self.log_file
    }

    /// Stops the server (`pg_ctl stop -m fast`): open sessions are rolled back
    /// and disconnected. Does nothing if it is already stopped.
    pub fn stop(&mut self) -> Result<()> {
        self.stop_with_mode("fast")
    }

    /// Kills the server without a clean shutdown (`pg_ctl stop -m immediate`),
    /// as a crash would; the next start runs crash recovery.
    pub fn stop_immediate(&mut self) -> Result<()> {
        self.stop_with_mode("immediate")
    }

    /// Stops and starts the server again on the same port and data dir.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_server()
    }

    /// Starts a detached `sh` loop that, once this process has exited, stops
    /// the server with `pg_ctl stop -m immediate` and removes the temp dir
    /// (which holds the data dir unless one was given).
    /// A fallback for when `Drop` never runs (statics, SIGKILL, abort).
    pub fn spawn_exit_watchdog(&self) -> Result<()> {
        // Paths go in as positional parameters, so nothing needs quoting.
        const SCRIPT: &str = r#"
            while kill -0 "$1" 2>/dev/null; do sleep 1; done
            if [ "$5" = yes ]; then
                runuser -u postgres -- "$2" stop -D "$3" -m immediate -w
            else
                "$2" stop -D "$3" -m immediate -w
            fi
            rm -rf -- "$4"
        "#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("rowgate-pg-watchdog")
            .arg(std::process::id().to_string())
            .arg(self.bin_dir.join("pg_ctl"))
            .arg(&self.data_dir)
            .arg(&self.run_dir)
            .arg(if self.run_as.is_some() { "yes" } else { "no" })
            .current_dir(&self.run_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: a Ctrl-C aimed at us must not kill the watchdog.
            .process_group(0);
        cmd.spawn()
            .map_err(io_err("spawn the exit watchdog (sh)"))?;
        Ok(())
    }

    fn prepare_dirs(&self) -> Result<()> {
        let sock = self.run_dir.join("sock");
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&sock)
            .map_err(io_err(format!("create {}", sock.display())))?;
        if !self.data_dir.exists() {
            // Parents get the usual mode, so the server's user can reach in.
            if let Some(parent) = self.data_dir.parent() {
                fs::create_dir_all(parent)
                    .map_err(io_err(format!("create {}", parent.display())))?;
            }
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&self.data_dir)
                .map_err(io_err(format!("create {}", self.data_dir.display())))?;
            self.chown(&self.data_dir)?;
        }
        fs::File::create(&self.log_file)
            .map_err(io_err(format!("create {}", self.log_file.display())))?;
        self.chown(&sock)?;
        self.chown(&self.log_file)
    }

    fn initdb(&self) -> Result<()> {
        let pwfile = self.run_dir.join("pwfile");
        write_file(&pwfile, &self.password, 0o600)?;
        self.chown(&pwfile)?;
        let mut pwarg = OsString::from("--pwfile=");
        pwarg.push(&pwfile);
        let out = self.run(
            "initdb",
            &[
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--auth-local=trust".as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                &pwarg,
            ],
        );
        let _ = fs::remove_file(&pwfile);
        self.check(
            "initdb",
            out?,
            "check that the data dir is empty and writable by the server's OS user",
            false,
        )?;
        let hba =
            "# Written by rowgate::embedded: socket trusted, loopback TCP needs a password.\n\
                   local all all trust\n\
                   host  all all 127.0.0.1/32 scram-sha-256\n\
                   host  all all ::1/128      scram-sha-256\n";
        self.write_cluster_file("pg_hba.conf", hba)?;
        let conf_path = self.data_dir.join("postgresql.conf");
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .map_err(io_err(format!("open {}", conf_path.display())))?;
        conf.write_all(b"\n# Settings managed by rowgate::embedded, rewritten on every start.\ninclude_if_exists = 'rowgate.conf'\n")
            .map_err(io_err(format!("append to {}", conf_path.display())))
    }

    /// Writes `rowgate.conf`, which `postgresql.conf` includes last, so these
    /// settings win over anything before them.
    fn write_conf(&self) -> Result<()> {
        let sock = self.run_dir.join("sock");
        let mut conf = format!(
            "listen_addresses = '{HOST}'\n\
             port = {}\n\
             unix_socket_directories = {}\n\
             password_encryption = 'scram-sha-256'\n",
            self.port,
            quote(&sock.to_string_lossy())
        );
        for (name, value) in &self.extra_conf {
            conf.push_str(&format!("{name} = {}\n", quote(value)));
        }
        self.write_cluster_file("rowgate.conf", &conf)
    }

    fn start_on_free_port(&mut self) -> Result<()> {
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port()?;
            match self.start_server() {
                Ok(()) => return Ok(()),
                // Someone else took the port between our probe and the bind.
                Err(e) if e.to_string().contains("Address already in use") => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("PORT_ATTEMPTS > 0"))
    }

    fn start_server(&mut self) -> Result<()> {
        self.write_conf()?;
        let log_start = fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0);
        let out = self.run(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-l".as_ref(),
                self.log_file.as_os_str(),
            ],
        )?;
        if !out.status.success() {
            return Err(EmbeddedError::Command {
                command: "pg_ctl start".into(),
                status: out.status.to_string(),
                hint: "PostgreSQL did not start; the server log below says why".into(),
                output: output_text(&out),
                log_tail: log_tail(&self.log_file, log_start),
            });
        }
        self.running = true;
        Ok(())
    }

    fn stop_with_mode(&mut self, mode: &str) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        let out = self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-w".as_ref(),
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-m".as_ref(),
                mode.as_ref(),
            ],
        )?;
        // A server killed behind our back is stopped too.
        if out.status.success() || !self.server_running()? {
            self.running = false;
            return Ok(());
        }
        self.check(
            &format!("pg_ctl stop -m {mode}"),
            out,
            "the server did not shut down; try `pg_ctl stop -m immediate`",
            true,
        )
    }

    /// `pg_ctl status` exits 0 while a server runs on the data dir.
    fn server_running(&self) -> Result<bool> {
        let out = self.run(
            "pg_ctl",
            &["status".as_ref(), "-D".as_ref(), self.data_dir.as_os_str()],
        )?;
        Ok(out.status.success())
    }

    /// Runs a server binary, as the `postgres` user when we are root.
    fn run(&self, program: &str, args: &[&OsStr]) -> Result<Output> {
        let bin = self.bin_dir.join(program);
        let mut cmd = match self.run_as {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        // The run dir is readable by the server user; our own cwd may not be.
        cmd.args(args)
            .current_dir(&self.run_dir)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!("run {}", bin.display())))
    }

    fn check(&self, command: &str, out: Output, hint: &str, with_log: bool) -> Result<()> {
        if out.status.success() {
            return Ok(());
        }
        Err(EmbeddedError::Command {
            command: command.into(),
            status: out.status.to_string(),
            hint: hint.into(),
            output: output_text(&out),
            log_tail: if with_log {
                log_tail(&self.log_file, 0)
            } else {
                String::new()
            },
        })
    }

    fn write_cluster_file(&self, name: &str, contents: &str) -> Result<()> {
        let path = self.data_dir.join(name);
        write_file(&path, contents, 0o600)?;
        self.chown(&path)
    }

    fn chown(&self, path: &Path) -> Result<()> {
        match self.run_as {
            Some(u) => std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))
                .map_err(io_err(format!("chown {} to postgres", path.display()))),
            None => Ok(()),
        }
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if self.stop().is_err() {
            let _ = self.stop_immediate();
        }
        // Holds the socket, the log and, unless one was given, the data dir.
        let _ = fs::remove_dir_all(&self.run_dir);
    }
}

/// Finds the directory holding `initdb`, `pg_ctl` and `postgres`: the
/// `ROWGATE_PG_BIN` override, else `/usr/lib/postgresql/*/bin` newest major
/// first, else the first `PATH` entry that has all three.
pub fn find_bin_dir() -> Result<PathBuf> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os(PG_BIN_ENV) {
        let dir = PathBuf::from(dir);
        if !has_all(&dir) {
            return Err(EmbeddedError::BinariesNotFound {
                looked: format!("{PG_BIN_ENV}={}", dir.display()),
            });
        }
        return Ok(dir);
    }
    let mut versioned: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: std::result::Result<Vec<u32>, _> =
                e.file_name().to_str()?.split('.').map(str::parse).collect();
            Some((version.ok()?, e.path().join("bin")))
        })
        .collect();
    versioned.sort_by(|a, b| b.0.cmp(&a.0));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    versioned
        .into_iter()
        .map(|(_, dir)| dir)
        .chain(on_path)
        .find(|dir| has_all(dir))
        .ok_or_else(|| EmbeddedError::BinariesNotFound {
            looked: "/usr/lib/postgresql/*/bin and PATH".into(),
        })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn lookup_user(name: &str) -> Option<OsUser> {
    let name = CString::new(name).ok()?;
    // SAFETY: getpwnam returns null or a pointer to a static record, which we
    // copy from at once. Only called during start-up.
    unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        (!pw.is_null()).then(|| OsUser {
            uid: (*pw).pw_uid,
            gid: (*pw).pw_gid,
        })
    }
}

/// `/dev/shm` when it is a memory-backed directory with at least
/// `min_free` bytes available (a container's default 64 MB is too small
/// for a cluster), else `None`.
pub fn memory_dir(min_free: u64) -> Option<PathBuf> {
    const SHM: &str = "/dev/shm";
    let path = std::ffi::CString::new(SHM).ok()?;
    // SAFETY: statvfs only writes the struct we hand it, and `path` is a
    // valid NUL-terminated string that outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    let dir = PathBuf::from(SHM);
    (free >= min_free && dir.is_dir()).then_some(dir)
}

/// A fresh private dir for socket, log and data. As root it lives in /tmp
/// with mode 0755 so the `postgres` user can reach into it.
fn make_run_dir(as_root: bool) -> Result<PathBuf> {
    let base = if as_root {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    make_run_dir_in(&base)
}

fn make_run_dir_in(base: &Path) -> Result<PathBuf> {
    let mut last = None;
    for _ in 0..10 {
        let dir = base.join(format!(
            "rowgate-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        match fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last = Some(e),
        }
    }
    Err(EmbeddedError::Io {
        action: format!("create a temp dir under {}", base.display()),
        source: last.unwrap_or_else(|| std::io::Error::other("no attempt made")),
    })
}

/// Asks the kernel for a free loopback port. Racy by nature: the caller
/// retries if the server then fails to bind it.
fn free_port() -> Result<u16> {
    TcpListener::bind((HOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io_err("bind 127.0.0.1:0 to find a free port"))
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(io_err(format!("write {}", path.display())))
}

/// The last 30 lines of the server log written since byte `from`.
fn log_tail(path: &Path, from: u64) -> String {
    let mut text = String::new();
    let read = fs::File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(from))?;
        f.read_to_string(&mut text)
    });
    if read.is_err() || text.trim().is_empty() {
        return String::new();
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(30)..].join("\n");
    format!("--- last lines of {} ---\n{tail}", path.display())
}

fn output_text(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        text = format!("{}\n{text}", stdout.trim());
    }
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

/// A single-quoted postgresql.conf value.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for the
/// password in a URL.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `SELECT 1` through the server's own psql over TCP with `password`.
    fn can_log_in(pg: &LocalPostgres, password: &str) -> bool {
        // The npm builds of other versions ship no psql; the system's does.
        let own = pg.bin_dir().join("psql");
        let psql = if own.is_file() { own } else { "psql".into() };
        Command::new(psql)
            .args(["-X", "-A", "-t", "-c", "SELECT 1", "-d"])
            .arg(format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                pg.port()
            ))
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    #[test]
    fn starts_restarts_and_stops() {
        let opts = LocalPostgresOptions::default();
        let password = opts.superuser_password.clone();
        let mut pg = LocalPostgres::start(opts).unwrap();
        assert!(pg
            .superuser_url("db")
            .ends_with(&format!(":{}/db", pg.port())));
        assert!(can_log_in(&pg, &password));
        assert!(!can_log_in(&pg, "wrong"), "TCP must require the password");

        let port = pg.port();
        pg.restart().unwrap();
        assert_eq!(pg.port(), port);
        assert!(can_log_in(&pg, &password));

        pg.stop_immediate().unwrap();
        pg.stop().unwrap();
        assert!(!can_log_in(&pg, &password));
        let run_dir = pg.run_dir.clone();
        drop(pg);
        assert!(!run_dir.exists(), "temp dir removed on drop");
    }

    #[test]
    fn start_failure_reports_the_server_log() {
        let err = LocalPostgres::start(LocalPostgresOptions {
            extra_conf: vec![("shared_buffers".into(), "lots".into())],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("pg_ctl start"), "{err}");
        assert!(err.contains("shared_buffers"), "log tail missing: {err}");
    }

    #[test]
    fn reuses_a_given_data_dir() {
        let dir = make_run_dir(is_root()).unwrap();
        let opts = LocalPostgresOptions {
            data_dir: Some(dir.join("nested/data")),
            ..Default::default()
        };
        let password = opts.superuser_password.clone();
        drop(LocalPostgres::start(opts).unwrap());
        assert!(
            dir.join("nested/data/PG_VERSION").exists(),
            "given data dir kept"
        );

        // The second start finds the cluster and keeps its password.
        let pg = LocalPostgres::start(LocalPostgresOptions {
            data_dir: Some(dir.join("nested/data")),
            ..Default::default()
        })
        .unwrap();
        assert!(can_log_in(&pg, &password));
        drop(pg);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn encodes_url_passwords() {
        assert_eq!(percent_encode("a b@c/d"), "a%20b%40c%2Fd");
    }

    #[test]
    fn quotes_conf_values() {
        assert_eq!(quote("it's"), "'it''s'");
    }
}
