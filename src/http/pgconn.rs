//! A small PostgreSQL client that talks to rowgate itself through an
//! in-process pipe: `POST /sql` turns each request into the protocol
//! messages a driver would send, and [`crate::client::serve_stream`] runs
//! them through exactly the startup, authentication, guard, identity
//! injection and pooling of a TCP client. This side only frames the
//! messages and collects the replies; it makes no decision of its own.

use crate::client::{serve_stream, Shared};
use crate::wire::frontend::{
    cancel_request, put_execute, put_parse, put_query, put_sync, put_target,
};
use crate::wire::stream::Stream;
use crate::wire::{next_frame, put_cstr, put_frame, Frame, Reader, WireError, MAX_MESSAGE_LEN};
use bytes::{BufMut, Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Bytes the pipe buffers in each direction before a writer waits.
const PIPE_BUFFER: usize = 64 * 1024;

/// How long a cancel request may take to hand over before it is given up.
const CANCEL_DEADLINE: Duration = Duration::from_secs(5);

/// A column of a result, as RowDescription describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// Column name (or `?column?`).
    pub name: String,
    /// OID of the table the column comes from, or 0.
    pub table_oid: u32,
    /// Attribute number within that table, or 0.
    pub column: i16,
    /// OID of the column's type.
    pub type_oid: u32,
    /// `pg_type.typlen`.
    pub type_size: i16,
    /// `pg_attribute.atttypmod`.
    pub type_modifier: i32,
}

/// What one statement returned.
#[derive(Debug, Default)]
pub struct QueryResult {
    /// Columns; empty for statements that return no rows.
    pub fields: Vec<Field>,
    /// Values in text format; `None` is NULL. Each row has one value per
    /// field (checked as rows arrive).
    pub rows: Vec<Vec<Option<Bytes>>>,
    /// The command tag (`SELECT 2`, `INSERT 0 1`); empty for an empty query.
    pub tag: String,
}

/// An ErrorResponse, every field kept (by its one-letter code), so the
/// JSON answer carries what a driver shows: message, SQLSTATE, detail,
/// hint, position and the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbError {
    /// `(field code, value)` in the order the server sent them.
    pub fields: Vec<(u8, String)>,
}

impl DbError {
    /// The value of one field (`b'C'` = SQLSTATE, `b'M'` = message, ...).
    pub fn get(&self, code: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_str())
    }

    /// An error rowgate's HTTP side raises itself, shaped like the server's.
    pub fn new(code: &str, message: impl Into<String>) -> DbError {
        DbError {
            fields: vec![
                (b'S', "ERROR".into()),
                (b'C', code.into()),
                (b'M', message.into()),
            ],
        }
    }

    fn parse(body: &[u8]) -> Result<DbError, WireError> {
        let mut r = Reader::new(body, "ErrorResponse");
        let mut fields = Vec::new();
        loop {
            match r.u8()? {
                0 => return Ok(DbError { fields }),
                code => fields.push((code, String::from_utf8_lossy(r.cstr()?).into_owned())),
            }
        }
    }
}

/// Why a request through the pipe did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// PostgreSQL (or rowgate, in PostgreSQL's shape) answered with an error.
    #[error("{}", .0.get(b'M').unwrap_or("error"))]
    Db(Box<DbError>),
    /// The answer grew past a configured limit.
    #[error("the response is too large: more than {limit} {what} (the [http] max_response_{what} limit)")]
    TooLarge {
        /// The limit.
        limit: usize,
        /// `bytes` or `rows`.
        what: &'static str,
    },
    /// The session ended without an answer.
    #[error("rowgate closed the connection before answering")]
    Closed,
    /// The session sent something this client cannot read.
    #[error("unexpected reply from the session: {0}")]
    Protocol(String),
}

impl From<WireError> for SqlError {
    fn from(e: WireError) -> Self {
        SqlError::Protocol(e.to_string())
    }
}

/// How much one request may still return.
#[derive(Debug)]
pub struct Budget {
    bytes_left: usize,
    rows_left: usize,
    max_bytes: usize,
    max_rows: usize,
}

impl Budget {
    /// `max_rows == 0` means no row limit.
    pub fn new(max_bytes: usize, max_rows: usize) -> Budget {
        Budget {
            bytes_left: max_bytes,
            rows_left: if max_rows == 0 { usize::MAX } else { max_rows },
            max_bytes,
            max_rows,
        }
    }

