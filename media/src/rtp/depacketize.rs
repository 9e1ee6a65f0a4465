//! A publisher's RTP back into access units (RTSP RECORD): H.264 (RFC 6184: single NAL
//! unit, STAP-A, FU-A), HEVC (RFC 7798: single, AP, FU), AAC-hbr (RFC 3640: several AUs
//! per packet, or one AU in fragments) and Opus (RFC 7587).
//!
//! Packets are taken in arrival order; reordering is not undone (over TCP, which RTSP
//! publishers mostly use, there is none). A gap in sequence numbers is reported by `push`
//! and drops what it broke: a NAL unit whose fragment was lost, an AAC frame in pieces.
//! Everything else of the access unit is kept, since decoders conceal a missing slice
//! better than a missing picture.
//!
//! Timestamps come out in milliseconds since the track's first packet ([`RtpClock`]),
//! with the 32-bit RTP timestamp's wrap undone. For video they are presentation times
//! (RTP carries no decoding time), which [`super::flv`] writes with a composition offset of
//! 0. Buffers are bounded: an access unit stops growing at [`MAX_ACCESS_UNIT`] bytes.

use bytes::{Bytes, BytesMut};

use super::header::RtpPacket;

/// The most bytes an access unit may gather; what comes beyond is dropped. Far above any
/// real picture (a 4K intra frame is a few MB), low enough that a peer cannot exhaust memory.
pub const MAX_ACCESS_UNIT: usize = 8 * 1024 * 1024;

/// The most NAL units an access unit may gather.
pub const MAX_NAL_UNITS: usize = 1024;

/// One track's RTP timestamps as milliseconds since its first packet (rounded), the
/// 32-bit wrap undone. Steps back (B-frames, in presentation order) are followed; a time before the
/// first packet comes out as 0.
#[derive(Debug, Clone)]
pub struct RtpClock {
    clock_rate: u32,
    last: Option<u32>,
    /// Ticks since the first packet.
    elapsed: i64,
}

impl RtpClock {
    /// A clock of `clock_rate` Hz (0 is taken as 1, so nothing divides by zero).
    pub fn new(clock_rate: u32) -> Self {
        RtpClock {
            clock_rate: clock_rate.max(1),
            last: None,
            elapsed: 0,
        }
    }

    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// Milliseconds since the first timestamp seen.
    pub fn ms(&mut self, timestamp: u32) -> u64 {
        if let Some(last) = self.last {
            // The shortest way round the 32-bit circle: forward across a wrap, or back.
            self.elapsed = self
                .elapsed
                .saturating_add(i64::from(timestamp.wrapping_sub(last) as i32));
        }
        self.last = Some(timestamp);
        // To the nearest millisecond: a packetizer's timestamps (milliseconds scaled to
        // the clock, floored) then come back as the milliseconds they were made from.
        let rate = i128::from(self.clock_rate);
        let ms = (i128::from(self.elapsed) * 1000 + rate / 2).div_euclid(rate);
        u64::try_from(ms).unwrap_or(0)
    }
}

/// Sequence numbers of a track: how many packets went missing before each one.
#[derive(Debug, Clone, Default)]
struct SequenceTracker {
    expected: Option<u16>,
    lost: u64,
}

impl SequenceTracker {
    /// Packets missing between the last one and `sequence` (0 for the first packet and for
    /// duplicates or late ones, which are not told apart from a restart).
    fn gap(&mut self, sequence: u16) -> u16 {
        let gap = match self.expected {
            Some(expected) => {
                let gap = sequence.wrapping_sub(expected);
                // More than half the circle ahead is a packet from the past.
                if gap < 0x8000 {
                    gap
                } else {
                    0
                }
            }
            None => 0,
        };
        self.expected = Some(sequence.wrapping_add(1));
        self.lost = self.lost.saturating_add(u64::from(gap));
        gap
    }
}

/// A video access unit: the NAL units of one picture, without start codes or lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// Presentation time in milliseconds since the track's first packet.
    pub timestamp_ms: u64,
    pub nal_units: Vec<Bytes>,
}

