//! The vocabulary every format shares: a [`Frame`] of audio, video or metadata, the
//! [`Batch`]es frames travel in, the [`SegmentMark`] that says where an HLS segment begins,
//! and which [`Tracks`] a stream carries.
//!
//! This module sits at the bottom of the crate: ingest (RTMP, pulled FLV), the hub and every
//! output format (FLV, RTMP, MPEG-TS, HLS) name frames through it, and it names none of
//! them. Each output format adds the encoding of a frame it caches ([`Frame::flv_http_chunk`]
//! in [`crate::flv`], [`Frame::rtmp_chunks`] in [`crate::rtmp::message`]).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::codec::{self, VideoFrameKind, VideoPacketKind};
use crate::rtp::RtpPackets;

/// Kind of media carried by a publisher's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
    /// `onMetaData` as AMF0 (the `@setDataFrame` wrapper removed).
    Metadata,
}

/// One audio, video or metadata message with its 64-bit, per-track monotonic timestamp.
#[derive(Debug)]
pub struct Frame {
    pub kind: MediaKind,
    /// Milliseconds on the stream's clock (continues across publisher reconnects).
    pub timestamp: u64,
    /// A point where a viewer may start decoding: a video keyframe (audio-only streams:
    /// every audio frame).
    pub key: bool,
    pub sequence_header: bool,
    /// Counts publisher sessions of this stream; changes when a publisher takes over.
    pub generation: u32,
    /// Set when an HLS segment begins with this frame.
    pub segment: Option<SegmentMark>,
    pub payload: Bytes,
    /// The frame as an FLV tag in an HTTP chunk, made on first use (see [`crate::flv`]).
    pub(crate) flv_chunk: OnceLock<Bytes>,
    /// The frame as an FLV tag in a WebSocket message, made on first use.
    pub(crate) flv_ws: OnceLock<Bytes>,
    /// The frame as RTMP chunks, made on first use (see [`crate::rtmp::message`]).
    pub(crate) rtmp: OnceLock<Bytes>,
    /// The frame as its stream's RTP packets, made by the hub once the stream has RTSP
    /// players (numbered in stream order, so not on first use: see [`crate::rtp`]).
    pub(crate) rtp: OnceLock<RtpPackets>,
}

impl Frame {
    pub fn new(kind: MediaKind, timestamp: u64, payload: Bytes) -> Frame {
        let (key, sequence_header) = classify(kind, &payload);
        Frame {
            kind,
            timestamp,
            key,
            sequence_header,
            generation: 0,
            segment: None,
            payload,
            flv_chunk: OnceLock::new(),
            flv_ws: OnceLock::new(),
            rtmp: OnceLock::new(),
            rtp: OnceLock::new(),
        }
    }

    /// The frame's RTP packets, once its stream is packetized for RTSP players (none for
    /// metadata and sequence headers).
    pub fn rtp_packets(&self) -> Option<&RtpPackets> {
        self.rtp.get()
    }

    /// The timestamp the frame goes out with in FLV and RTMP. Metadata goes out at 0:
    /// libavformat (ffplay, ffprobe, VLC, OBS) takes a script tag with any other timestamp
    /// for a subtitle stream, and players would show a phantom third track.
    pub fn wire_timestamp(&self) -> u32 {
        match self.kind {
            MediaKind::Metadata => 0,
            _ => self.timestamp as u32,
        }
    }
}

/// Whether a payload is a keyframe and whether it is a sequence header.
fn classify(kind: MediaKind, payload: &[u8]) -> (bool, bool) {
    match kind {
        MediaKind::Video => match codec::parse_video_tag(payload) {
            Some(info) => {
                let seq = info.packet == VideoPacketKind::SequenceHeader;
                let key = !seq
                    && info.frame == VideoFrameKind::Key
                    && info.packet == VideoPacketKind::Frame;
                (key, seq)
            }
            None => (false, false),
        },
        MediaKind::Audio => {
            let seq = codec::parse_audio_tag(payload).is_some_and(|i| i.is_sequence_header);
            (false, seq)
        }
        MediaKind::Metadata => (false, false),
    }
}

/// Frames that go out together: a video frame and what came before it.
pub type Batch = Arc<Vec<Arc<Frame>>>;

/// Stamped on the frame that begins an HLS segment (see [`crate::segment`] for who
/// decides, and how the mark travels from origin to edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentMark {
    /// The segment's media sequence number.
    pub sequence: u64,
    /// Breaks in the stream so far (publisher takeovers, codec changes): the segment's
    /// discontinuity sequence number.
    pub discontinuity: u64,
    /// The marked frame's timestamp on the timeline of the node that decided the mark
    /// (the origin). Every packager writes the segment on that timeline, so a segment is
    /// the same bytes on the origin and on every edge, whenever each started.
    pub timestamp: u64,
    /// EXT-X-TARGETDURATION of the stream's playlists in seconds, decided once per stream
    /// when its first segment ends (0 on the first mark: not decided yet).
    pub target_duration: u64,
    /// The marked frame's wall-clock time on the marking node, Unix milliseconds
    /// (EXT-X-PROGRAM-DATE-TIME; 0: unknown). See [`crate::segment::ProgramDates`].
    pub program_date_ms: u64,
}

/// Which of the two tracks something has: a stream (seen or announced), or what a viewer
/// asked to receive (RTMP receiveAudio / receiveVideo, both by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracks {
    pub audio: bool,
    pub video: bool,
}

impl Tracks {
    pub const NONE: Tracks = Tracks {
        audio: false,
        video: false,
    };
    pub const BOTH: Tracks = Tracks {
        audio: true,
        video: true,
    };
}

impl Default for Tracks {
    fn default() -> Self {
        Tracks::BOTH
    }
}
