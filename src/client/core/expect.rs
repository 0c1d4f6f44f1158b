//! What rowgate expects back from the upstream server, in order.
//!
//! The server answers protocol messages strictly in order, so a queue with
//! one entry per message that produces a reply tells rowgate, for every
//! server message, whether it belongs to the client (forward) or to
//! something rowgate slipped in (swallow): the identity statement, a
//! re-prepare of a client's statement on a new connection, the capture of
//! session settings after a transaction. Entries can also carry a reply
//! rowgate makes itself (`Emit`), released in its turn.
//!
//! The queue is the proof that a connection is in sync: it may go back to
//! the pool only when the queue is empty and the last reply was
//! ReadyForQuery `I`.

use super::statements::Statement;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;

/// One expected reply.
#[derive(Debug)]
pub struct Expect {
    /// Which message it answers.
    pub kind: Kind,
    /// Whether the client must not see the reply (rowgate sent the message).
    pub swallow: bool,
    /// How to rewrite the server's ErrorResponse to this message, if it
    /// fails, before the client sees it.
    pub on_error: Option<ErrorRewrite>,
    /// The message may open a transaction block: if the server skips it
    /// (after an earlier error), rowgate's idea of the transaction is void.
    pub opens_block: bool,
    /// A simple Query or FunctionCall with rowgate's Sync behind it
    /// ([`Kind::TrailingSync`]): that Sync's ReadyForQuery is the client's,
    /// not this one's.
    pub trailed: bool,
}

/// A rewrite of the server's ErrorResponse.
#[derive(Debug)]
pub enum ErrorRewrite {
    /// Send this ErrorResponse instead (a statement the guard refused was
    /// replaced by one that fails on purpose).
    Replace(Bytes),
    /// The message names rowgate's upstream statement (`from`); name the
    /// client's (`to`) instead, keeping every other field as PostgreSQL
    /// sent it.
    Rename {
        /// Upstream statement name.
        from: Arc<str>,
        /// Client's statement name.
        to: Box<[u8]>,
    },
}

impl ErrorRewrite {
    /// The ErrorResponse frame the client gets for the server's `frame`.
    pub fn apply(&self, frame: &[u8]) -> Bytes {
        match self {
            ErrorRewrite::Replace(b) => b.clone(),
            ErrorRewrite::Rename { from, to } => crate::wire::backend::rename_in_error(
                frame,
                &format!("\"{from}\""),
                &format!("\"{}\"", String::from_utf8_lossy(to)),
            ),
        }
    }
}

/// The message an [`Expect`] answers.
#[derive(Debug)]
pub enum Kind {
    /// Parse → ParseComplete.
    Parse(ParseNote),
    /// Bind → BindComplete.
    Bind,
    /// Describe → [ParameterDescription] RowDescription/NoData.
    Describe(Shape),
    /// Execute → rows, then CommandComplete/EmptyQueryResponse/PortalSuspended.
    Execute,
    /// Close → CloseComplete.
    Close,
    /// Sync → ReadyForQuery.
    Sync,
    /// A Sync rowgate sends right after a simple Query (or FunctionCall)
    /// that it put its own statement in front of. Its ReadyForQuery is the
    /// one the client gets for its Query: it comes whether or not the
    /// server skipped the Query (rowgate's statement failing ahead of it),
    /// and its status is the transaction's after the Query on every
    /// version (PostgreSQL 18 keeps the implicit transaction of unsynced
    /// extended messages open through a following Query until a Sync).
    TrailingSync,
    /// Query → any replies, then ReadyForQuery.
    Query,
    /// FunctionCall → FunctionCallResponse, ReadyForQuery.
    FunctionCall,
    /// rowgate's read of session settings after a transaction: one DataRow
    /// per name, then ReadyForQuery.
    Capture,
    /// A reply rowgate makes itself, sent when everything before it is done.
    Emit(Bytes),
    /// Where the client's CopyDone or CopyFail went: no reply of its own.
    /// The Syncs a server ignores during COPY FROM STDIN are those before
    /// this mark.
    CopyEnd,
}

impl Kind {
    /// Whether ReadyForQuery ends this entry.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Kind::Sync | Kind::TrailingSync | Kind::Query | Kind::FunctionCall | Kind::Capture
        )
    }
}

/// What a Describe's RowDescription/NoData is for, besides its reader.
#[derive(Debug)]
pub enum Shape {
    /// Nothing more.
    Pass,
    /// The client describes its statement: remember the result shape it
    /// learns, if it is the first.
    Record(Arc<Statement>),
    /// rowgate prepared the statement again on another connection: does
    /// the result still have the shape the client learnt?
    Check(Arc<Statement>),
}

