//! RTP and RTCP: `RtpPacket::parse` and `rtcp::parse_compound` of the whole input, then the
//! input as records (`len u8 | bytes`) read as RTP packets by every depacketizer, whose
//! access units go through the FLV builders; and the same records as FLV tag bodies through
//! the packetizers (after valid H.264 and AAC sequence headers), whose packets must parse
//! and fit the payload size; and each record as the OBUs of an AV1 keyframe, likewise.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use media::rtp::depacketize::{MAX_ACCESS_UNIT, MAX_NAL_UNITS};
use media::rtp::{
    rtcp, AacDepacketizer, AudioPacketizer, AudioTagBuilder, AuHeaderLayout, NalFormat,
    OpusDepacketizer, PacketizerParams, RtpPacket, VideoDepacketizer, VideoPacketizer,
    VideoTagBuilder,
};

const AVC_SEQUENCE_HEADER: &[u8] = &[
    0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4, 0x67, 0x64, 0, 0x1F, 1, 0, 2, 0x68, 0xEB,
];
const AAC_SEQUENCE_HEADER: &[u8] = &[0xAF, 0, 0x12, 0x10];
/// An Enhanced RTMP AV1 sequence start: av1C with a sequence header OBU.
const AV1_SEQUENCE_HEADER: &[u8] = &[
    0x80, b'a', b'v', b'0', b'1', 0x81, 0, 0x0C, 0, 0x0A, 0x0A, 0, 0, 0, 0x24, 0xC4, 0xFF, 0xDF, 0,
    0x68, 0x02,
];
const MAX_PAYLOAD: usize = 100;

fn records(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = usize::from(len).min(rest.len());
        out.push(&rest[..len]);
        data = &rest[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let _ = RtpPacket::parse(Bytes::copy_from_slice(data));
    let _ = rtcp::parse_compound(data);

    let mut h264 = VideoDepacketizer::new(NalFormat::H264);
    let mut hevc = VideoDepacketizer::new(NalFormat::Hevc);
    let mut aac = AacDepacketizer::new(AuHeaderLayout::AAC_HBR, 48_000);
    let mut opus = OpusDepacketizer::default();
    let mut h264_tags = VideoTagBuilder::new(NalFormat::H264, &[]);
    let mut hevc_tags = VideoTagBuilder::new(NalFormat::Hevc, &[]);
    let aac_tags = AudioTagBuilder::Aac { config: Bytes::from_static(&[0x12, 0x10]) };
    let (mut units, mut frames) = (Vec::new(), Vec::new());
    for record in records(data) {
        let Ok(packet) = RtpPacket::parse(Bytes::copy_from_slice(record)) else {
            continue;
        };
        h264.push(&packet, &mut units);
        for unit in units.drain(..) {
            assert!(unit.nal_units.len() <= MAX_NAL_UNITS);
            assert!(unit.nal_units.iter().map(|n| n.len()).sum::<usize>() <= MAX_ACCESS_UNIT);
            h264_tags.push(&unit);
        }
        hevc.push(&packet, &mut units);
        for unit in units.drain(..) {
            hevc_tags.push(&unit);
        }
        aac.push(&packet, &mut frames);
        opus.push(&packet, &mut frames);
        for frame in frames.drain(..) {
            aac_tags.frame(&frame.data);
        }
    }

    let params = PacketizerParams { max_payload: MAX_PAYLOAD, ..PacketizerParams::new(0, 96, 1, 0, 0) };
    let mut video = VideoPacketizer::new(params);
    let mut audio = AudioPacketizer::new(params);
    let mut av1 = VideoPacketizer::new(params);
    video.push(AVC_SEQUENCE_HEADER, 0);
    audio.push(AAC_SEQUENCE_HEADER, 0);
    av1.push(AV1_SEQUENCE_HEADER, 0);
    for (i, record) in records(data).into_iter().enumerate() {
        let av1_keyframe = [&[0x91, b'a', b'v', b'0', b'1'], record].concat();
        let made = [
            video.push(record, i as u64),
            audio.push(record, i as u64),
            av1.push(&av1_keyframe, i as u64),
        ];
        for packets in made.into_iter().flatten() {
            assert!(!packets.is_empty());
            for datagram in packets.datagrams() {
                let packet = RtpPacket::parse(datagram).expect("a packetized packet parses");
                assert!(packet.payload.len() <= MAX_PAYLOAD);
            }
        }
    }
});
