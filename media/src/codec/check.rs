//! Whether a publisher's audio or video message can be valid for its codec, decided once
//! at ingest so that nothing a decoder would choke on reaches any viewer. A 2-byte AVC
//! message (`27 01`), for instance, stops ffmpeg's FLV reader ("Invalid data found").
//!
//! Only what is certainly wrong is refused: a header too short for its codec, a frame with
//! no data, a sequence header whose configuration record does not parse. Codecs we do not
//! know pass as they are.

use super::{
    parse_audio_tag, parse_video_tag, AacConfig, AudioCodec, AvcConfig, CodecError, HevcConfig,
    VideoCodec, VideoPacketKind,
};

/// Why a media message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{0} header too short for its codec")]
    Header(&'static str),
    #[error("{0} frame without data")]
    Empty(&'static str),
    #[error("{codec} sequence header: {error}")]
    Config {
        codec: &'static str,
        error: CodecError,
    },
}

/// Check a video message.
pub fn check_video(payload: &[u8]) -> Result<(), Invalid> {
    let info = parse_video_tag(payload).ok_or(Invalid::Header("video"))?;
    let data = payload
        .get(info.data_offset..)
        .ok_or(Invalid::Header("video"))?;
    let codec = match info.codec {
        VideoCodec::Avc => "AVC",
        VideoCodec::Hevc => "HEVC",
        _ => return Ok(()),
    };
    match info.packet {
        VideoPacketKind::SequenceHeader => {
            let parsed = match info.codec {
                VideoCodec::Avc => AvcConfig::parse(data).map(drop),
                _ => HevcConfig::parse(data).map(drop),
            };
            parsed.map_err(|error| Invalid::Config { codec, error })
        }
        VideoPacketKind::Frame if data.is_empty() => Err(Invalid::Empty(codec)),
        _ => Ok(()),
    }
}

/// Check an audio message.
pub fn check_audio(payload: &[u8]) -> Result<(), Invalid> {
    let info = parse_audio_tag(payload).ok_or(Invalid::Header("audio"))?;
    let data = payload
        .get(info.data_offset..)
        .ok_or(Invalid::Header("audio"))?;
    if info.codec != AudioCodec::Aac {
        return Ok(());
    }
    if info.is_sequence_header {
        return AacConfig::parse(data)
            .map(drop)
            .map_err(|error| Invalid::Config {
                codec: "AAC",
                error,
            });
    }
    if data.is_empty() {
        return Err(Invalid::Empty("AAC"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_too_short_for_their_codec_are_refused() {
        assert_eq!(check_video(&[0x27, 0x01]), Err(Invalid::Header("video")));
        assert_eq!(check_video(&[]), Err(Invalid::Header("video")));
        assert_eq!(check_video(&[0x27, 1, 0, 0, 0]), Err(Invalid::Empty("AVC")));
        assert!(check_video(&[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41]).is_ok());
        // A bare end of sequence is what some encoders send.
        assert!(check_video(&[0x17, 0x02]).is_ok());
        assert_eq!(check_audio(&[0xAF]), Err(Invalid::Header("audio")));
        assert_eq!(check_audio(&[0xAF, 0x01]), Err(Invalid::Empty("AAC")));
        assert!(check_audio(&[0xAF, 0x01, 0x21]).is_ok());
        // MP3 and unknown codecs pass as they are.
        assert!(check_audio(&[0x2F]).is_ok());
        assert!(check_video(&[0x12, 0x00]).is_ok());
    }

    #[test]
    fn sequence_headers_must_parse() {
        // An AVC record that announces a 20-byte SPS and carries 4.
        let truncated = [
            0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 20, 0x67, 0x64, 0, 0x1F,
        ];
        assert!(matches!(
            check_video(&truncated),
            Err(Invalid::Config { codec: "AVC", .. })
        ));
        assert!(matches!(
            check_audio(&[0xAF, 0x00]),
            Err(Invalid::Config { codec: "AAC", .. })
        ));
        assert!(check_audio(&[0xAF, 0x00, 0x12, 0x10]).is_ok());
    }
}
