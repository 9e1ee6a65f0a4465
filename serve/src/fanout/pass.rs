//! One pass of a fan-out over its viewers: the batches it took and keeps until every
//! viewer has had them, each viewer's seat, and what a pass wrote.

use std::collections::VecDeque;
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::frame::Batch;
use media::outbox::Shared;

use super::member::Member;
use super::schedule::Schedule;
use super::tapes::Tapes;
use crate::metrics::Metrics;

/// A viewer as its lane's fan-out keeps it: what the fan-out needs to decide, batch by
/// batch, whether to give the viewer anything, without touching the member it shares
/// with the connection. With 1000 viewers that memory is cold by the next batch, and a
/// viewer's turn comes only every other batch at 30 fps.
pub(super) struct Seat {
    pub(super) member: Arc<Member>,
    /// The viewer's socket, which `member` keeps open. Kept here, next to the other
    /// seats, it saves a cache miss per write on the socket's own allocation: 3% of the
    /// CPU with 1000 viewers.
    fd: RawFd,
    /// How long its writes may wait for later batches to share them (zero: they do not
    /// wait, as for edges pulling the stream; see [`super::schedule`]).
    pub(super) window: Duration,
    /// Which batches are written at once when merging (see [`super::schedule`]).
    pub(super) turn: u64,
    /// The encoding it shares with other viewers, if any: it is sent from that tape.
    pub(super) shares: Option<Shared>,
    /// The first batch the viewer has not been given: its replay had those before.
    next: u64,
}

impl Seat {
    pub(super) fn new(
        member: &Arc<Member>,
        window: Duration,
        shares: Option<Shared>,
        turn: u64,
        next: u64,
    ) -> Self {
        Seat {
            member: member.clone(),
            fd: member.socket.as_raw_fd(),
            window,
            turn,
            shares,
            next,
        }
    }
}

/// A batch a fan-out took, kept until each of its viewers has been given it.
pub(super) struct Taken {
    pub(super) seq: u64,
    /// `None`: the fan-out lost it.
    pub(super) frames: Option<Batch>,
    /// Where its frames are on each tape ([`Shared::index`]), if on that tape.
    pub(super) spans: [Option<Range<u64>>; Shared::ALL.len()],
    /// When the fan-out took it.
    pub(super) at: Instant,
}

/// One pass of a fan-out over its viewers: the bytes it wrote, when the first window of a
/// viewer holding batches ends, and the oldest batch any viewer still needs.
#[derive(Default)]
pub(super) struct Pass {
    pub(super) written: u64,
    /// Of which sent from a tape.
    pub(super) written_from_tape: u64,
    first_window_end: Option<Instant>,
    keep_from: Option<u64>,
}

impl Pass {
    /// Serve every seat (see [`Pass::serve`]), dropping those whose viewer is gone.
    pub(super) fn serve_all(
        &mut self,
        seats: &mut Vec<Seat>,
        taken: &VecDeque<Taken>,
        tapes: &Tapes,
        due: impl Fn(&Seat, &Taken) -> bool,
    ) {
        seats.retain_mut(|seat| self.serve(seat, taken, tapes, &due));
    }

    /// Give `seat` the batches it has not had, if `due` says so for the oldest of them;
    /// otherwise it holds them. False when the viewer is gone.
    fn serve(
        &mut self,
        seat: &mut Seat,
        taken: &VecDeque<Taken>,
        tapes: &Tapes,
        due: impl FnOnce(&Seat, &Taken) -> bool,
    ) -> bool {
        let first = taken.partition_point(|batch| batch.seq < seat.next);
        let mut alive = true;
        if let Some(oldest) = taken.get(first) {
            if due(seat, oldest) {
                let batches = taken.range(first..);
                let on_tape = seat.shares.and_then(|shares| {
                    let tape = tapes.get(shares)?;
                    Some((tape, span(batches.clone(), shares.index())?))
                });
                // SAFETY: `seat.member` holds an `Arc` of the socket, so the fd stays
                // open while the seat lives, which outlasts this borrow.
                let socket = unsafe { BorrowedFd::borrow_raw(seat.fd) };
                alive = seat.member.deliver(socket, batches, self, on_tape);
                seat.next = taken.back().map_or(seat.next, |batch| batch.seq + 1);
            } else {
                let end = Schedule::window_end(oldest.at, seat.window);
                self.first_window_end = Some(self.first_window_end.map_or(end, |t| t.min(end)));
            }
        }
        self.keep_from = Some(self.keep_from.map_or(seat.next, |k| k.min(seat.next)));
        alive
    }

    /// Count the bytes written and forget the batches every viewer has had; returns
    /// when the first window of a viewer holding batches ends.
    pub(super) fn finish(
        self,
        taken: &mut VecDeque<Taken>,
        tapes: &mut Tapes,
        metrics: &Metrics,
    ) -> Option<Instant> {
        Metrics::add(&metrics.bytes_out_total, self.written);
        Metrics::add(&metrics.bytes_out_zero_copy_total, self.written_from_tape);
        let keep_from = self.keep_from.unwrap_or(u64::MAX);
        while taken.front().is_some_and(|batch| batch.seq < keep_from) {
            taken.pop_front();
        }
        tapes.release(taken);
        self.first_window_end
    }
}

/// Where `batches` are on a tape, if they all are (they are consecutive there).
pub(super) fn span<'a>(
    mut batches: impl Iterator<Item = &'a Taken>,
    index: usize,
) -> Option<Range<u64>> {
    let first = batches.next()?.spans[index].clone()?;
    let mut end = first.end;
    for batch in batches {
        end = batch.spans[index].as_ref()?.end;
    }
    Some(first.start..end)
}
