//! One track of an RTSP publisher, from RTP packets to the FLV tag bodies the hub takes:
//! the depacketizer and FLV builder its announced codec needs, put together so that a
//! driver only matches on what comes out.
//!
//! Timestamps are milliseconds since the track's first packet. Publishers start each
//! track's RTP clock at a random point, and only their RTCP sender reports relate the
//! tracks; until those are read, tracks are aligned at their first packets (which
//! publishers send close together, at the start of the stream).

use bytes::Bytes;

use crate::frame::MediaKind;
use crate::rtp::depacketize::{AacDepacketizer, OpusDepacketizer, VideoDepacketizer};
use crate::rtp::flv::{AudioTagBuilder, VideoTagBuilder};
use crate::rtp::{NalFormat, RtpError, RtpPacket};
use crate::sdp::Codec;

/// An FLV tag body for the hub, with its timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagBody {
    pub kind: MediaKind,
    pub timestamp_ms: u64,
    pub body: Bytes,
}

#[derive(Debug)]
enum Receiver {
    Video {
        depacketizer: VideoDepacketizer,
        builder: VideoTagBuilder,
    },
    Aac {
        depacketizer: AacDepacketizer,
        builder: AudioTagBuilder,
    },
    Opus {
        depacketizer: OpusDepacketizer,
        builder: AudioTagBuilder,
    },
}

/// RTP of one announced track into FLV tag bodies.
#[derive(Debug)]
pub struct TrackReceiver {
    receiver: Receiver,
    /// Whether the audio sequence header has gone out (video ones are the builder's).
    audio_header_sent: bool,
}

impl TrackReceiver {
    /// The receiver for a track with this codec (from
    /// [`crate::sdp::MediaDescription::codec`]).
    pub fn new(codec: &Codec) -> TrackReceiver {
        let receiver = match codec {
            Codec::Aac {
                config,
                sample_rate,
                layout,
                ..
            } => Receiver::Aac {
                depacketizer: AacDepacketizer::new(*layout, *sample_rate),
                builder: AudioTagBuilder::Aac {
                    config: config.clone(),
                },
            },
            Codec::Opus { channels } => Receiver::Opus {
                depacketizer: OpusDepacketizer::default(),
                builder: AudioTagBuilder::Opus {
                    channels: *channels,
                },
            },
            Codec::H264 { .. } | Codec::H265 { .. } => {
                let format = match codec {
                    Codec::H264 { .. } => NalFormat::H264,
                    _ => NalFormat::Hevc,
                };
                Receiver::Video {
                    depacketizer: VideoDepacketizer::new(format),
                    builder: VideoTagBuilder::new(format, &codec.parameter_sets()),
                }
            }
        };
        TrackReceiver {
            receiver,
            audio_header_sent: false,
        }
    }

    /// Take in one RTP packet (an interleaved frame's payload, or a datagram); the tag
    /// bodies it completes go to `out`. Returns how many packets were missing before it.
    pub fn push(&mut self, packet: Bytes, out: &mut Vec<TagBody>) -> Result<u16, RtpError> {
        let packet = RtpPacket::parse(packet)?;
        let mut frames = Vec::new();
        let (gap, builder) = match &mut self.receiver {
            Receiver::Video {
                depacketizer,
                builder,
            } => {
                let mut units = Vec::new();
                let gap = depacketizer.push(&packet, &mut units);
                for unit in &units {
                    out.extend(builder.push(unit).into_iter().map(|body| TagBody {
                        kind: MediaKind::Video,
                        timestamp_ms: unit.timestamp_ms,
                        body,
                    }));
                }
                return Ok(gap);
            }
            Receiver::Aac {
                depacketizer,
                builder,
            } => (depacketizer.push(&packet, &mut frames), &*builder),
            Receiver::Opus {
                depacketizer,
                builder,
            } => (depacketizer.push(&packet, &mut frames), &*builder),
        };
        for frame in frames {
            if !self.audio_header_sent {
                self.audio_header_sent = true;
                out.push(TagBody {
                    kind: MediaKind::Audio,
                    timestamp_ms: frame.timestamp_ms,
                    body: builder.sequence_header(),
                });
            }
            out.push(TagBody {
                kind: MediaKind::Audio,
                timestamp_ms: frame.timestamp_ms,
                body: builder.frame(&frame.data),
            });
        }
        Ok(gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::packetize::tests::avc_sequence_header;
    use crate::rtp::{AudioPacketizer, PacketizerParams, VideoPacketizer};
    use crate::sdp;

    /// What a publisher's packets become: the same tags a viewer's packets were made from.
    #[test]
    fn announced_tracks_become_the_tags_they_were_packetized_from() {
        let description = sdp::parse(crate::sdp::tests::FFMPEG_SDP.as_bytes()).unwrap();
        let mut video = TrackReceiver::new(&description.media[0].codec().unwrap());
        let mut audio = TrackReceiver::new(&description.media[1].codec().unwrap());

        let params = PacketizerParams::new(0, 96, 7, 100, 12_345);
        let mut video_packetizer = VideoPacketizer::new(params);
        let mut audio_packetizer = AudioPacketizer::new(params);
        video_packetizer.push(&avc_sequence_header(), 0);
        audio_packetizer.push(&[0xAF, 0, 0x12, 0x10], 0);
        let mut keyframe = vec![0x17, 1, 0, 0, 0, 0, 0, 0x07, 0xD0, 0x65];
        keyframe.extend(std::iter::repeat_n(7, 1999));
        let aac_frame = [0xAF, 1, 0x21, 0x10, 0x04];

        let mut tags = Vec::new();
        for packet in video_packetizer.push(&keyframe, 1000).unwrap().datagrams() {
            video.push(packet, &mut tags).unwrap();
        }
        for ms in [1000, 1023] {
            for packet in audio_packetizer.push(&aac_frame, ms).unwrap().datagrams() {
                audio.push(packet, &mut tags).unwrap();
            }
        }
        let summary: Vec<_> = tags
            .iter()
            .map(|t| (t.kind, t.timestamp_ms, t.body.to_vec()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (MediaKind::Video, 0, avc_sequence_header()),
                (MediaKind::Video, 0, keyframe),
                (MediaKind::Audio, 0, vec![0xAF, 0, 0x12, 0x10]),
                (MediaKind::Audio, 0, aac_frame.to_vec()),
                (MediaKind::Audio, 23, aac_frame.to_vec()),
            ]
        );
        assert_eq!(
            video.push(Bytes::from_static(&[0x40; 12]), &mut tags),
            Err(RtpError::Version(1))
        );
    }
}
