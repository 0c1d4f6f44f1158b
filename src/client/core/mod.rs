//! The session core: one authenticated client's transaction-pooling state
//! machine, without sockets, timers or tokio (the sans-IO style of rustls
//! and quinn-proto).
//!
//! It is fed whole frames ([`Core::on_client`], [`Core::on_server`]) and
//! the outcome of what it asked for ([`Core::attach`], [`Core::attach_failed`]),
//! and leaves bytes to send in two buffers ([`Core::to_client`],
//! [`Core::to_server`]) and [`Action`]s for the driver (borrow a connection,
//! give it back, close it). The async driver (`client::driver`) only moves
//! bytes and runs timers, so everything that decides whether a connection is
//! clean is here, unit-tested and fuzzed without a network.
//!
//! Between transactions the client holds no upstream connection. The
//! first message of a batch borrows one, and rowgate puts the identity
//! statement (an unsynced Bind/Execute of `set_config(.., true)`) in front of
//! the client's own messages, so it runs in the same transaction at no extra
//! round trip. Batches may follow each other without waiting (pipelining):
//! each transaction gets its identity from what rowgate knows it sent. A
//! connection goes back to the pool only when every reply to what was sent
//! on it has come back and the last was ReadyForQuery `I`.

mod client_in;
mod encoded;
mod expect;
mod inband;
mod inject;
mod server_in;
mod statements;
mod txn_end;

#[cfg(test)]
mod tests;

use super::params::ClientParams;
use super::Shared;
use crate::auth::{Identity, OnExpiry};
use crate::guard::SessionEffects;
use crate::upstream::conn::PreparedSet;
use crate::upstream::pool::ServerParams;
use crate::upstream::Database;
use crate::wire::backend;
use crate::wire::Frame;
use bytes::BytesMut;
use expect::Queue;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use statements::Statement;

/// What the core needs to remember of the upstream connection it is lent:
/// moved in at [`Core::attach`] and handed back with [`Action::Release`].
#[derive(Debug, Default)]
pub struct ConnState {
    /// The backend's process id (the seal covers it; notifications name it).
    pub pid: i32,
    /// Statements rowgate prepared on this connection.
    pub prepared: PreparedSet,
    /// Which arities of rowgate's identity statement are prepared there
    /// (bit n: the one for n client settings).
    pub identity_prepared: u64,
}

/// What the driver must do for the core.
#[derive(Debug)]
pub enum Action {
    /// Borrow a pooled connection and call [`Core::attach`] (or
    /// [`Core::attach_failed`]).
    Acquire,
    /// The connection is provably clean (every reply in, ReadyForQuery `I`
    /// last): return it to the pool with this state.
    Release(ConnState),
    /// Close the connection: rowgate cannot prove it clean.
    Close,
    /// Verify this in-band token for the session's service and call
    /// [`Core::verified`].
    Verify(String),
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Terminate, or the client closed its socket.
    ClientGone,
    /// The client broke the protocol.
    Protocol(String),
    /// The upstream connection failed or went out of sync mid-transaction.
    UpstreamLost(String),
    /// Closed for idleness.
    IdleTimeout,
    /// Closed for sitting in an open transaction.
    IdleInTransaction,
    /// rowgate waited too long for the server to answer its own statement.
    OwnTimeout,
    /// Closed between transactions by a shutdown or an admin `KILL`; the
    /// message says which.
    Stopped(&'static str),
}

impl End {
    /// The FATAL error the client gets, if any (SQLSTATE, message).
    pub fn fatal(&self) -> Option<(&'static str, String)> {
        Some(match self {
            End::ClientGone => return None,
            End::IdleTimeout => ("57P05", "terminating connection due to idle timeout (rowgate [listen] client_idle_timeout)".into()),
            End::IdleInTransaction => ("25P03", "terminating connection due to idle-in-transaction timeout (rowgate [listen] idle_in_transaction_timeout); the transaction was rolled back".into()),
            End::Protocol(m) => ("08P01", format!("protocol violation: {m}")),
            End::UpstreamLost(m) => ("08006", format!("rowgate lost the upstream connection during a transaction: {m}")),
            End::OwnTimeout => ("08006", "rowgate closed the upstream connection: the server did not answer in time; the transaction was rolled back".into()),
            End::Stopped(m) => ("57P01", (*m).into()),
        })
    }
}

/// Where the client is in its message flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Between batches: the next Query, Parse, Bind, ... starts a new one.
    Ready,
    /// Inside an extended-protocol batch, until its Sync (simple Queries
    /// in the middle of one included).
    Batch,
    /// Discarding the client's messages until Sync, as a server does after
    /// an error. `forward_sync`: the server is skipping too (the error was
    /// its own) and answers that Sync; otherwise rowgate does.
    Skip { forward_sync: bool },
}

