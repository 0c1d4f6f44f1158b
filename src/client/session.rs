//! One authenticated client: the transaction-pooling state machine.
//!
//! Between transactions the client holds no upstream connection
//! ([`Upstream::Detached`]). The first message of a batch borrows one from
//! the pool, and rowgate puts the identity statement (an unsynced
//! Bind/Execute of `SELECT set_config($1, $2, true), ...`) in front of the
//! client's own messages, so it runs in the same transaction at no extra
//! round trip. When the server reports ReadyForQuery `I` with nothing else
//! outstanding, the transaction is over, its settings are gone, and the
//! connection goes back to the pool.

use super::expect::{Expect, Kind, ParseNote};
use super::params::{array_literal, ClientParams};
use super::startup::Authenticated;
use super::Shared;
use crate::auth::{Identity, OnExpiry};
use crate::guard::{classify, session_effects, ModeSettings, SessionEffects, TxnEffect, TxnModes};
use crate::upstream::PooledConn;
use crate::wire::backend::{self, Severity};
use crate::wire::frontend;
use crate::wire::stream::Stream;
use crate::wire::WireError;
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;

/// Name of rowgate's identity statement on every upstream connection.
pub(super) const IDENTITY_STATEMENT: &[u8] = b"rowgate_identity";

/// The statement (and portal) that sets a transaction's modes from the
/// client's session characteristics.
pub(super) const MODES_STATEMENT: &[u8] = b"rowgate_modes";

/// A client's prepared statement: its upstream name (content-addressed, so
/// clients preparing the same text share it) and its Parse payload, kept to
/// prepare it again on whichever connection the client lands on next.
#[derive(Debug)]
pub(super) struct Statement {
    pub upstream: Arc<str>,
    pub spec: Bytes,
    /// Where the statement may run relative to the identity.
    pub effect: TxnEffect,
    /// What executing it does to session-level settings.
    pub session: SessionEffects,
    /// The result shape (RowDescription or NoData) the client first learnt
    /// by describing it. PostgreSQL refuses to run a protocol-level
    /// statement whose result shape changed since (0A000); a re-prepare on
    /// another connection is checked against this.
    pub shape: OnceLock<Bytes>,
    /// A re-prepare found the shape changed: every Bind fails with 0A000,
    /// as on PostgreSQL, until the client prepares it anew.
    pub stale: AtomicBool,
}

impl Statement {
    pub fn new(spec: &[u8]) -> Statement {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(spec);
        let query = spec.split(|&b| b == 0).next().unwrap_or_default();
        Statement {
            upstream: format!("rg_{}", hex::encode(&digest[..12])).into(),
            spec: Bytes::copy_from_slice(spec),
            effect: classify(query),
            session: session_effects(query),
            shape: OnceLock::new(),
            stale: AtomicBool::new(false),
        }
    }
}

/// Where the client is in the message flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Between batches: the next Query, Parse, Bind, ... starts a new one.
    Ready,
    /// Inside an extended-protocol batch, until its Sync.
    Batch,
    /// rowgate refused the batch itself; discard until Sync, like a server.
    Skip,
}

/// The upstream connection, if the client holds one.
pub(super) enum Upstream {
    /// No connection: no transaction is open.
    Detached,
    /// A pooled connection, lent for the current transaction.
    Attached(Box<Attachment>),
}

/// A lent connection and what is in flight on it.
pub(super) struct Attachment {
    pub conn: PooledConn,
    /// Replies still owed by the server, oldest first.
    pub expect: VecDeque<Expect>,
    /// Last ReadyForQuery status (`I`, `T`, `E`).
    pub status: u8,
    /// Bytes waiting to be written upstream.
    pub out: BytesMut,
    /// Whether the client's unnamed statement exists on this connection.
    pub unnamed_here: bool,
    /// Whether the current upstream transaction already carries the identity.
    pub identity: IdentityState,
    /// Session-level setting changes the client made in this transaction.
    pub session_fx: SessionEffects,
    /// The client created session state under `[session_state] ... = "pin"`:
    /// it keeps this connection until it disconnects.
    pub pinned: bool,
    /// The server is reading a COPY FROM STDIN: it ignores Sync and Flush
    /// until CopyDone/CopyFail, so they get no ReadyForQuery.
    pub copy_in: bool,
    /// The transaction failed or was rolled back (an error, or a ROLLBACK
    /// command tag): its session-level changes did not happen.
    pub txn_failed: bool,
    /// The server said the transaction is over with nothing outstanding;
    /// the connection is to be released (after a reset, if needed).
    pub txn_over: bool,
    /// Where a re-prepared statement's result-shape check stands.
    pub shape_check: ShapeCheck,
}

