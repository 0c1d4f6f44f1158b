//! The startup phase of a client connection: TLS negotiation, the startup
//! packet, the password (a JWT) and its verification, then the greeting a
//! client expects from PostgreSQL (AuthenticationOk, ParameterStatus,
//! BackendKeyData, ReadyForQuery).

use super::params::ClientParams;
use super::Shared;
use crate::auth::Identity;
use crate::upstream::databases::UnknownDatabase;
use crate::upstream::{Database, PoolError, UpstreamError};
use crate::wire::backend::{self, Severity};
use crate::wire::frontend::{parse_startup, password, StartupPacket};
use crate::wire::stream::Stream;
use crate::wire::{next_frame, next_startup_packet, WireError, MAX_PREAUTH_LEN};
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// How the startup phase ended without producing a session.
#[derive(Debug)]
pub enum StartupEnd {
    /// The client went away or sent a CancelRequest (handled); nothing to say.
    Quiet,
    /// The client asked for the admin console (database `rowgate`, user
    /// `admin`); it takes over the stream and what was read of it.
    AdminConsole {
        /// Bytes the client sent after its startup packet.
        pending: BytesMut,
    },
    /// Refuse with a FATAL error and close.
    Refuse {
        /// SQLSTATE.
        code: &'static str,
        /// Message for the person at the client.
        message: String,
    },
}

impl From<std::io::Error> for StartupEnd {
    fn from(_: std::io::Error) -> Self {
        StartupEnd::Quiet
    }
}

impl From<WireError> for StartupEnd {
    fn from(e: WireError) -> Self {
        StartupEnd::Refuse {
            code: "08P01",
            message: format!("invalid startup packet: {e}"),
        }
    }
}

/// A client that proved its identity.
pub struct Authenticated {
    /// The (possibly TLS) stream.
    pub stream: Stream,
    /// Bytes the client already sent after its password (pipelined queries).
    pub pending: BytesMut,
    /// Verified identity (for a service: its `default_identity`, or none).
    pub identity: Identity,
    /// A user's JWT login or a service's password login.
    pub login: super::service_login::Login,
    /// The client's session parameters, from its startup packet.
    pub params: ClientParams,
    /// The upstream server's reported parameters (server_version, ...).
    pub server_params: Arc<Vec<(String, String)>>,
    /// The database the client asked for: its pool, verifier and identity
    /// statement.
    pub database: Arc<Database>,
}

/// Runs the startup phase to completion. On refusal the FATAL error has not
/// been sent yet; the caller sends it on the returned stream. `secure` says
/// the transport around `stream` is already encrypted (HTTPS, WSS), for the
/// plaintext-password rule; TLS negotiated here counts by itself.
pub async fn handshake(
    mut stream: Stream,
    peer: SocketAddr,
    secure: bool,
    shared: &Arc<Shared>,
) -> Result<Authenticated, (Option<Stream>, StartupEnd)> {
    let mut buf = BytesMut::with_capacity(1024);
    // Up to two negotiation requests (GSSENC then SSL, as libpq may send)
    // precede the startup packet.
    for _ in 0..3 {
        let body = match read_packet(&mut stream, &mut buf).await {
            Ok(b) => b,
            Err(e) => return Err((Some(stream), e)),
        };
        let packet = match parse_startup(&body) {
            Ok(p) => p,
            Err(e) => return Err((Some(stream), e.into())),
        };
        match packet {
            StartupPacket::SslRequest => match (shared.tls.load_full(), stream) {
                (Some(acceptor), Stream::Plain(mut tcp)) => {
                    if !buf.is_empty() {
                        // Bytes sent before the TLS handshake could have been
                        // injected by a man in the middle (CVE-2021-23214).
                        return Err((
                            Some(Stream::Plain(tcp)),
                            refuse("08P01", "unencrypted data after SSL request"),
                        ));
                    }
                    if tcp.write_all(b"S").await.is_err() {
                        return Err((None, StartupEnd::Quiet));
                    }
                    match acceptor.accept(tcp).await {
                        Ok(tls) => stream = Stream::ServerTls(Box::new(tls)),
                        Err(_) => return Err((None, StartupEnd::Quiet)),
                    }
                }
                (_, mut s) => {
                    if s.write_all(b"N").await.is_err() {
                        return Err((None, StartupEnd::Quiet));
                    }
                    stream = s;
                }
            },
            StartupPacket::GssEncRequest => {
                if stream.write_all(b"N").await.is_err() {
                    return Err((None, StartupEnd::Quiet));
                }
            }
            StartupPacket::Cancel { pid, secret } => {
                shared.cancels.cancel(pid, secret).await;
                return Err((None, StartupEnd::Quiet));
            }
            StartupPacket::Unsupported(code) => {
                return Err((
                    Some(stream),
                    refuse(
                        "0A000",
                        &format!(
                            "unsupported frontend protocol {}.{}: rowgate speaks 3.0",
                            code >> 16,
                            code & 0xffff
                        ),
                    ),
                ))
            }
            StartupPacket::Startup { minor, params } => {
                return authenticate(stream, buf, peer, secure, shared, minor, params).await;
            }
        }
    }
    Err((
        Some(stream),
        refuse("08P01", "too many negotiation requests"),
    ))
}

