//! Fan-out: sending a stream to its RTMP and HTTP-FLV viewers.
//!
//! Each stream with viewers has one fan-out task. It takes each batch of frames from the
//! hub once and, for every viewer in turn, writes it with one non-blocking vectored write
//! straight from the frames' shared buffers. A viewer whose socket takes it all costs one
//! syscall per batch and nothing else: nothing is queued or copied for it. What a full
//! socket leaves goes into the viewer's [`Outbox`]: its own connection task finishes the
//! write when the socket drains, and until then the fan-out only queues for it. A viewer
//! that falls further behind skips to the next keyframe; one that keeps falling behind, or
//! takes nothing for [`WRITE_TIMEOUT`], is dropped.
//!
//! A stream with many viewers ([`TAPE_AT`]) also puts each batch on a tape, once per
//! encoding its viewers share (see [`tape`]). Such a viewer's write is then one
//! `sendfile` of a span of the tape, and the kernel queues references to the tape's pages
//! instead of copying the bytes into every viewer's socket: that copy was over a quarter
//! of the server's CPU with 1000 viewers.
//!
//! Why one task per stream rather than per viewer: on loopback and LANs the cost of
//! fan-out is almost all per write, and a task per viewer adds a wake-up, a poll and a
//! ring read to every write: a fifth of the server's CPU with 1000 viewers.
//!
//! A merge window ([`Lanes::new`]) trades a little latency for fewer writes: a viewer's
//! picture may wait up to the window for the next one to share its write. Viewers take
//! turns (at 30 fps with a 40 ms window, half write on even batches and half on odd ones),
//! so each batch is written to only part of the audience and the last viewer of a batch
//! is not held up behind everyone else's writes. Edges pulling a stream are never held:
//! their viewers would wait twice. A held batch stays with the fan-out, not in the
//! viewer's outbox, so a message the connection sends meanwhile (see
//! [`Membership::send`]) may go out ahead of it.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::frame::Batch;
use media::frame::Tracks;
use media::hub::{BatchEvent, BatchStream, Join, Watching};
use media::outbox::{Format, Outbox, Shared, MAX_IOVECS};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use self::tape::Tape;
use crate::metrics::Metrics;

#[cfg(target_os = "linux")]
mod tape;
#[cfg(not(target_os = "linux"))]
#[path = "tape_unsupported.rs"]
mod tape;

/// A viewer whose socket accepts nothing for this long is gone.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A viewer that has to skip ahead this many times within [`SKIP_WINDOW`] is disconnected:
/// its link cannot carry the stream.
const MAX_SKIPS: u32 = 3;
const SKIP_WINDOW: Duration = Duration::from_secs(60);

/// Why a viewer's stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("viewer fell behind {0} times")]
    TooSlow(u32),
    #[error("viewer did not read for {0:?}")]
    WriteTimeout(Duration),
    #[error(transparent)]
    Io(#[from] io::Error),
}

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

/// The fan-outs of a node: for each stream being watched, a lane on one fan-out thread,
/// or on several for a large audience (see [`SPREAD_AT`]), so that it uses every core.
pub struct Lanes {
    lanes: Mutex<HashMap<LaneKey, Arc<Lane>>>,
    merge_window: Duration,
    /// A lane puts its batches on tapes once it has this many viewers ([`TAPE_AT`]).
    tape_at: usize,
}

/// A stream's lanes take up to this many viewers each before the stream gets a lane on
/// another fan-out thread; once it has one on every thread, new viewers go to the lane
/// with the fewest.
const SPREAD_AT: usize = 256;

/// A stream's name and the fan-out thread of its lane.
type LaneKey = (String, usize);

/// One stream's fan-out, as viewers see it.
struct Lane {
    /// The hub stream it serves ([`Watching::stream_id`]).
    stream_id: u64,
    state: Mutex<LaneState>,
}

