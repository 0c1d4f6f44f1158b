//! Messages from the client: where batches start (and transactions get
//! their identity), and how statement names are mapped to upstream names.

use super::expect::{Expect, Kind, ParseNote, Shape};
use super::session::{Attachment, End, Phase, Session, ShapeCheck, Statement, Upstream};
use crate::config::StatePolicy;
use crate::guard::{
    classify, deallocate, leading_modes, session_effects, Deallocate, GuardViolation, SessionOp,
    SessionState, TxnEffect,
};
use crate::wire::backend;
use crate::wire::frontend::{self, put_bind, put_parse, put_target};
// HOOK(ops): the message size limit is [listen] max_message_size, read
// through shared.ops (was MAX_MESSAGE_LEN) in the two calls below.
use crate::wire::{next_frame, peek_frame_len, Frame};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

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
    const WORDS: [&[u8]; 3] = [b"prepare", b"dealloc", b"discard"];
    sql.windows(7)
        .any(|w| WORDS.iter().any(|word| w.eq_ignore_ascii_case(word)))
}

impl Session {
    /// Handles every complete client message in the buffer. Returns true
    /// when the next message must wait for the server (it starts a new batch
    /// while replies to the previous one are still outstanding).
    pub(super) async fn process_client_input(&mut self) -> Result<bool, End> {
        loop {
            let Some(len) = peek_frame_len(&self.crbuf, self.shared.ops.max_message_size())? else {
                return Ok(false);
            };
            if self.crbuf.len() < len {
                return Ok(false);
            }
            let tag = self.crbuf[0];
            if self.phase == Phase::Ready && starts_batch(tag) {
                if let Upstream::Attached(a) = &self.upstream {
                    if !a.expect.is_empty() && !a.copy_in {
                        return Ok(true);
                    }
                }
            }
            let Some(frame) = next_frame(&mut self.crbuf, self.shared.ops.max_message_size())?
            else {
                return Ok(false);
            };
            self.on_client_frame(frame).await?;
        }
    }

    async fn on_client_frame(&mut self, frame: Frame) -> Result<(), End> {
        let tag = frame.tag();
        tracing::trace!(tag = %(tag as char), len = frame.body().len(), phase = ?self.phase, "client message");
        match tag {
            b'X' => return Err(End::ClientGone),
            b'd' | b'c' | b'f' | b'H' => {
                // Copy data and Flush belong to whatever is in flight; with
                // nothing in flight the server would ignore them too.
                if let Upstream::Attached(a) = &mut self.upstream {
                    if matches!(tag, b'c' | b'f') {
                        a.copy_in = false;
                    }
                    a.out.extend_from_slice(frame.as_bytes());
                }
                return Ok(());
            }
            b'S' if matches!(&self.upstream, Upstream::Attached(a) if a.copy_in) => {
                // Part of the copy stream: the server ignores it.
                if let Upstream::Attached(a) = &mut self.upstream {
                    a.out.extend_from_slice(frame.as_bytes());
                }
                return Ok(());
            }
            t if !starts_batch(t) => {
                return Err(End::Protocol(format!(
                    "invalid frontend message type {:?}",
                    t as char
                )))
            }
            _ => {}
        }
        match self.phase {
            Phase::Skip => {
                if tag == b'S' {
                    self.cwbuf
                        .extend_from_slice(&backend::ready_for_query(b'I'));
                    self.phase = Phase::Ready;
                }
                return Ok(());
            }
            Phase::Ready => {
                if !self.begin_batch(tag).await {
                    return Ok(());
                }
                if !matches!(tag, b'Q' | b'F' | b'S') {
                    self.phase = Phase::Batch;
                }
            }
            Phase::Batch => {
                if matches!(tag, b'S' | b'Q' | b'F') {
                    self.phase = Phase::Ready;
                }
            }
        }
        if tag == b'B' && self.result_shape_changed(frame.body()).await? {
            let Upstream::Attached(a) = &mut self.upstream else {
                return Err(End::Desync("lost connection while binding"));
            };
            refuse_in_batch(a, backend::cached_plan_changed());
            return Ok(());
        }
        self.forward(frame)
    }

