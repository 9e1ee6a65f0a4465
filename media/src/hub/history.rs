//! The last few HLS segments of a stream, as frames: what lets an HLS packager that starts
//! cold (the first playlist request of a stream, on any node) list several segments at
//! once, so that a player starts at its usual hold-back (three target durations behind
//! live) instead of running dry after one segment; and what an edge starting a pull gets
//! first, so that its packager has the same segments.
//!
//! It keeps every frame from the start of the oldest retained segment (the frames carry
//! their marks), and the sequence headers in effect there, bounded by a number of segments
//! and by bytes.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::frame::{Frame, MediaKind};

pub(super) struct History {
    frames: VecDeque<Arc<Frame>>,
    /// The video and audio sequence headers in effect at the first frame.
    headers: [Option<Arc<Frame>>; 2],
    /// Marked frames (segment starts) in `frames`; the first frame is always one.
    segments: usize,
    bytes: usize,
    /// Complete segments kept (the one being filled comes on top).
    keep: usize,
    max_bytes: usize,
}

impl History {
    pub(super) fn new(keep: usize, max_bytes: usize) -> History {
        History {
            frames: VecDeque::new(),
            headers: [None, None],
            segments: 0,
            bytes: 0,
            keep,
            max_bytes,
        }
    }

    /// Keep `frame`, which the stream just took; `headers` are the video and audio sequence
    /// headers in effect before it.
    pub(super) fn push(&mut self, frame: &Arc<Frame>, headers: [&Option<Arc<Frame>>; 2]) {
        if self.keep == 0 || frame.kind == MediaKind::Metadata {
            return;
        }
        if frame.segment.is_some() {
            if self.frames.is_empty() {
                self.headers = headers.map(Clone::clone);
            }
            self.segments += 1;
        } else if self.frames.is_empty() {
            // Nothing before the first segment start is of use.
            return;
        }
        self.bytes += frame.payload.len();
        self.frames.push_back(frame.clone());
        while self.segments > self.keep + 1 || (self.bytes > self.max_bytes && self.segments > 1) {
            self.drop_oldest_segment();
        }
        if self.bytes > self.max_bytes {
            // One segment alone is too big: start again at the next one.
            self.clear();
        }
    }

    fn drop_oldest_segment(&mut self) {
        let Some(first) = self.frames.pop_front() else {
            return;
        };
        self.forget(&first);
        self.segments -= 1;
        while self.frames.front().is_some_and(|f| f.segment.is_none()) {
            let frame = self.frames.pop_front().expect("checked");
            self.forget(&frame);
        }
    }

    /// `frame` left the front: a header among them is in effect from there on.
    fn forget(&mut self, frame: &Arc<Frame>) {
        self.bytes -= frame.payload.len();
        if frame.sequence_header {
            let slot = usize::from(frame.kind == MediaKind::Audio);
            self.headers[slot] = Some(frame.clone());
        }
    }

    pub(super) fn clear(&mut self) {
        self.frames.clear();
        self.headers = [None, None];
        self.segments = 0;
        self.bytes = 0;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The sequence headers in effect at the first frame.
    pub(super) fn headers(&self) -> impl Iterator<Item = &Arc<Frame>> {
        self.headers.iter().flatten()
    }

    /// Every frame kept, oldest first.
    pub(super) fn frames(&self) -> &VecDeque<Arc<Frame>> {
        &self.frames
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::frame::SegmentMark;

    fn frame(kind: MediaKind, ts: u64, mark: bool, header: bool) -> Arc<Frame> {
        let payload = match (kind, header) {
            (MediaKind::Video, true) => vec![0x17, 0, 0, 0, 0, ts as u8],
            (MediaKind::Video, false) => vec![0x27, 1, 0, 0, 0, ts as u8],
            _ => vec![0xAF, u8::from(!header), ts as u8],
        };
        let mut f = Frame::new(kind, ts, Bytes::from(payload));
        f.segment = mark.then_some(SegmentMark {
            sequence: ts,
            discontinuity: 0,
            timestamp: ts,
            target_duration: 2,
            program_date_ms: 0,
        });
        Arc::new(f)
    }

    #[test]
    fn keeps_the_last_segments_and_the_headers_in_effect_at_their_start() {
        let mut history = History::new(2, usize::MAX);
        let mut video_header = Some(frame(MediaKind::Video, 0, false, true));
        let audio_header = None;
        // Nothing before the first segment start.
        history.push(
            &frame(MediaKind::Video, 1, false, false),
            [&video_header, &audio_header],
        );
        assert!(history.is_empty());
        for ts in 10..60 {
            let f = if ts == 35 {
                // New parameters mid-stream: kept in order, in effect from here on.
                frame(MediaKind::Video, ts, false, true)
            } else {
                frame(MediaKind::Video, ts, ts % 10 == 0, false)
            };
            history.push(&f, [&video_header, &audio_header]);
            if f.sequence_header {
                video_header = Some(f);
            }
        }
        // Segments start at 10, 20, 30, 40, 50: the open one (50) and two complete ones.
        let first = history.frames().front().unwrap();
        assert_eq!(first.timestamp, 30);
        assert_eq!(history.frames().len(), 30);
        assert_eq!(history.headers().next().unwrap().timestamp, 0);
        // One more segment: the header at 35 is now in effect at the start (40).
        history.push(
            &frame(MediaKind::Video, 60, true, false),
            [&video_header, &audio_header],
        );
        assert_eq!(history.frames().front().unwrap().timestamp, 40);
        assert_eq!(history.headers().next().unwrap().timestamp, 35);
    }

    #[test]
    fn bytes_are_bounded() {
        let mut history = History::new(8, 40);
        let none = None;
        for ts in 0..40 {
            history.push(
                &frame(MediaKind::Video, ts, ts % 4 == 0, false),
                [&none, &none],
            );
            assert!(history.bytes <= 40);
            assert!(history.frames().front().is_none_or(|f| f.segment.is_some()));
        }
        // One segment over the bound by itself: nothing is kept until the next one starts.
        let mut history = History::new(8, 10);
        for ts in 0..3 {
            history.push(&frame(MediaKind::Video, ts, ts == 0, false), [&none, &none]);
        }
        assert!(history.is_empty());
    }
}