struct LaneState {
    /// The last batch the fan-out took.
    last_taken: u64,
    /// Viewers served or joining.
    viewers: usize,
    /// Viewers admitted since the fan-out last looked.
    joining: Vec<Seat>,
    /// The turn of the next viewer admitted (see [`Turns`]).
    next_turn: u64,
    /// The fan-out stopped: admit nobody.
    closed: bool,
}

/// A viewer as the fan-out and the viewer's connection share it.
struct Member {
    socket: Arc<TcpStream>,
    state: Mutex<MemberState>,
    /// Raised when the viewer's connection task has something to do: write what the
    /// fan-out could not, or finish.
    wake: Notify,
    metrics: Arc<Metrics>,
}

struct MemberState {
    outbox: Outbox,
    /// The socket took less than offered last time: the connection task writes the rest
    /// once it drains, and the fan-out only queues.
    blocked: bool,
    status: Status,
    slow: SlowViewerGuard,
}

/// A viewer as its lane's fan-out keeps it: what the fan-out needs to decide, batch by
/// batch, whether to give the viewer anything, without touching the member it shares
/// with the connection. With 1000 viewers that memory is cold by the next batch, and a
/// viewer's turn comes only every other batch at 30 fps.
struct Seat {
    member: Arc<Member>,
    /// The viewer's socket, which `member` keeps open. Kept here, next to the other
    /// seats, it saves a cache miss per write on the socket's own allocation: 3% of the
    /// CPU with 1000 viewers.
    fd: RawFd,
    /// Writes may wait for the merge window (not for edges pulling the stream).
    merges: bool,
    /// Which batches are written at once when merging (see [`Turns`]).
    turn: u64,
    /// The encoding it shares with other viewers, if any: it is sent from that tape.
    shares: Option<Shared>,
    /// The first batch the viewer has not been given: its replay had those before.
    next: u64,
}

impl Seat {
    fn new(
        member: &Arc<Member>,
        merges: bool,
        shares: Option<Shared>,
        turn: u64,
        next: u64,
    ) -> Self {
        Seat {
            member: member.clone(),
            fd: member.socket.as_raw_fd(),
            merges,
            turn,
            shares,
            next,
        }
    }
}

enum Status {
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

impl Lanes {
    /// Fan-outs that let a viewer's picture wait up to `merge_window` for the next one to
    /// share its write (zero: write each batch at once).
    pub fn new(merge_window: Duration) -> Self {
        Lanes {
            lanes: Mutex::default(),
            merge_window,
            tape_at: TAPE_AT,
        }
    }

    /// Lanes whose batches go on tapes from their `viewers`th viewer on.
    #[cfg(test)]
    fn with_tapes_at(self, viewers: usize) -> Self {
        Lanes {
            tape_at: viewers,
            ..self
        }
    }

