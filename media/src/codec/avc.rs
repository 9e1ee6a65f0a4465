//! H.264: the decoder configuration record, the resolution an SPS gives, and the NAL units
//! of a length-prefixed (AVCC) frame.

use bytes::Bytes;

use super::bits::{unescape_rbsp, BitReader, ByteReader};
use super::CodecError;

/// ISO 14496-15 AVCDecoderConfigurationRecord (the AVC sequence header payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    pub profile: u8,
    pub compatibility: u8,
    pub level: u8,
    /// Size in bytes of the NALU length prefixes in coded frames (1, 2 or 4 per
    /// spec; 3 is passed through since [`length_prefixed_nalus`] copes with it).
    pub nal_length_size: u8,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
}

impl AvcConfig {
    /// Parse an avcC record. Trailing high-profile extension fields are ignored.
    pub fn parse(record: &[u8]) -> Result<Self, CodecError> {
        let mut r = ByteReader::new(record);
        let version = r.u8()?;
        if version != 1 {
            return Err(CodecError::UnsupportedVersion(version));
        }
        let profile = r.u8()?;
        let compatibility = r.u8()?;
        let level = r.u8()?;
        let nal_length_size = (r.u8()? & 0x03) + 1;
        let num_sps = usize::from(r.u8()? & 0x1F);
        let mut sps = Vec::new();
        r.param_sets(num_sps, &mut sps)?;
        let num_pps = usize::from(r.u8()?);
        let mut pps = Vec::new();
        r.param_sets(num_pps, &mut pps)?;
        Ok(Self {
            profile,
            compatibility,
            level,
            nal_length_size,
            sps,
            pps,
        })
    }

    /// The record for parameter sets met in a bitstream (an RTP publisher's SDP or its
    /// in-band SPS and PPS): profile, compatibility and level are the three bytes after
    /// the first SPS's NAL header, as avcC defines them. Frames get 4-byte lengths.
    pub fn from_parameter_sets(sps: Vec<Bytes>, pps: Vec<Bytes>) -> Result<Self, CodecError> {
        let first = sps.first().ok_or(CodecError::Invalid("no SPS"))?;
        let &[header, profile, compatibility, level, ..] = first.as_ref() else {
            return Err(CodecError::Truncated);
        };
        if header & 0x1F != 7 {
            return Err(CodecError::NotSps(header & 0x1F));
        }
        if sps.len() > 31 || pps.len() > 255 {
            return Err(CodecError::Invalid("too many parameter sets"));
        }
        Ok(Self {
            profile,
            compatibility,
            level,
            nal_length_size: 4,
            sps,
            pps,
        })
    }

    /// The avcC record, what [`AvcConfig::parse`] reads. Parameter sets longer than a
    /// 16-bit length cannot be written and are left out, as are sets beyond the counts
    /// the record can hold (31 SPS, 255 PPS).
    pub fn record(&self) -> Vec<u8> {
        let mut out = vec![
            1,
            self.profile,
            self.compatibility,
            self.level,
            0xFC | (self.nal_length_size.clamp(1, 4) - 1),
        ];
        let sps = writable_sets(&self.sps, 31);
        out.push(0xE0 | sps.len() as u8);
        put_param_sets(&mut out, &sps);
        let pps = writable_sets(&self.pps, 255);
        out.push(pps.len() as u8);
        put_param_sets(&mut out, &pps);
        out
    }
}

/// The parameter sets a record can carry: at most `max`, each shorter than 64 KiB.
pub(super) fn writable_sets(sets: &[Bytes], max: usize) -> Vec<&[u8]> {
    sets.iter()
        .map(|set| set.as_ref())
        .filter(|set| u16::try_from(set.len()).is_ok())
        .take(max)
        .collect()
}

/// Each set with its 16-bit length, as avcC and hvcC hold them.
pub(super) fn put_param_sets(out: &mut Vec<u8>, sets: &[&[u8]]) {
    for set in sets {
        out.extend_from_slice(&(set.len() as u16).to_be_bytes());
        out.extend_from_slice(set);
    }
}

