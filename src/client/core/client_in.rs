//! Messages from the client: where batches start (and transactions get
//! their identity), how statement names map to upstream names, and which
//! messages never reach a pooled connection.

use super::expect::{Expect, Kind, ParseNote, Shape};
use super::statements::{query_of, Statement};
use super::{Attachment, Copy, CopyRestart, End, Hold, IdentityState, Link, Phase, Txn};
use crate::config::StatePolicy;
use crate::guard::{
    classify, deallocate, ends_a_transaction, is_single_statement, leading_modes,
    session_effects_of, Deallocate, GuardViolation, Mentions, SessionOp, SessionState, TxnEffect,
};
use crate::wire::backend::{self, Severity};
use crate::wire::frontend::{self, put_bind, put_parse, put_target};
use crate::wire::Frame;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Core;

/// Whether a message of this type, arriving between batches, starts a new
/// batch (and so may start a transaction).
fn starts_batch(tag: u8) -> bool {
    matches!(tag, b'Q' | b'F' | b'P' | b'B' | b'D' | b'E' | b'C' | b'S')
}

/// Statement texts after which rowgate no longer trusts its record of what
/// is prepared on the connection: the client may have run DEALLOCATE,
/// DISCARD or PREPARE by SQL. A substring test is deliberately broad: a
/// false alarm only costs a re-prepare.
fn touches_prepared_statements(sql: &[u8]) -> bool {
    Mentions::of(sql).prepared_words()
}

/// PostgreSQL's own words for a message with a body where none belongs
/// (pq_getmsgend).
const INVALID_FORMAT: &str = "invalid message format";

/// Prefix of the upstream name a Bind or Describe of a statement the client
/// never prepared is sent with.
const UNKNOWN_PREFIX: &str = "rowgate_unknown:";
/// SQL that always fails to parse; stands in for a refused statement.
const REFUSED_SQL: &str = "rowgate refused this statement";
/// Parse payload (query, no parameter types) of [`REFUSED_SQL`].
const REFUSED_SPEC: &[u8] = b"rowgate refused this statement\0\0\0";

impl Core {
    /// Takes one whole message from the client. The driver feeds messages
    /// only while [`Core::wants_client`] says so.
    pub fn on_client(&mut self, frame: Frame) {
        if self.end.is_some() {
            return;
        }
        let tag = frame.tag();
        tracing::trace!(tag = %(tag as char), len = frame.body().len(), phase = ?self.phase, "client message");
        match tag {
            b'X' => return self.client_gone(End::ClientGone),
            b'd' | b'c' | b'f' => return self.on_copy_message(frame),
            b'H' => return self.on_flush(frame),
            // Read and ignored by a server in COPY FROM STDIN, body or not.
            b'S' if self.in_copy() => return self.send_raw(&frame),
            b'S' if !frame.body().is_empty() => return self.malformed(tag, "Sync"),
            t if !starts_batch(t) => {
                return self
                    .protocol_violation(format!("invalid frontend message type {:?}", t as char))
            }
            _ => {}
        }
        match self.phase {
            Phase::Skip { forward_sync } => {
                if tag == b'S' {
                    self.phase = Phase::Ready;
                    if forward_sync {
                        self.push_raw(&frame, Expect::forward(Kind::Sync));
                        self.end_of_batch();
                    } else {
                        self.to_client
                            .extend_from_slice(&backend::ready_for_query(b'I'));
                    }
                }
            }
            Phase::Ready => {
                let Some(frame) = self.begin_batch(frame) else {
                    return;
                };
                if !matches!(tag, b'Q' | b'F' | b'S') {
                    self.phase = Phase::Batch;
                }
                self.forward(frame);
            }
            Phase::Batch => {
                // Only a Sync ends an extended batch: a Query or
                // FunctionCall in the middle of one is skipped with the rest
                // if an earlier message failed.
                self.forward(frame);
                if tag == b'S' && self.phase == Phase::Batch {
                    self.phase = Phase::Ready;
                }
            }
        }
    }