    /// Hand a viewer to its stream's fan-out, once everything its protocol sends before
    /// the media is written: from now on the fan-out writes its replay and the batches
    /// after it to `socket`, and the connection writes only through the [`Membership`].
    pub fn attach(
        self: &Arc<Self>,
        join: Join,
        socket: Arc<TcpStream>,
        format: Format,
        metrics: &Arc<Metrics>,
    ) -> Membership {
        let Join {
            replay,
            waiting_for_key,
            mut batches,
            backlog,
            watching,
        } = join;
        let merges = !matches!(format, Format::Flv { marks: true, .. });
        let mut outbox = Outbox::new(format, backlog);
        outbox.replay(&replay, waiting_for_key);
        let shares = outbox.shares();
        let member = Arc::new(Member {
            socket,
            state: Mutex::new(MemberState {
                outbox,
                blocked: false,
                status: Status::Playing,
                slow: SlowViewerGuard::default(),
            }),
            wake: Notify::new(),
            metrics: metrics.clone(),
        });
        // The connection writes the replay now; the fan-out only comes with its next batch.
        member.wake.notify_one();
        let threads = fan_out_threads();
        loop {
            let (key, lane) = self.pick(watching.name(), threads.len().max(1));
            match lane {
                Some(lane) if lane.stream_id == watching.stream_id() => {
                    match lane.admit(&member, merges, shares, batches) {
                        Ok(()) => break,
                        // That fan-out just stopped for want of viewers: start another.
                        Err(returned) => batches = returned,
                    }
                }
                // A newer stream of that name exists, so ours ended: the replay is all.
                Some(lane) if lane.stream_id > watching.stream_id() => {
                    member.end();
                    break;
                }
                _ => {
                    let mut lanes = self.lock();
                    let current = lanes.get(&key);
                    if current.is_some_and(|lane| lane.stream_id >= watching.stream_id()) {
                        continue; // another viewer started it meanwhile
                    }
                    // A new fan-out starts with this viewer, from the batch after its
                    // replay: nothing to catch up.
                    let lane = Arc::new(Lane {
                        stream_id: watching.stream_id(),
                        state: Mutex::new(LaneState {
                            last_taken: batches.seq(),
                            viewers: 1,
                            joining: vec![Seat::new(&member, merges, shares, 0, batches.seq() + 1)],
                            next_turn: 1,
                            closed: false,
                        }),
                    });
                    lanes.insert(key.clone(), lane.clone());
                    let runtime = threads.get(key.1).cloned();
                    let task = fan_out(self.clone(), key, lane, batches, metrics.clone());
                    // No thread could be started: run on the caller's runtime.
                    runtime
                        .unwrap_or_else(tokio::runtime::Handle::current)
                        .spawn(task);
                    break;
                }
            }
        }
        Membership {
            member,
            _watching: watching,
        }
    }

    /// The lane a new viewer of `name` goes to (`None`: start one there), out of one per
    /// fan-out thread.
    fn pick(&self, name: &str, threads: usize) -> (LaneKey, Option<Arc<Lane>>) {
        let lanes = self.lock();
        let mut fewest: Option<(usize, &Arc<Lane>, usize)> = None;
        let mut free = None;
        for thread in 0..threads {
            match lanes.get(&(name.to_owned(), thread)) {
                Some(lane) => {
                    let viewers = lane.lock().viewers;
                    if fewest.is_none_or(|(_, _, least)| viewers < least) {
                        fewest = Some((thread, lane, viewers));
                    }
                }
                None => {
                    free.get_or_insert(thread);
                }
            }
        }
        let (thread, lane) = match (fewest, free) {
            (Some((thread, lane, viewers)), _) if viewers < SPREAD_AT => (thread, Some(lane)),
            (_, Some(thread)) => (thread, None),
            (Some((thread, lane, _)), None) => (thread, Some(lane)),
            (None, None) => (0, None),
        };
        ((name.to_owned(), thread), lane.cloned())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<LaneKey, Arc<Lane>>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn lane_count(&self) -> usize {
        self.lock().len()
    }

    /// Stop `lane` (with `only_if_idle`, unless a viewer is joining): returns the viewers
    /// that were joining, `None` if it did not stop.
    fn close(&self, key: &LaneKey, lane: &Arc<Lane>, only_if_idle: bool) -> Option<Vec<Seat>> {
        let mut lanes = self.lock();
        let mut state = lane.lock();
        if only_if_idle && !state.joining.is_empty() {
            return None;
        }
        state.closed = true;
        if lanes
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, lane))
        {
            lanes.remove(key);
        }
        Some(std::mem::take(&mut state.joining))
    }
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add a viewer whose replay ends where `batches` starts; gives `batches` back if the
    /// lane stopped.
    fn admit(
        &self,
        member: &Arc<Member>,
        merges: bool,
        shares: Option<Shared>,
        mut batches: BatchStream,
    ) -> Result<(), BatchStream> {
        let mut lane = self.lock();
        if lane.closed {
            return Err(batches);
        }
        let mut viewer = member.lock();
        // The fan-out may have gone past the viewer's replay (its connection wrote a
        // response in between): catch up from the viewer's own place in the ring.
        while batches.seq() < lane.last_taken {
            let dropped = match batches.try_next() {
                Some(BatchEvent::Batch { frames, .. }) => {
                    viewer.outbox.catch_up(&frames);
                    0
                }
                Some(BatchEvent::Lagged { .. }) => viewer.outbox.skip(),
                // The fan-out ends every viewer when it sees the end.
                Some(BatchEvent::End) | None => break,
            };
            Metrics::add(&member.metrics.frames_skipped_total, dropped);
        }
        drop(viewer);
        let next = batches.seq().max(lane.last_taken) + 1;
        let seat = Seat::new(member, merges, shares, lane.next_turn, next);
        lane.next_turn += 1;
        lane.joining.push(seat);
        lane.viewers += 1;
        Ok(())
    }
}

