//! Who is written when: the fan-out's merge-window plan, as plain data. The fan-out task
//! tells [`Schedule`] what happened (a batch arrived, a window ended) and asks it, viewer
//! by viewer, whether that viewer is [`Schedule::is_due`]. Nothing here does I/O or reads
//! a clock: time comes in as a parameter, so the plan is tested without sockets.
//!
//! The plan: a write may cover several batches, one more for each batch interval that fits
//! in the viewer's merge window ([`Schedule::batch`] estimates the interval from the
//! stream's own timestamps; players have the node's window, forwards a longer one). Viewers take turns: each has a turn number (consecutive as they join), and
//! a viewer writes at once when batch `seq + turn` is a multiple of the batches per write,
//! and holds otherwise. At 30 fps with a 40 ms window, half the viewers write on even
//! batches and half on odd ones, so each batch is written to only part of the audience and
//! the last viewer of a batch is not held up behind everyone else's writes. Whatever a
//! viewer holds is written when its window ends, even if no batch follows. Viewers that do
//! not merge (edges pulling the stream: their own viewers would wait twice) and a lost
//! batch (everyone skips to a keyframe at once) are always due.

use std::time::{Duration, Instant};

use media::frame::Batch;

/// Why a pass over the viewers happens, which decides who is due in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Due {
    /// Batch `seq` arrived, `interval` milliseconds of stream time after the one before
    /// (smoothed; 0 while not known).
    Batch { seq: u64, interval: f64, lost: bool },
    /// The window of a batch held may have ended: it is `now`.
    WindowEnd { now: Instant },
    /// The stream ended: everyone gets what is left.
    All,
}

/// The merge-window plan of one fan-out: the stream's batch rate, which says how many
/// batches fit in a viewer's window.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    /// The stream time of the last batch, in milliseconds.
    last_timestamp: Option<u64>,
    /// The stream time between batches, smoothed, in milliseconds (0: not known yet).
    interval: f64,
}

impl Schedule {
    /// A write covers at most this many batches: a window that long is no latency
    /// trade-off any more.
    pub const MAX_PER_WRITE: u64 = 16;

    /// Batch `seq` arrived (`None`: the fan-out lost it): who is due now.
    pub fn batch(&mut self, seq: u64, frames: Option<&Batch>) -> Due {
        if let Some(last) = frames.and_then(|frames| frames.last()) {
            self.observe(last.timestamp);
        }
        Due::Batch {
            seq,
            interval: self.interval,
            lost: frames.is_none(),
        }
    }

    /// A batch ending at stream time `timestamp` came.
    fn observe(&mut self, timestamp: u64) {
        if let Some(last) = self.last_timestamp.replace(timestamp) {
            let gap = timestamp.saturating_sub(last) as f64;
            // A jump in stream time (a publisher's restart) says nothing of its rate.
            if gap > 0.0 && gap < 1000.0 {
                self.interval = if self.interval == 0.0 {
                    gap
                } else {
                    self.interval * 0.875 + gap * 0.125
                };
            }
        }
    }

    /// How many batches one write covers for a viewer whose window is `window`, with
    /// batches `interval` ms apart.
    pub fn per_write(window: Duration, interval: f64) -> u64 {
        if interval < 1.0 {
            return 1;
        }
        let window = window.as_secs_f64() * 1000.0;
        ((window / interval) as u64 + 1).clamp(1, Self::MAX_PER_WRITE)
    }

    /// Whether a viewer is written in this pass: one with turn `turn` and merge window
    /// `window` (zero: it does not merge), whose oldest batch not yet written was taken at
    /// `held_since`. One that is not holds its batches until [`Schedule::window_end`].
    #[inline]
    pub fn is_due(due: Due, window: Duration, turn: u64, held_since: Instant) -> bool {
        match due {
            Due::Batch {
                seq,
                interval,
                lost,
            } => {
                lost || window.is_zero()
                    || (seq + turn).is_multiple_of(Self::per_write(window, interval))
            }
            Due::WindowEnd { now } => now.saturating_duration_since(held_since) >= window,
            Due::All => true,
        }
    }

