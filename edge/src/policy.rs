//! When a pull does what, as plain data: the pull driver (`pull.rs`) tells [`PullPolicy`]
//! what happened and when, and does what it answers. Nothing here does I/O or reads a
//! clock: every call takes `now`, so the rules can be tested (and property-tested) without
//! sockets or sleeping.
//!
//! The rules:
//! - starting: while some viewer still waits for the stream, look the owner up again every
//!   [`START_RETRY`];
//! - live: an upstream silent for a few of its usual gaps (see [`Pace`]; at least
//!   [`MIN_STALL`], at most the upstream timeout) is lost; a stream nobody watched for the
//!   idle grace is stopped;
//! - lost: re-pull with a backoff from [`BACKOFF_FIRST`] doubling to [`BACKOFF_MAX`], for up
//!   to the upstream grace after the loss, and stop early if nobody watches;
//! - a new pull is [`Readiness`]-checked before viewers see it.

use std::time::{Duration, Instant};

use media::frame::{MediaKind, SegmentMark};

use crate::PullConfig;

/// An upstream is lost once silent for this many of its longest recent gaps...
pub const STALL_GAPS: u32 = 4;
/// ...but never sooner than this (a publisher's hiccup is not a broken link)...
pub const MIN_STALL: Duration = Duration::from_secs(1);
/// ...and the gaps it normally leaves are those of this window and the one before...
pub const PACE_WINDOW: Duration = Duration::from_secs(5);
/// ...once it has been heard from for this long (before, only the upstream timeout
/// applies: a new upstream's first second is the burst of its replay, not its pace).
pub const PACE_LEARNED_AFTER: Duration = Duration::from_secs(1);
/// While a pull starts: how often the owner is looked up again.
pub const START_RETRY: Duration = Duration::from_millis(200);
/// After a loss: the first wait between re-pulls, doubling up to [`BACKOFF_MAX`].
pub const BACKOFF_FIRST: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A new pull counts as ready for viewers once every track the FLV header announces has
/// sent something and the origin's replay has all come (see [`REPLAY_DONE_GAP`]), or this
/// long after its first tag.
pub const READY_AFTER: Duration = Duration::from_millis(3000);
/// The origin's replay (its last few segments) comes in one burst, reads back to back;
/// the live stream after it comes a frame at a time. A pause this long between reads says
/// the burst is over.
pub const REPLAY_DONE_GAP: Duration = Duration::from_millis(30);
/// With the origin's segment marks dated (its wall clock), the replay has all come once a
/// frame arrives within this long of when the origin took it.
pub const LIVE_WITHIN_MS: i64 = 1000;
/// Bytes held back while a new pull waits for its tracks.
pub const MAX_PENDING: usize = 32 * 1024 * 1024;

/// What a live pull does after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Continue,
    /// The upstream has been silent too long: it is lost.
    Stalled,
    /// Nobody has watched for the idle grace: stop the pull.
    Idle,
}

/// What a lost pull does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repull {
    /// Look the owner up and connect now.
    Attempt,
    /// Nobody has watched for the idle grace: stop.
    Idle,
    /// The upstream grace is over: end the stream.
    GiveUp,
}

/// How an upstream normally paces what it sends: the longest gap between arrivals in the
/// current window and the one before it. A live stream sends every frame (tens of
/// milliseconds); its silence is noticed after a few of its own gaps, not after a fixed
/// time chosen for the slowest stream there could be.
#[derive(Debug, Clone)]
pub struct Pace {
    connected: Instant,
    last_arrival: Instant,
    window_start: Instant,
    current: Duration,
    previous: Duration,
}

impl Pace {
    fn new(now: Instant) -> Pace {
        Pace {
            connected: now,
            last_arrival: now,
            window_start: now,
            current: Duration::ZERO,
            previous: Duration::ZERO,
        }
    }

    fn gap(&mut self, gap: Duration, now: Instant) {
        if now.saturating_duration_since(self.window_start) >= PACE_WINDOW {
            self.previous = self.current;
            self.current = Duration::ZERO;
            self.window_start = now;
        }
        self.current = self.current.max(gap);
        self.last_arrival = now;
    }

