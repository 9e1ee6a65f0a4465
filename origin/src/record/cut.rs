//! Where a recording's files begin and end: a plain state machine, frames in, file events
//! out.
//!
//! A file begins at a keyframe (of video, or of audio in an audio-only stream) with the
//! stream's metadata and sequence headers in front, so that each file plays on its own. A
//! new file begins at the first keyframe once the open one is `segment` long, and after
//! new codec parameters (a sequence header that differs from the one in effect): the open
//! file closes at once and the next begins at the next keyframe; so does a track that
//! begins after the file did. A publisher that
//! reconnects with the same parameters continues the open file (the stream's timeline
//! continues too).

use std::sync::Arc;
use std::time::Duration;

use media::frame::{Frame, MediaKind};

/// What the writer of a recording does next.
#[derive(Debug, Clone)]
pub enum Cut {
    /// Close the open file, if any, and begin one whose time 0 is the stream time
    /// `start_ms`, with `preamble` (metadata, sequence headers) first.
    Open {
        start_ms: u64,
        preamble: Vec<Arc<Frame>>,
    },
    /// Write the frame to the open file.
    Write(Arc<Frame>),
    /// Close the open file; none is open until the next `Open`.
    Close,
}

#[derive(Debug)]
pub struct Cutter {
    segment_ms: u64,
    metadata: Option<Arc<Frame>>,
    video_header: Option<Arc<Frame>>,
    audio_header: Option<Arc<Frame>>,
    /// Where the open file began (stream time).
    open_since: Option<u64>,
}

impl Cutter {
    pub fn new(segment: Duration) -> Cutter {
        Cutter {
            segment_ms: segment.as_millis() as u64,
            metadata: None,
            video_header: None,
            audio_header: None,
            open_since: None,
        }
    }

    /// The next frame of the stream; what to do with it is appended to `out`.
    pub fn push(&mut self, frame: Arc<Frame>, out: &mut Vec<Cut>) {
        if frame.kind == MediaKind::Metadata {
            self.metadata = Some(frame);
            return;
        }
        if frame.sequence_header {
            let slot = match frame.kind {
                MediaKind::Video => &mut self.video_header,
                _ => &mut self.audio_header,
            };
            // New parameters, or a track that begins after the file did (an MP4 file's
            // tracks are fixed when it begins).
            let changed = match slot {
                Some(header) => header.payload != frame.payload,
                None => true,
            };
            *slot = Some(frame);
            if changed && self.open_since.take().is_some() {
                out.push(Cut::Close);
            }
            return;
        }
        // Where a file may begin: a video keyframe, or any audio frame without video.
        let video = self.video_header.is_some();
        let starts_here = match frame.kind {
            MediaKind::Video => video && frame.key,
            _ => !video && self.audio_header.is_some(),
        };
        let begin = match self.open_since {
            None => starts_here,
            Some(since) => starts_here && frame.timestamp.saturating_sub(since) >= self.segment_ms,
        };
        if begin {
            self.open_since = Some(frame.timestamp);
            let preamble = [&self.metadata, &self.video_header, &self.audio_header]
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            out.push(Cut::Open {
                start_ms: frame.timestamp,
                preamble,
            });
        }
        if self.open_since.is_some() {
            out.push(Cut::Write(frame));
        }
    }

