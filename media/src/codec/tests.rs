//! Codec header and configuration record parsing, against hand-built and encoder-made inputs.

use super::aac::*;
use super::av1::*;
use super::avc::*;
use super::hevc::*;
use super::opus::*;
use super::tag::*;
use super::vp9::*;
use super::*;
use bytes::Bytes;
use proptest::prelude::*;

/// High profile 1280x720 SPS as emitted by x264 (contains emulation prevention bytes).
const SPS_720P: [u8; 26] = [
    0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9, 0x40, 0x50, 0x05, 0xBB, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
    0x10, 0x00, 0x00, 0x03, 0x03, 0xC0, 0xF1, 0x83, 0x19, 0x60,
];
const PPS: [u8; 4] = [0x68, 0xEB, 0xEC, 0xB2];

/// Test-side bit writer, used to build SPS/ASC bitstreams field by field from the specs.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    nbits: usize,
}

impl BitWriter {
    /// The low `n` bits of `v`, MSB first; bits above the 64th are 0 (so `bits(88, 0)`
    /// writes 88 zero bits).
    fn bits(&mut self, n: u32, v: u64) -> &mut Self {
        for i in (0..n).rev() {
            if self.nbits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if v.checked_shr(i).unwrap_or(0) & 1 == 1 {
                let last = self.bytes.len() - 1;
                self.bytes[last] |= 0x80 >> (self.nbits % 8);
            }
            self.nbits += 1;
        }
        self
    }
    fn ue(&mut self, v: u64) -> &mut Self {
        let code = v + 1;
        let len = 64 - code.leading_zeros();
        self.bits(len - 1, 0).bits(len, code)
    }
    fn se(&mut self, v: i64) -> &mut Self {
        self.ue(if v > 0 {
            2 * v as u64 - 1
        } else {
            2 * v.unsigned_abs()
        })
    }
    /// rbsp_trailing_bits, then escape into a NAL payload.
    fn finish_nal(&mut self, header: u8) -> Vec<u8> {
        self.bits(1, 1);
        while !self.nbits.is_multiple_of(8) {
            self.bits(1, 0);
        }
        let mut out = vec![header];
        let mut zeros = 0;
        for &b in &self.bytes {
            if zeros >= 2 && b <= 3 {
                out.push(3);
                zeros = 0;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            out.push(b);
        }
        out
    }
}

struct SpsSpec {
    profile: u8,
    poc_type: u8,
    width_mbs: u64,
    height_units: u64,
    frame_mbs_only: bool,
    crop: Option<[u64; 4]>,
    scaling: bool,
}

fn build_sps(s: &SpsSpec) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.bits(8, s.profile.into()).bits(8, 0).bits(8, 40).ue(0);
    if s.profile == 100 {
        w.ue(1).ue(0).ue(0).bits(1, 0);
        w.bits(1, s.scaling.into());
        if s.scaling {
            // List 0: delta -8 makes nextScale 0 ("use default"), ending the list early.
            w.bits(1, 1).se(-8);
            for _ in 1..6 {
                w.bits(1, 0);
            }
            // List 6 (8x8): 64 explicit deltas.
            w.bits(1, 1);
            for i in 0..64 {
                w.se(if i % 2 == 0 { 3 } else { -3 });
            }
            w.bits(1, 0);
        }
    }
    w.ue(0).ue(s.poc_type.into());
    match s.poc_type {
        0 => {
            w.ue(2);
        }
        1 => {
            w.bits(1, 0).se(-1).se(2).ue(2).se(5).se(-5);
        }
        _ => {}
    }
    w.ue(4)
        .bits(1, 0)
        .ue(s.width_mbs - 1)
        .ue(s.height_units - 1)
        .bits(1, s.frame_mbs_only.into());
    if !s.frame_mbs_only {
        w.bits(1, 1);
    }
    w.bits(1, 1);
    match s.crop {
        Some(c) => {
            w.bits(1, 1).ue(c[0]).ue(c[1]).ue(c[2]).ue(c[3]);
        }
        None => {
            w.bits(1, 0);
        }
    }
    w.bits(1, 0); // no VUI
    w.finish_nal(0x67)
}

fn avcc_record() -> Vec<u8> {
    let mut rec = vec![
        0x01,
        0x64,
        0x00,
        0x1F,
        0xFF,
        0xE1,
        0x00,
        SPS_720P.len() as u8,
    ];
    rec.extend_from_slice(&SPS_720P);
    rec.extend_from_slice(&[0x01, 0x00, PPS.len() as u8]);
    rec.extend_from_slice(&PPS);
    rec
}

fn hvcc_record() -> Vec<u8> {
    let mut rec = vec![
        0x01, 0x01, 0x60, 0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x5D, 0xF0, 0x00,
        0xFC, 0xFD, 0xF8, 0xF8, 0x00, 0x00, 0x0F,
    ];
    rec.push(4); // numOfArrays
    for (nal_type, units) in [
        (32u8, vec![vec![0x40, 0x01, 0x0C]]),
        (33, vec![vec![0x42, 0x01], vec![0x42, 0x02, 0x03]]),
        (39, vec![vec![0x4E, 0x01]]),
        (34, vec![vec![0x44, 0x01, 0xC1]]),
    ] {
        rec.push(0x80 | nal_type);
        rec.extend_from_slice(&(units.len() as u16).to_be_bytes());
        for u in units {
            rec.extend_from_slice(&(u.len() as u16).to_be_bytes());
            rec.extend_from_slice(&u);
        }
    }
    rec
}