/// Where fan-outs run: threads of their own, one per core, apart from the runtime that
/// drives connections. Writing a batch to a thousand viewers takes milliseconds, which
/// would hold up every connection task queued behind it on a worker (players starting,
/// publishers), and yielding in between would let a busy runtime starve the fan-out
/// instead. The OS shares the cores between the two fairly.
fn fan_out_threads() -> &'static [tokio::runtime::Handle] {
    static THREADS: OnceLock<Vec<tokio::runtime::Handle>> = OnceLock::new();
    THREADS.get_or_init(|| {
        let count = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..count)
            .filter_map(|i| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time() // for the merge window
                    .build()
                    .ok()?;
                let handle = runtime.handle().clone();
                std::thread::Builder::new()
                    .name(format!("fan-out-{i}"))
                    .spawn(move || runtime.block_on(std::future::pending::<()>()))
                    .ok()?;
                Some(handle)
            })
            .collect()
    })
}

/// A stream's fan-out task: runs until the stream ends or nobody watches.
async fn fan_out(
    lanes: Arc<Lanes>,
    key: LaneKey,
    lane: Arc<Lane>,
    mut batches: BatchStream,
    metrics: Arc<Metrics>,
) {
    let window = lanes.merge_window;
    let mut seats: Vec<Seat> = Vec::new();
    // The batches taken that some viewer has not been given yet, oldest first.
    let mut taken: VecDeque<Taken> = VecDeque::new();
    let mut turns = Turns::new(window);
    let mut tapes = Tapes::default();
    // The end of the merge window of the batch held longest, while one is held.
    let mut flush_at: Option<tokio::time::Instant> = None;
    loop {
        let event = match flush_at {
            Some(deadline) => match tokio::time::timeout_at(deadline, batches.next()).await {
                Ok(event) => event,
                Err(_) => {
                    let now = Instant::now();
                    let mut pass = Pass::default();
                    pass.serve_all(&mut seats, &taken, &tapes, |_, oldest| {
                        now.duration_since(oldest.at) >= window
                    });
                    flush_at = pass.finish(&mut taken, &mut tapes, window, &metrics);
                    continue;
                }
            },
            None => batches.next().await,
        };
        let (seq, frames) = match event {
            BatchEvent::Batch { seq, frames } => (seq, Some(frames)),
            BatchEvent::Lagged { seq } => (seq, None),
            BatchEvent::End => break,
        };
        let seated = seats.len();
        {
            let mut state = lane.lock();
            state.last_taken = seq;
            seats.append(&mut state.joining);
        }
        if seats.len() >= lanes.tape_at {
            // Reaching the threshold, every viewer's encoding counts; past it, the new ones'.
            let from = if seated >= lanes.tape_at { seated } else { 0 };
            tapes.open_for(&seats[from..]);
        }
        // A lost batch is everybody's turn: each viewer skips to a keyframe at once.
        let lost = frames.is_none();
        let per_write = frames.as_ref().map_or(1, |frames| turns.next(frames));
        taken.push_back(Taken {
            seq,
            spans: tapes.record(frames.as_ref()),
            frames,
            at: Instant::now(),
        });
        let mut pass = Pass::default();
        let before = seats.len();
        pass.serve_all(&mut seats, &taken, &tapes, |seat, _| {
            lost || !seat.merges || (seq + seat.turn).is_multiple_of(per_write)
        });
        flush_at = pass.finish(&mut taken, &mut tapes, window, &metrics);
        if seats.len() < before {
            lane.lock().viewers -= before - seats.len();
        }
        if seats.is_empty() && lanes.close(&key, &lane, true).is_some() {
            return;
        }
    }
    let joining = lanes.close(&key, &lane, false).unwrap_or_default();
    let mut pass = Pass::default();
    pass.serve_all(&mut seats, &taken, &tapes, |_, _| true);
    pass.finish(&mut taken, &mut tapes, window, &metrics);
    for seat in seats.iter().chain(&joining) {
        seat.member.end();
    }
}

