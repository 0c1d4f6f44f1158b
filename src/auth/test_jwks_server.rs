//! A tiny JWKS HTTP server for tests: a plain tokio `TcpListener` on
//! 127.0.0.1 with hand-written HTTP/1.1 replies. Self-contained (tokio and
//! serde_json only) so other test suites can copy it as it is.
//!
//! ```ignore
//! let server = JwksServer::start(json!({"keys": [jwk_a]})).await;
//! let url = server.url();            // http://127.0.0.1:PORT/.well-known/jwks.json
//! server.set_jwks(json!({"keys": [jwk_a, jwk_b]}));   // rotate keys
//! server.set_mode(Mode::Slow(Duration::from_secs(10)));
//! assert_eq!(server.hits(), 1);
//! ```

#![allow(dead_code)] // a reusable kit: not every suite uses every mode

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the server answers the next requests.
#[derive(Clone, Debug)]
pub enum Mode {
    /// 200 with the current JWKS.
    Serve,
    /// Accept, then close without a reply (an issuer that is down).
    Down,
    /// Wait this long, then serve (an issuer that hangs).
    Slow(Duration),
    /// 302 to this location.
    Redirect(String),
    /// 200 with a JSON body of about this many bytes and an honest
    /// Content-Length.
    Oversized(usize),
    /// 200 with a body of about this many bytes and no Content-Length (the
    /// body ends when the connection closes), to test streaming caps.
    OversizedNoLength(usize),
    /// This status with an empty body.
    Status(u16),
}

struct Shared {
    jwks: Mutex<String>,
    mode: Mutex<Mode>,
    hits: AtomicUsize,
}

/// The server; stops when dropped.
pub struct JwksServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Starts serving `jwks` on an ephemeral 127.0.0.1 port.
    pub async fn start(jwks: Value) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            jwks: Mutex::new(jwks.to_string()),
            mode: Mutex::new(Mode::Serve),
            hits: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(handle(conn, s.clone()));
            }
        });
        JwksServer { addr, shared, task }
    }

    /// The JWKS URL.
    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// Replaces the served key set.
    pub fn set_jwks(&self, jwks: Value) {
        *self.shared.jwks.lock().expect("jwks lock") = jwks.to_string();
    }

    /// Changes how requests are answered.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().expect("mode lock") = mode;
    }

    /// Requests received so far (in every mode).
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(mut conn: TcpStream, shared: Arc<Shared>) {
    // Read the request head (bounded in size and time); the body is empty.
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let mode = shared.mode.lock().expect("mode lock").clone();
    let jwks = shared.jwks.lock().expect("jwks lock").clone();
    let reply = match mode {
        Mode::Serve => ok(&jwks, true),
        Mode::Down => return, // dropping `conn` closes it unanswered
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            ok(&jwks, true)
        }
        Mode::Redirect(to) => format!(
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        Mode::Oversized(n) => ok(&padded(n), true),
        Mode::OversizedNoLength(n) => ok(&padded(n), false),
        Mode::Status(code) => {
            format!("HTTP/1.1 {code} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
    };
    let _ = conn.write_all(reply.as_bytes()).await;
    let _ = conn.shutdown().await;
}

fn padded(n: usize) -> String {
    format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(n))
}

fn ok(body: &str, with_length: bool) -> String {
    let length = if with_length {
        format!("Content-Length: {}\r\n", body.len())
    } else {
        String::new()
    };
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n{body}"
    )
}
