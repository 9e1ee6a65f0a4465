//! A stream's frames (FLV tag bodies, as the hub holds them) into RTP packets: H.264 (RFC
//! 6184), HEVC (RFC 7798), AV1 (AOMedia's RTP payload format for AV1), AAC (RFC 3640,
//! AAC-hbr) and Opus (RFC 7587).
//!
//! Run one packetizer per track of a stream and share its [`RtpPackets`] with every viewer
//! (see the [module docs](super) for why and how TCP and UDP viewers send them).
//!
//! Video: each frame is one access unit. Its NAL units go one per packet when they fit,
//! split into fragmentation units when they do not, and a keyframe is preceded by the
//! parameter sets of the last sequence header in one aggregation packet, so a viewer that
//! joins at a keyframe can decode without the SDP's. AV1 temporal units go as OBU elements
//! behind an aggregation header, fragmented across packets as they need, and a keyframe
//! without a sequence header OBU gets the av1C's. The marker bit is set on the last
//! packet of the access unit; the timestamp is the presentation time (the frame's
//! milliseconds plus its composition time offset) at 90 kHz.
//!
//! Audio: AAC frames go one per packet with an AU-header section (fragmented, as RFC 3640
//! allows, when an AU is larger than a packet), at the sample rate of the
//! AudioSpecificConfig; Opus packets go one per RTP packet at 48 kHz.

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{RtpHeader, HEADER_LEN};
use super::rtcp::SenderReport;
use super::{DEFAULT_MAX_PAYLOAD, OPUS_CLOCK_RATE, VIDEO_CLOCK_RATE};
use crate::codec::{
    av1_obus, length_prefixed_nalus, parse_audio_tag, parse_video_tag, AacConfig, AudioCodec,
    Av1Config, AvcConfig, HevcConfig, VideoCodec, VideoFrameKind, VideoPacketKind, OBU_PADDING,
    OBU_SEQUENCE_HEADER, OBU_TEMPORAL_DELIMITER, OBU_TILE_LIST,
};

/// Bytes before each packet in interleaved form: `$`, channel, 16-bit length.
pub const INTERLEAVED_PREFIX_LEN: usize = 4;

/// What a track's packets carry that the SDP and the SETUP answer announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketizerParams {
    /// The track's source: one per stream and track, the same for every viewer.
    pub ssrc: u32,
    /// Sequence number of the first packet (RFC 3550 wants it random: the caller's pick).
    pub first_sequence: u16,
    /// Added to every RTP timestamp (random too, for the same reason).
    pub timestamp_offset: u32,
    /// The payload type the SDP gives the track (96 and up).
    pub payload_type: u8,
    /// The interleaved channel of the track's RTP packets: 2 x the track's index.
    pub channel: u8,
    /// Payload bytes a packet may carry, between 64 and what an interleaved frame's 16-bit
    /// length allows (values outside are brought inside).
    pub max_payload: usize,
}

