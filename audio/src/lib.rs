//! Audio transcoding for streams whose audio a protocol cannot carry as it came: AAC to
//! Opus for WebRTC viewers of an RTMP stream ([`aac_to_opus`]), Opus to AAC for FLV and
//! RTMP viewers of a WebRTC (WHIP) publish ([`opus_to_aac`]). Each is done once per
//! stream, never per viewer. Sans-IO: coded frames with their times in, coded frames with
//! their times out.

pub mod aac_to_opus;
pub mod opus_to_aac;

pub use aac_to_opus::{AacToOpus, AacToOpusError, OpusPacket};