/// A batch a fan-out took, kept until each of its viewers has been given it.
struct Taken {
    seq: u64,
    /// `None`: the fan-out lost it.
    frames: Option<Batch>,
    /// Where its frames are on each tape ([`Shared::index`]), if on that tape.
    spans: [Option<Range<u64>>; 3],
    /// When the fan-out took it.
    at: Instant,
}

/// One pass of a fan-out over its viewers: the bytes it wrote, when the oldest batch a
/// viewer still holds was taken, and the oldest batch any viewer still needs.
#[derive(Default)]
struct Pass {
    written: u64,
    /// Of which sent from a tape.
    written_from_tape: u64,
    oldest_hold: Option<Instant>,
    keep_from: Option<u64>,
}

impl Pass {
    /// Serve every seat (see [`Pass::serve`]), dropping those whose viewer is gone.
    fn serve_all(
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
                self.oldest_hold = Some(self.oldest_hold.map_or(oldest.at, |t| t.min(oldest.at)));
            }
        }
        self.keep_from = Some(self.keep_from.map_or(seat.next, |k| k.min(seat.next)));
        alive
    }

    /// Count the bytes written and forget the batches every viewer has had; returns
    /// when the window of the oldest held batch ends.
    fn finish(
        self,
        taken: &mut VecDeque<Taken>,
        tapes: &mut Tapes,
        window: Duration,
        metrics: &Metrics,
    ) -> Option<tokio::time::Instant> {
        Metrics::add(&metrics.bytes_out_total, self.written);
        Metrics::add(&metrics.bytes_out_zero_copy_total, self.written_from_tape);
        let keep_from = self.keep_from.unwrap_or(u64::MAX);
        while taken.front().is_some_and(|batch| batch.seq < keep_from) {
            taken.pop_front();
        }
        tapes.release(taken);
        self.oldest_hold.map(|held| (held + window).into())
    }
}

/// How many batches a viewer's write may cover under a merge window: one more for each
/// batch interval that fits in the window. Viewer `turn` writes at once the batches whose
/// `(seq + turn)` is a multiple of that, and holds the others, so viewers with
/// consecutive turns write on different batches.
struct Turns {
    window: Duration,
    /// The stream time of the last batch, in milliseconds.
    last: Option<u64>,
    /// The stream time between batches, smoothed, in milliseconds.
    interval: f64,
}

impl Turns {
    /// A write covers at most this many batches: a window that long is no latency
    /// trade-off any more.
    const MAX: u64 = 16;

    fn new(window: Duration) -> Self {
        Turns {
            window,
            last: None,
            interval: 0.0,
        }
    }

    /// How many batches one write covers, now that `frames` came.
    fn next(&mut self, frames: &Batch) -> u64 {
        let Some(timestamp) = frames.last().map(|frame| frame.timestamp) else {
            return 1;
        };
        if let Some(last) = self.last.replace(timestamp) {
            let gap = timestamp.saturating_sub(last) as f64;
            // A jump in stream time (a publisher's restart) says nothing of its rate.
            if gap > 0.0 && gap < 1000.0 {
                self.interval = if self.interval == 0.0 {
                    gap
                } else {
                    self.interval * 0.875 + gap * 0.125
                };
            }
        }
        if self.interval < 1.0 {
            return 1;
        }
        let window = self.window.as_secs_f64() * 1000.0;
        ((window / self.interval) as u64 + 1).clamp(1, Self::MAX)
    }
}

