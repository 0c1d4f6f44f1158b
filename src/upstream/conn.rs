//! One authenticated connection to the upstream server, and the state rowgate
//! keeps about it between client transactions (its prepared statements).

use super::{tls, SslMode, Target};
use crate::wire::backend::{parse_error_fields, ErrorFields};
use crate::wire::frontend::{put_query, ssl_request, startup_message};
use crate::wire::stream::Stream;
use crate::wire::{next_frame, put_cstr, put_frame, Frame, WireError, MAX_MESSAGE_LEN};
use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why an upstream connection could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP or TLS I/O failed.
    #[error("upstream {addr}: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Opening the connection took longer than `connect_timeout`.
    #[error("upstream {0}: connection timed out")]
    Timeout(String),
    /// TLS was required but the server does not offer it, or setup failed.
    #[error("upstream {addr}: TLS: {reason}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The server refused us (bad password, no such database, ...).
    #[error("upstream refused the connection: {0}")]
    Server(ErrorFields),
    /// The server asked for an authentication method rowgate lacks.
    #[error("upstream asks for unsupported authentication method {0} (supported: SCRAM-SHA-256, md5, password, trust)")]
    UnsupportedAuth(i32),
    /// The server needs a password and the URL has none.
    #[error("upstream asks for a password but [upstream] url has none")]
    NoPassword,
    /// The server sent something that is not valid protocol.
    #[error("upstream protocol error: {0}")]
    Protocol(String),
}

impl From<WireError> for UpstreamError {
    fn from(e: WireError) -> Self {
        UpstreamError::Protocol(e.to_string())
    }
}

/// A bounded set of statement names prepared on one connection, least
/// recently used first out.
#[derive(Debug, Default)]
pub struct PreparedSet {
    // Seeded foldhash, not SipHash: looked up on every Bind, where SipHash
    // showed in the profile.
    names: HashMap<Arc<str>, u64, foldhash::fast::RandomState>,
    tick: u64,
}

impl PreparedSet {
    /// Whether `name` is prepared; marks it used.
    pub fn touch(&mut self, name: &str) -> bool {
        self.tick += 1;
        match self.names.get_mut(name) {
            Some(t) => {
                *t = self.tick;
                true
            }
            None => false,
        }
    }
    /// Records `name` as prepared; returns the least recently used name to
    /// close if the set grew beyond `cap`.
    pub fn insert(&mut self, name: Arc<str>, cap: usize) -> Option<Arc<str>> {
        self.tick += 1;
        self.names.insert(name.clone(), self.tick);
        if self.names.len() <= cap.max(1) {
            return None;
        }
        let victim = self
            .names
            .iter()
            .filter(|(n, _)| **n != name)
            .min_by_key(|(_, t)| **t)
            .map(|(n, _)| n.clone())?;
        self.names.remove(&victim);
        Some(victim)
    }
    /// Forgets `name` (its Parse failed, or it was closed).
    pub fn remove(&mut self, name: &str) {
        self.names.remove(name);
    }
    /// Forgets everything (after a client ran DISCARD/DEALLOCATE).
    pub fn clear(&mut self) {
        self.names.clear();
    }
}

/// An open, authenticated upstream connection.
pub struct ServerConn {
    /// The transport.
    pub stream: Stream,
    /// Bytes read but not yet consumed.
    pub rbuf: BytesMut,
    /// ParameterStatus values reported at startup.
    pub params: Vec<(String, String)>,
    /// The backend's process id (for CancelRequest).
    pub pid: i32,
    /// The backend's cancel secret.
    pub secret: i32,
    /// Statements prepared on this connection by rowgate.
    pub prepared: PreparedSet,
    /// Whether rowgate's identity statement is prepared here.
    pub identity_prepared: u64,
    /// When the connection was opened (for `max_lifetime`).
    pub created: Instant,
    /// When it was last returned to the pool (for `idle_timeout`).
    pub idle_since: Instant,
}

