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
    /// On the AAC of a publisher that sent Opus (WHIP), transcoded once at ingest for the
    /// outputs that need AAC: the Opus it was made from, which the others carry instead
    /// ([`Frame::as_published`]).
    pub published_opus: Option<Arc<PublishedOpus>>,
}

/// The Opus a WHIP publisher sent, riding on the AAC made from it: FLV, RTMP and MPEG-TS
/// take the AAC; fMP4 (LL-HLS, HTTP-fMP4, MP4 recordings) and WebRTC take this. Every AAC
/// frame of such a stream carries it, so that its outputs never mix the two.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishedOpus {
    /// On the AAC sequence header: the Opus one (an Enhanced RTMP tag body).
    Header(Bytes),
    /// On an AAC frame: the Opus packets whose time falls in the frame's span (Enhanced
    /// RTMP tag bodies), each at its offset from the frame's timestamp in ms. None when
    /// the publisher's packets were lost there.
    Packets(Vec<(i64, Bytes)>),
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
            published_opus: None,
        }
    }

    /// The frames an output that carries Opus takes for this one, each given to `each`:
    /// the publisher's Opus in place of AAC transcoded from it (the first packet with the
    /// frame's segment mark), else the frame itself.
    pub fn as_published(&self, mut each: impl FnMut(&Frame)) {
        let Some(opus) = &self.published_opus else {
            each(self);
            return;
        };
        let like_this = |timestamp: u64, payload: &Bytes| {
            let mut frame = Frame::new(self.kind, timestamp, payload.clone());
            frame.key = self.key;
            frame.generation = self.generation;
            frame
        };
        match opus.as_ref() {
            PublishedOpus::Header(header) => each(&like_this(self.timestamp, header)),
            PublishedOpus::Packets(packets) => {
                for (i, (offset, packet)) in packets.iter().enumerate() {
                    let mut frame =
                        like_this(self.timestamp.saturating_add_signed(*offset), packet);
                    if i == 0 {
                        frame.segment = self.segment;
                    }
                    each(&frame);
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_payloads::{araw, aseq};

    /// An AAC frame made from a publisher's Opus stands for its packets, at their own
    /// times, the segment mark on the first; its sequence header for the Opus one; a frame
    /// without Opus for itself.
    #[test]
    fn a_transcoded_frame_stands_for_the_opus_it_was_made_from() {
        let published = |frame: &Frame| {
            let mut out = Vec::new();
            frame.as_published(|f| {
                out.push((
                    f.timestamp,
                    f.payload.clone(),
                    f.key,
                    f.sequence_header,
                    f.segment,
                ))
            });
            out
        };
        let plain = Frame::new(MediaKind::Audio, 100, araw(1));
        assert_eq!(published(&plain), [(100, araw(1), false, false, None)]);
        let opus_header = Bytes::from_static(b"\x90OpusOpusHead");
        let mut header = Frame::new(MediaKind::Audio, 100, aseq(1));
        header.published_opus = Some(Arc::new(PublishedOpus::Header(opus_header.clone())));
        assert_eq!(published(&header), [(100, opus_header, false, true, None)]);
        let mark = SegmentMark {
            sequence: 3,
            discontinuity: 0,
            timestamp: 100,
            target_duration: 2,
            program_date_ms: 0,
        };
        let (a, b) = (
            Bytes::from_static(b"\x91Opus\x01"),
            Bytes::from_static(b"\x91Opus\x02"),
        );
        let mut frame = Frame::new(MediaKind::Audio, 100, araw(2));
        frame.key = true;
        frame.segment = Some(mark);
        frame.published_opus = Some(Arc::new(PublishedOpus::Packets(vec![
            (-15, a.clone()),
            (5, b.clone()),
        ])));
        assert_eq!(
            published(&frame),
            [
                (85, a, true, false, Some(mark)),
                (105, b, true, false, None)
            ]
        );
        // Packets lost there: nothing, not the AAC.
        frame.published_opus = Some(Arc::new(PublishedOpus::Packets(Vec::new())));
        assert!(published(&frame).is_empty());
    }
}