/// The check of a statement's result shape after it was prepared again on
/// another connection (see [`Statement::shape`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ShapeCheck {
    /// None in flight.
    Idle,
    /// Sent; the client's Bind waits for the answer (which leaves `Idle`
    /// when the shape is the one the client knows).
    Waiting,
    /// The shape changed: the Bind fails with 0A000.
    Changed,
}

/// Whether the identity is set in the upstream transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IdentityState {
    /// Not yet: the next statement that may read data gets it first. Holds
    /// the transaction modes the client's own BEGIN or SET TRANSACTION set
    /// so far, which its session characteristics must not override.
    Pending(TxnModes),
    /// Set for the rest of this transaction.
    Set,
}

/// Why a session ended.
#[derive(Debug)]
pub(super) enum End {
    /// Terminate, or the client closed its socket.
    ClientGone,
    /// The client broke the protocol.
    Protocol(String),
    /// The upstream connection failed mid-transaction.
    UpstreamLost(String),
    /// rowgate lost track of the server's replies (a bug); fail safe.
    Desync(&'static str),
    /// Closed for idleness.
    IdleTimeout,
    /// Closed for sitting in an open transaction.
    IdleInTransaction,
}

impl From<WireError> for End {
    fn from(e: WireError) -> Self {
        End::Protocol(e.to_string())
    }
}

/// One client session.
pub(super) struct Session {
    pub client: Stream,
    pub crbuf: BytesMut,
    pub cwbuf: BytesMut,
    pub shared: Arc<Shared>,
    pub identity: Identity,
    /// The client's session parameters, re-applied in every transaction.
    pub params: ClientParams,
    /// The upstream server's reported parameters (its defaults).
    pub server_params: Arc<Vec<(String, String)>>,
    /// Bind parameters of the identity statement: the names and the values
    /// as `text[]` literals (the values without the seal, which is per
    /// connection). Rebuilt when the client's parameters change.
    pub bind_names: Bytes,
    pub bind_values: String,
    /// How many of those settings are the client's own (the rest is the
    /// identity).
    pub bind_client_count: String,
    pub statements: HashMap<Box<[u8]>, Arc<Statement>>,
    pub unnamed: Option<Arc<Statement>>,
    pub phase: Phase,
    pub upstream: Upstream,
    pub key: (i32, i32),
    /// Where this client's cancel requests go.
    pub cancel_slot: Arc<super::cancel::CancelSlot>,
}

enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    Idle,
    IdleInTransaction,
    // HOOK(ops): an admin KILL, or a shutdown drain between transactions.
    Stop(&'static str),
}

impl Session {
    pub fn new(
        shared: Arc<Shared>,
        ok: Authenticated,
        key: (i32, i32),
        cancel_slot: Arc<super::cancel::CancelSlot>,
    ) -> Session {
        let mut s = Session {
            client: ok.stream,
            crbuf: ok.pending,
            cwbuf: BytesMut::new(),
            shared,
            identity: ok.identity,
            params: ok.params,
            server_params: ok.server_params,
            bind_names: Bytes::new(),
            bind_values: String::new(),
            bind_client_count: String::new(),
            statements: HashMap::new(),
            unnamed: None,
            phase: Phase::Ready,
            upstream: Upstream::Detached,
            key,
            cancel_slot,
        };
        s.encode_settings();
        s
    }