async fn authenticate(
    mut stream: Stream,
    mut buf: BytesMut,
    peer: SocketAddr,
    secure: bool,
    shared: &Arc<Shared>,
    minor: i32,
    params: Vec<(String, String)>,
) -> Result<Authenticated, (Option<Stream>, StartupEnd)> {
    let user = params
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    // As libpq and PostgreSQL: no database given means the user's name.
    let dbname = params
        .iter()
        .find(|(k, _)| k == "database")
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| user.clone());
    crate::admin::hook::startup_database(&dbname);
    if dbname == crate::admin::ADMIN_DATABASE && user == crate::admin::ADMIN_USER {
        // SCRAM, not a bearer token: no TLS needed for the password.
        return Err((Some(stream), StartupEnd::AdminConsole { pending: buf }));
    }
    // Before the password, as PgBouncer: the database decides how the
    // password is checked.
    let database = match shared.databases.resolve(&dbname) {
        Ok(db) => db,
        Err(e) => {
            tracing::info!(%peer, "startup refused: {e}");
            return Err((
                Some(stream),
                StartupEnd::Refuse {
                    code: UnknownDatabase::SQLSTATE,
                    message: e.to_string(),
                },
            ));
        }
    };
    if !password_allowed(
        secure || stream.is_tls(),
        peer.ip(),
        shared.config.listen.allow_plaintext_password,
    ) {
        return Err((
            Some(stream),
            refuse("28000", "rowgate requires TLS for clients that are not on loopback (the password is a bearer token); connect with sslmode=require, or set [listen] allow_plaintext_password = true"),
        ));
    }
    let unrecognized: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.clone())
        .collect();
    let mut out = BytesMut::new();
    if minor > 0 || !unrecognized.is_empty() {
        out.extend_from_slice(&backend::negotiate_protocol_version(0, &unrecognized));
    }
    let auth = database.auth().clone();
    let method = super::service_login::method_for(&user, &shared.services.load(), &auth);
    if let super::service_login::Method::Scram(service, verifier) = method {
        use super::service_login::{scram, Login};
        let known = service.is_some();
        let done = scram(&mut stream, &mut buf, &out, &user, known, verifier).await;
        if matches!(done, Err(StartupEnd::Refuse { .. })) {
            crate::metrics::incr("rowgate_auth_failures_total", "service_login");
        }
        return match (done, service) {
            (Ok(()), Some(service)) => {
                let identity = match &service.default_identity {
                    Some(claims) => auth.identity_from_claims(claims),
                    None => Ok(auth.no_identity()),
                };
                match identity {
                    Ok(identity) => {
                        tracing::info!(%peer, service = %service.name, "service logged in");
                        let login = Login::Service(service);
                        greet(
                            stream, buf, shared, database, &dbname, params, identity, login,
                        )
                        .await
                    }
                    Err(e) => Err((
                        Some(stream),
                        refuse("28000", &format!("rowgate: default_identity: {e}")),
                    )),
                }
            }
            (Err(StartupEnd::Quiet), _) => Err((None, StartupEnd::Quiet)),
            (Err(end), _) => Err((Some(stream), end)),
            (Ok(()), None) => Err((
                Some(stream),
                refuse("28P01", &super::service_login::failed_message(&user)),
            )),
        };
    }
    out.extend_from_slice(&backend::authentication_cleartext());
    if stream.write_all(&out).await.is_err() {
        return Err((None, StartupEnd::Quiet));
    }
    let frame = loop {
        match next_frame(&mut buf, MAX_PREAUTH_LEN) {
            Ok(Some(f)) => break f,
            Ok(None) => match stream.read_more(&mut buf).await {
                Ok(n) if n > 0 => {}
                _ => return Err((None, StartupEnd::Quiet)),
            },
            Err(e) => return Err((Some(stream), e.into())),
        }
    };
    if frame.tag() != b'p' {
        return Err((Some(stream), refuse("08P01", "expected a password message")));
    }
    let token = match password(frame.body()) {
        Ok(t) => String::from_utf8_lossy(t).into_owned(),
        Err(e) => return Err((Some(stream), e.into())),
    };
    let identity = match auth.authenticate(token.trim(), &user).await {
        Ok(id) => id,
        Err(crate::auth::AuthError::Malformed(_)) if !shared.services.load().is_empty() => {
            // Not a JWT at all: perhaps a service password sent for a name
            // that is no service. Word it as a failed service login would
            // be, so the two cannot be told apart.
            return Err((
                Some(stream),
                refuse("28P01", &super::service_login::failed_message(&user)),
            ));
        }
        Err(e) => {
            tracing::info!(%peer, reason = e.reason(), "authentication refused: {e}");
            return Err((
                Some(stream),
                StartupEnd::Refuse {
                    code: e.sqlstate(),
                    message: format!("rowgate: {e}"),
                },
            ));
        }
    };
    let login = super::service_login::Login::User;
    greet(
        stream, buf, shared, database, &dbname, params, identity, login,
    )
    .await
}

