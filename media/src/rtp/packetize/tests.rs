//! Packetizer tests, most of them round trips through the depacketizers and the FLV
//! builders: what a viewer receives is what a publisher would have sent.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::codec::{parse_video_tag, VideoFrameKind};
use crate::rtp::depacketize::{
    AacDepacketizer, AccessUnit, AuHeaderLayout, NalFormat, OpusDepacketizer, VideoDepacketizer,
};
use crate::rtp::flv::{AudioTagBuilder, VideoTagBuilder};
use crate::rtp::RtpPacket;

pub(crate) const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9, 0x40, 0x50];
pub(crate) const PPS: &[u8] = &[0x68, 0xEB, 0xE3, 0xCB];
pub(crate) const HEVC_VPS: &[u8] = &[0x40, 0x01, 0x0C, 0x01, 0xFF, 0xFF];
/// An SPS with a general profile_tier_level (Main, level 3.1) after its first byte.
pub(crate) const HEVC_SPS: &[u8] = &[
    0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x5D, 0xA0,
    0x02, 0x80,
];
pub(crate) const HEVC_PPS: &[u8] = &[0x44, 0x01, 0xC1, 0x72];

fn params() -> PacketizerParams {
    PacketizerParams::new(0, 96, 0xABCD, 65_530, 1000)
}

pub(crate) fn avc_sequence_header() -> Vec<u8> {
    let config = AvcConfig::from_parameter_sets(
        vec![Bytes::from_static(SPS)],
        vec![Bytes::from_static(PPS)],
    )
    .unwrap();
    [&[0x17, 0, 0, 0, 0][..], &config.record()].concat()
}

pub(crate) fn hevc_sequence_header() -> Vec<u8> {
    let config = HevcConfig {
        nal_length_size: 4,
        vps: vec![Bytes::from_static(HEVC_VPS)],
        sps: vec![Bytes::from_static(HEVC_SPS)],
        pps: vec![Bytes::from_static(HEVC_PPS)],
    };
    [&[0x90][..], b"hvc1", &config.record().unwrap()].concat()
}

/// A NAL unit of `len` bytes with `header` and a recognisable body.
fn nal(header: &[u8], len: usize) -> Vec<u8> {
    let mut nal = header.to_vec();
    nal.extend((0..len.saturating_sub(header.len())).map(|i| (i % 251) as u8));
    nal
}

/// A legacy AVC frame tag with 4-byte lengths.
fn avc_frame(key: bool, cts: i32, nals: &[Vec<u8>]) -> Vec<u8> {
    let mut tag = vec![if key { 0x17 } else { 0x27 }, 1];
    tag.extend_from_slice(&cts.to_be_bytes()[1..]);
    for nal in nals {
        tag.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        tag.extend_from_slice(nal);
    }
    tag
}

fn hevc_frame(key: bool, nals: &[Vec<u8>]) -> Vec<u8> {
    let mut tag = vec![0x80 | if key { 0x10 } else { 0x20 } | 1];
    tag.extend_from_slice(b"hvc1");
    tag.extend_from_slice(&[0, 0, 0]);
    for nal in nals {
        tag.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        tag.extend_from_slice(nal);
    }
    tag
}

fn parsed(packets: &RtpPackets) -> Vec<RtpPacket> {
    packets
        .datagrams()
        .map(|datagram| RtpPacket::parse(datagram).unwrap())
        .collect()
}

fn depacketize(format: NalFormat, packets: &[RtpPacket]) -> Vec<AccessUnit> {
    let mut depacketizer = VideoDepacketizer::new(format);
    let mut out = Vec::new();
    for packet in packets {
        assert_eq!(depacketizer.push(packet, &mut out), 0);
    }
    out
}

