//! Messages a client sends: the startup packets, and the parts of extended
//! protocol messages that carry statement names, which rowgate renames so
//! that prepared statements can follow a client across pooled connections.

use super::{put_cstr, put_frame, Reader, WireError};
use bytes::{BufMut, Bytes, BytesMut};

/// Protocol code of SSLRequest.
pub const SSL_REQUEST: i32 = 80877103;
/// Protocol code of GSSENCRequest.
pub const GSSENC_REQUEST: i32 = 80877104;
/// Protocol code of CancelRequest.
pub const CANCEL_REQUEST: i32 = 80877102;
/// Protocol version 3.0.
pub const PROTOCOL_3_0: i32 = 196608;

/// The first packet of a connection, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// Cancel the query running for the session with this key.
    Cancel {
        /// Process id from BackendKeyData.
        pid: i32,
        /// Secret key from BackendKeyData.
        secret: i32,
    },
    /// A StartupMessage for protocol 3.x.
    Startup {
        /// Minor protocol version the client asked for.
        minor: i32,
        /// Parameters in the order sent (`user`, `database`, `options`, ...).
        params: Vec<(String, String)>,
    },
    /// Anything else (protocol 2, garbage): refused.
    Unsupported(i32),
}

/// Decodes the body (after the length) of a startup-phase packet.
pub fn parse_startup(body: &[u8]) -> Result<StartupPacket, WireError> {
    let mut r = Reader::new(body, "StartupMessage");
    let code = r.i32()?;
    Ok(match code {
        SSL_REQUEST => StartupPacket::SslRequest,
        GSSENC_REQUEST => StartupPacket::GssEncRequest,
        CANCEL_REQUEST => StartupPacket::Cancel {
            pid: r.i32()?,
            secret: r.i32()?,
        },
        v if v >> 16 == 3 => {
            let mut params = Vec::new();
            loop {
                let name = r.cstr()?;
                if name.is_empty() {
                    break;
                }
                let value = r.cstr()?;
                params.push((
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                ));
            }
            StartupPacket::Startup {
                minor: v & 0xffff,
                params,
            }
        }
        other => StartupPacket::Unsupported(other),
    })
}

/// Builds a StartupMessage (protocol 3.0) with the given parameters.
pub fn startup_message(params: &[(&str, &str)]) -> Bytes {
    let mut body = BytesMut::new();
    body.put_i32(PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(&mut body, k.as_bytes());
        put_cstr(&mut body, v.as_bytes());
    }
    body.put_u8(0);
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(&body);
    out.freeze()
}

/// Builds an SSLRequest packet.
pub fn ssl_request() -> Bytes {
    let mut out = BytesMut::with_capacity(8);
    out.put_i32(8);
    out.put_i32(SSL_REQUEST);
    out.freeze()
}

/// Builds a CancelRequest packet.
pub fn cancel_request(pid: i32, secret: i32) -> Bytes {
    let mut out = BytesMut::with_capacity(16);
    out.put_i32(16);
    out.put_i32(CANCEL_REQUEST);
    out.put_i32(pid);
    out.put_i32(secret);
    out.freeze()
}

/// The password from a PasswordMessage body (NUL-terminated string).
pub fn password(body: &[u8]) -> Result<&[u8], WireError> {
    Reader::new(body, "PasswordMessage").cstr()
}

/// A Parse message split into the statement name and everything after it
/// (query text, parameter types), which is what identifies the statement.
pub struct ParseParts<'a> {
    /// Statement name (empty for the unnamed statement).
    pub name: &'a [u8],
    /// Query string and parameter type OIDs, exactly as sent.
    pub spec: &'a [u8],
}

/// Splits a Parse body.
pub fn parse_parts(body: &[u8]) -> Result<ParseParts<'_>, WireError> {
    let mut r = Reader::new(body, "Parse");
    let name = r.cstr()?;
    let spec = r.rest();
    // Validate the layout now so a malformed Parse is refused here rather
    // than cached and replayed on other connections.
    let mut check = Reader::new(spec, "Parse");
    check.cstr()?;
    let n = {
        let b = check.bytes(2)?;
        i16::from_be_bytes([b[0], b[1]])
    };
    if n < 0 {
        return Err(WireError::Malformed("Parse"));
    }
    check.bytes(n as usize * 4)?;
    Ok(ParseParts { name, spec })
}

/// A Parse payload after the statement name: `sql` and no parameter
/// types (the server infers them).
pub fn parse_spec(sql: &[u8]) -> Bytes {
    let mut spec = BytesMut::with_capacity(sql.len() + 3);
    put_cstr(&mut spec, sql);
    spec.put_i16(0);
    spec.freeze()
}

/// Appends a Parse message for statement `name` with a spec from
/// [`parse_parts`] or [`parse_spec`].
pub fn put_parse(out: &mut BytesMut, name: &[u8], spec: &[u8]) {
    put_frame(out, b'P', |b| {
        put_cstr(b, name);
        b.put_slice(spec);
    });
}

/// A Bind message split around its statement name.
pub struct BindParts<'a> {
    /// Destination portal name.
    pub portal: &'a [u8],
    /// Source statement name.
    pub statement: &'a [u8],
    /// Parameter formats, values and result formats, exactly as sent.
    pub rest: &'a [u8],
}

/// Splits a Bind body.
pub fn bind_parts(body: &[u8]) -> Result<BindParts<'_>, WireError> {
    let mut r = Reader::new(body, "Bind");
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    Ok(BindParts {
        portal,
        statement,
        rest: r.rest(),
    })
}

