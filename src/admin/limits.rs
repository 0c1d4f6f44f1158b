//! The per-user transaction rate limit: a token bucket per `sub`, checked
//! synchronously when a transaction starts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept at most; beyond it, full buckets (users at rest) go.
const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets, one per user; `rate` transactions per second with a burst
/// of `rate`. A rate of 0 allows everything.
#[derive(Default)]
pub struct TransactionRate {
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// A transaction refused by the rate limit.
#[derive(Debug, thiserror::Error)]
#[error("too many transactions for this user: rowgate allows {rate} per second ([listen] max_transactions_per_second_per_user); slow down and retry")]
pub struct RateLimited {
    /// The configured rate.
    pub rate: u32,
}

impl TransactionRate {
    /// Whether `sub` may start a transaction now at `rate` per second.
    pub fn allow(&self, sub: &str, rate: u32) -> Result<(), RateLimited> {
        if rate == 0 {
            // Off, as by default: not even the clock is read.
            return Ok(());
        }
        self.allow_at(sub, rate, Instant::now())
    }

    fn allow_at(&self, sub: &str, rate: u32, now: Instant) -> Result<(), RateLimited> {
        if rate == 0 {
            return Ok(());
        }
        let cap = f64::from(rate);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = match buckets.get_mut(sub) {
            Some(b) => b,
            None => {
                if buckets.len() >= MAX_BUCKETS {
                    buckets.retain(|_, b| {
                        b.tokens + now.duration_since(b.at).as_secs_f64() * cap < cap
                    });
                }
                // The user's name is copied only the first time it is seen.
                buckets.entry(sub.to_string()).or_insert(Bucket {
                    tokens: cap,
                    at: now,
                })
            }
        };
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * cap;
        b.tokens = (b.tokens + refill).min(cap);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(RateLimited { rate })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate_per_user() {
        let r = TransactionRate::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            r.allow_at("a", 3, t0).unwrap();
        }
        assert!(r.allow_at("a", 3, t0).is_err(), "burst spent");
        r.allow_at("b", 3, t0)
            .expect("another user has their own bucket");
        let later = t0 + Duration::from_millis(340);
        r.allow_at("a", 3, later).expect("one token refilled");
        assert!(r.allow_at("a", 3, later).is_err());
    }

    #[test]
    fn zero_means_no_limit() {
        let r = TransactionRate::default();
        for _ in 0..1000 {
            r.allow("a", 0).unwrap();
        }
    }
}