fn info(
    codec: VideoCodec,
    frame: VideoFrameKind,
    packet: VideoPacketKind,
    cts: i32,
    enhanced: bool,
    off: usize,
) -> VideoTagInfo {
    VideoTagInfo {
        codec,
        frame,
        packet,
        composition_time: cts,
        enhanced,
        data_offset: off,
    }
}

#[test]
fn legacy_avc_sequence_header_and_frames() {
    let mut seq = vec![0x17, 0x00, 0x00, 0x00, 0x00];
    seq.extend_from_slice(&avcc_record());
    assert_eq!(
        parse_video_tag(&seq),
        Some(info(
            VideoCodec::Avc,
            VideoFrameKind::Key,
            VideoPacketKind::SequenceHeader,
            0,
            false,
            5
        ))
    );
    // Inter frame, composition time -70 (0xFFFFBA as SI24).
    let inter = [0x27, 0x01, 0xFF, 0xFF, 0xBA, 0x00, 0x00, 0x00, 0x01, 0x41];
    assert_eq!(
        parse_video_tag(&inter),
        Some(info(
            VideoCodec::Avc,
            VideoFrameKind::Inter,
            VideoPacketKind::Frame,
            -70,
            false,
            5
        ))
    );
    let key = [0x17, 0x01, 0x00, 0x00, 0x42, 0x00];
    assert_eq!(parse_video_tag(&key).map(|i| i.composition_time), Some(66));
    assert_eq!(
        parse_video_tag(&[0x17, 0x02, 0, 0, 0]).map(|i| i.packet),
        Some(VideoPacketKind::EndOfSequence)
    );
    assert_eq!(
        parse_video_tag(&[0x17, 0x02]),
        Some(info(
            VideoCodec::Avc,
            VideoFrameKind::Key,
            VideoPacketKind::EndOfSequence,
            0,
            false,
            2
        ))
    );
    // Legacy HEVC (codec id 12) as used by some CDNs.
    assert_eq!(
        parse_video_tag(&[0x1C, 0x00, 0, 0, 0, 1]),
        Some(info(
            VideoCodec::Hevc,
            VideoFrameKind::Key,
            VideoPacketKind::SequenceHeader,
            0,
            false,
            5
        ))
    );
    // Old codecs and command frames.
    assert_eq!(
        parse_video_tag(&[0x22, 0xAB]),
        Some(info(
            VideoCodec::Other(2),
            VideoFrameKind::Inter,
            VideoPacketKind::Frame,
            0,
            false,
            1
        ))
    );
    assert_eq!(
        parse_video_tag(&[0x57, 0x00]),
        Some(info(
            VideoCodec::Avc,
            VideoFrameKind::Other,
            VideoPacketKind::Other,
            0,
            false,
            1
        ))
    );
    assert_eq!(
        parse_video_tag(&[0x47, 0x01, 0, 0, 0]).map(|i| i.frame),
        Some(VideoFrameKind::Key)
    );
}

#[test]
fn too_short_video_is_none() {
    for p in [
        &[][..],
        &[0x17],
        &[0x17, 0x01, 0x00],
        &[0x17, 0x00, 0, 0],
        &[0x90, b'h', b'v', b'c'],
        &[0x91, b'h', b'v', b'c', b'1', 0, 0],
    ] {
        assert_eq!(parse_video_tag(p), None, "{p:02x?}");
    }
}

#[test]
fn enhanced_video_headers() {
    let mut seq = vec![0x90, b'h', b'v', b'c', b'1'];
    seq.extend_from_slice(&hvcc_record());
    assert_eq!(
        parse_video_tag(&seq),
        Some(info(
            VideoCodec::Hevc,
            VideoFrameKind::Key,
            VideoPacketKind::SequenceHeader,
            0,
            true,
            5
        ))
    );
    // CodedFrames with SI24 composition time for hvc1.
    assert_eq!(
        parse_video_tag(&[0xA1, b'h', b'v', b'c', b'1', 0x00, 0x00, 0x21, 0, 0, 0, 1, 0x02]),
        Some(info(
            VideoCodec::Hevc,
            VideoFrameKind::Inter,
            VideoPacketKind::Frame,
            33,
            true,
            8
        ))
    );
    // CodedFramesX: no composition time field.
    assert_eq!(
        parse_video_tag(&[0xA3, b'h', b'v', b'c', b'1', 0, 0, 0, 1, 0x02]),
        Some(info(
            VideoCodec::Hevc,
            VideoFrameKind::Inter,
            VideoPacketKind::Frame,
            0,
            true,
            5
        ))
    );
    // AV1 key frame: CodedFrames without composition time for non-AVC/HEVC codecs.
    assert_eq!(
        parse_video_tag(&[0x91, b'a', b'v', b'0', b'1', 0x12, 0x00, 0x0A]),
        Some(info(
            VideoCodec::Av1,
            VideoFrameKind::Key,
            VideoPacketKind::Frame,
            0,
            true,
            5
        ))
    );
    assert_eq!(
        parse_video_tag(&[0x92, b'v', b'p', b'0', b'9']).map(|i| (i.codec, i.packet)),
        Some((VideoCodec::Vp9, VideoPacketKind::EndOfSequence))
    );
    assert_eq!(
        parse_video_tag(&[0x91, b'v', b'p', b'0', b'8']).map(|i| i.codec),
        Some(VideoCodec::Other(u32::from_be_bytes(*b"vp08")))
    );
    // Metadata: frame type ignored.
    assert_eq!(
        parse_video_tag(&[0x94, b'a', b'v', b'c', b'1', 0x02]),
        Some(info(
            VideoCodec::Avc,
            VideoFrameKind::Other,
            VideoPacketKind::Metadata,
            0,
            true,
            5
        ))
    );
    // MPEG2TSSequenceStart -> Other.
    assert_eq!(
        parse_video_tag(&[0x95, b'a', b'v', b'0', b'1']).map(|i| i.packet),
        Some(VideoPacketKind::Other)
    );
    // Command frame: UI8 command, no FourCC.
    assert_eq!(
        parse_video_tag(&[0xD1, 0x00]),
        Some(info(
            VideoCodec::Other(0),
            VideoFrameKind::Other,
            VideoPacketKind::Other,
            0,
            true,
            1
        ))
    );
    // Multitrack, OneTrack, shared FourCC.
    assert_eq!(
        parse_video_tag(&[0x96, 0x01, b'a', b'v', b'0', b'1', 0x00, 0x12]),
        Some(info(
            VideoCodec::Av1,
            VideoFrameKind::Key,
            VideoPacketKind::Other,
            0,
            true,
            6
        ))
    );
    // Multitrack, ManyTracksManyCodecs: no shared FourCC.
    assert_eq!(
        parse_video_tag(&[0xA6, 0x21, 0x00]).map(|i| (i.codec, i.data_offset)),
        Some((VideoCodec::Other(0), 2))
    );
    // ModEx (4 bytes of nanosecond offset) wrapping an avc1 CodedFrames packet.
    let modex = [
        0x97, 0x03, 0, 0, 0x01, 0xF4, 0x01, b'a', b'v', b'c', b'1', 0xFF, 0xFF, 0xFE, 0xAA,
    ];
    assert_eq!(
        parse_video_tag(&modex),
        Some(info(
            VideoCodec::Avc,
            VideoFrameKind::Key,
            VideoPacketKind::Frame,
            -2,
            true,
            14
        ))
    );
    // ModEx with the 16-bit size escape (0xFF -> UI16 + 1 = 2 bytes).
    let modex16 = [
        0x97, 0xFF, 0x00, 0x01, 0xAB, 0xCD, 0x03, b'h', b'v', b'c', b'1',
    ];
    assert_eq!(
        parse_video_tag(&modex16).map(|i| (i.packet, i.data_offset)),
        Some((VideoPacketKind::Frame, 11))
    );
}

