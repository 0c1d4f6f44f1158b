//! Every connected client, for `SHOW CLIENTS`, `KILL`, the per-user cap,
//! the clients-by-state gauges and graceful shutdown.

use futures_util::task::AtomicWaker;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

/// Where a client is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// In the startup phase (TLS, password, verification).
    Authenticating = 0,
    /// Between transactions, holding no upstream connection.
    Idle = 1,
    /// Holding an upstream connection for a transaction.
    InTransaction = 2,
    /// Waiting for a pooled connection.
    Waiting = 3,
}

impl ClientState {
    /// Every state, for gauges.
    pub const ALL: [ClientState; 4] = [
        ClientState::Authenticating,
        ClientState::Idle,
        ClientState::InTransaction,
        ClientState::Waiting,
    ];

    /// The name shown in `SHOW CLIENTS` and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            ClientState::Authenticating => "authenticating",
            ClientState::Idle => "idle",
            ClientState::InTransaction => "in_transaction",
            ClientState::Waiting => "waiting",
        }
    }

    fn from_u8(v: u8) -> ClientState {
        match v {
            1 => ClientState::Idle,
            2 => ClientState::InTransaction,
            3 => ClientState::Waiting,
            _ => ClientState::Authenticating,
        }
    }
}

/// What the session should do at its next chance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum StopRequest {
    /// Carry on.
    None,
    /// Close between transactions (shutdown).
    Drain,
    /// Close now (`KILL`, shutdown timeout).
    Kill,
}

impl StopRequest {
    fn from_u8(v: u8) -> StopRequest {
        match v {
            0 => StopRequest::None,
            1 => StopRequest::Drain,
            _ => StopRequest::Kill,
        }
    }
}

/// One connected client. Holds the `sub` once verified, never a token.
#[derive(Debug)]
pub struct ClientEntry {
    /// Console id (`KILL <id>`).
    pub id: u64,
    /// Client address.
    pub peer: SocketAddr,
    /// Wall-clock connect time.
    pub connected_at: SystemTime,
    started: Instant,
    database: OnceLock<String>,
    sub: OnceLock<String>,
    state: AtomicU8,
    /// Microseconds since `started` at the last state change.
    state_since: AtomicU64,
    /// Microseconds since `started` when the current transaction began.
    txn_started: AtomicU64,
    upstream_pid: AtomicI32,
    transactions: AtomicU64,
    /// The strongest [`StopRequest`] so far, as its `u8`.
    stop: AtomicU8,
    /// The session's task, woken by a stop request. One waiter (the
    /// session) and one registration per wait: a watch channel's
    /// subscription and notify list cost a lock on every wake-up.
    stop_waker: AtomicWaker,
}

impl ClientEntry {
    fn new(id: u64, peer: SocketAddr) -> ClientEntry {
        ClientEntry {
            id,
            peer,
            connected_at: SystemTime::now(),
            started: Instant::now(),
            database: OnceLock::new(),
            sub: OnceLock::new(),
            state: AtomicU8::new(ClientState::Authenticating as u8),
            state_since: AtomicU64::new(0),
            txn_started: AtomicU64::new(0),
            upstream_pid: AtomicI32::new(0),
            transactions: AtomicU64::new(0),
            stop: AtomicU8::new(StopRequest::None as u8),
            stop_waker: AtomicWaker::new(),
        }
    }

