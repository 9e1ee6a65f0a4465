//! Opus: the identification header (OpusHead, RFC 7845 5.1), what an Enhanced RTMP Opus
//! sequence start carries.

use super::bits::ByteReader;
use super::CodecError;

/// The fields of an OpusHead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusHead {
    pub channels: u8,
    /// Samples (at 48 kHz) to drop from the start of the decoded stream.
    pub pre_skip: u16,
    /// The sample rate of the original input (informational only).
    pub input_sample_rate: u32,
    /// Q7.8 dB gain to apply to the decoded output.
    pub output_gain: i16,
    pub mapping_family: u8,
    /// Only for mapping families other than 0: streams, coupled streams and the
    /// channel mapping table (one entry per output channel).
    pub stream_count: u8,
    pub coupled_count: u8,
    pub mapping: Vec<u8>,
}

const MAGIC: &[u8; 8] = b"OpusHead";

impl OpusHead {
    /// Parse an OpusHead packet. The magic signature may be missing (the fields then start
    /// at the version byte), as a publisher may send the header without it.
    pub fn parse(data: &[u8]) -> Result<Self, CodecError> {
        let body = data.strip_prefix(&MAGIC[..]).unwrap_or(data);
        let mut r = ByteReader::new(body);
        let version = r.u8()?;
        // RFC 7845: the major version (upper 4 bits) 0 is all that is defined.
        if version >> 4 != 0 {
            return Err(CodecError::UnsupportedVersion(version));
        }
        let channels = r.u8()?;
        if channels == 0 {
            return Err(CodecError::Invalid("Opus channel count 0"));
        }
        let le16 = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
        let pre_skip = le16(r.take(2)?);
        let rate = r.take(4)?;
        let input_sample_rate = u32::from_le_bytes([rate[0], rate[1], rate[2], rate[3]]);
        let output_gain = le16(r.take(2)?) as i16;
        let mapping_family = r.u8()?;
        let mut head = Self {
            channels,
            pre_skip,
            input_sample_rate,
            output_gain,
            mapping_family,
            stream_count: 1,
            coupled_count: u8::from(channels == 2),
            mapping: Vec::new(),
        };
        if mapping_family == 0 {
            if channels > 2 {
                return Err(CodecError::Invalid(
                    "Opus mapping family 0 with more than 2 channels",
                ));
            }
        } else {
            head.stream_count = r.u8()?;
            head.coupled_count = r.u8()?;
            if head.stream_count == 0 || head.coupled_count > head.stream_count {
                return Err(CodecError::Invalid("Opus stream counts"));
            }
            head.mapping = r.take(usize::from(channels))?.to_vec();
        }
        Ok(head)
    }
}