#[test]
fn audio_headers() {
    assert_eq!(
        parse_audio_tag(&[0xAF, 0x00, 0x12, 0x10]),
        Some(AudioTagInfo {
            codec: AudioCodec::Aac,
            is_sequence_header: true,
            coded: false,
            data_offset: 2
        })
    );
    assert_eq!(
        parse_audio_tag(&[0xAF, 0x01, 0x21]),
        Some(AudioTagInfo {
            codec: AudioCodec::Aac,
            is_sequence_header: false,
            coded: true,
            data_offset: 2
        })
    );
    assert_eq!(
        parse_audio_tag(&[0x2F, 0xFF]).map(|a| (a.codec, a.data_offset)),
        Some((AudioCodec::Mp3, 1))
    );
    assert_eq!(
        parse_audio_tag(&[0xE2]).map(|a| a.codec),
        Some(AudioCodec::Mp3)
    );
    assert_eq!(
        parse_audio_tag(&[0xB2, 0x00]).map(|a| a.codec),
        Some(AudioCodec::Other(11))
    );
    assert_eq!(
        parse_audio_tag(&[0x90, b'O', b'p', b'u', b's', b'O']),
        Some(AudioTagInfo {
            codec: AudioCodec::Opus,
            is_sequence_header: true,
            coded: false,
            data_offset: 5
        })
    );
    assert_eq!(
        parse_audio_tag(&[0x91, b'm', b'p', b'4', b'a', 0x21]),
        Some(AudioTagInfo {
            codec: AudioCodec::Aac,
            is_sequence_header: false,
            coded: true,
            data_offset: 5
        })
    );
    assert_eq!(
        parse_audio_tag(&[0x91, b'.', b'm', b'p', b'3']).map(|a| a.codec),
        Some(AudioCodec::Mp3)
    );
    assert_eq!(
        parse_audio_tag(&[0x95, 0x00, b'O', b'p', b'u', b's', 0x00]),
        Some(AudioTagInfo {
            codec: AudioCodec::Opus,
            is_sequence_header: false,
            coded: false,
            data_offset: 6
        })
    );
    assert_eq!(
        parse_audio_tag(&[0x97, 0x00, 0x05, 0x00, b'm', b'p', b'4', b'a']),
        Some(AudioTagInfo {
            codec: AudioCodec::Aac,
            is_sequence_header: true,
            coded: false,
            data_offset: 8
        })
    );
    for p in [
        &[][..],
        &[0xAF],
        &[0x90, b'O', b'p', b'u'],
        &[0x95, 0x00, b'O'],
        &[0x97, 0x05],
    ] {
        assert_eq!(parse_audio_tag(p), None, "{p:02x?}");
    }
}

#[test]
fn avc_config_record() {
    let cfg = AvcConfig::parse(&avcc_record()).unwrap();
    assert_eq!(
        (
            cfg.profile,
            cfg.compatibility,
            cfg.level,
            cfg.nal_length_size
        ),
        (100, 0, 31, 4)
    );
    assert_eq!(cfg.sps, vec![Bytes::from_static(&SPS_720P)]);
    assert_eq!(cfg.pps, vec![Bytes::from_static(&PPS)]);
    assert_eq!(avc_sps_resolution(&cfg.sps[0]), Ok((1280, 720)));

    let rec = avcc_record();
    for len in 0..rec.len() {
        assert_eq!(
            AvcConfig::parse(&rec[..len]),
            Err(CodecError::Truncated),
            "len {len}"
        );
    }
    let mut bad = rec.clone();
    bad[0] = 0;
    assert_eq!(
        AvcConfig::parse(&bad),
        Err(CodecError::UnsupportedVersion(0))
    );
    let mut short_len = rec;
    short_len[4] = 0xFD; // lengthSizeMinusOne = 1
    assert_eq!(
        AvcConfig::parse(&short_len).map(|c| c.nal_length_size),
        Ok(2)
    );
}

