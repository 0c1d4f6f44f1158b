//! The few calls the session core makes into this module, each marked
//! `// HOOK(ops)` at its call site. They find the client through a task
//! local set around the whole client task, so the session needs no new
//! field; outside such a task they do nothing.

use super::registry::{ClientEntry, ClientState, StopRequest};
use super::Ops;
use std::future::Future;
use std::sync::Arc;

struct Current {
    entry: Arc<ClientEntry>,
    ops: Ops,
}

tokio::task_local! {
    static CURRENT: Current;
}

/// Runs `f` (one client's startup and session) as client `entry`.
///
/// A plain function, not an `async fn`: an async wrapper would hold `f`
/// twice in every client's task (once as its argument, once inside the
/// scope future it awaits), 3.7 KB per idle client.
pub fn scope<F: Future>(
    entry: Arc<ClientEntry>,
    ops: Ops,
    f: F,
) -> impl Future<Output = F::Output> {
    CURRENT.scope(Current { entry, ops }, f)
}

/// Runs `f` on the current client, if any. By reference: a clone would
/// touch two reference counts on every hook, every transaction.
fn with_current<R>(f: impl FnOnce(&Current) -> R) -> Option<R> {
    CURRENT.try_with(f).ok()
}

/// Message of the 57P01 a client gets when rowgate shuts down.
pub const SHUTDOWN_MESSAGE: &str =
    "terminating connection because rowgate is shutting down; reconnect to another instance";

/// Message of the 57P01 a client gets after an admin `KILL`.
pub const KILL_MESSAGE: &str = "terminating connection due to administrator command (rowgate KILL)";

/// Before the session asks the pool for a connection (a transaction
/// starts): refuses during shutdown and beyond the user's transaction
/// rate, else marks the client as waiting.
pub fn before_acquire() -> Result<(), (&'static str, String)> {
    with_current(|c| {
        if c.entry.stop_request() != StopRequest::None {
            return Err(("57P01", SHUTDOWN_MESSAGE.to_string()));
        }
        if let Err(e) = c.ops.allow_transaction(c.entry.sub()) {
            return Err(("53400", format!("rowgate: {e}")));
        }
        c.entry.set_state(ClientState::Waiting);
        Ok(())
    })
    .unwrap_or(Ok(()))
}

/// After the pool answered: `Some(pid)` of the connection lent, `None`
/// when none was.
pub fn acquired(pid: Option<i32>) {
    with_current(|c| match pid {
        Some(pid) => c.entry.begin_transaction(pid),
        None => c.entry.set_state(ClientState::Idle),
    });
}

/// After the session gave its connection back (the transaction is over);
/// `database` is the metrics label of the database it was on.
pub fn released(database: &'static str) {
    if let Some(Some(elapsed)) = with_current(|c| c.entry.end_transaction()) {
        super::observe_transaction(database, elapsed);
    }
}

/// Completes when the session must close with 57P01: at once after a
/// `KILL` (or the shutdown timeout), and only `between_transactions` when
/// draining. Returns the message.
pub async fn stop_requested(between_transactions: bool) -> &'static str {
    std::future::poll_fn(|cx| {
        with_current(|c| {
            c.entry
                .poll_stopped(cx, between_transactions)
                .map(|req| match req {
                    StopRequest::Kill if c.ops.lifecycle().phase() < super::Phase::Stopping => {
                        KILL_MESSAGE
                    }
                    _ => SHUTDOWN_MESSAGE,
                })
        })
        // Outside a client's task nothing can stop it.
        .unwrap_or(std::task::Poll::Pending)
    })
    .await
}

/// The database the client named in its startup packet.
pub fn startup_database(database: &str) {
    with_current(|c| c.entry.set_database(database));
}