    /// Whether the server is reading a COPY FROM STDIN.
    fn in_copy(&self) -> bool {
        matches!(&self.link, Link::Attached(a) if a.copy == Copy::In)
    }

    /// CopyData, CopyDone, CopyFail: part of a COPY FROM STDIN, in progress
    /// or about to start (a client may send its data right behind the
    /// COPY statement). With nothing in flight PostgreSQL accepts and
    /// ignores them (a CopyDone with a body too), and so does rowgate,
    /// without touching a pooled connection. (Forwarded ones the server would reject can only
    /// produce an error the reply queue does not owe, which closes the
    /// connection.)
    fn on_copy_message(&mut self, frame: Frame) {
        let tag = frame.tag();
        if let Link::Attached(a) = &mut self.link {
            if a.copy == Copy::In || !a.queue.is_empty() {
                if tag != b'd' {
                    a.copy = Copy::Off;
                    a.queue.push(Expect::forward(Kind::CopyEnd));
                }
                self.to_server.extend_from_slice(frame.as_bytes());
                let armed = a.copy_restart == CopyRestart::Armed;
                if tag != b'd' && armed {
                    a.copy_restart = CopyRestart::No;
                    self.restart_after_copy();
                }
            }
        }
    }

    /// Flush: the server sends what it has. With nothing in flight there
    /// is nothing to send, and no connection is needed.
    fn on_flush(&mut self, frame: Frame) {
        if !frame.body().is_empty() {
            return self.malformed(b'H', "Flush");
        }
        if let Link::Attached(a) = &self.link {
            if !a.queue.is_empty() || a.copy == Copy::In {
                self.to_server.extend_from_slice(frame.as_bytes());
            }
        }
    }

    /// A message PostgreSQL would reject as malformed: the client gets
    /// PostgreSQL's 08P01 error, and the server never sees the message. On
    /// a connection, a statement that fails on purpose stands in for it, so
    /// the server aborts and skips exactly as PostgreSQL would; without one,
    /// rowgate answers itself.
    fn malformed(&mut self, tag: u8, what: &str) {
        tracing::debug!("client sent a {what} message with a body");
        let skipping = matches!(self.phase, Phase::Skip { .. });
        if skipping && tag != b'S' {
            // Discarded unread, like everything up to the next Sync.
            return;
        }
        let error = backend::error_response(Severity::Error, "08P01", INVALID_FORMAT);
        match (&mut self.link, self.phase) {
            (Link::Attached(a), Phase::Skip { forward_sync: true }) => {
                // The Sync ends the server's skipping, then fails: its
                // error comes in turn, then the ReadyForQuery.
                a.queue.push(Expect::forward(Kind::Emit(error)));
                frontend::put_sync(&mut self.to_server);
                a.queue.push(Expect::forward(Kind::Sync));
                self.phase = Phase::Ready;
                self.end_of_batch();
            }
            (Link::Attached(a), _) if matches!(a.hold, Hold::None) => {
                refuse_in_batch(a, &mut self.to_server, error);
                if tag == b'S' {
                    // A Sync still ends the batch, after the error.
                    frontend::put_sync(&mut self.to_server);
                    a.queue.push(Expect::forward(Kind::Sync));
                    self.phase = Phase::Ready;
                    self.end_of_batch();
                } else {
                    self.phase = Phase::Batch;
                }
            }
            // No connection to stand in on: rowgate answers itself.
            _ => self.refuse_batch(tag, "08P01", INVALID_FORMAT),
        }
        self.drain_emits();
    }

