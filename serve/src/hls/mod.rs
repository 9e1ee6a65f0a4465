//! HLS on the player port: a packager per stream, started by the first playlist request
//! and stopped when nobody has asked for the stream over HLS for a while, so streams
//! nobody watches over HLS cost nothing. HLS players count as viewers by [`sessions`].

mod gate;
pub mod sessions;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::cmaf::{CmafConfig, CmafPackager};
use media::hls::{HlsConfig, HlsPackager, Segment};
use media::hub::{Audience, Delivery, Subscriber, Watching};
use media::names::app_of;
use tokio::sync::Notify;
use tracing::{debug, warn};

use self::gate::ReloadGate;
use self::sessions::{SessionKey, Sessions};
use crate::hooks::{HookRefusal, NotifyOnDrop};
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

/// Why a playlist cannot be given, in a request's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaylistRefusal {
    No(NoPlaylist),
    /// `_HLS_msn` more than two segments ahead (400).
    TooFarAhead,
    /// The segment or part asked for did not come in time (503).
    NotInTime,
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
    /// The same stream in CMAF, for the fMP4 and low-latency playlist. Packaged from the
    /// same start (the stream's recent segments), so that its playlist lists the same
    /// segments on every node however late each started; it costs one fMP4 mux per
    /// stream, not per player.
    cmaf: Mutex<CmafPackager>,
    last_request: Mutex<Instant>,
    /// Woken whenever a segment or part is finished, or the stream ends.
    progress: Notify,
    /// The packagers have taken the stream's recent segments the packaging started with:
    /// until then a playlist would list only some of them, and then jump ahead by the
    /// rest (a player starting on it would stay seconds behind live).
    caught_up: std::sync::atomic::AtomicBool,
    /// Blocked reloads are answered before part downloads go out.
    reloads: ReloadGate,
}

impl Packaging {
    fn packager(&self) -> MutexGuard<'_, HlsPackager> {
        self.packager.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cmaf(&self) -> MutexGuard<'_, CmafPackager> {
        self.cmaf.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        *self.last_request.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
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
    /// Players the on_play hook let in, each telling on_stop when its session ends.
    admitted: Mutex<Sessions<Option<NotifyOnDrop>>>,
}

impl Hls {
    pub fn new(config: HlsConfig, by_app: BTreeMap<String, HlsConfig>) -> Self {
        Hls {
            config,
            by_app,
            streams: Mutex::default(),
            sessions: Mutex::default(),
            admitted: Mutex::default(),
        }
    }

    /// Ask the on_play hook whether `client` (at `peer`, with the query of its playlist
    /// URL) may play `key`: once per session, not at every playlist request.
    pub async fn ask_to_play(
        &self,
        node: &Node,
        key: &str,
        client: &SessionKey,
        query: &str,
        peer: SocketAddr,
    ) -> Result<(), HookRefusal> {
        if !node.hooks.watch_plays(app_of(key)) {
            return Ok(());
        }
        if self.admitted().touch(client, Instant::now()) {
            return Ok(());
        }
        let notice = node.ask_to_play(key, query, peer, Protocol::Hls).await?;
        self.admitted()
            .start(client.clone(), Instant::now(), notice);
        Ok(())
    }