/// An audio frame (one AAC access unit or Opus packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// Milliseconds since the track's first packet.
    pub timestamp_ms: u64,
    pub data: Bytes,
}

/// Which NAL unit packetization a [`VideoDepacketizer`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NalFormat {
    H264,
    Hevc,
}

/// The access unit being gathered.
#[derive(Debug)]
struct PendingUnit {
    rtp_timestamp: u32,
    nal_units: Vec<Bytes>,
    size: usize,
}

/// H.264 or HEVC RTP into access units. An access unit ends at a packet with the marker
/// bit, or when a packet with another timestamp arrives (the marked packet was lost).
#[derive(Debug)]
pub struct VideoDepacketizer {
    format: NalFormat,
    clock: RtpClock,
    sequence: SequenceTracker,
    pending: Option<PendingUnit>,
    /// The NAL unit being rebuilt from fragments; `None` also after a lost fragment,
    /// until the next start fragment.
    fragment: Option<BytesMut>,
}

impl VideoDepacketizer {
    /// A depacketizer for a 90 kHz video track.
    pub fn new(format: NalFormat) -> Self {
        VideoDepacketizer {
            format,
            clock: RtpClock::new(super::VIDEO_CLOCK_RATE),
            sequence: SequenceTracker::default(),
            pending: None,
            fragment: None,
        }
    }

    /// Packets found missing so far.
    pub fn lost(&self) -> u64 {
        self.sequence.lost
    }

    /// Take in one packet; finished access units go to `out`. Returns how many packets were
    /// missing before this one.
    pub fn push(&mut self, packet: &RtpPacket, out: &mut Vec<AccessUnit>) -> u16 {
        let gap = self.sequence.gap(packet.header.sequence);
        if gap > 0 {
            self.fragment = None;
        }
        let timestamp = packet.header.timestamp;
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.rtp_timestamp != timestamp)
        {
            self.flush(out);
        }
        let mut units = Vec::new();
        match self.format {
            NalFormat::H264 => self.read_h264(&packet.payload, &mut units),
            NalFormat::Hevc => self.read_hevc(&packet.payload, &mut units),
        }
        if !units.is_empty() {
            let pending = self.pending.get_or_insert_with(|| PendingUnit {
                rtp_timestamp: timestamp,
                nal_units: Vec::new(),
                size: 0,
            });
            for unit in units {
                if pending.nal_units.len() < MAX_NAL_UNITS
                    && pending.size + unit.len() <= MAX_ACCESS_UNIT
                {
                    pending.size += unit.len();
                    pending.nal_units.push(unit);
                }
            }
        }
        if packet.header.marker {
            self.flush(out);
        }
        gap
    }

    fn flush(&mut self, out: &mut Vec<AccessUnit>) {
        if let Some(pending) = self.pending.take() {
            out.push(AccessUnit {
                timestamp_ms: self.clock.ms(pending.rtp_timestamp),
                nal_units: pending.nal_units,
            });
        }
    }

    fn read_h264(&mut self, payload: &Bytes, units: &mut Vec<Bytes>) {
        const STAP_A: u8 = 24;
        const FU_A: u8 = 28;
        let Some(&first) = payload.first() else {
            return;
        };
        match first & 0x1F {
            1..=23 => units.push(payload.clone()),
            STAP_A => aggregated_units(payload.slice(1..), units),
            FU_A => {
                let Some(&fu_header) = payload.get(1) else {
                    return;
                };
                let nal_header = (first & 0xE0) | (fu_header & 0x1F);
                self.fragment_piece(fu_header, &[nal_header], &payload[2..], units);
            }
            // STAP-B, MTAP and FU-B only exist in interleaved mode, which no SDP we accept
            // asks for; 0, 30 and 31 are reserved.
            _ => {}
        }
    }

    fn read_hevc(&mut self, payload: &Bytes, units: &mut Vec<Bytes>) {
        const AP: u8 = 48;
        const FU: u8 = 49;
        let &[b0, b1, ..] = payload.as_ref() else {
            return;
        };
        match (b0 >> 1) & 0x3F {
            0..=47 => units.push(payload.clone()),
            // Without sprop-max-don-diff (which we never accept) there is no DONL field.
            AP => aggregated_units(payload.slice(2..), units),
            FU => {
                let Some(&fu_header) = payload.get(2) else {
                    return;
                };
                let nal_header = [(b0 & 0x81) | ((fu_header & 0x3F) << 1), b1];
                self.fragment_piece(fu_header, &nal_header, &payload[3..], units);
            }
            // PACI (50) and reserved types.
            _ => {}
        }
    }

    /// One fragment of a NAL unit; the fragmentation header's top bits say start and end.
    fn fragment_piece(
        &mut self,
        fu_header: u8,
        nal_header: &[u8],
        piece: &[u8],
        units: &mut Vec<Bytes>,
    ) {
        let start = fu_header & 0x80 != 0;
        let end = fu_header & 0x40 != 0;
        if start {
            let mut nal = BytesMut::with_capacity(nal_header.len() + piece.len());
            nal.extend_from_slice(nal_header);
            self.fragment = Some(nal);
        }
        let Some(nal) = self.fragment.as_mut() else {
            // The start was lost: wait for the next one.
            return;
        };
        if nal.len() + piece.len() > MAX_ACCESS_UNIT {
            self.fragment = None;
            return;
        }
        nal.extend_from_slice(piece);
        if end {
            if let Some(nal) = self.fragment.take() {
                units.push(nal.freeze());
            }
        }
    }
}