    /// The longest gap the upstream normally leaves (`None` until it has been heard from
    /// for [`PACE_LEARNED_AFTER`]).
    pub fn normal_gap(&self) -> Option<Duration> {
        let heard_for = self.last_arrival.saturating_duration_since(self.connected);
        (heard_for >= PACE_LEARNED_AFTER).then(|| self.previous.max(self.current))
    }
}

/// One pull's timers.
#[derive(Debug, Clone)]
pub struct PullPolicy {
    upstream_grace: Duration,
    idle_grace: Duration,
    /// The longest silence allowed, whatever the pace.
    upstream_timeout: Duration,
    pace: Pace,
    /// When the upstream last sent something (or connected).
    last_data: Instant,
    /// Since when nobody watches.
    unwatched_since: Option<Instant>,
    /// Since when the upstream is lost, and the next wait between re-pulls.
    lost: Option<(Instant, Duration)>,
}

impl PullPolicy {
    pub fn new(config: &PullConfig, now: Instant) -> PullPolicy {
        PullPolicy {
            upstream_grace: config.upstream_grace,
            idle_grace: config.idle_grace,
            upstream_timeout: config.upstream_timeout,
            pace: Pace::new(now),
            last_data: now,
            unwatched_since: None,
            lost: None,
        }
    }

    /// A first connect failed: how long until the next try, or `None` (give up) when no
    /// viewer waits beyond `waiting_until` any more.
    pub fn start_retry(&self, now: Instant, waiting_until: Instant) -> Option<Duration> {
        (now < waiting_until).then_some(START_RETRY)
    }

    /// An upstream answered.
    pub fn connected(&mut self, now: Instant) {
        self.last_data = now;
        self.lost = None;
        self.pace = Pace::new(now);
    }

    /// The upstream sent something.
    pub fn received(&mut self, now: Instant) {
        self.pace
            .gap(now.saturating_duration_since(self.last_data), now);
        self.last_data = now;
    }

    /// How long the upstream may be silent before it counts as lost: a few of its usual
    /// gaps, within [`MIN_STALL`] and the upstream timeout (which is all it gets until its
    /// pace is known).
    pub fn stall_after(&self) -> Duration {
        match self.pace.normal_gap() {
            Some(gap) => (gap * STALL_GAPS).clamp(MIN_STALL, self.upstream_timeout.max(MIN_STALL)),
            None => self.upstream_timeout,
        }
    }

    /// The upstream's pace (for saying why it was lost).
    pub fn pace(&self) -> &Pace {
        &self.pace
    }

    /// The periodic look at a live pull, with `viewers` watching now.
    pub fn check(&mut self, now: Instant, viewers: usize) -> Check {
        if now.saturating_duration_since(self.last_data) >= self.stall_after() {
            return Check::Stalled;
        }
        if self.idle(now, viewers) {
            return Check::Idle;
        }
        Check::Continue
    }

    /// The upstream is silent, but for a reason that is not a broken link (its publisher
    /// left and the origin holds the stream for the publisher's return): allow it another
    /// stall time from `now`.
    pub fn keep_waiting(&mut self, now: Instant) {
        self.last_data = now;
    }

    /// The upstream broke (an error, a stall, or an end without the stream's end).
    pub fn lost(&mut self, now: Instant) {
        self.lost = Some((now, BACKOFF_FIRST));
    }

    /// Before each re-pull attempt, with `viewers` watching now.
    pub fn repull(&mut self, now: Instant, viewers: usize) -> Repull {
        if self.idle(now, viewers) {
            return Repull::Idle;
        }
        if self.grace_left(now).is_zero() {
            return Repull::GiveUp;
        }
        Repull::Attempt
    }

    /// A re-pull attempt failed: how long to wait before the next (never past the grace).
    pub fn repull_failed(&mut self, now: Instant) -> Duration {
        let left = self.grace_left(now);
        let Some((_, backoff)) = &mut self.lost else {
            return Duration::ZERO;
        };
        let wait = (*backoff).min(left);
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        wait
    }

    /// Someone watches again (a viewer attached while the pull was deciding to stop).
    pub fn watched(&mut self) {
        self.unwatched_since = None;
    }

    /// How much of the upstream grace is left after a loss.
    fn grace_left(&self, now: Instant) -> Duration {
        match self.lost {
            Some((since, _)) => self
                .upstream_grace
                .saturating_sub(now.saturating_duration_since(since)),
            None => self.upstream_grace,
        }
    }

