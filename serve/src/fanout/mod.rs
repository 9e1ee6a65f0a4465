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
//! picture may wait up to the window for the next one to share its write, with viewers
//! taking turns so each batch is written to only part of the audience ([`schedule`] is that
//! plan, as plain data). A held batch stays with the fan-out, not in the viewer's outbox,
//! so a message the connection sends meanwhile (see [`Membership::send`]) may go out ahead
//! of it.
//!
//! Files: this one keeps the lanes (a stream's fan-outs, one per thread) and runs them;
//! [`schedule`] decides who is written when; `pass` is one pass over the viewers and the
//! batches kept for them; `member` a viewer as the fan-out and its connection share it;
//! `tapes` and `tape` the zero-copy sends.

mod member;
mod pass;
mod schedule;
#[cfg(target_os = "linux")]
mod tape;
#[cfg(not(target_os = "linux"))]
#[path = "tape_unsupported.rs"]
mod tape;
mod tapes;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use media::hub::{BatchEvent, BatchStream, Join};
use media::outbox::{Format, Outbox, Shared};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use self::member::{Member, MemberState, Status};
pub use self::member::{Membership, Pump, SlowViewerGuard, Totals};
use self::pass::{Pass, Seat, Taken};
use self::schedule::{Due, Schedule};
use self::tapes::{Tapes, TAPE_AT};
use crate::metrics::Metrics;

/// A viewer whose socket accepts nothing for this long is gone.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

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

impl EgressError {
    /// The viewer stalled (took nothing, or fell behind too often), as opposed to a
    /// connection that broke.
    pub fn is_stall(&self) -> bool {
        matches!(self, EgressError::TooSlow(_) | EgressError::WriteTimeout(_))
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

/// Who a member of a fan-out is, which says how long its writes may wait for later
/// batches to share them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// A player (or an edge pulling the stream, which never waits): the node's merge
    /// window.
    Player,
    /// A forward to another server ([`FORWARD_WINDOW`]).
    Forward,
}

/// The merge window of forwards. Their destinations are servers that buffer seconds
/// (YouTube, Twitch, other origins), so a longer wait costs nobody anything, and a write
/// per 200 ms instead of per two pictures makes a forward cheaper than a viewer.
pub const FORWARD_WINDOW: Duration = Duration::from_millis(200);

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
    /// The turn of the next viewer admitted: consecutive, which [`Schedule`] spreads over
    /// batches.
    next_turn: u64,
    /// The fan-out stopped: admit nobody.
    closed: bool,
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
        pace: Pace,
        metrics: &Arc<Metrics>,
    ) -> Membership {
        let Join {
            replay,
            waiting_for_key,
            mut batches,
            backlog,
            watching,
        } = join;
        let window = match (pace, format) {
            // An edge pulling the stream: its own viewers would wait twice.
            (_, Format::Flv { marks: true, .. }) => Duration::ZERO,
            (Pace::Player, _) => self.merge_window,
            (Pace::Forward, _) => FORWARD_WINDOW,
        };
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
                totals: Totals::default(),
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
                    match lane.admit(&member, window, shares, batches) {
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
                            joining: vec![Seat::new(&member, window, shares, 0, batches.seq() + 1)],
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
        window: Duration,
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
        let seat = Seat::new(member, window, shares, lane.next_turn, next);
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
    let mut schedule = Schedule::default();
    let mut seats: Vec<Seat> = Vec::new();
    // The batches taken that some viewer has not been given yet, oldest first.
    let mut taken: VecDeque<Taken> = VecDeque::new();
    let mut tapes = Tapes::default();
    // When the first window of a viewer holding batches ends, while one holds some.
    let mut wake_at: Option<Instant> = None;
    loop {
        let event = match wake_at {
            Some(wake) => match tokio::time::timeout_at(wake.into(), batches.next()).await {
                Ok(event) => event,
                Err(_) => {
                    let due = Due::WindowEnd {
                        now: Instant::now(),
                    };
                    let mut pass = Pass::default();
                    pass.serve_all(&mut seats, &taken, &tapes, |seat, oldest| {
                        Schedule::is_due(due, seat.window, seat.turn, oldest.at)
                    });
                    wake_at = pass.finish(&mut taken, &mut tapes, &metrics);
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
        let due = schedule.batch(seq, frames.as_ref());
        taken.push_back(Taken {
            seq,
            spans: tapes.record(frames.as_ref()),
            frames,
            at: Instant::now(),
        });
        let mut pass = Pass::default();
        let before = seats.len();
        pass.serve_all(&mut seats, &taken, &tapes, |seat, oldest| {
            Schedule::is_due(due, seat.window, seat.turn, oldest.at)
        });
        wake_at = pass.finish(&mut taken, &mut tapes, &metrics);
        if seats.len() < before {
            lane.lock().viewers -= before - seats.len();
        }
        if seats.is_empty() && lanes.close(&key, &lane, true).is_some() {
            return;
        }
    }
    let joining = lanes.close(&key, &lane, false).unwrap_or_default();
    let mut pass = Pass::default();
    pass.serve_all(&mut seats, &taken, &tapes, |seat, oldest| {
        Schedule::is_due(Due::All, seat.window, seat.turn, oldest.at)
    });
    pass.finish(&mut taken, &mut tapes, &metrics);
    for seat in seats.iter().chain(&joining) {
        seat.member.end();
    }
}

#[cfg(test)]
mod tests;