#[test]
fn hevc_config_record() {
    let rec = hvcc_record();
    let cfg = HevcConfig::parse(&rec).unwrap();
    assert_eq!(cfg.nal_length_size, 4);
    assert_eq!(cfg.vps, vec![Bytes::from_static(&[0x40, 0x01, 0x0C])]);
    assert_eq!(
        cfg.sps,
        vec![
            Bytes::from_static(&[0x42, 0x01]),
            Bytes::from_static(&[0x42, 0x02, 0x03])
        ]
    );
    assert_eq!(cfg.pps, vec![Bytes::from_static(&[0x44, 0x01, 0xC1])]);
    for len in 0..rec.len() {
        assert_eq!(
            HevcConfig::parse(&rec[..len]),
            Err(CodecError::Truncated),
            "len {len}"
        );
    }
}

#[test]
fn sps_resolution_1080p_with_crop() {
    let progressive = SpsSpec {
        profile: 100,
        poc_type: 0,
        width_mbs: 120,
        height_units: 68,
        frame_mbs_only: true,
        crop: Some([0, 0, 0, 4]),
        scaling: false,
    };
    assert_eq!(
        avc_sps_resolution(&build_sps(&progressive)),
        Ok((1920, 1080))
    );
    let uncropped = SpsSpec {
        crop: None,
        ..progressive
    };
    assert_eq!(avc_sps_resolution(&build_sps(&uncropped)), Ok((1920, 1088)));
    // Interlaced: map units are field MB rows, crop unit doubles.
    let interlaced = SpsSpec {
        height_units: 34,
        frame_mbs_only: false,
        crop: Some([0, 0, 0, 2]),
        ..progressive
    };
    assert_eq!(
        avc_sps_resolution(&build_sps(&interlaced)),
        Ok((1920, 1080))
    );
    // Scaling lists and pic_order_cnt_type 1 must be skipped correctly.
    let scaled = SpsSpec {
        scaling: true,
        poc_type: 1,
        ..progressive
    };
    assert_eq!(avc_sps_resolution(&build_sps(&scaled)), Ok((1920, 1080)));
    // Baseline (no chroma fields), horizontal crop.
    let baseline = SpsSpec {
        profile: 66,
        poc_type: 2,
        width_mbs: 40,
        height_units: 30,
        frame_mbs_only: true,
        crop: Some([1, 3, 0, 0]),
        scaling: false,
    };
    assert_eq!(avc_sps_resolution(&build_sps(&baseline)), Ok((632, 480)));
    // A well-known x264 1080p High@4.0 SPS.
    let x264_1080 = [
        0x67, 0x64, 0x00, 0x28, 0xAC, 0xD9, 0x40, 0x78, 0x02, 0x27, 0xE5, 0xC0, 0x44, 0x00, 0x00,
        0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xF0, 0x3C, 0x60, 0xC6, 0x58,
    ];
    assert_eq!(avc_sps_resolution(&x264_1080), Ok((1920, 1080)));
}

#[test]
fn sps_errors() {
    assert_eq!(avc_sps_resolution(&[]), Err(CodecError::Truncated));
    assert_eq!(avc_sps_resolution(&PPS), Err(CodecError::NotSps(8)));
    // The fields up to frame cropping end inside byte 10; VUI after them is not read.
    for len in 1..10 {
        assert_eq!(
            avc_sps_resolution(&SPS_720P[..len]),
            Err(CodecError::Truncated),
            "len {len}"
        );
    }
    assert_eq!(avc_sps_resolution(&SPS_720P[..10]), Ok((1280, 720)));
    let over_crop = SpsSpec {
        profile: 66,
        poc_type: 2,
        width_mbs: 2,
        height_units: 2,
        frame_mbs_only: true,
        crop: Some([8, 8, 0, 0]),
        scaling: false,
    };
    assert!(matches!(
        avc_sps_resolution(&build_sps(&over_crop)),
        Err(CodecError::Invalid(_))
    ));
    // Exp-Golomb with more than 31 leading zeros.
    assert!(matches!(
        avc_sps_resolution(&[0x67, 0x42, 0, 0x1E, 0, 0, 0, 0, 0, 0x01]),
        Err(CodecError::Invalid(_))
    ));
}