    /// Prepares the upstream for a batch that starts with `frame`. Returns
    /// the frame to forward, or None when rowgate answered or refused the
    /// batch itself, or parked it until a connection is lent.
    fn begin_batch(&mut self, frame: Frame) -> Option<Frame> {
        let tag = frame.tag();
        match &mut self.link {
            Link::Detached => {
                if tag == b'S' {
                    // A Sync with nothing before it: no transaction to run.
                    self.to_client
                        .extend_from_slice(&backend::ready_for_query(b'I'));
                    return None;
                }
                if let Some(message) = self.expired_message() {
                    crate::metrics::incr("rowgate_auth_failures_total", "expired_in_session");
                    self.refuse_batch(tag, "28000", &message);
                    return None;
                }
                self.link = Link::Acquiring(frame);
                self.actions.push_back(super::Action::Acquire);
                None
            }
            Link::Acquiring(_) => {
                // The driver feeds nothing while a connection is on its way.
                self.protocol_violation("message while waiting for a connection".into());
                None
            }
            Link::Attached(a) => {
                if a.queue.batch_in_flight() {
                    // An earlier batch may have failed before the statement
                    // that opened this block: then no block is open, and the
                    // identity goes in again.
                    if let Txn::Open {
                        block,
                        identity: IdentityState::Set,
                        sure: false,
                    } = a.txn
                    {
                        a.txn = Txn::Open {
                            block,
                            identity: IdentityState::Reassert,
                            sure: false,
                        };
                    }
                }
                if a.txn == Txn::Idle && tag != b'S' {
                    if let Some(message) = self.expired_message() {
                        crate::metrics::incr("rowgate_auth_failures_total", "expired_in_session");
                        let error = backend::error_response(Severity::Error, "28000", &message);
                        self.refuse_upstream(tag, error);
                        return None;
                    }
                }
                Some(frame)
            }
        }
    }

    /// Refuses a message on the attached connection: a statement that fails
    /// on purpose goes in its place, so the server aborts and skips to Sync
    /// as for any failed statement, and the client sees `error`.
    pub(super) fn refuse_upstream(&mut self, tag: u8, error: Bytes) {
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        if matches!(tag, b'Q' | b'F') {
            frontend::put_query(&mut self.to_server, REFUSED_SQL);
            a.queue.push(Expect::refused(Kind::Query, error));
            self.end_of_batch();
        } else {
            refuse_in_batch(a, &mut self.to_server, error);
            self.phase = Phase::Batch;
        }
        self.drain_emits();
    }

    /// Queues one batch message upstream (after the in-band check of a
    /// service login's identity statements, which never go upstream).
    pub(super) fn forward(&mut self, frame: Frame) {
        let frame = match self.inband_intercept(frame) {
            super::inband::Intercept::NotMine(f) | super::inband::Intercept::Forward(f) => f,
            super::inband::Intercept::Done | super::inband::Intercept::Parked => {
                return self.drain_emits()
            }
        };
        match frame.tag() {
            b'P' => self.on_parse(&frame),
            b'B' => self.on_bind(frame),
            b'D' => self.on_describe(&frame),
            b'C' => self.on_close(&frame),
            b'E' => self.push_raw(&frame, Expect::forward(Kind::Execute)),
            b'S' => {
                self.push_raw(&frame, Expect::forward(Kind::Sync));
                self.end_of_batch();
            }
            b'Q' => self.on_query(&frame),
            b'F' => self.on_function_call(&frame),
            _ => self.protocol_violation("unexpected message in batch".into()),
        }
        self.drain_emits();
    }

    /// Sends a client frame as it is, owing `expect`.
    fn push_raw(&mut self, frame: &Frame, expect: Expect) {
        if let Link::Attached(a) = &mut self.link {
            self.to_server.extend_from_slice(frame.as_bytes());
            a.queue.push(expect);
        }
    }

    /// Sends a client frame that has no reply.
    fn send_raw(&mut self, frame: &Frame) {
        if self.attached() {
            self.to_server.extend_from_slice(frame.as_bytes());
        }
    }

