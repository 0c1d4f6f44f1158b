//! A bounded cache of verified tokens keyed by the token's sha256, so a
//! reconnect storm with the same token does the signature work once. Entries
//! live until the token's `exp`; time claims are re-checked by the caller on
//! every hit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The cache. `T` is the verified token.
pub(crate) struct TokenCache<T> {
    inner: Mutex<Inner<T>>,
    capacity: usize,
}

struct Inner<T> {
    map: HashMap<[u8; 32], Entry<T>>,
    next_seq: u64,
}

struct Entry<T> {
    value: Arc<T>,
    exp: u64,
    seq: u64,
}

impl<T> TokenCache<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        TokenCache {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                next_seq: 0,
            }),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // A panic elsewhere while holding the lock cannot leave the map in a
        // state worse than stale entries, so keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, key: &[u8; 32]) -> Option<Arc<T>> {
        self.lock().map.get(key).map(|e| e.value.clone())
    }

    pub(crate) fn remove(&self, key: &[u8; 32]) {
        self.lock().map.remove(key);
    }

    /// Inserts, first evicting expired entries and then the oldest when full.
    pub(crate) fn insert(&self, key: [u8; 32], value: Arc<T>, exp: u64, now: u64) {
        let mut inner = self.lock();
        if inner.map.len() >= self.capacity && !inner.map.contains_key(&key) {
            inner.map.retain(|_, e| e.exp > now);
            if inner.map.len() >= self.capacity {
                let oldest = inner.map.iter().min_by_key(|(_, e)| e.seq).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    inner.map.remove(&k);
                }
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.map.insert(key, Entry { value, exp, seq });
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_evicts_expired_then_oldest() {
        let c = TokenCache::new(3);
        c.insert([1; 32], Arc::new(1), 100, 0);
        c.insert([2; 32], Arc::new(2), 5, 0);
        c.insert([3; 32], Arc::new(3), 100, 0);
        // Full: the expired entry (exp 5 at now 10) goes first.
        c.insert([4; 32], Arc::new(4), 100, 10);
        assert!(c.get(&[2; 32]).is_none());
        assert_eq!(c.len(), 3);
        // Full again, nothing expired: the oldest goes.
        c.insert([5; 32], Arc::new(5), 100, 10);
        assert!(c.get(&[1; 32]).is_none());
        assert_eq!(c.get(&[5; 32]).as_deref(), Some(&5));
        assert_eq!(c.len(), 3);
        c.remove(&[5; 32]);
        assert_eq!(c.len(), 2);
    }
}
