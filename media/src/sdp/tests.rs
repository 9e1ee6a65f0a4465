use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::rtp::packetize::tests::{
    avc_sequence_header, hevc_sequence_header, HEVC_PPS, HEVC_SPS, HEVC_VPS, PPS, SPS,
};

/// What ffmpeg 6 (`-f rtsp`) announces for H.264 and AAC, spaces after `;` included.
pub(crate) const FFMPEG_SDP: &str = "v=0\r\n\
o=- 0 0 IN IP4 127.0.0.1\r\n\
s=No Name\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
a=tool:libavformat 60.16.100\r\n\
m=video 0 RTP/AVP 96\r\n\
a=rtpmap:96 H264/90000\r\n\
a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z2QAH6zZQFA=,aOvjyw==; profile-level-id=64001F\r\n\
a=control:streamid=0\r\n\
m=audio 0 RTP/AVP 97\r\n\
b=AS:128\r\n\
a=rtpmap:97 MPEG4-GENERIC/44100/2\r\n\
a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=1210\r\n\
a=control:streamid=1\r\n";

/// What GStreamer's rtspclientsink announces (H.264 from x264enc, Opus), LF line ends.
const GSTREAMER_SDP: &str = "v=0
o=- 1188340656180883 1 IN IP4 127.0.0.1
s=Session streamed with GStreamer
i=rtsp-server
t=0 0
a=tool:GStreamer
a=type:broadcast
a=range:npt=now-
a=control:rtsp://127.0.0.1:8554/live/room
m=video 0 RTP/AVP 96
c=IN IP4 127.0.0.1
a=rtpmap:96 H264/90000
a=framerate:30
a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z2QAH6zZQFA,aOvjyw;profile-level-id=64001f;level-asymmetry-allowed=1
a=control:stream=0
m=audio 0 RTP/AVP 97
c=IN IP4 127.0.0.1
a=rtpmap:97 OPUS/48000/2
a=fmtp:97 sprop-stereo=0
a=control:stream=1
";

fn h264() -> Codec {
    Codec::H264 {
        sps: vec![Bytes::from_static(SPS)],
        pps: vec![Bytes::from_static(PPS)],
    }
}

#[test]
fn describes_h264_and_aac_from_sequence_headers() {
    let video = Codec::from_sequence_header(MediaKind::Video, &avc_sequence_header()).unwrap();
    let audio = Codec::from_sequence_header(MediaKind::Audio, &[0xAF, 0, 0x12, 0x10]).unwrap();
    assert_eq!(video, h264());
    let sdp = describe(
        &[
            Track {
                codec: video,
                payload_type: 96,
            },
            Track {
                codec: audio.clone(),
                payload_type: 97,
            },
        ],
        "192.0.2.1",
    );
    assert_eq!(
        sdp,
        "v=0\r\no=- 0 0 IN IP4 192.0.2.1\r\ns=ferrolive\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
a=control:*\r\na=range:npt=now-\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
a=fmtp:96 packetization-mode=1;profile-level-id=64001F;sprop-parameter-sets=Z2QAH6zZQFA=,aOvjyw==\r\n\
a=control:trackID=0\r\n\
m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\n\
a=fmtp:97 streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1210\r\n\
a=control:trackID=1\r\n"
    );
    let parsed = parse(sdp.as_bytes()).unwrap();
    assert_eq!(parsed.media[0].codec(), Ok(h264()));
    assert_eq!(parsed.media[1].codec(), Ok(audio));
    assert_eq!(parsed.media[1].control.as_deref(), Some("trackID=1"));
}

#[test]
fn hevc_and_opus_describe_and_parse_back() {
    let hevc = Codec::from_sequence_header(MediaKind::Video, &hevc_sequence_header()).unwrap();
    assert_eq!(
        hevc.parameter_sets(),
        [HEVC_VPS, HEVC_SPS, HEVC_PPS].map(Bytes::from_static)
    );
    let opus_head = [
        &[0x90][..],
        b"Opus",
        b"OpusHead",
        &[1, 2, 0, 0, 0x80, 0xBB, 0, 0, 0, 0, 0],
    ]
    .concat();
    let opus = Codec::from_sequence_header(MediaKind::Audio, &opus_head).unwrap();
    assert_eq!(opus, Codec::Opus { channels: 2 });
    let tracks = [
        Track {
            codec: hevc.clone(),
            payload_type: 96,
        },
        Track {
            codec: opus.clone(),
            payload_type: 97,
        },
    ];
    let sdp = describe(&tracks, "::1");
    assert!(sdp.contains("a=rtpmap:96 H265/90000\r\n"));
    assert!(sdp.contains("a=rtpmap:97 opus/48000/2\r\na=fmtp:97 sprop-stereo=1\r\n"));
    assert!(sdp.contains("IN IP6 ::1"));
    let parsed = parse(sdp.as_bytes()).unwrap();
    assert_eq!(parsed.media[0].codec(), Ok(hevc));
    assert_eq!(parsed.media[1].codec(), Ok(opus));
    assert_eq!(parsed.media[1].clock_rate, 48_000);
}

