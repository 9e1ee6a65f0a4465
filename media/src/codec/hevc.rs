//! HEVC: the decoder configuration record.

use bytes::Bytes;

use super::bits::ByteReader;
use super::CodecError;

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
        const NAL_SPS: u8 = 33;
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
