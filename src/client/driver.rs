//! The async side of a session: moves bytes between the client, the core
//! ([`super::core::Core`]) and the upstream connection, borrows and returns
//! connections when the core asks, and runs the timers. It decides nothing
//! about the protocol.

use super::cancel::CancelSlot;
use super::core::{Action, ConnState, Core, End};
use super::startup::Authenticated;
use super::Shared;
use crate::upstream::PooledConn;
use crate::wire::stream::Stream;
use crate::wire::{next_frame, peek_frame_len, MAX_MESSAGE_LEN};

/// A refusal of a connection for a transaction: SQLSTATE and message.
type Refusal = (&'static str, String);
use bytes::BytesMut;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep, sleep_until, Instant};

/// How long rowgate waits for the server to answer its own statements (a
/// shape check, the read-back of session settings, the rollback after a
/// client left) before it closes the connection.
const OWN_WAIT: Duration = Duration::from_secs(10);

/// Bytes of a client's input read ahead while the core holds it (enough to
/// notice the client leaving, not enough to buffer a flood).
const READ_AHEAD: usize = 64 * 1024;

/// Bytes for the server beyond which the client's next messages wait
/// (they stay in the client's socket): a pipeline is forwarded as fast as
/// the server takes it, never buffered without bound.
const MAX_PENDING_UPSTREAM: usize = 256 * 1024;

/// Statements this long are checked by the guard on a blocking thread
/// first (the cache then answers the core at once), so one client's huge
/// statement never stalls the runtime thread other clients share.
const BIG_STATEMENT: usize = 64 * 1024;

/// One session's sockets and buffers.
struct Driver {
    shared: Arc<Shared>,
    database: Arc<crate::upstream::Database>,
    core: Core,
    client: Stream,
    crbuf: BytesMut,
    /// The client closed its side; what it sent before is still processed.
    client_eof: bool,
    upstream: Option<PooledConn>,
    cancel_slot: Arc<CancelSlot>,
    /// When rowgate's current own wait on the server gives up.
    own_deadline: Option<Instant>,
}

/// What woke the driver.
enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    Wrote(std::io::Result<usize>),
    Idle,
    IdleInTransaction,
    OwnDeadline,
    /// A shutdown drain or an admin `KILL` (the 57P01 message).
    Stop(&'static str),
}

/// Serves an authenticated client until it leaves, then leaves the
/// upstream clean (or closed).
///
/// Not an `async fn`: one keeps its arguments in its state for its whole
/// life, beside the locals made from them, and every idle client's task
/// would carry the spent `Authenticated`. The driver is built first and is
/// the future's only capture.
pub(super) fn run(
    shared: Arc<Shared>,
    ok: Authenticated,
    key: (i32, i32),
    cancel_slot: Arc<CancelSlot>,
) -> impl std::future::Future<Output = ()> {
    let database = ok.database.clone();
    let core = Core::new(
        shared.clone(),
        ok.database,
        key,
        ok.identity,
        ok.login,
        ok.params,
        ok.server_params,
    );
    let mut d = Driver {
        shared,
        database,
        core,
        client: ok.stream,
        crbuf: ok.pending,
        client_eof: false,
        upstream: None,
        cancel_slot,
        own_deadline: None,
    };
    async move {
        d.serve().await;
        d.cancel_slot.set(None);
        if let Some((code, message)) = d.core.ended().and_then(End::fatal) {
            if let Some(End::UpstreamLost(m)) = d.core.ended() {
                tracing::info!("session ended: upstream lost: {m}");
            }
            let _ = d.client.write_all(d.core.client_out()).await;
            super::startup::send_fatal(&mut d.client, code, &message).await;
        }
    }
}

impl Driver {
    async fn serve(&mut self) {
        loop {
            self.step().await;
            if self.core.finished() {
                return;
            }
            let event = self.wait().await;
            self.on_event(event).await;
        }
    }

