//! Messages from the server: forwarded as framed bytes, except replies to
//! what rowgate slipped in, which are swallowed. Every reply must match
//! what the queue says is owed; anything else means the connection is out
//! of sync and is closed, never lent again.

use super::expect::{ErrorRewrite, Expect, Kind, Shape};
use super::{Attachment, Copy, CopyRestart, Core, End, Hold, IdentityState, Link, Phase, Txn};
use crate::wire::backend;
use crate::wire::Frame;
use bytes::Bytes;

/// What to do with one server message.
enum Route {
    Forward,
    Swallow,
}

/// SQLSTATE of `cached plan must not change result type`.
const FEATURE_NOT_SUPPORTED: &str = "0A000";

impl Core {
    /// Takes one whole message from the upstream connection.
    pub fn on_server(&mut self, frame: Frame) {
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        tracing::trace!(tag = %(frame.tag() as char), front = ?a.queue.front_kind(), "server message");
        let route = match frame.tag() {
            // Allowed at any time: notices, parameter changes, notifications.
            b'N' => route_of_front(a),
            b'S' => return self.on_parameter_status(&frame),
            b'A' => return self.on_notification(frame),
            _ if a.queue.is_empty() => {
                return self.desync("a message with nothing in flight", &frame)
            }
            b'1' | b'2' | b'3' => match pop_reply(a, frame.tag()) {
                Some(route) => route,
                None => return self.desync("a reply that does not match what was sent", &frame),
            },
            b't' => route_of_front(a),
            b'T' | b'n' => match a.queue.front_kind() {
                Some(Kind::Describe(_)) => match self.described(frame.as_bytes()) {
                    Some(route) => route,
                    None => return,
                },
                _ => Route::Forward,
            },
            b'D' => match a.queue.front_kind() {
                Some(Kind::Capture) => {
                    self.captured_row(frame.body());
                    Route::Swallow
                }
                _ => route_of_front(a),
            },
            b'C' | b'I' | b's' => {
                a.copy = Copy::Off;
                a.ending.completed(frame.body());
                match a.queue.front_kind() {
                    Some(Kind::Execute) => pop_reply(a, frame.tag()).unwrap_or(Route::Forward),
                    _ => route_of_front(a),
                }
            }
            b'E' => return self.on_error(frame),
            b'G' => {
                self.on_copy_in();
                Route::Forward
            }
            b'H' | b'W' | b'd' | b'c' | b'V' => route_of_front(a),
            b'Z' => return self.on_ready(frame),
            _ => return self.desync("an unexpected message", &frame),
        };
        if let Route::Forward = route {
            self.to_client.extend_from_slice(frame.as_bytes());
        }
        self.drain_emits();
    }

    /// The connection can no longer be trusted: close it. The client's
    /// session ends if it was relying on the connection.
    fn desync(&mut self, what: &str, frame: &Frame) {
        tracing::warn!(tag = %(frame.tag() as char), "upstream sent {what}; closing the connection");
        if let Link::Attached(a) = &self.link {
            if matches!(a.hold, Hold::Cleanup) {
                self.drop_link();
                return;
            }
        }
        self.upstream_lost(format!("the server sent {what}"));
        if frame.tag() == b'E' {
            // The server's own reason (an administrator's termination, say)
            // is worth more to the client than rowgate's.
            if let Ok(f) = backend::parse_error_fields(frame.body()) {
                self.end = Some(End::UpstreamLost(f.message));
            }
        }
    }

    /// Sends replies rowgate made itself once everything before them is done.
    pub(super) fn drain_emits(&mut self) {
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        while let Some(Kind::Emit(_) | Kind::CopyEnd) = a.queue.front_kind() {
            if let Some(Expect {
                kind: Kind::Emit(bytes),
                ..
            }) = a.queue.pop()
            {
                self.to_client.extend_from_slice(&bytes);
            }
        }
    }

    /// ParameterStatus: settings rowgate re-applies change back and forth
    /// in every transaction; the client keeps its own value, reported by
    /// rowgate when it changes.
    fn on_parameter_status(&mut self, frame: &Frame) {
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        if !matches!(a.hold, Hold::None | Hold::ShapeCheck { .. }) {
            // rowgate's own reset of the connection: not the client's
            // business (what it is owed is worked out from the capture).
            return;
        }
        let mut r = crate::wire::Reader::new(frame.body(), "ParameterStatus");
        let (Ok(name), Ok(value)) = (r.cstr(), r.cstr()) else {
            return self.desync("a malformed ParameterStatus", frame);
        };
        let (name, value) = (
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        );
        tracing::trace!(%name, %value, "server ParameterStatus");
        let resetting = a.fx.resets(&name);
        if let Some(v) = self
            .params
            .upstream_report(&name, &value, &self.server_params, resetting)
        {
            self.to_client
                .extend_from_slice(&backend::parameter_status(&name, &v));
        }
    }

