//! The stream hub: one publisher and any number of viewers per stream.
//!
//! A stream keeps its metadata, sequence headers and the current GOP so that a new viewer
//! starts with a keyframe. Frames leave through a bounded ring (`tokio::sync::broadcast`):
//! the publisher never waits. Players are attached with [`Hub::join`] and served by their
//! stream's fan-out (in `serve`), which reads the ring once for all of them; other
//! consumers (the HLS packager) take frames themselves with a [`Subscriber`], which is
//! told how much it missed when it falls more than the ring behind and skips to the next
//! keyframe.
//!
//! Each frame is serialized at most once per output format ([`Frame::flv_http_chunk`],
//! [`Frame::rtmp_chunks`]) and those bytes are shared by every viewer.
//!
//! Files: this one keeps the streams by name; [`stream`] is one stream's state (clocks,
//! GOP cache, batching), [`publisher`] the right to publish one, [`viewer`] the ways to
//! watch one, [`stats`] what a publisher sends, for operators.
//!
//! Frames go into the ring in batches, not one by one: audio (and metadata) joins the next
//! video frame, so each viewer gets one write per video frame instead of one per
//! message. On loopback and LANs the cost of fan-out is almost all per write (one TCP
//! segment each), so this halves the server's CPU at the price of holding audio back by at
//! most one video frame interval. (The fan-out can merge batches further, viewer by
//! viewer.)

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod history;
mod publisher;
mod stats;
mod stream;
mod viewer;

pub use publisher::{Publisher, Pushed, StatsHandle};
pub use stats::{PresentationOrder, PublishStats};
pub use viewer::{BatchEvent, BatchStream, Delivery, Join, Subscriber, Watching};

use stream::{PublisherSlot, Stream};

use bytes::Bytes;

use crate::frame::{Frame, MediaKind};