    fn admitted(&self) -> MutexGuard<'_, Sessions<Option<NotifyOnDrop>>> {
        self.admitted.lock().unwrap_or_else(|e| e.into_inner())
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
        let packaging = self.packaging(node, key).await?;
        // The first segment needs a keyframe after the target duration; allow for a long GOP.
        let deadline = tokio::time::Instant::now()
            + self.config_for(key).target_duration * 3
            + Duration::from_secs(4);
        loop {
            let notified = packaging.progress.notified();
            {
                let packager = packaging.packager();
                if packager.has_segments() && packaging.is_caught_up() {
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

    /// The packaging of `key`, started if needed.
    async fn packaging(
        self: &Arc<Self>,
        node: &Node,
        key: &str,
    ) -> Result<Arc<Packaging>, NoPlaylist> {
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
        Ok(packaging)
    }

    /// The fMP4 (CMAF) low-latency playlist of `key` (`/APP/ROOM/index.m3u8`). With
    /// `wait_for` (`_HLS_msn`, `_HLS_part`), a blocking reload: answered once that segment
    /// or part exists. `skip`: a delta update.
    pub async fn cmaf_playlist(
        self: &Arc<Self>,
        node: &Node,
        key: &str,
        client: &SessionKey,
        wait_for: Option<(u64, Option<usize>)>,
        skip: bool,
    ) -> Result<Bytes, PlaylistRefusal> {
        self.sessions().playlist(client, Instant::now());
        let packaging = self
            .packaging(node, key)
            .await
            .map_err(PlaylistRefusal::No)?;
        let first_wait = self.config_for(key).target_duration * 3 + Duration::from_secs(4);
        let mut deadline = tokio::time::Instant::now() + first_wait;
        // Set once the reload blocks on its part (counted for the reload gate).
        let mut blocked = None;
        loop {
            let notified = packaging.progress.notified();
            {
                let mut cmaf = packaging.cmaf();
                if (cmaf.has_segments() && packaging.is_caught_up()) || cmaf.is_ended() {
                    let Some((msn, part)) = wait_for else {
                        return Ok(cmaf.playlist(skip));
                    };
                    let last = cmaf.position().map_or(0, |(open, _)| open);
                    // More than two segments ahead of the playlist: a client mistake.
                    if msn > last + 2 {
                        return Err(PlaylistRefusal::TooFarAhead);
                    }
                    if cmaf.has(msn, part) || cmaf.is_ended() {
                        return Ok(cmaf.playlist(skip));
                    }
                    if blocked.is_none() {
                        // A part that does not come within three target durations: 503.
                        let wait = Duration::from_secs(3 * cmaf.target_duration());
                        deadline = tokio::time::Instant::now() + wait;
                        blocked = Some(packaging.reloads.block());
                    }
                }
            }
            if let Some(why) = packaging.packager().problem() {
                return Err(PlaylistRefusal::No(NoPlaylist::Cannot(why.to_owned())));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(match blocked {
                    Some(_) => PlaylistRefusal::NotInTime,
                    None => PlaylistRefusal::No(NoPlaylist::NotLive),
                });
            }
            if let Some(blocked) = blocked.as_mut() {
                blocked.woke();
            }
        }
    }

    /// A file of the CMAF playlist: `init{n}.mp4`, `{sequence}.m4s` or
    /// `{sequence}.{part}.m4s`. The next part of the segment being written (a preload
    /// hint) is answered once it exists, within three target durations.
    pub async fn cmaf_file(
        &self,
        node: &Node,
        key: &str,
        name: &str,
        client: SessionKey,
    ) -> Option<(&'static str, Bytes)> {
        let packaging = self.streams().get(key).cloned()?;
        packaging.touch();
        if let Some(number) = name
            .strip_prefix("init")
            .and_then(|n| n.strip_suffix(".mp4"))
        {
            let init = packaging.cmaf().init_segment(number.parse().ok()?)?;
            return Some(("video/mp4", init));
        }
        let stem = name.strip_suffix(".m4s")?;
        self.sessions().segment(client, Instant::now(), || {
            Some(Player {
                _watching: node.hub.watch(key, Audience::Viewer)?,
                _gauge: ViewerGuard::new(node.metrics.clone(), Protocol::Hls, key),
            })
        });
        match stem.split_once('.') {
            None => {
                let segment = packaging.cmaf().segment(stem.parse().ok()?)?;
                Some(("video/iso.segment", segment.data.clone()))
            }
            Some((sequence, part)) => {
                let (sequence, part): (u64, usize) = (sequence.parse().ok()?, part.parse().ok()?);
                let wait = Duration::from_secs(3 * packaging.cmaf().target_duration());
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    let notified = packaging.progress.notified();
                    let (found, worth_waiting) = {
                        let cmaf = packaging.cmaf();
                        // Only the next part of the open segment is worth waiting for.
                        let next = cmaf.position() == Some((sequence, part));
                        (cmaf.part(sequence, part), next && !cmaf.is_ended())
                    };
                    if let Some(found) = found {
                        packaging.reloads.answers_first().await;
                        return Some(("video/iso.segment", found.data.clone()));
                    }
                    if !worth_waiting {
                        return None;
                    }
                    tokio::time::timeout_at(deadline, notified).await.ok()?;
                }
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
                _gauge: ViewerGuard::new(node.metrics.clone(), Protocol::Hls, key),
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
        let config = self.config_for(key);
        let cmaf = CmafConfig {
            part_target: config.part_target,
            window: config.window,
            retain: config.retain_extra,
        };
        let packaging = Arc::new(Packaging {
            packager: Mutex::new(HlsPackager::new(
                config.clone(),
                sub.has_audio(),
                sub.has_video(),
            )),
            cmaf: Mutex::new(CmafPackager::new(cmaf)),
            last_request: Mutex::new(Instant::now()),
            progress: Notify::new(),
            caught_up: std::sync::atomic::AtomicBool::new(false),
            reloads: ReloadGate::default(),
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
                    hls.admitted().expire(&key, expired_at, false);
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
                        let moved = {
                            let mut cmaf = packaging.cmaf();
                            let before = cmaf.position();
                            cmaf.push(&frame);
                            cmaf.position() != before
                        };
                        let mut packager = packaging.packager();
                        let before = packager.listed().last().map(|s| s.sequence);
                        packager.push(&frame);
                        let caught_up = packaging.is_caught_up();
                        if !caught_up && !sub.is_replaying() {
                            // The recent segments are all in: waiting requests answer now.
                            packaging.caught_up.store(true, Ordering::Release);
                            packaging.progress.notify_waiters();
                        } else if caught_up
                            && (moved || packager.listed().last().map(|s| s.sequence) != before)
                        {
                            if moved {
                                packaging.reloads.release();
                            }
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
                        packaging.cmaf().end();
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
                hls.admitted().expire(&key, Instant::now(), true);
            }
            debug!(stream = %key, "hls packaging stopped");
        });
        packaging
    }
}