#[test]
fn reads_what_ffmpeg_announces() {
    let parsed = parse(FFMPEG_SDP.as_bytes()).unwrap();
    assert_eq!(parsed.media.len(), 2);
    let video = &parsed.media[0];
    assert_eq!(
        (video.media.as_str(), video.payload_type, video.clock_rate),
        ("video", 96, 90_000)
    );
    assert_eq!(video.control.as_deref(), Some("streamid=0"));
    assert_eq!(video.codec(), Ok(h264()));
    let audio = &parsed.media[1];
    assert_eq!(audio.channels, Some(2));
    let codec = audio.codec().unwrap();
    assert_eq!(
        codec,
        Codec::Aac {
            config: Bytes::from_static(&[0x12, 0x10]),
            sample_rate: 44_100,
            channels: 2,
            layout: AuHeaderLayout::AAC_HBR,
        }
    );
    assert_eq!(codec.clock_rate(), 44_100);
}

#[test]
fn reads_what_gstreamer_announces() {
    let parsed = parse(GSTREAMER_SDP.as_bytes()).unwrap();
    assert_eq!(parsed.media[0].codec(), Ok(h264()), "unpadded base64");
    assert_eq!(parsed.media[0].control.as_deref(), Some("stream=0"));
    assert_eq!(parsed.media[1].codec(), Ok(Codec::Opus { channels: 1 }));
}

#[test]
fn unsupported_and_malformed_tracks_are_errors() {
    let media = |encoding: &str, fmtp: &[(&str, &str)]| MediaDescription {
        encoding: encoding.into(),
        fmtp: fmtp
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..MediaDescription::default()
    };
    assert_eq!(
        media("MP4A-LATM", &[]).codec(),
        Err(SdpError::Unsupported("MP4A-LATM".into()))
    );
    assert_eq!(
        media("MPEG4-GENERIC", &[("mode", "AAC-hbr")]).codec(),
        Err(SdpError::Parameter("config"))
    );
    assert_eq!(
        media(
            "MPEG4-GENERIC",
            &[
                ("mode", "AAC-hbr"),
                ("config", "12G0"),
                ("sizelength", "13")
            ]
        )
        .codec(),
        Err(SdpError::Parameter("config"))
    );
    assert!(matches!(
        media("mpeg4-generic", &[("mode", "CELP-cbr")]).codec(),
        Err(SdpError::Unsupported(_))
    ));
    assert_eq!(
        media("H264", &[("sprop-parameter-sets", "!!")]).codec(),
        Err(SdpError::Parameter("sprop-parameter-sets"))
    );
    assert_eq!(
        parse(b"m=video 0 RTP/AVP\r\n"),
        Err(SdpError::Malformed("m="))
    );
    assert_eq!(parse(&[0xFF]), Err(SdpError::NotText));
    assert_eq!(
        parse("m=video 0 RTP/AVP 96\n".repeat(9).as_bytes()),
        Err(SdpError::TooManyMedia)
    );
}

proptest! {
    #[test]
    fn parse_never_panics(text in ".{0,400}") {
        if let Ok(description) = parse(text.as_bytes()) {
            for media in &description.media {
                let _ = media.codec();
            }
        }
    }

    #[test]
    fn parse_never_panics_on_sdp_like_lines(lines in prop::collection::vec(
        prop_oneof![
            Just("m=audio 0 RTP/AVP 97".to_string()),
            "a=(rtpmap|fmtp|control):9[67] [A-Za-z0-9=;/,+ -]{0,40}",
            "a=fmtp:97 (mode|config|sizelength|indexlength|sprop-parameter-sets|sprop-sps)=[A-Za-z0-9=+/]{0,12}",
        ], 0..12)) {
        if let Ok(description) = parse(lines.join("\r\n").as_bytes()) {
            for media in &description.media {
                let _ = media.codec();
            }
        }
    }
}
