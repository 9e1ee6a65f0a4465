//! The stream hub: one publisher and any number of viewers per stream.
//!
//! A stream keeps its metadata, sequence headers and the current GOP so that a new viewer
//! starts with a keyframe. Frames leave through a bounded ring (`tokio::sync::broadcast`):
//! the publisher never waits. Players are attached with [`Hub::join`] and served by their
//! stream's fan-out (in `node`), which reads the ring once for all of them; other
//! consumers (the HLS packager) take frames themselves with a [`Subscriber`], which is
//! told how much it missed when it falls more than the ring behind and skips to the next
//! keyframe.
//!
//! Each frame is serialized at most once per output format ([`Frame::flv_http_chunk`],
//! [`Frame::rtmp_chunks`]) and those bytes are shared by every viewer.
//!
//! Frames go into the ring in batches, not one by one: audio (and metadata) joins the next
//! video frame, so each viewer gets one write per video frame instead of one per
//! message. On loopback and LANs the cost of fan-out is almost all per write (one TCP
//! segment each), so this halves the server's CPU at the price of holding audio back by at
//! most one video frame interval. (The fan-out can merge batches further, viewer by
//! viewer.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::amf::{self, Amf0Value};
use crate::codec::{self, VideoFrameKind, VideoPacketKind};
use crate::flv;
use crate::rtmp::chunk;
use crate::rtmp::session::{
    msg_type, MediaKind, CSID_AUDIO, CSID_DATA, CSID_VIDEO, MEDIA_STREAM_ID, OUT_CHUNK_SIZE,
};
use crate::segment::{SegmentMark, Segmenter};
use crate::timestamp::TrackClock;

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Batches (a video frame and the audio before it) a viewer may fall behind before it
    /// must skip to the next keyframe. The ring keeps this many batches alive, so it is
    /// also the stream's fixed memory cost.
    pub backlog: usize,
    /// Who decides where HLS segments begin.
    pub segments: Segmenting,
    /// A publisher that sent nothing for this long may be replaced by a new one.
    pub publisher_stale_after: Duration,
    /// Largest GOP kept for new viewers; a longer GOP is dropped (new viewers then wait for
    /// the next keyframe) so a stream without keyframes cannot grow memory.
    pub gop_max_bytes: usize,
    pub gop_max_frames: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            backlog: 256,
            segments: Segmenting::Own {
                target: Duration::from_secs(2),
            },
            publisher_stale_after: Duration::from_secs(2),
            gop_max_bytes: 32 * 1024 * 1024,
            gop_max_frames: 4096,
        }
    }
}

/// Where the [`SegmentMark`]s on a stream's frames come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segmenting {
    /// This hub decides (an origin): a segment lasts at least `target`.
    Own { target: Duration },
    /// The stream's source decides (an edge): marks arrive through
    /// [`Publisher::mark_next_segment`].
    Upstream,
}

/// One audio, video or metadata message with its 64-bit, per-track monotonic timestamp.
#[derive(Debug)]
pub struct Frame {
    pub kind: MediaKind,
    /// Milliseconds on the stream's clock (continues across publisher reconnects).
    pub timestamp: u64,
    /// A point where a viewer may start decoding: a video keyframe (audio-only streams:
    /// every audio frame).
    pub key: bool,
    pub sequence_header: bool,
    /// Counts publisher sessions of this stream; changes when a publisher takes over.
    pub generation: u32,
    /// Set when an HLS segment begins with this frame.
    pub segment: Option<SegmentMark>,
    pub payload: Bytes,
    flv_chunk: OnceLock<Bytes>,
    rtmp: OnceLock<Bytes>,
}

impl Frame {
    pub fn new(kind: MediaKind, timestamp: u64, payload: Bytes) -> Frame {
        let (key, sequence_header) = classify(kind, &payload);
        Frame {
            kind,
            timestamp,
            key,
            sequence_header,
            generation: 0,
            segment: None,
            payload,
            flv_chunk: OnceLock::new(),
            rtmp: OnceLock::new(),
        }
    }

    fn flv_type(&self) -> u8 {
        match self.kind {
            MediaKind::Audio => flv::TAG_AUDIO,
            MediaKind::Video => flv::TAG_VIDEO,
            MediaKind::Metadata => flv::TAG_SCRIPT,
        }
    }