    /// Whether nobody has watched for the idle grace.
    fn idle(&mut self, now: Instant, viewers: usize) -> bool {
        if viewers > 0 {
            self.unwatched_since = None;
            return false;
        }
        let since = *self.unwatched_since.get_or_insert(now);
        now.saturating_duration_since(since) >= self.idle_grace
    }
}

/// Whether a new pull is ready to publish locally: viewers read the FLV header's track
/// flags once, so the first ones should get an FLV header that announces every track, and
/// its sequence headers. Until then the pull holds tags back.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    first_tag: Option<Instant>,
    /// When the upstream last gave something, and whether it paused since the first tag.
    last_read: Option<Instant>,
    replay_done: bool,
    /// The latest dated segment mark: the origin's wall clock (Unix ms) at its FLV time.
    dated_mark: Option<(u64, u32)>,
    /// A frame came within [`LIVE_WITHIN_MS`] of when the origin took it.
    live: bool,
    seen_audio: bool,
    seen_video: bool,
    pending_bytes: usize,
}

impl Readiness {
    /// A tag of `kind` and `bytes` bytes arrived and was held back.
    pub fn held(&mut self, kind: MediaKind, bytes: usize, now: Instant) {
        self.first_tag.get_or_insert(now);
        self.seen_audio |= kind == MediaKind::Audio;
        self.seen_video |= kind == MediaKind::Video;
        self.pending_bytes += bytes;
    }

    /// A tag held back: a dated segment mark says when its frame was taken at the origin,
    /// which the frames after it are placed from; one taken just now means the replay is
    /// over. `unix_now_ms` is this node's wall clock.
    pub fn tag(&mut self, kind: MediaKind, timestamp: u32, payload: &[u8], unix_now_ms: u64) {
        match kind {
            MediaKind::Metadata => {
                if let Some(mark) = SegmentMark::from_script(payload) {
                    if mark.program_date_ms > 0 {
                        self.dated_mark = Some((mark.program_date_ms, timestamp));
                    }
                }
            }
            _ => {
                if let Some((date, at)) = self.dated_mark {
                    let taken = date as i64 + i64::from(timestamp.wrapping_sub(at) as i32);
                    self.live |= unix_now_ms as i64 - taken <= LIVE_WITHIN_MS;
                }
            }
        }
    }

    /// The upstream gave something (a read, any number of tags).
    pub fn read(&mut self, now: Instant) {
        if let (Some(last), Some(_)) = (self.last_read, self.first_tag) {
            self.replay_done |= now.saturating_duration_since(last) >= REPLAY_DONE_GAP;
        }
        self.last_read = Some(now);
    }

