//! The end of a transaction: session settings the client changed in it are
//! read back and kept with the client, the connection is reset, and it goes
//! back to the pool. Also the cleanup after a client that left.
//!
//! Which of the client's session `SET`s survived the transaction is read
//! from the server, not guessed: after the transaction, a setting whose
//! `source` is `session` was set by a statement that committed (a `SET`
//! rolled back with its transaction or savepoint leaves the pooled
//! connection's own value, of another source, since rowgate only ever
//! applies the client's settings transaction-locally).

use super::expect::{Expect, Kind};
use super::{Core, Hold, Link};
use crate::client::params::array_literal;
use crate::guard::SessionOp;
use crate::wire::frontend;
use std::collections::BTreeMap;

/// How the batch that ended a transaction went, for the client's RESETs
/// in it (which leave no trace on the pooled connection).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Ending {
    /// An error came after the last command completed.
    error_last: bool,
    /// The last command's tag was ROLLBACK.
    rollback_last: bool,
}

impl Ending {
    /// A CommandComplete (or EmptyQueryResponse, PortalSuspended) body.
    pub fn completed(&mut self, body: &[u8]) {
        self.error_last = false;
        self.rollback_last = body.starts_with(b"ROLLBACK");
    }
    /// An ErrorResponse.
    pub fn errored(&mut self) {
        self.error_last = true;
    }
    /// Whether the transaction committed.
    pub fn committed(&self) -> bool {
        !self.error_last && !self.rollback_last
    }
}

/// The read of session settings after a transaction, in progress.
#[derive(Debug, Default)]
pub(super) struct Capture {
    /// Names read, in order.
    names: Vec<String>,
    /// Their values and whether a committed session-level SET set them.
    values: Vec<(Option<String>, bool)>,
    /// Whether the transaction committed (for its RESETs).
    committed: bool,
    /// A statement of the capture or reset failed: close, do not lend.
    pub failed: bool,
    /// ReadyForQuery messages still owed.
    owed: usize,
    /// The client's ReadyForQuery, sent once the capture is applied.
    ready: Option<bytes::Bytes>,
}

/// Reads each named setting's value and whether a session-level SET that
/// committed gave it, in order: for a real setting, its `source` says so;
/// a custom one (`app.x`, not in `pg_settings`) has no value at session
/// level on a pooled connection unless such a SET gave it one.
const CAPTURE_SQL: &[u8] = b"SELECT current_setting(t.n, true), \
coalesce(s.source = 'session', coalesce(current_setting(t.n, true), '') <> '') \
FROM unnest($1::text[]) WITH ORDINALITY AS t(n, i) LEFT JOIN pg_settings s ON s.name = lower(t.n) ORDER BY t.i\0\0\0";

/// Leaves nothing of the client's session on the connection. `RESET ALL`
/// leaves the role alone; reset it too.
const RESET_SQL: &str = "RESET ALL; RESET ROLE; RESET SESSION AUTHORIZATION";