    fn take(&mut self, bytes: usize) -> Result<(), SqlError> {
        if bytes > self.bytes_left {
            return Err(SqlError::TooLarge {
                limit: self.max_bytes,
                what: "bytes",
            });
        }
        if self.rows_left == 0 {
            return Err(SqlError::TooLarge {
                limit: self.max_rows,
                what: "rows",
            });
        }
        self.bytes_left -= bytes;
        self.rows_left -= 1;
        Ok(())
    }
}

/// One logged-in connection through the pipe. Dropped while a statement
/// is running (a timeout, a client that went away), it cancels that
/// statement through rowgate's own cancel path, then closes the pipe, so
/// rowgate rolls back and cleans the pooled connection as for any client
/// that disconnects.
pub struct PgConn {
    io: Option<DuplexStream>,
    buf: BytesMut,
    /// The BackendKeyData rowgate issued, for cancelling.
    key: Option<(i32, i32)>,
    /// A statement was sent and its ReadyForQuery has not arrived.
    busy: bool,
    /// Transaction status of the last ReadyForQuery.
    status: u8,
    shared: Arc<Shared>,
    peer: SocketAddr,
    secure: bool,
}

impl PgConn {
    /// Starts a session with `startup` parameters (user, database, ...)
    /// and logs in with `password` (the token). The password goes out with
    /// the startup packet, before rowgate asks for it, as the Neon driver's
    /// pipelined connect does; rowgate keeps bytes that arrive early.
    pub async fn connect(
        shared: Arc<Shared>,
        peer: SocketAddr,
        secure: bool,
        startup: &[(&str, &str)],
        password: &str,
    ) -> Result<PgConn, SqlError> {
        let (mine, theirs) = tokio::io::duplex(PIPE_BUFFER);
        tokio::spawn(serve_stream(
            Stream::Duplex(theirs),
            peer,
            secure,
            shared.clone(),
        ));
        let mut conn = PgConn {
            io: Some(mine),
            buf: BytesMut::with_capacity(4096),
            key: None,
            busy: true,
            status: b'I',
            shared,
            peer,
            secure,
        };
        let mut out = BytesMut::from(&crate::wire::frontend::startup_message(startup)[..]);
        put_frame(&mut out, b'p', |b| put_cstr(b, password.as_bytes()));
        conn.write(&out).await?;
        loop {
            let frame = match conn.next().await? {
                Some(f) => f,
                None => return Err(SqlError::Closed),
            };
            let mut r = Reader::new(frame.body(), "startup reply");
            match frame.tag() {
                b'R' => match r.i32()? {
                    // 3: the cleartext password request, answered already.
                    0 | 3 => {}
                    other => {
                        return Err(SqlError::Protocol(format!(
                            "authentication request {other}"
                        )))
                    }
                },
                b'K' => conn.key = Some((r.i32()?, r.i32()?)),
                b'Z' => {
                    conn.busy = false;
                    return Ok(conn);
                }
                b'E' => {
                    conn.busy = false;
                    return Err(SqlError::Db(Box::new(DbError::parse(frame.body())?)));
                }
                // ParameterStatus, NegotiateProtocolVersion, notices.
                b'S' | b'v' | b'N' => {}
                other => {
                    return Err(SqlError::Protocol(format!(
                        "message {:?} during startup",
                        other as char
                    )))
                }
            }
        }
    }

