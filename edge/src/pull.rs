//! Pull on miss: the async driver of an edge's pulls.
//!
//! One pull per stream however many viewers: pulls live in a map, and viewers that arrive
//! while a pull is starting wait on it (bounded). A pull's life (its timing rules are
//! [`PullPolicy`]'s):
//! - starting: look up the owner and connect, retrying while some viewer still waits;
//! - live: demux the upstream body into the hub;
//! - lost (error, stall, EOF without the chunked terminator): the local publisher is
//!   dropped without finishing, so viewers stay attached to the orphaned hub stream; the
//!   owner is looked up again and re-pulled with backoff for up to the upstream grace. The
//!   new upstream takes the hub stream over (a new generation: fresh sequence headers,
//!   rebased timestamps, an HLS discontinuity);
//! - ended: the origin ended the body cleanly, or the grace ran out, or nobody watched for
//!   the idle grace. The local stream ends and the pull leaves the map; the next viewer
//!   starts a new one.
//!
//! Retiring a pull and attaching a viewer both happen under the map's lock, so a viewer
//! never attaches to a stream that is being torn down for want of viewers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use media::flv::{self, FlvError, FlvReader};
use media::frame::{MediaKind, SegmentMark};
use media::hub::{Hub, Publisher, Pushed, StatsHandle};
use media::segment::MARKS_QUERY;
use registry::{OwnerChange, Registry, RegistryError};
use serve::metrics::{GaugeGuard, Metrics};
use serve::Shared;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::policy::{Check, PullPolicy, Readiness, Repull};
use crate::PullConfig;

/// Registry look-up, connect and response head, each.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a live pull checks its viewers and its upstream's silence.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Largest FLV tag accepted from an origin.
const MAX_TAG: usize = 16 * 1024 * 1024;

