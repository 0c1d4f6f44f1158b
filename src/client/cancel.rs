//! Cancel requests. Each client gets a BackendKeyData issued by rowgate; a
//! CancelRequest carrying it is sent on to the upstream backend that is
//! running that client's transaction, with that backend's real key.

use crate::upstream::Pool;
use crate::wire::frontend::cancel_request;
use rand::Rng;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::io::AsyncWriteExt;

/// Maps rowgate-issued keys to the upstream backend currently serving them.
#[derive(Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<(i32, i32), Option<(i32, i32)>>>,
}

impl CancelRegistry {
    /// Issues a fresh, unused key for a new client.
    pub fn register(&self) -> (i32, i32) {
        let mut rng = rand::thread_rng();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let key = (rng.gen_range(1..i32::MAX), rng.gen::<i32>());
            if let std::collections::hash_map::Entry::Vacant(v) = map.entry(key) {
                v.insert(None);
                return key;
            }
        }
    }

    /// Records which upstream backend (pid, secret) serves `key` now.
    pub fn set_target(&self, key: (i32, i32), target: Option<(i32, i32)>) {
        if let Some(slot) = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&key)
        {
            *slot = target;
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
            .copied()
            .flatten();
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