impl Member {
    fn lock(&self) -> MutexGuard<'_, MemberState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Give the viewer `batches` and write them, unless its socket is full. False when
    /// the viewer is gone.
    fn deliver<'a>(
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

    fn end(&self) {
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
    member: Arc<Member>,
    _watching: Watching,
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
fn write_direct(socket: BorrowedFd, slices: &[IoSlice]) -> io::Result<usize> {
    match socket2::SockRef::from(&socket).send_vectored(slices) {
        Ok(0) if slices.iter().any(|s| !s.is_empty()) => Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

/// Where `batches` are on a tape, if they all are (they are consecutive there).
fn span<'a>(mut batches: impl Iterator<Item = &'a Taken>, index: usize) -> Option<Range<u64>> {
    let first = batches.next()?.spans[index].clone()?;
    let mut end = first.end;
    for batch in batches {
        end = batch.spans[index].as_ref()?.end;
    }
    Some(first.start..end)
}

/// A lane starts putting its batches on tapes once it has this many viewers. A tape holds
/// up to 2 MiB more than the viewers need (see [`tape`]); below this, copying into
/// each socket costs little and takes no more memory.
const TAPE_AT: usize = 16;

/// A fan-out's tapes, one per shared encoding its viewers use ([`Shared::index`]). A tape
/// that cannot be made or written is dropped: its viewers are written to as before.
#[derive(Default)]
struct Tapes {
    tapes: [Option<Tape>; 3],
    /// A tape could not be made or written: make no more. (A new tape in the place of one
    /// dropped would also put batches at offsets that the batches taken before mean on
    /// the old one.)
    failed: bool,
}

impl Tapes {
    /// Make the tapes that the encodings of `seats` need.
    fn open_for(&mut self, seats: &[Seat]) {
        for shares in seats.iter().filter_map(|seat| seat.shares) {
            let slot = &mut self.tapes[shares.index()];
            if slot.is_none() && !self.failed {
                match Tape::new() {
                    Ok(tape) => *slot = Some(tape),
                    Err(e) => {
                        tracing::warn!("fan-out without zero-copy sends: {e}");
                        self.failed = true;
                    }
                }
            }
        }
    }

    /// Put `frames` on every tape; returns where they went.
    fn record(&mut self, frames: Option<&Batch>) -> [Option<Range<u64>>; 3] {
        let mut spans = [None, None, None];
        let Some(frames) = frames else {
            return spans;
        };
        for (shares, slot) in Shared::ALL.into_iter().zip(&mut self.tapes) {
            let Some(tape) = slot else { continue };
            match tape.append(frames.iter().map(|frame| shares.bytes(frame))) {
                Ok(span) => spans[shares.index()] = Some(span),
                Err(e) => {
                    tracing::warn!("fan-out stops zero-copy sends: {e}");
                    *slot = None;
                    self.failed = true;
                }
            }
        }
        spans
    }

    fn get(&self, shares: Shared) -> Option<&Tape> {
        self.tapes[shares.index()].as_ref()
    }

    /// Give back what no viewer needs: everything before the batches still `taken`.
    fn release(&mut self, taken: &VecDeque<Taken>) {
        for (index, slot) in self.tapes.iter_mut().enumerate() {
            let Some(tape) = slot else { continue };
            let needed = taken
                .iter()
                .find_map(|batch| Some(batch.spans[index].as_ref()?.start));
            if let Err(e) = tape.release_before(needed) {
                tracing::warn!("fan-out stops zero-copy sends: {e}");
                *slot = None;
                self.failed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests;
