//! Codec header / configuration record parsers, all on the same input. Checks the documented
//! `data_offset <= payload.len()` guarantees, that NALU and OBU iteration (length-prefixed
//! and Annex B) stays inside the input, and that picture sizes are never 0.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::codec::avc::annexb_nal_units;
use media::codec::{
    av1_obus, av1_sequence_resolution, avc_sps_resolution, hevc_sps_resolution,
    length_prefixed_nalus, parse_audio_tag, parse_video_tag, vp9_frame_resolution, AacConfig,
    Av1Config, AvcConfig, HevcConfig, OpusHead, Vp9Config,
};

fuzz_target!(|data: &[u8]| {
    if let Some(info) = parse_video_tag(data) {
        assert!(
            info.data_offset <= data.len(),
            "video data_offset out of range: {info:?}"
        );
        let _ = AvcConfig::parse(&data[info.data_offset..]);
    }
    if let Some(info) = parse_audio_tag(data) {
        assert!(
            info.data_offset <= data.len(),
            "audio data_offset out of range: {info:?}"
        );
    }
    if let Ok(avc) = AvcConfig::parse(data) {
        assert!((1..=4).contains(&avc.nal_length_size));
        for sps in &avc.sps {
            let _ = avc_sps_resolution(sps);
        }
    }
    if let Ok(hevc) = HevcConfig::parse(data) {
        assert!((1..=4).contains(&hevc.nal_length_size));
        for sps in &hevc.sps {
            let _ = hevc_sps_resolution(sps);
        }
    }
    if let Ok((w, h)) = hevc_sps_resolution(data) {
        assert!(w > 0 && h > 0);
    }
    if let Ok(av1) = Av1Config::parse(data) {
        assert!(av1.config_obus_offset <= data.len());
        let _ = av1_sequence_resolution(&data[av1.config_obus_offset..]);
    }
    if let Ok(Some((w, h))) = av1_sequence_resolution(data) {
        assert!(w > 0 && h > 0);
    }
    let mut total = 0;
    for obu in av1_obus(data) {
        let Ok(obu) = obu else { break };
        assert!(obu.payload.len() < obu.bytes.len());
        total += obu.bytes.len();
    }
    assert!(total <= data.len());
    let _ = Vp9Config::parse(data);
    if let Ok(Some((w, h))) = vp9_frame_resolution(data) {
        assert!(w > 0 && h > 0);
    }
    if let Ok(head) = OpusHead::parse(data) {
        assert!(head.channels > 0);
        assert!(head.mapping.is_empty() || head.mapping.len() == usize::from(head.channels));
    }
    if let Ok(aac) = AacConfig::parse(data) {
        for len in [0, 1, data.len(), 0x1FF8, usize::MAX] {
            let h = aac.adts_header(len);
            assert_eq!(&h[..2], &[0xFF, 0xF1]);
        }
    }
    if let Ok((w, h)) = avc_sps_resolution(data) {
        assert!(w > 0 && h > 0);
    }
    for n in 0..=5u8 {
        let mut total = 0usize;
        for nalu in length_prefixed_nalus(data, n) {
            assert!(!nalu.is_empty());
            assert!(
                (1..=4).contains(&n),
                "units yielded for invalid length size {n}"
            );
            total += n as usize + nalu.len();
        }
        assert!(total <= data.len());
    }
    // Annex B (a WebRTC publisher's pictures): units are non-empty, apart, inside the input.
    let units = annexb_nal_units(&bytes::Bytes::copy_from_slice(data));
    let total: usize = units.iter().map(|u| u.len() + 3).sum();
    assert!(units.iter().all(|u| !u.is_empty()) && total <= data.len());
});
