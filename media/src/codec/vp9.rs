//! VP9: the codec configuration record (what an Enhanced RTMP sequence start carries) and
//! the picture size a keyframe's uncompressed header gives, since the record has none.

use super::bits::{BitReader, ByteReader};
use super::CodecError;

/// VPCodecConfigurationRecord (VP Codec ISO Media File Format Binding, version 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp9Config {
    pub profile: u8,
    pub level: u8,
    pub bit_depth: u8,
    pub chroma_subsampling: u8,
    pub full_range: bool,
    pub colour_primaries: u8,
    pub transfer_characteristics: u8,
    pub matrix_coefficients: u8,
}

/// Bytes of the record before codecInitializationData.
const RECORD_LEN: usize = 8;
/// The FullBox version and flags of a `vpcC` box, which some muxers (ffmpeg's among them)
/// put in front of the record.
const FULL_BOX_HEADER: [u8; 4] = [1, 0, 0, 0];

impl Vp9Config {
    /// Parse a record, with or without the `vpcC` box's version and flags in front.
    pub fn parse(record: &[u8]) -> Result<Self, CodecError> {
        // The record alone starts with the profile (0..=3) and a level (10 or more), so it
        // cannot be mistaken for version 1 and zero flags.
        let body = match record.strip_prefix(&FULL_BOX_HEADER[..]) {
            Some(body) => body,
            None => record,
        };
        let mut r = ByteReader::new(body);
        let fixed = r.take(RECORD_LEN)?;
        let profile = fixed[0];
        if profile > 3 {
            return Err(CodecError::Invalid("VP9 profile"));
        }
        let bit_depth = fixed[2] >> 4;
        if !matches!(bit_depth, 8 | 10 | 12) {
            return Err(CodecError::Invalid("VP9 bit depth"));
        }
        Ok(Self {
            profile,
            level: fixed[1],
            bit_depth,
            chroma_subsampling: (fixed[2] >> 1) & 0x07,
            full_range: fixed[2] & 1 != 0,
            colour_primaries: fixed[3],
            transfer_characteristics: fixed[4],
            matrix_coefficients: fixed[5],
        })
    }
}

/// Frame width and height from a VP9 frame's uncompressed header (VP9 6.2): `Some` for a
/// keyframe, `None` for other frames (they may take their size from a reference). A
/// superframe starts with its first frame, which is where a keyframe's header is.
pub fn vp9_frame_resolution(frame: &[u8]) -> Result<Option<(u32, u32)>, CodecError> {
    const SYNC_CODE: u32 = 0x49_83_42;
    const CS_RGB: u32 = 7;
    let mut r = BitReader::new(frame);
    if r.bits(2)? != 2 {
        return Err(CodecError::Invalid("VP9 frame marker"));
    }
    let profile_low = r.bits(1)?;
    let profile = (r.bits(1)? << 1) | profile_low;
    if profile == 3 {
        let _reserved_zero = r.flag()?;
    }
    if r.flag()? {
        // show_existing_frame: no header of its own.
        return Ok(None);
    }
    let non_key = r.flag()?;
    if non_key {
        return Ok(None);
    }
    let _show_frame = r.flag()?;
    let _error_resilient = r.flag()?;
    if r.bits(24)? != SYNC_CODE {
        return Err(CodecError::Invalid("VP9 sync code"));
    }
    // color_config()
    if profile >= 2 {
        let _ten_or_twelve_bit = r.flag()?;
    }
    let color_space = r.bits(3)?;
    if color_space != CS_RGB {
        let _color_range = r.flag()?;
        if profile == 1 || profile == 3 {
            r.skip(3)?; // subsampling_x, subsampling_y, reserved_zero
        }
    } else if profile == 1 || profile == 3 {
        r.skip(1)?; // reserved_zero
    }
    // frame_size()
    let width = r.bits(16)? + 1;
    let height = r.bits(16)? + 1;
    Ok(Some((width, height)))
}
