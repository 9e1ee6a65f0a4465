//! Where HLS segments begin, decided once per stream where it enters the cluster.
//!
//! Every node that packages a stream as HLS (its origin, and each edge that pulls it) must
//! cut the same segments and give them the same numbers, so that a player moved to another
//! edge mid-stream finds the media sequence it was reading. Counting segments locally
//! cannot give that: an edge that starts packaging later has not seen the segments before.
//! So the origin's hub decides: it stamps each keyframe that begins a segment with a
//! [`SegmentMark`], edges receive the marks in-band (an FLV script tag ahead of the
//! keyframe, only on the pull connections) and stamp their copies of the frames with them,
//! and every packager cuts exactly at marked frames and uses their numbers.

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
                })
            }
            _ => None,
        }
    }
}

/// Decides segment starts for one stream: a keyframe (in an audio-only stream, any audio
/// frame) at least the target duration after the current segment's start begins the next
/// segment; the first keyframe after a break always does.
#[derive(Debug)]
pub struct Segmenter {
    target_ms: u64,
    next: SegmentMark,
    started_at: Option<u64>,
    /// A break happened since the last mark: the next keyframe starts a segment and counts
    /// one discontinuity (however many breaks there were).
    broken: bool,
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
            },
            started_at: None,
            broken: false,
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
        // Only a frame a decoder can start from: a keyframe after its track's parameters.
        let configured = match frame.kind {
            MediaKind::Video => self.video_header.is_some(),
            _ => self.audio_header.is_some(),
        };
        if !frame.key || !configured {
            return None;
        }
        let due = match self.started_at {
            None => true,
            Some(start) => self.broken || frame.timestamp.saturating_sub(start) >= self.target_ms,
        };
        if !due {
            return None;
        }
        if self.broken && self.started_at.is_some() {
            self.next.discontinuity += 1;
        }
        self.broken = false;
        self.started_at = Some(frame.timestamp);
        let mark = self.next;
        self.next.sequence += 1;
        Some(mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
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
            marks(&mut s, &frames),
            [
                (0, mark(100, 0)),
                (2000, mark(101, 0)),
                (4000, mark(102, 0))
            ]
        );
    }

    #[test]
    fn a_new_publisher_or_new_parameters_begin_a_segment_with_one_more_discontinuity() {
        let mut s = Segmenter::new(2000, 7);
        assert_eq!(s.observe(&header(1)), None);
        assert_eq!(s.observe(&video(0, true, 1)), Some(mark(7, 0)));
        assert_eq!(s.observe(&header(1)), None, "the same parameters again");
        assert_eq!(s.observe(&video(500, true, 1)), None);
        // Takeover with new parameters: two breaks, one discontinuity.
        let mut new_header = header(2);
        new_header.generation = 2;
        assert_eq!(s.observe(&new_header), None);
        assert_eq!(s.observe(&video(600, false, 2)), None, "not a keyframe");
        assert_eq!(s.observe(&video(700, true, 2)), Some(mark(8, 1)));
        assert_eq!(s.observe(&video(2700, true, 2)), Some(mark(9, 1)));
    }

    #[test]
    fn marks_survive_the_script_tag_round_trip() {
        let m = mark(1_795_000_123, 4);
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
