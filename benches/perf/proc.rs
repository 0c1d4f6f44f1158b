//! rowgate as a separate `rowgate serve` process, as deployed: its RSS is
//! its own, and its `/metrics` counters cover only what the bench sent.

use super::common::{free_port, rowgate_toml, stop_child, wait_for_port, TempDir};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `rowgate serve`, stopped (by pid) when dropped.
pub struct RowgateProcess {
    child: Child,
    pub port: u16,
    pub metrics_port: u16,
    _dir: TempDir,
}

impl RowgateProcess {
    /// Starts the release binary built by cargo for this bench.
    pub fn start(upstream_url: &str, pool_size: usize, pem: &Path) -> Result<Self, String> {
        Self::start_with(upstream_url, pool_size, pem, "")
    }

    /// The same with more config appended, e.g. a `[guard]` section.
    pub fn start_with(
        upstream_url: &str,
        pool_size: usize,
        pem: &Path,
        extra_toml: &str,
    ) -> Result<Self, String> {
        let dir = TempDir::new("rowgate-bench-serve")?;
        let port = free_port()?;
        let metrics_port = free_port()?;
        let config = dir.path().join("rowgate.toml");
        let toml = rowgate_toml(
            &format!("127.0.0.1:{port}"),
            upstream_url,
            pool_size,
            pem,
            Some(&format!("127.0.0.1:{metrics_port}")),
        ) + extra_toml;
        std::fs::write(&config, toml).map_err(|e| format!("write {}: {e}", config.display()))?;
        let log = std::fs::File::create(dir.path().join("rowgate.log"))
            .map_err(|e| format!("create rowgate.log: {e}"))?;
        // ROWGATE_BENCH_WRAPPER runs rowgate under a tool, e.g.
        // "valgrind --tool=massif --massif-out-file=/tmp/rowgate.massif".
        let wrapper = std::env::var("ROWGATE_BENCH_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut cmd = match words.next() {
            Some(tool) => {
                let mut c = Command::new(tool);
                c.args(words).arg(env!("CARGO_BIN_EXE_rowgate"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_rowgate")),
        };
        let child = cmd
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("ROWGATE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start rowgate serve: {e}"))?;
        let mut p = RowgateProcess {
            child,
            port,
            metrics_port,
            _dir: dir,
        };
        if let Err(e) = wait_for_port(port, Duration::from_secs(20)) {
            let log =
                std::fs::read_to_string(p._dir.path().join("rowgate.log")).unwrap_or_default();
            stop_child(&mut p.child);
            return Err(format!("{e}; rowgate log:\n{log}"));
        }
        Ok(p)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A counter from `/metrics` (0 when absent).
    pub fn metric(&self, name: &str) -> Result<f64, String> {
        let text = http_get(self.metrics_port, "/metrics")?;
        Ok(text
            .lines()
            .filter_map(|l| l.strip_prefix(name))
            .filter_map(|rest| rest.strip_prefix(' '))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .next()
            .unwrap_or(0.0))
    }
}

impl Drop for RowgateProcess {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// A minimal HTTP/1.1 GET on loopback; the body. Retried: the endpoint
/// closes right after writing, which can surface as a reset.
fn http_get(port: u16, path: &str) -> Result<String, String> {
    let mut last = String::new();
    for _ in 0..3 {
        match http_get_once(port, path) {
            Ok(body) => return Ok(body),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(last)
}

fn http_get_once(port: u16, path: &str) -> Result<String, String> {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("metrics endpoint: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("metrics endpoint: {e}"))?;
    let mut raw = Vec::new();
    let read = tcp.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    // An empty body is a valid answer: no counter has been touched yet.
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(format!("metrics endpoint: {read:?}, {} bytes", raw.len())),
    }
}

/// VmRSS (or another field) of a process, in bytes, from /proc.
pub fn proc_status_bytes(pid: u32, field: &str) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}

/// CPU time (user + system) a process has used so far, in microseconds.
pub fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000 / hz)
}

/// utime+stime of `pid` (clock ticks), its parent's pid, and the times of
/// its reaped children (cutime+cstime), from /proc/<pid>/stat.
fn stat_ticks(pid: u32) -> Option<(u32, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let ppid = f.get(1)?.parse::<u32>().ok()?;
    Some((ppid, n(11)? + n(12)?, n(13)? + n(14)?))
}

/// CPU time PostgreSQL has used so far, in microseconds: the postmaster
/// (pid from `postmaster.pid` in `data_dir`) with the children it reaped,
/// plus every live child (backends, background processes). Differences
/// of two readings are exact for backends that live through both and for
/// those that start or end in between.
pub fn postgres_cpu_micros(data_dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let postmaster: u32 = text.lines().next()?.trim().parse().ok()?;
    let (_, own, reaped) = stat_ticks(postmaster)?;
    let mut ticks = own + reaped;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((ppid, t, _)) = stat_ticks(pid) {
            if ppid == postmaster {
                ticks += t;
            }
        }
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000 / hz)
}