#[test]
fn aac_config() {
    let lc = AacConfig::parse(&[0x12, 0x10]).unwrap();
    assert_eq!(
        lc,
        AacConfig {
            object_type: 2,
            sampling_index: 4,
            sample_rate: 44100,
            channels: 2
        }
    );
    // profile 1 (LC), index 4, channels 2, frame length 107.
    assert_eq!(
        lc.adts_header(100),
        [0xFF, 0xF1, 0x50, 0x80, 0x0D, 0x7F, 0xFC]
    );
    let mono48 = AacConfig::parse(&[0x11, 0x88]).unwrap();
    assert_eq!(
        mono48,
        AacConfig {
            object_type: 2,
            sampling_index: 3,
            sample_rate: 48000,
            channels: 1
        }
    );
    assert_eq!(
        mono48.adts_header(200),
        [0xFF, 0xF1, 0x4C, 0x40, 0x19, 0xFF, 0xFC]
    );

    // Escaped object type 31 -> 32 + 10 = 42, index 3, 2 channels.
    let mut w = BitWriter::default();
    w.bits(5, 31).bits(6, 10).bits(4, 3).bits(4, 2);
    assert_eq!(
        AacConfig::parse(&w.bytes),
        Ok(AacConfig {
            object_type: 42,
            sampling_index: 3,
            sample_rate: 48000,
            channels: 2
        })
    );
    // Explicit 24-bit frequency.
    let mut w = BitWriter::default();
    w.bits(5, 2).bits(4, 15).bits(24, 44100).bits(4, 1);
    let explicit = AacConfig::parse(&w.bytes).unwrap();
    assert_eq!(
        explicit,
        AacConfig {
            object_type: 2,
            sampling_index: 15,
            sample_rate: 44100,
            channels: 1
        }
    );
    assert_eq!(explicit.adts_header(0)[2], 0x50); // nearest index 4
                                                  // Explicit SBR: AOT 5 at 24 kHz, extension 48 kHz, core AAC-LC.
    let mut w = BitWriter::default();
    w.bits(5, 5).bits(4, 6).bits(4, 2).bits(4, 3).bits(5, 2);
    assert_eq!(
        AacConfig::parse(&w.bytes),
        Ok(AacConfig {
            object_type: 2,
            sampling_index: 6,
            sample_rate: 24000,
            channels: 2
        })
    );

    assert_eq!(AacConfig::parse(&[0x12]), Err(CodecError::Truncated));
    assert_eq!(
        AacConfig::parse(&[0x16, 0x90]),
        Err(CodecError::ReservedSamplingIndex(13))
    );
    assert!(AacConfig::parse(&[0x00, 0x10]).is_err());
    let mut w = BitWriter::default();
    w.bits(5, 2).bits(4, 15).bits(24, 0).bits(4, 1);
    assert!(AacConfig::parse(&w.bytes).is_err());
}

#[test]
fn nalu_iteration() {
    let data = [
        0, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 0, 0, 0, 0, 1, 0x06, 0, 0, 0, 9, 0x01,
    ];
    let units: Vec<&[u8]> = length_prefixed_nalus(&data, 4).collect();
    assert_eq!(units, vec![&[0x65, 0x88][..], &[0x06][..]]);
    let two = [0, 1, 0x09, 0, 2, 0x41, 0x9A, 0];
    assert_eq!(
        length_prefixed_nalus(&two, 2).collect::<Vec<_>>(),
        vec![&[0x09][..], &[0x41, 0x9A][..]]
    );
    assert_eq!(length_prefixed_nalus(&data, 0).count(), 0);
    assert_eq!(length_prefixed_nalus(&data, 5).count(), 0);
    assert_eq!(length_prefixed_nalus(&[], 4).count(), 0);
}

#[test]
fn annexb_units() {
    // What a WebRTC depacketizer gives: 4- and 3-byte start codes, a trailing zero.
    let data = Bytes::from_static(&[
        0xff, 0, 0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 0x88, 0, 0, 3, 1, 0,
    ]);
    let units = annexb_nal_units(&data);
    assert_eq!(
        units,
        vec![
            Bytes::from_static(&[0x67, 0x42]),
            Bytes::from_static(&[0x68, 0xce]),
            Bytes::from_static(&[0x65, 0x88, 0, 0, 3, 1]),
        ]
    );
    assert!(annexb_nal_units(&Bytes::from_static(&[0, 0, 1, 0, 0, 1])).is_empty());
    assert!(annexb_nal_units(&Bytes::new()).is_empty());
}

proptest! {
    #[test]
    fn header_parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Some(v) = parse_video_tag(&data) {
            prop_assert!(v.data_offset <= data.len());
        }
        if let Some(a) = parse_audio_tag(&data) {
            prop_assert!(a.data_offset <= data.len());
        }
        let _ = AvcConfig::parse(&data);
        let _ = HevcConfig::parse(&data);
        let _ = AacConfig::parse(&data);
        let _ = avc_sps_resolution(&data);
        for size in 0..6u8 {
            let total: usize = length_prefixed_nalus(&data, size).map(<[u8]>::len).sum();
            prop_assert!(total <= data.len());
        }
        let units = annexb_nal_units(&Bytes::from(data.clone()));
        prop_assert!(units.iter().all(|u| !u.is_empty() && u.len() <= data.len()));
    }

    #[test]
    fn mutated_records_never_panic(
        which in 0..4usize,
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<proptest::sample::Index>(),
    ) {
        let mut data = match which {
            0 => avcc_record(),
            1 => hvcc_record(),
            2 => SPS_720P.to_vec(),
            _ => build_sps(&SpsSpec { profile: 100, poc_type: 1, width_mbs: 120, height_units: 68, frame_mbs_only: false, crop: Some([1, 1, 1, 1]), scaling: true }),
        };
        for (i, v) in flips {
            let i = i.index(data.len());
            data[i] ^= v;
        }
        data.truncate(cut.index(data.len() + 1));
        let _ = AvcConfig::parse(&data);
        let _ = HevcConfig::parse(&data);
        if let Ok((w, h)) = avc_sps_resolution(&data) {
            prop_assert!(w > 0 && h > 0);
        }
    }

    #[test]
    fn nalus_round_trip(
        size in prop_oneof![Just(1u8), Just(2u8), Just(3u8), Just(4u8)],
        units in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 0..8),
    ) {
        let mut buf = Vec::new();
        for u in &units {
            buf.extend_from_slice(&(u.len() as u32).to_be_bytes()[4 - usize::from(size)..]);
            buf.extend_from_slice(u);
        }
        let got: Vec<Vec<u8>> = length_prefixed_nalus(&buf, size).map(<[u8]>::to_vec).collect();
        prop_assert_eq!(got, units);
    }

    #[test]
    fn adts_fields_round_trip(
        object_type in 1u8..=4,
        sampling_index in 0u8..=12,
        channels in 0u8..=7,
        payload_len in 0usize..8000,
    ) {
        let mut w = BitWriter::default();
        w.bits(5, object_type.into()).bits(4, sampling_index.into()).bits(4, channels.into());
        let cfg = AacConfig::parse(&w.bytes).unwrap();
        prop_assert_eq!(cfg.sample_rate, AAC_SAMPLE_RATES[usize::from(sampling_index)]);
        let h = cfg.adts_header(payload_len);
        prop_assert_eq!(&h[..2], &[0xFF, 0xF1][..]);
        prop_assert_eq!(h[2] >> 6, object_type - 1);
        prop_assert_eq!((h[2] >> 2) & 0x0F, sampling_index);
        prop_assert_eq!(((h[2] & 1) << 2) | (h[3] >> 6), channels);
        let frame_len = (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        prop_assert_eq!(frame_len, payload_len + 7);
    }
}

