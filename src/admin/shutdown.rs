//! Graceful and fast shutdown (docs/operations.md, "Draining").

use super::lifecycle::{Phase, ShutdownMode};
use super::registry::StopRequest;
use crate::client::Shared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long closed clients get to go away after being told to.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Shuts rowgate down and returns when every client is gone (or was closed
/// at `[listen] shutdown_timeout`). Graceful: `/readyz` turns unready at
/// once, clients are still accepted for `shutdown_accept_delay`, then the
/// listener stops; running transactions finish and each client gets 57P01
/// between transactions. Fast: every client is closed now.
///
/// A second call waits for the first; a fast one first closes everyone.
pub async fn shutdown(shared: Arc<Shared>, mode: ShutdownMode) {
    let ops = &shared.ops;
    if ops.inner.shutdown_started.swap(true, Ordering::SeqCst) {
        if mode == ShutdownMode::Fast {
            ops.lifecycle().advance(Phase::Stopping);
            ops.clients().request_stop_all(StopRequest::Kill);
        }
        ops.lifecycle().reached(Phase::Stopped).await;
        return;
    }
    let listen = ops.listen();
    ops.lifecycle().advance(Phase::Draining);
    tracing::info!(mode = ?mode, clients = ops.clients().len(), accept_delay = ?listen.shutdown_accept_delay, timeout = ?listen.shutdown_timeout, "shutdown begins; /readyz is unready");
    if mode == ShutdownMode::Graceful && !listen.shutdown_accept_delay.is_zero() {
        tokio::time::sleep(listen.shutdown_accept_delay).await;
    }
    ops.lifecycle().advance(Phase::Stopping);
    let (req, limit) = match mode {
        ShutdownMode::Graceful => (StopRequest::Drain, listen.shutdown_timeout),
        ShutdownMode::Fast => (StopRequest::Kill, KILL_GRACE),
    };
    ops.clients().request_stop_all(req);
    close_idle(&shared);
    if !wait_for_clients(&shared, limit).await {
        tracing::warn!(
            clients = ops.clients().len(),
            "shutdown timeout: closing the clients still connected; their open transactions roll back"
        );
        ops.clients().request_stop_all(StopRequest::Kill);
        wait_for_clients(&shared, KILL_GRACE).await;
    }
    close_idle(&shared);
    ops.lifecycle().advance(Phase::Stopped);
    tracing::info!("shutdown complete");
}

/// Waits up to `limit` for the registry to empty; polls, so the wait has
/// a deadline whatever the clients do. Drained connections come back to
/// the pool meanwhile and are closed.
async fn wait_for_clients(shared: &Shared, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if shared.ops.clients().is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        close_idle(shared);
    }
}

/// Closes the idle upstream connections of every database.
fn close_idle(shared: &Shared) {
    for db in shared.databases.all() {
        db.pool().close_idle();
    }
}