    /// When a viewer with merge window `window` holding a batch taken at `held_since` is
    /// due at the latest.
    pub fn window_end(held_since: Instant, window: Duration) -> Instant {
        held_since + window
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use media::frame::{Frame, MediaKind};
    use proptest::prelude::*;

    use super::*;

    fn batch(timestamp: u64) -> Batch {
        Arc::new(vec![Arc::new(Frame::new(
            MediaKind::Video,
            timestamp,
            Bytes::from_static(&[0x27, 1, 0, 0, 0]),
        ))])
    }

    fn per_write(schedule: &mut Schedule, window: Duration, timestamp: u64) -> u64 {
        match schedule.batch(0, Some(&batch(timestamp))) {
            Due::Batch { interval, .. } => Schedule::per_write(window, interval),
            other => panic!("{other:?}"),
        }
    }

    /// A batch that covers `per_write` batches per write under a 40 ms window.
    fn due_batch(seq: u64, per_write: u64) -> Due {
        Due::Batch {
            seq,
            interval: 40.0 / (per_write as f64 - 0.5),
            lost: false,
        }
    }

    const WINDOW: Duration = Duration::from_millis(40);

    /// How many batches a write covers under a window, from the stream time between
    /// batches.
    #[test]
    fn turns_fit_the_batches_of_a_window() {
        let covered = |window_ms: u64, timestamps: &[u64]| -> Vec<u64> {
            let mut schedule = Schedule::default();
            let window = Duration::from_millis(window_ms);
            timestamps
                .iter()
                .map(|&t| per_write(&mut schedule, window, t))
                .collect()
        };
        // The first batch says nothing of the rate; then 30 fps stream time (33 or 34 ms).
        assert_eq!(covered(40, &[0, 33, 67, 100, 133]), [1, 2, 2, 2, 2]);
        assert_eq!(covered(0, &[0, 33, 67, 100]), [1, 1, 1, 1], "no window");
        assert_eq!(
            covered(30, &[0, 33, 67, 100]),
            [1, 1, 1, 1],
            "under one interval"
        );
        assert_eq!(
            covered(100, &[0, 33, 67, 100]),
            [1, 4, 4, 4],
            "three intervals fit"
        );
        // A jump in stream time (a publisher restarting) leaves the rate as it was.
        assert_eq!(covered(40, &[0, 33, 67, 60_000, 60_033]), [1, 2, 2, 2, 2]);
        assert_eq!(
            covered(60_000, &[0, 1, 2]),
            [1, Schedule::MAX_PER_WRITE, Schedule::MAX_PER_WRITE],
            "bounded"
        );
    }

    /// At 30 pictures a second a player's write covers two, a forward's seven.
    #[test]
    fn forwards_write_less_often_than_players() {
        let mut schedule = Schedule::default();
        for (i, t) in [0, 33, 67, 100, 133].into_iter().enumerate() {
            schedule.batch(i as u64, Some(&batch(t)));
        }
        let Due::Batch { interval, .. } = schedule.batch(5, Some(&batch(167))) else {
            unreachable!()
        };
        assert_eq!(Schedule::per_write(WINDOW, interval), 2);
        assert_eq!(
            Schedule::per_write(crate::fanout::FORWARD_WINDOW, interval),
            7
        );
    }

    #[test]
    fn lost_batches_and_edges_are_always_due() {
        let mut schedule = Schedule::default();
        let now = Instant::now();
        let lost = schedule.batch(7, None);
        assert!(matches!(
            lost,
            Due::Batch {
                seq: 7,
                lost: true,
                ..
            }
        ));
        for turn in 0..4 {
            assert!(Schedule::is_due(lost, WINDOW, turn, now));
            let held = due_batch(7, 2);
            assert!(Schedule::is_due(held, Duration::ZERO, turn, now));
            assert_eq!(Schedule::is_due(held, WINDOW, turn, now), turn % 2 == 1);
        }
    }

    #[test]
    fn a_window_ends_for_batches_held_that_long() {
        let t0 = Instant::now();
        let at = |ms| Due::WindowEnd {
            now: t0 + Duration::from_millis(ms),
        };
        assert!(!Schedule::is_due(at(39), WINDOW, 0, t0));
        assert!(Schedule::is_due(at(40), WINDOW, 0, t0));
        assert!(
            !Schedule::is_due(at(40), WINDOW * 5, 0, t0),
            "a longer window"
        );
        assert_eq!(
            Schedule::window_end(t0, WINDOW),
            t0 + Duration::from_millis(40)
        );
        assert!(Schedule::is_due(Due::All, WINDOW, 3, t0));
    }

    proptest! {
        /// Over any `per_write` consecutive batches, a merging viewer is due exactly once,
        /// and viewers with consecutive turns are due on different batches.
        #[test]
        fn turns_spread_viewers_over_batches(per_write in 1u64..=16, start in 0u64..1000, turn in 0u64..1000) {
            let now = Instant::now();
            let due_on = |turn: u64, seq: u64| Schedule::is_due(due_batch(seq, per_write), WINDOW, turn, now);
            let count = (start..start + per_write).filter(|&seq| due_on(turn, seq)).count();
            prop_assert_eq!(count, 1);
            if per_write > 1 {
                for seq in start..start + per_write {
                    prop_assert!(!(due_on(turn, seq) && due_on(turn + 1, seq)));
                }
            }
        }

        /// Driven as the fan-out drives it (a pass on every batch, another when the first
        /// window of a viewer holding batches ends), no viewer ever gets a batch later than
        /// its own window after it was taken, whatever the frame rate, its jitter, the
        /// viewers' turns and windows (players' and forwards' in one fan-out).
        #[test]
        fn no_batch_waits_longer_than_the_window(
            gaps in proptest::collection::vec(1u64..80, 1..200),
            viewers in proptest::collection::vec((0u64..64, 0u64..250), 1..8),
        ) {
            let mut schedule = Schedule::default();
            let t0 = Instant::now();
            let window = |viewer: usize| Duration::from_millis(viewers[viewer].1);
            // Per viewer: when its oldest unwritten batch was taken, if any.
            let mut held: Vec<Option<Instant>> = vec![None; viewers.len()];
            let pass = |due: Due, now: Instant, held: &mut Vec<Option<Instant>>| -> Result<(), TestCaseError> {
                for (viewer, (turn, _)) in viewers.iter().enumerate() {
                    if let Some(since) = held[viewer] {
                        if Schedule::is_due(due, window(viewer), *turn, since) {
                            prop_assert!(now.duration_since(since) <= window(viewer), "held {:?}", now.duration_since(since));
                            held[viewer] = None;
                        }
                    }
                }
                Ok(())
            };
            let first_window_end = |held: &Vec<Option<Instant>>| {
                (0..held.len())
                    .filter_map(|viewer| Some(Schedule::window_end(held[viewer]?, window(viewer))))
                    .min()
            };
            let (mut stream_ms, mut now) = (0u64, t0);
            for (seq, gap) in gaps.iter().enumerate() {
                let next = now + Duration::from_millis(*gap);
                // The fan-out's timer fires before the next batch if a window ends first.
                while let Some(wake) = first_window_end(&held) {
                    if wake >= next {
                        break;
                    }
                    pass(Due::WindowEnd { now: wake }, wake, &mut held)?;
                }
                now = next;
                stream_ms += gap;
                for h in held.iter_mut() {
                    h.get_or_insert(now);
                }
                let due = schedule.batch(seq as u64 + 1, Some(&batch(stream_ms)));
                pass(due, now, &mut held)?;
            }
        }
    }
}
