//! Process-wide counters, exposed in the Prometheus text format.
//!
//! Deliberately tiny: a fixed set of counters keyed by `(name, label)` where
//! both are `&'static str`, so no caller can ever put a token (or any other
//! peer-controlled string) into a metric label.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, OnceLock};

type Key = (&'static str, &'static str);

fn registry() -> &'static Mutex<BTreeMap<Key, &'static AtomicI64>> {
    static REG: OnceLock<Mutex<BTreeMap<Key, &'static AtomicI64>>> = OnceLock::new();
    REG.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Returns the counter for `name{reason="label"}` (label may be empty),
/// creating it on first use. Counters live for the whole process.
///
/// Hot paths count every transaction, so each thread keeps its own map of
/// counters it has used: after the first use, no lock is taken.
pub fn counter(name: &'static str, label: &'static str) -> &'static AtomicI64 {
    thread_local! {
        static SEEN: std::cell::RefCell<std::collections::HashMap<Key, &'static AtomicI64>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    if let Some(c) = SEEN.with(|s| s.borrow().get(&(name, label)).copied()) {
        return c;
    }
    let c = {
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        *reg.entry((name, label))
            .or_insert_with(|| Box::leak(Box::new(AtomicI64::new(0))))
    };
    SEEN.with(|s| s.borrow_mut().insert((name, label), c));
    c
}

/// Adds one to `name{reason="label"}`.
pub fn incr(name: &'static str, label: &'static str) {
    counter(name, label).fetch_add(1, Ordering::Relaxed);
}

/// Adds `delta` (may be negative, for gauges) to `name{reason="label"}`.
pub fn add(name: &'static str, label: &'static str, delta: i64) {
    counter(name, label).fetch_add(delta, Ordering::Relaxed);
}

/// Current value of `name{reason="label"}` (0 if never touched).
pub fn get(name: &'static str, label: &'static str) -> i64 {
    counter(name, label).load(Ordering::Relaxed)
}

/// Renders every counter in the Prometheus text exposition format.
pub fn render() -> String {
    let reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    let mut out = String::new();
    for ((name, label), value) in reg.iter() {
        let v = value.load(Ordering::Relaxed);
        if label.is_empty() {
            out.push_str(&format!("{name} {v}\n"));
        } else {
            out.push_str(&format!("{name}{{reason=\"{label}\"}} {v}\n"));
        }
    }
    out
}

/// Serves `GET /metrics` (any path, really) in the Prometheus text format on
/// `addr`, in the background.
pub async fn serve(addr: &str) -> std::io::Result<std::net::SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut req = [0u8; 1024];
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut req))
                    .await;
                let body = render();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_and_without_label() {
        incr("rowgate_test_total", "");
        incr("rowgate_test_refused_total", "expired");
        incr("rowgate_test_refused_total", "expired");
        let text = render();
        assert!(text.contains("rowgate_test_total 1\n"));
        assert!(text.contains("rowgate_test_refused_total{reason=\"expired\"} 2\n"));
    }
}
