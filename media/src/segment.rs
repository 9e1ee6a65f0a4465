//! Where HLS segments begin, decided once per stream where it enters the cluster.
//!
//! Every node that packages a stream as HLS (its origin, and each edge that pulls it) must
//! cut the same segments and give them the same numbers, so that a player moved to another
//! edge mid-stream finds the media sequence it was reading. Counting segments locally
//! cannot give that: an edge that starts packaging later has not seen the segments before.
//! So the origin's hub decides: it stamps each keyframe that begins a segment with a
//! [`SegmentMark`], edges receive the marks in-band (an FLV script tag ahead of the
//! keyframe, only on the pull connections) and stamp their copies of the frames with them,
//! and every packager cuts exactly at marked frames and uses their numbers, their
//! timestamps and their target duration.
//!
//! The target duration (EXT-X-TARGETDURATION) may not change during a stream (RFC 8216):
//! it is decided when the first segment ends, as the configured segment length or that
//! segment's length if longer, and a later GOP longer than that is cut before it would
//! make a segment too long.

use bytes::Bytes;

use crate::amf::{self, Amf0Value};
use crate::frame::{Frame, MediaKind, SegmentMark};

/// In an HTTP-FLV request's query: send each mark as a script tag ahead of its frame. Edges
/// ask for it when they pull a stream; players never do.
pub const MARKS_QUERY: &str = "segment_marks=1";

/// The name of the FLV script tag that carries a mark from origin to edge.
const SCRIPT_NAME: &str = "onFerroliveSegment";
/// 2^53: the largest of the whole numbers an f64 (AMF0's only number type) holds exactly.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

impl SegmentMark {
    /// The mark as an FLV script tag payload (AMF0).
    pub fn to_script(self) -> Bytes {
        Bytes::from(amf::encode_all(&[
            Amf0Value::String(SCRIPT_NAME.into()),
            Amf0Value::EcmaArray(vec![
                ("sequence".into(), Amf0Value::Number(self.sequence as f64)),
                (
                    "discontinuity".into(),
                    Amf0Value::Number(self.discontinuity as f64),
                ),
                ("timestamp".into(), Amf0Value::Number(self.timestamp as f64)),
                (
                    "targetDuration".into(),
                    Amf0Value::Number(self.target_duration as f64),
                ),
                (
                    "programDate".into(),
                    Amf0Value::Number(self.program_date_ms as f64),
                ),
            ]),
        ]))
    }

    /// The mark in a script tag payload; `None` for any other script data.
    pub fn from_script(payload: &[u8]) -> Option<SegmentMark> {
        let values = amf::decode_all(payload).ok()?;
        match values.as_slice() {
            [Amf0Value::String(name), Amf0Value::EcmaArray(fields)] if name == SCRIPT_NAME => {
                let field = |key: &str| {
                    fields.iter().find_map(|(k, v)| match v {
                        // Whole numbers an f64 holds exactly: far from overflowing anything
                        // a packager adds to them.
                        Amf0Value::Number(n)
                            if k == key && *n >= 0.0 && *n <= MAX_EXACT && n.fract() == 0.0 =>
                        {
                            Some(*n as u64)
                        }
                        _ => None,
                    })
                };
                Some(SegmentMark {
                    sequence: field("sequence")?,
                    discontinuity: field("discontinuity")?,
                    timestamp: field("timestamp")?,
                    target_duration: field("targetDuration")?,
                    // Origins before program dates did not send one.
                    program_date_ms: field("programDate").unwrap_or(0),
                })
            }
            _ => None,
        }
    }
}

/// Gives marks their program date (EXT-X-PROGRAM-DATE-TIME): the wall clock is read when
/// the stream or a discontinuity begins, and later marks are dated from there along the
/// media timeline, so that each segment's date is the one before plus its duration, as
/// players that place segments by their dates need. A publisher whose clock runs apart from
/// the wall's moves the dates apart from the wall clock with it, until the next
/// discontinuity (a new publisher, new codec parameters) dates anew.
#[derive(Debug, Default)]
pub struct ProgramDates {
    /// The discontinuity, timestamp and wall-clock time (Unix ms) dates count from.
    anchor: Option<(u64, u64, u64)>,
}

impl ProgramDates {
    /// Date `mark`, made at `now_unix_ms`.
    pub fn stamp(&mut self, mark: &mut SegmentMark, now_unix_ms: u64) {
        let along = match self.anchor {
            Some((discontinuity, at, date))
                if discontinuity == mark.discontinuity && mark.timestamp >= at =>
            {
                Some(date + (mark.timestamp - at))
            }
            _ => None,
        };
        mark.program_date_ms = along.unwrap_or_else(|| {
            self.anchor = Some((mark.discontinuity, mark.timestamp, now_unix_ms));
            now_unix_ms
        });
    }
}

