//! AAC: AudioSpecificConfig and the ADTS header made from it.

use super::bits::BitReader;
use super::CodecError;

/// Sampling frequencies for indices 0..=12 (ISO 14496-3 Table 1.18).
pub(super) const AAC_SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// ISO 14496-3 AudioSpecificConfig (the AAC sequence header payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// Audio object type (2 = AAC-LC). With explicit SBR/PS signalling (5/29) this
    /// is the underlying core type, as ADTS and decoders configure from it.
    pub object_type: u8,
    /// Sampling frequency index; 15 means an explicit rate was given.
    pub sampling_index: u8,
    /// Core sampling rate in Hz (without SBR doubling).
    pub sample_rate: u32,
    /// channelConfiguration field: 1..=6 that many channels, 7 = 7.1 (8 channels),
    /// 0 = defined by an in-band program config element.
    pub channels: u8,
}

pub(super) fn read_object_type(r: &mut BitReader<'_>) -> Result<u8, CodecError> {
    let aot = r.bits(5)?;
    let aot = if aot == 31 { 32 + r.bits(6)? } else { aot };
    // At most 32 + 63 = 95, so the conversion cannot fail.
    u8::try_from(aot).map_err(|_| CodecError::Invalid("audio object type"))
}

pub(super) fn read_sampling(r: &mut BitReader<'_>) -> Result<(u8, u32), CodecError> {
    let index = r.bits(4)? as u8;
    let rate = match index {
        15 => r.bits(24)?,
        i => *AAC_SAMPLE_RATES
            .get(usize::from(i))
            .ok_or(CodecError::ReservedSamplingIndex(i))?,
    };
    if rate == 0 {
        return Err(CodecError::Invalid("sampling frequency 0"));
    }
    Ok((index, rate))
}

impl AacConfig {
    /// Parse the leading fields of an AudioSpecificConfig; the codec-specific
    /// remainder (GASpecificConfig, sync extensions) is ignored.
    pub fn parse(asc: &[u8]) -> Result<Self, CodecError> {
        let mut r = BitReader::new(asc);
        let mut object_type = read_object_type(&mut r)?;
        if object_type == 0 {
            return Err(CodecError::Invalid("audio object type 0"));
        }
        let (sampling_index, sample_rate) = read_sampling(&mut r)?;
        let channels = r.bits(4)? as u8;
        if object_type == 5 || object_type == 29 {
            // Explicit hierarchical SBR/PS: extension rate, then the core object type.
            let _extension_sampling = read_sampling(&mut r)?;
            object_type = read_object_type(&mut r)?;
        }
        Ok(Self {
            object_type,
            sampling_index,
            sample_rate,
            channels,
        })
    }

    /// 7-byte ADTS header (MPEG-4, no CRC) for one raw AAC frame of `payload_len` bytes.
    ///
    /// ADTS can only express object types 1..=4, indices 0..=12 and channel
    /// configurations 0..=7: other object types are written as AAC-LC, an explicit
    /// rate as the nearest standard index, and channel configs above 7 as 0.
    /// Frame length saturates at the 13-bit maximum.
    pub fn adts_header(&self, payload_len: usize) -> [u8; 7] {
        let profile = if (1..=4).contains(&self.object_type) {
            self.object_type - 1
        } else {
            1
        };
        let index = if self.sampling_index <= 12 {
            self.sampling_index
        } else {
            nearest_sampling_index(self.sample_rate)
        };
        let channels = if self.channels <= 7 { self.channels } else { 0 };
        let frame_len = payload_len.saturating_add(7).min(0x1FFF) as u32;
        const BUFFER_FULLNESS_VBR: u32 = 0x7FF;
        [
            0xFF,
            0xF1, // sync low bits, MPEG-4, layer 0, protection absent
            (profile << 6) | (index << 2) | (channels >> 2),
            ((channels & 0x03) << 6) | (frame_len >> 11) as u8,
            (frame_len >> 3) as u8,
            (((frame_len & 0x07) << 5) | (BUFFER_FULLNESS_VBR >> 6)) as u8,
            (((BUFFER_FULLNESS_VBR & 0x3F) << 2) as u8), // one raw data block
        ]
    }
}

pub(super) fn nearest_sampling_index(rate: u32) -> u8 {
    let mut best = 0;
    for (i, &r) in AAC_SAMPLE_RATES.iter().enumerate() {
        if r.abs_diff(rate) < AAC_SAMPLE_RATES[best].abs_diff(rate) {
            best = i;
        }
    }
    best as u8
}