/// The upstream connection, if the client holds one.
enum Link {
    /// No connection: no transaction is open.
    Detached,
    /// The driver is borrowing one; this frame waits for it.
    Acquiring(Frame),
    /// A pooled connection, lent for the current transaction(s).
    Attached(Box<Attachment>),
}

/// Where the upstream transaction stands, as far as what rowgate sent and
/// the server answered tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Txn {
    /// No transaction is open: the next statement that reads data starts
    /// one and gets the identity first.
    Idle,
    /// A transaction is open: a block (`BEGIN`) or the implicit one of the
    /// current batch. `sure`: nothing that could fail was in flight ahead of
    /// the statement that opened it (a failure makes the server skip what
    /// follows up to the next Sync, that statement included).
    Open {
        block: bool,
        identity: IdentityState,
        sure: bool,
    },
    /// The server reported the block failed: nothing runs until ROLLBACK.
    Failed,
    /// A multi-statement query may have left a block open or not; the
    /// server's ReadyForQuery will say. `kept`: the query ended no
    /// transaction, so the identity set before it is still in force in
    /// whatever it left open.
    Unknown { kept: bool },
}

/// Whether the identity is set in the open transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdentityState {
    /// Not yet: the next statement that may read data gets it first. Holds
    /// the transaction modes the client's own BEGIN or SET TRANSACTION set
    /// so far, which its session characteristics must not override.
    Pending(crate::guard::TxnModes),
    /// Possibly set, possibly not (batches ran before rowgate saw their
    /// outcome): set it again, without transaction modes (which only the
    /// first statement of a transaction may set).
    Reassert,
    /// Set for the rest of this transaction.
    Set,
}

/// Whether the server is reading a COPY FROM STDIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Copy {
    /// No.
    Off,
    /// Yes: it ignores Sync and Flush until CopyDone/CopyFail.
    In,
}

/// Where the commit behind a simple COPY FROM STDIN stands (PostgreSQL 18,
/// see [`Core::restart_after_copy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CopyRestart {
    /// Not needed.
    No,
    /// The last simple Query may start a COPY that needs it.
    Eligible,
    /// The server is in that COPY: it goes behind the client's
    /// CopyDone/CopyFail.
    Armed,
}

/// Work rowgate does on the connection for its own purposes, during which
/// the client's next messages wait.
enum Hold {
    /// None.
    None,
    /// A statement prepared again on this connection is being described, to
    /// compare its result shape with what the client knows; its Bind waits.
    ShapeCheck { bind: Frame, stmt: Arc<Statement> },
    /// The session settings a finished transaction left are being read, and
    /// the connection reset.
    Capture(txn_end::Capture),
    /// The client is gone; rowgate rolls back what it left open, then
    /// returns the connection (or closes it).
    Cleanup,
    /// An in-band token is being verified; this message waits for it.
    Verify(Frame),
}

/// A lent connection and what is in flight on it.
struct Attachment {
    conn: ConnState,
    /// Replies still owed by the server, oldest first.
    queue: Queue,
    txn: Txn,
    /// Last ReadyForQuery status (`I`, `T`, `E`).
    status: u8,
    /// Whether the client's unnamed statement exists on this connection.
    unnamed_here: bool,
    /// Session-level setting changes the client made in the open
    /// transaction.
    fx: SessionEffects,
    /// How the transaction that is ending went, for RESETs in it.
    ending: txn_end::Ending,
    /// The client created session state under `[session_state] ... =
    /// "pin"`: it keeps this connection until it disconnects.
    pinned: bool,
    copy: Copy,
    /// PostgreSQL 18, a simple Query that may be a COPY FROM STDIN behind
    /// rowgate's statement in an implicit transaction: its trailing Sync is
    /// read as part of the copy stream, so the commit goes after the
    /// client's CopyDone/CopyFail (see [`Core::restart_after_copy`]).
    copy_restart: CopyRestart,
    hold: Hold,
}

/// One client session's protocol state.
pub struct Core {
    shared: Arc<Shared>,
    /// The database the client connected to: its pool's settings, its
    /// token policy, its identity statement.
    database: Arc<Database>,
    /// The BackendKeyData rowgate issued to the client.
    key: (i32, i32),
    identity: Identity,
    params: ClientParams,
    server_params: ServerParams,
    encoded: encoded::Encoded,
    statements: statements::Statements,
    /// Service logins' in-band identity.
    inband: inband::InbandSession,
    phase: Phase,
    link: Link,
    /// The reply queue of the last attachment, emptied: its buffer is
    /// reused, so a transaction allocates no queue of its own.
    spare_queue: Queue,
    to_client: BytesMut,
    to_server: BytesMut,
    actions: VecDeque<Action>,
    /// Set when the session is over: the core then only winds the link down.
    end: Option<End>,
    /// The server is PostgreSQL 18 or later, whose implicit transaction
    /// needs restarting after a simple query behind rowgate's statement
    /// (see [`Core::trailing_sync`]).
    restart_implicit: bool,
}