/// x265's SPS for 320x240 (no conformance window).
const HEVC_SPS_320X240: [u8; 42] = [
    0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03,
    0x00, 0x3C, 0xA0, 0x0A, 0x08, 0x0F, 0x16, 0x59, 0x59, 0x52, 0x93, 0x0B, 0xC0, 0x5A, 0x02, 0x00,
    0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x32, 0x10,
];
/// x265's SPS for 200x150: coded as 200x152 with a conformance window cropping 2 rows.
const HEVC_SPS_200X150: [u8; 42] = [
    0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03,
    0x00, 0x3C, 0xA0, 0x19, 0x20, 0x26, 0x7D, 0x65, 0x95, 0x9A, 0x49, 0x32, 0xBC, 0x05, 0xA0, 0x20,
    0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x03, 0x03, 0x21,
];

/// An HEVC SPS built field by field, with `sub_layers` - 1 sub-layers that all signal
/// profile and level.
fn build_hevc_sps(
    sub_layers: u64,
    chroma: u64,
    width: u64,
    height: u64,
    window: Option<[u64; 4]>,
) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.bits(4, 0).bits(3, sub_layers - 1).bits(1, 1);
    w.bits(2, 0)
        .bits(1, 0)
        .bits(5, 1)
        .bits(32, 0x6000_0000)
        .bits(48, 0)
        .bits(8, 93);
    for _ in 1..sub_layers {
        w.bits(1, 1).bits(1, 1);
    }
    if sub_layers > 1 {
        for _ in sub_layers - 1..8 {
            w.bits(2, 0);
        }
    }
    for _ in 1..sub_layers {
        w.bits(88, 0).bits(8, 90);
    }
    w.ue(0).ue(chroma);
    if chroma == 3 {
        w.bits(1, 0);
    }
    w.ue(width).ue(height);
    match window {
        Some([l, r, t, b]) => {
            w.bits(1, 1).ue(l).ue(r).ue(t).ue(b);
        }
        None => {
            w.bits(1, 0);
        }
    }
    let nal = w.finish_nal(0x42);
    let mut out = nal[..1].to_vec();
    out.push(0x01);
    out.extend_from_slice(&nal[1..]);
    out
}

#[test]
fn hevc_sps_sizes() {
    assert_eq!(hevc_sps_resolution(&HEVC_SPS_320X240), Ok((320, 240)));
    assert_eq!(hevc_sps_resolution(&HEVC_SPS_200X150), Ok((200, 150)));
    // 1920x1080 coded as 1088 rows, 4:2:0: the window is in units of 2 rows.
    let sps = build_hevc_sps(1, 1, 1920, 1088, Some([0, 0, 0, 4]));
    assert_eq!(hevc_sps_resolution(&sps), Ok((1920, 1080)));
    // Sub-layers with their own profile and level fields, 4:2:2 and 4:4:4 cropping units.
    let sps = build_hevc_sps(3, 2, 1280, 720, Some([1, 1, 2, 2]));
    assert_eq!(hevc_sps_resolution(&sps), Ok((1276, 716)));
    let sps = build_hevc_sps(8, 3, 640, 480, Some([1, 0, 0, 1]));
    assert_eq!(hevc_sps_resolution(&sps), Ok((639, 479)));
    // The SPS in the record of `hvcc_record` is one too.
    let cfg = HevcConfig::parse(&hvcc_record()).unwrap();
    for sps in &cfg.sps {
        let _ = hevc_sps_resolution(sps);
    }
}

#[test]
fn hevc_sps_errors() {
    assert_eq!(hevc_sps_resolution(&[]), Err(CodecError::Truncated));
    assert_eq!(
        hevc_sps_resolution(&[0x40, 0x01, 0x0C]),
        Err(CodecError::NotSps(32))
    );
    // The fields up to conformance_window_flag end in byte 22; the rest is not read.
    for len in 0..HEVC_SPS_320X240.len() {
        let size = hevc_sps_resolution(&HEVC_SPS_320X240[..len]);
        if len < 23 {
            assert!(size.is_err(), "{len}");
        } else {
            assert_eq!(size, Ok((320, 240)), "{len}");
        }
    }
    let sps = build_hevc_sps(1, 1, 64, 64, Some([32, 0, 0, 0]));
    assert!(matches!(
        hevc_sps_resolution(&sps),
        Err(CodecError::Invalid(_))
    ));
    let sps = build_hevc_sps(1, 4, 64, 64, None);
    assert_eq!(
        hevc_sps_resolution(&sps),
        Err(CodecError::Invalid("chroma_format_idc"))
    );
}

