//! Depacketized access units into FLV tag bodies, the form the hub takes from every
//! publisher: an RTSP publisher's media then flows through the hub like an RTMP publisher's.
//!
//! Video: H.264 as legacy FLV AVC (codec id 7), HEVC as Enhanced RTMP (`hvc1`), each frame
//! with composition time 0 (RTP gives presentation times only) and length-prefixed NAL units.
//! Parameter sets are taken out of frames and become a sequence header whenever they change
//! (and before the first frame), so that players and the hub's GOP cache see them the way
//! an RTMP publisher sends them. Audio: AAC as legacy FLV AAC, Opus as Enhanced RTMP.

use bytes::{BufMut, Bytes, BytesMut};

use super::depacketize::{AccessUnit, NalFormat};
use crate::codec::{AvcConfig, HevcConfig};

/// FLV frame types (upper nibble of a video tag's first byte).
const KEY_FRAME: u8 = 1;
const INTER_FRAME: u8 = 2;

/// Parameter sets of a video stream, by kind, as last seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ParameterSets {
    vps: Vec<Bytes>,
    sps: Vec<Bytes>,
    pps: Vec<Bytes>,
}

/// What a NAL unit is to the FLV builder.
enum NalRole {
    Vps,
    Sps,
    Pps,
    /// A picture a decoder can start at (H.264 IDR, HEVC IRAP).
    RandomAccess,
    Other,
}

fn nal_role(format: NalFormat, nal: &[u8]) -> NalRole {
    let Some(&first) = nal.first() else {
        return NalRole::Other;
    };
    match format {
        NalFormat::H264 => match first & 0x1F {
            5 => NalRole::RandomAccess,
            7 => NalRole::Sps,
            8 => NalRole::Pps,
            _ => NalRole::Other,
        },
        NalFormat::Hevc => match (first >> 1) & 0x3F {
            16..=21 => NalRole::RandomAccess,
            32 => NalRole::Vps,
            33 => NalRole::Sps,
            34 => NalRole::Pps,
            _ => NalRole::Other,
        },
    }
}

/// Access units of one H.264 or HEVC track into FLV video tag bodies.
#[derive(Debug)]
pub struct VideoTagBuilder {
    format: NalFormat,
    sets: ParameterSets,
    /// The parameter sets of the last sequence header made, if any.
    announced: Option<ParameterSets>,
}

impl VideoTagBuilder {
    /// `parameter_sets` are those the SDP gave (sprop-parameter-sets, sprop-vps/sps/pps),
    /// in any order; in-band ones replace them.
    pub fn new(format: NalFormat, parameter_sets: &[Bytes]) -> Self {
        let mut builder = VideoTagBuilder {
            format,
            sets: ParameterSets::default(),
            announced: None,
        };
        builder.take_sets(parameter_sets.iter().cloned());
        builder
    }

    /// Tag bodies for one access unit, all at its timestamp: a sequence header if the
    /// parameter sets are new or changed, then the frame. Until parameter sets that make a
    /// sequence header have been seen, frames are dropped (no player could decode them).
    pub fn push(&mut self, unit: &AccessUnit) -> Vec<Bytes> {
        let mut tags = Vec::new();
        self.take_sets(unit.nal_units.iter().cloned());
        if self.announced.as_ref() != Some(&self.sets) {
            if let Some(header) = self.sequence_header() {
                tags.push(header);
                self.announced = Some(self.sets.clone());
            }
        }
        if self.announced.is_none() {
            return tags;
        }
        let mut key = false;
        let mut pictures = Vec::new();
        for nal in &unit.nal_units {
            match nal_role(self.format, nal) {
                NalRole::Vps | NalRole::Sps | NalRole::Pps => {}
                NalRole::RandomAccess => {
                    key = true;
                    pictures.push(nal);
                }
                NalRole::Other => pictures.push(nal),
            }
        }
        if pictures.is_empty() {
            return tags;
        }
        let frame_type = if key { KEY_FRAME } else { INTER_FRAME };
        let size = pictures.iter().map(|nal| 4 + nal.len()).sum::<usize>();
        let mut tag = BytesMut::with_capacity(8 + size);
        self.put_frame_header(&mut tag, frame_type);
        for nal in pictures {
            // NAL units are bounded by the depacketizer far below 4 GiB.
            tag.put_u32(nal.len() as u32);
            tag.put_slice(nal);
        }
        tags.push(tag.freeze());
        tags
    }

