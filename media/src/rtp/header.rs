//! The RTP fixed header (RFC 3550 5.1): read with its CSRC list, header extension and
//! padding taken off, and written without any of them (a server sending its own media needs
//! none).

use bytes::{BufMut, Bytes};

use super::RtpError;

/// Size of the fixed header, as this crate writes it.
pub const HEADER_LEN: usize = 12;

/// The fields of an RTP header a sender sets and a receiver acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// The last packet of an access unit (video), or a packet ending a frame (audio).
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

impl RtpHeader {
    /// Append the 12-byte header (version 2, no padding, extension or CSRC).
    pub fn write(&self, out: &mut impl BufMut) {
        out.put_u8(0x80);
        out.put_u8((u8::from(self.marker) << 7) | (self.payload_type & 0x7F));
        out.put_u16(self.sequence);
        out.put_u32(self.timestamp);
        out.put_u32(self.ssrc);
    }
}

/// A received packet: its header and the payload, which shares the datagram's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    pub header: RtpHeader,
    pub payload: Bytes,
}

impl RtpPacket {
    /// Read a packet; the CSRC list and a header extension are skipped, padding removed.
    pub fn parse(packet: Bytes) -> Result<RtpPacket, RtpError> {
        let fixed = packet.get(..HEADER_LEN).ok_or(RtpError::Truncated)?;
        let version = fixed[0] >> 6;
        if version != 2 {
            return Err(RtpError::Version(version));
        }
        let has_padding = fixed[0] & 0x20 != 0;
        let has_extension = fixed[0] & 0x10 != 0;
        let csrc_count = usize::from(fixed[0] & 0x0F);
        let header = RtpHeader {
            marker: fixed[1] & 0x80 != 0,
            payload_type: fixed[1] & 0x7F,
            sequence: u16::from_be_bytes([fixed[2], fixed[3]]),
            timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
            ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
        };
        let mut start = HEADER_LEN + 4 * csrc_count;
        if has_extension {
            // profile (16 bits), then the extension's length in 32-bit words.
            let length = packet
                .get(start + 2..start + 4)
                .ok_or(RtpError::Truncated)?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([length[0], length[1]]));
        }
        let mut end = packet.len();
        if has_padding {
            // The last byte counts the padding, itself included.
            let padding = usize::from(*packet.last().ok_or(RtpError::Truncated)?);
            end = end.checked_sub(padding).ok_or(RtpError::Padding)?;
            if padding == 0 {
                return Err(RtpError::Padding);
            }
        }
        if start > end {
            return Err(if has_padding && start <= packet.len() {
                RtpError::Padding
            } else {
                RtpError::Truncated
            });
        }
        Ok(RtpPacket {
            header,
            payload: packet.slice(start..end),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RtpHeader {
        RtpHeader {
            marker: true,
            payload_type: 96,
            sequence: 0xFFFE,
            timestamp: 0x8000_0001,
            ssrc: 0x1234_5678,
        }
    }

    #[test]
    fn written_header_reads_back() {
        let mut out = Vec::new();
        header().write(&mut out);
        out.extend_from_slice(b"payload");
        let packet = RtpPacket::parse(Bytes::from(out)).unwrap();
        assert_eq!(packet.header, header());
        assert_eq!(&packet.payload[..], b"payload");
    }

    #[test]
    fn csrc_extension_and_padding_are_taken_off() {
        let mut out = Vec::new();
        header().write(&mut out);
        out[0] = 0x80 | 0x20 | 0x10 | 2; // padding, extension, 2 CSRCs
        out.extend_from_slice(&[0; 8]); // CSRCs
        out.extend_from_slice(&[0xBE, 0xDE, 0, 1, 1, 2, 3, 4]); // one-word extension
        out.extend_from_slice(b"data");
        out.extend_from_slice(&[0, 0, 3]); // 3 bytes of padding
        let packet = RtpPacket::parse(Bytes::from(out)).unwrap();
        assert_eq!(&packet.payload[..], b"data");
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(
            RtpPacket::parse(Bytes::from_static(&[0x80; 11])),
            Err(RtpError::Truncated)
        );
        let mut v1 = vec![0x40; 12];
        v1[1] = 0;
        assert_eq!(RtpPacket::parse(Bytes::from(v1)), Err(RtpError::Version(1)));
        let mut padded = Vec::new();
        header().write(&mut padded);
        padded[0] |= 0x20;
        padded.push(200);
        assert_eq!(
            RtpPacket::parse(Bytes::from(padded)),
            Err(RtpError::Padding)
        );
        let mut extended = Vec::new();
        header().write(&mut extended);
        extended[0] |= 0x10;
        extended.extend_from_slice(&[0, 0, 0, 9]);
        assert_eq!(
            RtpPacket::parse(Bytes::from(extended)),
            Err(RtpError::Truncated)
        );
    }
}