impl ServerConn {
    /// Opens, secures and authenticates a connection within `timeout`.
    pub async fn connect(
        target: &Target,
        tls: Option<&Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<ServerConn, UpstreamError> {
        let addr = target.display_addr();
        tokio::time::timeout(timeout, Self::connect_inner(target, tls))
            .await
            .map_err(|_| UpstreamError::Timeout(addr))?
    }

    async fn connect_inner(
        target: &Target,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<ServerConn, UpstreamError> {
        let addr = target.display_addr();
        let io = |source| UpstreamError::Io {
            addr: addr.clone(),
            source,
        };
        let mut tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                tcp.write_all(&ssl_request()).await.map_err(io)?;
                let mut answer = [0u8; 1];
                tcp.read_exact(&mut answer).await.map_err(io)?;
                match answer[0] {
                    b'S' => {
                        let name = tls::server_name(&target.host).map_err(|reason| {
                            UpstreamError::Tls {
                                addr: addr.clone(),
                                reason,
                            }
                        })?;
                        let tls = tokio_rustls::TlsConnector::from(config.clone())
                            .connect(name, tcp)
                            .await
                            .map_err(io)?;
                        Stream::ClientTls(Box::new(tls))
                    }
                    b'N' if target.sslmode == SslMode::Prefer => Stream::Plain(tcp),
                    _ => {
                        return Err(UpstreamError::Tls {
                            addr,
                            reason: "the server does not accept TLS; use sslmode=prefer or disable for a local server".into(),
                        })
                    }
                }
            }
        };
        let mut conn = ServerConn {
            stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            params: Vec::new(),
            pid: 0,
            secret: 0,
            prepared: PreparedSet::default(),
            identity_prepared: 0,
            created: Instant::now(),
            idle_since: Instant::now(),
        };
        let mut params = vec![
            ("user", target.user.as_str()),
            ("database", target.dbname.as_str()),
            ("application_name", "rowgate"),
            ("client_encoding", "UTF8"),
        ];
        if let Some(o) = &target.options {
            params.push(("options", o));
        }
        conn.write(&startup_message(&params)).await?;
        conn.authenticate(target).await?;
        Ok(conn)
    }

    async fn authenticate(&mut self, target: &Target) -> Result<(), UpstreamError> {
        let mut scram: Option<ScramSha256> = None;
        loop {
            let f = self.read_frame().await?;
            let body = f.body();
            match f.tag() {
                b'R' => {
                    let code = i32_at(body, 0)?;
                    match code {
                        0 => {}
                        3 => {
                            let pw = target
                                .password
                                .as_deref()
                                .ok_or(UpstreamError::NoPassword)?;
                            self.send_password(pw.as_bytes()).await?;
                        }
                        5 => {
                            let pw = target
                                .password
                                .as_deref()
                                .ok_or(UpstreamError::NoPassword)?;
                            let salt: [u8; 4] = body
                                .get(4..8)
                                .and_then(|s| s.try_into().ok())
                                .ok_or_else(|| UpstreamError::Protocol("short md5 salt".into()))?;
                            let hash = postgres_protocol::authentication::md5_hash(
                                target.user.as_bytes(),
                                pw.as_bytes(),
                                salt,
                            );
                            self.send_password(hash.as_bytes()).await?;
                        }
                        10 => {
                            let mechs = String::from_utf8_lossy(&body[4..]);
                            if !mechs.split('\0').any(|m| m == "SCRAM-SHA-256") {
                                return Err(UpstreamError::UnsupportedAuth(code));
                            }
                            let pw = target
                                .password
                                .as_deref()
                                .ok_or(UpstreamError::NoPassword)?;
                            // Channel binding is not offered ("n"): saying "y"
                            // would make a server that supports it refuse us.
                            let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                            let mut out = BytesMut::new();
                            put_frame(&mut out, b'p', |b| {
                                put_cstr(b, b"SCRAM-SHA-256");
                                b.put_i32(s.message().len() as i32);
                                b.put_slice(s.message());
                            });
                            self.write(&out).await?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                UpstreamError::Protocol("SASLContinue before SASL".into())
                            })?;
                            s.update(&body[4..])
                                .map_err(|e| UpstreamError::Protocol(format!("SCRAM: {e}")))?;
                            let mut out = BytesMut::new();
                            put_frame(&mut out, b'p', |b| b.put_slice(s.message()));
                            self.write(&out).await?;
                        }
                        12 => {
                            let mut s = scram.take().ok_or_else(|| {
                                UpstreamError::Protocol("SASLFinal before SASL".into())
                            })?;
                            s.finish(&body[4..]).map_err(|e| {
                                UpstreamError::Protocol(format!("SCRAM server proof: {e}"))
                            })?;
                        }
                        other => return Err(UpstreamError::UnsupportedAuth(other)),
                    }
                }
                b'S' => {
                    let mut r = crate::wire::Reader::new(body, "ParameterStatus");
                    let name = String::from_utf8_lossy(r.cstr()?).into_owned();
                    let value = String::from_utf8_lossy(r.cstr()?).into_owned();
                    self.params.push((name, value));
                }
                b'K' => {
                    self.pid = i32_at(body, 0)?;
                    self.secret = i32_at(body, 4)?;
                }
                b'Z' => return Ok(()),
                b'E' => return Err(UpstreamError::Server(parse_error_fields(body)?)),
                b'N' | b'v' => {}
                other => {
                    return Err(UpstreamError::Protocol(format!(
                        "unexpected message {:?} during startup",
                        other as char
                    )))
                }
            }
        }
    }

    async fn send_password(&mut self, pw: &[u8]) -> Result<(), UpstreamError> {
        let mut out = BytesMut::new();
        put_frame(&mut out, b'p', |b| put_cstr(b, pw));
        self.write(&out).await
    }

    /// Whether an idle connection still looks usable: nothing may arrive on
    /// an idle connection, so readable bytes or EOF mean the server closed
    /// it or is about to (e.g. `terminating connection due to administrator
    /// command` after a restart). Never blocks.
    pub fn looks_alive(&mut self) -> bool {
        use std::task::{Context, Poll, Waker};
        use tokio::io::{AsyncRead, ReadBuf};
        if !self.rbuf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        matches!(
            std::pin::Pin::new(&mut self.stream).poll_read(&mut cx, &mut buf),
            Poll::Pending
        )
    }

    /// Writes raw protocol bytes.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), UpstreamError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|source| UpstreamError::Io {
                addr: "server".into(),
                source,
            })
    }

    /// Reads one complete message.
    pub async fn read_frame(&mut self) -> Result<Frame, UpstreamError> {
        loop {
            if let Some(f) = next_frame(&mut self.rbuf, MAX_MESSAGE_LEN)? {
                return Ok(f);
            }
            let n = self
                .stream
                .read_more(&mut self.rbuf)
                .await
                .map_err(|source| UpstreamError::Io {
                    addr: "server".into(),
                    source,
                })?;
            if n == 0 {
                return Err(UpstreamError::Protocol(
                    "server closed the connection".into(),
                ));
            }
        }
    }

    /// Runs SQL with the simple protocol, discarding rows. Returns the first
    /// error the server reported, after its ReadyForQuery; also returns the
    /// final transaction status.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Result<u8, ErrorFields>, UpstreamError> {
        let mut out = BytesMut::new();
        put_query(&mut out, sql);
        self.write(&out).await?;
        let mut first_error = None;
        loop {
            let f = self.read_frame().await?;
            match f.tag() {
                b'E' if first_error.is_none() => first_error = Some(parse_error_fields(f.body())?),
                b'Z' => {
                    let status = f.body().first().copied().unwrap_or(b'?');
                    return Ok(match first_error {
                        Some(e) => Err(e),
                        None => Ok(status),
                    });
                }
                _ => {}
            }
        }
    }
}