impl PacketizerParams {
    /// Parameters for track `track` with the default payload size.
    pub fn new(
        track: u8,
        payload_type: u8,
        ssrc: u32,
        first_sequence: u16,
        timestamp_offset: u32,
    ) -> Self {
        PacketizerParams {
            ssrc,
            first_sequence,
            timestamp_offset,
            payload_type,
            channel: track.saturating_mul(2),
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// The RTP packets of one frame, each with its interleaved prefix, in one buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPackets {
    buffer: Bytes,
    /// Where each packet's interleaved prefix begins in `buffer`.
    starts: Vec<usize>,
}

impl RtpPackets {
    /// Every packet framed for interleaved TCP: write it as it is.
    pub fn interleaved(&self) -> &Bytes {
        &self.buffer
    }

    /// Each packet as a UDP datagram (a slice of the shared buffer without the prefix).
    pub fn datagrams(&self) -> impl Iterator<Item = Bytes> + '_ {
        let ends = self
            .starts
            .iter()
            .skip(1)
            .copied()
            .chain([self.buffer.len()]);
        self.starts
            .iter()
            .zip(ends)
            .map(|(&start, end)| self.buffer.slice(start + INTERLEAVED_PREFIX_LEN..end))
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The sequence number and RTP timestamp of the first packet: what a PLAY answer's
    /// `RTP-Info` gives a viewer whose first packet this is.
    pub fn first_sequence_and_timestamp(&self) -> Option<(u16, u32)> {
        let start = *self.starts.first()? + INTERLEAVED_PREFIX_LEN;
        let h = self.buffer.get(start..start + HEADER_LEN)?;
        Some((
            u16::from_be_bytes([h[2], h[3]]),
            u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ))
    }
}

/// Numbering and framing shared by every packetizer.
#[derive(Debug)]
struct PacketWriter {
    params: PacketizerParams,
    next_sequence: u16,
    /// RFC 3550 counts for sender reports (they wrap, as the spec says).
    packet_count: u32,
    octet_count: u32,
    last_timestamp: u32,
    buffer: BytesMut,
    starts: Vec<usize>,
}

impl PacketWriter {
    fn new(mut params: PacketizerParams) -> Self {
        params.max_payload = params
            .max_payload
            .clamp(64, usize::from(u16::MAX) - HEADER_LEN);
        PacketWriter {
            next_sequence: params.first_sequence,
            params,
            packet_count: 0,
            octet_count: 0,
            last_timestamp: params.timestamp_offset,
            buffer: BytesMut::new(),
            starts: Vec::new(),
        }
    }

    fn max_payload(&self) -> usize {
        self.params.max_payload
    }

    /// The RTP timestamp of `ms` milliseconds on a `clock_rate` clock. Negative times (a
    /// first frame with a negative composition offset) wrap, as RTP timestamps do.
    fn timestamp(&self, ms: i64, clock_rate: u32) -> u32 {
        let ticks = i128::from(ms) * i128::from(clock_rate) / 1000;
        (ticks as u32).wrapping_add(self.params.timestamp_offset)
    }

    /// Append one packet whose payload is the concatenation of `parts`.
    fn packet(&mut self, timestamp: u32, parts: &[&[u8]]) {
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        self.starts.push(self.buffer.len());
        self.buffer.put_u8(b'$');
        self.buffer.put_u8(self.params.channel);
        // Payloads are at most max_payload, which keeps the length within 16 bits.
        self.buffer.put_u16((HEADER_LEN + payload_len) as u16);
        RtpHeader {
            marker: false,
            payload_type: self.params.payload_type,
            sequence: self.next_sequence,
            timestamp,
            ssrc: self.params.ssrc,
        }
        .write(&mut self.buffer);
        for part in parts {
            self.buffer.put_slice(part);
        }
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.packet_count = self.packet_count.wrapping_add(1);
        self.octet_count = self.octet_count.wrapping_add(payload_len as u32);
        self.last_timestamp = timestamp;
    }

    /// Set the marker bit of the last packet written.
    fn mark_last(&mut self) {
        if let Some(&start) = self.starts.last() {
            if let Some(byte) = self.buffer.get_mut(start + INTERLEAVED_PREFIX_LEN + 1) {
                *byte |= 0x80;
            }
        }
    }

    /// The packets written since the last call, or `None` if there are none.
    fn finish(&mut self) -> Option<RtpPackets> {
        if self.starts.is_empty() {
            return None;
        }
        Some(RtpPackets {
            buffer: self.buffer.split().freeze(),
            starts: std::mem::take(&mut self.starts),
        })
    }

    fn sender_report(&self, ntp_time: u64) -> SenderReport {
        SenderReport {
            ssrc: self.params.ssrc,
            ntp_time,
            rtp_timestamp: self.last_timestamp,
            packet_count: self.packet_count,
            octet_count: self.octet_count,
        }
    }

    /// `unit` in packets of at most max_payload bytes: whole when it fits, else as
    /// fragments, each `header(first, last)` followed by a piece of `body`.
    fn unit_or_fragments(
        &mut self,
        timestamp: u32,
        unit: &[u8],
        body: &[u8],
        header: impl Fn(bool, bool) -> [u8; 3],
        header_len: usize,
    ) {
        if unit.len() <= self.max_payload() {
            self.packet(timestamp, &[unit]);
            return;
        }
        let piece = self.max_payload() - header_len;
        let count = body.len().div_ceil(piece);
        for (i, chunk) in body.chunks(piece).enumerate() {
            let header = header(i == 0, i + 1 == count);
            self.packet(timestamp, &[&header[..header_len], chunk]);
        }
    }
}

/// The codec parameters a video packetizer needs from the stream's sequence header.
#[derive(Debug)]
enum VideoParams {
    Avc {
        nal_length_size: u8,
        parameter_sets: Vec<Bytes>,
    },
    Hevc {
        nal_length_size: u8,
        parameter_sets: Vec<Bytes>,
    },
    Av1 {
        /// The av1C's configOBUs: the sequence header a keyframe is decoded with.
        config_obus: Bytes,
    },
}

/// H.264, HEVC or AV1 frames into RTP; the codec is the one of the sequence headers it is
/// fed.
#[derive(Debug)]
pub struct VideoPacketizer {
    writer: PacketWriter,
    params: Option<VideoParams>,
}

impl VideoPacketizer {
    pub fn new(params: PacketizerParams) -> Self {
        VideoPacketizer {
            writer: PacketWriter::new(params),
            params: None,
        }
    }

    /// Packetize one video tag body with its timestamp in milliseconds. Sequence headers
    /// are taken in (they return `None`); frames before the first one, frames of other
    /// codecs and unreadable tags return `None` too.
    pub fn push(&mut self, tag: &[u8], timestamp_ms: u64) -> Option<RtpPackets> {
        let info = parse_video_tag(tag)?;
        let data = tag.get(info.data_offset..)?;
        match (info.packet, info.codec) {
            (VideoPacketKind::SequenceHeader, VideoCodec::Avc) => {
                let config = AvcConfig::parse(data).ok()?;
                self.params = Some(VideoParams::Avc {
                    nal_length_size: config.nal_length_size,
                    parameter_sets: [config.sps, config.pps].concat(),
                });
                None
            }
            (VideoPacketKind::SequenceHeader, VideoCodec::Hevc) => {
                let config = HevcConfig::parse(data).ok()?;
                self.params = Some(VideoParams::Hevc {
                    nal_length_size: config.nal_length_size,
                    parameter_sets: [config.vps, config.sps, config.pps].concat(),
                });
                None
            }
            (VideoPacketKind::SequenceHeader, VideoCodec::Av1) => {
                let config = Av1Config::parse(data).ok()?;
                self.params = Some(VideoParams::Av1 {
                    config_obus: Bytes::copy_from_slice(data.get(config.config_obus_offset..)?),
                });
                None
            }
            (VideoPacketKind::Frame, codec) => {
                let pts = i64::try_from(timestamp_ms)
                    .ok()?
                    .saturating_add(i64::from(info.composition_time));
                let timestamp = self.writer.timestamp(pts, VIDEO_CLOCK_RATE);
                let key = info.frame == VideoFrameKind::Key;
                match (&self.params, codec) {
                    (
                        Some(VideoParams::Avc {
                            nal_length_size,
                            parameter_sets,
                        }),
                        VideoCodec::Avc,
                    ) => {
                        if key {
                            h264_aggregate(&mut self.writer, timestamp, parameter_sets);
                        }
                        for nal in length_prefixed_nalus(data, *nal_length_size) {
                            h264_unit(&mut self.writer, timestamp, nal);
                        }
                    }
                    (
                        Some(VideoParams::Hevc {
                            nal_length_size,
                            parameter_sets,
                        }),
                        VideoCodec::Hevc,
                    ) => {
                        if key {
                            hevc_aggregate(&mut self.writer, timestamp, parameter_sets);
                        }
                        for nal in length_prefixed_nalus(data, *nal_length_size) {
                            hevc_unit(&mut self.writer, timestamp, nal);
                        }
                    }
                    (Some(VideoParams::Av1 { config_obus }), VideoCodec::Av1) => {
                        av1_temporal_unit(&mut self.writer, timestamp, data, key, config_obus);
                    }
                    _ => return None,
                }
                self.writer.mark_last();
                self.writer.finish()
            }
            _ => None,
        }
    }

    /// The track's sender report at `ntp_time`, taken to be when the last frame was sent.
    pub fn sender_report(&self, ntp_time: u64) -> SenderReport {
        self.writer.sender_report(ntp_time)
    }
}

/// H.264 NAL unit types the packetization adds (RFC 6184 5.2).
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// One H.264 NAL unit: a single NAL unit packet, or FU-A fragments of it.
fn h264_unit(writer: &mut PacketWriter, timestamp: u32, nal: &[u8]) {
    let Some((&nal_header, body)) = nal.split_first() else {
        return;
    };
    let indicator = (nal_header & 0xE0) | FU_A;
    let nal_type = nal_header & 0x1F;
    let fu_header = move |first: bool, last: bool| {
        [
            indicator,
            (u8::from(first) << 7) | (u8::from(last) << 6) | nal_type,
            0,
        ]
    };
    writer.unit_or_fragments(timestamp, nal, body, fu_header, 2);
}

/// Parameter sets in one STAP-A when they fit in a packet, else one unit each.
fn h264_aggregate(writer: &mut PacketWriter, timestamp: u32, sets: &[Bytes]) {
    let nri = sets
        .iter()
        .filter_map(|s| s.first())
        .map(|h| h & 0x60)
        .max();
    let Some(nri) = nri else {
        return;
    };
    let stap_header = [nri | STAP_A];
    if !aggregate(writer, timestamp, &stap_header, sets) {
        for set in sets {
            h264_unit(writer, timestamp, set);
        }
    }
}

/// HEVC NAL unit types the packetization adds (RFC 7798 4.4).
const HEVC_AP: u8 = 48;
const HEVC_FU: u8 = 49;

/// One HEVC NAL unit: a single NAL unit packet, or FU fragments of it.
fn hevc_unit(writer: &mut PacketWriter, timestamp: u32, nal: &[u8]) {
    let &[b0, b1, ..] = nal else {
        return;
    };
    let nal_type = (b0 >> 1) & 0x3F;
    // The payload header keeps the NAL's F bit, layer id and temporal id.
    let payload_header = (b0 & 0x81) | (HEVC_FU << 1);
    let fu_header = move |first: bool, last: bool| {
        [
            payload_header,
            b1,
            (u8::from(first) << 7) | (u8::from(last) << 6) | nal_type,
        ]
    };
    writer.unit_or_fragments(timestamp, nal, &nal[2..], fu_header, 3);
}

/// VPS, SPS and PPS in one aggregation packet when they fit, else one unit each.
fn hevc_aggregate(writer: &mut PacketWriter, timestamp: u32, sets: &[Bytes]) {
    let Some(first) = sets.iter().find_map(|s| s.get(..2)) else {
        return;
    };
    let ap_header = [(first[0] & 0x81) | (HEVC_AP << 1), first[1]];
    if !aggregate(writer, timestamp, &ap_header, sets) {
        for set in sets {
            hevc_unit(writer, timestamp, set);
        }
    }
}

/// The AV1 aggregation header's bits: the first OBU element continues the last packet's
/// (Z), the last one continues in the next packet (Y), a new coded video sequence starts
/// here (N). W stays 0: every element is preceded by its length.
const AV1_Z: u8 = 0x80;
const AV1_Y: u8 = 0x40;
const AV1_N: u8 = 0x08;

/// One AV1 temporal unit (low-overhead OBUs, as Enhanced RTMP carries them). Each OBU goes
/// as an element without its size field (the element's length says it); temporal
/// delimiters, tile lists and padding are not sent (the payload format says so). A
/// keyframe starts a coded video sequence: N is set on its first packet, and the av1C's
/// sequence header goes first when the unit has none of its own, as receivers (libwebrtc)
/// take N to mean a keyframe that decodes on its own.
fn av1_temporal_unit(
    writer: &mut PacketWriter,
    timestamp: u32,
    data: &[u8],
    key: bool,
    config_obus: &[u8],
) {
    let obus = || av1_obus(data).map_while(Result::ok);
    let has_sequence_header = obus().any(|obu| obu.obu_type == OBU_SEQUENCE_HEADER);
    let configured = (key && !has_sequence_header)
        .then(|| av1_obus(config_obus).map_while(Result::ok))
        .into_iter()
        .flatten();
    let elements = configured.chain(obus()).filter(|obu| {
        !matches!(
            obu.obu_type,
            OBU_TEMPORAL_DELIMITER | OBU_TILE_LIST | OBU_PADDING
        )
    });
    let max = writer.max_payload();
    let mut packet = Vec::with_capacity(max);
    packet.push(if key { AV1_N } else { 0 });
    let mut element = Vec::new();
    let mut length = [0u8; 8];
    for obu in elements {
        // The OBU's header without the size flag (and its extension byte), then its payload.
        let header_len = 1 + usize::from(obu.bytes[0] & 0x04 != 0);
        element.clear();
        element.push(obu.bytes[0] & !0x02);
        element.extend_from_slice(&obu.bytes[1..header_len]);
        element.extend_from_slice(obu.payload);
        let mut rest = &element[..];
        loop {
            let space = max - packet.len();
            let whole = leb128(rest.len(), &mut length);
            if whole + rest.len() <= space {
                packet.extend_from_slice(&length[..whole]);
                packet.extend_from_slice(rest);
                break;
            }
            // The largest piece that fits with its own length in front.
            let mut piece = space.saturating_sub(1);
            while piece > 0 && leb128(piece, &mut length) + piece > space {
                piece -= 1;
            }
            let continues = piece > 0;
            if continues {
                let n = leb128(piece, &mut length);
                packet.extend_from_slice(&length[..n]);
                packet.extend_from_slice(&rest[..piece]);
                rest = &rest[piece..];
                packet[0] |= AV1_Y;
            }
            writer.packet(timestamp, &[&packet]);
            packet.clear();
            packet.push(if continues { AV1_Z } else { 0 });
        }
    }
    if packet.len() > 1 {
        writer.packet(timestamp, &[&packet]);
    }
}

/// `value` as leb128 in `out`; how many bytes that took.
fn leb128(mut value: usize, out: &mut [u8; 8]) -> usize {
    let mut n = 0;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 || n == 7 {
            out[n] = byte;
            return n + 1;
        }
        out[n] = byte | 0x80;
        n += 1;
    }
}

/// An aggregation packet (`header`, then each unit after its 16-bit size), written only if
/// it fits in one packet; says whether it was.
fn aggregate(writer: &mut PacketWriter, timestamp: u32, header: &[u8], units: &[Bytes]) -> bool {
    let size = header.len() + units.iter().map(|u| 2 + u.len()).sum::<usize>();
    if size > writer.max_payload() || units.is_empty() {
        return false;
    }
    let mut payload = Vec::with_capacity(size);
    payload.extend_from_slice(header);
    for unit in units {
        payload.extend_from_slice(&(unit.len() as u16).to_be_bytes());
        payload.extend_from_slice(unit);
    }
    writer.packet(timestamp, &[&payload]);
    true
}

/// What an audio packetizer knows of the stream's codec.
#[derive(Debug, Clone, Copy)]
enum AudioParams {
    /// AAC at the AudioSpecificConfig's sample rate; the RTP timestamp of the last frame.
    Aac {
        clock_rate: u32,
        last: Option<u32>,
    },
    Opus,
}

/// Samples in one AAC frame (AAC-LC; the RTP clock is the AudioSpecificConfig's rate).
const AAC_FRAME_SAMPLES: u32 = 1024;

/// AAC or Opus frames into RTP. An Opus packet larger than the payload size is dropped.
#[derive(Debug)]
pub struct AudioPacketizer {
    writer: PacketWriter,
    params: Option<AudioParams>,
}

impl AudioPacketizer {
    pub fn new(params: PacketizerParams) -> Self {
        AudioPacketizer {
            writer: PacketWriter::new(params),
            params: None,
        }
    }

