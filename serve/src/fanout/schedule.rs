//! Who is written when: the fan-out's merge-window plan, as plain data. The fan-out task
//! tells [`Schedule`] what happened (a batch arrived, a window ended) and asks it, viewer
//! by viewer, whether that viewer is [`Schedule::is_due`]. Nothing here does I/O or reads
//! a clock: time comes in as a parameter, so the plan is tested without sockets.
//!
//! The plan: a write may cover several batches, one more for each batch interval that fits
//! in the merge window ([`Schedule::batch`] estimates the interval from the stream's own
//! timestamps). Viewers take turns: each has a turn number (consecutive as they join), and
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Batch `seq` arrived; one write covers `per_write` batches now.
    Batch {
        seq: u64,
        per_write: u64,
        lost: bool,
    },
    /// The window of the batch held longest may have ended: it is `now`.
    WindowEnd { now: Instant },
    /// The stream ended: everyone gets what is left.
    All,
}

/// The merge-window plan of one fan-out.
#[derive(Debug, Clone)]
pub struct Schedule {
    window: Duration,
    /// The stream time of the last batch, in milliseconds.
    last_timestamp: Option<u64>,
    /// The stream time between batches, smoothed, in milliseconds (0: not known yet).
    interval: f64,
}

impl Schedule {
    /// A write covers at most this many batches: a window that long is no latency
    /// trade-off any more.
    pub const MAX_PER_WRITE: u64 = 16;

    /// A plan that lets a viewer's batch wait up to `window` for later ones to share its
    /// write (zero: every batch is written at once).
    pub fn new(window: Duration) -> Schedule {
        Schedule {
            window,
            last_timestamp: None,
            interval: 0.0,
        }
    }

    /// Batch `seq` arrived (`None`: the fan-out lost it): who is due now.
    pub fn batch(&mut self, seq: u64, frames: Option<&Batch>) -> Due {
        let per_write = match frames.and_then(|frames| frames.last()) {
            Some(last) => self.per_write(last.timestamp),
            None => 1,
        };
        Due::Batch {
            seq,
            per_write,
            lost: frames.is_none(),
        }
    }

    /// How many batches one write covers, now that a batch ending at stream time
    /// `timestamp` came.
    fn per_write(&mut self, timestamp: u64) -> u64 {
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
        if self.interval < 1.0 {
            return 1;
        }
        let window = self.window.as_secs_f64() * 1000.0;
        ((window / self.interval) as u64 + 1).clamp(1, Self::MAX_PER_WRITE)
    }

    /// Whether a viewer is written in this pass: one with turn `turn`, which `merges` or
    /// not, whose oldest batch not yet written was taken at `held_since`.
    #[inline]
    pub fn is_due(&self, due: Due, merges: bool, turn: u64, held_since: Instant) -> bool {
        match due {
            Due::Batch {
                seq,
                per_write,
                lost,
            } => lost || !merges || (seq + turn).is_multiple_of(per_write),
            Due::WindowEnd { now } => now.saturating_duration_since(held_since) >= self.window,
            Due::All => true,
        }
    }

