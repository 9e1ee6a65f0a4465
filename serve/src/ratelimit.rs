//! Token buckets per client (address, channel key): how often each may do something. Used
//! for player HTTP requests per address, publishes per channel key, and the control API's
//! key creation per address. Idle buckets are forgotten, so the map stays bounded by the
//! clients active in the last two minutes.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Forget a client's bucket once it has been idle this long (it is full again by then).
const IDLE: Duration = Duration::from_secs(120);
/// Sweep idle buckets when the map grows past this many entries.
const SWEEP_AT: usize = 4096;

pub struct RateLimiter<K = std::net::IpAddr> {
    /// Burst size: tokens per `period`; 0 disables the limit.
    capacity: u32,
    period: Duration,
    buckets: Mutex<HashMap<K, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// `per_minute` a minute each, in bursts of as many (0: no limit).
    pub fn per_minute(per_minute: u32) -> Self {
        RateLimiter::new(per_minute, Duration::from_secs(60))
    }

    /// `per_second` a second each, in bursts of as many (0: no limit).
    pub fn per_second(per_second: u32) -> Self {
        RateLimiter::new(per_second, Duration::from_secs(1))
    }

    fn new(capacity: u32, period: Duration) -> Self {
        RateLimiter {
            capacity,
            period,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token for `client`; `Err(wait)` when none is left (`wait`: until the next).
    pub fn take(&self, client: K) -> Result<(), Duration> {
        self.take_at(client, Instant::now())
    }

    pub fn take_at(&self, client: K, now: Instant) -> Result<(), Duration> {
        if self.capacity == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.capacity);
        let per_second = capacity / self.period.as_secs_f64();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= SWEEP_AT {
            buckets.retain(|_, b| now.saturating_duration_since(b.updated) < IDLE);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills() {
        let limiter = RateLimiter::per_minute(60);
        let ip: std::net::IpAddr = [10, 0, 0, 1].into();
        let other: std::net::IpAddr = [10, 0, 0, 2].into();
        let t0 = Instant::now();
        for _ in 0..60 {
            assert!(limiter.take_at(ip, t0).is_ok());
        }
        let wait = limiter.take_at(ip, t0).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::from_millis(900),
            "{wait:?}"
        );
        assert!(limiter.take_at(other, t0).is_ok());
        assert!(limiter
            .take_at(ip, t0 + Duration::from_millis(1010))
            .is_ok());
        assert!(limiter
            .take_at(ip, t0 + Duration::from_millis(1020))
            .is_err());

        let unlimited = RateLimiter::per_minute(0);
        for _ in 0..1000 {
            assert!(unlimited.take_at(ip, t0).is_ok());
        }
    }

    #[test]
    fn per_second_and_any_key() {
        let limiter = RateLimiter::<&str>::per_second(10);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(limiter.take_at("sk_a", t0).is_ok());
        }
        assert!(limiter.take_at("sk_a", t0).is_err());
        assert!(limiter.take_at("sk_b", t0).is_ok());
        assert!(limiter
            .take_at("sk_a", t0 + Duration::from_millis(101))
            .is_ok());
    }
}
