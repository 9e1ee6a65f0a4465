//! One stream's media made ready for WebRTC once, for all of its sessions: H.264, HEVC or
//! AV1 pictures as RTP payloads (by the packetizer RTSP uses; which of them a session
//! sends is the codec its browser offered), audio as Opus packets (the stream's own Opus,
//! or its AAC transcoded, [`audio::AacToOpus`]).
//!
//! Every payload is an `Arc<[u8]>`, which is what str0m's RTP-mode writer takes: a
//! session writes it with its own payload type, SSRC, sequence number and timestamp, and
//! no session copies or allocates anything per packet (SRTP encrypts into a buffer of its
//! own anyway).
//!
//! [`Packetizing`] is the sans-IO part (frames in, [`Unit`]s out) and [`GopCache`] the
//! pictures a new session starts with; [`Feed`] is the task that runs them over the hub's
//! frames while the stream has WebRTC sessions (packetizing and transcoding outside the
//! lock the sessions take), and [`Feeds`] finds a stream's feed or starts it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use audio::{AacToOpus, OpusPacket};
use media::codec::{parse_audio_tag, parse_video_tag, AudioCodec, VideoCodec, VideoPacketKind};
use media::frame::{Frame, MediaKind};
use media::hub::{Audience, Delivery, Hub, PresentationOrder};
use media::rtp::{PacketizerParams, VideoPacketizer};
use tokio::sync::{broadcast, Notify};
use tracing::{info, warn};

use crate::metrics::{GaugeGuard, Metrics};

/// Units a session may fall behind its stream's feed before it skips to the next keyframe
/// (at 25 fps with 50 audio packets a second, about seven seconds).
const FEED_BACKLOG: usize = 512;
/// The largest GOP kept for new sessions and keyframe requests; a longer one is dropped
/// (sessions then wait for the next keyframe), so memory stays bounded.
pub(super) const GOP_MAX_PICTURES: usize = 1024;
const GOP_MAX_BYTES: usize = 16 * 1024 * 1024;

/// One RTP payload, shared by every session.
#[derive(Debug, Clone)]
pub(super) struct Payload {
    pub bytes: Arc<[u8]>,
    /// The last packet of its picture (RTP's marker bit).
    pub marker: bool,
}

/// One picture in RTP payloads, shown at `pts_ms` on the stream's clock. A keyframe's
/// first payloads hold its parameter sets (H.264's SPS and PPS in a STAP-A, HEVC's VPS,
/// SPS and PPS in an AP, AV1's sequence header), so it decodes on its own.
#[derive(Debug)]
pub(super) struct Picture {
    pub codec: VideoCodec,
    pub payloads: Vec<Payload>,
    pub pts_ms: i64,
    pub key: bool,
}

/// What a feed sends its sessions.
#[derive(Debug, Clone)]
pub(super) enum Unit {
    Picture(Arc<Picture>),
    /// One Opus packet (20 ms) at `ms` on the stream's clock.
    Opus {
        payload: Arc<[u8]>,
        ms: u64,
    },
}

/// Where the stream's audio comes from.
enum AudioSource {
    /// Nothing WebRTC carries (yet: no sequence header; or MP3, or AAC that did not
    /// configure).
    None,
    Opus,
    Aac(Box<AacToOpus>),
}

/// A stream's frames into [`Unit`]s, in stream order: plain data in, plain data out.
pub(super) struct Packetizing {
    video: VideoPacketizer,
    /// The codec of the video's last sequence header. The packetizer makes pictures of
    /// H.264, HEVC and AV1 (not VP9, whose payload format it does not make).
    codec: Option<VideoCodec>,
    /// Pictures are dropped until a keyframe: at the start, and after frames were lost.
    waiting_for_key: bool,
    audio: AudioSource,
    opus_out: Vec<OpusPacket>,
    /// Whether a picture was shown before one sent ahead of it: B-frames, which browsers'
    /// WebRTC decoders cannot take (they show little but keyframes).
    order: PresentationOrder,
    pub b_frames: bool,
}

impl Packetizing {
    pub fn new() -> Packetizing {
        // The numbering is the sessions' own: only the payloads after the header are used.
        let params = PacketizerParams::new(0, 96, 0, 0, 0);
        Packetizing {
            video: VideoPacketizer::new(params),
            codec: None,
            waiting_for_key: true,
            audio: AudioSource::None,
            opus_out: Vec::new(),
            order: PresentationOrder::default(),
            b_frames: false,
        }
    }

