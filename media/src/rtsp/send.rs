//! A stream's frames to RTSP players: the tracks its SDP describes and a packetizer per
//! track, numbered the same way, so that `trackID=N` in the description, the interleaved
//! channels 2N and 2N+1 and the packets' payload types always agree.
//!
//! One [`StreamSender`] per stream (not per viewer; see [`crate::rtp`]): created from the
//! sequence headers the hub holds when the first RTSP viewer comes, fed every frame of the
//! stream after them, its packets written to each playing viewer.

use bytes::{Bytes, BytesMut};

use crate::frame::{Frame, MediaKind};
use crate::rtp::{AudioPacketizer, PacketizerParams, RtpPackets, VideoPacketizer};
use crate::sdp::{self, Codec, Track};

/// The payload type of track N is `FIRST_PAYLOAD_TYPE + N` (dynamic types begin at 96).
const FIRST_PAYLOAD_TYPE: u8 = 96;

/// A packetizer of either kind.
#[derive(Debug)]
enum Packetizer {
    Video(VideoPacketizer),
    Audio(AudioPacketizer),
}

/// One stream's tracks and packetizers.
#[derive(Debug)]
pub struct StreamSender {
    tracks: Vec<Track>,
    packetizers: Vec<Packetizer>,
}

impl StreamSender {
    /// Tracks for the sequence headers of a stream (video first, then audio; a header
    /// whose codec RTSP cannot carry gives no track). `random` seeds each track's SSRC,
    /// first sequence number and timestamp offset (RFC 3550 wants them random; the caller
    /// has the randomness).
    pub fn new(video_header: Option<&[u8]>, audio_header: Option<&[u8]>, random: u64) -> Self {
        let mut sender = StreamSender {
            tracks: Vec::new(),
            packetizers: Vec::new(),
        };
        for (kind, header) in [
            (MediaKind::Video, video_header),
            (MediaKind::Audio, audio_header),
        ] {
            let Some(header) = header else { continue };
            let Some(codec) = Codec::from_sequence_header(kind, header) else {
                continue;
            };
            let track = sender.tracks.len() as u8;
            let payload_type = FIRST_PAYLOAD_TYPE + track;
            // Different for each track, all from the caller's randomness.
            let mixed = random.rotate_left(17 * u32::from(track)) ^ u64::from(track);
            let params = PacketizerParams::new(
                track,
                payload_type,
                mixed as u32,
                (mixed >> 32) as u16,
                (mixed >> 24) as u32,
            );
            let mut packetizer = match kind {
                MediaKind::Video => Packetizer::Video(VideoPacketizer::new(params)),
                _ => Packetizer::Audio(AudioPacketizer::new(params)),
            };
            // The packetizer learns the codec parameters from the header as from any frame.
            push(&mut packetizer, header, 0);
            sender.tracks.push(Track {
                codec,
                payload_type,
            });
            sender.packetizers.push(packetizer);
        }
        sender
    }

    /// The tracks, in `trackID` order.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// The answer to DESCRIBE (see [`sdp::describe`]).
    pub fn describe(&self, origin_address: &str) -> String {
        sdp::describe(&self.tracks, origin_address)
    }

    /// Packetize a frame of the stream: the track it belongs to and its packets, or `None`
    /// (metadata, a kind the stream has no track for, sequence headers, which only update
    /// the track).
    pub fn push(&mut self, frame: &Frame) -> Option<(usize, RtpPackets)> {
        let index = self
            .tracks
            .iter()
            .position(|t| t.codec.media_kind() == frame.kind)?;
        if frame.sequence_header {
            // New parameters: later DESCRIBEs give them; in-band sets carry them to players
            // already watching.
            if let Some(codec) = Codec::from_sequence_header(frame.kind, &frame.payload) {
                if let Some(track) = self.tracks.get_mut(index) {
                    track.codec = codec;
                }
            }
        }
        let packetizer = self.packetizers.get_mut(index)?;
        let packets = push(packetizer, &frame.payload, frame.timestamp)?;
        Some((index, packets))
    }

    /// Track `track`'s RTCP sender report at `ntp_time` (see
    /// [`crate::rtp::SenderReport::ntp_from_unix_ms`]), as a datagram; for TCP viewers,
    /// frame it on channel 2N+1 with [`super::write_interleaved`].
    pub fn sender_report(&self, track: usize, ntp_time: u64) -> Option<Bytes> {
        let report = match self.packetizers.get(track)? {
            Packetizer::Video(p) => p.sender_report(ntp_time),
            Packetizer::Audio(p) => p.sender_report(ntp_time),
        };
        let mut out = BytesMut::with_capacity(28);
        report.write(&mut out);
        Some(out.freeze())
    }
}

fn push(packetizer: &mut Packetizer, payload: &[u8], timestamp_ms: u64) -> Option<RtpPackets> {
    match packetizer {
        Packetizer::Video(p) => p.push(payload, timestamp_ms),
        Packetizer::Audio(p) => p.push(payload, timestamp_ms),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::rtp::packetize::tests::avc_sequence_header;
    use crate::rtp::RtpPacket;

    const AAC_HEADER: &[u8] = &[0xAF, 0, 0x12, 0x10];

    #[test]
    fn track_numbers_payload_types_and_channels_agree() {
        let mut sender = StreamSender::new(Some(&avc_sequence_header()), Some(AAC_HEADER), 42);
        let sdp = sender.describe("127.0.0.1");
        assert!(sdp.contains("m=video 0 RTP/AVP 96\r\n"));
        assert!(sdp.contains("a=rtpmap:97 MPEG4-GENERIC/44100/2\r\na=fmtp:97"));
        assert!(sdp.contains("a=control:trackID=1\r\n"));

        let audio = Frame::new(MediaKind::Audio, 1000, Bytes::from_static(&[0xAF, 1, 0x21]));
        let (track, packets) = sender.push(&audio).unwrap();
        assert_eq!(track, 1);
        assert_eq!(packets.interleaved()[1], 2, "channel 2 x track");
        let packet = RtpPacket::parse(packets.datagrams().next().unwrap()).unwrap();
        assert_eq!(packet.header.payload_type, 97);

        let video = Frame::new(
            MediaKind::Video,
            1000,
            Bytes::from_static(&[0x27, 1, 0, 0, 0, 0, 0, 0, 2, 0x41, 0]),
        );
        let (track, packets) = sender.push(&video).unwrap();
        assert_eq!((track, packets.interleaved()[1]), (0, 0));
        let video_ssrc = RtpPacket::parse(packets.datagrams().next().unwrap())
            .unwrap()
            .header
            .ssrc;
        assert_ne!(video_ssrc, packet.header.ssrc, "each track its own source");

        let report = sender.sender_report(1, 7).unwrap();
        assert_eq!(report.len(), 28);
        assert!(sender.sender_report(2, 7).is_none());
        let metadata = Frame::new(MediaKind::Metadata, 0, Bytes::new());
        assert!(sender.push(&metadata).is_none());
    }

    #[test]
    fn audio_only_stream_is_track_zero_and_new_headers_update_the_description() {
        let mut sender = StreamSender::new(None, Some(AAC_HEADER), 1);
        assert_eq!(sender.tracks().len(), 1);
        // AAC-LC 48 kHz mono.
        let header = Frame::new(
            MediaKind::Audio,
            0,
            Bytes::from_static(&[0xAF, 0, 0x11, 0x88]),
        );
        assert!(sender.push(&header).is_none());
        assert!(sender
            .describe("h")
            .contains("a=rtpmap:96 MPEG4-GENERIC/48000/1\r\n"));
    }
}
