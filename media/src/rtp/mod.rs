//! RTP (RFC 3550) for RTSP: packet headers, RTCP sender and receiver reports, the
//! packetizers that turn a stream's frames into RTP for players, and the depacketizers that
//! turn a publisher's RTP back into frames.
//!
//! # One packetizer per stream, shared by every viewer
//!
//! A hub frame is packetized once per stream, not once per viewer: a [`VideoPacketizer`] or
//! [`AudioPacketizer`] is fed the stream's frames in order and numbers the packets itself, so
//! sequence numbers, timestamps and the SSRC are the stream's, and no viewer's copy is ever
//! rewritten. What it returns, [`RtpPackets`], is one contiguous [`Bytes`](bytes::Bytes)
//! holding every packet of the frame already framed for RTSP's interleaved TCP mode (`$`,
//! channel, 16-bit length, packet; RFC 2326 10.12), plus where each packet begins:
//!
//! - a TCP viewer writes [`RtpPackets::interleaved`] as it is, one buffer for the whole frame;
//! - a UDP viewer sends each [`RtpPackets::datagrams`] item, a slice of the same buffer that
//!   skips the 4-byte prefix (a reference count, no copy).
//!
//! The interleaved channel is therefore fixed per track: track N uses channels 2N (RTP) and
//! 2N+1 (RTCP). The RTSP server session answers every TCP SETUP with those channels
//! (clients such as ffmpeg, GStreamer and live555 use the channels the answer gives), so the
//! shared bytes are right for every TCP viewer.
//!
//! A viewer joining mid-stream starts at whatever sequence number the stream is at; the
//! PLAY answer's `RTP-Info` tells it which (see [`crate::rtsp::RtpInfo`]).
//!
//! # Time
//!
//! There is no clock here. RTP timestamps are the frame's milliseconds scaled to the track's
//! clock rate plus an offset the caller picks (RFC 3550 wants a random start); RTCP sender
//! reports take the wall-clock time as a parameter.
//!
//! Files: [`header`] (the fixed header), [`rtcp`] (reports), [`packetize`] (H.264, HEVC,
//! AV1, AAC, Opus into RTP), [`depacketize`] (RTP into access units), [`flv`] (access
//! units into FLV tag bodies for the hub).

pub mod depacketize;
pub mod flv;
pub mod header;
pub mod packetize;
pub mod rtcp;

pub use depacketize::{
    AacDepacketizer, AccessUnit, AuHeaderLayout, AudioFrame, NalFormat, OpusDepacketizer, RtpClock,
    VideoDepacketizer,
};
pub use flv::{AudioTagBuilder, VideoTagBuilder};
pub use header::{RtpHeader, RtpPacket};
pub use packetize::{AudioPacketizer, PacketizerParams, RtpPackets, VideoPacketizer};
pub use rtcp::{RtcpPacket, SenderReport};

/// Why an RTP or RTCP packet could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("packet truncated")]
    Truncated,
    #[error("RTP version {0}, expected 2")]
    Version(u8),
    #[error("padding longer than the packet")]
    Padding,
}

/// The payload space of a packet by default: 1200 bytes keeps a packet with its IP, UDP
/// and RTP headers under the 1280-byte IPv6 minimum MTU, and well under any tunnel's.
pub const DEFAULT_MAX_PAYLOAD: usize = 1200;

/// The RTP clock rate of video (RFC 6184, RFC 7798: always 90 kHz).
pub const VIDEO_CLOCK_RATE: u32 = 90_000;

/// The RTP clock rate of Opus (RFC 7587: always 48 kHz, whatever the coded rate).
pub const OPUS_CLOCK_RATE: u32 = 48_000;