/// The units of an aggregation packet's body, each after its 16-bit size; a truncated
/// last unit is dropped.
fn aggregated_units(mut body: Bytes, units: &mut Vec<Bytes>) {
    while body.len() >= 2 {
        let size = usize::from(u16::from_be_bytes([body[0], body[1]]));
        if size == 0 || body.len() < 2 + size {
            return;
        }
        units.push(body.slice(2..2 + size));
        body = body.slice(2 + size..);
    }
}

/// The AU-header layout an SDP's fmtp gives an MPEG4-GENERIC track (RFC 3640 3.3.6:
/// AAC-hbr is 13, 3, 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuHeaderLayout {
    pub size_length: u8,
    pub index_length: u8,
    pub index_delta_length: u8,
}

impl AuHeaderLayout {
    pub const AAC_HBR: AuHeaderLayout = AuHeaderLayout {
        size_length: 13,
        index_length: 3,
        index_delta_length: 3,
    };
}

/// AAC frames per packet are 1024 samples (AAC-LC, HE-AAC's core); what RFC 3640 calls
/// the constant duration when an SDP does not say.
const AAC_FRAME_SAMPLES: u32 = 1024;

/// An AAC frame being gathered from fragments.
#[derive(Debug)]
struct AacFragment {
    rtp_timestamp: u32,
    size: usize,
    data: BytesMut,
}

/// MPEG4-GENERIC (AAC-hbr and kin) RTP into AAC frames.
#[derive(Debug)]
pub struct AacDepacketizer {
    layout: AuHeaderLayout,
    clock: RtpClock,
    sequence: SequenceTracker,
    fragment: Option<AacFragment>,
}

impl AacDepacketizer {
    /// `clock_rate` is the SDP's (the AAC sample rate).
    pub fn new(layout: AuHeaderLayout, clock_rate: u32) -> Self {
        AacDepacketizer {
            layout,
            clock: RtpClock::new(clock_rate),
            sequence: SequenceTracker::default(),
            fragment: None,
        }
    }

    pub fn lost(&self) -> u64 {
        self.sequence.lost
    }

    /// Take in one packet; whole frames go to `out`. Returns how many packets were missing
    /// before this one.
    pub fn push(&mut self, packet: &RtpPacket, out: &mut Vec<AudioFrame>) -> u16 {
        let gap = self.sequence.gap(packet.header.sequence);
        if gap > 0 {
            self.fragment = None;
        }
        let payload = &packet.payload;
        let Some(header_bits) = payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            return gap;
        };
        let header_bytes = usize::from(header_bits).div_ceil(8);
        let Some(headers) = payload.get(2..2 + header_bytes) else {
            return gap;
        };
        let mut data = payload.slice(2 + header_bytes..);
        let sizes = self.au_sizes(headers, header_bits);
        let timestamp = packet.header.timestamp;

