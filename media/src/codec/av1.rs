//! AV1: the codec configuration record (av1C, what an Enhanced RTMP sequence start
//! carries), the OBUs of a temporal unit, and the picture size a sequence header OBU gives.

use super::bits::{BitReader, ByteReader};
use super::CodecError;

/// OBU types (AV1 6.2.2) this crate looks at.
pub const OBU_SEQUENCE_HEADER: u8 = 1;
pub const OBU_TEMPORAL_DELIMITER: u8 = 2;
pub const OBU_TILE_LIST: u8 = 8;
pub const OBU_PADDING: u8 = 15;

/// AV1 Codec Configuration Record (AV1-ISOBMFF 2.3), the fields a muxer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Av1Config {
    pub seq_profile: u8,
    pub seq_level_idx_0: u8,
    /// seq_tier_0: the high tier.
    pub high_tier: bool,
    /// 8, 10 or 12.
    pub bit_depth: u8,
    pub monochrome: bool,
    pub chroma_subsampling_x: bool,
    pub chroma_subsampling_y: bool,
    pub chroma_sample_position: u8,
    /// Where the configOBUs start in the record (they run to its end).
    pub config_obus_offset: usize,
}

impl Av1Config {
    /// Parse an av1C record (marker and version must be 1; the 4 fixed bytes must be there).
    pub fn parse(record: &[u8]) -> Result<Self, CodecError> {
        let mut r = ByteReader::new(record);
        let marker_version = r.u8()?;
        if marker_version != 0x81 {
            return Err(CodecError::UnsupportedVersion(marker_version & 0x7F));
        }
        let b1 = r.u8()?;
        let b2 = r.u8()?;
        let _presentation_delay = r.u8()?;
        let seq_profile = b1 >> 5;
        let high_bitdepth = b2 & 0x40 != 0;
        let twelve_bit = b2 & 0x20 != 0;
        // AV1 5.5.2 color_config: 12 bits only in the professional profile.
        let bit_depth = match (seq_profile, high_bitdepth, twelve_bit) {
            (2, true, true) => 12,
            (_, true, _) => 10,
            _ => 8,
        };
        Ok(Self {
            seq_profile,
            seq_level_idx_0: b1 & 0x1F,
            high_tier: b2 & 0x80 != 0,
            bit_depth,
            monochrome: b2 & 0x10 != 0,
            chroma_subsampling_x: b2 & 0x08 != 0,
            chroma_subsampling_y: b2 & 0x04 != 0,
            chroma_sample_position: b2 & 0x03,
            config_obus_offset: 4,
        })
    }
}

/// One OBU of a low-overhead bitstream (AV1 5.2, 5.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obu<'a> {
    pub obu_type: u8,
    /// The whole OBU: header, size field and payload.
    pub bytes: &'a [u8],
    pub payload: &'a [u8],
}

