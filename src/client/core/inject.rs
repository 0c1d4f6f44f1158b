//! The identity statement: what goes upstream in front of the first
//! statement of each transaction that may read data.

use super::expect::{Expect, Kind, ParseNote};
use super::{Attachment, Core, IdentityState, Link, Txn};
use crate::guard::{ModeSettings, TxnEffect, TxnModes};
use crate::wire::frontend;
use bytes::BytesMut;

/// The empty statement that restarts PostgreSQL 18's implicit transaction
/// (see [`Core::trailing_sync`]); named, so the client's unnamed statement
/// stays.
const RESTART_STATEMENT: &[u8] = b"rowgate_restart";

/// Parse payload of an empty query with no parameter types.
const EMPTY_SPEC: &[u8] = b"\0\0\0";

/// The statement (and portal) that sets a transaction's modes from the
/// client's session characteristics.
const MODES_STATEMENT: &[u8] = b"rowgate_modes";

/// What to inject before a statement, given where the transaction stands.
#[derive(Debug, PartialEq, Eq)]
enum Inject {
    /// Nothing.
    No,
    /// The identity, after the client's session characteristics (a new
    /// transaction: `explicit` are the modes its own BEGIN set).
    WithModes(TxnModes),
    /// The identity alone (the transaction may already have run queries).
    IdentityOnly,
}

/// The transaction state after a statement of `effect`, and what goes in
/// front of it. `sure`: nothing that could fail is in flight ahead of it
/// in its batch.
fn step(txn: Txn, effect: TxnEffect, sure: bool) -> (Txn, Inject) {
    use IdentityState::*;
    let open = |block, identity, sure| Txn::Open {
        block,
        identity,
        sure,
    };
    match (effect, txn) {
        (TxnEffect::Plain, Txn::Idle) => (
            open(false, Set, true),
            Inject::WithModes(TxnModes::default()),
        ),
        (
            TxnEffect::Plain,
            Txn::Open {
                block,
                identity,
                sure: was,
            },
        ) => match identity {
            Pending(modes) => (open(block, Set, was), Inject::WithModes(modes)),
            Reassert => (open(block, Set, was), Inject::IdentityOnly),
            Set => (txn, Inject::No),
        },
        (TxnEffect::Plain, Txn::Unknown { kept: true }) => (open(true, Set, sure), Inject::No),
        (TxnEffect::Plain, Txn::Unknown { kept: false }) => {
            (open(true, Set, sure), Inject::IdentityOnly)
        }
        // Never in a failed transaction: the injected statement would fail
        // and make the server skip the client's ROLLBACK.
        (TxnEffect::Plain, Txn::Failed) => (txn, Inject::No),
        (TxnEffect::Starts(modes), Txn::Idle) => (open(true, Pending(modes), sure), Inject::No),
        (
            TxnEffect::Starts(modes),
            Txn::Open {
                identity: Pending(before),
                sure: was,
                ..
            },
        ) => (
            open(true, Pending(before.union(modes)), was && sure),
            Inject::No,
        ),
        (TxnEffect::Starts(_), _) => (txn, Inject::No),
        // Whatever follows in this batch runs in a new transaction.
        (TxnEffect::Ends, _) => (Txn::Idle, Inject::No),
        (TxnEffect::Savepoint | TxnEffect::Outside, _) => (txn, Inject::No),
    }
}

impl Core {
    /// Encodes what every transaction sets: the client's parameters, then
    /// the identity (so it always wins), then the seal's name if on. Called
    /// when they change, not per transaction.
    pub(super) fn encode_settings(&mut self) {
        self.encoded = super::encoded::Encoded::new(
            self.params.settings(),
            self.database.setting_names(),
            &self.identity.values,
            self.shared.sealer.is_some(),
        );
    }