    /// Before a Bind: whether it names a statement whose result shape is no
    /// longer the one the client learnt when it described it. PostgreSQL
    /// refuses to run such a statement (0A000) on the connection it was
    /// prepared on; rowgate prepares it again on whichever connection the
    /// client lands on, so it asks that connection for the shape first
    /// (one round trip, only the first time a described statement is used
    /// on a connection) and fails the Bind the same way.
    async fn result_shape_changed(&mut self, bind: &[u8]) -> Result<bool, End> {
        let b = frontend::bind_parts(bind)?;
        let Some(stmt) = self.statements.get(b.statement).cloned() else {
            return Ok(false);
        };
        if stmt.stale.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let max_prepared = self.shared.pool.max_prepared();
        let Upstream::Attached(a) = &mut self.upstream else {
            return Ok(false);
        };
        if stmt.shape.get().is_none() || a.conn.prepared.touch(&stmt.upstream) {
            return Ok(false);
        }
        prepare(a, &stmt, None, true, max_prepared);
        put_target(&mut a.out, b'D', b'S', stmt.upstream.as_bytes());
        a.expect
            .push_back(Expect::swallow(Kind::Describe(Shape::Check(stmt.clone()))));
        // Without a Flush the server would hold its replies until a Sync.
        frontend::put_flush(&mut a.out);
        a.shape_check = ShapeCheck::Waiting;
        loop {
            self.flush().await?;
            match &self.upstream {
                Upstream::Attached(a) if a.shape_check == ShapeCheck::Waiting => {}
                _ => break,
            }
            match super::session::read_upstream(&mut self.upstream).await {
                Ok(0) => return Err(End::UpstreamLost("server closed the connection".into())),
                Ok(_) => self.process_server_input()?,
                Err(e) => return Err(End::UpstreamLost(e.to_string())),
            }
        }
        let Upstream::Attached(a) = &mut self.upstream else {
            return Ok(false);
        };
        let changed = a.shape_check == ShapeCheck::Changed;
        a.shape_check = ShapeCheck::Idle;
        if changed {
            stmt.stale.store(true, Ordering::Relaxed);
        }
        Ok(changed)
    }

    /// Prepares the upstream for a batch that starts with `tag`. Returns
    /// false when the batch was answered or refused by rowgate itself.
    async fn begin_batch(&mut self, tag: u8) -> bool {
        let new_transaction = match &self.upstream {
            Upstream::Attached(a) => a.status == b'I',
            Upstream::Detached => {
                if tag == b'S' {
                    // A Sync with nothing before it: no transaction to run.
                    self.cwbuf
                        .extend_from_slice(&backend::ready_for_query(b'I'));
                    return false;
                }
                true
            }
        };
        if !new_transaction {
            // Inside the client's transaction (`T`) or its failed one (`E`):
            // the identity is already set, or injecting would fail and make
            // the server skip the client's ROLLBACK.
            return true;
        }
        if let Some(message) = self.expired_message() {
            crate::metrics::incr("rowgate_auth_failures_total", "expired_in_session");
            self.release();
            self.refuse_batch(tag, "28000", &message);
            return false;
        }
        if matches!(self.upstream, Upstream::Detached) {
            if let Err((code, message)) = self.attach().await {
                self.refuse_batch(tag, code, &message);
                return false;
            }
        }
        true
    }