/// What to undo if a Parse fails or is skipped.
#[derive(Debug, Default)]
pub struct ParseNote {
    /// Upstream statement name rowgate recorded as prepared.
    pub upstream: Option<Arc<str>>,
    /// The client's name for it.
    pub client: Option<Box<[u8]>>,
    /// This is rowgate's identity statement.
    pub identity: bool,
}

impl Expect {
    /// An entry whose reply goes to the client.
    pub fn forward(kind: Kind) -> Self {
        Expect {
            kind,
            swallow: false,
            on_error: None,
            opens_block: false,
            trailed: false,
        }
    }
    /// An entry whose reply rowgate swallows.
    pub fn swallow(kind: Kind) -> Self {
        Expect {
            kind,
            swallow: true,
            on_error: None,
            opens_block: false,
            trailed: false,
        }
    }
    /// The same entry, for a message that may open a transaction block.
    pub fn opening(mut self, opens: bool) -> Self {
        self.opens_block = opens;
        self
    }
    /// An entry for a refused statement: the server's error is replaced.
    pub fn refused(kind: Kind, error: Bytes) -> Self {
        Expect {
            kind,
            swallow: false,
            on_error: Some(ErrorRewrite::Replace(error)),
            opens_block: false,
            trailed: false,
        }
    }
    /// An entry whose error, if any, names `from` where the client knows `to`.
    pub fn renamed(kind: Kind, from: &Arc<str>, to: &[u8]) -> Self {
        Expect {
            kind,
            swallow: false,
            on_error: Some(ErrorRewrite::Rename {
                from: from.clone(),
                to: to.into(),
            }),
            opens_block: false,
            trailed: false,
        }
    }
}

/// The replies owed by the server, oldest first. Its buffer is reused from
/// transaction to transaction.
#[derive(Debug, Default)]
pub struct Queue {
    entries: VecDeque<Expect>,
    /// The last message sent upstream was not a Sync, Query or
    /// FunctionCall: the server is inside a batch (an implicit transaction
    /// may be open, or it skips to the next Sync), whatever it answered.
    open: bool,
}

impl Queue {
    /// Nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// The oldest owed reply.
    pub fn front(&self) -> Option<&Expect> {
        self.entries.front()
    }
    /// The kind of the oldest owed reply.
    pub fn front_kind(&self) -> Option<&Kind> {
        self.entries.front().map(|e| &e.kind)
    }
    /// The kind of the newest owed reply.
    pub fn back_kind(&self) -> Option<&Kind> {
        self.entries.back().map(|e| &e.kind)
    }

    /// Whether some owed entry is of a kind `f` accepts.
    pub fn holds(&self, f: impl Fn(&Kind) -> bool) -> bool {
        self.entries.iter().any(|e| f(&e.kind))
    }

    /// Marks the oldest entry as answered for by a trailing Sync.
    pub fn trail_front(&mut self) {
        if let Some(e) = self.entries.front_mut() {
            e.trailed = true;
        }
    }