    /// The stream ended or the recording stops: close the open file.
    pub fn end(&mut self, out: &mut Vec<Cut>) {
        if self.open_since.take().is_some() {
            out.push(Cut::Close);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(kind: MediaKind, ts: u64, payload: &'static [u8]) -> Arc<Frame> {
        Arc::new(Frame::new(kind, ts, Bytes::from_static(payload)))
    }
    const VSEQ: &[u8] = &[0x17, 0, 0, 0, 0, 1];
    const VSEQ2: &[u8] = &[0x17, 0, 0, 0, 0, 2];
    const KEY: &[u8] = &[0x17, 1, 0, 0, 0, 9];
    const INTER: &[u8] = &[0x27, 1, 0, 0, 0, 9];
    const ASEQ: &[u8] = &[0xAF, 0, 0x12, 0x10];
    const AUDIO: &[u8] = &[0xAF, 1, 9];

    /// The events as (open start | write timestamp | close).
    fn run(cutter: &mut Cutter, frames: &[Arc<Frame>]) -> Vec<String> {
        let mut out = Vec::new();
        for f in frames {
            cutter.push(f.clone(), &mut out);
        }
        out.iter()
            .map(|c| match c {
                Cut::Open { start_ms, preamble } => format!("open {start_ms} +{}", preamble.len()),
                Cut::Write(f) => format!("{}", f.timestamp),
                Cut::Close => "close".into(),
            })
            .collect()
    }

    #[test]
    fn files_begin_at_keyframes_after_the_segment_length() {
        let mut c = Cutter::new(Duration::from_secs(2));
        let frames = [
            frame(MediaKind::Video, 0, VSEQ),
            frame(MediaKind::Audio, 0, ASEQ),
            frame(MediaKind::Video, 0, INTER),
            frame(MediaKind::Video, 40, KEY),
            frame(MediaKind::Audio, 50, AUDIO),
            frame(MediaKind::Video, 1040, KEY),
            frame(MediaKind::Video, 2000, INTER),
            frame(MediaKind::Video, 2040, KEY),
            frame(MediaKind::Audio, 2050, AUDIO),
        ];
        assert_eq!(
            run(&mut c, &frames),
            [
                "open 40 +2",
                "40",
                "50",
                "1040",
                "2000",
                "open 2040 +2",
                "2040",
                "2050"
            ]
        );
        let mut out = Vec::new();
        c.end(&mut out);
        assert!(matches!(out[..], [Cut::Close]));
    }

    #[test]
    fn new_parameters_close_the_file_and_the_next_keyframe_opens_one() {
        let mut c = Cutter::new(Duration::from_secs(600));
        let frames = [
            frame(MediaKind::Video, 0, VSEQ),
            frame(MediaKind::Video, 0, KEY),
            // A reconnect with the same parameters continues the file.
            frame(MediaKind::Video, 100, VSEQ),
            frame(MediaKind::Video, 100, KEY),
            // New ones do not.
            frame(MediaKind::Video, 200, VSEQ2),
            frame(MediaKind::Video, 200, INTER),
            frame(MediaKind::Video, 240, KEY),
        ];
        assert_eq!(
            run(&mut c, &frames),
            ["open 0 +1", "0", "100", "close", "open 240 +1", "240"]
        );
    }

    /// Video that begins after an audio-only file did: that file closes, and the next one,
    /// with both tracks, begins at the first keyframe.
    #[test]
    fn a_track_that_begins_late_begins_a_new_file() {
        let mut c = Cutter::new(Duration::from_secs(600));
        let frames = [
            frame(MediaKind::Audio, 0, ASEQ),
            frame(MediaKind::Audio, 0, AUDIO),
            frame(MediaKind::Audio, 23, AUDIO),
            frame(MediaKind::Video, 30, VSEQ),
            frame(MediaKind::Audio, 46, AUDIO),
            frame(MediaKind::Video, 40, KEY),
            frame(MediaKind::Audio, 69, AUDIO),
        ];
        assert_eq!(
            run(&mut c, &frames),
            ["open 0 +1", "0", "23", "close", "open 40 +2", "40", "69"]
        );
    }

    #[test]
    fn audio_only_streams_begin_at_any_audio_frame() {
        let mut c = Cutter::new(Duration::from_millis(100));
        let frames = [
            frame(MediaKind::Audio, 0, AUDIO),
            frame(MediaKind::Audio, 0, ASEQ),
            frame(MediaKind::Audio, 23, AUDIO),
            frame(MediaKind::Audio, 46, AUDIO),
            frame(MediaKind::Audio, 124, AUDIO),
        ];
        assert_eq!(
            run(&mut c, &frames),
            ["open 23 +1", "23", "46", "open 124 +1", "124"]
        );
    }
}