    /// Queues one batch message upstream, renaming statements as needed.
    fn forward(&mut self, frame: Frame) -> Result<(), End> {
        let max_prepared = self.shared.pool.max_prepared();
        let Upstream::Attached(a) = &mut self.upstream else {
            return Err(End::Desync("batch message without a connection"));
        };
        let body = frame.body();
        match frame.tag() {
            b'P' => {
                let p = frontend::parse_parts(body)?;
                // The guard judges what the client sent, before any rewrite.
                let found = self.shared.guard.inspect(query_of(p.spec));
                let refusal = match found.violation {
                    Some(v) => {
                        crate::metrics::incr("rowgate_guard_refusals_total", v.rule);
                        Some(violation_error(&v))
                    }
                    None => found
                        .state
                        .and_then(|state| session_state_refusal(&self.shared, state, a)),
                };
                if let Some(error) = refusal {
                    refuse_in_batch(a, error);
                    self.drain_emits();
                    return Ok(());
                }
                // DEALLOCATE sent through the extended protocol (psycopg
                // with libpq < 17 does) names the client's statement too.
                let rewritten =
                    rewrite_deallocate(&mut self.statements, a, query_of(p.spec), max_prepared)
                        .map(|sql| {
                            let mut spec = sql.into_bytes();
                            spec.push(0);
                            spec.extend_from_slice(&p.spec[query_of(p.spec).len() + 1..]);
                            spec
                        });
                let p = frontend::ParseParts {
                    name: p.name,
                    spec: rewritten.as_deref().unwrap_or(p.spec),
                };
                if touches_prepared_statements(p.spec) {
                    forget_prepared(a);
                }
                if p.name.is_empty() {
                    self.unnamed = Some(Arc::new(Statement::new(p.spec)));
                    a.unnamed_here = true;
                    put_parse(&mut a.out, b"", p.spec);
                    a.expect
                        .push_back(Expect::forward(Kind::Parse(ParseNote::default())));
                } else if let Some(old) = self.statements.get(p.name).cloned() {
                    // The name is taken: PostgreSQL answers 42P05. Have it
                    // say so itself, by parsing under the upstream name of
                    // the existing statement (prepared here first), and put
                    // the client's name back into the message.
                    if !a.conn.prepared.touch(&old.upstream) {
                        prepare(a, &old, None, true, max_prepared);
                    }
                    put_parse(&mut a.out, old.upstream.as_bytes(), p.spec);
                    let kind = Kind::Parse(ParseNote::default());
                    a.expect
                        .push_back(Expect::renamed(kind, &old.upstream, p.name));
                    // Should that Parse not fail after all (the statement
                    // was dropped behind rowgate's back), the upstream name
                    // now holds other SQL: prepare it afresh when next used.
                    a.conn.prepared.remove(&old.upstream);
                } else {
                    let stmt = Arc::new(Statement::new(p.spec));
                    let client_name: Box<[u8]> = p.name.into();
                    self.statements.insert(client_name.clone(), stmt.clone());
                    if a.conn.prepared.touch(&stmt.upstream) {
                        let done = backend::parse_complete();
                        a.expect.push_back(Expect::forward(Kind::Emit(done)));
                    } else {
                        prepare(a, &stmt, Some(client_name), false, max_prepared);
                    }
                }
            }
            b'B' => {
                let b = frontend::bind_parts(body)?;
                let effect = self.effect_of(b.statement);
                self.before_statement(effect, None);
                self.note_session_effects(b.statement);
                let name = self.resolve(b.statement, max_prepared)?;
                let Upstream::Attached(a) = &mut self.upstream else {
                    return Err(End::Desync("lost connection while binding"));
                };
                match &name {
                    None => a.out.extend_from_slice(frame.as_bytes()),
                    Some(n) => put_bind(&mut a.out, b.portal, n.as_bytes(), b.rest),
                }
                a.expect
                    .push_back(expect_for(Kind::Bind, b.statement, name.as_ref()));
            }
            b'D' => {
                let t = frontend::target(body, "Describe")?;
                let name = match t.kind {
                    b'S' => self.resolve(t.name, max_prepared)?,
                    _ => None,
                };
                let Upstream::Attached(a) = &mut self.upstream else {
                    return Err(End::Desync("lost connection while describing"));
                };
                match &name {
                    None => a.out.extend_from_slice(frame.as_bytes()),
                    Some(n) => put_target(&mut a.out, b'D', b'S', n.as_bytes()),
                }
                // The first description of a named statement is the result
                // shape the client will hold it to.
                let shape = match self.statements.get(t.name) {
                    Some(s) if t.kind == b'S' && s.shape.get().is_none() => {
                        Shape::Record(s.clone())
                    }
                    _ => Shape::Pass,
                };
                a.expect
                    .push_back(expect_for(Kind::Describe(shape), t.name, name.as_ref()));
            }
            b'C' => {
                let t = frontend::target(body, "Close")?;
                if t.kind == b'S' && !t.name.is_empty() {
                    // The upstream statement stays cached for other clients;
                    // only this client's name for it goes away.
                    self.statements.remove(t.name);
                    let done = backend::close_complete();
                    a.expect.push_back(Expect::forward(Kind::Emit(done)));
                } else {
                    if t.kind == b'S' {
                        self.unnamed = None;
                    }
                    a.out.extend_from_slice(frame.as_bytes());
                    a.expect.push_back(Expect::forward(Kind::Close));
                }
            }
            b'E' => {
                a.out.extend_from_slice(frame.as_bytes());
                a.expect.push_back(Expect::forward(Kind::Execute));
            }
            b'S' => {
                a.out.extend_from_slice(frame.as_bytes());
                a.expect.push_back(Expect::forward(Kind::Sync));
            }
            b'Q' => {
                let sql = body.strip_suffix(b"\0").unwrap_or(body);
                let found = self.shared.guard.inspect(sql);
                if let Some(v) = found.violation {
                    crate::metrics::incr("rowgate_guard_refusals_total", v.rule);
                    return self.forward_refused(violation_error(&v));
                }
                if let (Upstream::Attached(a), Some(state)) = (&mut self.upstream, found.state) {
                    if let Some(error) = session_state_refusal(&self.shared, state, a) {
                        return self.forward_refused(error);
                    }
                }
                let effect = classify(sql);
                let leading = match effect {
                    TxnEffect::Plain => leading_modes(sql),
                    _ => None,
                };
                self.before_statement(effect, leading);
                let fx = session_effects(sql);
                let Upstream::Attached(a) = &mut self.upstream else {
                    return Err(End::Desync("lost connection before a query"));
                };
                if touches_prepared_statements(body) {
                    forget_prepared(a);
                }
                a.session_fx.merge(&fx);
                match rewrite_deallocate(&mut self.statements, a, sql, max_prepared) {
                    Some(instead) => frontend::put_query(&mut a.out, &instead),
                    None => a.out.extend_from_slice(frame.as_bytes()),
                }
                // A lone statement that must run outside a transaction and
                // resets everything is DISCARD ALL (RESET ALL is not
                // `Outside`): it also drops the client's prepared statements.
                if effect == TxnEffect::Outside && fx.ops.contains(&SessionOp::ResetAll) {
                    self.statements.clear();
                    self.unnamed = None;
                }
                a.expect.push_back(Expect::forward(Kind::Query));
            }
            b'F' => {
                let oid = body
                    .get(..4)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                if let Err(v) = self.shared.guard.check_function_call(oid) {
                    crate::metrics::incr("rowgate_guard_refusals_total", v.rule);
                    return self.forward_refused(violation_error(&v));
                }
                self.before_statement(TxnEffect::Plain, None);
                let Upstream::Attached(a) = &mut self.upstream else {
                    return Err(End::Desync("lost connection before a function call"));
                };
                a.out.extend_from_slice(frame.as_bytes());
                a.expect.push_back(Expect::forward(Kind::FunctionCall));
            }
            _ => return Err(End::Desync("unexpected message in batch")),
        }
        self.drain_emits();
        Ok(())
    }

