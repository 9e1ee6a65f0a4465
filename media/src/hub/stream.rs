//! One stream's state: its clocks, sequence headers and GOP cache, and the batch being
//! gathered for the ring.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::broadcast;

use super::history::History;
use super::stats::PublishStats;
use super::{Audience, HubConfig};
use crate::calendar::unix_now_ms;
use crate::codec;
use crate::frame::{Batch, Frame, MediaKind, PublishedOpus, SegmentMark, Tracks};
use crate::metadata;
use crate::rtsp::StreamSender;
use crate::segment::{ProgramDates, Segmenter};
use crate::timestamp::{StreamClock, Track};

pub(super) struct Stream {
    /// Unique in the hub, growing: a stream with a larger id is newer.
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) state: Mutex<StreamState>,
    /// Players watching right now (see [`Audience`]).
    pub(super) viewers: AtomicUsize,
    /// Other nodes pulling the stream right now.
    pub(super) relays: AtomicUsize,
    /// When its first publisher began.
    pub(super) created: Instant,
}

impl Stream {
    pub(super) fn new(id: u64, name: &str, config: &HubConfig, now: Instant) -> Stream {
        let (sender, _) = broadcast::channel(config.backlog.max(16));
        Stream {
            id,
            created: now,
            name: name.to_owned(),
            viewers: AtomicUsize::new(0),
            relays: AtomicUsize::new(0),
            state: Mutex::new(StreamState {
                sender,
                batches_sent: 0,
                pending: Vec::new(),
                segmenter: config
                    .segment_target(name)
                    .map(|target| Segmenter::new(target.as_millis() as u64, unix_now_ms() / 1000)),
                program_dates: ProgramDates::default(),
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
                declared: Tracks::NONE,
                clock: StreamClock::default(),
                history: History::new(config.history_segments, config.history_max_bytes),
                ends: TrackEnds::default(),
                stats: PublishStats::default(),
                rtp: None,
            }),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counter of `audience`, if it is counted.
    pub(super) fn count(&self, audience: Audience) -> Option<&AtomicUsize> {
        match audience {
            Audience::Viewer => Some(&self.viewers),
            Audience::Relay => Some(&self.relays),
            Audience::Internal => None,
        }
    }
}

pub(super) struct PublisherSlot {
    pub(super) session: u32,
    pub(super) last_activity: Instant,
}

/// Audio waits at most this much stream time for a video frame to go out with: a stream
/// whose video pauses keeps its sound flowing.
pub(super) const AUDIO_HOLD_MS: u64 = 100;

pub(super) struct StreamState {
    pub(super) sender: broadcast::Sender<Batch>,
    /// Batches sent so far: the last one's sequence number.
    pub(super) batches_sent: u64,
    /// Frames of the batch being gathered (those after a keyframe are in the GOP cache
    /// too).
    pub(super) pending: Vec<Arc<Frame>>,
    /// Decides segment starts, unless they come from upstream.
    segmenter: Option<Segmenter>,
    /// Dates the segmenter's marks (the wall clock is read only when a mark is made).
    program_dates: ProgramDates,
    /// From upstream: the mark for the next keyframe.
    pub(super) upstream_mark: Option<SegmentMark>,
    pub(super) publisher: Option<PublisherSlot>,
    pub(super) generation: u32,
    pub(super) ended: bool,
    pub(super) metadata: Option<Arc<Frame>>,
    pub(super) video_header: Option<Arc<Frame>>,
    pub(super) audio_header: Option<Arc<Frame>>,
    /// The last few HLS segments, for packagers and edges that start cold.
    pub(super) history: History,
    /// Frames since the last video keyframe, starting with it.
    pub(super) gop: Vec<Arc<Frame>>,
    gop_bytes: usize,
    gop_max_bytes: usize,
    gop_max_frames: usize,
    pub(super) has_audio: bool,
    pub(super) has_video: bool,
    /// The tracks the publisher's metadata announces, before their frames arrive.
    declared: Tracks,
    clock: StreamClock,
    /// Where the current publisher's tracks end, for the next one to start after.
    ends: TrackEnds,
    pub(super) stats: PublishStats,
    /// The stream's RTP packetizers, from its first RTSP player until it ends.
    pub(super) rtp: Option<StreamSender>,
}

/// Where a publisher's audio and video end, for the next publisher of the stream to
/// continue from. Its first picture should be shown right where the old video's shown
/// pictures end: neither overlapping them (players freeze on pictures shown twice) nor
/// leaving a gap (players wait at it). With B-frames a picture is shown after
/// later-decoded ones, and a keyframe some time after it is decoded; a reconnecting
/// encoder has the same delay as before, so the new stream is decoded from that long
/// before the old video's end (never before the old stream's last frame, either track).
#[derive(Debug, Default, Clone, Copy)]
struct TrackEnds {
    /// Latest presentation time of a picture, and the time between pictures.
    video_shown: Option<u64>,
    video_interval: u64,
    last_video: Option<u64>,
    /// How long after it is decoded a keyframe is shown (B-frames delay it).
    key_delay: u64,
    /// Latest audio frame, and the time between audio frames.
    last_audio: Option<u64>,
    audio_interval: u64,
}

impl TrackEnds {
    /// Longest gap taken for a frame's duration: anything longer is a pause, not a rate.
    const MAX_INTERVAL: u64 = 1000;

    fn video(&mut self, frame: &Frame) {
        if frame.sequence_header {
            return;
        }
        if let Some(last) = self.last_video.replace(frame.timestamp) {
            let gap = frame.timestamp.saturating_sub(last);
            if gap > 0 && gap <= Self::MAX_INTERVAL {
                self.video_interval = gap;
            }
        }
        let offset = codec::parse_video_tag(&frame.payload).map_or(0, |i| i.composition_time);
        let delay = offset.max(0) as u64;
        if frame.key {
            self.key_delay = delay;
        }
        let shown = frame.timestamp.saturating_add(delay);
        self.video_shown = Some(self.video_shown.map_or(shown, |s| s.max(shown)));
    }

    fn audio(&mut self, frame: &Frame) {
        if frame.sequence_header {
            return;
        }
        if let Some(last) = self.last_audio.replace(frame.timestamp) {
            let gap = frame.timestamp.saturating_sub(last);
            if gap > 0 && gap <= Self::MAX_INTERVAL {
                self.audio_interval = gap;
            }
        }
    }

    /// Where the next publisher's first frame goes (`None`: nothing was sent).
    fn end(&self) -> Option<u64> {
        let shown = self.video_shown.map(|t| t + self.video_interval);
        let decoded = self.last_video.map(|t| t + self.video_interval);
        let video = shown.map(|t| t.saturating_sub(self.key_delay)).max(decoded);
        let audio = self.last_audio.map(|t| t + self.audio_interval);
        video.max(audio)
    }
}

impl StreamState {
    /// Whether the stream has audio and video: seen, or announced by its metadata (a viewer
    /// joining before the first frames still learns them for its FLV header, which
    /// players read once).
    pub(super) fn tracks(&self) -> Tracks {
        Tracks {
            audio: self.has_audio || self.declared.audio,
            video: self.has_video || self.declared.video,
        }
    }

    /// A new publisher: its timestamps restart, so both tracks rebase onto the stream clock;
    /// the old GOP is of no use to anyone joining from now on.
    pub(super) fn begin_generation(&mut self) {
        self.flush();
        let resume_at = self.ends.end().unwrap_or(0);
        self.clock.rebase(resume_at);
        self.ends = TrackEnds::default();
        self.gop.clear();
        self.gop_bytes = 0;
    }

    /// Packetize the stream for RTSP players from now on (`random` seeds its RTP
    /// numbering), starting with the frames a new viewer is replayed: `false` while it has
    /// no track RTP can carry.
    pub(super) fn start_rtp(&mut self, random: u64) -> bool {
        if self.rtp.is_none() {
            let header = |h: &Option<Arc<Frame>>| h.as_ref().map(|f| f.payload.clone());
            let (video, audio) = (header(&self.video_header), header(&self.audio_header));
            let sender = StreamSender::new(video.as_deref(), audio.as_deref(), random);
            if sender.tracks().is_empty() {
                return false;
            }
            // In stream order, as every later frame will be.
            let mut sender = sender;
            for frame in &self.gop {
                if let Some((_, packets)) = sender.push(frame) {
                    let _ = frame.rtp.set(packets);
                }
            }
            self.rtp = Some(sender);
        }
        true
    }

    pub(super) fn end(&mut self) {
        self.flush();
        self.ended = true;
        self.rtp = None;
        self.publisher = None;
        self.gop.clear();
        self.history.clear();
        // Viewers see the channel close once they drained what was sent before.
        let (sender, _) = broadcast::channel(1);
        self.sender = sender;
    }

    pub(super) fn push(
        &mut self,
        kind: MediaKind,
        wire_timestamp: u32,
        payload: Bytes,
        published_opus: Option<Arc<PublishedOpus>>,
    ) {
        let payload = match kind {
            MediaKind::Metadata => metadata::for_live(payload),
            _ => payload,
        };
        let mut frame = Frame::new(kind, 0, payload);
        frame.published_opus = published_opus;
        let track = match kind {
            MediaKind::Audio => Some(Track::Audio),
            MediaKind::Video => Some(Track::Video),
            MediaKind::Metadata => None,
        };
        frame.timestamp = match track {
            Some(track) if frame.sequence_header => self.clock.place_header(track, wire_timestamp),
            Some(track) => self.clock.extend(track, wire_timestamp),
            None => self.clock.last(),
        };
        frame.generation = self.generation;
        let sequence_header = frame.sequence_header;
        (self.stats).observe(kind, sequence_header, frame.timestamp, &frame.payload);
        match kind {
            MediaKind::Audio => {
                self.has_audio = true;
                // In an audio-only stream every frame is a place to start.
                frame.key = !self.has_video && !frame.sequence_header;
                self.ends.audio(&frame);
            }
            MediaKind::Video => {
                self.has_video = true;
                self.ends.video(&frame);
            }
            MediaKind::Metadata => self.declared = metadata::declared_tracks(&frame.payload),
        }
        let marks_here = !frame.sequence_header && self.marks_on(kind);
        frame.segment = match &mut self.segmenter {
            Some(segmenter) => segmenter.observe(&frame).map(|mut mark| {
                self.program_dates.stamp(&mut mark, unix_now_ms());
                mark
            }),
            // The mark came just ahead of the frame it marks: the next frame of the track
            // that marks (video, or audio without video), a keyframe unless the origin cut
            // a GOP too long for the target duration.
            None if marks_here => self.upstream_mark.take(),
            None => None,
        };
        if let Some(sender) = &mut self.rtp {
            if let Some((_, packets)) = sender.push(&frame) {
                frame.rtp = OnceLock::from(packets);
            }
        }
        let frame = Arc::new(frame);
        self.history
            .push(&frame, [&self.video_header, &self.audio_header]);
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

    /// Whether frames of `kind` carry the stream's segment marks.
    fn marks_on(&self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Video => true,
            MediaKind::Audio => !self.has_video,
            MediaKind::Metadata => false,
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

    pub(super) fn flush(&mut self) {
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