    /// A batch ended (Sync, or a simple Query or FunctionCall): the
    /// implicit transaction of the batch ends with it.
    fn end_of_batch(&mut self) {
        if let Link::Attached(a) = &mut self.link {
            match a.txn {
                Txn::Open { block: false, .. } => {
                    a.txn = Txn::Idle;
                    self.inband_transaction_over();
                }
                // A block rowgate is not sure of (a bound BEGIN never
                // executed, one behind a message that may fail) may not be
                // open: then this ended the transaction, and the next
                // statement needs the identity again. In a real block,
                // setting it again changes nothing.
                Txn::Open {
                    block: true,
                    identity: IdentityState::Set,
                    sure: false,
                } => {
                    a.txn = Txn::Open {
                        block: true,
                        identity: IdentityState::Reassert,
                        sure: false,
                    };
                }
                _ => {}
            }
        }
    }

    fn on_parse(&mut self, frame: &Frame) {
        let max_prepared = self.database.pool().max_prepared();
        let p = match frontend::parse_parts(frame.body()) {
            Ok(p) => p,
            Err(e) => return self.protocol_violation(e.to_string()),
        };
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        let out = &mut self.to_server;
        // The guard judges what the client sent, before any rewrite.
        let found = self.shared.guard.inspect(query_of(p.spec));
        let at_bind = self.shared.guard.defers_to_bind(query_of(p.spec), &found);
        let refusal = match found.violation {
            Some(_) if at_bind => None,
            Some(v) => {
                crate::metrics::incr("rowgate_guard_refusals_total", v.rule);
                Some(violation_error(&v))
            }
            None => found
                .state
                .and_then(|state| session_state_refusal(&self.shared, state, a)),
        };
        if let Some(error) = refusal {
            return refuse_in_batch(a, out, error);
        }
        // DEALLOCATE sent through the extended protocol (psycopg with
        // libpq < 17 does) names the client's statement too.
        let sql = query_of(p.spec);
        let rewritten =
            rewrite_deallocate(&mut self.statements, a, out, sql, max_prepared).map(|instead| {
                let mut spec = instead.into_bytes();
                spec.push(0);
                spec.extend_from_slice(&p.spec[sql.len() + 1..]);
                spec
            });
        let spec = rewritten.as_deref().unwrap_or(p.spec);
        if touches_prepared_statements(spec) {
            forget_prepared(a);
        }
        if p.name.is_empty() {
            self.statements
                .set_unnamed(Some(Arc::new(Statement::new(spec).judged_at_bind(at_bind))));
            a.unnamed_here = true;
            put_parse(out, b"", spec);
            a.queue
                .push(Expect::forward(Kind::Parse(ParseNote::default())));
        } else if let Some(old) = self.statements.named(p.name).cloned() {
            // The name is taken: PostgreSQL answers 42P05. Have it say so
            // itself, by parsing under the upstream name of the existing
            // statement (prepared here first), and put the client's name
            // back into the message.
            if !a.conn.prepared.touch(&old.upstream) {
                prepare(a, out, &old, None, true, max_prepared);
            }
            put_parse(out, old.upstream.as_bytes(), spec);
            let kind = Kind::Parse(ParseNote::default());
            a.queue.push(Expect::renamed(kind, &old.upstream, p.name));
            // Should that Parse not fail after all (the statement was
            // dropped behind rowgate's back), the upstream name now holds
            // other SQL: prepare it afresh when next used.
            a.conn.prepared.remove(&old.upstream);
        } else {
            let stmt = Arc::new(Statement::new(spec).judged_at_bind(at_bind));
            let client_name: Box<[u8]> = p.name.into();
            self.statements.insert(client_name.clone(), stmt.clone());
            if a.conn.prepared.touch(&stmt.upstream) {
                let done = backend::parse_complete();
                a.queue.push(Expect::forward(Kind::Emit(done)));
            } else {
                prepare(a, out, &stmt, Some(client_name), false, max_prepared);
            }
        }
    }