    /// Before a client statement with `effect` goes upstream: sets the
    /// identity first if the transaction lacks it and the statement may
    /// read data, and notes where the statement leaves the transaction.
    ///
    /// `leading`: the modes of a `BEGIN` that opens the client's query
    /// string, set before the identity statement takes its snapshot.
    /// Returns whether it put the identity in.
    pub(super) fn before_statement(
        &mut self,
        effect: TxnEffect,
        leading: Option<ModeSettings>,
    ) -> bool {
        let Link::Attached(a) = &mut self.link else {
            return false;
        };
        let (txn, inject) = step(a.txn, effect, !a.queue.unsynced_pending());
        a.txn = txn;
        if effect == TxnEffect::Ends {
            // What follows in this batch is a new transaction, which must
            // not inherit an in-band user.
            self.inband_transaction_over();
        }
        let Link::Attached(a) = &mut self.link else {
            return false;
        };
        let out = &mut self.to_server;
        match inject {
            Inject::No => return false,
            Inject::WithModes(explicit) => {
                let modes = self.params.characteristics(explicit);
                if let Some(sql) = modes.overlay(leading.unwrap_or_default()).sql() {
                    // Before the identity statement, which takes the snapshot
                    // after which no mode may change. Only clients that
                    // changed their session characteristics pay for it.
                    let spec = frontend::parse_spec(sql.as_bytes());
                    prepare_own(a, out, MODES_STATEMENT, &spec, ParseNote::default());
                    run_own(a, out, MODES_STATEMENT, &[]);
                }
            }
            Inject::IdentityOnly => {}
        }
        let bit = self.encoded.prepared_bit();
        if bit.is_none_or(|b| a.conn.identity_prepared & b == 0) {
            let note = ParseNote {
                identity: true,
                ..Default::default()
            };
            let (name, spec) = self.encoded.statement();
            prepare_own(a, out, name, spec, note);
            a.conn.identity_prepared |= bit.unwrap_or(0);
        }
        let pid = a.conn.pid;
        if !self.encoded.has_bind_for(pid) {
            let seal = self.shared.sealer.as_ref().map(|sealer| {
                let names = self.database.auth().setting_names();
                sealer.seal(pid, names, &self.identity.values)
            });
            self.encoded.build_bind(pid, seal.as_deref());
        }
        out.extend_from_slice(self.encoded.bind());
        a.queue.push(Expect::swallow(Kind::Bind));
        execute_own(a, out, self.encoded.portal());
        crate::metrics::incr("rowgate_transactions_total", "");
        true
    }

    /// After a simple Query or FunctionCall that rowgate's statement went
    /// in front of: a Sync, so that if that statement fails the client
    /// still gets the ReadyForQuery its Query is owed (see
    /// [`Kind::TrailingSync`]).
    ///
    /// On PostgreSQL 18, a single-statement Query (or a FunctionCall) after
    /// a completed Execute in the same unsynced batch leaves the server's
    /// implicit transaction in a state the Sync does not commit: the client
    /// is told its write succeeded, the write is rolled back by the next
    /// message, which fails with `XX000 StartTransactionCommand: unexpected
    /// state STARTED` (a PostgreSQL bug; see the README's known limits).
    /// An empty Parse before the Sync starts the transaction command again,
    /// so the Sync commits. Not behind a COPY FROM STDIN (`may_copy_in`):
    /// the server would read the Parse as part of the copy stream and fail
    /// it; [`Core::restart_after_copy`] puts it after the client's CopyDone.
    pub(super) fn trailing_sync(&mut self, may_copy_in: bool) {
        if let Link::Attached(a) = &mut self.link {
            a.queue.trail_last();
            // Only an implicit transaction goes wrong; a client's block is
            // committed by its COMMIT.
            let restart = self.restart_implicit && matches!(a.txn, Txn::Open { block: false, .. });
            a.copy_restart = if restart && may_copy_in {
                super::CopyRestart::Eligible
            } else {
                super::CopyRestart::No
            };
            own_sync(a, &mut self.to_server, restart && !may_copy_in);
        }
    }