        if let Some(fragment) = self.fragment.as_mut() {
            // A continuation: the same single AU-header, the next piece of the frame.
            if fragment.rtp_timestamp == timestamp && sizes.len() == 1 {
                if fragment.data.len() + data.len() <= fragment.size {
                    fragment.data.extend_from_slice(&data);
                }
                if packet.header.marker {
                    if let Some(fragment) = self.fragment.take() {
                        if fragment.data.len() == fragment.size {
                            out.push(AudioFrame {
                                timestamp_ms: self.clock.ms(timestamp),
                                data: fragment.data.freeze(),
                            });
                        }
                    }
                }
                return gap;
            }
            self.fragment = None;
        }

        for (i, size) in sizes.into_iter().enumerate() {
            let frame_timestamp =
                timestamp.wrapping_add((i as u32).wrapping_mul(AAC_FRAME_SAMPLES));
            if size <= data.len() {
                out.push(AudioFrame {
                    timestamp_ms: self.clock.ms(frame_timestamp),
                    data: data.slice(..size),
                });
                data = data.slice(size..);
            } else if i == 0 && !packet.header.marker {
                // The first piece of a fragmented frame (RFC 3640 3.2.3).
                let mut buffer = BytesMut::with_capacity(size);
                buffer.extend_from_slice(&data);
                self.fragment = Some(AacFragment {
                    rtp_timestamp: timestamp,
                    size,
                    data: buffer,
                });
                break;
            } else {
                break;
            }
        }
        gap
    }

    /// The AU sizes the AU-header section gives (indices are read and ignored: AAC-hbr
    /// frames arrive in order).
    fn au_sizes(&self, headers: &[u8], bits: u16) -> Vec<usize> {
        let layout = self.layout;
        let mut reader = BitCursor::new(headers, usize::from(bits));
        let mut sizes = Vec::new();
        let mut index_length = layout.index_length;
        while let Some(size) = reader.read(layout.size_length) {
            if reader.read(index_length).is_none() {
                break;
            }
            index_length = layout.index_delta_length;
            if size > 0 {
                sizes.push(size as usize);
            }
        }
        sizes
    }
}

/// MSB-first bits of an AU-header section, at most `limit` of them.
struct BitCursor<'a> {
    data: &'a [u8],
    position: usize,
    limit: usize,
}

impl<'a> BitCursor<'a> {
    fn new(data: &'a [u8], limit: usize) -> Self {
        BitCursor {
            data,
            position: 0,
            limit: limit.min(data.len() * 8),
        }
    }

    /// The next `count` bits (at most 32), or `None` past the limit.
    fn read(&mut self, count: u8) -> Option<u32> {
        let count = usize::from(count.min(32));
        if self.position + count > self.limit {
            return None;
        }
        let mut value: u32 = 0;
        for _ in 0..count {
            let byte = *self.data.get(self.position / 8)?;
            let bit = (byte >> (7 - self.position % 8)) & 1;
            value = (value << 1) | u32::from(bit);
            self.position += 1;
        }
        Some(value)
    }
}

/// Opus RTP: each packet's payload is one Opus packet (RFC 7587 4.2).
#[derive(Debug)]
pub struct OpusDepacketizer {
    clock: RtpClock,
    sequence: SequenceTracker,
}

impl Default for OpusDepacketizer {
    fn default() -> Self {
        OpusDepacketizer {
            clock: RtpClock::new(super::OPUS_CLOCK_RATE),
            sequence: SequenceTracker::default(),
        }
    }
}

impl OpusDepacketizer {
    pub fn lost(&self) -> u64 {
        self.sequence.lost
    }