    /// Runs one statement with text parameters (`None` = NULL) through the
    /// unnamed statement and portal: Parse, Bind, Describe, Execute, Sync.
    /// The server infers the parameter types, as for a driver that sends
    /// none.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[Option<String>],
        budget: &mut Budget,
    ) -> Result<QueryResult, SqlError> {
        let mut out = BytesMut::with_capacity(sql.len() + 64);
        put_parse(
            &mut out,
            b"",
            &crate::wire::frontend::parse_spec(sql.as_bytes()),
        );
        put_bind(&mut out, params)?;
        put_target(&mut out, b'D', b'P', b"");
        put_execute(&mut out, b"");
        put_sync(&mut out);
        self.write(&out).await?;
        self.collect(budget).await
    }

    /// Runs a simple Query of rowgate's own making (BEGIN, COMMIT,
    /// ROLLBACK); returns the transaction status of its ReadyForQuery.
    pub async fn simple(&mut self, sql: &str) -> Result<u8, SqlError> {
        let mut out = BytesMut::with_capacity(sql.len() + 8);
        put_query(&mut out, sql);
        self.write(&out).await?;
        let mut budget = Budget::new(usize::MAX, 0);
        self.collect(&mut budget).await?;
        Ok(self.status)
    }

    /// Ends the session politely (Terminate), so rowgate returns the pooled
    /// connection at once.
    pub async fn close(mut self) {
        if let Some(io) = self.io.as_mut() {
            let _ = io.write_all(b"X\0\0\0\x04").await;
            let _ = io.shutdown().await;
        }
    }

    /// Reads replies up to ReadyForQuery. An error is returned only after
    /// its ReadyForQuery, so the connection is usable for a ROLLBACK.
    async fn collect(&mut self, budget: &mut Budget) -> Result<QueryResult, SqlError> {
        let mut result = QueryResult::default();
        let mut error = None;
        loop {
            let Some(frame) = self.next().await? else {
                // A FATAL error ends the session without ReadyForQuery.
                return Err(error.map_or(SqlError::Closed, |e| SqlError::Db(Box::new(e))));
            };
            match frame.tag() {
                b'T' => result.fields = parse_row_description(frame.body())?,
                b'D' => {
                    budget.take(frame.body().len())?;
                    let row = parse_data_row(frame, result.fields.len())?;
                    result.rows.push(row);
                }
                b'C' => {
                    let tag = Reader::new(frame.body(), "CommandComplete").cstr()?;
                    result.tag = String::from_utf8_lossy(tag).into_owned();
                }
                b'E' => error = Some(DbError::parse(frame.body())?),
                b'Z' => {
                    self.status = *frame.body().first().unwrap_or(&b'I');
                    self.busy = false;
                    return match error {
                        Some(e) => Err(SqlError::Db(Box::new(e))),
                        None => Ok(result),
                    };
                }
                // ParseComplete, BindComplete, NoData, EmptyQueryResponse,
                // notices, ParameterStatus, notifications.
                b'1' | b'2' | b'n' | b'I' | b'N' | b'S' | b'A' => {}
                other => {
                    return Err(SqlError::Protocol(format!(
                        "message {:?} in a result",
                        other as char
                    )))
                }
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), SqlError> {
        let io = self.io.as_mut().ok_or(SqlError::Closed)?;
        self.busy = true;
        io.write_all(bytes).await.map_err(|_| SqlError::Closed)
    }

    /// The next complete message, or `None` when the session ended.
    async fn next(&mut self) -> Result<Option<Frame>, SqlError> {
        loop {
            if let Some(f) = next_frame(&mut self.buf, MAX_MESSAGE_LEN)? {
                return Ok(Some(f));
            }
            let io = self.io.as_mut().ok_or(SqlError::Closed)?;
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            match io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        let (Some(io), true) = (self.io.take(), self.busy) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (shared, peer, secure, key) = (self.shared.clone(), self.peer, self.secure, self.key);
        // The pipe stays open until the cancel is handed over: closing it
        // first would end the session, and its cancel key with it.
        runtime.spawn(async move {
            if let Some((pid, secret)) = key {
                let _ = tokio::time::timeout(
                    CANCEL_DEADLINE,
                    cancel(shared, peer, secure, pid, secret),
                )
                .await;
            }
            drop(io);
        });
    }
}

/// Sends a CancelRequest for `(pid, secret)` through a pipe of its own,
/// like a driver opening a second connection, and waits until rowgate has
/// dealt with it (it closes that pipe then).
async fn cancel(shared: Arc<Shared>, peer: SocketAddr, secure: bool, pid: i32, secret: i32) {
    let (mut mine, theirs) = tokio::io::duplex(64);
    let session = tokio::spawn(serve_stream(Stream::Duplex(theirs), peer, secure, shared));
    if mine.write_all(&cancel_request(pid, secret)).await.is_ok() {
        let _ = session.await;
    }
}

/// Bind of the unnamed portal to the unnamed statement: text parameters
/// (`None` as NULL, length -1), text results.
fn put_bind(out: &mut BytesMut, params: &[Option<String>]) -> Result<(), SqlError> {
    let count = i16::try_from(params.len()).map_err(|_| {
        SqlError::Db(Box::new(DbError::new(
            "54000",
            format!(
                "too many parameters: {} (the protocol allows at most {})",
                params.len(),
                i16::MAX
            ),
        )))
    })?;
    put_frame(out, b'B', |b| {
        put_cstr(b, b"");
        put_cstr(b, b"");
        b.put_i16(0);
        b.put_i16(count);
        for p in params {
            match p {
                None => b.put_i32(-1),
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v.as_bytes());
                }
            }
        }
        b.put_i16(0);
    });
    Ok(())
}

