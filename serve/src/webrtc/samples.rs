//! A stream's frames as what a WebRTC media writer takes: H.264 pictures as Annex B access
//! units (parameter sets in front of keyframes, so a viewer that joins at one can decode),
//! Opus packets as they are. Plain data in, plain data out: no session, no socket.
//!
//! The FLV to Annex B conversion is the one MPEG-TS uses ([`TsCodecs`]): the same rules
//! (an AUD first, the sequence header's SPS and PPS before a keyframe that lacks them).

use bytes::Bytes;
use media::codec::{parse_audio_tag, AudioCodec};
use media::frame::{Frame, MediaKind};
use media::ts::{TsCodecs, TsVideo};

/// What one frame becomes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sample {
    /// An H.264 access unit in Annex B, shown at `pts_ms` on the stream's clock.
    Video {
        annexb: Vec<u8>,
        pts_ms: i64,
        key: bool,
    },
    /// One Opus packet at `ms`.
    Opus { packet: Bytes, ms: u64 },
}

/// Turns a session's frames into samples, in stream order.
#[derive(Debug, Default)]
pub(super) struct Samples {
    codecs: TsCodecs,
    /// Pictures are dropped until a keyframe: at the start (a replay begins with one, a
    /// stream whose first picture the viewer missed does not) and after a skip.
    waiting_for_key: bool,
}

impl Samples {
    pub fn new() -> Samples {
        Samples {
            codecs: TsCodecs::default(),
            waiting_for_key: true,
        }
    }

    /// The viewer lost frames: nothing decodes until the next keyframe.
    pub fn skip_to_key(&mut self) {
        self.waiting_for_key = true;
    }

    /// The sample `frame` makes, if any: sequence headers configure, metadata and what
    /// WebRTC does not carry here (HEVC, AAC, MP3) make none.
    pub fn push(&mut self, frame: &Frame) -> Option<Sample> {
        match frame.kind {
            MediaKind::Video if frame.sequence_header => {
                match TsCodecs::parse_video_header(&frame.payload) {
                    Ok((TsVideo::H264, config)) => self.codecs.set_video(config),
                    // Another codec from now on: no picture of it is sent.
                    _ => self.codecs = TsCodecs::default(),
                }
                None
            }
            MediaKind::Video => {
                if self.codecs.video() != Some(TsVideo::H264) {
                    return None;
                }
                if self.waiting_for_key && !frame.key {
                    return None;
                }
                let mut annexb = Vec::new();
                let composition =
                    self.codecs
                        .video_frame(&frame.payload, frame.key, &mut annexb)?;
                self.waiting_for_key = false;
                let pts_ms = frame.timestamp as i64 + i64::from(composition);
                Some(Sample::Video {
                    annexb,
                    pts_ms,
                    key: frame.key,
                })
            }
            MediaKind::Audio => {
                let info = parse_audio_tag(&frame.payload)?;
                (info.codec == AudioCodec::Opus && info.coded).then(|| Sample::Opus {
                    packet: frame.payload.slice(info.data_offset..),
                    ms: frame.timestamp,
                })
            }
            MediaKind::Metadata => None,
        }
    }
}

/// `ms` milliseconds on a 90 kHz clock (a negative presentation time, a first frame's
/// composition offset, is shown at 0).
pub(super) fn ticks_90khz(ms: i64) -> u64 {
    (ms.max(0) as u64).saturating_mul(90)
}

/// `ms` milliseconds on Opus's 48 kHz clock.
pub(super) fn ticks_48khz(ms: u64) -> u64 {
    ms.saturating_mul(48)
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::codec::AvcConfig;

    const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x1f, 0xac];
    const PPS: &[u8] = &[0x68, 0xee, 0x3c, 0x80];

    fn sequence_header() -> Frame {
        let config = AvcConfig::from_parameter_sets(vec![SPS.into()], vec![PPS.into()]).unwrap();
        let mut payload = vec![0x17, 0, 0, 0, 0];
        payload.extend_from_slice(&config.record());
        Frame::new(MediaKind::Video, 0, payload.into())
    }

    /// A picture with one NAL unit (4-byte lengths) and a composition offset of 40 ms.
    fn picture(timestamp: u64, key: bool, nal: &[u8]) -> Frame {
        let mut payload = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 40];
        payload.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        payload.extend_from_slice(nal);
        Frame::new(MediaKind::Video, timestamp, payload.into())
    }

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [0, 0, 0, 1].iter().chain(n.iter()).copied())
            .collect()
    }

    #[test]
    fn pictures_start_at_a_keyframe_with_its_parameter_sets() {
        let mut samples = Samples::new();
        // No configuration yet: nothing to send.
        assert_eq!(samples.push(&picture(0, true, &[0x65, 1])), None);
        assert_eq!(samples.push(&sequence_header()), None);
        // A joiner that missed the keyframe waits for the next one.
        assert_eq!(samples.push(&picture(40, false, &[0x41, 2])), None);
        let Some(Sample::Video {
            annexb: key,
            pts_ms,
            key: true,
        }) = samples.push(&picture(80, true, &[0x65, 3]))
        else {
            panic!("a keyframe");
        };
        assert_eq!(pts_ms, 120);
        assert_eq!(key, annexb(&[&[0x09, 0xF0], SPS, PPS, &[0x65, 3]]));
        let Some(Sample::Video { annexb: inter, .. }) =
            samples.push(&picture(120, false, &[0x41, 4]))
        else {
            panic!("an inter picture");
        };
        assert_eq!(inter, annexb(&[&[0x09, 0xF0], &[0x41, 4]]));
        // After a skip, inter pictures wait for the next keyframe again.
        samples.skip_to_key();
        assert_eq!(samples.push(&picture(160, false, &[0x41, 5])), None);
        assert!(samples.push(&picture(200, true, &[0x65, 6])).is_some());
    }

    #[test]
    fn opus_passes_and_aac_does_not() {
        let mut samples = Samples::new();
        // Enhanced RTMP audio: SoundFormat 9, packet type 1 (coded frames), FourCC Opus.
        let mut opus = vec![0x91];
        opus.extend_from_slice(b"Opus");
        opus.extend_from_slice(&[0xfc, 0xff, 0xfe]);
        let frame = Frame::new(MediaKind::Audio, 960, opus.into());
        assert_eq!(
            samples.push(&frame),
            Some(Sample::Opus {
                packet: Bytes::from_static(&[0xfc, 0xff, 0xfe]),
                ms: 960
            })
        );
        let aac = Frame::new(MediaKind::Audio, 0, vec![0xaf, 1, 0x21, 0x10].into());
        assert_eq!(samples.push(&aac), None);
    }

    #[test]
    fn clocks() {
        assert_eq!(ticks_90khz(1000), 90_000);
        assert_eq!(ticks_90khz(-40), 0);
        assert_eq!(ticks_48khz(20), 960);
    }
}