/// An RTSP player attached to a stream (see [`Hub::join_rtp`]).
pub struct RtpJoin {
    pub join: Join,
    /// The session description (SDP) of the stream.
    pub description: String,
    /// What each of its RTP tracks carries, in `trackID` order.
    pub tracks: Vec<MediaKind>,
}

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Batches (a video frame and the audio before it) a viewer may fall behind before it
    /// must skip to the next keyframe. The ring keeps this many batches alive, so it is
    /// also the stream's fixed memory cost.
    pub backlog: usize,
    /// Who decides where HLS segments begin.
    pub segments: Segmenting,
    /// Apps whose segments have their own target (with [`Segmenting::Own`]).
    pub segment_targets_by_app: BTreeMap<String, Duration>,
    /// A publisher that sent nothing for this long may be replaced by a new one.
    pub publisher_stale_after: Duration,
    /// Largest GOP kept for new viewers; a longer GOP is dropped (new viewers then wait for
    /// the next keyframe) so a stream without keyframes cannot grow memory.
    pub gop_max_bytes: usize,
    pub gop_max_frames: usize,
    /// Complete HLS segments kept as frames for packagers and edges that start cold (see
    /// [`history`]), and the most bytes they may take.
    pub history_segments: usize,
    pub history_max_bytes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            backlog: 256,
            segments: Segmenting::Own {
                target: Duration::from_secs(2),
            },
            segment_targets_by_app: BTreeMap::new(),
            publisher_stale_after: Duration::from_secs(2),
            gop_max_bytes: 32 * 1024 * 1024,
            gop_max_frames: 4096,
            history_segments: 3,
            history_max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl HubConfig {
    /// How long the segments of `stream` last at least, when this hub cuts them.
    pub fn segment_target(&self, stream: &str) -> Option<Duration> {
        match self.segments {
            Segmenting::Own { target } => Some(
                self.segment_targets_by_app
                    .get(crate::names::app_of(stream))
                    .copied()
                    .unwrap_or(target),
            ),
            Segmenting::Upstream => None,
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

/// Who watches a stream, for its counts: players are what operators and edge choice care
/// about; edges pulling it are not players (their own players are counted on the edge),
/// and the node's own consumers (the HLS packager) are neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Viewer,
    Relay,
    Internal,
}

/// What a new viewer is brought up to date with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// The current GOP: playback starts at once.
    Gop,
    /// The last few HLS segments, when the stream has them (else the GOP).
    History,
}

/// What the hub knows of a live stream, for stats and metrics.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub name: String,
    /// Players watching now ([`Audience::Viewer`]).
    pub viewers: usize,
    /// Other nodes pulling the stream now ([`Audience::Relay`]).
    pub relays: usize,
    pub has_publisher: bool,
    pub has_audio: bool,
    pub has_video: bool,
    pub generation: u32,
    /// When its first publisher began (a stream taken over by a new publisher keeps it).
    pub created: Instant,
    /// What its publisher sends (codecs, resolution, bytes so far).
    pub stats: PublishStats,
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
                let stream = Arc::new(Stream::new(id, name, &self.config, now));
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
    pub fn subscribe(&self, name: &str, audience: Audience) -> Option<Subscriber> {
        Some(self.attach(name, audience, Replay::Gop)?.into_subscriber())
    }

    /// Like [`Hub::subscribe`], starting with the stream's last few HLS segments instead
    /// of its GOP (see [`history`]): for an HLS packager.
    pub fn subscribe_history(&self, name: &str, audience: Audience) -> Option<Subscriber> {
        Some(
            self.attach(name, audience, Replay::History)?
                .into_subscriber(),
        )
    }

    /// Attach a viewer whose frames a fan-out delivers (see [`Join`]). `None` when nothing
    /// is published under `name`.
    pub fn join(&self, name: &str, audience: Audience) -> Option<Join> {
        self.attach(name, audience, Replay::Gop)
    }

    /// Like [`Hub::join`], starting with the stream's last few HLS segments instead of its
    /// GOP: for an edge starting to pull the stream, so that its packager can list them.
    pub fn join_history(&self, name: &str, audience: Audience) -> Option<Join> {
        self.attach(name, audience, Replay::History)
    }

    fn attach(&self, name: &str, audience: Audience, from: Replay) -> Option<Join> {
        let stream = self.streams().get(name)?.clone();
        let mut state = stream.lock();
        if state.ended {
            return None;
        }
        let from_history = from == Replay::History && !state.history.is_empty();
        // What brings the viewer up to date after the metadata: sequence headers, then the
        // cached frames (the GOP, or the last segments).
        let (headers, cached): (Vec<Arc<Frame>>, Vec<Arc<Frame>>) = if from_history {
            let history = &state.history;
            (
                history.headers().cloned().collect(),
                history.frames().iter().cloned().collect(),
            )
        } else {
            let headers = [&state.video_header, &state.audio_header];
            (
                headers.into_iter().flatten().cloned().collect(),
                state.gop.clone(),
            )
        };
        // The batch being gathered reaches the new viewer with everyone else's, so the
        // replay leaves out what of it the cache has (its tail). Sending the batch early
        // instead would split it: with viewers joining faster than audio frames come, every
        // audio frame would cost each viewer a write of its own. A batch holding anything
        // else (a header or metadata, which the replay has too, or frames from before the
        // first keyframe) does go out now, so that the new viewer gets it once.
        let mut gathered = (state.pending.iter().rev())
            .zip(cached.iter().rev())
            .take_while(|(pending, cached)| Arc::ptr_eq(pending, cached))
            .count();
        if gathered < state.pending.len() {
            state.flush();
            gathered = 0;
        }
        let mut replay = Vec::with_capacity(1 + headers.len() + cached.len());
        replay.extend(state.metadata.clone());
        replay.extend(headers);
        replay.extend(cached[..cached.len() - gathered].iter().cloned());
        // Without a cached keyframe the viewer waits for the next one before any video.
        let waiting_for_key = !from_history && state.has_video && state.gop.is_empty();
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
            watching: Watching::new(&stream, audience),
        })
    }

    /// Attach an RTSP player to `name` as [`Hub::join`] does, with the stream's session
    /// description (`origin` in its `o=` line). The stream is packetized as RTP from now on
    /// (once, for every RTSP player; `random` seeds its numbering), the player's replay
    /// included. `None` when nothing is published under `name`, or it has no track RTP
    /// can carry (yet: a stream whose headers have not come).
    pub fn join_rtp(&self, name: &str, random: u64, origin: &str) -> Option<RtpJoin> {
        let (description, tracks) = {
            let stream = self.streams().get(name)?.clone();
            let mut state = stream.lock();
            if state.ended || !state.start_rtp(random) {
                return None;
            }
            let sender = state.rtp.as_ref()?;
            let tracks = sender.tracks().iter().map(|t| t.codec.media_kind());
            (sender.describe(origin), tracks.collect())
        };
        Some(RtpJoin {
            join: self.join(name, Audience::Viewer)?,
            description,
            tracks,
        })
    }

    /// The RTCP sender report of `name`'s RTP track `track` at `ntp_time`, once the stream
    /// is packetized (see [`Hub::join_rtp`]).
    pub fn rtp_sender_report(&self, name: &str, track: usize, ntp_time: u64) -> Option<Bytes> {
        let stream = self.streams().get(name)?.clone();
        let state = stream.lock();
        state.rtp.as_ref()?.sender_report(track, ntp_time)
    }

    /// Count one more of `audience` on a live stream while the returned handle lives,
    /// without taking any frames (an HLS player, whose segments come from the packager).
    pub fn watch(&self, name: &str, audience: Audience) -> Option<Watching> {
        let stream = self.streams().get(name)?.clone();
        let ended = stream.lock().ended;
        (!ended).then(|| Watching::new(&stream, audience))
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
                    viewers: s.viewers.load(Ordering::Relaxed),
                    relays: s.relays.load(Ordering::Relaxed),
                    has_publisher: state.publisher.is_some(),
                    has_audio: state.has_audio,
                    has_video: state.has_video,
                    generation: state.generation,
                    created: s.created,
                    stats: state.stats.clone(),
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

#[cfg(test)]
mod tests;
