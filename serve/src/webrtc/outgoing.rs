//! What one session puts on the shared payloads of its stream's feed: its own sequence
//! numbers and RTP timestamps, continuous whatever it skips, and its answer to a
//! viewer's keyframe request. Plain state machines: time is a parameter.
//!
//! A keyframe request (PLI, FIR: the viewer lost a reference picture) asks nothing of
//! the publisher. The session resends what its viewer needs to decode again, from the
//! GOP cache: the last keyframe and the pictures after it up to the last one sent, with
//! new sequence numbers and RTP timestamps one tick apart just after the last picture's
//! (a decoder takes them as late pictures to decode at once, not to show in turn), then
//! goes on live. One answer per [`ANSWER_INTERVAL`]: a browser repeats its request until
//! a keyframe comes, and each answer costs a GOP's bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::feed::{Picture, GOP_MAX_PICTURES};

/// At most one keyframe answer this often per session.
pub(super) const ANSWER_INTERVAL: Duration = Duration::from_millis(500);

/// RTP ticks per millisecond: video's 90 kHz clock, Opus's 48 kHz.
const VIDEO_TICKS_PER_MS: u64 = 90;
const OPUS_TICKS_PER_MS: u64 = 48;

/// A session's video: numbering, where it is in the GOP, keyframe answers.
#[derive(Debug)]
pub(super) struct VideoOut {
    next_sequence: u64,
    timestamp_offset: u32,
    /// Pictures wait for a keyframe: at the start and after a skip.
    waiting_for_key: bool,
    /// The pictures sent since the last keyframe, starting with it.
    since_key: Vec<Arc<Picture>>,
    /// The RTP time of the last picture sent.
    last_time: Option<u32>,
    /// After an answer: live pictures go no earlier than this (the answer's last time).
    floor: Option<u32>,
    last_answer: Option<Instant>,
}

/// A picture to resend and its new RTP time.
#[derive(Debug, Clone)]
pub(super) struct Timed {
    pub picture: Arc<Picture>,
    pub time: u32,
}

impl VideoOut {
    /// `first_sequence` and `timestamp_offset` are random (RFC 3550).
    pub fn new(first_sequence: u16, timestamp_offset: u32) -> VideoOut {
        VideoOut {
            next_sequence: u64::from(first_sequence),
            timestamp_offset,
            waiting_for_key: true,
            since_key: Vec::new(),
            last_time: None,
            floor: None,
            last_answer: None,
        }
    }

    /// The next packet's sequence number (64 bits: str0m counts the rollovers).
    pub fn next_sequence(&mut self) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        sequence
    }

    /// The RTP time `picture` goes out at, or `None` when it must not go (an inter
    /// picture while waiting for a keyframe).
    pub fn live(&mut self, picture: &Arc<Picture>) -> Option<u32> {
        if picture.key {
            self.waiting_for_key = false;
            self.since_key.clear();
        } else if self.waiting_for_key {
            return None;
        }
        let natural = self
            .timestamp_offset
            .wrapping_add((picture.pts_ms.max(0) as u64 * VIDEO_TICKS_PER_MS) as u32);
        let time = match self.floor {
            // Still inside an answer's squeezed times: just after them.
            Some(floor) if !after(natural, floor) => {
                let time = floor.wrapping_add(1);
                self.floor = Some(time);
                time
            }
            _ => {
                self.floor = None;
                natural
            }
        };
        if self.since_key.len() < GOP_MAX_PICTURES {
            self.since_key.push(picture.clone());
        } else {
            // Too long a GOP to answer from: the next keyframe will do.
            self.since_key.clear();
        }
        self.last_time = Some(time);
        Some(time)
    }

    /// The session lost pictures (it fell behind): the next one sent is a keyframe.
    pub fn lost(&mut self) {
        self.waiting_for_key = true;
        self.since_key.clear();
    }

    /// A keyframe request at `now`: the pictures to resend at their new times (none when
    /// an answer went out less than [`ANSWER_INTERVAL`] ago, or there is nothing to
    /// resend: the next keyframe is coming anyway).
    pub fn keyframe_request(&mut self, now: Instant) -> Vec<Timed> {
        let recent = self
            .last_answer
            .is_some_and(|at| now.saturating_duration_since(at) < ANSWER_INTERVAL);
        let (Some(last), false, false) = (self.last_time, recent, self.waiting_for_key) else {
            return Vec::new();
        };
        if self.since_key.is_empty() {
            return Vec::new();
        }
        self.last_answer = Some(now);
        let answer: Vec<Timed> = (self.since_key.iter())
            .zip(1u32..)
            .map(|(picture, tick)| Timed {
                picture: picture.clone(),
                time: last.wrapping_add(tick),
            })
            .collect();
        let end = answer.last().map(|timed| timed.time);
        self.floor = end;
        self.last_time = end;
        answer
    }
}

