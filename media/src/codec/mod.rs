//! Codec-level headers inside FLV/RTMP audio and video payloads (legacy FLV and
//! Enhanced RTMP), plus the codec configuration records a server needs to inspect:
//! AVC/HEVC decoder configuration records, H.264 and HEVC SPS dimensions, AV1 and VP9
//! configuration records and picture sizes, the Opus identification header, AAC
//! AudioSpecificConfig and ADTS framing.
//!
//! Everything here reads borrowed slices and never panics on malformed input.
//!
//! Files: [`tag`] reads the codec header at the start of an FLV/RTMP audio or video payload;
//! [`avc`], [`hevc`], [`av1`], [`vp9`], [`aac`] and [`opus`] the configuration records of
//! those codecs and the picture sizes their bitstreams give; [`check`] whether a message can
//! be valid for its codec; `bits` the bounds-checked byte and bit readers they share.

pub mod aac;
pub mod av1;
pub mod avc;
mod bits;
pub mod check;
pub mod hevc;
pub mod opus;
pub mod tag;
pub mod vp9;

pub use aac::AacConfig;
pub use av1::{
    av1_obus, av1_sequence_resolution, Av1Config, OBU_PADDING, OBU_SEQUENCE_HEADER,
    OBU_TEMPORAL_DELIMITER, OBU_TILE_LIST,
};
pub use avc::{avc_sps_resolution, length_prefixed_nalus, AvcConfig};
pub use hevc::{hevc_sps_resolution, HevcConfig};
pub use opus::OpusHead;
pub use tag::{
    parse_audio_tag, parse_video_tag, AudioCodec, AudioTagInfo, VideoCodec, VideoFrameKind,
    VideoPacketKind, VideoTagInfo,
};
pub use vp9::{vp9_frame_resolution, Vp9Config};

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