    /// The frame as one FLV tag (header, payload, previous-tag-size) wrapped in one HTTP
    /// chunk, built once. Each frame being a whole chunk lets a viewer that falls behind
    /// drop queued frames without breaking the chunked framing.
    pub fn flv_http_chunk(&self) -> &Bytes {
        self.flv_chunk.get_or_init(|| {
            let tag = flv::encode_tag(self.flv_type(), self.timestamp as u32, &self.payload);
            flv::http_chunk(&tag)
        })
    }

    /// The frame as RTMP chunks on [`MEDIA_STREAM_ID`] at [`OUT_CHUNK_SIZE`], built once.
    pub fn rtmp_chunks(&self) -> &Bytes {
        self.rtmp
            .get_or_init(|| self.rtmp_chunks_for(MEDIA_STREAM_ID))
    }

    /// RTMP chunks for another message stream id (a client that created several streams).
    pub fn rtmp_chunks_for(&self, stream_id: u32) -> Bytes {
        let (csid, type_id) = match self.kind {
            MediaKind::Audio => (CSID_AUDIO, msg_type::AUDIO),
            MediaKind::Video => (CSID_VIDEO, msg_type::VIDEO),
            MediaKind::Metadata => (CSID_DATA, msg_type::DATA_AMF0),
        };
        chunk::encode_standalone(
            csid,
            self.timestamp as u32,
            type_id,
            stream_id,
            &self.payload,
            OUT_CHUNK_SIZE,
        )
    }
}

fn classify(kind: MediaKind, payload: &[u8]) -> (bool, bool) {
    match kind {
        MediaKind::Video => match codec::parse_video_tag(payload) {
            Some(info) => {
                let seq = info.packet == VideoPacketKind::SequenceHeader;
                let key = !seq
                    && info.frame == VideoFrameKind::Key
                    && info.packet == VideoPacketKind::Frame;
                (key, seq)
            }
            None => (false, false),
        },
        MediaKind::Audio => {
            let seq = codec::parse_audio_tag(payload).is_some_and(|i| i.is_sequence_header);
            (false, seq)
        }
        MediaKind::Metadata => (false, false),
    }
}

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
    pub viewers: usize,
}

impl PublishStats {
    fn observe(&mut self, kind: MediaKind, sequence_header: bool, payload: &[u8]) {
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
                self.video_codec = Some(match info.codec {
                    codec::VideoCodec::Avc => "h264",
                    codec::VideoCodec::Hevc => "h265",
                    codec::VideoCodec::Av1 => "av1",
                    codec::VideoCodec::Vp9 => "vp9",
                    codec::VideoCodec::Other(_) => "other",
                });
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
                self.audio_codec = Some(match info.codec {
                    codec::AudioCodec::Aac => "aac",
                    codec::AudioCodec::Mp3 => "mp3",
                    codec::AudioCodec::Opus => "opus",
                    codec::AudioCodec::Other(_) => "other",
                });
            }
            MediaKind::Metadata => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("stream is already being published")]
    AlreadyPublishing,
}

/// The publisher lost its place to a newer publisher of the same stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("publisher was replaced by a newer session")]
pub struct Replaced;

#[derive(Default)]
pub struct Hub {
    config: HubConfig,
    streams: Mutex<HashMap<String, Arc<Stream>>>,
    generations: AtomicU32,
    /// Numbers streams: one that ends and is published again gets a new number.
    streams_created: AtomicU64,
}

/// What the hub knows of a live stream, for stats and metrics.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub name: String,
    pub viewers: usize,
    pub has_publisher: bool,
    pub has_audio: bool,
    pub has_video: bool,
    pub generation: u32,
}

