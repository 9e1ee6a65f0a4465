//! Pulls: a room fed from another server (`rtmp://`, `rtmps://`, `http(s)://…flv`), as
//! lal's `relay_pull` and livego's `/control/pull` do (cameras, other servers).
//!
//! A pulled stream is published on this origin like any other: it holds the lease (edges
//! find it), it is packaged for HLS, recorded and forwarded by the rules. A pull is always
//! on (from the config or the API) or on demand (from the config: started by the first
//! viewer, stopped once nobody has watched for the idle grace). A lost source is tried
//! again as [`super::policy`] says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use media::frame::Frame;
use media::hub::{Hub, Pushed};
use media::rtmp::url::{RelayUrl, Scheme};
use registry::{Registry, RelayInfo};
use serve::hooks::Hooks;
use serve::metrics::Metrics;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::flv::FlvPull;
use super::policy::{Backoff, Failure};
use super::rtmp::{RelayError, RtmpPull};
use super::transport::Tls;
use super::{change_state, lock, set};
use crate::Origin;

/// Time to connect and have the source start sending.
const NEGOTIATE_WITHIN: Duration = Duration::from_secs(10);
/// A source that sends nothing this long is gone.
const SILENCE: Duration = Duration::from_secs(10);
/// How often an on-demand pull looks at its audience.
const AUDIENCE_CHECK: Duration = Duration::from_secs(1);
/// How often the pulls asked for at run time are looked up in the registry.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// `APP/ROOM=URL` from the config: the room is fed from URL, always or on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRule {
    pub app: String,
    pub room: String,
    pub url: RelayUrl,
    pub on_demand: bool,
}

impl PullRule {
    pub fn parse(rule: &str, on_demand: bool) -> Result<PullRule, String> {
        let (stream, url) = rule
            .split_once('=')
            .ok_or_else(|| format!("{rule:?}: write APP/ROOM=URL"))?;
        let (app, room) = stream
            .trim()
            .split_once('/')
            .filter(|(app, room)| serve::stream_key(app, room).is_some())
            .ok_or_else(|| format!("{stream:?}: write APP/ROOM with valid names"))?;
        Ok(PullRule {
            app: app.to_owned(),
            room: room.to_owned(),
            url: RelayUrl::parse(url.trim()).map_err(|e| format!("{url:?}: {e}"))?,
            on_demand,
        })
    }

    pub fn stream(&self) -> String {
        format!("{}/{}", self.app, self.room)
    }
}

/// The pulls of one origin.
pub struct Pulls {
    origin: Weak<Origin>,
    hub: Arc<Hub>,
    tls: Arc<Tls>,
    metrics: Arc<Metrics>,
    hooks: Arc<Hooks>,
    idle_grace: Duration,
    /// The config's always-on pulls.
    always: Vec<PullRule>,
    /// The config's on-demand pulls, by stream.
    on_demand: HashMap<String, PullRule>,
    /// Pulls running, by stream.
    running: Mutex<HashMap<String, Running>>,
}

struct Running {
    id: String,
    state: Arc<Mutex<RelayInfo>>,
    stop: Arc<Notify>,
    /// Raised whenever the pulled stream goes live.
    live: Arc<Notify>,
}

impl Pulls {
    pub fn new(
        origin: Weak<Origin>,
        hub: Arc<Hub>,
        tls: Arc<Tls>,
        metrics: Arc<Metrics>,
        hooks: Arc<Hooks>,
        rules: &[PullRule],
        idle_grace: Duration,
    ) -> Arc<Pulls> {
        Arc::new(Pulls {
            origin,
            hub,
            tls,
            metrics,
            hooks,
            idle_grace,
            always: rules.iter().filter(|r| !r.on_demand).cloned().collect(),
            on_demand: (rules.iter().filter(|r| r.on_demand))
                .map(|r| (r.stream(), r.clone()))
                .collect(),
            running: Mutex::default(),
        })
    }

    /// Start the config's always-on pulls.
    pub fn start_config(self: &Arc<Self>) {
        for rule in &self.always {
            self.start(&format!("config-{}", rule.stream()), rule.clone());
        }
    }

