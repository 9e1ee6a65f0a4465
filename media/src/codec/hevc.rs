//! HEVC: the decoder configuration record and the picture size an SPS gives.

use bytes::Bytes;

use super::avc::{put_param_sets, writable_sets};
use super::bits::{unescape_rbsp, BitReader, ByteReader};
use super::CodecError;

/// NAL unit types of the parameter sets.
const NAL_VPS: u8 = 32;
const NAL_SPS: u8 = 33;
const NAL_PPS: u8 = 34;

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

    /// The hvcC record, what [`HevcConfig::parse`] reads, for parameter sets met in a
    /// bitstream (an RTP publisher's SDP or its in-band VPS, SPS and PPS).
    ///
    /// The profile, tier and level fields are the general profile_tier_level of the first
    /// SPS (its 12 bytes follow the SPS's first byte, H.265 7.3.2.2), and the sub-layer count
    /// and nesting flag come from that byte; chroma format and bit depths are written as
    /// 4:2:0 8-bit (decoders configure from the SPS itself). An SPS too short to hold them
    /// is an error.
    pub fn record(&self) -> Result<Vec<u8>, CodecError> {
        let sps = self.sps.first().ok_or(CodecError::Invalid("no SPS"))?;
        let rbsp = unescape_rbsp(sps.get(2..).ok_or(CodecError::Truncated)?);
        let first = *rbsp.first().ok_or(CodecError::Truncated)?;
        let general_profile_tier_level = rbsp.get(1..13).ok_or(CodecError::Truncated)?;
        let sub_layers = ((first >> 1) & 0x07) + 1;
        let temporal_id_nested = first & 0x01;
        let mut out = vec![1];
        out.extend_from_slice(general_profile_tier_level);
        out.extend_from_slice(&[
            0xF0,
            0x00, // min_spatial_segmentation_idc 0
            0xFC, // parallelismType unknown
            0xFD, // chroma_format_idc 1
            0xF8, // bit depth luma 8
            0xF8, // bit depth chroma 8
            0x00,
            0x00, // avgFrameRate unknown
            (sub_layers << 3) | (temporal_id_nested << 2) | (self.nal_length_size.clamp(1, 4) - 1),
        ]);
        let arrays: Vec<(u8, Vec<&[u8]>)> = [
            (NAL_VPS, &self.vps),
            (NAL_SPS, &self.sps),
            (NAL_PPS, &self.pps),
        ]
        .into_iter()
        .map(|(nal_type, sets)| (nal_type, writable_sets(sets, usize::from(u16::MAX))))
        .filter(|(_, sets)| !sets.is_empty())
        .collect();
        out.push(arrays.len() as u8);
        for (nal_type, sets) in arrays {
            // array_completeness: these are all the sets of this type.
            out.push(0x80 | nal_type);
            out.extend_from_slice(&(sets.len() as u16).to_be_bytes());
            put_param_sets(&mut out, &sets);
        }
        Ok(out)
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