impl ServerConn {
    /// After a transaction in which a client changed session settings:
    /// reads the values the server settled on for `names` (a `text[]`
    /// literal; None to read nothing), then, if `reset`, resets the
    /// connection's session state so nothing of the client stays on it.
    /// One round trip.
    pub async fn capture_and_reset(
        &mut self,
        names: Option<&str>,
        reset: bool,
    ) -> Result<Vec<Option<String>>, UpstreamError> {
        use crate::wire::frontend::{put_bind_text, put_execute, put_parse, put_sync};
        let mut out = BytesMut::new();
        let mut ready_owed = 0;
        if let Some(names) = names {
            put_parse(
                &mut out,
                b"",
                b"SELECT current_setting(n, true) FROM unnest($1::text[]) WITH ORDINALITY AS t(n, i) ORDER BY i\0\0\0",
            );
            put_bind_text(&mut out, b"", b"", &[names.as_bytes()]);
            put_execute(&mut out, b"");
            put_sync(&mut out);
            ready_owed += 1;
        }
        if reset {
            // RESET ALL leaves the role alone; reset it too.
            put_query(
                &mut out,
                "RESET ALL; RESET ROLE; RESET SESSION AUTHORIZATION",
            );
            ready_owed += 1;
        }
        self.write(&out).await?;
        let mut values = Vec::new();
        let mut failed = None;
        while ready_owed > 0 {
            let f = self.read_frame().await?;
            match f.tag() {
                b'D' => values.push(first_text_column(f.body())?),
                b'E' => failed = Some(parse_error_fields(f.body())?),
                b'Z' => ready_owed -= 1,
                _ => {}
            }
        }
        match failed {
            Some(e) => Err(UpstreamError::Server(e)),
            None => Ok(values),
        }
    }
}

/// The first column of a DataRow as text (None for NULL).
fn first_text_column(body: &[u8]) -> Result<Option<String>, UpstreamError> {
    let mut r = crate::wire::Reader::new(body, "DataRow");
    let short = || UpstreamError::Protocol("short DataRow".into());
    r.bytes(2).map_err(|_| short())?;
    let len = r.i32().map_err(|_| short())?;
    if len < 0 {
        return Ok(None);
    }
    let v = r.bytes(len as usize).map_err(|_| short())?;
    Ok(Some(String::from_utf8_lossy(v).into_owned()))
}

fn i32_at(body: &[u8], at: usize) -> Result<i32, UpstreamError> {
    body.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(i32::from_be_bytes)
        .ok_or_else(|| UpstreamError::Protocol("truncated message".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_set_evicts_least_recently_used() {
        let mut s = PreparedSet::default();
        assert_eq!(s.insert("a".into(), 2), None);
        assert_eq!(s.insert("b".into(), 2), None);
        assert!(s.touch("a"));
        assert_eq!(s.insert("c".into(), 2).as_deref(), Some("b"));
        assert!(!s.touch("b"));
        assert!(s.touch("c"));
    }
}