    /// When to look again, while some viewer holds a batch taken at `oldest_hold`.
    pub fn wake_at(&self, oldest_hold: Option<Instant>) -> Option<Instant> {
        oldest_hold.map(|held| held + self.window)
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

    fn per_write(schedule: &mut Schedule, timestamp: u64) -> u64 {
        match schedule.batch(0, Some(&batch(timestamp))) {
            Due::Batch { per_write, .. } => per_write,
            other => panic!("{other:?}"),
        }
    }

    /// How many batches a write covers under a window, from the stream time between
    /// batches.
    #[test]
    fn turns_fit_the_batches_of_a_window() {
        let covered = |window_ms: u64, timestamps: &[u64]| -> Vec<u64> {
            let mut schedule = Schedule::new(Duration::from_millis(window_ms));
            timestamps
                .iter()
                .map(|&t| per_write(&mut schedule, t))
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

    #[test]
    fn lost_batches_and_edges_are_always_due() {
        let mut schedule = Schedule::new(Duration::from_millis(40));
        let now = Instant::now();
        let lost = schedule.batch(7, None);
        assert!(
            lost == Due::Batch {
                seq: 7,
                per_write: 1,
                lost: true
            }
        );
        for turn in 0..4 {
            assert!(schedule.is_due(lost, true, turn, now));
            let held = Due::Batch {
                seq: 7,
                per_write: 2,
                lost: false,
            };
            assert!(schedule.is_due(held, false, turn, now));
            assert_eq!(schedule.is_due(held, true, turn, now), turn % 2 == 1);
        }
    }

    #[test]
    fn a_window_ends_for_batches_held_that_long() {
        let schedule = Schedule::new(Duration::from_millis(40));
        let t0 = Instant::now();
        let at = |ms| Due::WindowEnd {
            now: t0 + Duration::from_millis(ms),
        };
        assert!(!schedule.is_due(at(39), true, 0, t0));
        assert!(schedule.is_due(at(40), true, 0, t0));
        assert_eq!(
            schedule.wake_at(Some(t0)),
            Some(t0 + Duration::from_millis(40))
        );
        assert_eq!(schedule.wake_at(None), None);
        assert!(schedule.is_due(Due::All, true, 3, t0));
    }

    proptest! {
        /// Over any `per_write` consecutive batches, a merging viewer is due exactly once,
        /// and viewers with consecutive turns are due on different batches.
        #[test]
        fn turns_spread_viewers_over_batches(per_write in 1u64..=16, start in 0u64..1000, turn in 0u64..1000) {
            let schedule = Schedule::new(Duration::from_millis(40));
            let now = Instant::now();
            let due_on = |turn: u64, seq: u64| schedule.is_due(Due::Batch { seq, per_write, lost: false }, true, turn, now);
            let count = (start..start + per_write).filter(|&seq| due_on(turn, seq)).count();
            prop_assert_eq!(count, 1);
            if per_write > 1 {
                for seq in start..start + per_write {
                    prop_assert!(!(due_on(turn, seq) && due_on(turn + 1, seq)));
                }
            }
        }

        /// Driven as the fan-out drives it (a pass on every batch, another when the window
        /// of the oldest held batch ends), no viewer ever gets a batch later than the window
        /// after it was taken, whatever the frame rate, its jitter and the viewers' turns.
        #[test]
        fn no_batch_waits_longer_than_the_window(
            window_ms in 0u64..120,
            gaps in proptest::collection::vec(1u64..80, 1..200),
            turns in proptest::collection::vec(0u64..64, 1..8),
        ) {
            let window = Duration::from_millis(window_ms);
            let mut schedule = Schedule::new(window);
            let t0 = Instant::now();
            // Per viewer: when its oldest unwritten batch was taken, if any.
            let mut held: Vec<Option<Instant>> = vec![None; turns.len()];
            let pass = |due: Due, now: Instant, held: &mut Vec<Option<Instant>>, schedule: &Schedule| -> Result<(), TestCaseError> {
                for (viewer, turn) in turns.iter().enumerate() {
                    if let Some(since) = held[viewer] {
                        if schedule.is_due(due, true, *turn, since) {
                            prop_assert!(now.duration_since(since) <= window, "held {:?}", now.duration_since(since));
                            held[viewer] = None;
                        }
                    }
                }
                Ok(())
            };
            let (mut stream_ms, mut now) = (0u64, t0);
            for (seq, gap) in gaps.iter().enumerate() {
                let next = now + Duration::from_millis(*gap);
                // The fan-out's timer fires before the next batch if a window ends first.
                while let Some(wake) = schedule.wake_at(held.iter().flatten().min().copied()) {
                    if wake >= next {
                        break;
                    }
                    pass(Due::WindowEnd { now: wake }, wake, &mut held, &schedule)?;
                }
                now = next;
                stream_ms += gap;
                for h in held.iter_mut() {
                    h.get_or_insert(now);
                }
                let due = schedule.batch(seq as u64 + 1, Some(&batch(stream_ms)));
                pass(due, now, &mut held, &schedule)?;
            }
        }
    }
}
