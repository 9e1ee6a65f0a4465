//! Blocking playlist reloads go out before part downloads.
//!
//! When a part is finished, every player blocked on it is released at once. The players
//! answered first then ask for the part, which is a hundred times the playlist's bytes, and
//! without a rule those downloads take the CPU while later players still wait for their
//! playlist. So a part download waits, briefly and bounded, until the reloads released
//! with the latest part have been answered: everyone learns of the part at about the same
//! time, and the downloads follow.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The longest a part download waits for the reloads to be answered.
const MAX_HOLD: Duration = Duration::from_millis(50);

#[derive(Default)]
pub(super) struct ReloadGate {
    /// Reloads blocked on a part now.
    blocked: AtomicUsize,
    /// Reloads released by the latest part that have not been answered (or blocked again).
    releasing: AtomicUsize,
    /// Counts releases, so that each blocked reload answers for each release once.
    generation: AtomicU64,
    released: Notify,
}

/// A reload blocked on a part, counted until dropped.
pub(super) struct Blocked<'a> {
    gate: &'a ReloadGate,
    seen: u64,
}

impl ReloadGate {
    pub(super) fn block(&self) -> Blocked<'_> {
        self.blocked.fetch_add(1, Ordering::AcqRel);
        Blocked {
            gate: self,
            seen: self.generation.load(Ordering::Acquire),
        }
    }

    /// A part was finished: the reloads blocked now are about to be answered. Called just
    /// before they are woken.
    pub(super) fn release(&self) {
        self.releasing
            .store(self.blocked.load(Ordering::Acquire), Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn one_answered(&self) {
        let before = self
            .releasing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if before == Ok(1) {
            self.released.notify_waiters();
        }
    }

    /// Wait until the reloads released with the latest part are answered (at most
    /// [`MAX_HOLD`]).
    pub(super) async fn answers_first(&self) {
        let released = self.released.notified();
        tokio::pin!(released);
        // Registered before the check, so that the last answer cannot slip in between.
        released.as_mut().enable();
        if self.releasing.load(Ordering::Acquire) == 0 {
            return;
        }
        let _ = tokio::time::timeout(MAX_HOLD, released).await;
    }
}

impl Blocked<'_> {
    /// The reload woke or is leaving: it has seen the releases so far.
    pub(super) fn woke(&mut self) {
        let now = self.gate.generation.load(Ordering::Acquire);
        if now != self.seen {
            self.seen = now;
            self.gate.one_answered();
        }
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.woke();
        self.gate.blocked.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn downloads_wait_for_the_released_reloads_only() {
        let gate = ReloadGate::default();
        // Nothing released: no wait.
        let started = tokio::time::Instant::now();
        gate.answers_first().await;
        assert!(started.elapsed() < MAX_HOLD / 2);
        let mut a = gate.block();
        let b = gate.block();
        gate.release();
        // A reload blocking after the release is not waited for.
        let late = gate.block();
        // One answered, one left: a download waits until it is, or for MAX_HOLD.
        a.woke();
        a.woke(); // the same release counts once
        let waiting = gate.answers_first();
        drop(b);
        waiting.await;
        assert!(started.elapsed() < MAX_HOLD / 2);
        drop((a, late));
        // Released and never answered: the download goes after MAX_HOLD.
        let _stuck = gate.block();
        gate.release();
        let held = tokio::time::Instant::now();
        gate.answers_first().await;
        assert!(held.elapsed() >= MAX_HOLD);
    }
}
