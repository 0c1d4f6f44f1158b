//! Messages a server sends: builders for those rowgate answers itself, and
//! decoders for the few it must read (authentication, ErrorResponse).

use super::{build, put_cstr, Reader, WireError};
use bytes::{BufMut, Bytes};

/// AuthenticationOk.
pub fn authentication_ok() -> Bytes {
    build(b'R', |b| b.put_i32(0))
}

/// AuthenticationCleartextPassword: asks the client for its password (the JWT).
pub fn authentication_cleartext() -> Bytes {
    build(b'R', |b| b.put_i32(3))
}

/// ParameterStatus `name = value`.
pub fn parameter_status(name: &str, value: &str) -> Bytes {
    build(b'S', |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    })
}

/// BackendKeyData with rowgate's own key for this client.
pub fn backend_key_data(pid: i32, secret: i32) -> Bytes {
    build(b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    })
}

/// ReadyForQuery with a transaction status byte (`I`, `T` or `E`).
pub fn ready_for_query(status: u8) -> Bytes {
    build(b'Z', |b| b.put_u8(status))
}

/// ParseComplete, for a Parse that rowgate answers itself.
pub fn parse_complete() -> Bytes {
    build(b'1', |_| {})
}

/// CloseComplete, for a Close that rowgate answers itself.
pub fn close_complete() -> Bytes {
    build(b'3', |_| {})
}

/// NegotiateProtocolVersion: the newest minor version rowgate speaks (3.0)
/// and the `_pq_.` options it does not understand. The version goes on the
/// wire whole (major << 16 | minor), as PostgreSQL sends it: libpq refuses
/// a bare minor (`0`) as a downgrade below 3.0.
pub fn negotiate_protocol_version(minor: i32, unrecognized: &[String]) -> Bytes {
    build(b'v', |b| {
        b.put_i32((3 << 16) | (minor & 0xffff));
        b.put_i32(unrecognized.len() as i32);
        for o in unrecognized {
            put_cstr(b, o.as_bytes());
        }
    })
}

/// Severity of an ErrorResponse rowgate builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The connection is closed right after this message.
    Fatal,
}

/// ErrorResponse with severity, SQLSTATE and a message for people.
pub fn error_response(severity: Severity, code: &str, message: &str) -> Bytes {
    let sev: &[u8] = match severity {
        Severity::Error => b"ERROR",
        Severity::Fatal => b"FATAL",
    };
    build(b'E', |b| {
        b.put_u8(b'S');
        put_cstr(b, sev);
        b.put_u8(b'V');
        put_cstr(b, sev);
        b.put_u8(b'C');
        put_cstr(b, code.as_bytes());
        b.put_u8(b'M');
        put_cstr(b, message.as_bytes());
        b.put_u8(0);
    })
}

/// PostgreSQL's `cached plan must not change result type` (0A000), for a
/// prepared statement whose result shape changed. With PostgreSQL's source
/// file and routine, as the server sends them: drivers recognise the error
/// by its routine, not by its (translatable) message (asyncpg re-prepares
/// on `R = RevalidateCachedQuery`). The line number is left out.
pub fn cached_plan_changed() -> Bytes {
    build(b'E', |b| {
        for (field, value) in [
            (b'S', "ERROR"),
            (b'V', "ERROR"),
            (b'C', "0A000"),
            (b'M', "cached plan must not change result type"),
            (b'F', "plancache.c"),
            (b'R', "RevalidateCachedQuery"),
        ] {
            b.put_u8(field);
            put_cstr(b, value.as_bytes());
        }
        b.put_u8(0);
    })
}