    /// Run the pulls asked for at run time (the registry's list): one whose room is live
    /// nowhere is started here (if two origins start it at once, the stream's lease lets
    /// one publish), and one no longer listed is stopped.
    pub async fn follow(self: Arc<Self>, registry: Arc<dyn Registry>) {
        let mut every = tokio::time::interval(FOLLOW_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Ok(wanted) = registry.pulls().await else {
                continue; // the registry is down: what runs goes on
            };
            for spec in &wanted {
                let stream = format!("{}/{}", spec.app, spec.room);
                if self.running().contains_key(&stream) || self.hub.is_live(&stream) {
                    continue;
                }
                if !matches!(registry.lease(&stream).await, Ok(None)) {
                    continue;
                }
                let rule = PullRule {
                    app: spec.app.clone(),
                    room: spec.room.clone(),
                    url: match RelayUrl::parse(&spec.url) {
                        Ok(url) => url,
                        Err(_) => continue,
                    },
                    on_demand: false,
                };
                self.start(&spec.id, rule);
            }
            let asked: Vec<String> = self
                .running()
                .iter()
                .filter(|(_, r)| !r.id.starts_with("config-") && !r.id.starts_with("on-demand-"))
                .filter(|(_, r)| !wanted.iter().any(|spec| spec.id == r.id))
                .map(|(stream, _)| stream.clone())
                .collect();
            for stream in asked {
                info!(%stream, "pull no longer asked for");
                self.stop(&stream);
            }
        }
    }

    /// Feed `rule`'s room from its URL as pull `id`; `false` when the room is fed already.
    pub fn start(self: &Arc<Self>, id: &str, rule: PullRule) -> bool {
        let stream = rule.stream();
        let mut running = self.running();
        if running.contains_key(&stream) {
            return false;
        }
        let state = Arc::new(Mutex::new(RelayInfo {
            id: id.to_owned(),
            url: rule.url.redacted(),
            state: "connecting".into(),
            ..RelayInfo::default()
        }));
        let (stop, live) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        running.insert(
            stream.clone(),
            Running {
                id: id.to_owned(),
                state: state.clone(),
                stop: stop.clone(),
                live: live.clone(),
            },
        );
        drop(running);
        info!(%stream, id, url = %rule.url.redacted(), on_demand = rule.on_demand, "pulling");
        let pulls = self.clone();
        tokio::spawn(async move {
            pulls.run(&rule, &state, &stop, &live).await;
            change_state(&pulls.hooks, "pull", &stream, &state, "ended", None);
            let mut running = pulls.running();
            if running
                .get(&stream)
                .is_some_and(|r| Arc::ptr_eq(&r.stop, &stop))
            {
                running.remove(&stream);
            }
            info!(%stream, "pull ended");
        });
        true
    }

    /// Stop feeding `stream`; `false` when it is not pulled.
    pub fn stop(&self, stream: &str) -> bool {
        match self.running().get(stream) {
            Some(running) => {
                running.stop.notify_one();
                true
            }
            None => false,
        }
    }

    /// The id of the pull feeding `stream`, if any.
    pub fn id_of(&self, stream: &str) -> Option<String> {
        self.running().get(stream).map(|r| r.id.clone())
    }

    /// Every pull as it is now, with the stream it feeds.
    pub fn states(&self) -> Vec<(String, RelayInfo)> {
        self.running()
            .iter()
            .map(|(stream, r)| (stream.clone(), lock(&r.state).clone()))
            .collect()
    }

    /// A viewer wants `stream`, which is not live here: when an on-demand pull feeds it,
    /// start that (if it is not running) and wait, until `deadline`, for it to go live.
    pub async fn demand(self: &Arc<Self>, stream: &str, deadline: Instant) -> bool {
        let Some(rule) = self.on_demand.get(stream) else {
            return false;
        };
        self.start(&format!("on-demand-{stream}"), rule.clone());
        let Some(live) = self.running().get(stream).map(|r| r.live.clone()) else {
            return false;
        };
        let notified = live.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.hub.is_live(stream) {
            return true;
        }
        tokio::time::timeout_at(deadline, notified).await.is_ok()
    }

    fn running(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pull until stopped (or, on demand, unwatched for the idle grace), reconnecting as
    /// the policy says.
    async fn run(&self, rule: &PullRule, state: &Mutex<RelayInfo>, stop: &Notify, live: &Notify) {
        let stream = rule.stream();
        let mut backoff = Backoff::default();
        let mut unwatched_since = Instant::now();
        loop {
            set(state, |s| s.state = "connecting".into());
            let deadline = Instant::now() + NEGOTIATE_WITHIN;
            let connected = tokio::select! {
                source = Source::connect(&rule.url, &self.tls, deadline) => source,
                () = stop.notified() => return,
            };
            let (failure, why, live_for) = match connected {
                Ok(source) => {
                    let since = Instant::now();
                    match self
                        .feed(rule, source, state, stop, live, &mut unwatched_since)
                        .await
                    {
                        Fed::Stopped => return,
                        Fed::Lost(why) => (Failure::Failed, why, since.elapsed()),
                    }
                }
                Err(e) => {
                    let failure = if e.unreachable() {
                        Failure::Unreachable
                    } else {
                        Failure::Failed
                    };
                    (failure, e.to_string(), Duration::ZERO)
                }
            };
            if rule.on_demand && unwatched_since.elapsed() >= self.idle_grace {
                return;
            }
            let wait = backoff.failed(failure, live_for);
            Metrics::add(&self.metrics.relay_retries_total, 1);
            warn!(%stream, url = %rule.url.redacted(), error = %why, retry_in = ?wait, "pull failed");
            change_state(&self.hooks, "pull", &stream, state, "retrying", Some(why));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.notified() => return,
            }
        }
    }