    fn on_bind(&mut self, frame: Frame) {
        let b = match frontend::bind_parts(frame.body()) {
            Ok(b) => b,
            Err(e) => return self.protocol_violation(e.to_string()),
        };
        if let Some(stmt) = self.statements.get(b.statement).cloned() {
            if stmt.judged_at_bind {
                let verdict = match b.values() {
                    Some(values) => self.shared.guard.check_bound(query_of(&stmt.spec), &values),
                    None => return self.protocol_violation("malformed Bind message".into()),
                };
                if let Err(v) = verdict {
                    crate::metrics::incr("rowgate_guard_refusals_total", v.rule);
                    if let Link::Attached(a) = &mut self.link {
                        refuse_in_batch(a, &mut self.to_server, violation_error(&v));
                    }
                    return self.drain_emits();
                }
            }
            if stmt.stale.load(Ordering::Relaxed) {
                if let Link::Attached(a) = &mut self.link {
                    refuse_in_batch(a, &mut self.to_server, backend::cached_plan_changed());
                }
                return;
            }
            if self.start_shape_check(&stmt, &frame) {
                return;
            }
        }
        self.bind(frame);
    }

    /// Before a Bind of a statement the client described on another
    /// connection: PostgreSQL refuses to run a statement whose result shape
    /// changed since (0A000). rowgate prepares it again here and asks for
    /// the shape first (one round trip, only the first time a described
    /// statement is used on a connection); the Bind waits for the answer.
    fn start_shape_check(&mut self, stmt: &Arc<Statement>, frame: &Frame) -> bool {
        let max_prepared = self.database.pool().max_prepared();
        let Link::Attached(a) = &mut self.link else {
            return false;
        };
        if stmt.shape.get().is_none() || a.conn.prepared.touch(&stmt.upstream) {
            return false;
        }
        let out = &mut self.to_server;
        prepare(a, out, stmt, None, true, max_prepared);
        put_target(out, b'D', b'S', stmt.upstream.as_bytes());
        a.queue
            .push(Expect::swallow(Kind::Describe(Shape::Check(stmt.clone()))));
        // Without a Flush the server would hold its replies until a Sync.
        frontend::put_flush(out);
        a.hold = Hold::ShapeCheck {
            bind: frame.clone(),
            stmt: stmt.clone(),
        };
        true
    }

    /// The shape check ended: `changed` says whether the Bind must fail
    /// (None: the re-prepare itself failed and the server is skipping).
    pub(super) fn shape_checked(&mut self, bind: Frame, stmt: &Statement, changed: Option<bool>) {
        match changed {
            Some(true) => {
                stmt.stale.store(true, Ordering::Relaxed);
                if let Link::Attached(a) = &mut self.link {
                    refuse_in_batch(a, &mut self.to_server, backend::cached_plan_changed());
                }
            }
            Some(false) => self.bind(bind),
            None => {}
        }
        self.drain_emits();
    }

    /// Sends a Bind upstream, the identity first if the transaction needs
    /// it, renaming the statement.
    fn bind(&mut self, frame: Frame) {
        let max_prepared = self.database.pool().max_prepared();
        let Ok(b) = frontend::bind_parts(frame.body()) else {
            return;
        };
        let effect = match self.statements.effect_of(b.statement) {
            // A bound BEGIN runs only if an Execute follows: not sure.
            TxnEffect::Starts(m) => {
                self.before_statement(TxnEffect::Starts(m), None);
                if let Link::Attached(a) = &mut self.link {
                    if let Txn::Open { sure, .. } = &mut a.txn {
                        *sure = false;
                    }
                }
                None
            }
            other => Some(other),
        };
        if let Some(effect) = effect {
            self.before_statement(effect, None);
        }
        if let (Some(stmt), Link::Attached(a)) = (self.statements.get(b.statement), &mut self.link)
        {
            if stmt.session.any() {
                a.fx.merge(&stmt.session);
            }
        }
        let name = self.resolve(b.statement, max_prepared);
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        match &name {
            None => self.to_server.extend_from_slice(frame.as_bytes()),
            Some(n) => put_bind(&mut self.to_server, b.portal, n.as_bytes(), b.rest),
        }
        let opens = effect.is_none();
        a.queue
            .push(expect_for(Kind::Bind, b.statement, name.as_ref()).opening(opens));
        self.drain_emits();
    }