/// After a successful login: the upstream's parameters, AuthenticationOk and
/// the ParameterStatus messages.
#[allow(clippy::too_many_arguments)]
async fn greet(
    mut stream: Stream,
    buf: BytesMut,
    shared: &Arc<Shared>,
    database: Arc<Database>,
    dbname: &str,
    params: Vec<(String, String)>,
    identity: Identity,
    login: super::service_login::Login,
) -> Result<Authenticated, (Option<Stream>, StartupEnd)> {
    let server_params = match database.pool().server_params().await {
        Ok(p) => p,
        Err(e) => {
            let (code, message) = match &e {
                // The upstream has no such database (a wildcard entry, or
                // a database dropped since): say so as PostgreSQL would.
                PoolError::Connect(UpstreamError::Server(f)) if f.code == "3D000" => {
                    ("3D000", UnknownDatabase(dbname.to_owned()).to_string())
                }
                _ => (e.sqlstate(), format!("rowgate: {e}")),
            };
            return Err((Some(stream), StartupEnd::Refuse { code, message }));
        }
    };
    let database = shared.databases.keep(database);
    let mut out = BytesMut::with_capacity(512);
    out.extend_from_slice(&backend::authentication_ok());
    let mut client_params = ClientParams::from_startup(&params);
    client_params.drop_server_defaults(&server_params);
    for (k, v) in client_params.initial_report(&server_params) {
        out.extend_from_slice(&backend::parameter_status(&k, &v));
    }
    Ok(Authenticated {
        stream: {
            if stream.write_all(&out).await.is_err() {
                return Err((None, StartupEnd::Quiet));
            }
            stream
        },
        pending: buf,
        identity,
        login,
        params: client_params,
        server_params,
        database,
    })
}

/// Whether a client may send its password (a bearer token) on this
/// connection: over TLS, from loopback, or where the config allows plain TCP.
fn password_allowed(tls: bool, peer: std::net::IpAddr, allow_plaintext: bool) -> bool {
    tls || peer.is_loopback() || allow_plaintext
}

fn refuse(code: &'static str, message: &str) -> StartupEnd {
    StartupEnd::Refuse {
        code,
        message: message.to_owned(),
    }
}

async fn read_packet(stream: &mut Stream, buf: &mut BytesMut) -> Result<Bytes, StartupEnd> {
    loop {
        if let Some(p) = next_startup_packet(buf)? {
            return Ok(p);
        }
        if stream.read_more(buf).await? == 0 {
            return Err(StartupEnd::Quiet);
        }
    }
}

/// Sends a FATAL error, best effort, before the connection closes.
pub async fn send_fatal(stream: &mut Stream, code: &str, message: &str) {
    let _ = stream
        .write_all(&backend::error_response(Severity::Fatal, code, message))
        .await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::password_allowed;

    #[test]
    fn tokens_cross_plain_tcp_only_on_loopback_or_when_allowed() {
        let remote: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        let v6_loopback: std::net::IpAddr = "::1".parse().unwrap();
        assert!(!password_allowed(false, remote, false));
        assert!(password_allowed(true, remote, false));
        assert!(password_allowed(false, remote, true));
        assert!(password_allowed(false, "127.0.0.1".parse().unwrap(), false));
        assert!(password_allowed(false, v6_loopback, false));
    }
}