    fn micros(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// The state now.
    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Moves to `state`.
    pub fn set_state(&self, state: ClientState) {
        self.set_state_at(state, self.micros());
    }

    fn set_state_at(&self, state: ClientState, micros: u64) {
        self.state.store(state as u8, Ordering::Relaxed);
        self.state_since.store(micros, Ordering::Relaxed);
    }

    /// How long the client has been in its state.
    pub fn in_state_for(&self) -> std::time::Duration {
        let since = self.state_since.load(Ordering::Relaxed);
        std::time::Duration::from_micros(self.micros().saturating_sub(since))
    }

    /// How long the client has been connected.
    pub fn connected_for(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// A transaction began on upstream connection `pid`.
    pub fn begin_transaction(&self, pid: i32) {
        // One clock read for both stamps: this runs on every transaction.
        let now = self.micros();
        self.upstream_pid.store(pid, Ordering::Relaxed);
        self.txn_started.store(now, Ordering::Relaxed);
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.set_state_at(ClientState::InTransaction, now);
    }

    /// The transaction ended; returns how long it took (None if none ran).
    pub fn end_transaction(&self) -> Option<std::time::Duration> {
        if self.state() != ClientState::InTransaction {
            return None;
        }
        let now = self.micros();
        self.upstream_pid.store(0, Ordering::Relaxed);
        self.set_state_at(ClientState::Idle, now);
        let began = self.txn_started.load(Ordering::Relaxed);
        Some(std::time::Duration::from_micros(now.saturating_sub(began)))
    }

    /// The database the client asked for, once known.
    pub fn database(&self) -> &str {
        self.database.get().map(String::as_str).unwrap_or("")
    }

    /// Notes the database from the startup packet.
    pub fn set_database(&self, db: &str) {
        let _ = self.database.set(db.to_string());
    }

    /// The verified `sub`, once authenticated.
    pub fn sub(&self) -> &str {
        self.sub.get().map(String::as_str).unwrap_or("")
    }

    /// Upstream backend pid while in a transaction (0 otherwise).
    pub fn upstream_pid(&self) -> i32 {
        self.upstream_pid.load(Ordering::Relaxed)
    }

    /// Transactions started so far.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// Asks the session to stop (never lowers an earlier, stronger request).
    pub fn request_stop(&self, req: StopRequest) {
        if self.stop.fetch_max(req as u8, Ordering::AcqRel) < req as u8 {
            self.stop_waker.wake();
        }
    }

    /// What has been asked of the session so far.
    pub fn stop_request(&self) -> StopRequest {
        StopRequest::from_u8(self.stop.load(Ordering::Acquire))
    }

    /// Ready with a stop request that applies: `Kill` always, `Drain`
    /// only when the client is between transactions. For one waiter at a
    /// time (the session's task).
    pub fn poll_stopped(
        &self,
        cx: &mut Context<'_>,
        between_transactions: bool,
    ) -> Poll<StopRequest> {
        // Registered before the check: a request made in between still
        // wakes this task.
        self.stop_waker.register(cx.waker());
        match self.stop_request() {
            StopRequest::Kill => Poll::Ready(StopRequest::Kill),
            StopRequest::Drain if between_transactions => Poll::Ready(StopRequest::Drain),
            _ => Poll::Pending,
        }
    }

    /// Waits for a stop request that applies (see [`Self::poll_stopped`]).
    /// The session polls it in its own `select!`; tests wait with this.
    #[cfg(test)]
    pub async fn stopped(&self, between_transactions: bool) -> StopRequest {
        std::future::poll_fn(|cx| self.poll_stopped(cx, between_transactions)).await
    }
}

/// Why a client was refused at registration.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// `[listen] max_client_connections` reached.
    #[error("sorry, too many clients already (rowgate [listen] max_client_connections = {0})")]
    TooManyClients(usize),
    /// `[listen] max_connections_per_user` reached for this `sub`.
    #[error(
        "too many connections for this user (rowgate [listen] max_connections_per_user = {0})"
    )]
    TooManyForUser(usize),
}

impl LimitError {
    /// SQLSTATE: 53300 too_many_connections.
    pub fn sqlstate(&self) -> &'static str {
        "53300"
    }

    /// Label for `rowgate_refusals_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            LimitError::TooManyClients(_) => "max_client_connections",
            LimitError::TooManyForUser(_) => "max_connections_per_user",
        }
    }
}

#[derive(Default)]
struct Inner {
    clients: HashMap<u64, Arc<ClientEntry>>,
    per_user: HashMap<String, usize>,
}

/// Every connected client.
#[derive(Default)]
pub struct ClientRegistry {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
}