    /// Replace the sets of each kind present in `units` (a kind absent keeps its sets).
    fn take_sets(&mut self, units: impl Iterator<Item = Bytes>) {
        let mut fresh = ParameterSets::default();
        for nal in units {
            match nal_role(self.format, &nal) {
                NalRole::Vps => fresh.vps.push(nal),
                NalRole::Sps => fresh.sps.push(nal),
                NalRole::Pps => fresh.pps.push(nal),
                _ => {}
            }
        }
        for (kind, new) in [
            (&mut self.sets.vps, fresh.vps),
            (&mut self.sets.sps, fresh.sps),
            (&mut self.sets.pps, fresh.pps),
        ] {
            if !new.is_empty() {
                *kind = new;
            }
        }
    }

    /// The sequence header for the current sets, if they make a decoder configuration.
    fn sequence_header(&self) -> Option<Bytes> {
        let sets = &self.sets;
        if sets.sps.is_empty() || sets.pps.is_empty() {
            return None;
        }
        let record = match self.format {
            NalFormat::H264 => AvcConfig::from_parameter_sets(sets.sps.clone(), sets.pps.clone())
                .ok()?
                .record(),
            NalFormat::Hevc => {
                if sets.vps.is_empty() {
                    return None;
                }
                HevcConfig {
                    nal_length_size: 4,
                    vps: sets.vps.clone(),
                    sps: sets.sps.clone(),
                    pps: sets.pps.clone(),
                }
                .record()
                .ok()?
            }
        };
        let mut tag = BytesMut::with_capacity(8 + record.len());
        match self.format {
            NalFormat::H264 => tag.put_slice(&[(KEY_FRAME << 4) | AVC_CODEC_ID, 0, 0, 0, 0]),
            NalFormat::Hevc => {
                tag.put_u8(ENHANCED | (KEY_FRAME << 4) | SEQUENCE_START);
                tag.put_slice(b"hvc1");
            }
        }
        tag.put_slice(&record);
        Some(tag.freeze())
    }

    fn put_frame_header(&self, tag: &mut BytesMut, frame_type: u8) {
        match self.format {
            // Packet type 1 (NAL units), composition time 0.
            NalFormat::H264 => tag.put_slice(&[(frame_type << 4) | AVC_CODEC_ID, 1, 0, 0, 0]),
            NalFormat::Hevc => {
                tag.put_u8(ENHANCED | (frame_type << 4) | CODED_FRAMES);
                tag.put_slice(b"hvc1");
                tag.put_slice(&[0, 0, 0]);
            }
        }
    }
}

const AVC_CODEC_ID: u8 = 7;
/// Enhanced RTMP: the IsExHeader bit, and the packet types used here.
const ENHANCED: u8 = 0x80;
const SEQUENCE_START: u8 = 0;
const CODED_FRAMES: u8 = 1;

/// AAC or Opus frames into FLV audio tag bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTagBuilder {
    /// With the AudioSpecificConfig (the SDP's `config=`).
    Aac {
        config: Bytes,
    },
    Opus {
        channels: u8,
    },
}

/// Legacy FLV AAC: SoundFormat 10; the rate, size and channel bits are fixed by the spec
/// for AAC (44 kHz, 16-bit, stereo) and ignored by decoders, which read the config.
const AAC_SOUND_BYTE: u8 = 0xAF;
/// Enhanced RTMP audio: SoundFormat 9 (ExHeader) in the upper nibble.
const AUDIO_EX_HEADER: u8 = 9 << 4;

impl AudioTagBuilder {
    /// The tag body to send before any frame: the AAC sequence header, or the Opus
    /// SequenceStart with an OpusHead for the SDP's channel count.
    pub fn sequence_header(&self) -> Bytes {
        let mut tag = BytesMut::new();
        match self {
            AudioTagBuilder::Aac { config } => {
                tag.put_slice(&[AAC_SOUND_BYTE, 0]);
                tag.put_slice(config);
            }
            AudioTagBuilder::Opus { channels } => {
                tag.put_u8(AUDIO_EX_HEADER | SEQUENCE_START);
                tag.put_slice(b"Opus");
                // OpusHead (RFC 7845 5.1): version 1, channels, no pre-skip known (RTP does
                // not carry it), 48 kHz input, no gain, mapping family 0.
                tag.put_slice(b"OpusHead");
                tag.put_slice(&[1, (*channels).clamp(1, 2), 0, 0]);
                tag.put_u32_le(48_000);
                tag.put_slice(&[0, 0, 0]);
            }
        }
        tag.freeze()
    }

    /// One frame's tag body.
    pub fn frame(&self, data: &[u8]) -> Bytes {
        let mut tag = BytesMut::with_capacity(5 + data.len());
        match self {
            AudioTagBuilder::Aac { .. } => tag.put_slice(&[AAC_SOUND_BYTE, 1]),
            AudioTagBuilder::Opus { .. } => {
                tag.put_u8(AUDIO_EX_HEADER | CODED_FRAMES);
                tag.put_slice(b"Opus");
            }
        }
        tag.put_slice(data);
        tag.freeze()
    }
}