/// Decides segment starts for one stream. A keyframe (in an audio-only stream, any audio
/// frame) begins the next segment when the current one has lasted the target duration
/// (within half a frame, so that jitter does not push a cut a whole GOP later), or when
/// waiting for the next keyframe would make it longer than the stream's target duration
/// allows; the first keyframe after a break always does. A GOP longer than the target
/// duration allows is cut at the frame that would outgrow it, keyframe or not, and then the
/// next keyframe begins a segment at once, so that cuts fall on keyframes again.
#[derive(Debug)]
pub struct Segmenter {
    target_ms: u64,
    next: SegmentMark,
    started_at: Option<u64>,
    /// The last frame's timestamp and the time between frames (of the track that marks).
    last_frame: Option<u64>,
    frame_interval: u64,
    /// The last keyframe's timestamp and the time between keyframes.
    last_key: Option<u64>,
    key_interval: u64,
    /// A break happened since the last mark: the next keyframe starts a segment and counts
    /// one discontinuity (however many breaks there were).
    broken: bool,
    /// The current segment began at a frame that is not a keyframe (a GOP too long for
    /// the target duration was cut).
    cut_mid_gop: bool,
    generation: Option<u32>,
    video_header: Option<Bytes>,
    audio_header: Option<Bytes>,
}

impl Segmenter {
    /// `first_sequence` numbers the first segment. Origins start at the Unix time in
    /// seconds: segments last a second or more, so a stream published again later (here or
    /// on another origin) numbers beyond anything served before, and segment URLs are
    /// never reused.
    pub fn new(target_ms: u64, first_sequence: u64) -> Segmenter {
        Segmenter {
            target_ms,
            next: SegmentMark {
                sequence: first_sequence,
                discontinuity: 0,
                timestamp: 0,
                target_duration: 0,
                program_date_ms: 0,
            },
            started_at: None,
            last_frame: None,
            frame_interval: 0,
            last_key: None,
            key_interval: 0,
            broken: false,
            cut_mid_gop: false,
            generation: None,
            video_header: None,
            audio_header: None,
        }
    }

    /// Look at the next frame of the stream: the mark it carries, if it begins a segment.
    pub fn observe(&mut self, frame: &Frame) -> Option<SegmentMark> {
        if self.generation.is_some_and(|g| g != frame.generation) {
            // A new publisher: its timestamps and maybe its codec parameters differ.
            self.broken = true;
        }
        self.generation = Some(frame.generation);
        if frame.sequence_header {
            let slot = match frame.kind {
                MediaKind::Video => &mut self.video_header,
                _ => &mut self.audio_header,
            };
            if slot.as_ref().is_some_and(|h| *h != frame.payload) {
                // New codec parameters: players must reset their decoder.
                self.broken = true;
            }
            *slot = Some(frame.payload.clone());
            return None;
        }
        // Frames of the track that marks: video, or audio in an audio-only stream.
        let marking = match frame.kind {
            MediaKind::Video => true,
            MediaKind::Audio => self.video_header.is_none(),
            MediaKind::Metadata => false,
        };
        if !marking {
            return None;
        }
        if let Some(last) = self.last_frame.replace(frame.timestamp) {
            let gap = frame.timestamp.saturating_sub(last);
            if gap > 0 && gap <= 1000 {
                self.frame_interval = gap;
            }
        }
        // Only a frame a decoder can start from: a keyframe after its track's parameters.
        let configured = match frame.kind {
            MediaKind::Video => self.video_header.is_some(),
            _ => self.audio_header.is_some(),
        };
        if !configured {
            return None;
        }
        if frame.key {
            if let Some(last) = self.last_key.replace(frame.timestamp) {
                self.key_interval = frame.timestamp.saturating_sub(last);
            }
        }
        let due = match self.started_at {
            None => frame.key,
            Some(start) => {
                let length = frame.timestamp.saturating_sub(start);
                // Within half a frame of the target counts.
                let long_enough = 2 * length + self.frame_interval >= 2 * self.target_ms;
                let next_key_too_late = length > 0 && self.too_long(length + self.key_interval);
                let keyframe_due =
                    self.broken || self.cut_mid_gop || long_enough || next_key_too_late;
                // After a break, only a keyframe will do: a decoder cannot start elsewhere.
                let cut_here = !self.broken && self.too_long(length + self.frame_interval);
                (frame.key && keyframe_due) || cut_here
            }
        };
        if !due {
            return None;
        }
        if let Some(start) = self.started_at {
            if self.next.target_duration == 0 {
                // The first segment ends: the stream's target duration is fixed now.
                let first = frame.timestamp.saturating_sub(start);
                self.next.target_duration = rounded_seconds(self.target_ms.max(first)).max(1);
            }
        }
        if self.broken && self.started_at.is_some() {
            self.next.discontinuity += 1;
        }
        self.broken = false;
        self.cut_mid_gop = !frame.key;
        self.started_at = Some(frame.timestamp);
        let mut mark = self.next;
        mark.timestamp = frame.timestamp;
        self.next.sequence += 1;
        Some(mark)
    }