/// libaom's av1C for a 208x120 stream: main profile, level 0, 8 bits, 4:2:0, with the
/// sequence header OBU.
const AV1C_208X120: [u8; 16] = [
    0x81, 0x00, 0x0C, 0x00, 0x0A, 0x0A, 0x00, 0x00, 0x00, 0x03, 0xB6, 0x7F, 0x73, 0x6B, 0xE4, 0x01,
];

#[test]
fn av1_config_and_sequence_header() {
    let cfg = Av1Config::parse(&AV1C_208X120).unwrap();
    assert_eq!(
        (
            cfg.seq_profile,
            cfg.seq_level_idx_0,
            cfg.high_tier,
            cfg.bit_depth,
            cfg.monochrome
        ),
        (0, 0, false, 8, false)
    );
    assert!(cfg.chroma_subsampling_x && cfg.chroma_subsampling_y);
    let obus = &AV1C_208X120[cfg.config_obus_offset..];
    assert_eq!(av1_sequence_resolution(obus), Ok(Some((208, 120))));
    // A temporal unit: temporal delimiter, then the sequence header without a size field.
    let mut tu = vec![0x12, 0x00];
    tu.push(0x08);
    tu.extend_from_slice(&AV1C_208X120[6..]);
    let types: Vec<u8> = av1_obus(&tu).map(|o| o.unwrap().obu_type).collect();
    assert_eq!(types, [2, 1]);
    assert_eq!(av1_sequence_resolution(&tu), Ok(Some((208, 120))));
    assert_eq!(av1_sequence_resolution(&[0x12, 0x00]), Ok(None));
    assert_eq!(av1_sequence_resolution(&[]), Ok(None));

    // 10-bit high tier, profile 2 with 12 bits.
    let cfg = Av1Config::parse(&[0x81, 0x48, 0xC0, 0x00]).unwrap();
    assert_eq!(
        (
            cfg.seq_profile,
            cfg.seq_level_idx_0,
            cfg.high_tier,
            cfg.bit_depth
        ),
        (2, 8, true, 10)
    );
    let cfg = Av1Config::parse(&[0x81, 0x48, 0x60, 0x00]).unwrap();
    assert_eq!(cfg.bit_depth, 12);
    assert_eq!(Av1Config::parse(&[0x81, 0, 0]), Err(CodecError::Truncated));
    assert_eq!(
        Av1Config::parse(&[0x01, 0, 0, 0]),
        Err(CodecError::UnsupportedVersion(1))
    );
    // An OBU claiming more bytes than there are, a forbidden bit, a truncated header.
    assert!(av1_sequence_resolution(&[0x0A, 0x20, 0x00]).is_err());
    assert!(av1_sequence_resolution(&[0x8A, 0x00]).is_err());
    assert!(av1_sequence_resolution(&AV1C_208X120[4..12]).is_err());
}

#[test]
fn av1_sequence_header_with_timing_and_decoder_model() {
    // Built from AV1 5.5.1: timing info with equal picture interval, a decoder model,
    // initial display delays, two operating points (one above level 7 with a tier bit).
    let mut w = BitWriter::default();
    w.bits(3, 0).bits(1, 0).bits(1, 0); // profile, still_picture, reduced header
    w.bits(1, 1).bits(32, 1).bits(32, 60).bits(1, 1).bits(1, 1); // timing; uvlc() 0 is a lone 1
    w.bits(1, 1).bits(5, 9).bits(32, 1).bits(5, 31).bits(5, 31); // decoder model, delay length 10
    w.bits(1, 1).bits(5, 1); // initial display delay present, 2 operating points
    w.bits(12, 0x101)
        .bits(5, 8)
        .bits(1, 0)
        .bits(1, 1)
        .bits(10, 5)
        .bits(10, 5)
        .bits(1, 0)
        .bits(1, 1)
        .bits(4, 3);
    w.bits(12, 0).bits(5, 4).bits(1, 0).bits(1, 0);
    w.bits(4, 11).bits(4, 10).bits(12, 1919).bits(11, 1079);
    let payload = w.bytes.clone();
    let mut obu = vec![0x0A, payload.len() as u8];
    obu.extend_from_slice(&payload);
    assert_eq!(av1_sequence_resolution(&obu), Ok(Some((1920, 1080))));
}

/// libvpx's first keyframe of a 176x144 stream, up to the frame size.
const VP9_KEYFRAME_176X144: [u8; 10] = [0x82, 0x49, 0x83, 0x42, 0x00, 0x0A, 0xF0, 0x08, 0xF6, 0x06];

#[test]
fn vp9_config_and_frame_size() {
    let record = [0, 10, 0x82, 1, 1, 1, 0, 0];
    let expected = Vp9Config {
        profile: 0,
        level: 10,
        bit_depth: 8,
        chroma_subsampling: 1,
        full_range: false,
        colour_primaries: 1,
        transfer_characteristics: 1,
        matrix_coefficients: 1,
    };
    assert_eq!(Vp9Config::parse(&record), Ok(expected));
    // With the vpcC full box header in front, as ffmpeg writes it.
    let mut boxed = vec![1, 0, 0, 0];
    boxed.extend_from_slice(&record);
    assert_eq!(Vp9Config::parse(&boxed), Ok(expected));
    assert_eq!(Vp9Config::parse(&record[..7]), Err(CodecError::Truncated));
    assert!(Vp9Config::parse(&[4, 10, 0x82, 1, 1, 1, 0, 0]).is_err());
    assert!(Vp9Config::parse(&[0, 10, 0x92, 1, 1, 1, 0, 0]).is_err());

    assert_eq!(
        vp9_frame_resolution(&VP9_KEYFRAME_176X144),
        Ok(Some((176, 144)))
    );
    // An inter frame (frame_type 1) and a shown existing frame give no size.
    assert_eq!(vp9_frame_resolution(&[0x86, 0x00]), Ok(None));
    assert_eq!(vp9_frame_resolution(&[0x88]), Ok(None));
    // Profile 1 keyframe: subsampling bits come before the size.
    let mut w = BitWriter::default();
    w.bits(2, 2)
        .bits(1, 1)
        .bits(1, 0)
        .bits(1, 0)
        .bits(1, 0)
        .bits(1, 1)
        .bits(1, 0);
    w.bits(24, 0x49_83_42)
        .bits(3, 1)
        .bits(1, 0)
        .bits(3, 0)
        .bits(16, 639)
        .bits(16, 359);
    assert_eq!(vp9_frame_resolution(&w.bytes), Ok(Some((640, 360))));
    assert!(vp9_frame_resolution(&[0x02]).is_err());
    assert!(vp9_frame_resolution(&VP9_KEYFRAME_176X144[..7]).is_err());
    assert!(vp9_frame_resolution(&[0x82, 0x49, 0x83, 0x43, 0, 0, 0, 0, 0]).is_err());
}