#[test]
fn h264_keyframe_round_trip_with_stap_a_and_fu_a() {
    let mut packetizer = VideoPacketizer::new(params());
    assert!(packetizer.push(&avc_sequence_header(), 0).is_none());
    let sei = nal(&[0x06], 20);
    let idr = nal(&[0x65], 5000);
    let packets = packetizer
        .push(&avc_frame(true, 40, &[sei.clone(), idr.clone()]), 1000)
        .unwrap();

    let rtp = parsed(&packets);
    // STAP-A, SEI, then 5 fragments of the IDR (4999 bytes in pieces of 1198).
    assert_eq!(rtp.len(), 7);
    assert_eq!(rtp[0].payload[0] & 0x1F, STAP_A);
    assert_eq!(rtp[2].payload[..2], [0x60 | FU_A, 0x80 | 5]);
    assert_eq!(rtp[6].payload[1], 0x40 | 5);
    for (i, packet) in rtp.iter().enumerate() {
        assert_eq!(
            packet.header.marker,
            i == 6,
            "marker on the last packet only"
        );
        assert_eq!(packet.header.sequence, 65_530u16.wrapping_add(i as u16));
        assert_eq!(packet.header.timestamp, 1000 + 1040 * 90, "PTS at 90 kHz");
        assert_eq!(packet.header.ssrc, 0xABCD);
        assert!(packet.payload.len() <= DEFAULT_MAX_PAYLOAD);
    }

    let units = depacketize(NalFormat::H264, &rtp);
    let expected: Vec<Bytes> = [SPS, PPS, &sei, &idr]
        .iter()
        .map(|n| Bytes::copy_from_slice(n))
        .collect();
    assert_eq!(
        units,
        vec![AccessUnit {
            timestamp_ms: 0,
            nal_units: expected
        }]
    );

    let mut builder = VideoTagBuilder::new(NalFormat::H264, &[]);
    let tags = builder.push(&units[0]);
    assert_eq!(tags.len(), 2);
    assert_eq!(&tags[0][..], &avc_sequence_header()[..]);
    assert_eq!(&tags[1][..], &avc_frame(true, 0, &[sei, idr])[..]);
    // The same sets again make no second sequence header.
    assert_eq!(builder.push(&units[0]).len(), 1);
}

#[test]
fn inter_frame_has_no_parameter_sets_and_cts_moves_the_timestamp() {
    let mut packetizer = VideoPacketizer::new(params());
    packetizer.push(&avc_sequence_header(), 0);
    let packets = packetizer
        .push(&avc_frame(false, -40, &[nal(&[0x41], 100)]), 40)
        .unwrap();
    let rtp = parsed(&packets);
    assert_eq!(rtp.len(), 1);
    assert_eq!(rtp[0].header.timestamp, 1000);
    assert!(rtp[0].header.marker);
    assert_eq!(packets.first_sequence_and_timestamp(), Some((65_530, 1000)));
}

#[test]
fn frames_before_a_sequence_header_or_of_another_codec_are_skipped() {
    let mut packetizer = VideoPacketizer::new(params());
    assert!(packetizer
        .push(&avc_frame(true, 0, &[nal(&[0x65], 10)]), 0)
        .is_none());
    packetizer.push(&avc_sequence_header(), 0);
    assert!(packetizer
        .push(&hevc_frame(true, &[nal(&[0x26, 0x01], 10)]), 0)
        .is_none());
    assert!(packetizer.push(&[], 0).is_none());
}