/// Skip one scaling_list() of `size` coefficients (H.264 7.3.2.1.1.1).
pub(super) fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), CodecError> {
    let mut last: i64 = 8;
    let mut next: i64 = 8;
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            next = (last + delta).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// Display width and height from an H.264 SPS NAL unit (with its 1-byte NAL header),
/// applying frame cropping. Handles emulation prevention bytes, the high-profile
/// chroma/bit-depth/scaling-list fields, and interlaced (field) coding.
pub fn avc_sps_resolution(sps: &[u8]) -> Result<(u32, u32), CodecError> {
    let nal_header = *sps.first().ok_or(CodecError::Truncated)?;
    if nal_header & 0x1F != 7 {
        return Err(CodecError::NotSps(nal_header & 0x1F));
    }
    let rbsp = unescape_rbsp(&sps[1..]);
    let mut r = BitReader::new(&rbsp);

    let profile_idc = r.bits(8)?;
    let _constraints_and_level = r.bits(16)?;
    let _sps_id = r.ue()?;
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return Err(CodecError::Invalid("chroma_format_idc"));
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        let _bit_depth_luma = r.ue()?;
        let _bit_depth_chroma = r.ue()?;
        let _qpprime_y_zero_transform_bypass = r.flag()?;
        if r.flag()? {
            // seq_scaling_matrix_present_flag
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    let _log2_max_frame_num = r.ue()?;
    match r.ue()? {
        0 => {
            let _log2_max_poc_lsb = r.ue()?;
        }
        1 => {
            let _delta_pic_order_always_zero = r.flag()?;
            let _offset_for_non_ref_pic = r.se()?;
            let _offset_for_top_to_bottom_field = r.se()?;
            let cycle = r.ue()?;
            if cycle > 255 {
                return Err(CodecError::Invalid("num_ref_frames_in_pic_order_cnt_cycle"));
            }
            for _ in 0..cycle {
                let _offset_for_ref_frame = r.se()?;
            }
        }
        2 => {}
        _ => return Err(CodecError::Invalid("pic_order_cnt_type")),
    }
    let _max_num_ref_frames = r.ue()?;
    let _gaps_in_frame_num_allowed = r.flag()?;
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        let _mb_adaptive_frame_field = r.flag()?;
    }
    let _direct_8x8_inference = r.flag()?;
    let field_factor: u64 = if frame_mbs_only { 1 } else { 2 };
    let width = width_mbs * 16;
    let height = height_map_units * 16 * field_factor;

    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    r.cropped_size((width, height), chroma_array_type, field_factor)
}

/// NAL units of an AVCC/HVCC buffer (each prefixed by a big-endian length of
/// `nal_length_size` bytes, 1..=4). Empty units are skipped; iteration ends at the
/// first truncated length or unit, and yields nothing for an invalid length size.
pub fn length_prefixed_nalus(data: &[u8], nal_length_size: u8) -> impl Iterator<Item = &[u8]> {
    let size = usize::from(nal_length_size);
    let mut rest: &[u8] = if (1..=4).contains(&size) { data } else { &[] };
    std::iter::from_fn(move || loop {
        if rest.is_empty() || rest.len() < size {
            return None;
        }
        let (prefix, tail) = rest.split_at(size);
        let len = prefix
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if tail.len() < len {
            rest = &[];
            return None;
        }
        let (nalu, after) = tail.split_at(len);
        rest = after;
        if !nalu.is_empty() {
            return Some(nalu);
        }
    })
}

/// NAL units of an Annex B buffer (each after a `00 00 01` or `00 00 00 01` start code), as
/// slices of `data` without their start codes. Bytes before the first start code and empty
/// units are skipped; trailing zero bytes (a following start code's leading zero, or
/// `trailing_zero_8bits`) are not part of a unit.
pub fn annexb_nal_units(data: &Bytes) -> Vec<Bytes> {
    let mut units = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(begin) = start {
                units.push(trimmed(data, begin, i));
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(begin) = start {
        units.push(trimmed(data, begin, data.len()));
    }
    units.retain(|unit| !unit.is_empty());
    units
}

/// `data[begin..end]` without the zero bytes it ends with.
fn trimmed(data: &Bytes, begin: usize, end: usize) -> Bytes {
    let mut end = end;
    while end > begin && data[end - 1] == 0 {
        end -= 1;
    }
    data.slice(begin..end)
}
