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
    /// Pictures come in another order than they are shown (B-frames): browsers' WebRTC
    /// decoders cannot take such a stream, so WebRTC viewers see little more than its
    /// keyframes. Stays set once seen.
    pub b_frames: bool,
    /// The pictures' order, to notice B-frames by.
    order: PresentationOrder,
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
    /// Count a frame the publisher sent at `timestamp` (ms, the stream's clock).
    pub(super) fn observe(
        &mut self,
        kind: MediaKind,
        sequence_header: bool,
        timestamp: u64,
        payload: &[u8],
    ) {
        self.bytes_in += payload.len() as u64;
        if kind == MediaKind::Video && !sequence_header && !self.b_frames {
            self.notice_reordering(timestamp, payload);
        }
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

    /// A picture shown before the one sent ahead of it means B-frames.
    fn notice_reordering(&mut self, timestamp: u64, payload: &[u8]) {
        let Some(info) = codec::parse_video_tag(payload) else {
            return;
        };
        let presented = timestamp as i64 + i64::from(info.composition_time);
        self.b_frames |= self.order.shown_early(presented);
    }
}

/// Whether pictures are shown in the order they are sent: one shown before a picture sent
/// ahead of it is a B-frame (what browsers' WebRTC decoders cannot take).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresentationOrder {
    last_presented_ms: Option<i64>,
}

impl PresentationOrder {
    /// Take the next picture (in the order sent), shown at `presented_ms`: whether it is
    /// shown before the one sent before it.
    pub fn shown_early(&mut self, presented_ms: i64) -> bool {
        let early = self
            .last_presented_ms
            .is_some_and(|last| presented_ms < last);
        self.last_presented_ms = Some(presented_ms);
        early
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An AVC picture tag sent at `dts` and shown `cts` ms later.
    fn picture(cts: i32) -> Vec<u8> {
        let cts = cts.to_be_bytes();
        vec![0x27, 1, cts[1], cts[2], cts[3], 0, 0, 0, 1, 0x41]
    }

    #[test]
    fn b_frames_are_noticed_by_pictures_shown_out_of_order() {
        let mut stats = PublishStats::default();
        // A constant offset, pictures in order: no B-frames.
        for dts in [0, 40, 80, 120] {
            stats.observe(MediaKind::Video, false, dts, &picture(80));
        }
        assert!(!stats.b_frames);
        // I P B B: the P (sent at 160) is shown at 280, after the Bs sent after it.
        for (dts, cts) in [(160, 120), (200, 40), (240, 0)] {
            stats.observe(MediaKind::Video, false, dts, &picture(cts));
        }
        assert!(stats.b_frames);
    }
}
