//! Connection scale: many idle authenticated clients (rowgate's memory per
//! client) and a storm of new connections with fresh tokens.
//!
//! Clients speak the protocol over raw sockets: a startup packet, the token
//! as password, then wait for ReadyForQuery. That is all an idle client
//! costs, with nothing from a driver in the way.

use bytes::BytesMut;
use rowgate::wire::{frontend, next_frame, put_cstr, put_frame};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// How long one handshake may take before it counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens an authenticated connection and returns it idle, after
/// ReadyForQuery.
pub async fn handshake(port: u16, dbname: &str, token: &str) -> Result<TcpStream, String> {
    let fut = async {
        let mut tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let startup = frontend::startup_message(&[("user", "bench"), ("database", dbname)]);
        tcp.write_all(&startup)
            .await
            .map_err(|e| format!("startup: {e}"))?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut sent_password = false;
        loop {
            while let Some(frame) = next_frame(&mut buf, 1 << 20).map_err(|e| e.to_string())? {
                match frame.tag() {
                    b'R' if !sent_password => {
                        let mut msg = BytesMut::new();
                        put_frame(&mut msg, b'p', |b| put_cstr(b, token.as_bytes()));
                        tcp.write_all(&msg)
                            .await
                            .map_err(|e| format!("password: {e}"))?;
                        sent_password = true;
                    }
                    b'E' => {
                        return Err(format!(
                            "refused: {}",
                            String::from_utf8_lossy(frame.body()).replace('\0', " ")
                        ))
                    }
                    b'Z' => return Ok(tcp),
                    _ => {}
                }
            }
            if tcp
                .read_buf(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?
                == 0
            {
                return Err("closed during the handshake".into());
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, fut)
        .await
        .map_err(|_| "handshake timed out".to_string())?
}

/// Result of opening many connections.
pub struct Opened {
    pub streams: Vec<TcpStream>,
    pub failures: usize,
    pub first_failure: Option<String>,
    pub wall: Duration,
    /// Per-handshake latency, microseconds, sorted.
    pub latency_us: Vec<u64>,
}

/// Opens one connection per token, `concurrency` at a time.
pub async fn open_many(port: u16, dbname: &str, tokens: &[String], concurrency: usize) -> Opened {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let start = Instant::now();
    let tasks: Vec<_> = tokens
        .iter()
        .cloned()
        .map(|token| {
            let gate = gate.clone();
            let dbname = dbname.to_owned();
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await;
                let t0 = Instant::now();
                let r = handshake(port, &dbname, &token).await;
                (r, t0.elapsed())
            })
        })
        .collect();
    let mut opened = Opened {
        streams: Vec::with_capacity(tokens.len()),
        failures: 0,
        first_failure: None,
        wall: Duration::ZERO,
        latency_us: Vec::with_capacity(tokens.len()),
    };
    for t in tasks {
        match t.await {
            Ok((Ok(stream), took)) => {
                opened.streams.push(stream);
                opened.latency_us.push(took.as_micros() as u64);
            }
            Ok((Err(e), _)) => {
                opened.failures += 1;
                opened.first_failure.get_or_insert(e);
            }
            Err(e) => {
                opened.failures += 1;
                opened.first_failure.get_or_insert(e.to_string());
            }
        }
    }
    opened.wall = start.elapsed();
    opened.latency_us.sort_unstable();
    opened
}

/// Checks that an idle connection still answers: a query round trip.
pub async fn still_alive(stream: &mut TcpStream) -> bool {
    let mut msg = BytesMut::new();
    frontend::put_query(&mut msg, "select 1");
    if stream.write_all(&msg).await.is_err() {
        return false;
    }
    let mut buf = BytesMut::new();
    let read = async {
        loop {
            while let Ok(Some(f)) = next_frame(&mut buf, 1 << 20) {
                if f.tag() == b'Z' {
                    return true;
                }
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or(false)
}