impl Core {
    /// After a client's ReadyForQuery: if that ended the transaction with
    /// nothing else in flight, keeps what the client changed at session
    /// level (and resets the connection), then releases the connection.
    ///
    /// `ready`: the client's ReadyForQuery, held back until the settings
    /// are read, so that the ParameterStatus messages they are owed come
    /// before it, as PostgreSQL sends them.
    pub(super) fn after_ready(&mut self, ending: Ending, ready: Option<bytes::Bytes>) {
        let Link::Attached(a) = &mut self.link else {
            if let Some(r) = ready {
                self.to_client.extend_from_slice(&r);
            }
            return;
        };
        let over = a.queue.settled()
            && a.status == b'I'
            && matches!(a.hold, Hold::None)
            // Inside an extended batch (its own messages, then a simple
            // Query, no Sync yet) the client's next message belongs here.
            && self.phase != super::Phase::Batch;
        if !over || !a.fx.any() {
            if let Some(r) = &ready {
                self.to_client.extend_from_slice(r);
            }
        }
        if !over {
            return;
        }
        if !a.fx.any() {
            if !a.pinned {
                self.release();
            }
            return;
        }
        let mut names: Vec<String> = Vec::new();
        for op in &a.fx.ops {
            if let SessionOp::Set(n) | SessionOp::Reset(n) = op {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        let out = &mut self.to_server;
        let mut owed = 0;
        if !names.is_empty() {
            let literal = array_literal(names.iter().map(String::as_str));
            frontend::put_parse(out, b"", CAPTURE_SQL);
            a.queue
                .push(Expect::swallow(Kind::Parse(Default::default())));
            frontend::put_bind_text(out, b"", b"", &[literal.as_bytes()]);
            a.queue.push(Expect::swallow(Kind::Bind));
            frontend::put_execute(out, b"");
            frontend::put_sync(out);
            // Its rows, its completion and the Sync's ReadyForQuery.
            a.queue.push(Expect::swallow(Kind::Capture));
            a.unnamed_here = false;
            owed += 1;
        }
        if !a.pinned {
            frontend::put_query(out, RESET_SQL);
            a.queue.push(Expect::swallow(Kind::Query));
            owed += 1;
        }
        a.hold = Hold::Capture(Capture {
            names,
            values: Vec::new(),
            committed: ending.committed(),
            failed: false,
            owed,
            ready,
        });
        if owed == 0 {
            self.capture_done();
        }
    }

    /// One DataRow of the capture: (value, set by a committed SET).
    pub(super) fn captured_row(&mut self, body: &[u8]) {
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        let Hold::Capture(c) = &mut a.hold else {
            return;
        };
        match text_columns::<2>(body) {
            Some([value, session]) => c.values.push((value, session.as_deref() == Some("t"))),
            None => c.failed = true,
        }
    }

    /// A ReadyForQuery for the capture or the reset.
    pub(super) fn capture_done(&mut self) {
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        let Hold::Capture(c) = &mut a.hold else {
            return self.own_ready();
        };
        c.owed = c.owed.saturating_sub(1);
        if c.owed > 0 && !a.queue.is_empty() {
            return;
        }
        let Hold::Capture(mut c) = std::mem::replace(&mut a.hold, Hold::None) else {
            return;
        };
        let fx = std::mem::take(&mut a.fx);
        let ready = c.ready.take();
        if c.failed || c.values.len() != c.names.len() || a.status != b'I' {
            if let Some(r) = ready {
                self.to_client.extend_from_slice(&r);
            }
            // Not provably clean: close it rather than lend it.
            tracing::warn!(
                "could not read back or reset a connection after a session SET; closing it"
            );
            return self.drop_link();
        }
        let mut kept: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut ops: Vec<SessionOp> = Vec::new();
        if c.committed {
            // RESETs that committed come first; a SET that survived wins
            // over them (it was made after, or it would not have survived).
            ops.extend(
                fx.ops
                    .iter()
                    .filter(|op| !matches!(op, SessionOp::Set(_)))
                    .cloned(),
            );
        }
        for (name, (value, session)) in c.names.into_iter().zip(c.values) {
            if session {
                ops.push(SessionOp::Set(name.clone()));
                kept.insert(name, value);
            }
        }
        let owed = self.params.apply(&ops, &kept, &self.server_params);
        for (name, value) in owed {
            self.to_client
                .extend_from_slice(&crate::wire::backend::parameter_status(&name, &value));
        }
        if let Some(r) = ready {
            self.to_client.extend_from_slice(&r);
        }
        self.encode_settings();
        let pinned = matches!(&self.link, Link::Attached(a) if a.pinned);
        if !pinned {
            self.release();
        }
    }

    /// A ReadyForQuery for one of rowgate's own simple queries (the reset,
    /// the cleanup).
    pub(super) fn own_ready(&mut self) {
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        match &a.hold {
            Hold::Capture(_) => self.capture_done(),
            Hold::Cleanup if a.queue.settled() => {
                if a.status == b'I' {
                    a.hold = Hold::None;
                    if a.pinned {
                        // DISCARD ALL dropped rowgate's statements too.
                        a.conn.prepared.clear();
                        a.conn.identity_prepared = 0;
                        a.pinned = false;
                    }
                    self.release();
                } else {
                    self.drop_link();
                }
            }
            _ => {}
        }
    }

    /// The client is gone: roll back what it left open and give the
    /// connection back if the server then says it is idle, or close it.
    pub(super) fn start_cleanup(&mut self) {
        let Link::Attached(a) = &mut self.link else {
            return;
        };
        let busy = !a.queue.settled() || !matches!(a.hold, Hold::None);
        if busy {
            // Replies still owed to a client that will not read them, or
            // rowgate's own work cut short: closing makes the server roll
            // back whatever was open.
            return self.drop_link();
        }
        if a.status == b'I' && !a.pinned {
            return self.release();
        }
        let out = &mut self.to_server;
        if a.status != b'I' {
            frontend::put_query(out, "ROLLBACK");
            a.queue.push(Expect::swallow(Kind::Query));
        }
        if a.pinned {
            // Whatever the client kept here (temp tables, LISTEN, locks,
            // cursors, prepared statements, settings) goes before anyone
            // else gets the connection.
            frontend::put_query(out, "DISCARD ALL");
            a.queue.push(Expect::swallow(Kind::Query));
            frontend::put_query(out, "RESET ROLE");
            a.queue.push(Expect::swallow(Kind::Query));
        }
        a.hold = Hold::Cleanup;
    }
}

/// The first `N` columns of a DataRow as text (None for NULL).
fn text_columns<const N: usize>(body: &[u8]) -> Option<[Option<String>; N]> {
    let mut r = crate::wire::Reader::new(body, "DataRow");
    let count = r.bytes(2).ok()?;
    if (i16::from_be_bytes([count[0], count[1]]) as usize) < N {
        return None;
    }
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    for slot in out.iter_mut() {
        let len = r.i32().ok()?;
        if len >= 0 {
            let bytes = r.bytes(len as usize).ok()?;
            *slot = Some(String::from_utf8_lossy(bytes).into_owned());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollback_tag_or_a_late_error_means_not_committed() {
        let mut e = Ending::default();
        e.completed(b"COMMIT\0");
        assert!(e.committed());
        e.completed(b"ROLLBACK\0");
        assert!(!e.committed());
        let mut e = Ending::default();
        e.completed(b"SET\0");
        e.errored();
        assert!(!e.committed());
    }

    #[test]
    fn data_row_columns_are_read_as_text_or_null() {
        let mut body = Vec::new();
        body.extend_from_slice(&2i16.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        body.push(b'x');
        body.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(text_columns::<2>(&body), Some([Some("x".into()), None]));
        assert_eq!(text_columns::<2>(&body[..3]), None);
    }
}
