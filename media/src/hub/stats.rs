//! What a publisher is sending, for operators: codecs, resolution, volume.

use crate::codec;
use crate::frame::MediaKind;

/// What a publisher is sending, for operators (codecs, resolution, volume).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishStats {
    pub video_codec: Option<&'static str>,
    pub audio_codec: Option<&'static str>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Payload bytes received from the publisher so far: all, video, audio.
    pub bytes_in: u64,
    pub video_bytes_in: u64,
    pub audio_bytes_in: u64,
    /// Messages refused because they cannot be valid for their codec.
    pub invalid_messages: u64,
    /// Players watching now, and other nodes pulling the stream (see [`super::Audience`]).
    pub viewers: usize,
    pub relays: usize,
}

impl PublishStats {
    pub(super) fn observe(&mut self, kind: MediaKind, sequence_header: bool, payload: &[u8]) {
        self.bytes_in += payload.len() as u64;
        match kind {
            MediaKind::Video => self.video_bytes_in += payload.len() as u64,
            MediaKind::Audio => self.audio_bytes_in += payload.len() as u64,
            MediaKind::Metadata => {}
        }
        if !sequence_header {
            return;
        }
        match kind {
            MediaKind::Video => {
                let Some(info) = codec::parse_video_tag(payload) else {
                    return;
                };
                self.video_codec = Some(info.codec.name());
                let record = &payload[info.data_offset..];
                let resolution = codec::AvcConfig::parse(record).ok().and_then(|c| {
                    c.sps
                        .first()
                        .and_then(|sps| codec::avc_sps_resolution(sps).ok())
                });
                self.width = resolution.map(|r| r.0);
                self.height = resolution.map(|r| r.1);
            }
            MediaKind::Audio => {
                let Some(info) = codec::parse_audio_tag(payload) else {
                    return;
                };
                self.audio_codec = Some(info.codec.name());
            }
            MediaKind::Metadata => {}
        }
    }
}
