//! The ways to watch a stream: [`Join`] a fan-out, which delivers [`BatchStream`]'s
//! batches to many viewers at once, or take frames one by one with a [`Subscriber`].

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::stream::Stream;
use super::Audience;
use crate::frame::{Batch, Frame, MediaKind, Tracks};

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

/// Counts one consumer of a stream in its [`Audience`] while it lives.
pub struct Watching {
    pub(super) stream: Arc<Stream>,
    audience: Audience,
}

impl Watching {
    pub(super) fn new(stream: &Arc<Stream>, audience: Audience) -> Watching {
        if let Some(count) = stream.count(audience) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        Watching {
            stream: stream.clone(),
            audience,
        }
    }

    pub fn name(&self) -> &str {
        &self.stream.name
    }

    /// Whether the stream has audio / video, seen or announced so far (for an FLV header).
    pub fn tracks(&self) -> Tracks {
        self.stream.lock().tracks()
    }

    /// Identifies the stream: a stream that ends and is published again is another one,
    /// with a larger id.
    pub fn stream_id(&self) -> u64 {
        self.stream.id
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(count) = self.stream.count(self.audience) {
            count.fetch_sub(1, Ordering::Relaxed);
        }
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
    pub(super) receiver: broadcast::Receiver<Batch>,
    /// Sequence number of the last batch taken (or skipped).
    pub(super) seq: u64,
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
    pub(super) watching: Watching,
    pub(super) receiver: broadcast::Receiver<Batch>,
    /// The batch being handed out, from `batch_pos` on.
    pub(super) batch: Batch,
    pub(super) batch_pos: usize,
    pub(super) initial: VecDeque<Arc<Frame>>,
    pub(super) waiting_for_key: bool,
    pub(super) has_audio: bool,
    pub(super) has_video: bool,
    pub(super) skipped: u64,
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

    /// Keep only the viewer's count, for a viewer whose frames come another way (a
    /// WebRTC session, fed by its stream's one packetizer).
    pub fn into_watching(self) -> Watching {
        self.watching
    }

    /// Frames dropped for this viewer so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Whether frames of the replay it joined with (GOP, or history) are still to come.
    pub fn is_replaying(&self) -> bool {
        !self.initial.is_empty()
    }

    /// Batches published but not yet taken by this viewer, plus frames of the GOP replay.
    pub fn queued(&self) -> usize {
        self.receiver.len() + self.initial.len()
    }

    /// The viewer dropped `frames` it had taken but not sent: resume at the next keyframe.
    pub(super) fn skip_to_keyframe(&mut self, frames: u64) {
        // What is left of the GOP replay goes too: its inter frames need the frames before.
        let rest_of_batch = self.batch.len() - self.batch_pos;
        self.skipped += frames + (self.initial.len() + rest_of_batch) as u64;
        self.initial.clear();
        self.batch_pos = self.batch.len();
        self.waiting_for_key = true;
        // Sequence headers may have changed in what was skipped: resend the current ones
        // ahead of the keyframe the viewer resumes at.
        let state = self.watching.stream.lock();
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

impl Join {
    /// The viewer takes its frames itself instead of through a fan-out.
    pub fn into_subscriber(self) -> Subscriber {
        let tracks = self.watching.tracks();
        Subscriber {
            watching: self.watching,
            receiver: self.batches.receiver,
            batch: Arc::default(),
            batch_pos: 0,
            initial: self.replay.into(),
            waiting_for_key: self.waiting_for_key,
            has_audio: tracks.audio,
            has_video: tracks.video,
            skipped: 0,
        }
    }
}
