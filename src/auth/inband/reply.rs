//! Replies PostgreSQL sends for the in-band statements.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Inband, TEXT_OID};
use crate::wire::{build, put_cstr};

/// CommandComplete with `tag`.
pub fn command_complete(tag: &str) -> Bytes {
    build(b'C', |b| put_cstr(b, tag.as_bytes()))
}
/// BindComplete.
pub fn bind_complete() -> Bytes {
    build(b'2', |_| {})
}
/// NoData (Describe of a statement without result rows).
pub fn no_data() -> Bytes {
    build(b'n', |_| {})
}
/// ParameterDescription with the given parameter types.
pub fn parameter_description(types: &[u32]) -> Bytes {
    build(b't', |b| {
        b.put_i16(types.len() as i16);
        for t in types {
            b.put_u32(*t);
        }
    })
}
/// RowDescription of `set_config(...)`: one text column `set_config`.
pub fn set_config_row_description(format: i16) -> Bytes {
    build(b'T', |b| {
        b.put_i16(1);
        put_cstr(b, b"set_config");
        b.put_u32(0); // not a table column
        b.put_i16(0);
        b.put_u32(TEXT_OID);
        b.put_i16(-1); // varlena
        b.put_i32(-1); // no typmod
        b.put_i16(format);
    })
}
/// DataRow with one value: what set_config returns (the new value).
pub fn data_row(value: &[u8]) -> Bytes {
    build(b'D', |b| {
        b.put_i16(1);
        b.put_i32(value.len() as i32);
        b.put_slice(value);
    })
}
/// A WARNING notice, as for `SET LOCAL` outside a transaction block.
pub fn warning(code: &str, message: &str) -> Bytes {
    build(b'N', |b| {
        for (f, v) in [
            (b'S', "WARNING"),
            (b'V', "WARNING"),
            (b'C', code),
            (b'M', message),
        ] {
            b.put_u8(f);
            put_cstr(b, v.as_bytes());
        }
        b.put_u8(0);
    })
}
/// PostgreSQL's warning for `SET LOCAL` outside a transaction block.
pub fn set_local_outside_transaction() -> Bytes {
    warning("25P01", "SET LOCAL can only be used in transaction blocks")
}

/// The whole simple-query reply (without ReadyForQuery) for a
/// recognised statement whose token was accepted.
pub fn simple(form: &Inband, token: &str) -> BytesMut {
    let mut out = BytesMut::new();
    match form {
        Inband::SetConfig { .. } => {
            out.extend_from_slice(&set_config_row_description(0));
            out.extend_from_slice(&data_row(token.as_bytes()));
            out.extend_from_slice(&command_complete("SELECT 1"));
        }
        _ => out.extend_from_slice(&command_complete("SET")),
    }
    out
}