    /// Encodes what every transaction sets: the client's parameters, then
    /// the identity (so it always wins), then the seal's name if on.
    pub fn encode_settings(&mut self) {
        self.bind_client_count = self.params.settings().count().to_string();
        let client = self.params.settings();
        let identity = self
            .shared
            .auth
            .setting_names()
            .iter()
            .map(String::as_str)
            .zip(self.identity.values.iter().map(String::as_str));
        let (mut names, values): (Vec<&str>, Vec<&str>) = client.chain(identity).unzip();
        if self.shared.sealer.is_some() {
            names.push(crate::guard::Sealer::SETTING);
        }
        self.bind_names = Bytes::from(array_literal(names));
        let mut literal = array_literal(values);
        if self.shared.sealer.is_some() {
            // Left open: the seal, computed per connection, closes it.
            literal.pop();
        }
        self.bind_values = literal;
    }

    /// Serves the client until it leaves, then leaves the upstream clean.
    pub async fn run(mut self) {
        self.cwbuf
            .extend_from_slice(&backend::backend_key_data(self.key.0, self.key.1));
        self.cwbuf
            .extend_from_slice(&backend::ready_for_query(b'I'));
        let end = self.serve().await;
        match &end {
            End::ClientGone => {}
            End::IdleTimeout => {
                self.fatal("57P05", "terminating connection due to idle timeout (rowgate [listen] client_idle_timeout)").await
            }
            End::IdleInTransaction => {
                self.fatal("25P03", "terminating connection due to idle-in-transaction timeout (rowgate [listen] idle_in_transaction_timeout); the transaction was rolled back").await
            }
            End::Protocol(m) => self.fatal("08P01", &format!("protocol violation: {m}")).await,
            End::UpstreamLost(m) => {
                self.fatal("08006", &format!("rowgate lost the upstream connection during a transaction: {m}")).await
            }
            End::Desync(m) => {
                tracing::error!("upstream protocol desync: {m}");
                self.fatal("XX000", &format!("rowgate internal error ({m}); the transaction was rolled back")).await
            }
        }
        self.cancel_slot.set(None);
        let upstream = std::mem::replace(&mut self.upstream, Upstream::Detached);
        if let Upstream::Attached(a) = upstream {
            let clean_possible = matches!(
                end,
                End::ClientGone | End::Protocol(_) | End::IdleTimeout | End::IdleInTransaction
            );
            if clean_possible {
                tokio::spawn(cleanup(a));
            }
            // Otherwise dropping the attachment closes the connection, and
            // the server rolls back whatever was open.
        }
    }

    async fn fatal(&mut self, code: &str, message: &str) {
        let _ = self.flush_client().await;
        super::startup::send_fatal(&mut self.client, code, message).await;
    }

    async fn serve(&mut self) -> End {
        let idle_timeout = self.shared.config.listen.client_idle_timeout;
        let in_txn_timeout = self.shared.config.listen.idle_in_transaction_timeout;
        loop {
            let hold = match self.process_client_input().await {
                Ok(hold) => hold,
                Err(end) => return end,
            };
            if let Err(end) = self.flush().await {
                return end;
            }
            let detached = matches!(self.upstream, Upstream::Detached);
            if detached && self.crbuf.is_empty() && self.crbuf.capacity() > 0 {
                // An idle client keeps no buffers: thousands of idle clients
                // then cost little more than their sockets and tasks.
                self.crbuf = BytesMut::new();
                self.cwbuf = BytesMut::new();
            }
            // A client idle inside its transaction: nothing in flight, the
            // server waiting for the client's next statement.
            let idle_in_txn = match &self.upstream {
                Upstream::Attached(a) => a.expect.is_empty() && a.status != b'I',
                Upstream::Detached => false,
            };
            // HOOK(ops): between transactions = nothing in flight and the
            // server idle (or no connection); a drain waits for that.
            let between = match &self.upstream {
                Upstream::Attached(a) => a.expect.is_empty() && a.status == b'I',
                Upstream::Detached => true,
            };
            let event = tokio::select! {
                m = crate::admin::hook::stop_requested(between) => Event::Stop(m),
                r = self.client.read_more(&mut self.crbuf), if !hold => Event::Client(r),
                r = read_upstream(&mut self.upstream) => Event::Server(r),
                _ = tokio::time::sleep(idle_timeout), if detached && !idle_timeout.is_zero() => Event::Idle,
                _ = tokio::time::sleep(in_txn_timeout), if idle_in_txn && !in_txn_timeout.is_zero() => Event::IdleInTransaction,
            };
            match event {
                Event::Client(Ok(0)) | Event::Client(Err(_)) => return End::ClientGone,
                Event::Client(Ok(_)) => {}
                Event::Server(Ok(0)) => {
                    return End::UpstreamLost("server closed the connection".into())
                }
                Event::Server(Err(e)) => return End::UpstreamLost(e.to_string()),
                Event::Server(Ok(_)) => {
                    if let Err(end) = self.process_server_input() {
                        return end;
                    }
                    if let Err(end) = self.end_transaction().await {
                        return end;
                    }
                }
                Event::Idle => return End::IdleTimeout,
                Event::IdleInTransaction => return End::IdleInTransaction,
                // HOOK(ops): FATAL 57P01 with the reason, then close.
                Event::Stop(message) => {
                    self.fatal("57P01", message).await;
                    return End::ClientGone;
                }
            }
        }
    }

