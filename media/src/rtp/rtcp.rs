//! RTCP (RFC 3550 6.4, 6.6): the sender report a server sends for each track it plays, and
//! a reader of what peers send back (compound packets of sender and receiver reports, BYE,
//! and kinds that are skipped).
//!
//! A player's receiver reports are what tells a server a UDP player is still there; a
//! publisher's sender reports map its RTP timestamps to wall-clock time.

use bytes::BufMut;

use super::RtpError;

const SENDER_REPORT: u8 = 200;
const RECEIVER_REPORT: u8 = 201;
const BYE: u8 = 203;

/// What a sender report says about one stream: at `ntp_time` (NTP 64-bit fixed point) the
/// stream's RTP clock read `rtp_timestamp`, and this many packets and payload octets had
/// been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport {
    pub ssrc: u32,
    pub ntp_time: u64,
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

impl SenderReport {
    /// NTP time for a wall-clock time in Unix milliseconds (the caller's clock).
    pub fn ntp_from_unix_ms(unix_ms: u64) -> u64 {
        let seconds = unix_ms / 1000 + NTP_UNIX_OFFSET_SECS;
        let fraction = ((unix_ms % 1000) << 32) / 1000;
        (seconds << 32) | fraction
    }

    /// Append the report as a 28-byte RTCP packet with no report blocks (a server that only
    /// sends has nothing to report on).
    pub fn write(&self, out: &mut impl BufMut) {
        out.put_u8(0x80);
        out.put_u8(SENDER_REPORT);
        out.put_u16(6); // length in 32-bit words, minus one
        out.put_u32(self.ssrc);
        out.put_u64(self.ntp_time);
        out.put_u32(self.rtp_timestamp);
        out.put_u32(self.packet_count);
        out.put_u32(self.octet_count);
    }
}

/// One report block of a sender or receiver report: how a receiver sees one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed).
    pub packets_lost: i32,
    pub highest_sequence: u32,
    pub jitter: u32,
}

/// One packet of a compound RTCP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    SenderReport {
        report: SenderReport,
        blocks: Vec<ReportBlock>,
    },
    ReceiverReport {
        ssrc: u32,
        blocks: Vec<ReportBlock>,
    },
    /// The sources are leaving.
    Bye {
        ssrcs: Vec<u32>,
    },
    /// SDES, APP, feedback and the rest: only the packet type is kept.
    Other {
        packet_type: u8,
    },
}

/// Read a compound RTCP packet (a datagram, or an interleaved frame on an RTCP channel).
/// Each packet's length is checked against what remains; trailing bytes too short for a
/// packet header are an error.
pub fn parse_compound(mut data: &[u8]) -> Result<Vec<RtcpPacket>, RtpError> {
    let mut packets = Vec::new();
    while !data.is_empty() {
        let head = data.get(..4).ok_or(RtpError::Truncated)?;
        let version = head[0] >> 6;
        if version != 2 {
            return Err(RtpError::Version(version));
        }
        let count = usize::from(head[0] & 0x1F);
        let packet_type = head[1];
        let len = 4 * (usize::from(u16::from_be_bytes([head[2], head[3]])) + 1);
        let packet = data.get(..len).ok_or(RtpError::Truncated)?;
        data = &data[len..];
        let body = &packet[4..];
        packets.push(match packet_type {
            SENDER_REPORT => {
                let info = body.get(..24).ok_or(RtpError::Truncated)?;
                sender_report(info, &body[24..], count)?
            }
            RECEIVER_REPORT => RtcpPacket::ReceiverReport {
                ssrc: be32(body.get(..4).ok_or(RtpError::Truncated)?),
                blocks: report_blocks(&body[4..], count)?,
            },
            BYE => RtcpPacket::Bye {
                ssrcs: body
                    .get(..4 * count)
                    .ok_or(RtpError::Truncated)?
                    .chunks_exact(4)
                    .map(be32)
                    .collect(),
            },
            packet_type => RtcpPacket::Other { packet_type },
        });
    }
    Ok(packets)
}

