//! 64-bit stream time from RTMP's 32-bit wire timestamps.
//!
//! Each track (audio, video) has its own clock. Wire timestamps wrap at 2^32 ms (about 49.7
//! days) and publishers sometimes jump (encoder restarts, broken muxers); the output must
//! stay monotonic per track so players never see time go backwards.

/// A forward step larger than this is a jump, not elapsed time.
const MAX_STEP_MS: i64 = 10_000;
/// How far a jump advances the clock: about one frame, so playback carries on smoothly.
const JUMP_STEP_MS: u64 = 20;

#[derive(Debug, Default, Clone)]
pub struct TrackClock {
    /// Last wire timestamp seen, `None` until the first one after a (re)base.
    last_wire: Option<u32>,
    /// Last output timestamp.
    last: u64,
    /// Where the next first frame starts (set by `rebase`).
    base: u64,
}

impl TrackClock {
    /// Last timestamp handed out.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// A new publisher begins: its first frame lands at `at` (>= anything handed out).
    pub fn rebase(&mut self, at: u64) {
        self.last_wire = None;
        self.base = at.max(self.last);
    }

    /// Map a wire timestamp to the stream clock.
    pub fn extend(&mut self, wire: u32) -> u64 {
        let out = match self.last_wire {
            None => self.base,
            Some(prev) => {
                // Wrapping difference: a rollover from 0xFFFF_FFFF to 0 is a small step.
                let step = i64::from(wire.wrapping_sub(prev) as i32);
                if step < 0 {
                    // Small reordering or a backwards jump: hold the clock.
                    self.last
                } else if step > MAX_STEP_MS {
                    self.last + JUMP_STEP_MS
                } else {
                    self.last + step as u64
                }
            }
        };
        self.last_wire = Some(wire);
        self.last = out;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_frame_starts_at_base_then_follows_steps() {
        let mut c = TrackClock::default();
        assert_eq!(c.extend(5000), 0);
        assert_eq!(c.extend(5040), 40);
        assert_eq!(c.extend(5080), 80);
    }

    #[test]
    fn rollover_is_a_small_step() {
        let mut c = TrackClock::default();
        c.extend(u32::MAX - 10);
        assert_eq!(c.extend(29), 40);
    }

    #[test]
    fn backwards_and_forward_jumps_stay_monotonic() {
        let mut c = TrackClock::default();
        c.extend(100_000);
        c.extend(100_040);
        assert_eq!(c.extend(50), 40, "backwards jump holds");
        assert_eq!(c.extend(90), 80, "then follows the new timeline");
        assert_eq!(c.extend(9_000_000), 100, "forward jump advances one step");
        assert_eq!(c.extend(9_000_033), 133);
    }

    #[test]
    fn rebase_continues_after_the_previous_publisher() {
        let mut c = TrackClock::default();
        c.extend(0);
        c.extend(3000);
        c.rebase(3000);
        assert_eq!(c.extend(0), 3000);
        assert_eq!(c.extend(40), 3040);
    }

    proptest::proptest! {
        #[test]
        fn output_never_goes_backwards(wires in proptest::collection::vec(proptest::num::u32::ANY, 1..200)) {
            let mut c = TrackClock::default();
            let mut prev = 0;
            for w in wires {
                let t = c.extend(w);
                proptest::prop_assert!(t >= prev);
                proptest::prop_assert!(t - prev <= MAX_STEP_MS as u64);
                prev = t;
            }
        }
    }
}
