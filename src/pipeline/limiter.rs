//! Crossbar's per-client token buckets (auth-contract §3.7): keyed by
//! `"<client-ip>/<account-id or no_account>"`, 100 tokens, refilled at 10 per second. Only
//! unauthenticated requests spend tokens; every envelope reports the bucket in `tokens`.
//! Refills follow the given [`Clock`], so tests can move time by hand.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::domain::clock::Clock;

pub const MAX_TOKENS: f64 = 100.0;
pub const FILL_PER_SECOND: f64 = 10.0;
/// Full buckets are dropped once the map grows past this, so memory stays bounded.
const PRUNE_ABOVE: usize = 10_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * FILL_PER_SECOND).min(MAX_TOKENS);
        self.at = now;
    }
}

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
    clock: Clock,
}

impl RateLimiter {
    pub fn new(clock: Clock) -> Self {
        Self {
            buckets: Mutex::default(),
            clock,
        }
    }

    /// Takes `cost` tokens; `Err(remaining)` when the bucket cannot pay.
    pub fn take(&self, key: &str, cost: f64) -> Result<u64, u64> {
        self.with_bucket(key, |bucket| {
            if bucket.tokens >= cost {
                bucket.tokens -= cost;
                Ok(bucket.tokens as u64)
            } else {
                Err(bucket.tokens as u64)
            }
        })
    }

    /// What is left in a bucket, without spending.
    pub fn remaining(&self, key: &str) -> u64 {
        self.with_bucket(key, |bucket| bucket.tokens as u64)
    }

    fn with_bucket<T>(&self, key: &str, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let now = self.clock.now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| {
                b.refill(now);
                b.tokens < MAX_TOKENS
            });
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: MAX_TOKENS,
            at: now,
        });
        bucket.refill(now);
        f(bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::clock::ManualClock;
    use std::time::Duration;

    #[test]
    fn a_bucket_empties_refuses_and_refills_at_ten_a_second() {
        let time = ManualClock::new();
        let limiter = RateLimiter::new(time.clock());
        let key = "1.2.3.4/no_account";
        for left in (0..100).rev() {
            assert_eq!(limiter.take(key, 1.0), Ok(left));
        }
        assert_eq!(limiter.take(key, 1.0), Err(0));
        assert_eq!(limiter.remaining("5.6.7.8/no_account"), 100);
        time.advance(Duration::from_millis(500));
        assert_eq!(limiter.remaining(key), 5);
        assert_eq!(limiter.take(key, 2.0), Ok(3));
        time.advance(Duration::from_secs(60));
        assert_eq!(limiter.remaining(key), 100, "never above the bucket's size");
    }
}
