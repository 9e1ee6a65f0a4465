//! HLS on the player port: a packager per stream, started by the first playlist request
//! and stopped when nobody has asked for the stream over HLS for a while, so streams
//! nobody watches over HLS cost nothing. HLS players count as viewers by [`sessions`].

pub mod sessions;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use media::hls::{HlsConfig, HlsPackager, Segment};
use media::hub::{Audience, Delivery, Subscriber, Watching};
use media::names::app_of;
use tokio::sync::Notify;
use tracing::{debug, warn};

use self::sessions::{SessionKey, Sessions};
use crate::metrics::{Protocol, ViewerGuard};
use crate::Node;

/// How often a packager drops the sessions of its stream that went idle.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// Why a playlist cannot be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPlaylist {
    /// The stream is not live (or ended before its first segment).
    NotLive,
    /// The stream is live but cannot be packaged as HLS, for this reason.
    Cannot(String),
}

/// What keeps an HLS player counted while its session lives.
struct Player {
    _watching: Watching,
    _gauge: ViewerGuard,
}

/// A packager nobody asked for in this long is stopped.
const IDLE_STOP: Duration = Duration::from_secs(30);
/// How long an ended stream's final playlist (with ENDLIST) stays available.
const ENDED_KEEP: Duration = Duration::from_secs(30);

struct Packaging {
    packager: Mutex<HlsPackager>,
    last_request: Mutex<Instant>,
    /// Woken whenever a segment is finished or the stream ends.
    progress: Notify,
}

impl Packaging {
    fn packager(&self) -> MutexGuard<'_, HlsPackager> {
        self.packager.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        *self.last_request.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_request
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }
}

/// The HLS packagers of one node.
pub struct Hls {
    config: HlsConfig,
    /// Apps with settings of their own.
    by_app: BTreeMap<String, HlsConfig>,
    streams: Mutex<HashMap<String, Arc<Packaging>>>,
    sessions: Mutex<Sessions<Player>>,
}

impl Hls {
    pub fn new(config: HlsConfig, by_app: BTreeMap<String, HlsConfig>) -> Self {
        Hls {
            config,
            by_app,
            streams: Mutex::default(),
            sessions: Mutex::default(),
        }
    }

    /// The settings of the stream `key`: its app's, or the node's.
    fn config_for(&self, key: &str) -> &HlsConfig {
        self.by_app.get(app_of(key)).unwrap_or(&self.config)
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions<Player>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<String, Arc<Packaging>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The playlist of `key`, starting its packager if needed and waiting (bounded) for
    /// the first segment. `None`: the stream is not live (or produced nothing in time).
    pub async fn playlist(
        self: &Arc<Self>,
        node: &Node,
        key: &str,
        client: &SessionKey,
        uri: impl Fn(u64) -> String,
    ) -> Result<String, NoPlaylist> {
        self.sessions().playlist(client, Instant::now());
        let existing = self.streams().get(key).cloned();
        let packaging = match existing {
            // An ended stream that is live again gets a fresh packager.
            Some(p) if !(p.packager().is_ended() && node.hub.is_live(key)) => p,
            // The viewer's subscription (on an edge, the pull) is made before the lock.
            _ => {
                let sub = node
                    .subscribe(key, Audience::Internal)
                    .await
                    .ok_or(NoPlaylist::NotLive)?;
                self.start(sub, key)
            }
        };
        packaging.touch();
        // The first segment needs a keyframe after the target duration; allow for a long GOP.
        let deadline = tokio::time::Instant::now()
            + self.config_for(key).target_duration * 3
            + Duration::from_secs(4);
        loop {
            let notified = packaging.progress.notified();
            {
                let packager = packaging.packager();
                if packager.has_segments() {
                    return Ok(packager.playlist(&uri));
                }
                if packager.is_ended() {
                    return Err(NoPlaylist::NotLive);
                }
                if let Some(why) = packager.problem() {
                    return Err(NoPlaylist::Cannot(why.to_owned()));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let packager = packaging.packager();
                return Err(match packager.problem() {
                    Some(why) => NoPlaylist::Cannot(why.to_owned()),
                    None => NoPlaylist::NotLive,
                });
            }
        }
    }

    /// A segment of a stream being packaged, for the player `client`, which from now on
    /// counts as a viewer until it stops asking.
    pub fn segment(
        &self,
        node: &Node,
        key: &str,
        sequence: u64,
        client: SessionKey,
    ) -> Option<Arc<Segment>> {
        let packaging = self.streams().get(key).cloned()?;
        packaging.touch();
        let segment = packaging.packager().segment(sequence)?;
        self.sessions().segment(client, Instant::now(), || {
            Some(Player {
                _watching: node.hub.watch(key, Audience::Viewer)?,
                _gauge: ViewerGuard::new(node.metrics.clone(), Protocol::Hls),
            })
        });
        Some(segment)
    }

    fn start(self: &Arc<Self>, mut sub: Subscriber, key: &str) -> Arc<Packaging> {
        let mut streams = self.streams();
        let previous = streams.get(key);
        if let Some(p) = previous.filter(|p| !p.packager().is_ended()) {
            // Another request started it meanwhile.
            return p.clone();
        }
        let packaging = Arc::new(Packaging {
            packager: Mutex::new(HlsPackager::new(
                self.config_for(key).clone(),
                sub.has_audio(),
                sub.has_video(),
            )),
            last_request: Mutex::new(Instant::now()),
            progress: Notify::new(),
        });
        streams.insert(key.to_owned(), packaging.clone());
        drop(streams);
        debug!(stream = key, "hls packaging started");
        let hls = self.clone();
        let key = key.to_owned();
        let task_packaging = packaging.clone();
        tokio::spawn(async move {
            let packaging = task_packaging;
            let mut expired_at = Instant::now();
            // Why the stream cannot be packaged was logged (once per packager).
            let mut told_problem = false;
            loop {
                if expired_at.elapsed() >= EXPIRE_EVERY {
                    expired_at = Instant::now();
                    hls.sessions().expire(&key, expired_at, false);
                }
                let delivery = tokio::select! {
                    d = sub.next() => d,
                    _ = tokio::time::sleep(IDLE_STOP) => {
                        if packaging.idle_for() >= IDLE_STOP {
                            break;
                        }
                        continue;
                    }
                };
                match delivery {
                    Delivery::Frame(frame) => {
                        let mut packager = packaging.packager();
                        let before = packager.listed().last().map(|s| s.sequence);
                        packager.push(&frame);
                        if packager.listed().last().map(|s| s.sequence) != before {
                            packaging.progress.notify_waiters();
                        }
                        let problem = packager.problem();
                        if problem.is_some() && !std::mem::replace(&mut told_problem, true) {
                            warn!(stream = %key, problem, "stream cannot be packaged as HLS");
                            // Waiting playlist requests answer with the reason now.
                            packaging.progress.notify_waiters();
                        }
                    }
                    // The packager notices the gap at the next keyframe; nothing to do.
                    Delivery::Skipped(_) => {}
                    Delivery::End => {
                        packaging.packager().end();
                        packaging.progress.notify_waiters();
                        tokio::time::sleep(ENDED_KEEP).await;
                        break;
                    }
                }
                if packaging.idle_for() >= IDLE_STOP {
                    break;
                }
            }
            let mut streams = hls.streams();
            if streams
                .get(&key)
                .is_some_and(|p| Arc::ptr_eq(p, &packaging))
            {
                streams.remove(&key);
                drop(streams);
                hls.sessions().expire(&key, Instant::now(), true);
            }
            debug!(stream = %key, "hls packaging stopped");
        });
        packaging
    }
}