    /// Ready when every track the upstream's FLV header announces (`tracks`, once the
    /// header is read) has sent something and the origin's replay has all come (so that a
    /// first HLS playlist lists the replayed segments and the parts up to now), or
    /// [`READY_AFTER`] after the first tag, or when holding more would take too much memory.
    pub fn is_ready(&self, tracks: Option<(bool, bool)>, now: Instant) -> bool {
        let tracks_seen = tracks.is_some_and(|(audio, video)| {
            (!audio || self.seen_audio) && (!video || self.seen_video)
        });
        let waited = self
            .first_tag
            .is_some_and(|t| now.saturating_duration_since(t) >= READY_AFTER);
        // Dated marks say exactly when the replay is over; without them, a pause does.
        let replay_over = match self.dated_mark {
            Some(_) => self.live,
            None => self.replay_done,
        };
        (tracks_seen && replay_over) || waited || self.pending_bytes > MAX_PENDING
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> PullConfig {
        PullConfig {
            play_wait: Duration::from_secs(3),
            upstream_grace: Duration::from_secs(15),
            idle_grace: Duration::from_secs(10),
            upstream_timeout: Duration::from_secs(3),
            play_secret: None,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starting_retries_while_a_viewer_waits() {
        let t0 = Instant::now();
        let policy = PullPolicy::new(&config(), t0);
        assert_eq!(policy.start_retry(t0, t0 + ms(500)), Some(START_RETRY));
        assert_eq!(policy.start_retry(t0 + ms(500), t0 + ms(500)), None);
    }

    #[test]
    fn a_silent_upstream_is_lost_after_a_few_of_its_usual_gaps() {
        let t0 = Instant::now();
        let mut policy = PullPolicy::new(&config(), t0);
        policy.connected(t0);
        // Until its pace is known: the upstream timeout.
        policy.received(t0 + ms(100));
        assert_eq!(policy.stall_after(), ms(3000));
        assert_eq!(policy.check(t0 + ms(3099), 1), Check::Continue);
        assert_eq!(policy.check(t0 + ms(3100), 1), Check::Stalled);
        // A stream sending every 40 ms with a 300 ms pause now and then: four pauses.
        let mut now = t0 + ms(100);
        while now < t0 + ms(11_000) {
            now += if (now - t0).as_millis() % 2000 < 40 {
                ms(300)
            } else {
                ms(40)
            };
            policy.received(now);
        }
        assert_eq!(policy.stall_after(), ms(1200));
        assert_eq!(policy.check(now + ms(1199), 1), Check::Continue);
        assert_eq!(policy.check(now + ms(1200), 1), Check::Stalled);
        // A fast stream is given at least a second; a slow one at most the timeout.
        let steady = |gap: u64| {
            let mut policy = PullPolicy::new(&config(), t0);
            policy.connected(t0);
            let mut now = t0;
            while now < t0 + ms(11_000) {
                now += ms(gap);
                policy.received(now);
            }
            policy.stall_after()
        };
        assert_eq!(steady(20), MIN_STALL);
        assert_eq!(steady(2000), ms(3000));
        // A new upstream's replay burst, then silence: its pace is not known, so it gets
        // the whole timeout.
        let mut policy = PullPolicy::new(&config(), t0);
        policy.connected(t0);
        for n in 1..=100 {
            policy.received(t0 + Duration::from_micros(n * 100));
        }
        assert_eq!(policy.stall_after(), ms(3000));
    }

    #[test]
    fn a_stream_is_idle_only_after_the_grace_without_viewers() {
        let t0 = Instant::now();
        let mut policy = PullPolicy::new(&config(), t0);
        let mut now = t0;
        let mut check = |policy: &mut PullPolicy, step: u64, viewers| {
            now += ms(step);
            policy.received(now);
            policy.check(now, viewers)
        };
        assert_eq!(check(&mut policy, 0, 0), Check::Continue); // unwatched from now
        assert_eq!(check(&mut policy, 9_000, 0), Check::Continue);
        assert_eq!(check(&mut policy, 500, 1), Check::Continue); // a viewer came: start over
        assert_eq!(check(&mut policy, 500, 0), Check::Continue);
        assert_eq!(check(&mut policy, 9_999, 0), Check::Continue);
        assert_eq!(check(&mut policy, 1, 0), Check::Idle);
        policy.watched();
        assert_eq!(check(&mut policy, 1, 0), Check::Continue);
    }

    #[test]
    fn repulls_back_off_and_stop_at_the_grace() {
        let t0 = Instant::now();
        let mut policy = PullPolicy::new(&config(), t0);
        policy.lost(t0);
        let mut now = t0;
        let mut waits = Vec::new();
        while policy.repull(now, 1) == Repull::Attempt {
            let wait = policy.repull_failed(now);
            waits.push(wait);
            now += wait;
        }
        assert_eq!(policy.repull(now, 1), Repull::GiveUp);
        assert_eq!(
            &waits[..5],
            &[ms(200), ms(400), ms(800), ms(1600), ms(2000)]
        );
        assert_eq!(now - t0, config().upstream_grace);
        // A new upstream resets the backoff for the next loss.
        policy.connected(now);
        policy.lost(now);
        assert_eq!(policy.repull_failed(now), BACKOFF_FIRST);
    }

    #[test]
    fn an_unwatched_lost_pull_stops_before_the_grace() {
        let t0 = Instant::now();
        let mut policy = PullPolicy::new(&config(), t0);
        policy.lost(t0);
        assert_eq!(policy.repull(t0, 0), Repull::Attempt);
        assert_eq!(policy.repull(t0 + config().idle_grace, 0), Repull::Idle);
    }

    #[test]
    fn readiness_waits_for_the_announced_tracks_and_the_end_of_the_replay() {
        let t0 = Instant::now();
        let mut ready = Readiness::default();
        assert!(!ready.is_ready(None, t0));
        ready.read(t0);
        ready.held(MediaKind::Video, 100, t0);
        ready.held(MediaKind::Audio, 10, t0);
        // The replay still comes back to back: not yet.
        ready.read(t0 + ms(1));
        assert!(!ready.is_ready(Some((true, true)), t0 + ms(1)));
        // A pause: the live stream, a frame at a time.
        ready.read(t0 + ms(1) + REPLAY_DONE_GAP);
        assert!(ready.is_ready(Some((true, true)), t0 + ms(40)));
        assert!(ready.is_ready(Some((false, true)), t0 + ms(40)));
        // A track announced and not seen: wait for it, at most READY_AFTER.
        let mut video_only = Readiness::default();
        video_only.read(t0);
        video_only.held(MediaKind::Video, 100, t0);
        video_only.read(t0 + ms(100));
        assert!(!video_only.is_ready(Some((true, true)), t0 + READY_AFTER - ms(1)));
        assert!(video_only.is_ready(Some((true, true)), t0 + READY_AFTER));
        let mut huge = Readiness::default();
        huge.held(MediaKind::Video, MAX_PENDING + 1, t0);
        assert!(huge.is_ready(None, t0));
    }

    #[test]
    fn with_dated_marks_the_replay_is_over_at_a_frame_taken_just_now() {
        let t0 = Instant::now();
        let now_ms = 1_000_000;
        let mark = SegmentMark {
            sequence: 7,
            discontinuity: 0,
            timestamp: 10_000,
            target_duration: 2,
            program_date_ms: now_ms - 6_000,
        };
        let mut ready = Readiness::default();
        ready.read(t0);
        ready.tag(MediaKind::Metadata, 10_000, &mark.to_script(), now_ms);
        ready.held(MediaKind::Video, 100, t0);
        ready.held(MediaKind::Audio, 10, t0);
        // Frames from six seconds ago, even after a pause in the burst: not yet.
        ready.tag(MediaKind::Video, 10_000, &[], now_ms);
        ready.read(t0 + REPLAY_DONE_GAP * 2);
        assert!(!ready.is_ready(Some((true, true)), t0 + ms(100)));
        // A frame taken half a second ago: live.
        ready.tag(MediaKind::Video, 15_500, &[], now_ms);
        assert!(ready.is_ready(Some((true, true)), t0 + ms(100)));
    }

    proptest! {
        /// Whatever the grace and however long each attempt takes, re-pulling never waits
        /// past the grace, never waits longer than the backoff cap, and always ends.
        #[test]
        fn repulls_end_within_the_grace(
            grace_ms in 0u64..60_000,
            attempts in proptest::collection::vec(0u64..3_000, 1..64),
        ) {
            let config = PullConfig { upstream_grace: ms(grace_ms), ..config() };
            let t0 = Instant::now();
            let mut policy = PullPolicy::new(&config, t0);
            policy.lost(t0);
            let mut now = t0;
            for attempt in attempts.iter().cycle().take(10_000) {
                match policy.repull(now, 1) {
                    Repull::Attempt => {
                        now += ms(*attempt);
                        let wait = policy.repull_failed(now);
                        prop_assert!(wait <= BACKOFF_MAX);
                        prop_assert!(now + wait <= (t0 + config.upstream_grace).max(now));
                        now += wait;
                    }
                    Repull::GiveUp => {
                        prop_assert!(now - t0 >= config.upstream_grace);
                        return Ok(());
                    }
                    Repull::Idle => prop_assert!(false, "watched all along"),
                }
            }
            prop_assert!(false, "never gave up");
        }

        /// A pull with viewers throughout is never idle; one without viewers is idle exactly
        /// once the idle grace has passed since the last viewer left.
        #[test]
        fn idle_means_unwatched_for_the_whole_grace(
            steps in proptest::collection::vec((0u64..3_000, 0usize..3), 1..100),
        ) {
            let t0 = Instant::now();
            let mut policy = PullPolicy::new(&config(), t0);
            let mut now = t0;
            let mut unwatched_since: Option<Instant> = None;
            for (step, viewers) in steps {
                now += ms(step);
                policy.received(now);
                if viewers > 0 {
                    unwatched_since = None;
                } else {
                    unwatched_since.get_or_insert(now);
                }
                let expect_idle =
                    unwatched_since.is_some_and(|since| now - since >= config().idle_grace);
                prop_assert_eq!(policy.check(now, viewers) == Check::Idle, expect_idle);
            }
        }
    }
}