    /// Writes what is buffered for the server, then for the client.
    pub(super) async fn flush(&mut self) -> Result<(), End> {
        if let Upstream::Attached(a) = &mut self.upstream {
            if !a.out.is_empty() {
                tracing::trace!(bytes = a.out.len(), "write upstream");
                a.conn
                    .stream
                    .write_all(&a.out)
                    .await
                    .map_err(|e| End::UpstreamLost(e.to_string()))?;
                a.out.clear();
                // Each write upstream is at most one round trip; benches
                // compare this with transactions to show injection adds none.
                crate::metrics::incr("rowgate_upstream_writes_total", "");
            }
        }
        self.flush_client().await.map_err(|_| End::ClientGone)
    }

    async fn flush_client(&mut self) -> std::io::Result<()> {
        if !self.cwbuf.is_empty() {
            self.client.write_all(&self.cwbuf).await?;
            self.cwbuf.clear();
        }
        Ok(())
    }

    /// Whether a new transaction may start: refuses when the token expired
    /// and the policy says so.
    pub fn expired_message(&self) -> Option<String> {
        if self.shared.auth.on_expiry() != OnExpiry::RejectTransactions {
            return None;
        }
        let exp = self.identity.expires_at?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        let leeway = self.shared.config.auth.leeway_secs;
        (now > exp.saturating_add(leeway)).then(|| {
            format!(
                "rowgate: the token of this connection expired at unix time {exp}; reconnect with a fresh token (or use a longer-lived JWT template, or [auth] on_expiry = \"allow\")"
            )
        })
    }

    /// Borrows a pooled connection for a new transaction.
    pub async fn attach(&mut self) -> Result<(), (&'static str, String)> {
        // HOOK(ops): refuses during shutdown and over the user's rate;
        // marks the client waiting.
        crate::admin::hook::before_acquire()?;
        let conn = self.shared.pool.acquire().await;
        // HOOK(ops): in a transaction on this backend (or idle again).
        crate::admin::hook::acquired(conn.as_ref().ok().map(|c| c.pid));
        let conn = conn.map_err(|e| (e.sqlstate(), format!("rowgate: {e}")))?;
        self.cancel_slot.set(Some((conn.pid, conn.secret)));
        self.upstream = Upstream::Attached(Box::new(Attachment {
            conn,
            expect: VecDeque::new(),
            status: b'I',
            out: BytesMut::with_capacity(1024),
            unnamed_here: false,
            identity: IdentityState::Pending(TxnModes::default()),
            session_fx: SessionEffects::default(),
            pinned: false,
            copy_in: false,
            txn_failed: false,
            txn_over: false,
            shape_check: ShapeCheck::Idle,
        }));
        Ok(())
    }