    fn on_describe(&mut self, frame: &Frame) {
        let max_prepared = self.database.pool().max_prepared();
        let t = match frontend::target(frame.body(), "Describe") {
            Ok(t) => t,
            Err(e) => return self.protocol_violation(e.to_string()),
        };
        let name = match t.kind {
            b'S' => self.resolve(t.name, max_prepared),
            _ => None,
        };
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        match &name {
            None => self.to_server.extend_from_slice(frame.as_bytes()),
            Some(n) => put_target(&mut self.to_server, b'D', b'S', n.as_bytes()),
        }
        // The first description of a named statement is the result shape
        // the client will hold it to.
        let shape = match self.statements.named(t.name) {
            Some(s) if t.kind == b'S' && s.shape.get().is_none() => Shape::Record(s.clone()),
            _ => Shape::Pass,
        };
        a.queue
            .push(expect_for(Kind::Describe(shape), t.name, name.as_ref()));
    }

    fn on_close(&mut self, frame: &Frame) {
        let t = match frontend::target(frame.body(), "Close") {
            Ok(t) => t,
            Err(e) => return self.protocol_violation(e.to_string()),
        };
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        if t.kind == b'S' && !t.name.is_empty() {
            // The upstream statement stays cached for other clients; only
            // this client's name for it goes away.
            self.statements.remove(t.name);
            let done = backend::close_complete();
            a.queue.push(Expect::forward(Kind::Emit(done)));
        } else {
            if t.kind == b'S' {
                self.statements.set_unnamed(None);
            }
            self.to_server.extend_from_slice(frame.as_bytes());
            a.queue.push(Expect::forward(Kind::Close));
        }
    }

    fn on_query(&mut self, frame: &Frame) {
        let max_prepared = self.database.pool().max_prepared();
        let body = frame.body();
        let sql = body.strip_suffix(b"\0").unwrap_or(body);
        let found = self.shared.guard.inspect(sql);
        if let Some(v) = found.violation {
            crate::metrics::incr("rowgate_guard_refusals_total", v.rule);
            return self.refuse_upstream(b'Q', violation_error(&v));
        }
        if let (Link::Attached(a), Some(state)) = (&mut self.link, found.state) {
            if let Some(error) = session_state_refusal(&self.shared, state, a) {
                return self.refuse_upstream(b'Q', error);
            }
        }
        let effect = classify(sql);
        let leading = match effect {
            TxnEffect::Plain => leading_modes(sql),
            _ => None,
        };
        // The client's own unsynced extended messages before this Query
        // decide, as on PostgreSQL, what the server skips after an error
        // among them: rowgate's Sync must not end that skipping early.
        let at_boundary = self.phase == Phase::Ready;
        let injected = self.before_statement(effect, leading);
        let mentions = Mentions::of(sql);
        let fx = session_effects_of(sql, mentions);
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        if mentions.prepared_words() {
            forget_prepared(a);
        }
        a.fx.merge(&fx);
        let out = &mut self.to_server;
        match rewrite_deallocate(&mut self.statements, a, out, sql, max_prepared) {
            Some(instead) => frontend::put_query(out, &instead),
            None => out.extend_from_slice(frame.as_bytes()),
        }
        // A lone statement that must run outside a transaction and resets
        // everything is DISCARD ALL (RESET ALL is not `Outside`): it also
        // drops the client's prepared statements.
        if effect == TxnEffect::Outside && fx.ops.contains(&SessionOp::ResetAll) {
            self.statements.clear();
        }
        let opens = matches!(effect, TxnEffect::Starts(_));
        a.queue.push(Expect::forward(Kind::Query).opening(opens));
        if injected && at_boundary {
            // Only COPY FROM STDIN makes the server read what follows as
            // data, and both its words then appear in the text: it can only
            // be a statement of the query itself, never run from inside a
            // function.
            self.trailing_sync(mentions.copy_in_words());
        }
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        if is_single_statement(sql) {
            self.end_of_batch();
        } else if a.txn != Txn::Failed {
            // `BEGIN; ...`, `...; COMMIT`: the server's ReadyForQuery says
            // where this leaves the transaction.
            a.txn = Txn::Unknown {
                kept: !ends_a_transaction(sql),
            };
        }
    }

