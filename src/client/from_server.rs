//! Messages from the server: forwarded as framed bytes, except replies to
//! what rowgate slipped in, which are swallowed. ReadyForQuery `I` with
//! nothing outstanding ends the transaction and frees the connection.

use super::expect::{ErrorRewrite, Expect, Kind, Shape};
use super::session::{Attachment, End, Session, ShapeCheck, Upstream};
use crate::wire::frontend::put_sync;
use crate::wire::{next_frame, MAX_MESSAGE_LEN};
use bytes::Bytes;

/// What to do with one server message.
enum Route {
    Forward,
    Swallow,
}

impl Session {
    /// Handles every complete server message that has arrived.
    pub(super) fn process_server_input(&mut self) -> Result<(), End> {
        loop {
            let Upstream::Attached(a) = &mut self.upstream else {
                return Ok(());
            };
            let frame = match next_frame(&mut a.conn.rbuf, MAX_MESSAGE_LEN) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => {
                    return Err(End::UpstreamLost(format!(
                        "invalid message from server: {e}"
                    )))
                }
            };
            tracing::trace!(tag = %(frame.tag() as char), front = ?a.expect.front().map(|e| &e.kind), "server message");
            let route = match frame.tag() {
                b'1' | b'2' | b'3' => pop_reply(a, frame.tag())?,
                b't' => route_of_front(a),
                b'T' | b'n' => match a.expect.front().map(|e| &e.kind) {
                    Some(Kind::Describe(_)) => described(a, frame.as_bytes())?,
                    _ => Route::Forward,
                },
                b'D' => route_of_front(a),
                // A notice about rowgate's own statement (the warning `SET
                // TRANSACTION` gives outside a transaction block, say) is
                // not the client's: replies come in order, so it belongs
                // to what the front of the queue waits for.
                b'N' => route_of_front(a),
                b'C' | b'I' | b's' => {
                    a.copy_in = false;
                    if frame.body().starts_with(b"ROLLBACK") {
                        a.txn_failed = true;
                    }
                    match a.expect.front().map(|e| &e.kind) {
                        Some(Kind::Execute) => pop_reply(a, frame.tag())?,
                        _ => Route::Forward,
                    }
                }
                b'E' => {
                    a.txn_failed = true;
                    a.copy_in = false;
                    if a.shape_check == ShapeCheck::Waiting {
                        // The re-prepare failed: the client gets that error.
                        a.shape_check = ShapeCheck::Idle;
                    }
                    forget_changed_statement(a, frame.body());
                    if let Some(rewrite) = a.expect.front().and_then(|e| e.on_error.as_ref()) {
                        let rewritten = rewrite.apply(frame.as_bytes());
                        self.cwbuf.extend_from_slice(&rewritten);
                        self.on_error();
                        self.drain_emits();
                        continue;
                    }
                    self.on_error();
                    Route::Forward
                }
                b'S' => {
                    // ParameterStatus: settings rowgate re-applies change
                    // back and forth in every transaction; the client keeps
                    // its own value, reported by rowgate when it changes.
                    let mut r = crate::wire::Reader::new(frame.body(), "ParameterStatus");
                    let (name, value) = match (r.cstr(), r.cstr()) {
                        (Ok(n), Ok(v)) => (
                            String::from_utf8_lossy(n).into_owned(),
                            String::from_utf8_lossy(v).into_owned(),
                        ),
                        _ => return Err(End::UpstreamLost("malformed ParameterStatus".into())),
                    };
                    let resetting = a.session_fx.resets(&name);
                    let report =
                        self.params
                            .upstream_report(&name, &value, &self.server_params, resetting);
                    if let Some(v) = report {
                        self.cwbuf
                            .extend_from_slice(&crate::wire::backend::parameter_status(&name, &v));
                    }
                    Route::Swallow
                }
                b'G' => {
                    // CopyInResponse: Syncs the client sent behind the COPY
                    // (tokio-postgres sends Bind, Execute, Sync, then waits)
                    // are read by the server as part of the copy stream and
                    // ignored, so no ReadyForQuery comes for them.
                    a.copy_in = true;
                    let before = a.expect.len();
                    let mut i = 1;
                    while i < a.expect.len() {
                        if matches!(a.expect[i].kind, Kind::Sync) {
                            a.expect.remove(i);
                        } else {
                            i += 1;
                        }
                    }
                    if a.expect.len() < before {
                        // The batch did not end at that Sync: the client's
                        // Sync after CopyDone/CopyFail ends it, and must not
                        // be held back (the server sends CommandComplete
                        // only once it has a Sync or Flush).
                        self.phase = super::session::Phase::Batch;
                    }
                    Route::Forward
                }
                b'Z' => {
                    let status = frame.body().first().copied().unwrap_or(b'?');
                    if status == b'I' && !a.txn_failed && a.session_fx.any() {
                        let owed = self
                            .params
                            .report_resets(&a.session_fx, &self.server_params);
                        for (name, value) in owed {
                            self.cwbuf
                                .extend_from_slice(&crate::wire::backend::parameter_status(
                                    &name, &value,
                                ));
                        }
                    }
                    self.cwbuf.extend_from_slice(frame.as_bytes());
                    self.on_ready(status)?;
                    continue;
                }
                _ => Route::Forward,
            };
            if let Route::Forward = route {
                self.cwbuf.extend_from_slice(frame.as_bytes());
            }
            self.drain_emits();
        }
    }

    /// Sends replies rowgate made itself once everything before them is done.
    pub(super) fn drain_emits(&mut self) {
        let Upstream::Attached(a) = &mut self.upstream else {
            return;
        };
        while let Some(Expect {
            kind: Kind::Emit(_),
            ..
        }) = a.expect.front()
        {
            if let Some(Expect {
                kind: Kind::Emit(bytes),
                ..
            }) = a.expect.pop_front()
            {
                self.cwbuf.extend_from_slice(&bytes);
            }
        }
    }

    /// An ErrorResponse. In the extended protocol the server now skips
    /// everything up to the next Sync, so the replies those messages would
    /// have produced are struck from the queue (and what they would have
    /// created is forgotten).
    fn on_error(&mut self) {
        let Upstream::Attached(a) = &mut self.upstream else {
            return;
        };
        match a.expect.front().map(|e| &e.kind) {
            None | Some(Kind::Sync) | Some(Kind::Query) | Some(Kind::FunctionCall) => return,
            _ => {}
        }
        let mut skipped_terminal = false;
        while let Some(front) = a.expect.front() {
            if matches!(front.kind, Kind::Sync) {
                break;
            }
            let Some(e) = a.expect.pop_front() else { break };
            match e.kind {
                Kind::Parse(note) => {
                    if let Some(name) = &note.upstream {
                        a.conn.prepared.remove(name);
                    }
                    if note.identity {
                        a.conn.identity_prepared = false;
                    }
                    if let Some(client) = &note.client {
                        let same = self
                            .statements
                            .get(client)
                            .zip(note.upstream.as_ref())
                            .is_some_and(|(s, u)| &s.upstream == u);
                        if same {
                            self.statements.remove(client);
                        }
                    }
                }
                Kind::Query | Kind::FunctionCall => skipped_terminal = true,
                _ => {}
            }
        }
        if skipped_terminal {
            // rowgate's own statement failed ahead of a simple Query, which
            // the server then skipped: a Sync gets the client the
            // ReadyForQuery its Query is owed.
            put_sync(&mut a.out);
            a.expect.push_back(Expect::forward(Kind::Sync));
        }
    }

    /// ReadyForQuery: the batch is done.
    fn on_ready(&mut self, status: u8) -> Result<(), End> {
        let Upstream::Attached(a) = &mut self.upstream else {
            return Ok(());
        };
        loop {
            match a.expect.pop_front() {
                Some(e) if e.kind.is_terminal() => break,
                Some(_) => continue,
                None => return Err(End::Desync("ReadyForQuery with nothing outstanding")),
            }
        }
        a.status = status;
        if status == b'I' {
            a.identity = super::session::IdentityState::Pending(Default::default());
        }
        if a.expect.is_empty() && status == b'I' {
            a.txn_over = true;
        }
        Ok(())
    }
}

