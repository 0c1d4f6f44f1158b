//! A tiny HTTP/1.1 JWKS endpoint on 127.0.0.1 whose keys and behaviour a test
//! can change while rowgate is fetching from it.

use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Path of the keys, as on a Clerk frontend API.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Where [`JwksMode::Redirect`] points; it always serves the keys.
pub const REDIRECT_PATH: &str = "/redirected/jwks.json";

/// How the server answers requests for [`JWKS_PATH`].
#[derive(Debug, Clone, PartialEq)]
pub enum JwksMode {
    /// 200 with the current keys.
    Normal,
    /// Resets every connection (RST) without reading or answering it.
    Down,
    /// Waits this long, then answers like `Normal`.
    Slow(Duration),
    /// 302 to [`REDIRECT_PATH`] on the same server.
    Redirect,
    /// 200 with the keys padded by an extra `"pad"` member to about this
    /// many bytes: still valid JSON, just too big.
    Oversized(usize),
}

struct State {
    keys: Value,
    mode: JwksMode,
}

/// The JWKS server. Start it inside the test's tokio runtime; it stops when
/// dropped.
pub struct JwksServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl JwksServer {
    /// Serves `support::keys().jwks`.
    pub async fn start() -> JwksServer {
        Self::start_with(super::keys().jwks.clone()).await
    }

    /// Serves the given JWKS document.
    pub async fn start_with(keys: Value) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind JWKS server on 127.0.0.1");
        let addr = listener.local_addr().expect("JWKS server address");
        let state = Arc::new(Mutex::new(State {
            keys,
            mode: JwksMode::Normal,
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(listener, state.clone(), hits.clone()));
        JwksServer {
            addr,
            state,
            hits,
            task,
        }
    }

    /// `http://127.0.0.1:PORT/.well-known/jwks.json`.
    pub fn url(&self) -> String {
        format!("{}{JWKS_PATH}", self.base_url())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the served JWKS document (key rotation).
    pub fn set_keys(&self, keys: Value) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).keys = keys;
    }

    /// Changes how later requests are answered.
    pub fn set_mode(&self, mode: JwksMode) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).mode = mode;
    }

    /// Connections accepted so far, in every mode. Each connection carries at
    /// most one request (`Connection: close`), so this counts fetches.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>, hits: Arc<AtomicUsize>) {
    while let Ok((stream, _)) = listener.accept().await {
        hits.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(serve(stream, state.clone()));
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let (keys, mode) = {
        let s = state.lock().unwrap_or_else(|e| e.into_inner());
        (s.keys.to_string(), s.mode.clone())
    };
    if mode == JwksMode::Down {
        // Zero linger makes the close a reset, like a crashed server.
        let _ = stream.set_zero_linger();
        return;
    }
    let Some(path) = read_request_path(&mut stream).await else {
        return;
    };
    let response = match (path.as_str(), mode) {
        (REDIRECT_PATH, _) | (JWKS_PATH, JwksMode::Normal) => response("200 OK", &[], &keys),
        (JWKS_PATH, JwksMode::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            response("200 OK", &[], &keys)
        }
        (JWKS_PATH, JwksMode::Redirect) => {
            response("302 Found", &[("Location", REDIRECT_PATH)], "")
        }
        (JWKS_PATH, JwksMode::Oversized(size)) => {
            let mut doc: Value = serde_json::from_str(&keys).unwrap_or_default();
            doc["pad"] = Value::String("x".repeat(size.saturating_sub(keys.len())));
            response("200 OK", &[], &doc.to_string())
        }
        _ => response("404 Not Found", &[], "{\"error\":\"not found\"}"),
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads the request head and returns the request-target of its first line.
async fn read_request_path(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || head.len() > 16 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split_whitespace().nth(1)?;
    Some(target.split('?').next().unwrap_or(target).to_string())
}

fn response(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}