impl<'a> BindParts<'a> {
    /// The bound parameter values, in order (None for NULL), whatever
    /// their format; None if the message does not hold them as it says.
    pub fn values(&self) -> Option<Vec<Option<&'a [u8]>>> {
        let mut r = Reader::new(self.rest, "Bind");
        let formats = r.bytes(2).ok()?;
        let formats = i16::from_be_bytes([formats[0], formats[1]]);
        r.bytes(2 * usize::try_from(formats).ok()?).ok()?;
        let count = r.bytes(2).ok()?;
        let count = usize::try_from(i16::from_be_bytes([count[0], count[1]])).ok()?;
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            let len = r.i32().ok()?;
            values.push(match usize::try_from(len) {
                Ok(len) => Some(r.bytes(len).ok()?),
                Err(_) => None,
            });
        }
        Some(values)
    }
}

/// Appends a Bind with a different statement name.
pub fn put_bind(out: &mut BytesMut, portal: &[u8], statement: &[u8], rest: &[u8]) {
    put_frame(out, b'B', |b| {
        put_cstr(b, portal);
        put_cstr(b, statement);
        b.put_slice(rest);
    });
}

/// The target of a Describe or Close: a statement (`S`) or portal (`P`).
pub struct Target<'a> {
    /// `b'S'` or `b'P'`.
    pub kind: u8,
    /// Statement or portal name.
    pub name: &'a [u8],
}

/// Splits a Describe or Close body.
pub fn target<'a>(body: &'a [u8], what: &'static str) -> Result<Target<'a>, WireError> {
    let mut r = Reader::new(body, what);
    let kind = r.u8()?;
    if kind != b'S' && kind != b'P' {
        return Err(WireError::Malformed(what));
    }
    Ok(Target {
        kind,
        name: r.cstr()?,
    })
}

/// Appends a Describe or Close (`tag` is `b'D'` or `b'C'`).
pub fn put_target(out: &mut BytesMut, tag: u8, kind: u8, name: &[u8]) {
    put_frame(out, tag, |b| {
        b.put_u8(kind);
        put_cstr(b, name);
    });
}

/// Appends a Bind of `portal` to `statement` with text parameters and
/// default (text) result format.
pub fn put_bind_text(out: &mut BytesMut, portal: &[u8], statement: &[u8], params: &[&[u8]]) {
    put_frame(out, b'B', |b| {
        put_cstr(b, portal);
        put_cstr(b, statement);
        b.put_i16(0);
        b.put_i16(params.len() as i16);
        for p in params {
            b.put_i32(p.len() as i32);
            b.put_slice(p);
        }
        b.put_i16(0);
    });
}

/// Appends Execute of `portal`, all rows.
pub fn put_execute(out: &mut BytesMut, portal: &[u8]) {
    put_frame(out, b'E', |b| {
        put_cstr(b, portal);
        b.put_i32(0);
    });
}

/// Appends Sync.
pub fn put_sync(out: &mut BytesMut) {
    put_frame(out, b'S', |_| {});
}

/// Appends a Flush: the server sends what it has so far, no Sync needed.
pub fn put_flush(out: &mut BytesMut) {
    put_frame(out, b'H', |_| {});
}

/// Appends a simple Query.
pub fn put_query(out: &mut BytesMut, sql: &str) {
    put_frame(out, b'Q', |b| put_cstr(b, sql.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{next_frame, next_startup_packet, MAX_MESSAGE_LEN};

    #[test]
    fn startup_round_trips() {
        let pkt = startup_message(&[("user", "u"), ("database", "d")]);
        let body = next_startup_packet(&mut BytesMut::from(&pkt[..]))
            .unwrap()
            .unwrap();
        assert_eq!(
            parse_startup(&body).unwrap(),
            StartupPacket::Startup {
                minor: 0,
                params: vec![("user".into(), "u".into()), ("database".into(), "d".into())]
            }
        );
        let ssl = next_startup_packet(&mut BytesMut::from(&ssl_request()[..]))
            .unwrap()
            .unwrap();
        assert_eq!(parse_startup(&ssl).unwrap(), StartupPacket::SslRequest);
    }

    #[test]
    fn parse_and_bind_are_renamed_without_touching_the_rest() {
        let mut out = BytesMut::new();
        put_parse(&mut out, b"s1", b"select $1\0\0\x01\0\0\0\x17");
        let f = next_frame(&mut out, MAX_MESSAGE_LEN).unwrap().unwrap();
        let p = parse_parts(f.body()).unwrap();
        assert_eq!(p.name, b"s1");
        let mut renamed = BytesMut::new();
        put_parse(&mut renamed, b"rg_abc", p.spec);
        let g = next_frame(&mut renamed, MAX_MESSAGE_LEN).unwrap().unwrap();
        assert_eq!(parse_parts(g.body()).unwrap().spec, p.spec);

        let mut bind = BytesMut::new();
        put_bind(&mut bind, b"", b"s1", b"\0\0\0\0\0\0");
        let b = next_frame(&mut bind, MAX_MESSAGE_LEN).unwrap().unwrap();
        let parts = bind_parts(b.body()).unwrap();
        assert_eq!((parts.portal, parts.statement), (&b""[..], &b"s1"[..]));
    }

    #[test]
    fn malformed_parse_is_refused() {
        assert!(parse_parts(b"s1\0select 1\0\0\x05").is_err());
        assert!(parse_parts(b"s1\0select 1\0\xff\xff").is_err());
        assert!(target(b"Xname\0", "Describe").is_err());
    }
}
