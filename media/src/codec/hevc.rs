//! HEVC: the decoder configuration record and the picture size an SPS gives.

use bytes::Bytes;

use super::bits::{unescape_rbsp, BitReader, ByteReader};
use super::CodecError;

/// NAL unit type of a sequence parameter set.
const NAL_SPS: u8 = 33;

/// ISO 14496-15 HEVCDecoderConfigurationRecord, reduced to what a server needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcConfig {
    /// Size in bytes of the NALU length prefixes in coded frames (1, 2 or 4 per
    /// spec; 3 is passed through since [`length_prefixed_nalus`] copes with it).
    pub nal_length_size: u8,
    pub vps: Vec<Bytes>,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
}

impl HevcConfig {
    /// Parse an hvcC record; NAL arrays other than VPS/SPS/PPS (e.g. SEI) are skipped.
    ///
    /// The version byte is not checked: some old muxers wrote 0 there.
    pub fn parse(record: &[u8]) -> Result<Self, CodecError> {
        const NAL_VPS: u8 = 32;
        const NAL_PPS: u8 = 34;
        /// Fixed-size fields from configurationVersion through the byte holding
        /// lengthSizeMinusOne.
        const FIXED_LEN: usize = 22;

        let mut r = ByteReader::new(record);
        let fixed = r.take(FIXED_LEN)?;
        let nal_length_size = (fixed[FIXED_LEN - 1] & 0x03) + 1;
        let mut config = Self {
            nal_length_size,
            vps: Vec::new(),
            sps: Vec::new(),
            pps: Vec::new(),
        };
        let num_arrays = r.u8()?;
        for _ in 0..num_arrays {
            let nal_type = r.u8()? & 0x3F;
            let count = usize::from(r.u16()?);
            let mut scratch = Vec::new();
            let target = match nal_type {
                NAL_VPS => &mut config.vps,
                NAL_SPS => &mut config.sps,
                NAL_PPS => &mut config.pps,
                _ => &mut scratch,
            };
            r.param_sets(count, target)?;
        }
        Ok(config)
    }
}

/// Display width and height from an HEVC SPS NAL unit (with its 2-byte NAL header),
/// applying the conformance window (H.265 7.3.2.2). Handles emulation prevention bytes
/// and sub-layer profile/level fields.
pub fn hevc_sps_resolution(sps: &[u8]) -> Result<(u32, u32), CodecError> {
    let header = sps.get(..2).ok_or(CodecError::Truncated)?;
    let nal_type = (header[0] >> 1) & 0x3F;
    if nal_type != NAL_SPS {
        return Err(CodecError::NotSps(nal_type));
    }
    let rbsp = unescape_rbsp(&sps[2..]);
    let mut r = BitReader::new(&rbsp);

    let _vps_id = r.bits(4)?;
    let max_sub_layers_minus1 = r.bits(3)? as usize;
    let _temporal_id_nesting = r.flag()?;
    // profile_tier_level(1, max_sub_layers_minus1): the general part is 88 bits of
    // profile, tier and constraint flags, then general_level_idc.
    r.skip(88 + 8)?;
    let mut sub_layer_profile = [false; 8];
    let mut sub_layer_level = [false; 8];
    for i in 0..max_sub_layers_minus1 {
        sub_layer_profile[i] = r.flag()?;
        sub_layer_level[i] = r.flag()?;
    }
    if max_sub_layers_minus1 > 0 {
        // reserved_zero_2bits for the sub-layers up to 8.
        r.skip(2 * (8 - max_sub_layers_minus1))?;
    }
    for i in 0..max_sub_layers_minus1 {
        if sub_layer_profile[i] {
            r.skip(88)?;
        }
        if sub_layer_level[i] {
            r.skip(8)?;
        }
    }
    let _sps_id = r.ue()?;
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc > 3 {
        return Err(CodecError::Invalid("chroma_format_idc"));
    }
    let separate_colour_plane = chroma_format_idc == 3 && r.flag()?;
    let width = u64::from(r.ue()?);
    let height = u64::from(r.ue()?);
    if width == 0 || height == 0 {
        return Err(CodecError::Invalid("picture size"));
    }
    // conformance_window_flag and offsets (H.265 Table 6-1 for their units).
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    r.cropped_size((width, height), chroma_array_type, 1)
}
