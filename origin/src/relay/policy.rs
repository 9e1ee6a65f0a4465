//! When a relay tries again: a plain state machine, the time a caller's.
//!
//! A peer that refuses or fails after the connection was made is tried again after 1 s,
//! then 2, 4, ... up to 30 s, so that a misconfigured destination is not hammered. A peer
//! that cannot be reached at all (nothing listens, no route) costs one connect: it is tried
//! every second, so that a restarted server is relayed again within about a second of
//! coming back. A relay that was live for a while starts over at 1 s.

use std::time::Duration;

pub const FIRST_RETRY: Duration = Duration::from_secs(1);
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// Live this long, a relay's next failure is a fresh one.
pub const STEADY: Duration = Duration::from_secs(10);

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The peer could not be reached (connection refused, no route, connect timeout).
    Unreachable,
    /// The peer was reached, then refused, failed or went away.
    Failed,
}

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST_RETRY }
    }
}

impl Backoff {
    /// An attempt failed after being live for `live_for` (zero if it never was): how long to
    /// wait before the next.
    pub fn failed(&mut self, failure: Failure, live_for: Duration) -> Duration {
        if live_for >= STEADY {
            self.next = FIRST_RETRY;
        }
        match failure {
            Failure::Unreachable => FIRST_RETRY,
            Failure::Failed => {
                let wait = self.next;
                self.next = (self.next * 2).min(MAX_RETRY);
                wait
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_double_to_thirty_seconds_and_an_unreachable_peer_is_tried_every_second() {
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..7)
            .map(|_| backoff.failed(Failure::Failed, Duration::ZERO).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        // Down: every second, without forgetting how often it refused before.
        assert_eq!(
            backoff.failed(Failure::Unreachable, Duration::ZERO),
            FIRST_RETRY
        );
        assert_eq!(backoff.failed(Failure::Failed, Duration::ZERO), MAX_RETRY);
        // Live for a while: the next failure starts over.
        assert_eq!(backoff.failed(Failure::Failed, STEADY), FIRST_RETRY);
        assert_eq!(
            backoff.failed(Failure::Failed, Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }
}