    /// When the server has said the transaction is over: keeps what the
    /// client changed at session level (and resets the connection), then
    /// returns the connection to the pool.
    async fn end_transaction(&mut self) -> Result<(), End> {
        let Upstream::Attached(a) = &mut self.upstream else {
            return Ok(());
        };
        if !a.txn_over {
            return Ok(());
        }
        a.txn_over = false;
        let fx = std::mem::take(&mut a.session_fx);
        let failed = std::mem::take(&mut a.txn_failed);
        // A pinned client keeps its connection, and its session state there.
        let pinned = a.pinned;
        if fx.any() {
            // The client's reply (ReadyForQuery) goes out before the reset.
            self.flush_client().await.map_err(|_| End::ClientGone)?;
            let Upstream::Attached(a) = &mut self.upstream else {
                return Ok(());
            };
            // A rolled-back transaction took its SETs with it: nothing to
            // keep, but the connection is reset all the same.
            let set_names = if failed { Vec::new() } else { fx.set_names() };
            let names = (!set_names.is_empty()).then(|| array_literal(set_names.iter().copied()));
            match a.conn.capture_and_reset(names.as_deref(), !pinned).await {
                Ok(_) if failed => {}
                Ok(values) => {
                    let captured = set_names
                        .iter()
                        .map(|n| n.to_string())
                        .zip(values)
                        .collect();
                    let owed = self.params.apply(&fx.ops, &captured, &self.server_params);
                    for (name, value) in owed {
                        self.cwbuf
                            .extend_from_slice(&backend::parameter_status(&name, &value));
                    }
                    self.encode_settings();
                }
                Err(e) => {
                    // Not provably clean: close it rather than lend it.
                    tracing::warn!(error = %e, "could not reset a connection after session SET; closing it");
                    self.cancel_slot.set(None);
                    self.upstream = Upstream::Detached;
                    // HOOK(ops): the transaction is over (connection closed).
                    crate::admin::hook::released();
                    return Ok(());
                }
            }
        }
        if !pinned {
            self.release();
        }
        Ok(())
    }

    /// Returns the connection to the pool (the server said it is idle).
    pub fn release(&mut self) {
        if let Upstream::Attached(a) = std::mem::replace(&mut self.upstream, Upstream::Detached) {
            self.cancel_slot.set(None);
            a.conn.release();
            // HOOK(ops): the transaction is over; records its duration.
            crate::admin::hook::released();
        }
    }

    /// Before a client statement with `effect` goes upstream: sets the
    /// identity first if the transaction lacks it and the statement may read
    /// data, and notes a transaction the statement ends.
    ///
    /// Never in a failed transaction (`E`): the injected statement would fail
    /// and make the server skip the client's ROLLBACK.
    ///
    /// `leading`: the modes of a `BEGIN` that opens the client's query
    /// string, set before the identity statement takes its snapshot.
    pub fn before_statement(&mut self, effect: TxnEffect, leading: Option<ModeSettings>) {
        let Upstream::Attached(a) = &mut self.upstream else {
            return;
        };
        let explicit = match (effect, a.identity) {
            (TxnEffect::Plain, IdentityState::Pending(modes)) if a.status != b'E' => modes,
            (TxnEffect::Starts(modes), IdentityState::Pending(before)) => {
                a.identity = IdentityState::Pending(before.union(modes));
                return;
            }
            (TxnEffect::Ends, _) => {
                // Whatever follows in this batch runs in a new transaction.
                a.identity = IdentityState::Pending(TxnModes::default());
                a.status = b'I';
                return;
            }
            _ => return,
        };
        a.identity = IdentityState::Set;
        let modes = self.params.characteristics(explicit);
        if let Some(sql) = modes.overlay(leading.unwrap_or_default()).sql() {
            // Before the identity statement, which takes the snapshot
            // after which no mode may change. A statement of its own name,
            // parsed again each time: only clients that changed their
            // session characteristics pay for it.
            let spec = frontend::parse_spec(sql.as_bytes());
            prepare_own(a, MODES_STATEMENT, &spec, ParseNote::default());
            run_own(a, MODES_STATEMENT, &[]);
        }
        if !a.conn.identity_prepared {
            let note = ParseNote {
                identity: true,
                ..Default::default()
            };
            prepare_own(a, IDENTITY_STATEMENT, &self.shared.identity_spec, note);
            a.conn.identity_prepared = true;
        }
        let values = match &self.shared.sealer {
            None => std::borrow::Cow::Borrowed(self.bind_values.as_str()),
            Some(s) => {
                let seal = s.seal(
                    a.conn.pid,
                    self.shared.auth.setting_names(),
                    &self.identity.values,
                );
                // bind_values was left open ("{...") for the seal to close.
                let sep = if self.bind_values.len() > 1 { "," } else { "" };
                let seal = array_literal([seal.as_str()]);
                std::borrow::Cow::Owned(format!("{}{sep}{}", self.bind_values, &seal[1..]))
            }
        };
        let params: [&[u8]; 3] = [
            &self.bind_names,
            values.as_bytes(),
            self.bind_client_count.as_bytes(),
        ];
        run_own(a, IDENTITY_STATEMENT, &params);
        crate::metrics::incr("rowgate_transactions_total", "");
    }