    /// Publish what `source` sends as the rule's room until it stops or `stop`.
    async fn feed(
        &self,
        rule: &PullRule,
        mut source: Source,
        state: &Mutex<RelayInfo>,
        stop: &Notify,
        live: &Notify,
        unwatched_since: &mut Instant,
    ) -> Fed {
        let stream = rule.stream();
        let Some(origin) = self.origin.upgrade() else {
            return Fed::Stopped;
        };
        let from = format!("pull from {}", rule.url.redacted());
        let publishing = match origin.publish_room(&rule.app, &rule.room, &from).await {
            Ok(publishing) => publishing,
            Err(refusal) => {
                return Fed::Lost(format!("cannot publish here: {}", refusal.description))
            }
        };
        drop(origin);
        let serve::Publishing {
            mut publisher,
            hold,
        } = publishing;
        change_state(&self.hooks, "pull", &stream, state, "live", None);
        live.notify_waiters();
        Metrics::add(&self.metrics.relays_live, 1);
        let mut audience = tokio::time::interval(AUDIENCE_CHECK);
        let outcome = loop {
            tokio::select! {
                next = tokio::time::timeout(SILENCE, source.next()) => match next {
                    Ok(Ok(Some(frame))) => {
                        let bytes = frame.payload.len() as u64;
                        let pushed = publisher.push(frame.kind, frame.timestamp as u32, frame.payload, std::time::Instant::now());
                        match pushed {
                            Ok(Pushed::Taken) => set(state, |s| s.bytes += bytes),
                            Ok(Pushed::Refused(invalid)) => {
                                Metrics::add(&self.metrics.invalid_media_total, 1);
                                debug!(%stream, error = %invalid, "source sent media that cannot be valid");
                            }
                            Err(_) => break Fed::Lost("another publisher took the room".into()),
                        }
                    }
                    Ok(Ok(None)) => break Fed::Lost("the source ended the stream".into()),
                    Ok(Err(e)) => break Fed::Lost(e.to_string()),
                    Err(_) => break Fed::Lost("the source sent nothing for 10 s".into()),
                },
                _ = audience.tick(), if rule.on_demand => {
                    let watched = self.hub.list().iter().any(|s| s.name == stream && s.viewers + s.relays > 0);
                    if watched {
                        *unwatched_since = Instant::now();
                    } else if unwatched_since.elapsed() >= self.idle_grace {
                        info!(%stream, "nobody watches the pulled stream; stopping");
                        break Fed::Stopped;
                    }
                }
                () = hold.evicted() => break Fed::Stopped,
                () = stop.notified() => break Fed::Stopped,
            }
        };
        self.metrics
            .relays_live
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        match outcome {
            // Viewers are told the stream ended.
            Fed::Stopped => publisher.finish(&self.hub),
            // Viewers wait for the source to come back, as for a publisher that vanished.
            Fed::Lost(_) => drop(publisher),
        }
        drop(hold);
        outcome
    }
}

enum Fed {
    Stopped,
    Lost(String),
}

/// Where a pull's frames come from.
enum Source {
    Rtmp(Box<RtmpPull>),
    Flv(Box<FlvPull>),
}

impl Source {
    async fn connect(url: &RelayUrl, tls: &Tls, deadline: Instant) -> Result<Source, RelayError> {
        match url.scheme() {
            Scheme::Rtmp | Scheme::Rtmps => Ok(Source::Rtmp(Box::new(
                RtmpPull::connect(url, tls, deadline).await?,
            ))),
            Scheme::Http | Scheme::Https => Ok(Source::Flv(Box::new(
                FlvPull::connect(url, tls, deadline).await?,
            ))),
        }
    }

    async fn next(&mut self) -> Result<Option<Frame>, RelayError> {
        match self {
            Source::Rtmp(pull) => pull.next().await,
            Source::Flv(pull) => pull.next().await,
        }
    }
}