    /// Whether the stream's AAC is being transcoded.
    pub fn transcodes(&self) -> bool {
        matches!(self.audio, AudioSource::Aac(_))
    }

    /// Frames were lost before they reached the feed: pictures wait for a keyframe.
    pub fn skipped(&mut self) {
        self.waiting_for_key = true;
    }

    /// The units `frame` makes, appended to `out`. A bad AudioSpecificConfig is an
    /// error (once: the audio is not sent until a new sequence header).
    pub fn push(&mut self, frame: &Frame, out: &mut Vec<Unit>) -> Result<(), String> {
        match frame.kind {
            MediaKind::Video => self.video(frame, out),
            // A WHIP publisher's Opus as it sent it, not the AAC made from it.
            MediaKind::Audio => {
                let mut result = Ok(());
                frame.as_published(|frame| {
                    if let Err(e) = self.audio(frame, out) {
                        result = Err(e);
                    }
                });
                return result;
            }
            MediaKind::Metadata => {}
        }
        Ok(())
    }

    fn video(&mut self, frame: &Frame, out: &mut Vec<Unit>) {
        let Some(info) = parse_video_tag(&frame.payload) else {
            return;
        };
        if info.packet == VideoPacketKind::SequenceHeader {
            self.codec = Some(info.codec);
            // The packetizer takes the parameter sets in.
            let _ = self.video.push(&frame.payload, frame.timestamp);
            return;
        }
        if self.codec != Some(info.codec) || (self.waiting_for_key && !frame.key) {
            return;
        }
        let Some(packets) = self.video.push(&frame.payload, frame.timestamp) else {
            return;
        };
        self.waiting_for_key = false;
        let payloads = packets
            .datagrams()
            .filter_map(|packet| {
                // The packetizer writes the fixed 12-byte header: no CSRCs, no extension.
                let marker = packet.get(1)? & 0x80 != 0;
                Some(Payload {
                    bytes: Arc::from(packet.get(12..)?),
                    marker,
                })
            })
            .collect();
        let pts_ms = frame.timestamp as i64 + i64::from(info.composition_time);
        self.b_frames |= self.order.shown_early(pts_ms);
        let picture = Arc::new(Picture {
            codec: info.codec,
            payloads,
            pts_ms,
            key: frame.key,
        });
        out.push(Unit::Picture(picture));
    }

    fn audio(&mut self, frame: &Frame, out: &mut Vec<Unit>) -> Result<(), String> {
        let Some(info) = parse_audio_tag(&frame.payload) else {
            return Ok(());
        };
        let data = frame.payload.get(info.data_offset..).unwrap_or_default();
        if info.is_sequence_header {
            self.audio = match info.codec {
                AudioCodec::Opus => AudioSource::Opus,
                AudioCodec::Aac => match AacToOpus::new(data) {
                    Ok(transcoder) => AudioSource::Aac(Box::new(transcoder)),
                    Err(e) => {
                        self.audio = AudioSource::None;
                        return Err(e.to_string());
                    }
                },
                _ => AudioSource::None,
            };
            return Ok(());
        }
        if !info.coded {
            return Ok(());
        }
        match (&mut self.audio, info.codec) {
            // Opus with or without its sequence header (RTSP publishers send none).
            (AudioSource::Opus | AudioSource::None, AudioCodec::Opus) => {
                self.audio = AudioSource::Opus;
                out.push(Unit::Opus {
                    payload: Arc::from(data),
                    ms: frame.timestamp,
                });
            }
            (AudioSource::Aac(transcoder), AudioCodec::Aac) => {
                // A packet libopus refuses is lost; the next ones are not.
                let _ = transcoder.push(data, frame.timestamp, &mut self.opus_out);
                out.extend(self.opus_out.drain(..).map(|packet| Unit::Opus {
                    payload: Arc::from(packet.data),
                    ms: packet.timestamp_ms,
                }));
            }
            _ => {}
        }
        Ok(())
    }
}

/// The pictures since the last keyframe, starting with it: what a session starts with.
#[derive(Debug, Default)]
pub(super) struct GopCache {
    pictures: Vec<Arc<Picture>>,
    bytes: usize,
}