    /// Sends, in place of a refused Query or FunctionCall, a query that
    /// fails on purpose, so the server aborts a transaction block exactly as
    /// for any failed statement; the client sees the guard's error.
    fn forward_refused(&mut self, error: bytes::Bytes) -> Result<(), End> {
        let Upstream::Attached(a) = &mut self.upstream else {
            return Err(End::Desync("refusal without a connection"));
        };
        frontend::put_query(&mut a.out, REFUSED_SQL);
        a.expect.push_back(Expect::refused(Kind::Query, error));
        Ok(())
    }

    /// Records what the statement a Bind names does to session settings.
    fn note_session_effects(&mut self, name: &[u8]) {
        let stmt = if name.is_empty() {
            self.unnamed.as_ref()
        } else {
            self.statements.get(name)
        };
        if let (Some(stmt), Upstream::Attached(a)) = (stmt, &mut self.upstream) {
            if stmt.session.any() {
                a.session_fx.merge(&stmt.session);
            }
        }
    }

    /// How the statement a Bind names relates to the transaction.
    fn effect_of(&self, name: &[u8]) -> TxnEffect {
        let stmt = if name.is_empty() {
            self.unnamed.as_ref()
        } else {
            self.statements.get(name)
        };
        stmt.map_or(TxnEffect::Plain, |s| s.effect)
    }

    /// Maps a client statement name to the upstream one, preparing it on
    /// this connection first if needed. `None` means "send as is" (the
    /// unnamed statement).
    fn resolve(&mut self, name: &[u8], max_prepared: usize) -> Result<Option<Arc<str>>, End> {
        // (the caller names the upstream statement in errors after the
        // client's name: see `expect_for`)
        let Upstream::Attached(a) = &mut self.upstream else {
            return Err(End::Desync("resolve without a connection"));
        };
        if name.is_empty() {
            if !a.unnamed_here {
                if let Some(u) = &self.unnamed {
                    put_parse(&mut a.out, b"", &u.spec);
                    a.expect
                        .push_back(Expect::swallow(Kind::Parse(ParseNote::default())));
                    a.unnamed_here = true;
                }
            }
            return Ok(None);
        }
        match self.statements.get(name) {
            Some(stmt) => {
                if !a.conn.prepared.touch(&stmt.upstream) {
                    prepare(a, stmt, None, true, max_prepared);
                }
                Ok(Some(stmt.upstream.clone()))
            }
            // Let the server report the missing statement, under a name no
            // real statement can have, so its error and its skip-to-Sync
            // behaviour are exactly PostgreSQL's (the name in the message
            // is put back to the client's).
            None => Ok(Some(
                format!("{UNKNOWN_PREFIX}{}", String::from_utf8_lossy(name)).into(),
            )),
        }
    }
}

