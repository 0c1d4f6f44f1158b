//! The process's phases, from serving to exit: what `/readyz`, the accept
//! loop and sessions between transactions look at.

use tokio::sync::watch;

/// Where rowgate is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving.
    Running,
    /// Shutdown began: `/readyz` says unready, new clients are still
    /// accepted (`[listen] shutdown_accept_delay`).
    Draining,
    /// No new clients; clients get 57P01 between transactions.
    Stopping,
    /// Every client is gone (or was closed at the timeout).
    Stopped,
}

impl Phase {
    /// Name for logs and `SHOW CONFIG`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Draining => "draining",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
        }
    }
}

/// How to shut down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownMode {
    /// SIGTERM, `SHUTDOWN`: wait for transactions (see docs/operations.md).
    Graceful,
    /// SIGINT: close every client now.
    Fast,
}

/// The phase, watched by whoever needs it.
#[derive(Debug)]
pub struct Lifecycle {
    phase: watch::Sender<Phase>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            phase: watch::channel(Phase::Running).0,
        }
    }
}

impl Lifecycle {
    /// The phase now.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Moves forward to `next` (never back); returns whether it moved.
    pub fn advance(&self, next: Phase) -> bool {
        self.phase.send_if_modified(|cur| {
            if next > *cur {
                *cur = next;
                true
            } else {
                false
            }
        })
    }

    /// Waits until the phase is at least `at`.
    pub async fn reached(&self, at: Phase) {
        let mut rx = self.phase.subscribe();
        let _ = rx.wait_for(|p| *p >= at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_only_move_forward() {
        let l = Lifecycle::default();
        assert!(l.advance(Phase::Stopping));
        assert!(!l.advance(Phase::Draining));
        assert_eq!(l.phase(), Phase::Stopping);
        l.reached(Phase::Draining).await;
    }
}