    /// NotificationResponse: clients recognise notifications from their
    /// own backend by the pid of their BackendKeyData, which rowgate
    /// issued; a notification from this connection's backend carries it.
    fn on_notification(&mut self, frame: Frame) {
        let Link::Attached(a) = &self.link else {
            return;
        };
        let body = frame.body();
        match body.get(..4) {
            Some(pid) if i32::from_be_bytes([pid[0], pid[1], pid[2], pid[3]]) == a.conn.pid => {
                let rest = &body[4..];
                let key = self.key.0;
                crate::wire::put_frame(&mut self.to_client, b'A', |b| {
                    b.extend_from_slice(&key.to_be_bytes());
                    b.extend_from_slice(rest);
                });
            }
            _ => self.to_client.extend_from_slice(frame.as_bytes()),
        }
    }

    /// CopyInResponse: Syncs the client sent behind the COPY (tokio-postgres
    /// sends Bind, Execute, Sync, then waits) are read by the server as part
    /// of the copy stream and ignored, so no ReadyForQuery comes for them.
    fn on_copy_in(&mut self) {
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        a.copy = Copy::In;
        let restart = a.copy_restart == CopyRestart::Eligible
            && matches!(a.queue.front(), Some(e) if e.trailed && matches!(e.kind, Kind::Query));
        // The client may have sent its data and CopyDone already: the
        // commit can go right behind them only if nothing else followed.
        let ended = a.queue.holds(|k| matches!(k, Kind::CopyEnd));
        let ended_last = matches!(a.queue.back_kind(), Some(Kind::CopyEnd));
        a.copy_restart = if restart && !ended {
            CopyRestart::Armed
        } else {
            CopyRestart::No
        };
        if a.queue.drop_syncs_after_front() {
            // The batch did not end at that Sync: the client's Sync after
            // CopyDone/CopyFail ends it, and must not be held back (the
            // server sends CommandComplete only once it has a Sync or Flush).
            self.phase = Phase::Batch;
        }
        if restart && ended_last {
            self.restart_after_copy();
        }
    }

    /// An ErrorResponse. In the extended protocol the server now skips
    /// everything up to the next Sync, so the replies those messages would
    /// have produced are struck from the queue (and what they would have
    /// created is forgotten).
    fn on_error(&mut self, frame: Frame) {
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        a.copy = Copy::Off;
        a.ending.errored();
        forget_changed_statement(a, frame.body());
        let Some(front) = a.queue.front() else {
            return self.desync("an error with nothing in flight", &frame);
        };
        if !matches!(a.hold, Hold::None | Hold::ShapeCheck { .. }) {
            // rowgate's own work failed (the capture of settings, the
            // cleanup): the connection is not provably clean.
            tracing::warn!("rowgate's own statement failed upstream; closing the connection");
            if let Hold::Capture(c) = &mut a.hold {
                c.failed = true;
            }
            if matches!(a.hold, Hold::Cleanup) {
                return self.drop_link();
            }
        } else {
            // Errors the server sent this client, by class (rowgate's own
            // refusals have their own counters).
            let class = crate::wire::backend::error_class(frame.body());
            crate::metrics::incr("rowgate_server_errors_total", class);
            match &front.on_error {
                Some(rewrite) => {
                    let rewritten = rewrite.apply(frame.as_bytes());
                    self.to_client.extend_from_slice(&rewritten);
                }
                None => self.to_client.extend_from_slice(frame.as_bytes()),
            }
        }
        if front.kind.is_terminal() {
            // A simple query's error (or a Sync's): its ReadyForQuery follows.
            return self.drain_emits();
        }
        self.strike_skipped();
        self.drain_emits();
    }

    /// Strikes what the server skips after an extended-protocol error.
    fn strike_skipped(&mut self) {
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        let statements = &mut self.statements;
        let conn = &mut a.conn;
        let mut shape_failed = false;
        let mut opened_block = false;
        let struck = a.queue.strike_to_sync(|e| match e.kind {
            _ if e.opens_block => opened_block = true,
            Kind::Parse(note) => {
                if let Some(name) = &note.upstream {
                    conn.prepared.remove(name);
                    if let Some(client) = &note.client {
                        statements.remove_if(client, name);
                    }
                }
                if note.identity {
                    conn.identity_prepared = 0;
                }
            }
            Kind::Describe(Shape::Check(_)) => shape_failed = true,
            _ => {}
        });
        if opened_block {
            // A BEGIN the server skipped: the block rowgate thinks open may
            // not be, so the identity goes in again before the next
            // statement.
            if let Txn::Open { block, .. } = a.txn {
                a.txn = Txn::Open {
                    block,
                    identity: IdentityState::Reassert,
                    sure: false,
                };
            }
        }
        if !struck.sync_follows {
            // The server discards everything up to the next Sync it gets,
            // and so does rowgate with what the client sends until then.
            self.phase = Phase::Skip { forward_sync: true };
        }
        if let Some(true) = shape_failed.then_some(true) {
            if let Hold::ShapeCheck { bind, stmt } = std::mem::replace(&mut a.hold, Hold::None) {
                // The re-prepare failed: the client got that error, and its
                // Bind is skipped like everything else up to the Sync.
                if self.phase == Phase::Batch {
                    self.phase = Phase::Skip { forward_sync: true };
                }
                self.shape_checked(bind, &stmt, None);
            }
        }
    }