/// For a lone `DEALLOCATE` of one of the client's statements: the SQL to
/// run instead, naming rowgate's upstream statement (prepared on this
/// connection first, so PostgreSQL's reply is the plain success the client
/// expects). `DEALLOCATE ALL` forgets all the client's statements and runs
/// as sent; any other text is not touched.
fn rewrite_deallocate(
    statements: &mut HashMap<Box<[u8]>, Arc<Statement>>,
    a: &mut Attachment,
    sql: &[u8],
    max_prepared: usize,
) -> Option<String> {
    match deallocate(sql)? {
        Deallocate::All => {
            statements.clear();
            None
        }
        Deallocate::One(name) => {
            let stmt = statements.remove(name.as_bytes())?;
            if !a.conn.prepared.touch(&stmt.upstream) {
                prepare(a, &stmt, None, true, max_prepared);
            }
            // Gone after this; re-prepared when a client needs it again.
            a.conn.prepared.remove(&stmt.upstream);
            Some(format!("DEALLOCATE {}", stmt.upstream))
        }
    }
}

/// Prefix of the upstream name a Bind or Describe of a statement the client
/// never prepared is sent with.
const UNKNOWN_PREFIX: &str = "rowgate_unknown:";

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
fn refuse_in_batch(a: &mut Attachment, error: bytes::Bytes) {
    put_parse(&mut a.out, b"", REFUSED_SPEC);
    a.unnamed_here = false;
    a.expect
        .push_back(Expect::refused(Kind::Parse(ParseNote::default()), error));
}

/// SQL that always fails to parse; stands in for a refused statement.
const REFUSED_SQL: &str = "rowgate refused this statement";
/// Parse payload (query, no parameter types) of [`REFUSED_SQL`].
const REFUSED_SPEC: &[u8] = b"rowgate refused this statement\0\0\0";

/// The query text of a Parse payload.
fn query_of(spec: &[u8]) -> &[u8] {
    spec.split(|&b| b == 0).next().unwrap_or_default()
}

/// The ErrorResponse a client gets for a refused statement.
fn violation_error(v: &GuardViolation) -> bytes::Bytes {
    backend::error_response(backend::Severity::Error, "42501", &v.to_string())
}

/// Applies `[session_state]` to a statement that creates `state`: the
/// error to refuse it with, or None to let it run (pinning the client to
/// its connection when the policy says so).
fn session_state_refusal(
    shared: &super::Shared,
    state: SessionState,
    a: &mut Attachment,
) -> Option<bytes::Bytes> {
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
            Some(backend::error_response(
                backend::Severity::Error,
                "0A000",
                &message,
            ))
        }
    }
}

/// Prepares `stmt` on the attached connection (Close first, in case a
/// client's SQL-level PREPARE took the name), evicting the least recently
/// used statement beyond the cap.
fn prepare(
    a: &mut Attachment,
    stmt: &Statement,
    client: Option<Box<[u8]>>,
    swallow: bool,
    max_prepared: usize,
) {
    put_target(&mut a.out, b'C', b'S', stmt.upstream.as_bytes());
    a.expect.push_back(Expect::swallow(Kind::Close));
    put_parse(&mut a.out, stmt.upstream.as_bytes(), &stmt.spec);
    let note = ParseNote {
        upstream: Some(stmt.upstream.clone()),
        client,
        identity: false,
    };
    a.expect.push_back(if swallow {
        Expect::swallow(Kind::Parse(note))
    } else {
        Expect::forward(Kind::Parse(note))
    });
    if let Some(victim) = a.conn.prepared.insert(stmt.upstream.clone(), max_prepared) {
        put_target(&mut a.out, b'C', b'S', victim.as_bytes());
        a.expect.push_back(Expect::swallow(Kind::Close));
    }
}

/// Forgets what rowgate believed was prepared on this connection.
fn forget_prepared(a: &mut Attachment) {
    a.conn.prepared.clear();
    a.conn.identity_prepared = false;
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