/// Whether RTP time `a` is after `b` (modulo 2^32, as RTP compares).
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// A session's audio numbering.
#[derive(Debug)]
pub(super) struct AudioOut {
    next_sequence: u64,
    timestamp_offset: u32,
}

impl AudioOut {
    pub fn new(first_sequence: u16, timestamp_offset: u32) -> AudioOut {
        AudioOut {
            next_sequence: u64::from(first_sequence),
            timestamp_offset,
        }
    }

    /// The sequence number and RTP time of the packet at `ms` on the stream's clock.
    pub fn packet(&mut self, ms: u64) -> (u64, u32) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let time = self
            .timestamp_offset
            .wrapping_add(ms.wrapping_mul(OPUS_TICKS_PER_MS) as u32);
        (sequence, time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(pts_ms: i64, key: bool) -> Arc<Picture> {
        Arc::new(Picture {
            codec: media::codec::VideoCodec::Avc,
            payloads: Vec::new(),
            pts_ms,
            key,
        })
    }

    #[test]
    fn pictures_wait_for_a_keyframe_and_keep_their_times() {
        let mut video = VideoOut::new(65_535, 1000);
        assert_eq!(video.live(&picture(0, false)), None);
        assert_eq!(video.live(&picture(40, true)), Some(1000 + 40 * 90));
        assert_eq!(video.live(&picture(80, false)), Some(1000 + 80 * 90));
        // Sequence numbers run on past 16 bits without a jump.
        assert_eq!(video.next_sequence(), 65_535);
        assert_eq!(video.next_sequence(), 65_536);
        // After a skip, inter pictures wait again; the keyframe brings the stream's time.
        video.lost();
        assert_eq!(video.live(&picture(120, false)), None);
        assert_eq!(video.live(&picture(2000, true)), Some(1000 + 2000 * 90));
        assert_eq!(video.next_sequence(), 65_537);
    }

    #[test]
    fn a_keyframe_request_resends_the_gop_squeezed_after_the_last_picture() {
        let start = Instant::now();
        let mut video = VideoOut::new(0, u32::MAX - 100);
        // Nothing sent yet: nothing to answer with.
        assert!(video.keyframe_request(start).is_empty());
        let key = picture(0, true);
        video.live(&key);
        video.live(&picture(40, false));
        let last = video.live(&picture(80, false)).unwrap();
        let answer = video.keyframe_request(start);
        assert_eq!(answer.len(), 3);
        assert!(Arc::ptr_eq(&answer[0].picture, &key));
        let times: Vec<u32> = answer.iter().map(|t| t.time).collect();
        assert_eq!(
            times,
            [
                last.wrapping_add(1),
                last.wrapping_add(2),
                last.wrapping_add(3)
            ]
        );
        // Again at once: rate-limited; after the interval, answered again.
        assert!(video
            .keyframe_request(start + ANSWER_INTERVAL / 2)
            .is_empty());
        assert_eq!(video.keyframe_request(start + ANSWER_INTERVAL).len(), 3);
        // Live goes on at its own time, after the answer's.
        let next = video.live(&picture(120, false)).unwrap();
        assert_eq!(next, (u32::MAX - 100).wrapping_add(120 * 90));
        assert!(after(next, last.wrapping_add(3)));
    }

    #[test]
    fn live_pictures_never_go_before_an_answer() {
        let start = Instant::now();
        let mut video = VideoOut::new(0, 0);
        video.live(&picture(0, true));
        for i in 1..=4 {
            video.live(&picture(i, false));
        }
        // A picture shown before the last one (a B-frame) would fall inside the
        // answer's times: it goes just after them.
        let answer = video.keyframe_request(start);
        let end = answer.last().unwrap().time;
        assert_eq!(end, 4 * 90 + 5);
        assert_eq!(video.live(&picture(3, false)), Some(end + 1));
        let later = video.live(&picture(100, false)).unwrap();
        assert_eq!(later, 100 * 90);
    }

    #[test]
    fn no_answer_while_waiting_for_a_keyframe() {
        let start = Instant::now();
        let mut video = VideoOut::new(0, 0);
        video.live(&picture(0, true));
        video.lost();
        assert!(video.keyframe_request(start).is_empty());
    }

    #[test]
    fn audio_times_are_the_stream_clock_at_48khz() {
        let mut audio = AudioOut::new(7, 5);
        assert_eq!(audio.packet(20), (7, 5 + 960));
        assert_eq!(audio.packet(40), (8, 5 + 1920));
    }
}