/// Rebuilds an ErrorResponse frame with `from` replaced by `to` in its
/// message (`M`) field; every other field stays as the server sent it.
pub fn rename_in_error(frame: &[u8], from: &str, to: &str) -> Bytes {
    let body = frame.get(5..).unwrap_or_default();
    let mut r = Reader::new(body, "ErrorResponse");
    let mut fields: Vec<(u8, Vec<u8>)> = Vec::new();
    loop {
        match r.u8() {
            Ok(0) | Err(_) => break,
            Ok(code) => match r.cstr() {
                Ok(v) => fields.push((code, v.to_vec())),
                Err(_) => return Bytes::copy_from_slice(frame),
            },
        }
    }
    build(b'E', |b| {
        for (code, value) in &fields {
            b.put_u8(*code);
            if *code == b'M' {
                let text = String::from_utf8_lossy(value).replace(from, to);
                put_cstr(b, text.as_bytes());
            } else {
                put_cstr(b, value);
            }
        }
        b.put_u8(0);
    })
}

/// The fields of an ErrorResponse or NoticeResponse that rowgate reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// Severity (`S`, or the untranslated `V` when present).
    pub severity: String,
    /// SQLSTATE (`C`).
    pub code: String,
    /// Primary message (`M`).
    pub message: String,
}

impl std::fmt::Display for ErrorFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )
    }
}

/// Decodes the body of an ErrorResponse/NoticeResponse.
pub fn parse_error_fields(body: &[u8]) -> Result<ErrorFields, WireError> {
    let mut r = Reader::new(body, "ErrorResponse");
    let mut out = ErrorFields::default();
    loop {
        let field = r.u8()?;
        if field == 0 {
            return Ok(out);
        }
        let value = String::from_utf8_lossy(r.cstr()?).into_owned();
        match field {
            b'S' if out.severity.is_empty() => out.severity = value,
            b'V' => out.severity = value,
            b'C' => out.code = value,
            b'M' => out.message = value,
            _ => {}
        }
    }
}

/// The SQLSTATE classes PostgreSQL defines (Appendix A), as metric labels.
const SQLSTATE_CLASSES: &[&str] = &[
    "00", "01", "02", "03", "08", "09", "0A", "0B", "0F", "0L", "0P", "0Z", "20", "21", "22", "23",
    "24", "25", "26", "27", "28", "2B", "2D", "2F", "34", "38", "39", "3B", "3D", "3F", "40", "42",
    "44", "53", "54", "55", "57", "58", "72", "F0", "HV", "P0", "XX",
];

/// The SQLSTATE class (first two characters) of an ErrorResponse body, as
/// a fixed label: `other` for a class PostgreSQL does not define or a body
/// without a code.
pub fn error_class(body: &[u8]) -> &'static str {
    let mut fields = body.split(|&b| b == 0);
    let code = fields.find_map(|f| f.strip_prefix(b"C"));
    code.and_then(|c| c.get(..2))
        .and_then(|class| SQLSTATE_CLASSES.iter().find(|k| k.as_bytes() == class))
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{next_frame, MAX_MESSAGE_LEN};

    #[test]
    fn error_classes_are_fixed_labels() {
        let class = |code: &str| {
            let msg = error_response(Severity::Error, code, "m");
            error_class(&msg[5..])
        };
        assert_eq!(class("42501"), "42");
        assert_eq!(class("0A000"), "0A");
        assert_eq!(class("ZZ999"), "other");
        assert_eq!(error_class(b"Mno code\0\0"), "other");
    }
    use bytes::BytesMut;

    #[test]
    fn error_response_round_trips() {
        let msg = error_response(Severity::Fatal, "28000", "token expired");
        let f = next_frame(&mut BytesMut::from(&msg[..]), MAX_MESSAGE_LEN)
            .unwrap()
            .unwrap();
        assert_eq!(f.tag(), b'E');
        let e = parse_error_fields(f.body()).unwrap();
        assert_eq!(
            (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
            ("FATAL", "28000", "token expired")
        );
    }

    #[test]
    fn truncated_error_is_an_error() {
        assert!(parse_error_fields(b"Cabc").is_err());
        assert!(parse_error_fields(b"").is_err());
    }
}