    /// Packetize one audio tag body with its timestamp in milliseconds. AAC needs the
    /// sequence header first (its sample rate is the RTP clock); Opus does not. Sequence
    /// headers, other codecs and unreadable tags return `None`.
    pub fn push(&mut self, tag: &[u8], timestamp_ms: u64) -> Option<RtpPackets> {
        let info = parse_audio_tag(tag)?;
        let data = tag.get(info.data_offset..)?;
        let ms = i64::try_from(timestamp_ms).ok()?;
        match info.codec {
            AudioCodec::Aac if info.is_sequence_header => {
                let config = AacConfig::parse(data).ok()?;
                self.params = Some(AudioParams::Aac {
                    clock_rate: config.sample_rate,
                    last: None,
                });
                None
            }
            AudioCodec::Aac if info.coded && !data.is_empty() => {
                let Some(AudioParams::Aac { clock_rate, last }) = &mut self.params else {
                    return None;
                };
                // FLV's millisecond timestamps round each frame's time; an AAC frame is
                // 1024 samples, so a frame that follows its predecessor within 2 ms of
                // that is put exactly 1024 ticks after it (players' clocks see no jitter).
                let rounded = self.writer.timestamp(ms, *clock_rate);
                let timestamp = match *last {
                    Some(previous) => {
                        let next = previous.wrapping_add(AAC_FRAME_SAMPLES);
                        let off = rounded.wrapping_sub(next) as i32;
                        if off.unsigned_abs() <= *clock_rate / 500 {
                            next
                        } else {
                            rounded
                        }
                    }
                    None => rounded,
                };
                *last = Some(timestamp);
                aac_frame(&mut self.writer, timestamp, data);
                self.writer.finish()
            }
            // RFC 7587 has no fragmentation: an Opus packet (at most 120 ms, a few KB) that
            // does not fit cannot be sent.
            AudioCodec::Opus
                if info.coded && !data.is_empty() && data.len() <= self.writer.max_payload() =>
            {
                self.params = Some(AudioParams::Opus);
                let timestamp = self.writer.timestamp(ms, OPUS_CLOCK_RATE);
                self.writer.packet(timestamp, &[data]);
                self.writer.finish()
            }
            _ => None,
        }
    }

    /// The track's sender report at `ntp_time`, taken to be when the last frame was sent.
    pub fn sender_report(&self, ntp_time: u64) -> SenderReport {
        self.writer.sender_report(ntp_time)
    }
}

/// One AAC frame as AAC-hbr: a 16-bit AU-headers-length (16 bits: one header), the
/// AU-header (13-bit size, 3-bit index 0), the frame. A frame larger than a packet is
/// fragmented, every fragment with the same AU-header, the marker only on the last
/// (RFC 3640 3.2.3).
fn aac_frame(writer: &mut PacketWriter, timestamp: u32, frame: &[u8]) {
    const AU_SECTION_LEN: usize = 4;
    // A 13-bit size cannot say more; larger frames cannot be AAC anyway.
    let size = frame.len().min(0x1FFF) as u16;
    let au_section = {
        let header = size << 3;
        let [hi, lo] = header.to_be_bytes();
        [0, 16, hi, lo]
    };
    let frame = &frame[..usize::from(size)];
    let piece = writer.max_payload() - AU_SECTION_LEN;
    for chunk in frame.chunks(piece) {
        writer.packet(timestamp, &[&au_section, chunk]);
    }
    writer.mark_last();
}

#[cfg(test)]
pub(crate) mod tests;