    fn on_function_call(&mut self, frame: &Frame) {
        let body = frame.body();
        let oid = body
            .get(..4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if let Err(v) = self.shared.guard.check_function_call(oid) {
            crate::metrics::incr("rowgate_guard_refusals_total", v.rule);
            return self.refuse_upstream(b'F', violation_error(&v));
        }
        let at_boundary = self.phase == Phase::Ready;
        let injected = self.before_statement(TxnEffect::Plain, None);
        self.push_raw(frame, Expect::forward(Kind::FunctionCall));
        if injected && at_boundary {
            self.trailing_sync(false);
        }
        self.end_of_batch();
    }

    /// Maps a client statement name to the upstream one, preparing it on
    /// this connection first if needed. `None` means "send as is" (the
    /// unnamed statement).
    fn resolve(&mut self, name: &[u8], max_prepared: usize) -> Option<Arc<str>> {
        let Link::Attached(a) = &mut self.link else {
            return None;
        };
        let out = &mut self.to_server;
        if name.is_empty() {
            if !a.unnamed_here {
                if let Some(u) = self.statements.unnamed() {
                    put_parse(out, b"", &u.spec);
                    a.queue
                        .push(Expect::swallow(Kind::Parse(ParseNote::default())));
                    a.unnamed_here = true;
                }
            }
            return None;
        }
        match self.statements.named(name) {
            Some(stmt) => {
                if !a.conn.prepared.touch(&stmt.upstream) {
                    prepare(a, out, stmt, None, true, max_prepared);
                }
                Some(stmt.upstream.clone())
            }
            // Let the server report the missing statement, under a name no
            // real statement can have, so its error and its skip-to-Sync
            // behaviour are exactly PostgreSQL's (the name in the message is
            // put back to the client's).
            None => Some(format!("{UNKNOWN_PREFIX}{}", String::from_utf8_lossy(name)).into()),
        }
    }
}

/// For a lone `DEALLOCATE` of one of the client's statements: the SQL to
/// run instead, naming rowgate's upstream statement (prepared on this
/// connection first, so PostgreSQL's reply is the plain success the client
/// expects). `DEALLOCATE ALL` forgets all the client's statements and runs
/// as sent; any other text is not touched.
fn rewrite_deallocate(
    statements: &mut super::statements::Statements,
    a: &mut Attachment,
    out: &mut bytes::BytesMut,
    sql: &[u8],
    max_prepared: usize,
) -> Option<String> {
    match deallocate(sql)? {
        Deallocate::All => {
            statements.clear_named();
            None
        }
        Deallocate::One(name) => {
            let stmt = statements.remove(name.as_bytes())?;
            if !a.conn.prepared.touch(&stmt.upstream) {
                prepare(a, out, &stmt, None, true, max_prepared);
            }
            // Gone after this; re-prepared when a client needs it again.
            a.conn.prepared.remove(&stmt.upstream);
            Some(format!("DEALLOCATE {}", stmt.upstream))
        }
    }
}

/// The reply entry for a Bind or Describe of the client's statement
/// `client`, sent upstream as `upstream`: errors name the client's statement.
fn expect_for(kind: Kind, client: &[u8], upstream: Option<&Arc<str>>) -> Expect {
    match upstream {
        Some(u) => Expect::renamed(kind, u, client),
        None => Expect::forward(kind),
    }
}

/// Fails an extended-protocol message with `error`: a Parse that fails on
/// purpose goes in its place, so the server then skips to Sync and aborts
/// a transaction block, as PostgreSQL does for any failed message.
pub(super) fn refuse_in_batch(a: &mut Attachment, out: &mut bytes::BytesMut, error: Bytes) {
    put_parse(out, b"", REFUSED_SPEC);
    a.unnamed_here = false;
    a.queue
        .push(Expect::refused(Kind::Parse(ParseNote::default()), error));
}

/// The ErrorResponse a client gets for a refused statement.
fn violation_error(v: &GuardViolation) -> Bytes {
    // The rule only: the statement's text may hold anyone's data.
    tracing::info!(rule = v.rule, "statement refused by the guard");
    backend::error_response(Severity::Error, "42501", &v.to_string())
}

/// Applies `[session_state]` to a statement that creates `state`: the
/// error to refuse it with, or None to let it run (pinning the client to
/// its connection when the policy says so).
fn session_state_refusal(
    shared: &super::Shared,
    state: SessionState,
    a: &mut Attachment,
) -> Option<Bytes> {
    match shared.config.session_state.policy(state) {
        StatePolicy::Pin => {
            if !a.pinned {
                crate::metrics::incr("rowgate_pinned_sessions_total", state.name());
            }
            a.pinned = true;
            None
        }
        StatePolicy::Reject => {
            crate::metrics::incr("rowgate_session_state_refusals_total", state.name());
            tracing::info!(state = state.name(), "statement refused by [session_state]");
            let (what, instead) = match state {
                SessionState::TempTable => (
                    "a temporary table",
                    "Use ON COMMIT DROP inside a transaction, or a regular table.",
                ),
                SessionState::Listen => (
                    "a LISTEN registration",
                    "Listen on a direct connection to PostgreSQL.",
                ),
                SessionState::AdvisoryLock => (
                    "a session-level advisory lock",
                    "Use pg_advisory_xact_lock inside a transaction.",
                ),
                SessionState::HoldCursor => (
                    "a WITH HOLD cursor",
                    "Use a cursor without WITH HOLD inside a transaction.",
                ),
                SessionState::SqlPrepare => (
                    "an SQL-level prepared statement",
                    "Use your driver's prepared statements (protocol-level), which rowgate supports.",
                ),
            };
            let message = format!(
                "rowgate: this statement keeps {what} on the database connection, which rowgate shares between clients transaction by transaction, so it is refused. {instead} Or set [session_state] {} = \"pin\" to keep one connection for such a client.",
                state.name()
            );
            Some(backend::error_response(Severity::Error, "0A000", &message))
        }
    }
}

/// Prepares `stmt` on the attached connection (Close first, in case a
/// client's SQL-level PREPARE took the name), evicting the least recently
/// used statement beyond the cap.
fn prepare(
    a: &mut Attachment,
    out: &mut bytes::BytesMut,
    stmt: &Statement,
    client: Option<Box<[u8]>>,
    swallow: bool,
    max_prepared: usize,
) {
    put_target(out, b'C', b'S', stmt.upstream.as_bytes());
    a.queue.push(Expect::swallow(Kind::Close));
    put_parse(out, stmt.upstream.as_bytes(), &stmt.spec);
    let note = ParseNote {
        upstream: Some(stmt.upstream.clone()),
        client,
        identity: false,
    };
    a.queue.push(if swallow {
        Expect::swallow(Kind::Parse(note))
    } else {
        Expect::forward(Kind::Parse(note))
    });
    if let Some(victim) = a.conn.prepared.insert(stmt.upstream.clone(), max_prepared) {
        put_target(out, b'C', b'S', victim.as_bytes());
        a.queue.push(Expect::swallow(Kind::Close));
    }
}

/// Forgets what rowgate believed was prepared on this connection.
fn forget_prepared(a: &mut Attachment) {
    a.conn.prepared.clear();
    a.conn.identity_prepared = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_management_sql_is_noticed() {
        assert!(touches_prepared_statements(b"DEALLOCATE ALL"));
        assert!(touches_prepared_statements(b"discard all"));
        assert!(touches_prepared_statements(b"PrePare x as select 1"));
        assert!(!touches_prepared_statements(
            b"select * from pgbench_accounts"
        ));
        assert!(!touches_prepared_statements(b"prep"));
    }
}