    /// PostgreSQL 18, after the CopyDone/CopyFail of a simple Query's COPY
    /// FROM STDIN that rowgate's statement went in front of: the commit
    /// [`Core::trailing_sync`] could not put behind the Query (the server
    /// read it as copy data), so the client's ReadyForQuery is again the
    /// one of rowgate's Sync.
    pub(super) fn restart_after_copy(&mut self) {
        if let Link::Attached(a) = &mut self.link {
            a.queue.trail_front();
            own_sync(a, &mut self.to_server, true);
        }
    }
}

/// rowgate's trailing Sync, the empty Parse that restarts PostgreSQL 18's
/// implicit transaction first when `restart`.
fn own_sync(a: &mut Attachment, out: &mut BytesMut, restart: bool) {
    if restart {
        prepare_own(a, out, RESTART_STATEMENT, EMPTY_SPEC, ParseNote::default());
    }
    frontend::put_sync(out);
    a.queue.push(Expect::forward(Kind::TrailingSync));
}

/// Queues the Parse of one of rowgate's own statements, its replies
/// swallowed. Closed first: a client may have left a statement of that
/// name.
pub(super) fn prepare_own(
    a: &mut Attachment,
    out: &mut BytesMut,
    name: &[u8],
    spec: &[u8],
    note: ParseNote,
) {
    frontend::put_target(out, b'C', b'S', name);
    a.queue.push(Expect::swallow(Kind::Close));
    frontend::put_parse(out, name, spec);
    a.queue.push(Expect::swallow(Kind::Parse(note)));
}

/// Queues a run of rowgate's own statement `name` with text `params`, its
/// replies swallowed. On a portal of its own, closed at once: the client's
/// unnamed portal may be bound and not yet executed.
pub(super) fn run_own(a: &mut Attachment, out: &mut BytesMut, name: &[u8], params: &[&[u8]]) {
    frontend::put_bind_text(out, name, name, params);
    a.queue.push(Expect::swallow(Kind::Bind));
    execute_own(a, out, name);
}

/// Queues Execute of rowgate's own bound `portal` and its Close, replies
/// swallowed.
fn execute_own(a: &mut Attachment, out: &mut BytesMut, portal: &[u8]) {
    frontend::put_execute(out, portal);
    a.queue.push(Expect::swallow(Kind::Execute));
    frontend::put_target(out, b'C', b'P', portal);
    a.queue.push(Expect::swallow(Kind::Close));
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: TxnModes = TxnModes {
        isolation: false,
        access: false,
        deferrable: false,
    };

    #[test]
    fn a_new_transaction_gets_identity_with_modes_once() {
        let (t, i) = step(Txn::Idle, TxnEffect::Plain, true);
        assert_eq!(i, Inject::WithModes(NONE));
        let (_, i) = step(t, TxnEffect::Plain, true);
        assert_eq!(i, Inject::No);
    }

    #[test]
    fn begin_defers_identity_to_the_next_statement() {
        let (t, i) = step(Txn::Idle, TxnEffect::Starts(NONE), true);
        assert_eq!(i, Inject::No);
        assert!(matches!(t, Txn::Open { block: true, .. }));
        let (t, i) = step(t, TxnEffect::Plain, true);
        assert_eq!(i, Inject::WithModes(NONE));
        let (t, _) = step(t, TxnEffect::Ends, true);
        assert_eq!(t, Txn::Idle);
    }

    #[test]
    fn nothing_goes_in_front_of_savepoint_recovery_or_in_a_failed_block() {
        assert_eq!(step(Txn::Failed, TxnEffect::Plain, true).1, Inject::No);
        let reassert = Txn::Open {
            block: true,
            identity: IdentityState::Reassert,
            sure: true,
        };
        assert_eq!(step(reassert, TxnEffect::Savepoint, true).1, Inject::No);
        assert_eq!(
            step(reassert, TxnEffect::Plain, true).1,
            Inject::IdentityOnly
        );
        assert_eq!(step(Txn::Idle, TxnEffect::Outside, true).1, Inject::No);
    }
}
