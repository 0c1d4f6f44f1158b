//! The PostgreSQL v3 wire protocol, as far as rowgate needs it.
//!
//! rowgate forwards almost everything as opaque framed bytes. This module
//! finds frame boundaries (a one-byte tag and a big-endian length that counts
//! itself), and decodes or builds only the few messages that decisions need:
//! the startup packet, passwords, Parse/Bind/Describe/Close names,
//! ReadyForQuery and ErrorResponse. Names follow the protocol documentation.

pub mod backend;
pub mod frontend;
pub mod stream;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest message rowgate accepts after authentication. PostgreSQL itself
/// refuses anything over 1 GiB (MaxAllocSize), so this loses nothing.
pub const MAX_MESSAGE_LEN: usize = 1 << 30;

/// Largest startup packet or password accepted before a client has proved
/// who it is; keeps unauthenticated peers from making rowgate allocate much.
pub const MAX_PREAUTH_LEN: usize = 1 << 20;

/// A framing error: the peer sent bytes that cannot be a protocol message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A length field below the minimum for its message.
    #[error("invalid message length {0}")]
    BadLength(i32),
    /// A length field above the configured maximum.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// Length announced by the peer.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// A message body that does not match its declared layout.
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// One complete tagged message: the tag, length and body, exactly as it was
/// on the wire, so it can be forwarded without re-encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
}

impl Frame {
    /// The one-byte message type.
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }
    /// The message body after the tag and length.
    pub fn body(&self) -> &[u8] {
        &self.bytes[5..]
    }
    /// The whole frame as sent on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// Takes the whole frame.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

/// Returns the total length (tag included) of the first tagged message in
/// `buf`, or `None` when its header has not fully arrived yet.
pub fn peek_frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, WireError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(WireError::BadLength(len));
    }
    let len = len as usize;
    if len > max {
        return Err(WireError::TooLong { len, max });
    }
    Ok(Some(len + 1))
}

/// Splits the first complete tagged message off `buf`, if it has arrived.
pub fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, WireError> {
    match peek_frame_len(buf, max)? {
        Some(total) if buf.len() >= total => Ok(Some(Frame {
            bytes: buf.split_to(total).freeze(),
        })),
        _ => Ok(None),
    }
}

/// Splits the first complete untagged packet (startup, SSLRequest,
/// CancelRequest: a length then a body) off `buf`; returns the body.
pub fn next_startup_packet(buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 {
        return Err(WireError::BadLength(len));
    }
    let len = len as usize;
    if len > MAX_PREAUTH_LEN {
        return Err(WireError::TooLong {
            len,
            max: MAX_PREAUTH_LEN,
        });
    }
    if buf.len() < len {
        return Ok(None);
    }
    let mut packet = buf.split_to(len);
    packet.advance(4);
    Ok(Some(packet.freeze()))
}

/// Builds a tagged message from its tag and a closure that writes the body.
pub fn build(tag: u8, body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    put_frame(&mut out, tag, body);
    out.freeze()
}

/// Appends a tagged message to `out`, filling in the length afterwards.
pub fn put_frame(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u8(tag);
    out.put_i32(0);
    body(out);
    let len = (out.len() - start - 1) as i32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// Appends `s` as a NUL-terminated protocol string.
pub fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

/// A cursor over a message body that reads protocol fields without copying
/// and reports malformed input instead of panicking.
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`; `what` names the message in error reports.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }
    /// Reads a NUL-terminated string (without the NUL).
    pub fn cstr(&mut self) -> Result<&'a [u8], WireError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(WireError::Malformed(self.what))?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }
    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(WireError::Malformed(self.what))?;
        self.buf = rest;
        Ok(b)
    }
    /// Reads a big-endian i32.
    pub fn i32(&mut self) -> Result<i32, WireError> {
        if self.buf.len() < 4 {
            return Err(WireError::Malformed(self.what));
        }
        let v = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        self.buf = &self.buf[4..];
        Ok(v)
    }
    /// Reads `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Malformed(self.what));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    /// The unread remainder.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_only_when_complete() {
        let msg = build(b'Q', |b| put_cstr(b, b"select 1"));
        let mut buf = BytesMut::from(&msg[..7]);
        assert_eq!(next_frame(&mut buf, MAX_MESSAGE_LEN).unwrap(), None);
        buf.extend_from_slice(&msg[7..]);
        buf.extend_from_slice(b"S\0\0\0\x04");
        let f = next_frame(&mut buf, MAX_MESSAGE_LEN).unwrap().unwrap();
        assert_eq!(f.tag(), b'Q');
        assert_eq!(f.body(), b"select 1\0");
        let s = next_frame(&mut buf, MAX_MESSAGE_LEN).unwrap().unwrap();
        assert_eq!((s.tag(), s.body()), (b'S', &b""[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn hostile_lengths_are_errors_not_panics() {
        let mut neg = BytesMut::from(&b"Q\xff\xff\xff\xff"[..]);
        assert!(matches!(
            next_frame(&mut neg, MAX_MESSAGE_LEN),
            Err(WireError::BadLength(-1))
        ));
        let mut small = BytesMut::from(&b"Q\0\0\0\x03"[..]);
        assert!(next_frame(&mut small, MAX_MESSAGE_LEN).is_err());
        let mut huge = BytesMut::from(&b"Q\x7f\xff\xff\xff"[..]);
        assert!(matches!(
            next_frame(&mut huge, 1024),
            Err(WireError::TooLong { .. })
        ));
        let mut startup = BytesMut::from(&b"\x7f\0\0\0"[..]);
        assert!(next_startup_packet(&mut startup).is_err());
    }

    #[test]
    fn reader_reports_truncation() {
        let mut r = Reader::new(b"abc", "Parse");
        assert!(r.cstr().is_err());
        let mut r = Reader::new(b"a\0\0\x01", "Parse");
        assert_eq!(r.cstr().unwrap(), b"a");
        assert!(r.i32().is_err());
    }
}
