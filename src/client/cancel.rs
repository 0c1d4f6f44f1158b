//! Cancel requests. Each client gets a BackendKeyData issued by rowgate; a
//! CancelRequest carrying it is sent on to the upstream backend that is
//! running that client's transaction, with that backend's real key, on
//! that client's database. With `[peers]`, the key also says which instance
//! issued it, and a request for another instance's key is forwarded there
//! (see [`super::peers`]).

use super::peers::{Peers, FORWARD_TIMEOUT};
use crate::upstream::Database;
use crate::wire::frontend::cancel_request;
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

/// Where one client's cancel requests go: the upstream backend's (pid,
/// secret), packed into one atomic so a session updates it at every
/// transaction without taking a lock. Zero means "nothing running".
#[derive(Debug, Default)]
pub struct CancelSlot(AtomicU64);

impl CancelSlot {
    /// Records which upstream backend serves the client now.
    pub fn set(&self, target: Option<(i32, i32)>) {
        let packed = target.map_or(0, |(pid, secret)| {
            ((pid as u32 as u64) << 32) | secret as u32 as u64
        });
        self.0.store(packed, Ordering::Release);
    }

    /// The upstream backend serving the client, if any.
    pub fn get(&self) -> Option<(i32, i32)> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            v => Some(((v >> 32) as u32 as i32, v as u32 as i32)),
        }
    }
}

/// A registered client: its slot and its database, whose server the
/// cancel goes to.
type Entry = (Arc<CancelSlot>, Arc<Database>);

/// Maps rowgate-issued keys to the client holding them.
#[derive(Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<(i32, i32), Entry>>,
    peers: Peers,
}

impl CancelRegistry {
    /// A registry issuing keys that carry this instance's peer id.
    pub fn new(peers: Peers) -> CancelRegistry {
        CancelRegistry {
            map: Mutex::default(),
            peers,
        }
    }

    /// Issues a fresh, unused key for a new client of `database`, with its
    /// slot.
    pub fn register(&self, database: Arc<Database>) -> ((i32, i32), Arc<CancelSlot>) {
        let mut rng = rand::thread_rng();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let pid = self.peers.issue_pid(rng.gen_range(1..i32::MAX));
            let key = (pid, rng.gen::<i32>());
            if let std::collections::hash_map::Entry::Vacant(v) = map.entry(key) {
                let slot = Arc::new(CancelSlot::default());
                v.insert((slot.clone(), database));
                return (key, slot);
            }
        }
    }

    /// Forgets a client that disconnected.
    pub fn unregister(&self, key: (i32, i32)) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    /// Forwards a cancel for `key`: to the peer that issued it, or, for a
    /// key of this instance whose client is running something, to that
    /// client's upstream backend. Best effort within [`FORWARD_TIMEOUT`],
    /// like PostgreSQL's own cancel (nothing is answered either way).
    pub async fn cancel(&self, pid: i32, secret: i32) {
        if let Some(peer) = self.peers.owner_elsewhere(pid) {
            // As received: the peer finds the key in its own registry.
            if send(peer, &cancel_request(pid, secret)).await {
                crate::metrics::incr("rowgate_cancels_forwarded_total", "peer");
            }
            return;
        }
        let target = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(pid, secret))
            .and_then(|(slot, db)| Some((slot.get()?, db.clone())));
        let Some(((upid, usecret), db)) = target else {
            return;
        };
        let t = db.pool().target();
        if send(&t.display_addr(), &cancel_request(upid, usecret)).await {
            crate::metrics::incr("rowgate_cancels_forwarded_total", db.label());
        }
    }
}

/// Opens a TCP connection to `addr`, writes `packet` and closes; false when
/// that failed or took longer than [`FORWARD_TIMEOUT`].
async fn send(addr: &str, packet: &[u8]) -> bool {
    let attempt = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(packet).await?;
        tcp.shutdown().await
    };
    match tokio::time::timeout(FORWARD_TIMEOUT, attempt).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(%addr, "cancel request not delivered: {e}");
            false
        }
        Err(_) => {
            tracing::warn!(%addr, "cancel request not delivered within {FORWARD_TIMEOUT:?}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_any_key() {
        let slot = CancelSlot::default();
        assert_eq!(slot.get(), None);
        for target in [(1, 2), (i32::MAX, -1), (12345, i32::MIN)] {
            slot.set(Some(target));
            assert_eq!(slot.get(), Some(target));
        }
        slot.set(None);
        assert_eq!(slot.get(), None);
    }
}