#[test]
fn interleaved_form_frames_every_packet_on_the_tracks_channel() {
    let mut packetizer = VideoPacketizer::new(PacketizerParams::new(1, 97, 1, 0, 0));
    packetizer.push(&avc_sequence_header(), 0);
    let packets = packetizer
        .push(&avc_frame(true, 0, &[nal(&[0x65], 3000)]), 0)
        .unwrap();
    let mut rest = &packets.interleaved()[..];
    let mut datagrams = packets.datagrams();
    while !rest.is_empty() {
        assert_eq!(rest[..2], [b'$', 2]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        assert_eq!(&rest[4..4 + len], &datagrams.next().unwrap()[..]);
        rest = &rest[4 + len..];
    }
    assert!(datagrams.next().is_none());
}

#[test]
fn hevc_keyframe_round_trip_with_ap_and_fu() {
    let mut packetizer = VideoPacketizer::new(params());
    assert!(packetizer.push(&hevc_sequence_header(), 0).is_none());
    let idr = nal(&[0x26, 0x01], 4000);
    let trail = nal(&[0x02, 0x01], 30);
    let packets = packetizer
        .push(&hevc_frame(true, &[idr.clone(), trail.clone()]), 2000)
        .unwrap();
    let rtp = parsed(&packets);
    assert_eq!((rtp[0].payload[0] >> 1) & 0x3F, HEVC_AP);
    assert_eq!((rtp[1].payload[0] >> 1) & 0x3F, HEVC_FU);
    assert_eq!(rtp[1].payload[2], 0x80 | 19);
    assert!(rtp.last().unwrap().header.marker);

    let units = depacketize(NalFormat::Hevc, &rtp);
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].nal_units.len(), 5);
    assert_eq!(&units[0].nal_units[3][..], &idr[..]);

    let mut builder = VideoTagBuilder::new(NalFormat::Hevc, &[]);
    let tags = builder.push(&units[0]);
    assert_eq!(&tags[0][..], &hevc_sequence_header()[..]);
    assert_eq!(&tags[1][..], &hevc_frame(true, &[idr, trail])[..]);
    let info = parse_video_tag(&tags[1]).unwrap();
    assert_eq!(info.frame, VideoFrameKind::Key);
}

#[test]
fn sdp_parameter_sets_make_the_first_sequence_header_and_changes_make_another() {
    let mut builder = VideoTagBuilder::new(
        NalFormat::H264,
        &[Bytes::from_static(SPS), Bytes::from_static(PPS)],
    );
    let frame = AccessUnit {
        timestamp_ms: 0,
        nal_units: vec![Bytes::from(nal(&[0x65], 10))],
    };
    assert_eq!(builder.push(&frame).len(), 2);
    assert_eq!(builder.push(&frame).len(), 1);
    let new_pps = AccessUnit {
        timestamp_ms: 40,
        nal_units: vec![
            Bytes::from_static(&[0x68, 0xEE]),
            Bytes::from(nal(&[0x41], 10)),
        ],
    };
    let tags = builder.push(&new_pps);
    assert_eq!(tags.len(), 2);
    assert_eq!(tags[1][0], 0x27);
}

#[test]
fn frames_wait_for_parameter_sets() {
    let mut builder = VideoTagBuilder::new(NalFormat::H264, &[]);
    let frame = AccessUnit {
        timestamp_ms: 0,
        nal_units: vec![Bytes::from(nal(&[0x65], 10))],
    };
    assert!(builder.push(&frame).is_empty());
}

fn aac_sequence_header() -> Vec<u8> {
    // AAC-LC, 44.1 kHz, stereo.
    vec![0xAF, 0x00, 0x12, 0x10]
}

#[test]
fn aac_round_trip_with_a_fragmented_frame() {
    let mut packetizer = AudioPacketizer::new(params());
    assert!(
        packetizer.push(&[0xAF, 0x01, 1, 2], 0).is_none(),
        "needs the config first"
    );
    assert!(packetizer.push(&aac_sequence_header(), 0).is_none());
    let small = nal(&[0x21], 300);
    let large = nal(&[0x21], 3000);
    let mut depacketizer = AacDepacketizer::new(AuHeaderLayout::AAC_HBR, 44_100);
    let mut frames = Vec::new();
    for (ms, frame) in [(0, &small), (1000, &large)] {
        let tag = [&[0xAF, 0x01][..], frame].concat();
        let packets = packetizer.push(&tag, ms).unwrap();
        let rtp = parsed(&packets);
        assert!(rtp.last().unwrap().header.marker);
        assert!(rtp[..rtp.len() - 1].iter().all(|p| !p.header.marker));
        assert_eq!(rtp[0].header.timestamp, 1000 + ms as u32 * 441 / 10);
        for packet in &rtp {
            depacketizer.push(packet, &mut frames);
        }
    }
    let frames: Vec<_> = frames
        .iter()
        .map(|f| (f.timestamp_ms, f.data.to_vec()))
        .collect();
    assert_eq!(frames, vec![(0, small.clone()), (1000, large)]);

    let builder = AudioTagBuilder::Aac {
        config: Bytes::from_static(&[0x12, 0x10]),
    };
    assert_eq!(&builder.sequence_header()[..], &aac_sequence_header()[..]);
    assert_eq!(
        &builder.frame(&small)[..],
        &[&[0xAF, 0x01][..], &small].concat()[..]
    );
}