/// The major version in a `server_version` ParameterStatus (`18.4`,
/// `16.2 (Debian ...)`, `18beta1`); 0 when unreadable.
fn major_version(server_params: &ServerParams) -> u32 {
    server_params
        .iter()
        .find(|(k, _)| k == "server_version")
        .and_then(|(_, v)| {
            let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(0)
}

impl Core {
    /// A session for an authenticated client; the greeting's last part
    /// (BackendKeyData, ReadyForQuery) is already in [`Core::to_client`].
    pub fn new(
        shared: Arc<Shared>,
        database: Arc<Database>,
        key: (i32, i32),
        identity: Identity,
        login: crate::client::Login,
        params: ClientParams,
        server_params: ServerParams,
    ) -> Core {
        let inband = inband::InbandSession::new(login, &identity);
        let restart_implicit = major_version(&server_params) >= 18;
        let mut core = Core {
            shared,
            database,
            key,
            identity,
            inband,
            params,
            server_params,
            encoded: encoded::Encoded::default(),
            statements: Default::default(),
            phase: Phase::Ready,
            link: Link::Detached,
            spare_queue: Queue::default(),
            to_client: BytesMut::new(),
            to_server: BytesMut::new(),
            actions: VecDeque::new(),
            end: None,
            restart_implicit,
        };
        core.encode_settings();
        core.to_client
            .extend_from_slice(&backend::backend_key_data(key.0, key.1));
        core.to_client
            .extend_from_slice(&backend::ready_for_query(b'I'));
        core
    }

    /// Bytes for the client; the driver writes and clears them.
    pub fn client_out(&mut self) -> &mut BytesMut {
        &mut self.to_client
    }

    /// Bytes for the upstream connection; the driver writes and clears them.
    pub fn server_out(&mut self) -> &mut BytesMut {
        &mut self.to_server
    }

    /// The next thing the driver must do.
    pub fn next_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Why the session ended, once it has.
    pub fn ended(&self) -> Option<&End> {
        self.end.as_ref()
    }

    /// Whether the session is over and holds no connection: the driver
    /// may stop.
    pub fn finished(&self) -> bool {
        self.end.is_some() && matches!(self.link, Link::Detached)
    }

    /// Whether the core takes the client's next message now. It does not
    /// while it waits for a connection, for the server's answer to its own
    /// statements, or (to keep the client's session settings exact) while a
    /// transaction that changed them is still running upstream.
    pub fn wants_client(&self) -> bool {
        if self.end.is_some() {
            return false;
        }
        match &self.link {
            Link::Detached => true,
            Link::Acquiring(_) => false,
            Link::Attached(a) => {
                if !matches!(a.hold, Hold::None) {
                    return false;
                }
                // A new batch after one that changed session settings: its
                // outcome is read back first.
                let between = self.phase == Phase::Ready && a.queue.batch_in_flight();
                // Anything after a multi-statement query waits for its
                // ReadyForQuery, which says where it left the transaction.
                let unknown = matches!(a.txn, Txn::Unknown { .. }) && a.queue.batch_in_flight();
                // PostgreSQL 18: what follows a simple COPY's CopyDone waits
                // until the server says it is in that COPY, so that the
                // commit can go right behind the CopyDone.
                let copy_done = a.copy_restart == CopyRestart::Eligible
                    && a.queue.holds(|k| matches!(k, expect::Kind::CopyEnd));
                !(unknown || copy_done || between && a.fx.any())
            }
        }
    }

    /// Whether a connection is attached (the driver reads from it).
    pub fn attached(&self) -> bool {
        matches!(self.link, Link::Attached(_))
    }

    /// Whether rowgate is waiting on the server for its own purposes (a
    /// shape check, the capture of settings, the cleanup after the client
    /// left): the driver puts a deadline on it.
    pub fn waiting_on_own(&self) -> bool {
        matches!(&self.link, Link::Attached(a) if !matches!(a.hold, Hold::None))
    }

    /// Whether the client sits idle inside an open transaction: nothing in
    /// flight, the server waiting for the client's next statement.
    pub fn idle_in_transaction(&self) -> bool {
        matches!(&self.link, Link::Attached(a)
            if a.queue.is_empty() && a.status != b'I' && matches!(a.hold, Hold::None) && !a.pinned)
    }

    /// Whether the client is between transactions: holding no connection,
    /// or (pinned to one by session state) with nothing in flight on it and
    /// no transaction open. A drain closes clients only then.
    pub fn between_transactions(&self) -> bool {
        match &self.link {
            Link::Detached => true,
            Link::Acquiring(_) => false,
            Link::Attached(a) => {
                a.queue.is_empty() && a.status == b'I' && matches!(a.hold, Hold::None)
            }
        }
    }

    /// Whether the client is between transactions holding nothing.
    pub fn detached(&self) -> bool {
        matches!(self.link, Link::Detached)
    }

    /// The driver lent a connection for the frame that waited.
    pub fn attach(&mut self, conn: ConnState) {
        let Link::Acquiring(frame) = std::mem::replace(&mut self.link, Link::Detached) else {
            // Nothing asked for it: give it straight back.
            self.actions.push_back(Action::Release(conn));
            return;
        };
        self.link = Link::Attached(Box::new(Attachment {
            conn,
            queue: std::mem::take(&mut self.spare_queue),
            txn: Txn::Idle,
            status: b'I',
            unnamed_here: false,
            fx: SessionEffects::default(),
            ending: txn_end::Ending::default(),
            pinned: false,
            copy: Copy::Off,
            copy_restart: CopyRestart::No,
            hold: Hold::None,
        }));
        self.on_client(frame);
    }

    /// The driver could not lend a connection: the waiting batch fails.
    pub fn attach_failed(&mut self, code: &str, message: &str) {
        let Link::Acquiring(frame) = std::mem::replace(&mut self.link, Link::Detached) else {
            return;
        };
        self.refuse_batch(frame.tag(), code, message);
    }

    /// The client went away (or the driver gives up on it for `end`): an
    /// open transaction is rolled back and the connection reused only if
    /// the server then says it is idle; anything in flight means close.
    pub fn client_gone(&mut self, end: End) {
        if self.end.is_none() {
            self.end = Some(end);
        }
        if let Link::Acquiring(_) = self.link {
            self.link = Link::Detached;
            return;
        }
        self.start_cleanup();
    }

    /// The upstream connection failed (closed, unreadable): the session
    /// cannot go on if the client was relying on it.
    pub fn upstream_lost(&mut self, why: String) {
        let quiet = matches!(&self.link, Link::Attached(a)
            if a.queue.settled() && a.status == b'I' && !a.pinned && matches!(a.hold, Hold::None));
        self.drop_link();
        if !quiet && self.end.is_none() {
            self.end = Some(End::UpstreamLost(why));
        }
    }

    /// rowgate's own wait on the server took too long: close the
    /// connection, fail the session.
    pub fn own_deadline_passed(&mut self) {
        if self.waiting_on_own() {
            self.drop_link();
            if self.end.is_none() {
                self.end = Some(End::OwnTimeout);
            }
        }
    }

    /// Closes the upstream connection, whatever is in flight.
    fn drop_link(&mut self) {
        if let Link::Attached(_) = std::mem::replace(&mut self.link, Link::Detached) {
            self.to_server.clear();
            self.actions.push_back(Action::Close);
        }
    }

    /// Gives the connection back: only ever with nothing owed and the
    /// server idle.
    fn release(&mut self) {
        let Link::Attached(a) = std::mem::replace(&mut self.link, Link::Detached) else {
            return;
        };
        let Attachment {
            conn,
            mut queue,
            status,
            ..
        } = *a;
        let clean = queue.settled() && status == b'I' && self.to_server.is_empty();
        // The queue's buffer serves the next transaction.
        queue.reset();
        self.spare_queue = queue;
        if clean {
            self.actions.push_back(Action::Release(conn));
        } else {
            self.to_server.clear();
            self.actions.push_back(Action::Close);
        }
    }

    /// Ends the session for a protocol violation by the client.
    fn protocol_violation(&mut self, message: String) {
        self.client_gone(End::Protocol(message));
    }

    /// Whether a new transaction may start: refuses when the token expired
    /// and the policy says so.
    fn expired_message(&self) -> Option<String> {
        if self.database.auth().on_expiry() != OnExpiry::RejectTransactions {
            return None;
        }
        let exp = self.identity.expires_at?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        let leeway = self.database.leeway_secs();
        (now > exp.saturating_add(leeway)).then(|| {
            format!(
                "rowgate: the token of this connection expired at unix time {exp}; reconnect with a fresh token (or use a longer-lived JWT template, or [auth] on_expiry = \"allow\")"
            )
        })
    }

    /// Answers a batch rowgate refuses itself: an error now, then
    /// ReadyForQuery at the batch's end (after its Sync for extended ones).
    fn refuse_batch(&mut self, tag: u8, code: &str, message: &str) {
        self.to_client.extend_from_slice(&backend::error_response(
            backend::Severity::Error,
            code,
            message,
        ));
        if matches!(tag, b'Q' | b'F' | b'S') {
            self.to_client
                .extend_from_slice(&backend::ready_for_query(b'I'));
            self.phase = Phase::Ready;
        } else {
            self.phase = Phase::Skip {
                forward_sync: false,
            };
        }
    }
}
