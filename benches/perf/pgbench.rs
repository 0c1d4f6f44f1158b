//! Runs pgbench against one target and reads its summary.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where pgbench connects, as libpq environment variables.
#[derive(Clone, Debug)]
pub struct Conn {
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
}

/// The workloads of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `-S`: one primary-key SELECT per transaction.
    SelectOnly,
    /// pgbench's default TPC-B-like script (7 statements).
    TpcB,
    /// `BEGIN; SELECT set_config(..., true) x3; SELECT ...; COMMIT`: what an
    /// app must send to get rowgate's guarantee without rowgate.
    SafeIdentity,
    /// The select-only query as ORMs and query builders write it: quoted
    /// identifiers and the key as a literal, a different text each time.
    OrmSelect,
}

impl Workload {
    pub fn label(self) -> &'static str {
        match self {
            Workload::SelectOnly => "select-only",
            Workload::TpcB => "tpc-b",
            Workload::SafeIdentity => "safe-identity script",
            Workload::OrmSelect => "orm-style select",
        }
    }

    /// Client round trips per transaction (each statement is one).
    pub fn round_trips(self) -> f64 {
        match self {
            Workload::SelectOnly => 1.0,
            Workload::TpcB => 7.0,
            Workload::SafeIdentity => 4.0,
            Workload::OrmSelect => 1.0,
        }
    }
}

/// The safe-identity script: the same three settings rowgate injects, then
/// the select-only query.
pub const SAFE_IDENTITY_SCRIPT: &str = r#"\set aid random(1, 100000 * :scale)
\set uid random(1, 50)
BEGIN;
SELECT set_config('app.user_id', 'user_' || :uid, true), set_config('request.jwt.claims', '{"sub":"user_' || :uid || '"}', true), set_config('app.org_id', '', true);
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
COMMIT;
"#;

/// [`Workload::OrmSelect`]'s script (run with `-M simple`, pgbench puts
/// the literal into the text).
pub const ORM_SELECT_SCRIPT: &str = r#"\set aid random(1, 100000 * :scale)
select "abalance" from "pgbench_accounts" where "aid" = :aid;
"#;

/// What one pgbench run reported.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub tps: f64,
    pub latency_ms: f64,
    pub transactions: u64,
    pub failed: u64,
    /// Set when pgbench aborted or could not run; the first error line.
    pub error: Option<String>,
}

/// One pgbench invocation.
pub struct Run<'a> {
    pub bin: &'a Path,
    pub conn: &'a Conn,
    pub workload: Workload,
    pub mode: &'a str,
    pub clients: u32,
    pub seconds: u32,
    pub script: Option<&'a Path>,
}

impl Run<'_> {
    /// Runs pgbench with `-j` equal to `-c`: with fewer threads, a
    /// synchronous PQprepare can stall a thread's other clients behind a
    /// pooler whose pool is smaller than the client count.
    pub fn execute(&self) -> Outcome {
        let mut cmd = Command::new(self.bin);
        cmd.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.conn.port.to_string())
            .env("PGUSER", &self.conn.user)
            .env("PGPASSWORD", &self.conn.password)
            .env("PGDATABASE", &self.conn.dbname)
            .env("PGSSLMODE", "disable")
            .env("PGCONNECT_TIMEOUT", "20")
            .args(["-n", "-M", self.mode])
            .args(["-c", &self.clients.to_string()])
            .args(["-j", &self.clients.to_string()])
            .args(["-T", &self.seconds.to_string()]);
        match (self.workload, self.script) {
            (Workload::SelectOnly, _) => {
                cmd.arg("-S");
            }
            (Workload::SafeIdentity | Workload::OrmSelect, Some(script)) => {
                cmd.arg("-f").arg(script);
            }
            _ => {}
        }
        let out = match cmd.output() {
            Ok(o) => o,
            Err(e) => {
                return Outcome {
                    error: Some(format!("cannot run {}: {e}", self.bin.display())),
                    ..Outcome::default()
                }
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut outcome = parse(&stdout);
        if !out.status.success() || outcome.tps == 0.0 {
            let first = stderr
                .lines()
                .find(|l| l.contains("error") || l.contains("ERROR") || l.contains("FATAL"))
                .or_else(|| stderr.lines().next())
                .unwrap_or("pgbench failed without a message");
            outcome.error = Some(first.trim().to_string());
        }
        outcome
    }
}

/// Reads pgbench's summary lines.
fn parse(stdout: &str) -> Outcome {
    let mut o = Outcome::default();
    for line in stdout.lines() {
        let value = |prefix: &str| {
            line.strip_prefix(prefix)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        if let Some(v) = value("tps = ") {
            o.tps = v;
        } else if let Some(v) = value("latency average = ") {
            o.latency_ms = v;
        } else if let Some(v) = value("number of transactions actually processed: ") {
            o.transactions = v as u64;
        } else if let Some(v) = value("number of failed transactions: ") {
            o.failed = v as u64;
        }
    }
    o
}

/// `pgbench -i -s SCALE` as the superuser, then lets rowgate's role use the
/// tables (no RLS on them: the point is the proxy's cost).
pub fn initialize(bin: &Path, conn: &Conn, scale: u32) -> Result<(), String> {
    let out = Command::new(bin)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", conn.port.to_string())
        .env("PGUSER", &conn.user)
        .env("PGPASSWORD", &conn.password)
        .env("PGDATABASE", &conn.dbname)
        .args(["-i", "-q", "-s", &scale.to_string()])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "pgbench -i failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// pgbench's tables at `scale` in the cluster's database, made by the
/// superuser, with `privileges` on them for rowgate's role (no RLS: the
/// point is the proxy's cost).
pub async fn setup_tables(
    bin: &Path,
    cluster: &super::common::Cluster,
    scale: u32,
    privileges: &str,
) -> Result<(), String> {
    let superuser = Conn {
        port: cluster.port(),
        user: "postgres".into(),
        password: cluster.superuser_password.clone(),
        dbname: cluster.db.clone(),
    };
    println!("pgbench -i -s {scale} ...");
    initialize(bin, &superuser, scale)?;
    cluster
        .admin()
        .await?
        .batch_execute(&format!(
            "GRANT {privileges} ON ALL TABLES IN SCHEMA public TO rowgate_user"
        ))
        .await
        .map_err(|e| format!("grant: {}", super::common::pg_error(&e)))
}

/// pgbench beside the server binaries.
pub fn binary() -> Result<PathBuf, String> {
    let dir = rowgate::embedded::find_bin_dir().map_err(|e| e.to_string())?;
    let p = dir.join("pgbench");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("no pgbench in {}", dir.display()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_summary() {
        let o = super::parse(
            "number of transactions actually processed: 1234\nnumber of failed transactions: 0 (0.000%)\nlatency average = 0.801 ms\ntps = 1247.690525 (without initial connection time)\n",
        );
        assert_eq!(o.transactions, 1234);
        assert!((o.tps - 1247.690525).abs() < 1e-6);
        assert!((o.latency_ms - 0.801).abs() < 1e-9);
    }
}