/// The OBUs of `data`, in order. An OBU without a size field runs to the end of the data
/// (allowed for the last OBU of a sample). Yields one error and stops at the first OBU
/// that does not fit.
pub fn av1_obus(data: &[u8]) -> impl Iterator<Item = Result<Obu<'_>, CodecError>> {
    let mut rest = data;
    let mut failed = false;
    std::iter::from_fn(move || {
        if rest.is_empty() || failed {
            return None;
        }
        let obu = next_obu(rest);
        match obu {
            Ok((obu, len)) => {
                rest = &rest[len..];
                Some(Ok(obu))
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}

fn next_obu(data: &[u8]) -> Result<(Obu<'_>, usize), CodecError> {
    let mut r = ByteReader::new(data);
    let header = r.u8()?;
    if header & 0x80 != 0 {
        return Err(CodecError::Invalid("OBU forbidden bit set"));
    }
    let obu_type = (header >> 3) & 0x0F;
    if header & 0x04 != 0 {
        let _extension = r.u8()?;
    }
    let size = if header & 0x02 != 0 {
        Some(r.leb128()? as usize)
    } else {
        None
    };
    let header_len = data.len() - r.rest().len();
    let payload = match size {
        Some(size) => r.take(size)?,
        None => r.rest(),
    };
    let len = header_len + payload.len();
    Ok((
        Obu {
            obu_type,
            bytes: &data[..len],
            payload,
        },
        len,
    ))
}

/// The largest picture size the first sequence header OBU in `obus` allows
/// (max_frame_width_minus_1 + 1, max_frame_height_minus_1 + 1); `None` when there is none.
pub fn av1_sequence_resolution(obus: &[u8]) -> Result<Option<(u32, u32)>, CodecError> {
    for obu in av1_obus(obus) {
        let obu = obu?;
        if obu.obu_type == OBU_SEQUENCE_HEADER {
            return sequence_header_resolution(obu.payload).map(Some);
        }
    }
    Ok(None)
}

/// AV1 4.10.3 uvlc(): leading zeros up to a 1 bit, then as many value bits (none when
/// there were 32 or more zeros: the value is then 2^32 - 1).
fn uvlc(r: &mut BitReader<'_>) -> Result<u32, CodecError> {
    let mut zeros: u32 = 0;
    while !r.flag()? {
        zeros = zeros.saturating_add(1);
    }
    if zeros >= 32 {
        return Ok(u32::MAX);
    }
    let rest = u64::from(r.bits(zeros)?);
    Ok(u32::try_from(rest + (1u64 << zeros) - 1).unwrap_or(u32::MAX))
}

/// sequence_header_obu() (AV1 5.5.1) up to the maximum frame size.
fn sequence_header_resolution(payload: &[u8]) -> Result<(u32, u32), CodecError> {
    let mut r = BitReader::new(payload);
    let _seq_profile = r.bits(3)?;
    let _still_picture = r.flag()?;
    let reduced_still_picture_header = r.flag()?;
    if reduced_still_picture_header {
        let _seq_level_idx = r.bits(5)?;
    } else {
        let timing_info_present = r.flag()?;
        let mut decoder_model_info_present = false;
        let mut buffer_delay_length = 0;
        if timing_info_present {
            let _num_units_in_display_tick = r.bits(32)?;
            let _time_scale = r.bits(32)?;
            if r.flag()? {
                // equal_picture_interval
                let _num_ticks_per_picture_minus_1 = uvlc(&mut r)?;
            }
            decoder_model_info_present = r.flag()?;
            if decoder_model_info_present {
                buffer_delay_length = r.bits(5)? + 1;
                let _num_units_in_decoding_tick = r.bits(32)?;
                let _buffer_removal_time_length_minus_1 = r.bits(5)?;
                let _frame_presentation_time_length_minus_1 = r.bits(5)?;
            }
        }
        let initial_display_delay_present = r.flag()?;
        let operating_points = r.bits(5)? + 1;
        for _ in 0..operating_points {
            let _operating_point_idc = r.bits(12)?;
            let seq_level_idx = r.bits(5)?;
            if seq_level_idx > 7 {
                let _seq_tier = r.flag()?;
            }
            if decoder_model_info_present && r.flag()? {
                // operating_parameters_info(): two delays and low_delay_mode_flag.
                r.skip(2 * buffer_delay_length as usize + 1)?;
            }
            if initial_display_delay_present && r.flag()? {
                let _initial_display_delay_minus_1 = r.bits(4)?;
            }
        }
    }
    let width_bits = r.bits(4)? + 1;
    let height_bits = r.bits(4)? + 1;
    let width = u64::from(r.bits(width_bits)?) + 1;
    let height = u64::from(r.bits(height_bits)?) + 1;
    let to_u32 = |v: u64| u32::try_from(v).map_err(|_| CodecError::Invalid("picture size"));
    Ok((to_u32(width)?, to_u32(height)?))
}
