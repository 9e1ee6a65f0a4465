//! Per-client-IP token buckets for key creation.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Forget a client's bucket once it has been idle this long (it is full again by then).
const IDLE: Duration = Duration::from_secs(120);
/// Sweep idle buckets when the map grows past this many entries.
const SWEEP_AT: usize = 4096;

pub struct RateLimiter {
    /// Burst size and tokens per minute; 0 disables the limit.
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn per_minute(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token for `ip`; `Err(wait)` when none is left (`wait`: until the next one).
    pub fn take(&self, ip: IpAddr) -> Result<(), Duration> {
        self.take_at(ip, Instant::now())
    }

    pub(crate) fn take_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= SWEEP_AT {
            buckets.retain(|_, b| now.saturating_duration_since(b.updated) < IDLE);
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
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
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
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
}