#[test]
fn aac_frames_are_1024_ticks_apart_whatever_the_milliseconds_round_to() {
    let mut packetizer = AudioPacketizer::new(params());
    assert!(packetizer.push(&aac_sequence_header(), 0).is_none());
    let tag = [&[0xAF, 0x01][..], &[0x21, 0, 0]].concat();
    let mut stamps = Vec::new();
    // 44.1 kHz: a frame is 23.22 ms, which FLV rounds to 23 or 24; then a 1 s gap.
    for ms in [0, 23, 46, 70, 93, 116, 1116] {
        let packets = packetizer.push(&tag, ms).unwrap();
        stamps.push(parsed(&packets)[0].header.timestamp.wrapping_sub(1000));
    }
    assert_eq!(&stamps[..6], &[0, 1024, 2048, 3072, 4096, 5120]);
    // A gap is not papered over: the frame goes where its time says.
    assert_eq!(stamps[6], 1116 * 441 / 10);
}

#[test]
fn opus_round_trip() {
    let mut packetizer = AudioPacketizer::new(params());
    let tag = [&[0x91][..], b"Opus", &[0xFC, 1, 2, 3]].concat();
    let packets = packetizer.push(&tag, 20).unwrap();
    let rtp = parsed(&packets);
    assert_eq!(rtp[0].header.timestamp, 1000 + 20 * 48);
    let mut depacketizer = OpusDepacketizer::default();
    let mut frames = Vec::new();
    depacketizer.push(&rtp[0], &mut frames);
    assert_eq!(&frames[0].data[..], &[0xFC, 1, 2, 3]);
    let builder = AudioTagBuilder::Opus { channels: 2 };
    assert_eq!(&builder.frame(&frames[0].data)[..], &tag[..]);
    let header = builder.sequence_header();
    let info = crate::codec::parse_audio_tag(&header).unwrap();
    assert!(info.is_sequence_header);
    let head = crate::codec::OpusHead::parse(&header[info.data_offset..]).unwrap();
    assert_eq!(head.channels, 2);
}

#[test]
fn opus_packet_larger_than_a_payload_is_dropped() {
    let mut packetizer = AudioPacketizer::new(params());
    let tag = [&[0x91][..], b"Opus", &[0; DEFAULT_MAX_PAYLOAD + 1]].concat();
    assert!(packetizer.push(&tag, 0).is_none());
}

#[test]
fn sender_report_follows_the_packets() {
    let mut packetizer = AudioPacketizer::new(params());
    packetizer.push(&aac_sequence_header(), 0);
    packetizer.push(&[0xAF, 0x01, 1, 2, 3], 1000);
    let report = packetizer.sender_report(42);
    assert_eq!(report.ssrc, 0xABCD);
    assert_eq!(report.rtp_timestamp, 1000 + 44_100);
    assert_eq!((report.packet_count, report.octet_count), (1, 4 + 3));
}

/// An OBU with its size field: `obu_type`, `extension` (the byte after the header, if
/// any) and a body of `len` recognisable bytes.
fn obu(obu_type: u8, extension: Option<u8>, len: usize) -> Vec<u8> {
    let mut obu = vec![(obu_type << 3) | 0x02 | if extension.is_some() { 0x04 } else { 0 }];
    obu.extend(extension);
    let mut size = len;
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        obu.push(if size > 0 { byte | 0x80 } else { byte });
        if size == 0 {
            break;
        }
    }
    obu.extend((0..len).map(|i| (i * 7 % 253) as u8));
    obu
}

/// The same OBU as the payload format carries it: without its size field.
fn without_size(obu: &[u8]) -> Vec<u8> {
    let header_len = 1 + usize::from(obu[0] & 0x04 != 0);
    let payload = crate::codec::av1_obus(obu).next().unwrap().unwrap().payload;
    [&[obu[0] & !0x02], &obu[1..header_len], payload].concat()
}