    /// Whether a segment `length` ms long would be too long for the stream's target
    /// duration: its EXTINF, rounded, may not exceed it.
    fn too_long(&self, length: u64) -> bool {
        let target = self.next.target_duration;
        target > 0 && length >= target * 1000 + 500
    }
}

/// Milliseconds as whole seconds, rounded to the nearest (half up), as RFC 8216 compares
/// EXTINF with the target duration.
fn rounded_seconds(ms: u64) -> u64 {
    (ms + 500) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_dates_follow_media_time_until_a_discontinuity() {
        let mut dates = ProgramDates::default();
        let mut at = |timestamp: u64, discontinuity: u64, now: u64| {
            let mut m = SegmentMark {
                sequence: 1,
                discontinuity,
                timestamp,
                target_duration: 2,
                program_date_ms: 0,
            };
            dates.stamp(&mut m, now);
            m.program_date_ms
        };
        assert_eq!(at(5_000, 0, 1_000_000), 1_000_000);
        // Arrival jitter, and a publisher running late, do not move dates off the media
        // timeline...
        assert_eq!(at(7_000, 0, 1_002_300), 1_002_000);
        assert_eq!(at(9_000, 0, 1_003_600), 1_004_000);
        assert_eq!(at(11_000, 0, 1_009_100), 1_006_000);
        // ...a discontinuity dates anew.
        assert_eq!(at(13_000, 1, 1_012_000), 1_012_000);
        assert_eq!(at(15_000, 1, 1_014_500), 1_014_000);
    }

    fn video(ts: u64, key: bool, generation: u32) -> Frame {
        let payload = if key {
            vec![0x17, 0x01, 0, 0, 0, 0x65]
        } else {
            vec![0x27, 0x01, 0, 0, 0, 0x41]
        };
        let mut f = Frame::new(MediaKind::Video, ts, Bytes::from(payload));
        f.generation = generation;
        f
    }

    fn header(sps: u8) -> Frame {
        let payload = vec![0x17, 0x00, 0, 0, 0, 0x01, 0x64, sps];
        let mut f = Frame::new(MediaKind::Video, 0, Bytes::from(payload));
        f.generation = 1;
        f
    }

    fn marks(s: &mut Segmenter, frames: &[Frame]) -> Vec<(u64, SegmentMark)> {
        frames
            .iter()
            .filter_map(|f| s.observe(f).map(|m| (f.timestamp, m)))
            .collect()
    }

    fn mark(sequence: u64, discontinuity: u64) -> SegmentMark {
        SegmentMark {
            sequence,
            discontinuity,
            timestamp: 0,
            target_duration: 0,
            program_date_ms: 0,
        }
    }

    /// The marks without their timestamps and target durations.
    fn numbers(marks: Vec<(u64, SegmentMark)>) -> Vec<(u64, SegmentMark)> {
        marks
            .into_iter()
            .map(|(ts, m)| (ts, mark(m.sequence, m.discontinuity)))
            .collect()
    }

    #[test]
    fn keyframes_past_the_target_begin_segments() {
        let mut s = Segmenter::new(2000, 100);
        assert_eq!(s.observe(&video(0, true, 1)), None, "no parameters yet");
        assert_eq!(s.observe(&header(1)), None);
        // 1 s GOPs: every other keyframe begins a segment.
        let frames: Vec<Frame> = (0..=5000)
            .step_by(500)
            .map(|ts| video(ts, ts % 1000 == 0, 1))
            .collect();
        assert_eq!(
            numbers(marks(&mut s, &frames)),
            [
                (0, mark(100, 0)),
                (2000, mark(101, 0)),
                (4000, mark(102, 0))
            ]
        );
    }

    /// Video frames every `step` ms from `from` to `to`, keyframes where `key` says.
    fn run(from: u64, to: u64, step: u64, key: impl Fn(u64) -> bool) -> Vec<Frame> {
        (from..=to)
            .step_by(step as usize)
            .map(|ts| video(ts, key(ts), 1))
            .collect()
    }

    #[test]
    fn marks_carry_their_timestamp_and_the_target_duration_fixed_by_the_first_segment() {
        let mut s = Segmenter::new(2000, 1);
        s.observe(&header(1));
        // A 3 s GOP: the first segment lasts 3 s, so every playlist says 3.
        let got = marks(&mut s, &run(0, 9000, 40, |ts| ts % 3000 == 0));
        let fields: Vec<(u64, u64)> = got
            .iter()
            .map(|(_, m)| (m.timestamp, m.target_duration))
            .collect();
        assert_eq!(fields, [(0, 0), (3000, 3), (6000, 3), (9000, 3)]);
    }

    #[test]
    fn a_keyframe_a_little_early_still_cuts() {
        let mut s = Segmenter::new(2000, 1);
        s.observe(&header(1));
        // 40 ms apart, but the keyframes come 10 ms early.
        let mut frames = run(0, 1960, 40, |ts| ts == 0);
        frames.push(video(1990, true, 1));
        frames.extend(run(2030, 3950, 40, |_| false));
        frames.push(video(3980, true, 1));
        let got = marks(&mut s, &frames);
        let starts: Vec<u64> = got.iter().map(|(ts, _)| *ts).collect();
        assert_eq!(starts, [0, 1990, 3980], "within half a frame of the target");
    }

    #[test]
    fn segments_never_outgrow_the_target_duration() {
        let mut s = Segmenter::new(2000, 1);
        s.observe(&header(1));
        // 2 s GOPs fix the target duration at 2; then the GOP grows to 5 s.
        let mut frames = run(0, 3960, 40, |ts| ts % 2000 == 0);
        frames.extend(run(4000, 16_000, 40, |ts| ts % 5000 == 0 || ts == 4000));
        let got = marks(&mut s, &frames);
        let starts: Vec<(u64, bool)> = got
            .iter()
            .map(|(ts, _)| (*ts, frames.iter().any(|f| f.timestamp == *ts && f.key)))
            .collect();
        // Cut where a segment would last 2.5 s (rounded: 3 > 2), then again at the next
        // keyframe, so that cuts fall on keyframes again.
        assert_eq!(
            starts,
            [
                (0, true),
                (2000, true),
                (4000, true),
                (6480, false),
                (8960, false),
                (10_000, true),
                (12_480, false),
                (14_960, false),
                (15_000, true),
            ]
        );
        let lengths = starts.windows(2).map(|w| w[1].0 - w[0].0);
        assert!(
            lengths.clone().all(|l| l < 2500),
            "{:?}",
            lengths.collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_new_publisher_or_new_parameters_begin_a_segment_with_one_more_discontinuity() {
        let mut s = Segmenter::new(2000, 7);
        let numbers = |m: Option<SegmentMark>| m.map(|m| mark(m.sequence, m.discontinuity));
        assert_eq!(s.observe(&header(1)), None);
        assert_eq!(numbers(s.observe(&video(0, true, 1))), Some(mark(7, 0)));
        assert_eq!(s.observe(&header(1)), None, "the same parameters again");
        assert_eq!(s.observe(&video(500, true, 1)), None);
        // Takeover with new parameters: two breaks, one discontinuity.
        let mut new_header = header(2);
        new_header.generation = 2;
        assert_eq!(s.observe(&new_header), None);
        assert_eq!(s.observe(&video(600, false, 2)), None, "not a keyframe");
        assert_eq!(numbers(s.observe(&video(700, true, 2))), Some(mark(8, 1)));
        assert_eq!(numbers(s.observe(&video(2700, true, 2))), Some(mark(9, 1)));
    }

    #[test]
    fn marks_survive_the_script_tag_round_trip() {
        let m = SegmentMark {
            timestamp: 324_028,
            target_duration: 2,
            program_date_ms: 1_796_000_123_456,
            ..mark(1_795_000_123, 4)
        };
        assert_eq!(SegmentMark::from_script(&m.to_script()), Some(m));
        let metadata = amf::encode_all(&[
            Amf0Value::String("onMetaData".into()),
            Amf0Value::EcmaArray(vec![("sequence".into(), Amf0Value::Number(1.0))]),
        ]);
        assert_eq!(SegmentMark::from_script(&metadata), None);
        assert_eq!(SegmentMark::from_script(&[0xFF, 0x00]), None);
        let huge = amf::encode_all(&[
            Amf0Value::String(SCRIPT_NAME.into()),
            Amf0Value::EcmaArray(vec![
                ("sequence".into(), Amf0Value::Number(1e300)),
                ("discontinuity".into(), Amf0Value::Number(0.0)),
            ]),
        ]);
        assert_eq!(SegmentMark::from_script(&huge), None, "out of range");
    }
}