#[test]
fn opus_head() {
    // libopus's OpusHead: stereo, pre-skip 312, 48 kHz input, no gain, family 0.
    let head = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00";
    let parsed = OpusHead::parse(head).unwrap();
    assert_eq!(
        parsed,
        OpusHead {
            channels: 2,
            pre_skip: 312,
            input_sample_rate: 48000,
            output_gain: 0,
            mapping_family: 0,
            stream_count: 1,
            coupled_count: 1,
            mapping: vec![],
        }
    );
    // Without the magic signature.
    assert_eq!(OpusHead::parse(&head[8..]), Ok(parsed));
    // Family 1, 6 channels (5.1): 4 streams, 2 coupled, a mapping per channel.
    let surround =
        b"OpusHead\x01\x06\x00\x00\x80\xbb\x00\x00\x00\xff\x01\x04\x02\x00\x04\x01\x02\x03\x05";
    let parsed = OpusHead::parse(surround).unwrap();
    assert_eq!(
        (
            parsed.channels,
            parsed.output_gain,
            parsed.stream_count,
            parsed.coupled_count
        ),
        (6, -256, 4, 2)
    );
    assert_eq!(parsed.mapping, [0, 4, 1, 2, 3, 5]);
    assert_eq!(
        OpusHead::parse(&surround[..surround.len() - 1]),
        Err(CodecError::Truncated)
    );
    assert_eq!(
        OpusHead::parse(b"OpusHead\x10\x02"),
        Err(CodecError::UnsupportedVersion(0x10))
    );
    assert!(OpusHead::parse(b"OpusHead\x01\x00\x00\x00\x80\xbb\x00\x00\x00\x00\x00").is_err());
    assert!(OpusHead::parse(b"OpusHead\x01\x03\x00\x00\x80\xbb\x00\x00\x00\x00\x00").is_err());
    assert!(
        OpusHead::parse(b"OpusHead\x01\x02\x00\x00\x80\xbb\x00\x00\x00\x01\x01\x02\x00\x01")
            .is_err()
    );
    assert_eq!(OpusHead::parse(b""), Err(CodecError::Truncated));
}

#[test]
fn audio_packets_say_whether_they_carry_coded_audio() {
    let coded = |p: &[u8]| parse_audio_tag(p).map(|i| i.coded);
    assert_eq!(coded(&[0xAF, 0x01, 0x21]), Some(true));
    assert_eq!(coded(&[0xAF, 0x00, 0x12]), Some(false));
    assert_eq!(coded(&[0xAF, 0x02]), Some(false));
    assert_eq!(coded(&[0x2F, 0xFF]), Some(true));
    assert_eq!(coded(&[0x91, b'O', b'p', b'u', b's', 0xFC]), Some(true));
    // SequenceEnd (2) and MultichannelConfig (4) carry none.
    assert_eq!(coded(&[0x92, b'O', b'p', b'u', b's']), Some(false));
    assert_eq!(coded(&[0x94, b'O', b'p', b'u', b's', 0, 2]), Some(false));
}

proptest! {
    #[test]
    fn new_parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..96)) {
        if let Ok((w, h)) = hevc_sps_resolution(&data) {
            prop_assert!(w > 0 && h > 0);
        }
        let _ = Av1Config::parse(&data);
        if let Ok(Some((w, h))) = av1_sequence_resolution(&data) {
            prop_assert!(w > 0 && h > 0);
        }
        let total: usize = av1_obus(&data).filter_map(Result::ok).map(|o| o.bytes.len()).sum();
        prop_assert!(total <= data.len());
        let _ = Vp9Config::parse(&data);
        let _ = vp9_frame_resolution(&data);
        if let Ok(head) = OpusHead::parse(&data) {
            prop_assert!(head.channels > 0);
        }
    }

    #[test]
    fn mutated_new_records_never_panic(
        which in 0..4usize,
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<proptest::sample::Index>(),
    ) {
        let mut data = match which {
            0 => HEVC_SPS_200X150.to_vec(),
            1 => AV1C_208X120[4..].to_vec(),
            2 => VP9_KEYFRAME_176X144.to_vec(),
            _ => build_hevc_sps(4, 1, 1920, 1088, Some([0, 0, 0, 4])),
        };
        for (i, v) in flips {
            let i = i.index(data.len());
            data[i] ^= v;
        }
        data.truncate(cut.index(data.len() + 1));
        let _ = hevc_sps_resolution(&data);
        let _ = av1_sequence_resolution(&data);
        let _ = vp9_frame_resolution(&data);
    }
}
