//! A viewer as its stream's fan-out and its own connection share it: what the fan-out
//! writes straight to the socket, what a full socket leaves queued for the connection to
//! finish, and when a viewer that falls behind is dropped.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::ops::Range;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::frame::Tracks;
use media::hub::Watching;
use media::outbox::{Outbox, MAX_IOVECS};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::pass::{Pass, Taken};
use super::tape::Tape;
use super::{EgressError, WRITE_TIMEOUT};
use crate::metrics::Metrics;

/// A viewer that has to skip ahead this many times within [`SKIP_WINDOW`] is disconnected:
/// its link cannot carry the stream.
pub(super) const MAX_SKIPS: u32 = 3;
pub(super) const SKIP_WINDOW: Duration = Duration::from_secs(60);

/// Tracks how often a viewer had to skip ahead.
#[derive(Default)]
pub struct SlowViewerGuard {
    skips: VecDeque<Instant>,
}

impl SlowViewerGuard {
    /// Record a skip of `frames`; an error when the viewer keeps falling behind.
    pub fn skipped(
        &mut self,
        frames: u64,
        metrics: &Metrics,
        now: Instant,
    ) -> Result<(), EgressError> {
        Metrics::add(&metrics.frames_skipped_total, frames);
        self.skips.push_back(now);
        while self
            .skips
            .front()
            .is_some_and(|t| now.duration_since(*t) > SKIP_WINDOW)
        {
            self.skips.pop_front();
        }
        if self.skips.len() as u32 >= MAX_SKIPS {
            Metrics::add(&metrics.viewers_dropped_slow_total, 1);
            return Err(EgressError::TooSlow(MAX_SKIPS));
        }
        Ok(())
    }
}

/// A viewer as the fan-out and the viewer's connection share it.
pub(super) struct Member {
    pub(super) socket: Arc<TcpStream>,
    pub(super) state: Mutex<MemberState>,
    /// Raised when the viewer's connection task has something to do: write what the
    /// fan-out could not, or finish.
    pub(super) wake: Notify,
    pub(super) metrics: Arc<Metrics>,
}

pub(super) struct MemberState {
    pub(super) outbox: Outbox,
    /// The socket took less than offered last time: the connection task writes the rest
    /// once it drains, and the fan-out only queues.
    pub(super) blocked: bool,
    pub(super) status: Status,
    pub(super) slow: SlowViewerGuard,
    /// What went to the socket and what the viewer skipped, so far (see
    /// [`Membership::totals`]).
    pub(super) totals: Totals,
}

/// What a viewer got so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Bytes written to its socket.
    pub bytes: u64,
    /// Frames it skipped to catch up.
    pub skipped: u64,
}

pub(super) enum Status {
    Playing,
    /// The stream ended: the connection closes once the outbox is written.
    Ended,
    Failed(EgressError),
    /// The connection stopped playing.
    Left,
}

/// What a viewer's connection waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pump {
    /// Everything is written: wait for the fan-out.
    Idle,
    /// The socket is full: wait until it drains.
    Blocked,
    /// The stream ended and everything is written.
    Ended,
}