fn i16_of(r: &mut Reader<'_>) -> Result<i16, WireError> {
    let b = r.bytes(2)?;
    Ok(i16::from_be_bytes([b[0], b[1]]))
}

/// Decodes a RowDescription body.
pub fn parse_row_description(body: &[u8]) -> Result<Vec<Field>, WireError> {
    let mut r = Reader::new(body, "RowDescription");
    let n = i16_of(&mut r)?.max(0) as usize;
    let mut fields = Vec::with_capacity(n);
    for _ in 0..n {
        let name = String::from_utf8_lossy(r.cstr()?).into_owned();
        let table_oid = r.i32()? as u32;
        let column = i16_of(&mut r)?;
        let type_oid = r.i32()? as u32;
        let type_size = i16_of(&mut r)?;
        let type_modifier = r.i32()?;
        let _format = i16_of(&mut r)?;
        fields.push(Field {
            name,
            table_oid,
            column,
            type_oid,
            type_size,
            type_modifier,
        });
    }
    Ok(fields)
}

/// Decodes a DataRow into values that share the frame's memory.
pub fn parse_data_row(frame: Frame, columns: usize) -> Result<Vec<Option<Bytes>>, WireError> {
    let bytes = frame.into_bytes();
    let body = &bytes[5..];
    let mut r = Reader::new(body, "DataRow");
    let n = i16_of(&mut r)?.max(0) as usize;
    if n != columns {
        return Err(WireError::Malformed("DataRow"));
    }
    let mut row = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.i32()?;
        if len < 0 {
            row.push(None);
            continue;
        }
        let start = body.len() - r.rest().len();
        r.bytes(len as usize)?;
        row.push(Some(bytes.slice(5 + start..5 + start + len as usize)));
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::build;

    #[test]
    fn data_rows_keep_nulls_and_values() {
        let frame = build(b'D', |b| {
            b.put_i16(3);
            b.put_i32(2);
            b.put_slice(b"42");
            b.put_i32(-1);
            b.put_i32(0);
        });
        let f = next_frame(&mut BytesMut::from(&frame[..]), MAX_MESSAGE_LEN)
            .unwrap()
            .unwrap();
        let row = parse_data_row(f, 3).unwrap();
        assert_eq!(
            row,
            vec![Some(Bytes::from_static(b"42")), None, Some(Bytes::new())]
        );
    }

    #[test]
    fn short_or_mismatched_rows_are_errors() {
        let frame = build(b'D', |b| {
            b.put_i16(1);
            b.put_i32(10);
            b.put_slice(b"abc");
        });
        let f = next_frame(&mut BytesMut::from(&frame[..]), MAX_MESSAGE_LEN)
            .unwrap()
            .unwrap();
        assert!(parse_data_row(f.clone(), 1).is_err());
        assert!(parse_data_row(f, 2).is_err());
    }

    #[test]
    fn row_descriptions_decode() {
        let body = build(b'T', |b| {
            b.put_i16(1);
            put_cstr(b, b"id");
            b.put_i32(16384);
            b.put_i16(1);
            b.put_i32(20);
            b.put_i16(8);
            b.put_i32(-1);
            b.put_i16(0);
        });
        let fields = parse_row_description(&body[5..]).unwrap();
        assert_eq!(
            fields,
            vec![Field {
                name: "id".into(),
                table_oid: 16384,
                column: 1,
                type_oid: 20,
                type_size: 8,
                type_modifier: -1
            }]
        );
        assert!(parse_row_description(&body[5..12]).is_err());
    }

    #[test]
    fn budgets_stop_at_bytes_or_rows() {
        let mut b = Budget::new(10, 2);
        assert!(b.take(4).is_ok());
        assert!(matches!(
            b.take(7),
            Err(SqlError::TooLarge { what: "bytes", .. })
        ));
        assert!(b.take(6).is_ok());
        assert!(matches!(
            b.take(0),
            Err(SqlError::TooLarge { what: "rows", .. })
        ));
    }

    #[test]
    fn error_fields_are_all_kept() {
        let e = DbError::parse(b"SERROR\0C42601\0Msyntax error\0P8\0\0").unwrap();
        assert_eq!(e.get(b'C'), Some("42601"));
        assert_eq!(e.get(b'P'), Some("8"));
        assert!(DbError::parse(b"Cabc").is_err());
    }
}