impl Hub {
    pub fn new(config: HubConfig) -> Arc<Hub> {
        Arc::new(Hub {
            config,
            streams: Mutex::default(),
            generations: AtomicU32::new(0),
            streams_created: AtomicU64::new(0),
        })
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<String, Arc<Stream>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start publishing `name`. A stream whose publisher vanished (or went stale) is taken
    /// over: its viewers stay and receive the new publisher's frames.
    pub fn publish(&self, name: &str, now: Instant) -> Result<Publisher, PublishError> {
        // The map stays locked until the stream is claimed, so that it cannot end (and
        // leave the map) in between.
        let mut streams = self.streams();
        let stream = match streams.get(name) {
            Some(stream) if !stream.lock().ended => stream.clone(),
            _ => {
                let id = self.streams_created.fetch_add(1, Ordering::Relaxed) + 1;
                let stream = Arc::new(Stream::new(id, name, &self.config));
                streams.insert(name.to_owned(), stream.clone());
                stream
            }
        };
        let session = {
            let mut state = stream.lock();
            if let Some(current) = &state.publisher {
                let idle = now.saturating_duration_since(current.last_activity);
                if idle < self.config.publisher_stale_after {
                    return Err(PublishError::AlreadyPublishing);
                }
            }
            // Numbered hub-wide: a stream that ends and comes back never repeats a number, so
            // a late end_if_orphaned for an old publisher cannot end the new one.
            let session = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
            state.generation = session;
            state.publisher = Some(PublisherSlot {
                session,
                last_activity: now,
            });
            state.begin_generation();
            session
        };
        drop(streams);
        Ok(Publisher {
            stream,
            session,
            finished: false,
        })
    }

    /// Attach a viewer to a live stream (one with a publisher, or waiting for its publisher
    /// to come back) that takes its frames itself. `None` when nothing is published under
    /// `name`.
    pub fn subscribe(&self, name: &str) -> Option<Subscriber> {
        let join = self.join(name)?;
        let (has_audio, has_video) = join.watching.tracks();
        Some(Subscriber {
            watching: join.watching,
            receiver: join.batches.receiver,
            batch: Arc::default(),
            batch_pos: 0,
            initial: join.replay.into(),
            waiting_for_key: join.waiting_for_key,
            has_audio,
            has_video,
            skipped: 0,
        })
    }

    /// Attach a viewer whose frames a fan-out delivers (see [`Join`]). `None` when nothing
    /// is published under `name`.
    pub fn join(&self, name: &str) -> Option<Join> {
        let stream = self.streams().get(name)?.clone();
        let mut state = stream.lock();
        if state.ended {
            return None;
        }
        // The batch being gathered reaches the new viewer with everyone else's, so the
        // replay leaves out what of it the GOP cache has (its tail). Sending the batch early
        // instead would split it: with viewers joining faster than audio frames come, every
        // audio frame would cost each viewer a write of its own. A batch holding anything
        // else (a header or metadata, which the replay has too, or frames from before the
        // first keyframe) does go out now, so that the new viewer gets it once.
        let mut gathered = (state.pending.iter().rev())
            .zip(state.gop.iter().rev())
            .take_while(|(pending, cached)| Arc::ptr_eq(pending, cached))
            .count();
        if gathered < state.pending.len() {
            state.flush();
            gathered = 0;
        }
        let mut replay = Vec::new();
        replay.extend(state.metadata.clone());
        replay.extend(state.video_header.clone());
        replay.extend(state.audio_header.clone());
        replay.extend(state.gop[..state.gop.len() - gathered].iter().cloned());
        // Without a cached keyframe the viewer waits for the next one before any video.
        let waiting_for_key = state.has_video && state.gop.is_empty();
        let batches = BatchStream {
            receiver: state.sender.subscribe(),
            seq: state.batches_sent,
        };
        drop(state);
        Some(Join {
            replay,
            waiting_for_key,
            batches,
            backlog: self.config.backlog.max(16),
            watching: Watching::new(&stream),
        })
    }

    pub fn is_live(&self, name: &str) -> bool {
        self.streams().get(name).is_some_and(|s| !s.lock().ended)
    }

    pub fn list(&self) -> Vec<StreamInfo> {
        let streams: Vec<Arc<Stream>> = self.streams().values().cloned().collect();
        streams
            .iter()
            .map(|s| {
                let state = s.lock();
                StreamInfo {
                    name: s.name.clone(),
                    viewers: s.watchers.load(Ordering::Relaxed),
                    has_publisher: state.publisher.is_some(),
                    has_audio: state.has_audio,
                    has_video: state.has_video,
                    generation: state.generation,
                }
            })
            .collect()
    }

    /// End a stream whose publisher vanished without a clean unpublish and did not come back
    /// within the caller's grace period. Does nothing if a publisher took over since.
    pub fn end_if_orphaned(&self, name: &str, generation: u32) {
        let mut streams = self.streams();
        let Some(stream) = streams.get(name).cloned() else {
            return;
        };
        let mut state = stream.lock();
        if state.publisher.is_none() && state.generation == generation {
            state.end();
            drop(state);
            streams.remove(name);
        }
    }

    fn remove_if_ended(&self, stream: &Arc<Stream>) {
        let mut streams = self.streams();
        if let Some(current) = streams.get(&stream.name) {
            if Arc::ptr_eq(current, stream) && stream.lock().ended {
                streams.remove(&stream.name);
            }
        }
    }
}

struct Stream {
    /// Unique in the hub, growing: a stream with a larger id is newer.
    id: u64,
    name: String,
    state: Mutex<StreamState>,
    /// Viewers and other consumers ([`Subscriber`]s, [`Join`]s) attached right now.
    watchers: AtomicUsize,
}

impl Stream {
    fn new(id: u64, name: &str, config: &HubConfig) -> Stream {
        let (sender, _) = broadcast::channel(config.backlog.max(16));
        Stream {
            id,
            name: name.to_owned(),
            watchers: AtomicUsize::new(0),
            state: Mutex::new(StreamState {
                sender,
                batches_sent: 0,
                pending: Vec::new(),
                segmenter: match config.segments {
                    Segmenting::Own { target } => {
                        Some(Segmenter::new(target.as_millis() as u64, unix_seconds()))
                    }
                    Segmenting::Upstream => None,
                },
                upstream_mark: None,
                publisher: None,
                generation: 0,
                ended: false,
                metadata: None,
                video_header: None,
                audio_header: None,
                gop: Vec::new(),
                gop_bytes: 0,
                gop_max_bytes: config.gop_max_bytes,
                gop_max_frames: config.gop_max_frames,
                has_audio: false,
                has_video: false,
                declared: DeclaredTracks::default(),
                audio_clock: TrackClock::default(),
                video_clock: TrackClock::default(),
                stats: PublishStats::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct PublisherSlot {
    session: u32,
    last_activity: Instant,
}

/// Frames that go out together: a video frame and what came before it.
pub type Batch = Arc<Vec<Arc<Frame>>>;

/// Audio waits at most this much stream time for a video frame to go out with: a stream
/// whose video pauses keeps its sound flowing.
const AUDIO_HOLD_MS: u64 = 100;

struct StreamState {
    sender: broadcast::Sender<Batch>,
    /// Batches sent so far: the last one's sequence number.
    batches_sent: u64,
    /// Frames of the batch being gathered (those after a keyframe are in the GOP cache
    /// too).
    pending: Vec<Arc<Frame>>,
    /// Decides segment starts, unless they come from upstream.
    segmenter: Option<Segmenter>,
    /// From upstream: the mark for the next keyframe.
    upstream_mark: Option<SegmentMark>,
    publisher: Option<PublisherSlot>,
    generation: u32,
    ended: bool,
    metadata: Option<Arc<Frame>>,
    video_header: Option<Arc<Frame>>,
    audio_header: Option<Arc<Frame>>,
    /// Frames since the last video keyframe, starting with it.
    gop: Vec<Arc<Frame>>,
    gop_bytes: usize,
    gop_max_bytes: usize,
    gop_max_frames: usize,
    has_audio: bool,
    has_video: bool,
    /// The tracks the publisher's metadata announces, before their frames arrive.
    declared: DeclaredTracks,
    audio_clock: TrackClock,
    video_clock: TrackClock,
    stats: PublishStats,
}

/// Tracks named by `onMetaData` (`audiocodecid` / `videocodecid`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct DeclaredTracks {
    audio: bool,
    video: bool,
}

impl DeclaredTracks {
    fn of_metadata(payload: &[u8]) -> DeclaredTracks {
        let values = amf::decode_all(payload).unwrap_or_default();
        let mut declared = DeclaredTracks::default();
        for value in &values {
            if let Amf0Value::EcmaArray(fields) | Amf0Value::Object(fields) = value {
                for (name, _) in fields {
                    declared.audio |= name == "audiocodecid";
                    declared.video |= name == "videocodecid";
                }
            }
        }
        declared
    }
}

impl StreamState {
    /// Whether the stream has audio and video: seen, or announced by its metadata (a viewer
    /// joining before the first frames still learns them for its FLV header, which
    /// players read once).
    fn tracks(&self) -> (bool, bool) {
        (
            self.has_audio || self.declared.audio,
            self.has_video || self.declared.video,
        )
    }

    /// A new publisher: its timestamps restart, so both tracks rebase onto the stream clock;
    /// the old GOP is of no use to anyone joining from now on.
    fn begin_generation(&mut self) {
        self.flush();
        let resume_at = self.audio_clock.last().max(self.video_clock.last());
        self.audio_clock.rebase(resume_at);
        self.video_clock.rebase(resume_at);
        self.gop.clear();
        self.gop_bytes = 0;
    }

    fn end(&mut self) {
        self.flush();
        self.ended = true;
        self.publisher = None;
        self.gop.clear();
        // Viewers see the channel close once they drained what was sent before.
        let (sender, _) = broadcast::channel(1);
        self.sender = sender;
    }

    fn push(&mut self, kind: MediaKind, wire_timestamp: u32, payload: Bytes) {
        let timestamp = match kind {
            MediaKind::Audio => self.audio_clock.extend(wire_timestamp),
            MediaKind::Video => self.video_clock.extend(wire_timestamp),
            MediaKind::Metadata => self.audio_clock.last().max(self.video_clock.last()),
        };
        let mut frame = Frame::new(kind, timestamp, payload);
        frame.generation = self.generation;
        self.stats
            .observe(kind, frame.sequence_header, &frame.payload);
        match kind {
            MediaKind::Audio => {
                self.has_audio = true;
                // In an audio-only stream every frame is a place to start.
                frame.key = !self.has_video && !frame.sequence_header;
            }
            MediaKind::Video => self.has_video = true,
            MediaKind::Metadata => self.declared = DeclaredTracks::of_metadata(&frame.payload),
        }
        frame.segment = match &mut self.segmenter {
            Some(segmenter) => segmenter.observe(&frame),
            None if frame.key => self.upstream_mark.take(),
            None => None,
        };
        let frame = Arc::new(frame);
        match kind {
            MediaKind::Metadata => self.metadata = Some(frame.clone()),
            MediaKind::Video if frame.sequence_header => self.video_header = Some(frame.clone()),
            MediaKind::Audio if frame.sequence_header => self.audio_header = Some(frame.clone()),
            _ => self.cache_gop(&frame),
        }
        let closes = self.closes_batch(&frame);
        self.pending.push(frame);
        if closes {
            self.flush();
        }
    }

    /// Whether the pending batch goes out once `frame` joins it.
    fn closes_batch(&self, frame: &Frame) -> bool {
        if !self.has_video {
            return true;
        }
        let is_picture = frame.kind == MediaKind::Video && !frame.sequence_header;
        is_picture
            || self.pending.first().is_some_and(|first| {
                frame.timestamp.saturating_sub(first.timestamp) >= AUDIO_HOLD_MS
            })
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(8));
        self.batches_sent += 1;
        // No receivers is not an error: the stream is live with nobody watching.
        let _ = self.sender.send(Arc::new(batch));
    }

    fn cache_gop(&mut self, frame: &Arc<Frame>) {
        if frame.kind == MediaKind::Video && frame.key {
            self.gop.clear();
            self.gop_bytes = 0;
        } else if self.gop.is_empty() {
            // Nothing before the first keyframe is worth replaying.
            return;
        }
        if self.gop.len() >= self.gop_max_frames
            || self.gop_bytes + frame.payload.len() > self.gop_max_bytes
        {
            self.gop.clear();
            self.gop_bytes = 0;
            return;
        }
        self.gop_bytes += frame.payload.len();
        self.gop.push(frame.clone());
    }
}

/// The right to publish one stream. Dropping it without [`Publisher::finish`] means the
/// publisher vanished: viewers stay attached, waiting for a new publisher.
pub struct Publisher {
    stream: Arc<Stream>,
    session: u32,
    finished: bool,
}

impl Publisher {
    pub fn name(&self) -> &str {
        &self.stream.name
    }

    /// Reads this stream's [`PublishStats`] from elsewhere (the task keeping its lease).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.stream.clone())
    }

    /// The publisher session number, also the frames' `generation`.
    pub fn generation(&self) -> u32 {
        self.session
    }

    /// Hand one message to every viewer. Fails once another publisher took over.
    pub fn push(
        &mut self,
        kind: MediaKind,
        wire_timestamp: u32,
        payload: Bytes,
        now: Instant,
    ) -> Result<(), Replaced> {
        let mut state = self.stream.lock();
        match &mut state.publisher {
            Some(slot) if slot.session == self.session => slot.last_activity = now,
            _ => return Err(Replaced),
        }
        state.push(kind, wire_timestamp, payload);
        Ok(())
    }

    /// On a stream whose segments are decided upstream: the next keyframe begins the
    /// segment `mark`.
    pub fn mark_next_segment(&mut self, mark: SegmentMark) {
        self.stream.lock().upstream_mark = Some(mark);
    }

    /// The publisher ended the stream cleanly: viewers are closed once they drained it.
    pub fn finish(mut self, hub: &Hub) {
        self.finished = true;
        let ended = {
            let mut state = self.stream.lock();
            let owner = matches!(&state.publisher, Some(slot) if slot.session == self.session);
            if owner {
                state.end();
            }
            owner
        };
        if ended {
            hub.remove_if_ended(&self.stream);
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut state = self.stream.lock();
        if matches!(&state.publisher, Some(slot) if slot.session == self.session) {
            state.publisher = None;
        }
    }
}

#[derive(Clone)]
pub struct StatsHandle(Arc<Stream>);

impl StatsHandle {
    pub fn get(&self) -> PublishStats {
        let state = self.0.lock();
        let mut stats = state.stats.clone();
        stats.viewers = self.0.watchers.load(Ordering::Relaxed);
        stats
    }
}

/// What a viewer receives next.
#[derive(Debug)]
pub enum Delivery {
    Frame(Arc<Frame>),
    /// The viewer fell behind; this many batches (or frames, when the viewer dropped what
    /// it had taken) were dropped for it and it resumes at the next keyframe.
    Skipped(u64),
    /// The stream ended.
    End,
}

/// Counts one consumer of a stream (for its viewer count) while it lives.
pub struct Watching(Arc<Stream>);

impl Watching {
    fn new(stream: &Arc<Stream>) -> Watching {
        stream.watchers.fetch_add(1, Ordering::Relaxed);
        Watching(stream.clone())
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Whether the stream has audio / video, seen or announced so far (for an FLV header).
    pub fn tracks(&self) -> (bool, bool) {
        self.0.lock().tracks()
    }

    /// Identifies the stream: a stream that ends and is published again is another one,
    /// with a larger id.
    pub fn stream_id(&self) -> u64 {
        self.0.id
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A viewer attached to a stream through a fan-out: the frames that bring it up to date,
/// and the batches that follow them. Frames of batches up to `batches.seq()` are in
/// `replay`; the rest are the fan-out's to deliver.
pub struct Join {
    /// Metadata, sequence headers and the GOP so far.
    pub replay: Vec<Arc<Frame>>,
    /// No keyframe is cached: video starts at the next one.
    pub waiting_for_key: bool,
    /// The batches after `replay`, for a fan-out that starts with this viewer.
    pub batches: BatchStream,
    /// How many frames the viewer may fall behind (the hub's backlog).
    pub backlog: usize,
    pub watching: Watching,
}

/// A stream's batches in order, numbered: what a fan-out hands to its viewers.
pub struct BatchStream {
    receiver: broadcast::Receiver<Batch>,
    /// Sequence number of the last batch taken (or skipped).
    seq: u64,
}

/// What a [`BatchStream`] yields.
pub enum BatchEvent {
    /// The batch numbered `seq`.
    Batch {
        seq: u64,
        frames: Batch,
    },
    /// The fan-out fell a whole ring behind: batches up to `seq` are gone.
    Lagged {
        seq: u64,
    },
    End,
}

impl BatchStream {
    /// Sequence number of the last batch taken (0: none sent yet).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The next batch. Cancel-safe: dropping the future before it completes loses nothing.
    pub async fn next(&mut self) -> BatchEvent {
        let received = self.receiver.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => broadcast::error::TryRecvError::Lagged(n),
            broadcast::error::RecvError::Closed => broadcast::error::TryRecvError::Closed,
        });
        self.event(received)
    }

    /// The next batch if one is waiting.
    pub fn try_next(&mut self) -> Option<BatchEvent> {
        match self.receiver.try_recv() {
            Err(broadcast::error::TryRecvError::Empty) => None,
            received => Some(self.event(received)),
        }
    }

    fn event(&mut self, received: Result<Batch, broadcast::error::TryRecvError>) -> BatchEvent {
        match received {
            Ok(frames) => {
                self.seq += 1;
                BatchEvent::Batch {
                    seq: self.seq,
                    frames,
                }
            }
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                self.seq += n;
                BatchEvent::Lagged { seq: self.seq }
            }
            Err(_) => BatchEvent::End,
        }
    }
}

pub struct Subscriber {
    /// Counts this subscriber as a viewer, and is its way to the stream.
    watching: Watching,
    receiver: broadcast::Receiver<Batch>,
    /// The batch being handed out, from `batch_pos` on.
    batch: Batch,
    batch_pos: usize,
    initial: std::collections::VecDeque<Arc<Frame>>,
    waiting_for_key: bool,
    has_audio: bool,
    has_video: bool,
    skipped: u64,
}

impl Subscriber {
    pub fn name(&self) -> &str {
        self.watching.name()
    }

    /// Whether the stream had audio / video when the viewer joined (for the FLV header).
    pub fn has_audio(&self) -> bool {
        self.has_audio
    }

    pub fn has_video(&self) -> bool {
        self.has_video
    }

    /// Frames dropped for this viewer so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Batches published but not yet taken by this viewer, plus frames of the GOP replay.
    pub fn queued(&self) -> usize {
        self.receiver.len() + self.initial.len()
    }

    /// The viewer dropped `frames` it had taken but not sent: resume at the next keyframe.
    fn skip_to_keyframe(&mut self, frames: u64) {
        // What is left of the GOP replay goes too: its inter frames need the frames before.
        let rest_of_batch = self.batch.len() - self.batch_pos;
        self.skipped += frames + (self.initial.len() + rest_of_batch) as u64;
        self.initial.clear();
        self.batch_pos = self.batch.len();
        self.waiting_for_key = true;
        // Sequence headers may have changed in what was skipped: resend the current ones
        // ahead of the keyframe the viewer resumes at.
        let state = self.watching.0.lock();
        self.initial.extend(state.video_header.clone());
        self.initial.extend(state.audio_header.clone());
    }

    /// Next frame without waiting; `None` when nothing is queued.
    pub fn try_next(&mut self) -> Option<Delivery> {
        loop {
            if let Some(frame) = self.next_taken() {
                if let Some(d) = self.filter(frame) {
                    return Some(d);
                }
                continue;
            }
            match self.receiver.try_recv() {
                Ok(batch) => self.take(batch),
                Err(broadcast::error::TryRecvError::Empty) => return None,
                Err(broadcast::error::TryRecvError::Lagged(n)) => return Some(self.lagged(n)),
                Err(broadcast::error::TryRecvError::Closed) => return Some(Delivery::End),
            }
        }
    }

    /// Next frame, waiting for the publisher.
    pub async fn next(&mut self) -> Delivery {
        loop {
            if let Some(frame) = self.next_taken() {
                if let Some(d) = self.filter(frame) {
                    return d;
                }
                continue;
            }
            match self.receiver.recv().await {
                Ok(batch) => self.take(batch),
                Err(broadcast::error::RecvError::Lagged(n)) => return self.lagged(n),
                Err(broadcast::error::RecvError::Closed) => return Delivery::End,
            }
        }
    }

    /// The next frame of the GOP replay or of the batch taken from the ring.
    fn next_taken(&mut self) -> Option<Arc<Frame>> {
        if let Some(frame) = self.initial.pop_front() {
            return Some(frame);
        }
        let frame = self.batch.get(self.batch_pos)?.clone();
        self.batch_pos += 1;
        Some(frame)
    }

    fn take(&mut self, batch: Batch) {
        self.batch = batch;
        self.batch_pos = 0;
    }

    fn lagged(&mut self, n: u64) -> Delivery {
        self.skip_to_keyframe(n);
        Delivery::Skipped(n)
    }

    fn filter(&mut self, frame: Arc<Frame>) -> Option<Delivery> {
        if self.waiting_for_key && frame.kind == MediaKind::Video && !frame.sequence_header {
            if !frame.key {
                self.skipped += 1;
                return None;
            }
            self.waiting_for_key = false;
        }
        if frame.kind == MediaKind::Video {
            self.has_video = true;
        }
        Some(Delivery::Frame(frame))
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