/// A sender report from its 24 bytes of sender info and what follows them.
fn sender_report(info: &[u8], rest: &[u8], count: usize) -> Result<RtcpPacket, RtpError> {
    let report = SenderReport {
        ssrc: be32(&info[0..4]),
        ntp_time: (u64::from(be32(&info[4..8])) << 32) | u64::from(be32(&info[8..12])),
        rtp_timestamp: be32(&info[12..16]),
        packet_count: be32(&info[16..20]),
        octet_count: be32(&info[20..24]),
    };
    Ok(RtcpPacket::SenderReport {
        report,
        blocks: report_blocks(rest, count)?,
    })
}

fn report_blocks(data: &[u8], count: usize) -> Result<Vec<ReportBlock>, RtpError> {
    let blocks = data.get(..24 * count).ok_or(RtpError::Truncated)?;
    Ok(blocks
        .chunks_exact(24)
        .map(|b| ReportBlock {
            ssrc: be32(&b[0..4]),
            fraction_lost: b[4],
            // 24-bit two's complement: put it at the top of an i32 and shift back.
            packets_lost: i32::from_be_bytes([b[5], b[6], b[7], 0]) >> 8,
            highest_sequence: be32(&b[8..12]),
            jitter: be32(&b[12..16]),
        })
        .collect())
}

/// A big-endian u32 from the first four bytes (callers pass exactly four).
fn be32(b: &[u8]) -> u32 {
    let mut word = [0; 4];
    for (to, from) in word.iter_mut().zip(b) {
        *to = *from;
    }
    u32::from_be_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_report_reads_back() {
        let report = SenderReport {
            ssrc: 7,
            ntp_time: SenderReport::ntp_from_unix_ms(1_700_000_000_500),
            rtp_timestamp: 90_000,
            packet_count: 10,
            octet_count: 12_000,
        };
        let mut out = Vec::new();
        report.write(&mut out);
        assert_eq!(out.len(), 28);
        assert_eq!(
            parse_compound(&out).unwrap(),
            vec![RtcpPacket::SenderReport {
                report,
                blocks: vec![]
            }]
        );
        // Half a second is half of the 32-bit fraction.
        assert_eq!(report.ntp_time as u32, 1 << 31);
        assert_eq!(report.ntp_time >> 32, 1_700_000_000 + NTP_UNIX_OFFSET_SECS);
    }

    #[test]
    fn compound_receiver_report_sdes_and_bye() {
        let mut data = vec![0x81, RECEIVER_REPORT, 0, 7, 0, 0, 0, 1];
        data.extend_from_slice(&[0, 0, 0, 9, 0x40, 0xFF, 0xFF, 0xFE]); // ssrc 9, lost -2
        data.extend_from_slice(&[0, 1, 0, 5, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0]);
        data.extend_from_slice(&[0x81, 202, 0, 1, 0, 0, 0, 1]); // SDES, not read
        data.extend_from_slice(&[0x81, BYE, 0, 1, 0, 0, 0, 1]);
        let packets = parse_compound(&data).unwrap();
        assert_eq!(
            packets,
            vec![
                RtcpPacket::ReceiverReport {
                    ssrc: 1,
                    blocks: vec![ReportBlock {
                        ssrc: 9,
                        fraction_lost: 0x40,
                        packets_lost: -2,
                        highest_sequence: 0x0001_0005,
                        jitter: 3
                    }]
                },
                RtcpPacket::Other { packet_type: 202 },
                RtcpPacket::Bye { ssrcs: vec![1] },
            ]
        );
    }

    #[test]
    fn truncated_and_wrong_version_are_errors() {
        assert_eq!(parse_compound(&[0x80, 200, 0]), Err(RtpError::Truncated));
        assert_eq!(
            parse_compound(&[0x80, 200, 0, 6, 0]),
            Err(RtpError::Truncated)
        );
        assert_eq!(
            parse_compound(&[0x40, 200, 0, 0]),
            Err(RtpError::Version(1))
        );
        // A report claiming more blocks than its length holds.
        assert_eq!(
            parse_compound(&[0x81, RECEIVER_REPORT, 0, 1, 0, 0, 0, 1]),
            Err(RtpError::Truncated)
        );
    }
}