    /// Answers a batch rowgate refuses itself: an error now, then
    /// ReadyForQuery at the batch's end (after its Sync for extended ones).
    pub fn refuse_batch(&mut self, tag: u8, code: &str, message: &str) {
        self.cwbuf
            .extend_from_slice(&backend::error_response(Severity::Error, code, message));
        if matches!(tag, b'Q' | b'F') {
            self.cwbuf
                .extend_from_slice(&backend::ready_for_query(b'I'));
        } else {
            self.phase = Phase::Skip;
        }
    }
}

/// Queues the Parse of one of rowgate's own statements, its replies
/// swallowed. Closed first: a client may have left a statement of that
/// name.
fn prepare_own(a: &mut Attachment, name: &[u8], spec: &[u8], note: ParseNote) {
    frontend::put_target(&mut a.out, b'C', b'S', name);
    a.expect.push_back(Expect::swallow(Kind::Close));
    frontend::put_parse(&mut a.out, name, spec);
    a.expect.push_back(Expect::swallow(Kind::Parse(note)));
}

/// Queues a run of rowgate's own statement `name` with text `params`, its
/// replies swallowed. On a portal of its own, closed at once: the client's
/// unnamed portal may be bound and not yet executed.
fn run_own(a: &mut Attachment, name: &[u8], params: &[&[u8]]) {
    frontend::put_bind_text(&mut a.out, name, name, params);
    a.expect.push_back(Expect::swallow(Kind::Bind));
    frontend::put_execute(&mut a.out, name);
    a.expect.push_back(Expect::swallow(Kind::Execute));
    frontend::put_target(&mut a.out, b'C', b'P', name);
    a.expect.push_back(Expect::swallow(Kind::Close));
}

/// Reads from the upstream if attached; never completes otherwise.
pub(super) async fn read_upstream(up: &mut Upstream) -> std::io::Result<usize> {
    match up {
        Upstream::Attached(a) => {
            let conn = &mut *a.conn;
            conn.stream.read_more(&mut conn.rbuf).await
        }
        Upstream::Detached => std::future::pending().await,
    }
}

/// Leaves a connection whose client vanished clean, or closes it: an open
/// transaction is rolled back and the connection reused only if the server
/// then says it is idle; anything still in flight means close.
async fn cleanup(mut a: Box<Attachment>) {
    if !a.expect.is_empty() {
        return; // dropped: closing the socket makes the server roll back
    }
    let limit = std::time::Duration::from_secs(5);
    if a.status != b'I' {
        let rollback = tokio::time::timeout(limit, a.conn.simple_query("ROLLBACK")).await;
        if !matches!(rollback, Ok(Ok(Ok(b'I')))) {
            return;
        }
    }
    if a.pinned {
        // Whatever the client kept here (temp tables, LISTEN, locks,
        // cursors, prepared statements, settings) goes before anyone else
        // gets the connection; DISCARD ALL also drops rowgate's statements.
        let discard =
            tokio::time::timeout(limit, a.conn.simple_query("DISCARD ALL; RESET ROLE")).await;
        if !matches!(discard, Ok(Ok(Ok(b'I')))) {
            return;
        }
        a.conn.prepared.clear();
        a.conn.identity_prepared = false;
    }
    a.conn.release();
}