    /// Take in one packet; its frame goes to `out`. Returns how many packets were missing
    /// before this one.
    pub fn push(&mut self, packet: &RtpPacket, out: &mut Vec<AudioFrame>) -> u16 {
        let gap = self.sequence.gap(packet.header.sequence);
        if !packet.payload.is_empty() {
            out.push(AudioFrame {
                timestamp_ms: self.clock.ms(packet.header.timestamp),
                data: packet.payload.clone(),
            });
        }
        gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::RtpHeader;

    fn packet(sequence: u16, timestamp: u32, marker: bool, payload: &[u8]) -> RtpPacket {
        RtpPacket {
            header: RtpHeader {
                marker,
                payload_type: 96,
                sequence,
                timestamp,
                ssrc: 1,
            },
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn clock_counts_from_the_first_packet_across_the_wrap() {
        let mut clock = RtpClock::new(90_000);
        assert_eq!(clock.ms(u32::MAX - 8999), 0);
        assert_eq!(clock.ms(0), 100);
        assert_eq!(clock.ms(9_000 * 9), 1000);
        // A step back (B-frame order) and one before the first packet.
        assert_eq!(clock.ms(9_000 * 8), 900);
        let mut clock = RtpClock::new(1000);
        clock.ms(5000);
        assert_eq!(clock.ms(4000), 0);
    }

    #[test]
    fn lost_fragment_drops_its_nal_but_keeps_the_rest() {
        let mut depacketizer = VideoDepacketizer::new(NalFormat::H264);
        let mut out = Vec::new();
        assert_eq!(
            depacketizer.push(&packet(1, 0, false, &[0x67, 1]), &mut out),
            0
        );
        // FU-A start, then its middle is lost (sequence 3), then the end.
        depacketizer.push(&packet(2, 0, false, &[0x7C, 0x85, 1]), &mut out);
        assert_eq!(
            depacketizer.push(&packet(4, 0, false, &[0x7C, 0x45, 3]), &mut out),
            1
        );
        depacketizer.push(&packet(5, 0, true, &[0x68, 2]), &mut out);
        assert_eq!(
            out,
            vec![AccessUnit {
                timestamp_ms: 0,
                nal_units: vec![
                    Bytes::from_static(&[0x67, 1]),
                    Bytes::from_static(&[0x68, 2])
                ]
            }]
        );
        assert_eq!(depacketizer.lost(), 1);
    }

    #[test]
    fn new_timestamp_ends_an_unmarked_access_unit() {
        let mut depacketizer = VideoDepacketizer::new(NalFormat::H264);
        let mut out = Vec::new();
        depacketizer.push(&packet(1, 0, false, &[0x41, 1]), &mut out);
        assert!(out.is_empty());
        depacketizer.push(&packet(2, 3000, true, &[0x41, 2]), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].timestamp_ms, 33);
    }

    #[test]
    fn aac_several_frames_per_packet_and_fragments() {
        let mut depacketizer = AacDepacketizer::new(AuHeaderLayout::AAC_HBR, 48_000);
        let mut out = Vec::new();
        // Two AU-headers: sizes 2 and 3.
        let mut payload = vec![0, 32, 0, 2 << 3, 0, 3 << 3];
        payload.extend_from_slice(&[1, 1, 2, 2, 2]);
        depacketizer.push(&packet(1, 0, true, &payload), &mut out);
        // One frame of 5 bytes in two fragments.
        depacketizer.push(&packet(2, 2048, false, &[0, 16, 0, 5 << 3, 9, 9]), &mut out);
        depacketizer.push(
            &packet(3, 2048, true, &[0, 16, 0, 5 << 3, 8, 8, 8]),
            &mut out,
        );
        let frames: Vec<_> = out.iter().map(|f| (f.timestamp_ms, &f.data[..])).collect();
        assert_eq!(
            frames,
            vec![
                (0, &[1, 1][..]),
                (21, &[2, 2, 2][..]),
                (43, &[9, 9, 8, 8, 8][..])
            ]
        );
    }

    #[test]
    fn aac_frame_missing_a_fragment_is_dropped() {
        let mut depacketizer = AacDepacketizer::new(AuHeaderLayout::AAC_HBR, 48_000);
        let mut out = Vec::new();
        depacketizer.push(&packet(1, 0, false, &[0, 16, 0, 5 << 3, 9, 9]), &mut out);
        depacketizer.push(&packet(3, 0, true, &[0, 16, 0, 5 << 3, 8]), &mut out);
        assert!(out.is_empty());
    }
}