    /// ReadyForQuery: a batch is done.
    fn on_ready(&mut self, frame: Frame) {
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        let status = frame.body().first().copied().unwrap_or(b'?');
        let Some(entry) = a.queue.pop() else {
            return self.desync("ReadyForQuery with nothing outstanding", &frame);
        };
        if !entry.kind.is_terminal() || !matches!(status, b'I' | b'T' | b'E') {
            return self.desync("ReadyForQuery out of turn", &frame);
        }
        a.status = status;
        a.copy_restart = CopyRestart::No;
        let ending = std::mem::take(&mut a.ending);
        if a.queue.is_empty() && status == b'I' && a.txn != Txn::Idle {
            self.inband_transaction_over();
        }
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        if a.queue.is_empty() {
            // Nothing else in flight: the server's word is exact.
            a.txn = match (status, a.txn) {
                (b'I', _) => Txn::Idle,
                (b'E', _) => Txn::Failed,
                (_, Txn::Open { identity, .. }) => Txn::Open {
                    block: true,
                    identity,
                    sure: true,
                },
                (_, Txn::Unknown { kept: true }) => Txn::Open {
                    block: true,
                    identity: IdentityState::Set,
                    sure: true,
                },
                _ => Txn::Open {
                    block: true,
                    identity: IdentityState::Reassert,
                    sure: true,
                },
            };
        }
        match entry.kind {
            Kind::Capture => return self.capture_done(),
            _ if entry.swallow && !matches!(a.hold, Hold::None) => return self.own_ready(),
            _ => {}
        }
        if status == b'I' && ending.committed() && a.fx.any() {
            // The client's RESETs: the pooled connection's value did not
            // change, so the server sends no ParameterStatus for them.
            let owed = self.params.report_resets(&a.fx, &self.server_params);
            for (name, value) in owed {
                self.to_client
                    .extend_from_slice(&backend::parameter_status(&name, &value));
            }
        }
        let ready = (!entry.swallow && !entry.trailed).then(|| frame.into_bytes());
        self.after_ready(ending, ready);
        // Replies rowgate made for the client's next batch come after.
        self.drain_emits();
    }

    /// A Describe's RowDescription or NoData (`frame`, whole): records or
    /// checks the statement's result shape, then routes it like any reply.
    /// None when the check resumed the client's Bind (nothing to route).
    fn described(&mut self, frame: &[u8]) -> Option<Route> {
        let Link::Attached(a) = &mut self.link else {
            return None;
        };
        let Expect { kind, swallow, .. } = a.queue.pop()?;
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
                if let Hold::ShapeCheck { bind, stmt } = std::mem::replace(&mut a.hold, Hold::None)
                {
                    self.shape_checked(bind, &stmt, Some(!same));
                }
                return None;
            }
            _ => {}
        }
        Some(if swallow {
            Route::Swallow
        } else {
            Route::Forward
        })
    }
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
    }) = a.queue.front()
    else {
        return;
    };
    let changed = backend::parse_error_fields(error).is_ok_and(|f| f.code == FEATURE_NOT_SUPPORTED);
    if changed {
        let from = from.clone();
        a.conn.prepared.remove(&from);
    }
}

/// Pops the entry a completion message answers, if it is the right one.
fn pop_reply(a: &mut Attachment, tag: u8) -> Option<Route> {
    let expected = matches!(
        (tag, a.queue.front_kind()?),
        (b'1', Kind::Parse(_))
            | (b'2', Kind::Bind)
            | (b'3', Kind::Close)
            | (b'C' | b'I' | b's', Kind::Execute)
    );
    if !expected {
        return None;
    }
    let e = a.queue.pop()?;
    Some(if e.swallow {
        Route::Swallow
    } else {
        Route::Forward
    })
}

/// Routes a message that belongs to the entry in front without ending it.
fn route_of_front(a: &Attachment) -> Route {
    match a.queue.front() {
        Some(e) if e.swallow => Route::Swallow,
        _ => Route::Forward,
    }
}
