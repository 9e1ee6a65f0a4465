//! The right to publish one stream, and a handle on what it sends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::stats::PublishStats;
use super::stream::Stream;
use super::{Hub, Replaced};
use crate::codec::check::{self, Invalid};
use crate::frame::{MediaKind, PublishedOpus, SegmentMark};

/// The right to publish one stream. Dropping it without [`Publisher::finish`] means the
/// publisher vanished: viewers stay attached, waiting for a new publisher.
pub struct Publisher {
    pub(super) stream: Arc<Stream>,
    pub(super) session: u32,
    pub(super) finished: bool,
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

    /// Hand one message to every viewer, unless it cannot be valid for its codec (see
    /// [`check`]): then nobody gets it and it is counted in the stream's stats. Fails once
    /// another publisher took over.
    pub fn push(
        &mut self,
        kind: MediaKind,
        wire_timestamp: u32,
        payload: Bytes,
        now: Instant,
    ) -> Result<Pushed, Replaced> {
        self.push_transcoded(kind, wire_timestamp, payload, None, now)
    }

    /// [`Publisher::push`] of audio transcoded from the publisher's Opus, which rides on
    /// it (see [`PublishedOpus`]).
    pub fn push_transcoded(
        &mut self,
        kind: MediaKind,
        wire_timestamp: u32,
        payload: Bytes,
        published_opus: Option<Arc<PublishedOpus>>,
        now: Instant,
    ) -> Result<Pushed, Replaced> {
        let valid = match kind {
            MediaKind::Video => check::check_video(&payload),
            MediaKind::Audio => check::check_audio(&payload),
            MediaKind::Metadata => Ok(()),
        };
        let mut state = self.stream.lock();
        match &mut state.publisher {
            Some(slot) if slot.session == self.session => slot.last_activity = now,
            _ => return Err(Replaced),
        }
        if let Err(invalid) = valid {
            state.stats.invalid_messages += 1;
            return Ok(Pushed::Refused(invalid));
        }
        state.push(kind, wire_timestamp, payload, published_opus);
        Ok(Pushed::Taken)
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
        stats.viewers = self.0.viewers.load(Ordering::Relaxed);
        stats.relays = self.0.relays.load(Ordering::Relaxed);
        stats
    }
}

/// What became of a message handed to [`Publisher::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    Taken,
    /// It cannot be valid for its codec: nobody gets it.
    Refused(Invalid),
}