/// A Describe's RowDescription or NoData (`frame`, whole): records or
/// checks the statement's result shape, then routes it like any reply.
fn described(a: &mut Attachment, frame: &[u8]) -> Result<Route, End> {
    let Some(Expect { kind, swallow, .. }) = a.expect.pop_front() else {
        return Err(End::Desync("reply with nothing in flight"));
    };
    match kind {
        Kind::Describe(Shape::Record(stmt)) => {
            // The first description is the one the client holds on to.
            let _ = stmt.shape.set(Bytes::copy_from_slice(frame));
        }
        Kind::Describe(Shape::Check(stmt)) => {
            let same = stmt
                .shape
                .get()
                .is_none_or(|known| same_shape(known, frame));
            a.shape_check = if same {
                ShapeCheck::Idle
            } else {
                ShapeCheck::Changed
            };
        }
        _ => {}
    }
    Ok(if swallow {
        Route::Swallow
    } else {
        Route::Forward
    })
}

/// Whether two RowDescription/NoData frames describe the same result, as
/// PostgreSQL compares them before it runs a cached plan: names, types and
/// type modifiers of the columns (not the table and column numbers they
/// came from, nor the format codes).
fn same_shape(a: &[u8], b: &[u8]) -> bool {
    fn columns(frame: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
        let (&tag, body) = frame.split_first()?;
        if tag == b'n' {
            return Some(Vec::new());
        }
        let mut r = crate::wire::Reader::new(body.get(4..)?, "RowDescription");
        let n = r.bytes(2).ok().map(|b| i16::from_be_bytes([b[0], b[1]]))?;
        let mut out = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n {
            let name = r.cstr().ok()?;
            let _table_and_column = r.bytes(6).ok()?;
            // type OID (4), length (2), modifier (4); then the format (2).
            let ty = r.bytes(10).ok()?;
            let _format = r.bytes(2).ok()?;
            out.push((name, ty));
        }
        Some(out)
    }
    match (columns(a), columns(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// PostgreSQL refused to run one of rowgate's shared statements because
/// the result shape changed since it was prepared on this connection
/// (`cached plan must not change result type`). It stays refused there
/// until closed, so forget it: the next Bind prepares it anew (and checks
/// the shape against what that client learnt).
fn forget_changed_statement(a: &mut Attachment, error: &[u8]) {
    let Some(Expect {
        kind: Kind::Bind,
        on_error: Some(ErrorRewrite::Rename { from, .. }),
        ..
    }) = a.expect.front()
    else {
        return;
    };
    let changed = crate::wire::backend::parse_error_fields(error)
        .is_ok_and(|f| f.code == FEATURE_NOT_SUPPORTED);
    if changed {
        a.conn.prepared.remove(from);
    }
}

/// SQLSTATE of `cached plan must not change result type`.
const FEATURE_NOT_SUPPORTED: &str = "0A000";

/// Pops the entry a completion message answers, checking it is the right one.
fn pop_reply(a: &mut Attachment, tag: u8) -> Result<Route, End> {
    let expected = match tag {
        b'1' => matches!(a.expect.front().map(|e| &e.kind), Some(Kind::Parse(_))),
        b'2' => matches!(a.expect.front().map(|e| &e.kind), Some(Kind::Bind)),
        b'3' => matches!(a.expect.front().map(|e| &e.kind), Some(Kind::Close)),
        _ => true,
    };
    if !expected {
        return Err(End::Desync("reply does not match the message in flight"));
    }
    match a.expect.pop_front() {
        Some(e) if e.swallow => Ok(Route::Swallow),
        Some(_) => Ok(Route::Forward),
        None => Err(End::Desync("reply with nothing in flight")),
    }
}

/// Routes a message that belongs to the entry in front without ending it.
fn route_of_front(a: &Attachment) -> Route {
    match a.expect.front() {
        Some(e) if e.swallow => Route::Swallow,
        _ => Route::Forward,
    }
}