    /// Marks the newest entry as answered for by a trailing Sync.
    pub fn trail_last(&mut self) {
        if let Some(e) = self.entries.back_mut() {
            e.trailed = true;
        }
    }
    /// Adds an owed reply.
    pub fn push(&mut self, e: Expect) {
        if !matches!(e.kind, Kind::Emit(_) | Kind::CopyEnd) {
            self.open = !e.kind.is_terminal();
        }
        self.entries.push_back(e);
    }
    /// Whether every reply is in and the last message sent ended a batch:
    /// with ReadyForQuery `I` last, the connection is provably clean.
    pub fn settled(&self) -> bool {
        self.entries.is_empty() && !self.open
    }
    /// Empties the queue for another transaction, keeping its buffer.
    pub fn reset(&mut self) {
        self.entries.clear();
        self.open = false;
    }
    /// Takes the oldest owed reply.
    pub fn pop(&mut self) -> Option<Expect> {
        self.entries.pop_front()
    }
    /// How many ReadyForQuery messages are owed.
    #[cfg(test)]
    pub fn terminals(&self) -> usize {
        self.entries.iter().filter(|e| e.kind.is_terminal()).count()
    }
    /// Whether an extended-protocol message sent since the last Sync is
    /// still unanswered and so could still fail, making the server skip
    /// everything after it up to the next Sync (simple Queries included;
    /// a simple Query's own error skips nothing).
    pub fn unsynced_pending(&self) -> bool {
        self.entries
            .iter()
            .rev()
            .take_while(|e| !matches!(e.kind, Kind::Sync | Kind::TrailingSync | Kind::Capture))
            .any(|e| {
                !matches!(
                    e.kind,
                    Kind::Emit(_) | Kind::CopyEnd | Kind::Query | Kind::FunctionCall
                )
            })
    }
    /// Whether a ReadyForQuery for the client's batch is owed (some batch
    /// of the client's is still running upstream).
    pub fn batch_in_flight(&self) -> bool {
        self.entries.iter().any(|e| e.kind.is_terminal())
    }
    /// After an ErrorResponse in the extended protocol the server skips
    /// every message up to the next Sync: strikes the replies those
    /// messages would have produced (up to, not including, the first
    /// terminal entry that a Sync answers), handing each to `undo`.
    /// Returns whether a simple Query or FunctionCall was struck (its
    /// ReadyForQuery will not come) and whether a Sync remains to end the
    /// skipping.
    pub fn strike_to_sync(&mut self, mut undo: impl FnMut(Expect)) -> Struck {
        let mut struck = Struck::default();
        while let Some(front) = self.entries.front() {
            if matches!(front.kind, Kind::Sync | Kind::TrailingSync | Kind::Capture) {
                struck.sync_follows = true;
                break;
            }
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            if matches!(e.kind, Kind::Query | Kind::FunctionCall) {
                struck.terminal = true;
            }
            undo(e);
        }
        if !struck.sync_follows {
            // The server skips until a Sync it has not been sent yet.
            self.open = true;
        }
        struck
    }
    /// Moves every Sync after the front out of the queue (the server
    /// entered COPY FROM STDIN and reads them as part of the copy stream).
    /// Returns whether any was removed.
    /// rowgate's own Syncs behind a simple Query's COPY are dropped too
    /// (they are ignored the same way). Returns whether a Sync of the
    /// client's was removed.
    pub fn drop_syncs_after_front(&mut self) -> bool {
        let mut client_syncs = false;
        let mut own_syncs = false;
        let mut copying = true;
        let mut first = true;
        self.entries.retain(|e| {
            if matches!(e.kind, Kind::CopyEnd) {
                copying = false;
            }
            let keep = first || !copying || !matches!(e.kind, Kind::Sync | Kind::TrailingSync);
            client_syncs |= !keep && matches!(e.kind, Kind::Sync);
            own_syncs |= !keep && matches!(e.kind, Kind::TrailingSync);
            first = false;
            keep
        });
        if own_syncs {
            // The COPY's own ReadyForQuery is the client's now.
            if let Some(front) = self.entries.front_mut() {
                front.trailed = false;
            }
        }
        client_syncs
    }
}

/// What [`Queue::strike_to_sync`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Struck {
    /// A simple Query or FunctionCall was struck.
    pub terminal: bool,
    /// A Sync's reply is still owed, which ends the server's skipping.
    pub sync_follows: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strike_stops_at_the_sync_and_reports_struck_queries() {
        let mut q = Queue::default();
        q.push(Expect::swallow(Kind::Bind));
        q.push(Expect::swallow(Kind::Execute));
        q.push(Expect::forward(Kind::Query));
        q.push(Expect::forward(Kind::Sync));
        q.push(Expect::forward(Kind::Query));
        let mut undone = 0;
        let s = q.strike_to_sync(|_| undone += 1);
        assert_eq!(undone, 3);
        assert!(s.terminal && s.sync_follows);
        assert!(matches!(q.front_kind(), Some(Kind::Sync)));
        assert_eq!(q.terminals(), 2);
    }

    #[test]
    fn strike_without_a_sync_empties_the_queue() {
        let mut q = Queue::default();
        q.push(Expect::forward(Kind::Bind));
        let s = q.strike_to_sync(|_| {});
        assert_eq!(s, Struck::default());
        assert!(q.is_empty());
    }

    #[test]
    fn syncs_behind_a_copy_are_dropped_but_not_the_front() {
        let mut q = Queue::default();
        q.push(Expect::forward(Kind::Execute));
        q.push(Expect::forward(Kind::Sync));
        q.push(Expect::forward(Kind::Sync));
        assert!(q.drop_syncs_after_front());
        assert_eq!(q.terminals(), 0);
        let mut q = Queue::default();
        q.push(Expect::forward(Kind::Sync));
        assert!(!q.drop_syncs_after_front());
        // Syncs after the client's CopyDone are answered.
        let mut q = Queue::default();
        q.push(Expect::forward(Kind::Query));
        q.push(Expect::swallow(Kind::TrailingSync));
        q.push(Expect::forward(Kind::CopyEnd));
        q.push(Expect::forward(Kind::Query));
        q.push(Expect::swallow(Kind::TrailingSync));
        assert!(!q.drop_syncs_after_front());
        assert_eq!(q.terminals(), 3);
    }
}