/// A client's place in the registry; dropping it removes the client.
pub struct Registration {
    registry: Arc<ClientRegistry>,
    /// The client.
    pub entry: Arc<ClientEntry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        inner.clients.remove(&self.entry.id);
        if let Some(sub) = self.entry.sub.get() {
            if let Some(n) = inner.per_user.get_mut(sub) {
                *n -= 1;
                if *n == 0 {
                    inner.per_user.remove(sub);
                }
            }
        }
    }
}

impl ClientRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a client that just connected, unless `max` are connected.
    pub fn register(
        self: &Arc<Self>,
        peer: SocketAddr,
        max: usize,
    ) -> Result<Registration, LimitError> {
        let mut inner = self.lock();
        if inner.clients.len() >= max {
            return Err(LimitError::TooManyClients(max));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(ClientEntry::new(id, peer));
        inner.clients.insert(id, entry.clone());
        Ok(Registration {
            registry: self.clone(),
            entry,
        })
    }

    /// Records the verified `sub`, unless the user already holds `max`
    /// connections (`0` = no cap).
    pub fn authenticated(
        &self,
        entry: &ClientEntry,
        sub: &str,
        max: usize,
    ) -> Result<(), LimitError> {
        let mut inner = self.lock();
        let n = inner.per_user.get(sub).copied().unwrap_or(0);
        if max > 0 && n >= max {
            return Err(LimitError::TooManyForUser(max));
        }
        if entry.sub.set(sub.to_string()).is_ok() {
            inner.per_user.insert(sub.to_string(), n + 1);
        }
        entry.set_state(ClientState::Idle);
        Ok(())
    }

    /// Every client, oldest first.
    pub fn snapshot(&self) -> Vec<Arc<ClientEntry>> {
        let mut all: Vec<_> = self.lock().clients.values().cloned().collect();
        all.sort_by_key(|e| e.id);
        all
    }

    /// One client by console id.
    pub fn get(&self, id: u64) -> Option<Arc<ClientEntry>> {
        self.lock().clients.get(&id).cloned()
    }

    /// Clients connected now.
    pub fn len(&self) -> usize {
        self.lock().clients.len()
    }

    /// Whether no client is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Clients per state.
    pub fn counts(&self) -> [usize; 4] {
        let mut n = [0; 4];
        for e in self.lock().clients.values() {
            n[e.state() as usize] += 1;
        }
        n
    }

    /// Asks every client to stop.
    pub fn request_stop_all(&self, req: StopRequest) {
        for e in self.snapshot() {
            e.request_stop(req);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn caps_clients_and_users_and_forgets_them_on_drop() {
        let reg = Arc::new(ClientRegistry::default());
        let a = reg.register(peer(), 2).unwrap();
        let b = reg.register(peer(), 2).unwrap();
        assert!(matches!(
            reg.register(peer(), 2),
            Err(LimitError::TooManyClients(2))
        ));
        reg.authenticated(&a.entry, "user_1", 1).unwrap();
        assert!(matches!(
            reg.authenticated(&b.entry, "user_1", 1),
            Err(LimitError::TooManyForUser(1))
        ));
        drop(a);
        reg.authenticated(&b.entry, "user_1", 1).unwrap();
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.counts()[ClientState::Idle as usize], 1);
    }

    #[tokio::test]
    async fn drain_waits_for_the_transaction_kill_does_not() {
        let reg = Arc::new(ClientRegistry::default());
        let r = reg.register(peer(), 10).unwrap();
        r.entry.request_stop(StopRequest::Drain);
        let in_txn =
            tokio::time::timeout(std::time::Duration::from_millis(50), r.entry.stopped(false))
                .await;
        assert!(
            in_txn.is_err(),
            "a transaction is not interrupted by a drain"
        );
        assert_eq!(r.entry.stopped(true).await, StopRequest::Drain);
        r.entry.request_stop(StopRequest::Kill);
        assert_eq!(r.entry.stopped(false).await, StopRequest::Kill);
    }
}
