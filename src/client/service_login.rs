//! Service logins during startup: a startup `user` that names a
//! `[[services]]` entry authenticates with SCRAM-SHA-256 against the
//! service's verifier ([`crate::auth::scram`]), instead of sending a JWT as
//! its password. A wrong password and a name the JWT path can never accept
//! get the same exchange (a dummy verifier) and the same `FATAL 28P01`.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use tokio::io::AsyncWriteExt;

use super::startup::StartupEnd;
use crate::auth::scram::{ScramError, ServerFirst, Verifier, MECHANISM};
use crate::auth::{Authenticator, Service, Services};
use crate::wire::stream::Stream;
use crate::wire::{build, next_frame, put_cstr, Reader, MAX_PREAUTH_LEN};

/// What kind of login a connection made.
#[derive(Clone, Debug)]
pub enum Login {
    /// A user, with a JWT as the password (the identity is the token's).
    User,
    /// A service (`[[services]]`): no user identity of its own (unless it
    /// has `default_identity`); each transaction may name its user in-band.
    Service(Arc<Service>),
}

impl Login {
    /// The service, for a service login.
    pub fn service(&self) -> Option<&Arc<Service>> {
        match self {
            Login::Service(s) => Some(s),
            Login::User => None,
        }
    }
}

/// How the startup `user` is to authenticate.
pub enum Method {
    /// The JWT path (cleartext password = a token).
    Token,
    /// SCRAM against this verifier; `None` = no such service (the exchange
    /// runs against a dummy verifier and fails like a wrong password).
    Scram(Option<Arc<Service>>, Verifier),
}

/// Chooses the method: a configured service name gets SCRAM; so does a
/// name no issuer can accept as a JWT user (`user_policy = "map"` without
/// it), so that probing for service names learns nothing; every other name
/// goes the JWT way.
pub fn method_for(user: &str, services: &Services, auth: &Authenticator) -> Method {
    if services.is_empty() {
        return Method::Token;
    }
    match services.verifier_for(user) {
        (Some(s), v) => Method::Scram(Some(s), v),
        (None, v) if !auth.may_be_user(user) => Method::Scram(None, v),
        (None, _) => Method::Token,
    }
}

/// The message every failed service login gets, as PostgreSQL words it.
pub fn failed_message(user: &str) -> String {
    format!(
        "password authentication failed for user {:?}",
        user.chars().take(64).collect::<String>()
    )
}

fn failed(user: &str) -> StartupEnd {
    StartupEnd::Refuse {
        code: "28P01",
        message: failed_message(user),
    }
}

/// AuthenticationSASL offering SCRAM-SHA-256 (no channel binding).
fn authentication_sasl() -> bytes::Bytes {
    build(b'R', |b| {
        b.put_i32(10);
        put_cstr(b, MECHANISM.as_bytes());
        b.put_u8(0);
    })
}

fn authentication_sasl_data(code: i32, data: &[u8]) -> bytes::Bytes {
    build(b'R', |b| {
        b.put_i32(code);
        b.put_slice(data);
    })
}

/// Reads the next client message during authentication; it must be a
/// PasswordMessage-family `p`.
async fn read_p(stream: &mut Stream, buf: &mut BytesMut) -> Result<bytes::Bytes, StartupEnd> {
    let frame = loop {
        match next_frame(buf, MAX_PREAUTH_LEN) {
            Ok(Some(f)) => break f,
            Ok(None) => match stream.read_more(buf).await {
                Ok(n) if n > 0 => {}
                _ => return Err(StartupEnd::Quiet),
            },
            Err(e) => return Err(e.into()),
        }
    };
    if frame.tag() != b'p' {
        return Err(StartupEnd::Refuse {
            code: "08P01",
            message: "expected a SASL response".into(),
        });
    }
    Ok(bytes::Bytes::copy_from_slice(frame.body()))
}

/// Runs the SCRAM exchange after `prefix` (e.g. NegotiateProtocolVersion),
/// for a service login or the admin console. `known`: the login name
/// exists (else `verifier` is a dummy and the login always fails). On
/// success, AuthenticationSASLFinal has been sent; AuthenticationOk is the
/// caller's. Timing: the same work runs for an unknown name as for a wrong
/// password; the proof check is constant-time.
pub async fn scram(
    stream: &mut Stream,
    buf: &mut BytesMut,
    prefix: &[u8],
    user: &str,
    known: bool,
    verifier: Verifier,
) -> Result<(), StartupEnd> {
    let mut out = BytesMut::from(prefix);
    out.extend_from_slice(&authentication_sasl());
    stream.write_all(&out).await?;
    let initial = read_p(stream, buf).await?;
    let mut r = Reader::new(&initial, "SASLInitialResponse");
    let mechanism = r.cstr()?;
    if mechanism != MECHANISM.as_bytes() {
        return Err(StartupEnd::Refuse {
            code: "28000",
            message: format!(
                "SASL mechanism {:?} is not offered; rowgate offers {MECHANISM}",
                String::from_utf8_lossy(mechanism)
            ),
        });
    }
    let len = {
        let b = r.bytes(4)?;
        i32::from_be_bytes([b[0], b[1], b[2], b[3]])
    };
    let data = r.rest();
    if len < 0 || len as usize != data.len() {
        return Err(StartupEnd::Refuse {
            code: "08P01",
            message: "malformed SASLInitialResponse".into(),
        });
    }
    let refuse = |e: ScramError| {
        tracing::info!(reason = %e, "password login refused");
        match e {
            ScramError::BadProof => failed(user),
            other => StartupEnd::Refuse {
                code: "28000",
                message: format!("rowgate: {other}"),
            },
        }
    };
    let (server, first) = ServerFirst::start(verifier, data).map_err(refuse)?;
    stream
        .write_all(&authentication_sasl_data(11, first.as_bytes()))
        .await?;
    let fin = read_p(stream, buf).await?;
    let server_final = server.finish(&fin).map_err(refuse)?;
    if !known {
        // A dummy verifier cannot match, but never let it log anyone in.
        return Err(failed(user));
    }
    stream
        .write_all(&authentication_sasl_data(12, server_final.as_bytes()))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_message_is_postgres_wording_and_bounded() {
        assert_eq!(
            failed_message("billing"),
            "password authentication failed for user \"billing\""
        );
        assert!(failed_message(&"x".repeat(1000)).len() < 120);
    }
}
