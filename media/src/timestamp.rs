//! 64-bit stream time from RTMP's 32-bit wire timestamps.
//!
//! Each track (audio, video) has its own clock. Wire timestamps wrap at 2^32 ms (about 49.7
//! days) and publishers sometimes jump (encoder restarts, broken muxers); the output must
//! stay monotonic per track so players never see time go backwards.
//!
//! A [`StreamClock`] holds both tracks of a stream. Each publisher (generation) is placed
//! on the stream's timeline once, by its first frame of either track, and both tracks
//! follow that one placement, so the publisher's own audio/video offset survives (placing
//! each track on its own would line their first frames up and shift one against the
//! other).

/// A forward step larger than this is a jump, not elapsed time.
const MAX_STEP_MS: i64 = 10_000;
/// Sequence headers further than this from the first frame are not where it starts.
const HEADER_SLACK_MS: i64 = 1_000;
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

    /// Where a sequence header at `wire` goes, without moving the clock: before the
    /// track's first frame, where that frame lands at the earliest; after it, the frame's
    /// place if it is a step forward, else the track's last.
    fn place_header(&self, wire: u32) -> u64 {
        match self.last_wire {
            None => self.base,
            Some(prev) => match i64::from(wire.wrapping_sub(prev) as i32) {
                step @ 0..=MAX_STEP_MS => self.last + step as u64,
                _ => self.last,
            },
        }
    }
}

/// The two tracks of a stream on one timeline.
#[derive(Debug, Default, Clone)]
pub struct StreamClock {
    audio: TrackClock,
    video: TrackClock,
    /// Where the current publisher's timeline was placed: the wire time of its first frame
    /// and the stream time it got. `None` until that frame.
    anchor: Option<(u32, u64)>,
    /// The anchor was taken from a sequence header, whose time may be stale.
    anchor_from_header: bool,
    /// Where the current publisher's first frame lands.
    resume_at: u64,
}

/// One of a stream's two timed tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Audio,
    Video,
}

impl StreamClock {
    /// Map a wire timestamp of `track` to the stream clock.
    pub fn extend(&mut self, track: Track, wire: u32) -> u64 {
        let resume_at = self.resume_at;
        if std::mem::take(&mut self.anchor_from_header) {
            // Headers sent again long before or after the media (a relay that joined
            // mid-stream sends the ones it kept, at their old time) do not place it.
            let (header_wire, _) = self.anchor.unwrap_or((wire, resume_at));
            if i64::from(wire.wrapping_sub(header_wire) as i32).abs() > HEADER_SLACK_MS {
                self.anchor = None;
            }
        }
        let anchor = *self.anchor.get_or_insert((wire, resume_at));
        let clock = match track {
            Track::Audio => &mut self.audio,
            Track::Video => &mut self.video,
        };
        if clock.last_wire.is_none() {
            // This track's first frame of the publisher: as far from the anchor as the
            // publisher put it (never before anything this track handed out).
            let (anchor_wire, anchor_at) = anchor;
            let offset = i64::from(wire.wrapping_sub(anchor_wire) as i32);
            clock.rebase(anchor_at.saturating_add_signed(offset));
        }
        clock.extend(wire)
    }

    /// Where a sequence header of `track` at `wire` goes. Headers do not move a track's
    /// clock, and place the publisher only if its first frame comes within
    /// [`HEADER_SLACK_MS`] of them: one sent again at an old time (as a relay that joined
    /// mid-stream sends the headers it kept) would otherwise anchor the track there, and
    /// the real frames after it would look like a jump.
    pub fn place_header(&mut self, track: Track, wire: u32) -> u64 {
        if self.anchor.is_none() {
            self.anchor = Some((wire, self.resume_at));
            self.anchor_from_header = true;
        }
        match track {
            Track::Audio => self.audio.place_header(wire),
            Track::Video => self.video.place_header(wire),
        }
    }

    /// A new publisher begins: its first frame (of either track) lands at `at`, or right
    /// after the last timestamp handed out if that is later.
    pub fn rebase(&mut self, at: u64) {
        self.anchor = None;
        self.anchor_from_header = false;
        self.resume_at = at.max(self.last());
        self.audio.rebase(self.resume_at);
        self.video.rebase(self.resume_at);
    }

    /// The latest timestamp handed out on either track.
    pub fn last(&self) -> u64 {
        self.audio.last().max(self.video.last())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_tracks_keep_the_publishers_offset() {
        let mut c = StreamClock::default();
        assert_eq!(c.extend(Track::Video, 1000), 0);
        assert_eq!(c.extend(Track::Audio, 1023), 23);
        assert_eq!(c.extend(Track::Video, 1040), 40);
        // The next publisher starts at 500 with audio 10 ms before its video.
        c.rebase(500);
        assert_eq!(c.extend(Track::Audio, 0), 500);
        assert_eq!(c.extend(Track::Video, 10), 510);
        assert_eq!(c.extend(Track::Audio, 23), 523);
    }

    #[test]
    fn a_track_never_goes_back_across_publishers() {
        let mut c = StreamClock::default();
        c.extend(Track::Audio, 0);
        c.extend(Track::Audio, 100);
        c.rebase(50);
        // Asked to start before what the tracks handed out: starts after it.
        assert_eq!(c.extend(Track::Video, 7), 100);
        assert_eq!(
            c.extend(Track::Audio, 0),
            100,
            "before the anchor, held at its last"
        );
    }

    #[test]
    fn headers_at_an_old_time_do_not_move_the_clock() {
        let mut c = StreamClock::default();
        c.rebase(2_000);
        // A relay joining mid-stream: the headers it kept from 0, then the GOP from 13 s.
        assert_eq!(c.place_header(Track::Video, 0), 2_000);
        assert_eq!(c.place_header(Track::Audio, 20), 2_000);
        assert_eq!(c.extend(Track::Video, 13_080), 2_000);
        assert_eq!(c.extend(Track::Audio, 13_093), 2_013);
        assert_eq!(c.extend(Track::Video, 13_113), 2_033);
        // New parameters in mid-stream at their own time, and a header resent late.
        assert_eq!(c.place_header(Track::Audio, 13_200), 2_120);
        assert_eq!(c.place_header(Track::Audio, 40), 2_013);
        assert_eq!(c.extend(Track::Audio, 13_116), 2_036);
    }

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