const AV1_SEQUENCE_HEADER: &[u8] = &[
    0x0A, 0x0A, 0x00, 0x00, 0x00, 0x24, 0xC4, 0xFF, 0xDF, 0x00, 0x68, 0x02,
];

fn av1_sequence_header() -> Vec<u8> {
    [
        &[0x80][..],
        b"av01",
        &[0x81, 0x00, 0x0C, 0x00],
        AV1_SEQUENCE_HEADER,
    ]
    .concat()
}

fn av1_frame(key: bool, obus: &[Vec<u8>]) -> Vec<u8> {
    [
        &[0x80 | if key { 0x10 } else { 0x20 } | 1][..],
        b"av01",
        &obus.concat(),
    ]
    .concat()
}

/// The OBU elements of AV1 RTP payloads put back together (read here independently of the
/// packetizer): each packet's aggregation header and its elements, a fragment joined to
/// the next packet's first element when Y and Z say so.
fn av1_elements(packets: &[RtpPacket]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut headers = Vec::new();
    let mut elements: Vec<Vec<u8>> = Vec::new();
    let mut continuing = false;
    for packet in packets {
        let payload = &packet.payload[..];
        let header = payload[0];
        headers.push(header);
        assert_eq!(header & 0x30, 0, "W is 0: every element has its length");
        assert_eq!(
            header & 0x80 != 0,
            continuing,
            "Z follows the last packet's Y"
        );
        let mut rest = &payload[1..];
        let mut first = true;
        while !rest.is_empty() {
            let (mut len, mut n) = (0usize, 0);
            loop {
                let byte = rest[n];
                len |= usize::from(byte & 0x7f) << (7 * n);
                n += 1;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            let element = &rest[n..n + len];
            rest = &rest[n + len..];
            if first && continuing {
                elements.last_mut().unwrap().extend_from_slice(element);
            } else {
                elements.push(element.to_vec());
            }
            first = false;
        }
        continuing = header & 0x40 != 0;
    }
    assert!(!continuing, "the last packet ends its element");
    (headers, elements)
}

#[test]
fn av1_keyframe_gets_the_sequence_header_and_loses_its_delimiter() {
    let mut packetizer = VideoPacketizer::new(params());
    assert!(packetizer.push(&av1_sequence_header(), 0).is_none());
    let frame = obu(6, None, 3000);
    let tag = av1_frame(true, &[obu(2, None, 0), frame.clone()]);
    let rtp = parsed(&packetizer.push(&tag, 1000).unwrap());
    let (headers, elements) = av1_elements(&rtp);
    // The av1C's sequence header first, then the frame, fragmented: N on the first packet.
    assert_eq!(
        elements,
        [without_size(AV1_SEQUENCE_HEADER), without_size(&frame)]
    );
    assert!(rtp.len() >= 3);
    assert_eq!(headers[0] & 0x08, 0x08);
    assert!(headers[1..].iter().all(|h| h & 0x08 == 0));
    assert!(rtp.iter().all(|p| p.payload.len() <= DEFAULT_MAX_PAYLOAD));
    let markers: Vec<bool> = rtp.iter().map(|p| p.header.marker).collect();
    assert_eq!(markers.iter().filter(|m| **m).count(), 1);
    assert_eq!(markers.last(), Some(&true));
    assert!(rtp.iter().all(|p| p.header.timestamp == 1000 + 90_000));
    // An inter frame: its own OBUs, no N; a keyframe with its own sequence header keeps
    // that one only.
    let inter = obu(6, Some(0x08), 100);
    let rtp = parsed(
        &packetizer
            .push(&av1_frame(false, std::slice::from_ref(&inter)), 1040)
            .unwrap(),
    );
    let (headers, elements) = av1_elements(&rtp);
    assert_eq!((headers, elements), (vec![0], vec![without_size(&inter)]));
    let own = obu(1, None, 10);
    let rtp = parsed(
        &packetizer
            .push(&av1_frame(true, &[own.clone(), frame.clone()]), 1080)
            .unwrap(),
    );
    assert_eq!(
        av1_elements(&rtp).1,
        [without_size(&own), without_size(&frame)]
    );
}

proptest! {
    #[test]
    fn any_av1_temporal_unit_round_trips(
        obus in prop::collection::vec((3u8..7, prop::option::of(any::<u8>()), 0usize..3000), 1..8),
        max_payload in 64usize..1500,
    ) {
        let mut params = params();
        params.max_payload = max_payload;
        let mut packetizer = VideoPacketizer::new(params);
        packetizer.push(&av1_sequence_header(), 0);
        let obus: Vec<Vec<u8>> = obus.iter().map(|&(t, e, len)| obu(t, e, len)).collect();
        let rtp = parsed(&packetizer.push(&av1_frame(false, &obus), 40).unwrap());
        let expected: Vec<Vec<u8>> = obus.iter().map(|o| without_size(o)).collect();
        prop_assert_eq!(av1_elements(&rtp).1, expected);
        prop_assert!(rtp.iter().all(|p| p.payload.len() <= max_payload));
    }

    #[test]
    fn any_h264_frame_round_trips(
        sizes in prop::collection::vec(1usize..4000, 1..8),
        max_payload in 64usize..1500,
        key in any::<bool>(),
    ) {
        let mut packetizer = VideoPacketizer::new(PacketizerParams { max_payload, ..params() });
        packetizer.push(&avc_sequence_header(), 0);
        let nals: Vec<Vec<u8>> = sizes.iter().map(|&n| nal(&[0x41], n)).collect();
        let packets = packetizer.push(&avc_frame(key, 0, &nals), 0).unwrap();
        let rtp = parsed(&packets);
        prop_assert!(rtp.iter().all(|p| p.payload.len() <= max_payload));
        let units = depacketize(NalFormat::H264, &rtp);
        prop_assert_eq!(units.len(), 1);
        let mut expected: Vec<Bytes> = nals.into_iter().map(Bytes::from).collect();
        if key {
            expected.splice(0..0, [Bytes::from_static(SPS), Bytes::from_static(PPS)]);
        }
        prop_assert_eq!(&units[0].nal_units, &expected);
    }

    #[test]
    fn any_hevc_frame_round_trips(sizes in prop::collection::vec(2usize..4000, 1..6)) {
        let mut packetizer = VideoPacketizer::new(params());
        packetizer.push(&hevc_sequence_header(), 0);
        let nals: Vec<Vec<u8>> = sizes.iter().map(|&n| nal(&[0x02, 0x01], n)).collect();
        let packets = packetizer.push(&hevc_frame(false, &nals), 0).unwrap();
        let units = depacketize(NalFormat::Hevc, &parsed(&packets));
        let expected: Vec<Bytes> = nals.into_iter().map(Bytes::from).collect();
        prop_assert_eq!(&units[0].nal_units, &expected);
    }

    #[test]
    fn depacketizers_take_any_packet(
        packets in prop::collection::vec((any::<u16>(), any::<u32>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..64)), 0..16),
    ) {
        let mut h264 = VideoDepacketizer::new(NalFormat::H264);
        let mut hevc = VideoDepacketizer::new(NalFormat::Hevc);
        let mut aac = AacDepacketizer::new(AuHeaderLayout::AAC_HBR, 48_000);
        let mut opus = OpusDepacketizer::default();
        let (mut units, mut frames) = (Vec::new(), Vec::new());
        for (sequence, timestamp, marker, payload) in packets {
            let packet = RtpPacket {
                header: crate::rtp::RtpHeader { marker, payload_type: 96, sequence, timestamp, ssrc: 0 },
                payload: Bytes::from(payload),
            };
            h264.push(&packet, &mut units);
            hevc.push(&packet, &mut units);
            aac.push(&packet, &mut frames);
            opus.push(&packet, &mut frames);
        }
        let mut builder = VideoTagBuilder::new(NalFormat::Hevc, &[]);
        for unit in &units {
            builder.push(unit);
        }
    }
}