/// Why an upstream could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("stream is not live on any origin")]
    NotLive,
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the connection to the origin broke: {0}")]
    Http(String),
    #[error("upstream answered HTTP {0}")]
    Status(u16),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream FLV: {0}")]
    Flv(#[from] FlvError),
    #[error("the origin sent nothing for {silent:?} (it normally leaves {normal} between sends)")]
    Stalled { silent: Duration, normal: String },
    #[error("local stream taken over by another publisher")]
    Replaced,
    #[error("the stream moved to node {0}")]
    Moved(String),
    #[error("the registry still names an older owner of the stream (generation {0})")]
    Older(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Live,
    Gone,
}

impl From<reqwest::Error> for PullError {
    /// reqwest's own words ("error decoding response body") with what caused them
    /// ("connection reset by peer"), which is what an operator needs.
    fn from(e: reqwest::Error) -> Self {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        PullError::Http(text)
    }
}

/// One stream being pulled (or about to be), as the viewers waiting for it see it.
struct Pull {
    phase: watch::Sender<Phase>,
    /// A starting pull keeps trying until then; every waiting viewer pushes it on.
    start_until: Mutex<Instant>,
    /// The stream's latest owner, as the registry told it.
    owner: watch::Sender<Option<OwnerChange>>,
}

impl Pull {
    fn start_until(&self) -> Instant {
        *self.start_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_until(&self, until: Instant) {
        let mut current = self.start_until.lock().unwrap_or_else(|e| e.into_inner());
        *current = (*current).max(until);
    }
}

/// Where a pull's local stream stands.
#[derive(Default)]
struct Local {
    /// Present while an upstream feeds the hub.
    publisher: Option<Publisher>,
    /// The last publisher's session, to end the stream if it stays orphaned.
    generation: Option<u32>,
    /// Viewer count of the hub stream (kept across upstreams).
    stats: Option<StatsHandle>,
    /// The owner pulled from last: its publish session and the stream's generation then.
    /// A pull never goes back to an older generation.
    owner: Option<(String, u64)>,
}

impl Local {
    fn viewers(&self) -> usize {
        self.stats.as_ref().map_or(0, |stats| stats.get().viewers)
    }
}

/// How one upstream connection ended.
enum Upstream {
    /// The origin ended the stream (the chunked body ended normally).
    Ended,
    /// Nobody watched; the pull was retired.
    Idle,
    /// The node shuts down; the pull was retired.
    Closed,
    Lost(PullError),
}

/// The pulls of one edge node.
pub(crate) struct Pulls {
    config: PullConfig,
    registry: Arc<dyn Registry>,
    client: reqwest::Client,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    pulls: Mutex<HashMap<String, Arc<Pull>>>,
    /// Raised when the node shuts down: every pull ends its local stream and stops.
    closing: watch::Sender<bool>,
}

impl Pulls {
    pub(crate) fn new(
        config: PullConfig,
        registry: Arc<dyn Registry>,
        shared: &Shared,
    ) -> Result<Arc<Pulls>, PullError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(0)
            .build()?;
        let pulls = Arc::new(Pulls {
            config,
            registry,
            client,
            hub: shared.hub.clone(),
            metrics: shared.metrics.clone(),
            pulls: Mutex::default(),
            closing: watch::channel(false).0,
        });
        tokio::spawn(follow_owners(Arc::downgrade(&pulls)));
        Ok(pulls)
    }

    fn pulls(&self) -> MutexGuard<'_, HashMap<String, Arc<Pull>>> {
        self.pulls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shut down: every pull ends its local stream (its viewers get the end) and stops.
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }

    fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Streams being pulled right now (starting, live or re-pulling).
    pub(crate) fn active(&self) -> usize {
        self.pulls().len()
    }

    /// Attach a viewer of `key` with `attach`: to the local stream if there is one, else
    /// start (or join) its pull and wait up to [`PullConfig::play_wait`] for it. False:
    /// not live anywhere.
    pub(crate) async fn attach(
        self: &Arc<Self>,
        key: &str,
        attach: &mut (dyn FnMut() -> bool + Send),
    ) -> bool {
        let deadline = Instant::now() + self.config.play_wait;
        let mut phase = {
            let mut pulls = self.pulls();
            if attach() {
                return true;
            }
            let pull = match pulls.get(key) {
                Some(pull) => pull.clone(),
                None => {
                    let pull = Arc::new(Pull {
                        phase: watch::channel(Phase::Starting).0,
                        start_until: Mutex::new(deadline),
                        owner: watch::channel(None).0,
                    });
                    pulls.insert(key.to_owned(), pull.clone());
                    tokio::spawn(self.clone().run(key.to_owned(), pull.clone()));
                    pull
                }
            };
            pull.wait_until(deadline);
            pull.phase.subscribe()
        };
        loop {
            let now = *phase.borrow_and_update();
            match now {
                Phase::Live => break,
                Phase::Gone => return false,
                Phase::Starting => {}
            }
            match tokio::time::timeout_at(deadline.into(), phase.changed()).await {
                Ok(Ok(())) => {}
                // Out of time (or the pull vanished): whatever the hub has now.
                _ => break,
            }
        }
        let _pulls = self.pulls();
        attach()
    }

    /// One stream's pull, from the first look-up until it is retired.
    async fn run(self: Arc<Self>, key: String, pull: Arc<Pull>) {
        Metrics::add(&self.metrics.upstream_pulls_total, 1);
        let _active = GaugeGuard::new(self.metrics.clone(), |m| &m.upstreams);
        let mut local = Local::default();
        let started = Instant::now();
        let mut policy = PullPolicy::new(&self.config, started);
        // Starting: retry while some viewer still waits.
        let mut response = loop {
            match self.connect(&key, &mut local).await {
                Ok(response) => break response,
                Err(e) => {
                    debug!(stream = %key, error = %e, "upstream not available yet");
                    let closing = self.is_closing();
                    let mut retry = None;
                    let gave_up = self.retire(&key, &pull, &mut local, || {
                        retry = policy.start_retry(Instant::now(), pull.start_until());
                        !closing && retry.is_some()
                    });
                    match retry {
                        Some(wait) if !gave_up => tokio::time::sleep(wait).await,
                        _ => {
                            debug!(stream = %key, "pull abandoned: not live");
                            return;
                        }
                    }
                }
            }
        };
        info!(stream = %key, "pulling from origin");
        loop {
            if self.is_closing() {
                self.retire(&key, &pull, &mut local, || false);
                return;
            }
            policy.connected(Instant::now());
            match self
                .stream(&key, &pull, response, &mut local, &mut policy, started)
                .await
            {
                Upstream::Ended => match self.moved(&key, &local).await {
                    // The origin ended the stream because it is no longer its owner (it
                    // lost its lease while cut off): follow the stream to its new owner.
                    Some(node) => {
                        warn!(stream = %key, %node, "upstream ended, but the stream lives on another origin; following it");
                    }
                    None => {
                        info!(stream = %key, "origin ended the stream");
                        self.retire(&key, &pull, &mut local, || false);
                        return;
                    }
                },
                Upstream::Idle => {
                    info!(stream = %key, "no viewers; pull stopped");
                    return;
                }
                Upstream::Closed => {
                    info!(stream = %key, "shutting down; pulled stream ended");
                    return;
                }
                Upstream::Lost(e) => {
                    warn!(stream = %key, error = %e, "upstream lost; holding viewers and re-pulling")
                }
            }
            // Dropping without finish: the hub keeps the viewers of the orphaned stream.
            local.publisher = None;
            policy.lost(Instant::now());
            match self.repull(&key, &pull, &mut local, &mut policy).await {
                Some(next) => {
                    Metrics::add(&self.metrics.upstream_repulls_total, 1);
                    info!(stream = %key, "re-pulled after upstream loss");
                    response = next;
                }
                None => return,
            }
        }
    }

    /// After a loss: look the owner up again and connect, with backoff, until the upstream
    /// grace runs out or nobody watches any more. `None`: the pull was retired.
    async fn repull(
        &self,
        key: &str,
        pull: &Arc<Pull>,
        local: &mut Local,
        policy: &mut PullPolicy,
    ) -> Option<reqwest::Response> {
        loop {
            if self.is_closing() {
                self.retire(key, pull, local, || false);
                return None;
            }
            match policy.repull(Instant::now(), local.viewers()) {
                Repull::Attempt => {}
                Repull::Idle => {
                    if self.retire_idle(key, pull, local, policy) {
                        info!(stream = %key, "no viewers; pull stopped while re-pulling");
                        return None;
                    }
                    continue;
                }
                Repull::GiveUp => {
                    info!(stream = %key, "upstream did not come back; ending the stream");
                    self.retire(key, pull, local, || false);
                    return None;
                }
            }
            let mut owner = pull.owner.subscribe();
            owner.mark_unchanged();
            match self.connect(key, local).await {
                Ok(response) => return Some(response),
                Err(e) => debug!(stream = %key, error = %e, "re-pull failed"),
            }
            // A new owner is tried at once, without waiting out the backoff.
            let wait = policy.repull_failed(Instant::now());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = owner.changed() => {}
            }
        }
    }

    /// The owner's HTTP-FLV response for `key`, never from an owner older than the one
    /// `local` pulled from last (which it then names).
    async fn connect(&self, key: &str, local: &mut Local) -> Result<reqwest::Response, PullError> {
        let lease = self.owner(key).await?.ok_or(PullError::NotLive)?;
        if let Some((_, newest)) = &local.owner {
            if lease.generation < *newest {
                return Err(PullError::Older(lease.generation));
            }
        }
        let mut url = format!("http://{}/{key}.flv?{MARKS_QUERY}", lease.addrs.http);
        if let Some(secret) = &self.config.play_secret {
            // Only needed to open the pull: a token good for a minute.
            let expires = registry::now_ms() / 1000 + 60;
            url.push_str("&token=");
            url.push_str(&secret.sign(key, expires, None));
        }
        debug!(stream = %key, owner = %lease.node_id, %url, "connecting upstream");
        let response = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get(&url).send())
            .await
            .map_err(|_| PullError::Timeout(CONNECT_TIMEOUT))??;
        if response.status() != reqwest::StatusCode::OK {
            return Err(PullError::Status(response.status().as_u16()));
        }
        local.owner = Some((lease.session, lease.generation));
        Ok(response)
    }

    /// Who owns `key` now, as the registry says.
    async fn owner(&self, key: &str) -> Result<Option<registry::StreamLease>, PullError> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.registry.lease(key))
            .await
            .map_err(|_| PullError::Timeout(CONNECT_TIMEOUT))?
            .map_err(PullError::from)
    }

    /// Whether the stream that `local` pulled has an owner other than the one it pulled from
    /// (the clean end of an upstream is then a move, not the end of the stream).
    async fn moved(&self, key: &str, local: &Local) -> Option<String> {
        let lease = self.owner(key).await.ok()??;
        let pulled = local.owner.as_ref();
        let moved = pulled.is_none_or(|(session, generation)| {
            lease.session != *session && lease.generation >= *generation
        });
        moved.then_some(lease.node_id)
    }

    /// Demux one upstream body into the hub until it ends, breaks or nobody watches.
    async fn stream(
        &self,
        key: &str,
        pull: &Arc<Pull>,
        mut response: reqwest::Response,
        local: &mut Local,
        policy: &mut PullPolicy,
        started: Instant,
    ) -> Upstream {
        let mut reader = FlvReader::with_max_tag_size(MAX_TAG);
        let mut buf = BytesMut::new();
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ready = *pull.phase.borrow() == Phase::Live;
        let mut readiness = Readiness::default();
        let mut pending: Vec<(MediaKind, u32, Bytes)> = Vec::new();
        let mut closing = self.closing.subscribe();
        let mut owner = pull.owner.subscribe();
        owner.mark_unchanged();
        // Since when the upstream is silent with no owner registered (see the stall check).
        let mut orphaned: Option<Instant> = None;
        loop {
            let chunk = tokio::select! {
                chunk = response.chunk() => Some(chunk),
                Ok(()) = owner.changed() => {
                    let change = owner.borrow_and_update().clone();
                    let pulled = local.owner.as_ref();
                    match change {
                        Some(change) if pulled.is_none_or(|(session, generation)| {
                            change.session != *session && change.generation > *generation
                        }) => return Upstream::Lost(PullError::Moved(change.node_id)),
                        _ => continue,
                    }
                }
                _ = closing.wait_for(|c| *c) => {
                    self.retire(key, pull, local, || false);
                    return Upstream::Closed;
                }
                _ = check.tick() => {
                    match policy.check(Instant::now(), local.viewers()) {
                        Check::Continue => continue,
                        Check::Stalled => None,
                        Check::Idle => {
                            if self.retire_idle(key, pull, local, policy) {
                                return Upstream::Idle;
                            }
                            continue;
                        }
                    }
                }
            };
            // Silent past its pace: what the registry says tells a broken link from a
            // stream between publishers.
            let Some(chunk) = chunk else {
                let pulled = local.owner.as_ref().map(|(session, _)| session.as_str());
                match self.owner(key).await {
                    // No owner: its publisher left, and the origin holds the stream for its
                    // return (and ends it if it does not come back), as long as the
                    // upstream grace allows.
                    Ok(None)
                        if orphaned.get_or_insert(Instant::now()).elapsed()
                            < self.config.upstream_grace =>
                    {
                        policy.keep_waiting(Instant::now());
                        continue;
                    }
                    Ok(Some(lease)) if Some(lease.session.as_str()) != pulled => {
                        return Upstream::Lost(PullError::Moved(lease.node_id));
                    }
                    _ => {}
                }
                let normal = match policy.pace().normal_gap() {
                    Some(gap) => format!("at most {gap:?}"),
                    None => "an unknown time".to_owned(),
                };
                let silent = policy.stall_after();
                return Upstream::Lost(PullError::Stalled { silent, normal });
            };
            let chunk = match chunk {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Upstream::Ended,
                Err(e) => return Upstream::Lost(PullError::from(e)),
            };
            let now = Instant::now();
            policy.received(now);
            readiness.read(now);
            orphaned = None;
            buf.extend_from_slice(&chunk);
            loop {
                let tag = match reader.read(&mut buf) {
                    Ok(Some(tag)) => tag,
                    Ok(None) => break,
                    Err(e) => return Upstream::Lost(e.into()),
                };
                let kind = match tag.tag_type {
                    flv::TAG_AUDIO => MediaKind::Audio,
                    flv::TAG_VIDEO => MediaKind::Video,
                    flv::TAG_SCRIPT => MediaKind::Metadata,
                    _ => continue,
                };
                if ready {
                    if let Err(e) = self.feed(key, local, kind, tag.timestamp, tag.payload, now) {
                        return Upstream::Lost(e);
                    }
                    continue;
                }
                readiness.held(kind, tag.payload.len(), now);
                readiness.tag(kind, tag.timestamp, &tag.payload, registry::now_ms());
                pending.push((kind, tag.timestamp, tag.payload));
            }
            // Publish locally only once the tracks are known, so that the first viewers
            // get an FLV header that announces them and their sequence headers.
            let tracks = reader.header().map(|h| (h.has_audio, h.has_video));
            if !ready && readiness.is_ready(tracks, now) {
                ready = true;
                for (kind, timestamp, payload) in pending.drain(..) {
                    if let Err(e) = self.feed(key, local, kind, timestamp, payload, now) {
                        return Upstream::Lost(e);
                    }
                }
                debug!(stream = %key, after = ?started.elapsed(), "pulled stream ready");
                pull.phase.send_replace(Phase::Live);
            }
        }
    }

    /// One upstream tag into the hub, publishing the local stream on the first.
    fn feed(
        &self,
        key: &str,
        local: &mut Local,
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
        now: Instant,
    ) -> Result<(), PullError> {
        let publisher = match &mut local.publisher {
            Some(publisher) => publisher,
            None => {
                let publisher = self
                    .hub
                    .publish(key, now)
                    .map_err(|_| PullError::Replaced)?;
                local.generation = Some(publisher.generation());
                local.stats = Some(publisher.stats_handle());
                local.publisher.insert(publisher)
            }
        };
        if kind == MediaKind::Metadata {
            if let Some(mark) = SegmentMark::from_script(&payload) {
                // Where the origin's next HLS segment begins: ours begins there too.
                publisher.mark_next_segment(mark);
                return Ok(());
            }
        }
        let pushed = publisher
            .push(kind, timestamp, payload, now)
            .map_err(|_| PullError::Replaced)?;
        if let Pushed::Refused(invalid) = pushed {
            // The origin drops these already; an upstream that sends them is not ours.
            Metrics::add(&self.metrics.invalid_media_total, 1);
            debug!(stream = %key, error = %invalid, "upstream sent media that cannot be valid");
        }
        Ok(())
    }

    /// Take the pull out of the map and end its local stream, unless `keep()` (evaluated
    /// under the map's lock, so no viewer can attach in between) says otherwise. True
    /// when retired.
    fn retire(
        &self,
        key: &str,
        pull: &Arc<Pull>,
        local: &mut Local,
        keep: impl FnOnce() -> bool,
    ) -> bool {
        let mut pulls = self.pulls();
        if keep() {
            return false;
        }
        if pulls.get(key).is_some_and(|p| Arc::ptr_eq(p, pull)) {
            pulls.remove(key);
        }
        match local.publisher.take() {
            Some(publisher) => publisher.finish(&self.hub),
            None => {
                if let Some(generation) = local.generation {
                    self.hub.end_if_orphaned(key, generation);
                }
            }
        }
        pull.phase.send_replace(Phase::Gone);
        true
    }

    /// Retire an idle pull unless a viewer attached since the last look.
    fn retire_idle(
        &self,
        key: &str,
        pull: &Arc<Pull>,
        local: &mut Local,
        policy: &mut PullPolicy,
    ) -> bool {
        let stats = local.stats.clone();
        let retired = self.retire(key, pull, local, || {
            stats.is_some_and(|s| s.get().viewers > 0)
        });
        if !retired {
            policy.watched();
        }
        retired
    }
}

/// Tell each pull when its stream gets a new owner, as the registry announces it, so that
/// it switches at once instead of when its old upstream breaks or ends.
async fn follow_owners(pulls: std::sync::Weak<Pulls>) {
    let Some(mut changes) = pulls.upgrade().map(|p| p.registry.owner_changes()) else {
        return;
    };
    loop {
        let change = match changes.recv().await {
            Ok(change) => change,
            // Missed some: pulls still find owners by looking them up.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(pulls) = pulls.upgrade() else {
            return;
        };
        let pull = pulls.pulls().get(&change.stream).cloned();
        if let Some(pull) = pull {
            debug!(stream = %change.stream, node = %change.node_id, generation = change.generation, "stream has a new owner");
            pull.owner.send_replace(Some(change));
        }
    }
}