impl Member {
    pub(super) fn lock(&self) -> MutexGuard<'_, MemberState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Give the viewer `batches` and write them, unless its socket is full. False when
    /// the viewer is gone.
    pub(super) fn deliver<'a>(
        &self,
        socket: BorrowedFd,
        batches: impl Iterator<Item = &'a Taken> + Clone,
        pass: &mut Pass,
        on_tape: Option<(&Tape, Range<u64>)>,
    ) -> bool {
        let mut state = self.lock();
        if !matches!(state.status, Status::Playing) {
            return false;
        }
        let state = &mut *state;
        if !state.blocked && batches.clone().all(|batch| batch.frames.is_some()) {
            if let Some(alive) = self.write_shared(socket, state, batches.clone(), pass, on_tape) {
                return alive;
            }
        }
        for batch in batches {
            match &batch.frames {
                Some(frames) => {
                    let dropped = state.outbox.push(frames);
                    if let Err(e) = self.note_skip(state, dropped) {
                        return self.fail(state, e);
                    }
                }
                // The fan-out's loss, not the viewer's: it does not count as falling behind.
                None => {
                    let dropped = state.outbox.skip();
                    state.totals.skipped += dropped;
                    Metrics::add(&self.metrics.frames_skipped_total, dropped);
                }
            }
        }
        if state.blocked {
            return true;
        }
        self.write_now(state, pass)
    }

    /// For a viewer with nothing queued: write `batches` straight from the frames' shared
    /// buffers, or from `on_tape`, where they are on its tape, and queue only what the
    /// socket leaves.
    /// `None` when the viewer needs an encoding of its own (see
    /// [`Outbox::shared_slices`]); otherwise false when the viewer is gone.
    fn write_shared<'a>(
        &self,
        socket: BorrowedFd,
        state: &mut MemberState,
        batches: impl Iterator<Item = &'a Taken> + Clone,
        pass: &mut Pass,
        on_tape: Option<(&Tape, Range<u64>)>,
    ) -> Option<bool> {
        let frames = batches.flat_map(|batch| batch.frames.iter().flat_map(|frames| frames.iter()));
        // On the stack: this runs for every write to every viewer.
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let count = state.outbox.shared_slices(frames.clone(), &mut slices)?;
        let slices = &slices[..count];
        let len = slices.iter().map(|s| s.len()).sum::<usize>();
        let from_tape = on_tape.is_some();
        let sent = match on_tape {
            Some((tape, span)) => {
                debug_assert_eq!(span.end - span.start, len as u64, "tape out of step");
                tape.send(socket, span)
            }
            None => write_direct(socket, slices),
        };
        let written = match sent {
            Ok(written) => written,
            Err(e) => return Some(self.fail(state, e.into())),
        };
        pass.written += written as u64;
        state.totals.bytes += written as u64;
        if from_tape {
            pass.written_from_tape += written as u64;
        }
        if written < len {
            let dropped = state.outbox.push_unwritten(frames, written);
            if let Err(e) = self.note_skip(state, dropped) {
                return Some(self.fail(state, e));
            }
            state.blocked = true;
            self.wake.notify_one();
        }
        Some(true)
    }

    /// Count frames the viewer skipped; an error when it keeps falling behind.
    fn note_skip(&self, state: &mut MemberState, dropped: u64) -> Result<(), EgressError> {
        if dropped == 0 {
            return Ok(());
        }
        state.totals.skipped += dropped;
        state.slow.skipped(dropped, &self.metrics, Instant::now())
    }

    /// Write from the fan-out; false if that failed and the viewer is gone.
    fn write_now(&self, state: &mut MemberState, pass: &mut Pass) -> bool {
        match self.write_some(state) {
            Ok(n) => pass.written += n,
            Err(e) => return self.fail(state, e.into()),
        }
        if state.blocked {
            self.wake.notify_one();
        }
        true
    }

    fn fail(&self, state: &mut MemberState, error: EgressError) -> bool {
        state.status = Status::Failed(error);
        self.wake.notify_one();
        false
    }

    pub(super) fn end(&self) {
        let mut state = self.lock();
        if matches!(state.status, Status::Playing) {
            state.status = Status::Ended;
        }
        self.wake.notify_one();
    }

    /// Write as much of the outbox as the socket takes without waiting.
    fn write_some(&self, state: &mut MemberState) -> io::Result<u64> {
        let mut total = 0;
        state.blocked = false;
        while !state.outbox.is_empty() {
            // On the stack: this runs for every write a full socket left.
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = state.outbox.io_slices(&mut slices);
            let offered: usize = slices[..count].iter().map(|s| s.len()).sum();
            match self.socket.try_write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    state.outbox.advance(n);
                    state.totals.bytes += n as u64;
                    total += n as u64;
                    if n < offered {
                        state.blocked = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    state.blocked = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }
}

/// A viewer's place in its stream's fan-out, held by its connection. Dropping it leaves.
pub struct Membership {
    pub(super) member: Arc<Member>,
    pub(super) _watching: Watching,
}

impl Membership {
    /// Write what the fan-out left for this viewer; says what to wait for next.
    pub fn pump(&self) -> Result<Pump, EgressError> {
        let member = &self.member;
        let mut state = member.lock();
        if matches!(state.status, Status::Failed(_)) {
            if let Status::Failed(e) = std::mem::replace(&mut state.status, Status::Left) {
                return Err(e);
            }
        }
        let written = member.write_some(&mut state)?;
        Metrics::add(&member.metrics.bytes_out_total, written);
        Ok(if !state.outbox.is_empty() {
            Pump::Blocked
        } else if matches!(state.status, Status::Ended) {
            Pump::Ended
        } else {
            Pump::Idle
        })
    }

    /// Wait until pumping again may get somewhere.
    pub async fn ready(&self, pump: Pump) -> Result<(), EgressError> {
        match pump {
            Pump::Idle => self.member.wake.notified().await,
            // Or a wake-up: the fan-out may have given up on this viewer.
            Pump::Blocked => tokio::select! {
                writable = tokio::time::timeout(WRITE_TIMEOUT, self.member.socket.writable()) => {
                    writable.map_err(|_| EgressError::WriteTimeout(WRITE_TIMEOUT))??;
                }
                _ = self.member.wake.notified() => {}
            },
            Pump::Ended => {}
        }
        Ok(())
    }

    /// Send one of the connection's own messages, after the media queued so far (a batch
    /// the fan-out holds for the merge window may follow it).
    pub fn send(&self, bytes: Bytes) -> Result<(), EgressError> {
        let member = &self.member;
        let mut state = member.lock();
        state.outbox.push_bytes(bytes);
        if !state.blocked {
            let written = member.write_some(&mut state)?;
            Metrics::add(&member.metrics.bytes_out_total, written);
        }
        Ok(())
    }

    /// What the viewer got so far.
    pub fn totals(&self) -> Totals {
        self.member.lock().totals
    }

    /// Change which tracks the viewer receives (RTMP receiveAudio / receiveVideo).
    pub fn update_tracks(&self, change: impl FnOnce(&mut Tracks)) {
        let outbox = &mut self.member.lock().outbox;
        let mut tracks = outbox.tracks();
        change(&mut tracks);
        outbox.set_tracks(tracks);
    }

    /// Stop playing; returns the rest of a message the fan-out started writing, which
    /// must go out before anything else on the connection.
    pub fn leave(self) -> Option<Bytes> {
        let mut state = self.member.lock();
        state.status = Status::Left;
        state.outbox.take_started()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.member.lock().status = Status::Left;
    }
}

/// One non-blocking write from the fan-out, straight to the socket: returns what it took
/// (0 when full). It skips tokio's readiness check, which costs a cache miss per viewer;
/// the connection task, which waits for the socket to drain, writes through tokio, so
/// that tokio still learns when the socket is full.
pub(super) fn write_direct(socket: BorrowedFd, slices: &[IoSlice]) -> io::Result<usize> {
    match socket2::SockRef::from(&socket).send_vectored(slices) {
        Ok(0) if slices.iter().any(|s| !s.is_empty()) => Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}