impl GopCache {
    pub fn pictures(&self) -> &[Arc<Picture>] {
        &self.pictures
    }

    pub fn clear(&mut self) {
        self.pictures.clear();
        self.bytes = 0;
    }

    /// Keep `picture` if it is a keyframe (a new GOP) or follows one.
    pub fn keep(&mut self, picture: &Arc<Picture>) {
        if picture.key {
            self.clear();
        } else if self.pictures.is_empty() {
            return;
        }
        let bytes: usize = picture.payloads.iter().map(|p| p.bytes.len()).sum();
        if self.pictures.len() >= GOP_MAX_PICTURES || self.bytes + bytes > GOP_MAX_BYTES {
            self.clear();
            return;
        }
        self.bytes += bytes;
        self.pictures.push(picture.clone());
    }
}

/// What sessions and the feed's task share: the GOP so far and the live units after it,
/// under one lock so that a session joining sees every picture once.
struct Shared {
    state: Mutex<FeedState>,
}

struct FeedState {
    gop: GopCache,
    /// `None` once the feed ended: its sessions see the channel close.
    units: Option<broadcast::Sender<Unit>>,
}

/// A stream's feed, held by its sessions; the last to go stops the task.
pub(super) struct Feed {
    shared: Arc<Shared>,
    stop: Arc<Notify>,
    stream_id: u64,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

/// What a session starts with: the GOP so far, then the live units.
pub(super) struct Joined {
    pub gop: Vec<Arc<Picture>>,
    pub units: broadcast::Receiver<Unit>,
}

impl Feed {
    /// Start sending to a session: the GOP so far and everything after it.
    pub fn join(&self) -> Joined {
        let state = lock(&self.shared.state);
        let units = match &state.units {
            Some(units) => units.subscribe(),
            // The stream is over: a channel already closed.
            None => broadcast::channel(1).1,
        };
        Joined {
            gop: state.gop.pictures().to_vec(),
            units,
        }
    }
}

fn lock(state: &Mutex<FeedState>) -> MutexGuard<'_, FeedState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The feeds of the node's streams, by stream name.
#[derive(Default)]
pub(super) struct Feeds {
    by_stream: Mutex<HashMap<String, Weak<Feed>>>,
}

impl Feeds {
    /// The feed of `stream` (the instance numbered `stream_id`), started if it has none.
    /// `None` when the stream is gone.
    pub fn get_or_start(
        &self,
        stream: &str,
        stream_id: u64,
        hub: &Arc<Hub>,
        metrics: &Arc<Metrics>,
    ) -> Option<Arc<Feed>> {
        let mut feeds = self.by_stream.lock().unwrap_or_else(|e| e.into_inner());
        feeds.retain(|_, feed| feed.strong_count() > 0);
        if let Some(feed) = feeds.get(stream).and_then(Weak::upgrade) {
            if feed.stream_id == stream_id {
                return Some(feed);
            }
        }
        // Internal: the sessions are the stream's viewers, each counted on its own.
        let mut frames = hub.subscribe(stream, Audience::Internal)?;
        let (units, _) = broadcast::channel(FEED_BACKLOG);
        let shared = Arc::new(Shared {
            state: Mutex::new(FeedState {
                gop: GopCache::default(),
                units: Some(units),
            }),
        });
        let stop = Arc::new(Notify::new());
        let feed = Arc::new(Feed {
            shared: shared.clone(),
            stop: stop.clone(),
            stream_id,
        });
        feeds.insert(stream.to_owned(), Arc::downgrade(&feed));
        let name = stream.to_owned();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _running = GaugeGuard::new(metrics.clone(), |m| &m.webrtc_feeds);
            let mut transcoding: Option<GaugeGuard> = None;
            let mut packetizing = Packetizing::new();
            let mut made = Vec::new();
            info!(stream = %name, "webrtc feed start");
            loop {
                let delivery = tokio::select! {
                    _ = stop.notified() => break,
                    delivery = frames.next() => delivery,
                };
                let frame = match delivery {
                    Delivery::Frame(frame) => frame,
                    Delivery::Skipped(_) => {
                        packetizing.skipped();
                        lock(&shared.state).gop.clear();
                        continue;
                    }
                    Delivery::End => break,
                };
                let had_b_frames = packetizing.b_frames;
                if let Err(e) = packetizing.push(&frame, &mut made) {
                    warn!(stream = %name, error = %e, "webrtc feed: audio not sent");
                }
                if packetizing.b_frames && !had_b_frames {
                    warn!(stream = %name, "the stream has B-frames, which browsers' WebRTC decoders cannot take: its WebRTC viewers see little but keyframes (publish with x264 bframes=0, ffmpeg -bf 0)");
                }
                let transcodes = packetizing.transcodes();
                if transcodes != transcoding.is_some() {
                    transcoding = transcodes
                        .then(|| GaugeGuard::new(metrics.clone(), |m| &m.webrtc_audio_transcoders));
                }
                let mut state = lock(&shared.state);
                for unit in made.drain(..) {
                    if let Unit::Picture(picture) = &unit {
                        state.gop.keep(picture);
                    }
                    if let Some(units) = &state.units {
                        // No session listening is no error: they may all be connecting.
                        let _ = units.send(unit);
                    }
                }
            }
            // The sessions still attached see the channel close: the stream is over.
            lock(&shared.state).units = None;
            info!(stream = %name, "webrtc feed end");
        });
        Some(feed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use media::codec::AvcConfig;

    const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x1f, 0xac];
    const PPS: &[u8] = &[0x68, 0xee, 0x3c, 0x80];