    /// Feeds the core all it takes, does what it asks, and writes what it
    /// produced, until nothing changes.
    async fn step(&mut self) {
        loop {
            self.feed_client().await;
            let mut acted = false;
            while let Some(action) = self.core.next_action() {
                acted = true;
                self.act(action).await;
            }
            if !acted {
                break;
            }
        }
        self.flush_upstream_now();
        self.write_out().await;
        // A write failure may have ended something; its actions are quick.
        while let Some(action) = self.core.next_action() {
            self.act(action).await;
        }
    }

    /// Hands the core every whole client message it will take now.
    async fn feed_client(&mut self) {
        // `[listen] max_message_size`, as in force (a reload may change it).
        let max = self.shared.ops.max_message_size();
        while self.core.wants_client() && self.core.server_out().len() < MAX_PENDING_UPSTREAM {
            match peek_frame_len(&self.crbuf, max) {
                Ok(Some(len)) if self.crbuf.len() >= len => {}
                Ok(_) => break,
                Err(e) => {
                    if matches!(e, crate::wire::WireError::TooLong { .. }) {
                        crate::metrics::incr("rowgate_refusals_total", "max_message_size");
                    }
                    return self.core.client_gone(End::Protocol(e.to_string()));
                }
            }
            let frame = match next_frame(&mut self.crbuf, max) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return self.core.client_gone(End::Protocol(e.to_string())),
            };
            if matches!(frame.tag(), b'Q' | b'E') {
                crate::metrics::incr("rowgate_statements_total", "");
            }
            if matches!(frame.tag(), b'Q' | b'P') && frame.body().len() > BIG_STATEMENT {
                self.warm_guard(frame.body().to_vec()).await;
            }
            self.core.on_client(frame);
        }
        if self.client_eof && self.core.ended().is_none() {
            let whole_frame_left =
                matches!(peek_frame_len(&self.crbuf, max), Ok(Some(l)) if self.crbuf.len() >= l);
            if !whole_frame_left || self.core.waiting_on_own() {
                self.core.client_gone(End::ClientGone);
            }
        }
    }

    /// Parses a big statement on a blocking thread, for the guard's cache.
    async fn warm_guard(&self, body: Vec<u8>) {
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let sql = body.split(|&b| b == 0);
            // A Query's text, or a Parse's name then text.
            let texts: Vec<&[u8]> = sql.take(2).collect();
            for t in texts {
                let _ = shared.guard.inspect(t);
            }
        })
        .await;
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Acquire => match self.acquire().await {
                Some(Ok(mut conn)) => {
                    self.cancel_slot.set(Some((conn.pid, conn.secret)));
                    let state = ConnState {
                        pid: conn.pid,
                        prepared: std::mem::take(&mut conn.prepared),
                        identity_prepared: conn.identity_prepared,
                    };
                    self.upstream = Some(conn);
                    self.core.attach(state);
                }
                Some(Err((code, message))) => self.core.attach_failed(code, &message),
                None => self.core.client_gone(End::ClientGone),
            },
            Action::Release(state) => {
                self.cancel_slot.set(None);
                if let Some(mut conn) = self.upstream.take() {
                    crate::admin::hook::released(self.database.label());
                    if conn.rbuf.is_empty() {
                        conn.prepared = state.prepared;
                        conn.identity_prepared = state.identity_prepared;
                        conn.release();
                    }
                    // Otherwise the server sent more than was owed: the
                    // connection drops, closed.
                }
            }
            Action::Close => {
                self.cancel_slot.set(None);
                if self.upstream.take().is_some() {
                    crate::admin::hook::released(self.database.label());
                }
            }
            Action::Verify(token) => {
                let verdict = match self.core.service() {
                    // Boxed: a verification may fetch keys, a large future
                    // that would otherwise size every client's task.
                    Some(service) => Box::pin(self.database.auth().verify_inband(&token, &service))
                        .await
                        .map_err(|e| {
                            (e.sqlstate(), format!("rowgate: rowgate.token refused: {e}"))
                        }),
                    None => Err((
                        "42501",
                        crate::auth::inband::not_a_service_message().to_string(),
                    )),
                };
                self.core.verified(&token, verdict);
            }
        }
    }

    /// Borrows a connection, watching the client meanwhile: None if the
    /// client left while it waited. A shutdown or the user's transaction
    /// rate refuses it first.
    async fn acquire(&mut self) -> Option<Result<PooledConn, Refusal>> {
        if let Err(refused) = crate::admin::hook::before_acquire() {
            return Some(Err(refused));
        }
        let database = self.database.clone();
        let acquire = database.pool().acquire();
        tokio::pin!(acquire);
        loop {
            let room = self.crbuf.len() < READ_AHEAD && !self.client_eof;
            tokio::select! {
                r = &mut acquire => {
                    crate::admin::hook::acquired(r.as_ref().ok().map(|c| c.pid));
                    return Some(r.map_err(|e| (e.sqlstate(), format!("rowgate: {e}"))));
                }
                r = self.client.read_more(&mut self.crbuf), if room => match r {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => from_client(n),
                },
            }
        }
    }

    /// Writes what the core produced: upstream first, then to the client.
    async fn write_out(&mut self) {
        // Bytes for the server are written in `wait`, together with reading
        // its replies: a pipelining client can have more in flight than the
        // sockets hold, and the server stops reading while its replies are
        // not read.
        if self.upstream.is_none() {
            self.core.server_out().clear();
        }
        if !self.core.client_out().is_empty() && self.core.ended().is_none() {
            let result = self.client.write_all(self.core.client_out()).await;
            self.core.client_out().clear();
            if result.is_err() {
                self.core.client_gone(End::ClientGone);
            }
        }
        if self.core.ended().is_some()
            && !matches!(self.core.ended(), Some(e) if e.fatal().is_some())
        {
            self.core.client_out().clear();
        }
        if !self.crbuf.is_empty() || !self.core.detached() {
            return;
        }
        // An idle client keeps no buffers: thousands of idle clients then
        // cost little more than their sockets and tasks.
        // Unconditionally: an empty buffer split from a larger one (the
        // handshake's) may show no capacity and still keep that allocation.
        self.crbuf = BytesMut::new();
        if self.core.client_out().capacity() > 4096 {
            *self.core.client_out() = BytesMut::new();
        }
    }

    /// Waits for the next thing to happen.
    async fn wait(&mut self) -> Event {
        let cfg = &self.shared.config.listen;
        let (idle, in_txn) = (cfg.client_idle_timeout, cfg.idle_in_transaction_timeout);
        let read_client = self.core.ended().is_none()
            && !self.client_eof
            && (self.core.wants_client() || self.crbuf.len() < READ_AHEAD);
        let detached = self.core.detached() && self.core.ended().is_none();
        let idle_in_txn = self.core.idle_in_transaction() && self.core.ended().is_none();
        // rowgate's own waits, and a client that left with messages the core
        // has not taken yet (they wait for a reply that may never come).
        let deadline_due =
            self.core.waiting_on_own() || (self.client_eof && self.core.ended().is_none());
        self.own_deadline = match (deadline_due, self.own_deadline) {
            (true, Some(at)) => Some(at),
            (true, None) => Some(Instant::now() + OWN_WAIT),
            (false, _) => None,
        };
        let own_deadline = self.own_deadline;
        let between = self.core.between_transactions() && self.core.ended().is_none();
        let to_server = self.core.server_out();
        let mut conn = self.upstream.as_deref_mut();
        // The server's socket in one future, writing what is owed to it
        // first and reading its replies otherwise: one borrow, where
        // `tokio::io::split` would allocate and lock on every wait.
        let server = std::future::poll_fn(|cx| {
            let Some(c) = conn.as_deref_mut() else {
                return Poll::Pending;
            };
            if !to_server.is_empty() {
                if let Poll::Ready(r) = Pin::new(&mut c.stream).poll_write(cx, to_server) {
                    return Poll::Ready(Event::Wrote(r));
                }
            }
            if c.rbuf.capacity() - c.rbuf.len() < 4096 {
                c.rbuf.reserve(16 * 1024);
            }
            // `read_buf` is cancel-safe, so a fresh one per poll is fine.
            let read = c.stream.read_buf(&mut c.rbuf);
            tokio::pin!(read);
            read.poll(cx).map(Event::Server)
        });
        tokio::select! {
            // Fixed order, no random start: the stop check is cheap, and
            // the server's replies go before more of the client's input.
            biased;
            m = crate::admin::hook::stop_requested(between) => Event::Stop(m),
            e = server => e,
            r = self.client.read_more(&mut self.crbuf), if read_client => Event::Client(r),
            // The timers are made only when their branch is on (an async
            // block is built but not polled otherwise): reading the clock
            // and registering three timers on every wake-up showed in the
            // profile.
            _ = async { sleep(idle).await }, if detached && !idle.is_zero() => Event::Idle,
            _ = async { sleep(in_txn).await }, if idle_in_txn && !in_txn.is_zero() => Event::IdleInTransaction,
            _ = async { sleep_until(own_deadline.unwrap_or_else(Instant::now)).await }, if own_deadline.is_some() => Event::OwnDeadline,
        }
    }

    /// Writes what the core has for the server now, without waiting: the
    /// socket nearly always takes it, and the wait for the reply then
    /// starts at once instead of after one more turn of the loop.
    fn flush_upstream_now(&mut self) {
        let Some(c) = self.upstream.as_deref_mut() else {
            return;
        };
        let out = self.core.server_out();
        if out.is_empty() {
            return;
        }
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(r) = Pin::new(&mut c.stream).poll_write(&mut cx, out) {
            self.wrote(r);
        }
    }

    /// The server took `n` bytes (or the write failed).
    fn wrote(&mut self, result: std::io::Result<usize>) {
        match result {
            Ok(n) => {
                use bytes::Buf;
                self.core.server_out().advance(n);
                if self.core.server_out().is_empty() {
                    // Each flush upstream is at most one round trip; benches
                    // compare this with transactions to show injection adds
                    // none.
                    crate::metrics::incr("rowgate_upstream_writes_total", "");
                }
            }
            Err(e) => self.core.upstream_lost(e.to_string()),
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Client(Ok(0)) | Event::Client(Err(_)) => self.client_eof = true,
            Event::Client(Ok(n)) => from_client(n),
            Event::Server(Ok(0)) => self
                .core
                .upstream_lost("server closed the connection".into()),
            Event::Server(Err(e)) => self.core.upstream_lost(e.to_string()),
            Event::Server(Ok(n)) => {
                crate::metrics::add("rowgate_bytes_total", "from_server", n as i64);
                self.feed_server()
            }
            Event::Wrote(r) => self.wrote(r),
            Event::Idle => self.core.client_gone(End::IdleTimeout),
            Event::IdleInTransaction => self.core.client_gone(End::IdleInTransaction),
            Event::Stop(message) => self.core.client_gone(End::Stopped(message)),
            Event::OwnDeadline if self.client_eof && !self.core.waiting_on_own() => {
                self.core.client_gone(End::ClientGone);
            }
            Event::OwnDeadline => {
                tracing::warn!("the server did not answer rowgate's own statement in time; closing the connection");
                self.core.own_deadline_passed();
            }
        }
    }

    /// Hands the core every whole server message that arrived, while it
    /// holds the connection. Anything left after it gave the connection
    /// back means the server said more than it owed (the connection is then
    /// closed, not returned).
    fn feed_server(&mut self) {
        let Some(conn) = self.upstream.as_mut() else {
            return;
        };
        while self.core.attached() {
            match next_frame(&mut conn.rbuf, MAX_MESSAGE_LEN) {
                Ok(Some(frame)) => self.core.on_server(frame),
                Ok(None) => return,
                Err(e) => {
                    return self
                        .core
                        .upstream_lost(format!("invalid message from server: {e}"))
                }
            }
        }
    }
}

/// Counts bytes a client sent (`rowgate_bytes_total{direction}`).
fn from_client(n: usize) {
    crate::metrics::add("rowgate_bytes_total", "from_client", n as i64);
}
