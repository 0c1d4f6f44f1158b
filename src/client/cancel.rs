//! Cancel requests. Each client gets a BackendKeyData issued by rowgate; a
//! CancelRequest carrying it is sent on to the upstream backend that is
//! running that client's transaction, with that backend's real key.

use crate::upstream::Pool;
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

/// Maps rowgate-issued keys to the slot of the client holding them.
#[derive(Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<(i32, i32), Arc<CancelSlot>>>,
}

impl CancelRegistry {
    /// Issues a fresh, unused key for a new client, with its slot.
    pub fn register(&self) -> ((i32, i32), Arc<CancelSlot>) {
        let mut rng = rand::thread_rng();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let key = (rng.gen_range(1..i32::MAX), rng.gen::<i32>());
            if let std::collections::hash_map::Entry::Vacant(v) = map.entry(key) {
                let slot = Arc::new(CancelSlot::default());
                v.insert(slot.clone());
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

    /// Forwards a cancel for `key`, if that client is running something.
    pub async fn cancel(&self, pid: i32, secret: i32, pool: &Pool) {
        let target = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(pid, secret))
            .and_then(|slot| slot.get());
        let Some((upid, usecret)) = target else {
            return;
        };
        let t = pool.target();
        if let Ok(mut tcp) = tokio::net::TcpStream::connect((t.host.as_str(), t.port)).await {
            let _ = tcp.write_all(&cancel_request(upid, usecret)).await;
            crate::metrics::incr("rowgate_cancels_forwarded_total", "");
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