    fn sequence_header() -> Frame {
        let config = AvcConfig::from_parameter_sets(vec![SPS.into()], vec![PPS.into()]).unwrap();
        let mut payload = vec![0x17, 0, 0, 0, 0];
        payload.extend_from_slice(&config.record());
        Frame::new(MediaKind::Video, 0, payload.into())
    }

    /// A picture with one NAL unit of `size` bytes and a composition offset of 40 ms.
    fn picture(timestamp: u64, key: bool, size: usize) -> Frame {
        let mut payload = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 40];
        payload.extend_from_slice(&(size as u32).to_be_bytes());
        payload.push(if key { 0x65 } else { 0x41 });
        payload.resize(payload.len() + size - 1, 0xab);
        Frame::new(MediaKind::Video, timestamp, payload.into())
    }

    fn pictures(units: &[Unit]) -> Vec<Arc<Picture>> {
        units
            .iter()
            .filter_map(|u| match u {
                Unit::Picture(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// Pictures shown out of the order they come in (the composition offsets of I P B)
    /// are B-frames; in order (a constant offset) they are not.
    #[test]
    fn b_frames_are_noticed() {
        let mut feed = Packetizing::new();
        let mut out = Vec::new();
        feed.push(&sequence_header(), &mut out).unwrap();
        for timestamp in [0, 40, 80] {
            feed.push(&picture(timestamp, timestamp == 0, 10), &mut out)
                .unwrap();
        }
        assert!(!feed.b_frames);
        // Sent at 100 and shown then (composition offset 0): before the last (80 + 40).
        let mut shown_early = picture(100, false, 10).payload.to_vec();
        shown_early[4] = 0;
        feed.push(
            &Frame::new(MediaKind::Video, 100, shown_early.into()),
            &mut out,
        )
        .unwrap();
        assert!(feed.b_frames);
    }

    #[test]
    fn pictures_start_at_a_keyframe_and_make_the_gop() {
        let mut feed = Packetizing::new();
        let mut out = Vec::new();
        // Not configured yet, then an inter picture: nothing.
        feed.push(&picture(0, true, 10), &mut out).unwrap();
        feed.push(&sequence_header(), &mut out).unwrap();
        feed.push(&picture(40, false, 10), &mut out).unwrap();
        assert!(out.is_empty());
        feed.push(&picture(80, true, 3000), &mut out).unwrap();
        feed.push(&picture(120, false, 10), &mut out).unwrap();
        let sent = pictures(&out);
        assert_eq!(sent.len(), 2);
        let mut gop = GopCache::default();
        sent.iter().for_each(|p| gop.keep(p));
        let key = &sent[0];
        assert!(key.key);
        assert_eq!(key.pts_ms, 120);
        // A STAP-A with SPS and PPS first, then the 3000-byte picture in FU-A fragments,
        // the last one marked.
        assert_eq!(key.payloads[0].bytes[0] & 0x1f, 24);
        assert!(key.payloads.len() >= 4);
        assert!(key.payloads[1..].iter().all(|p| p.bytes[0] & 0x1f == 28));
        let markers: Vec<bool> = key.payloads.iter().map(|p| p.marker).collect();
        assert_eq!(markers.iter().filter(|m| **m).count(), 1);
        assert_eq!(markers.last(), Some(&true));
        assert_eq!(gop.pictures().len(), 2);
        // A loss: inter pictures wait for the next keyframe, which starts a new GOP.
        feed.skipped();
        out.clear();
        feed.push(&picture(160, false, 10), &mut out).unwrap();
        assert!(out.is_empty());
        feed.push(&picture(200, true, 10), &mut out).unwrap();
        pictures(&out).iter().for_each(|p| gop.keep(p));
        assert_eq!(gop.pictures().len(), 1);
        assert!(gop.pictures()[0].key);
    }

    #[test]
    fn a_gop_too_long_is_dropped_until_the_next_keyframe() {
        let picture = |key| {
            Arc::new(Picture {
                codec: VideoCodec::Avc,
                payloads: Vec::new(),
                pts_ms: 0,
                key,
            })
        };
        let mut gop = GopCache::default();
        gop.keep(&picture(false));
        assert!(gop.pictures().is_empty());
        gop.keep(&picture(true));
        for _ in 1..GOP_MAX_PICTURES {
            gop.keep(&picture(false));
        }
        assert_eq!(gop.pictures().len(), GOP_MAX_PICTURES);
        gop.keep(&picture(false));
        gop.keep(&picture(false));
        assert!(gop.pictures().is_empty());
        gop.keep(&picture(true));
        assert_eq!(gop.pictures().len(), 1);
    }

    #[test]
    fn sessions_of_one_stream_share_each_payload() {
        let (units, _) = broadcast::channel(16);
        let shared = Arc::new(Shared {
            state: Mutex::new(FeedState {
                gop: GopCache::default(),
                units: Some(units.clone()),
            }),
        });
        let feed = Feed {
            shared: shared.clone(),
            stop: Arc::new(Notify::new()),
            stream_id: 1,
        };
        let mut packetizing = Packetizing::new();
        let mut made = Vec::new();
        packetizing.push(&sequence_header(), &mut made).unwrap();
        packetizing
            .push(&picture(0, true, 2000), &mut made)
            .unwrap();
        lock(&shared.state).gop.keep(&pictures(&made)[0]);
        let (mut first, mut second) = (feed.join(), feed.join());
        made.clear();
        packetizing
            .push(&picture(40, false, 2000), &mut made)
            .unwrap();
        for unit in made.drain(..) {
            units.send(unit).unwrap();
        }
        // Both start with the same keyframe and get the same live picture: one copy of
        // each payload for every session.
        assert!(Arc::ptr_eq(&first.gop[0], &second.gop[0]));
        let (Ok(Unit::Picture(a)), Ok(Unit::Picture(b))) =
            (first.units.try_recv(), second.units.try_recv())
        else {
            panic!("a picture for each");
        };
        assert!(Arc::ptr_eq(&a.payloads[0].bytes, &b.payloads[0].bytes));
    }

    #[test]
    fn opus_passes_through() {
        let mut feed = Packetizing::new();
        let mut out = Vec::new();
        let mut opus = vec![0x91];
        opus.extend_from_slice(b"Opus");
        opus.extend_from_slice(&[0xfc, 0xff, 0xfe]);
        feed.push(&Frame::new(MediaKind::Audio, 960, opus.into()), &mut out)
            .unwrap();
        let [Unit::Opus { payload, ms: 960 }] = out.as_slice() else {
            panic!("one Opus packet: {out:?}");
        };
        assert_eq!(&payload[..], &[0xfc, 0xff, 0xfe]);
    }

    /// A WHIP publisher's stream: its AAC (made at ingest) carries the Opus it was made
    /// from, which the feed sends as it is, without a transcoder.
    #[test]
    fn a_whip_publishers_opus_goes_out_as_it_came() {
        use media::frame::PublishedOpus;
        let mut feed = Packetizing::new();
        let mut out = Vec::new();
        let opus_head = [
            &[0x90][..],
            b"OpusOpusHead",
            &[1, 1, 0, 0, 0x80, 0xbb, 0, 0, 0, 0, 0],
        ]
        .concat();
        let mut header = Frame::new(
            MediaKind::Audio,
            0,
            Bytes::from_static(&[0xaf, 0, 0x11, 0x88]),
        );
        header.published_opus = Some(Arc::new(PublishedOpus::Header(opus_head.into())));
        feed.push(&header, &mut out).unwrap();
        let packet = |n: u8| Bytes::from([&[0x91][..], b"Opus", &[0xf8, n]].concat());
        let mut aac = Frame::new(
            MediaKind::Audio,
            100,
            Bytes::from_static(&[0xaf, 1, 0x21, 0]),
        );
        aac.published_opus = Some(Arc::new(PublishedOpus::Packets(vec![
            (-10, packet(1)),
            (10, packet(2)),
        ])));
        feed.push(&aac, &mut out).unwrap();
        assert!(!feed.transcodes());
        let sent: Vec<(Vec<u8>, u64)> = out
            .iter()
            .map(|unit| match unit {
                Unit::Opus { payload, ms } => (payload.to_vec(), *ms),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sent, [(vec![0xf8, 1], 90), (vec![0xf8, 2], 110)]);
    }

    /// An Enhanced RTMP video tag: `fourcc`, packet type 0 (sequence start) or 1 (coded
    /// frames, with a zero composition time for HEVC), then `body`.
    fn ex_video(fourcc: &[u8; 4], key: bool, packet_type: u8, body: &[u8]) -> Frame {
        let mut payload = vec![0x80 | if key { 0x10 } else { 0x20 } | packet_type];
        payload.extend_from_slice(fourcc);
        if packet_type == 1 && fourcc == b"hvc1" {
            payload.extend_from_slice(&[0, 0, 0]);
        }
        payload.extend_from_slice(body);
        Frame::new(MediaKind::Video, 0, payload.into())
    }

    /// HEVC and AV1 pictures are made for the sessions whose browsers take them, each
    /// marked with its codec; VP9 (no payload format here) is not sent.
    #[test]
    fn hevc_and_av1_pictures_are_made_and_vp9_is_not() {
        let mut feed = Packetizing::new();
        let mut out = Vec::new();
        let hevc_config = media::codec::HevcConfig {
            nal_length_size: 4,
            vps: vec![Bytes::from_static(&[0x40, 0x01, 0x0c])],
            // Main profile, level 3.1.
            sps: vec![Bytes::from_static(&[
                0x42, 0x01, 0x01, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 0x5d, 0xa0, 0x02, 0x80,
            ])],
            pps: vec![Bytes::from_static(&[0x44, 0x01, 0xc1])],
        };
        let idr = [0, 0, 0, 4, 0x26, 0x01, 0xaf, 0x00];
        feed.push(
            &ex_video(b"hvc1", true, 0, &hevc_config.record().unwrap()),
            &mut out,
        )
        .unwrap();
        feed.push(&ex_video(b"hvc1", true, 1, &idr), &mut out)
            .unwrap();
        // av1C with a sequence header OBU, then a temporal unit of one frame OBU.
        let av1c = [0x81, 0, 0x0c, 0, 0x0a, 0x01, 0x00];
        feed.push(&ex_video(b"av01", true, 0, &av1c), &mut out)
            .unwrap();
        feed.push(
            &ex_video(b"av01", true, 1, &[0x32, 0x02, 0xaa, 0xbb]),
            &mut out,
        )
        .unwrap();
        let vpcc = [1, 0, 0, 0, 0, 0x1f, 0x80, 2, 2, 2, 0, 0];
        feed.push(&ex_video(b"vp09", true, 0, &vpcc), &mut out)
            .unwrap();
        feed.push(&ex_video(b"vp09", true, 1, &[0x82, 0x49]), &mut out)
            .unwrap();
        let sent = pictures(&out);
        let codecs: Vec<VideoCodec> = sent.iter().map(|p| p.codec).collect();
        assert_eq!(codecs, [VideoCodec::Hevc, VideoCodec::Av1]);
        // HEVC: an AP (type 48) with the parameter sets, then the IDR; AV1: one packet
        // starting a coded video sequence (N), the av1C's sequence header then the frame.
        assert_eq!(sent[0].payloads[0].bytes[0] >> 1, 48);
        assert_eq!(&sent[0].payloads[1].bytes[..], &idr[4..]);
        assert_eq!(
            &sent[1].payloads[0].bytes[..],
            &[0x08, 2, 0x08, 0x00, 3, 0x30, 0xaa, 0xbb]
        );
    }
}
