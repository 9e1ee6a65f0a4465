//! Codec-level headers inside FLV/RTMP audio and video payloads (legacy FLV and
//! Enhanced RTMP), plus the codec configuration records a server needs to inspect:
//! AVC/HEVC decoder configuration records, H.264 SPS dimensions, AAC
//! AudioSpecificConfig and ADTS framing.
//!
//! Everything here reads borrowed slices and never panics on malformed input.
//!
//! Files: [`tag`] reads the codec header at the start of an FLV/RTMP audio or video payload;
//! [`avc`], [`hevc`] and [`aac`] the configuration records of those codecs; [`check`] whether
//! a message can be valid for its codec; `bits` the bounds-checked byte and bit readers they
//! share.

pub mod aac;
pub mod avc;
mod bits;
pub mod check;
pub mod hevc;
pub mod tag;

pub use aac::AacConfig;
pub use avc::{avc_sps_resolution, length_prefixed_nalus, AvcConfig};
pub use hevc::HevcConfig;
pub use tag::{
    parse_audio_tag, parse_video_tag, AudioCodec, AudioTagInfo, VideoCodec, VideoFrameKind,
    VideoPacketKind, VideoTagInfo,
};

/// Why a codec structure could not be parsed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("codec data truncated")]
    Truncated,
    #[error("unsupported configuration record version {0}")]
    UnsupportedVersion(u8),
    #[error("expected an SPS NAL unit, got NAL type {0}")]
    NotSps(u8),
    #[error("reserved AAC sampling frequency index {0}")]
    ReservedSamplingIndex(u8),
    #[error("invalid codec data: {0}")]
    Invalid(&'static str),
}

#[cfg(test)]
mod tests;
