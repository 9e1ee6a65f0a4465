//! Forwards: a live stream sent on to other servers over RTMP or RTMPS, as lal's
//! `relay_push` and livego's `static_push` do (restreaming to YouTube, Twitch, Facebook).
//!
//! A forward takes the stream's frames from the hub as a viewer does (an
//! [`Audience::Relay`] subscriber: the hub's bounded ring is its queue, and when it falls
//! behind it skips to the next keyframe, counted), so a slow or dead destination never
//! slows the publisher or anyone else. It lasts as long as the stream is live on this node
//! (a publisher reconnecting within the grace keeps it) or until it is removed; a lost
//! destination is tried again as [`super::policy`] says.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use media::frame::{Frame, MediaKind};
use media::hub::{Audience, Delivery, Hub, Subscriber};
use media::outbox::Format;
use media::rtmp::url::RelayUrl;
use registry::RelayInfo;
use serve::fanout::{EgressError, Lanes, Pace, Pump, Totals};
use serve::hooks::Hooks;
use serve::io::{read_some, shutdown_write, write_all};
use serve::metrics::Metrics;
use serve::Shared;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use super::policy::{Backoff, Failure};
use super::rtmp::{Answers, RtmpPush};
use super::transport::Tls;
use super::Rule;
use super::{change_state, lock, set};

/// Time to connect, handshake and have the publish accepted.
const NEGOTIATE_WITHIN: Duration = Duration::from_secs(10);
/// A destination that takes no bytes this long is gone.
const SEND_WITHIN: Duration = Duration::from_secs(10);
/// How long the first frame of a write waits for the next picture to share it.
const MERGE: Duration = Duration::from_millis(40);
/// How often a forward in the fan-out brings its counts (bytes, skipped frames) up to date.
const COUNT_EVERY: Duration = Duration::from_secs(5);
/// How long the goodbye of a forward in the fan-out may take.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);
/// How much is read from a destination at a time (it says little: acknowledgements, pings).
const READ_SIZE: usize = 4096;

/// The forwards of one origin.
pub struct Forwards {
    hub: Arc<Hub>,
    lanes: Arc<Lanes>,
    tls: Arc<Tls>,
    metrics: Arc<Metrics>,
    hooks: Arc<Hooks>,
    rules: Vec<Rule>,
    /// Forwards running, by stream.
    running: Mutex<HashMap<String, Vec<Forward>>>,
}

/// A forward as it runs: what the lease and the API show of it, and its stop signal.
struct Forward {
    id: String,
    state: Arc<Mutex<RelayInfo>>,
    stop: Arc<Notify>,
}

impl Forwards {
    pub fn new(shared: &Shared, tls: Arc<Tls>, rules: Vec<Rule>) -> Arc<Forwards> {
        Arc::new(Forwards {
            hub: shared.hub.clone(),
            lanes: shared.lanes.clone(),
            tls,
            metrics: shared.metrics.clone(),
            hooks: shared.hooks.clone(),
            rules,
            running: Mutex::default(),
        })
    }

    /// A stream was published: start the forwards its rules name that are not running yet
    /// (a publisher reconnecting within the grace keeps its forwards).
    pub fn published(self: &Arc<Self>, app: &str, room: &str) {
        let stream = format!("{app}/{room}");
        for (n, rule) in self.rules.iter().enumerate() {
            if !rule.matches(app, room) {
                continue;
            }
            let url = rule.url(app, room);
            match RelayUrl::parse(&url) {
                Ok(url) => {
                    self.add(&stream, &format!("rule-{}", n + 1), url);
                }
                Err(e) => {
                    warn!(%stream, rule = n + 1, error = %e, "forward rule gives no valid URL")
                }
            }
        }
    }

    /// Forward `stream` to `url` as `id`; `false` when a forward of that id runs already.
    pub fn add(self: &Arc<Self>, stream: &str, id: &str, url: RelayUrl) -> bool {
        let mut running = self.running();
        let forwards = running.entry(stream.to_owned()).or_default();
        if forwards.iter().any(|f| f.id == id) {
            return false;
        }
        let state = Arc::new(Mutex::new(RelayInfo {
            id: id.to_owned(),
            url: url.redacted(),
            state: "connecting".into(),
            ..RelayInfo::default()
        }));
        let stop = Arc::new(Notify::new());
        forwards.push(Forward {
            id: id.to_owned(),
            state: state.clone(),
            stop: stop.clone(),
        });
        drop(running);
        info!(stream, id, url = %url.redacted(), "forwarding");
        let forwards = self.clone();
        let (stream, id) = (stream.to_owned(), id.to_owned());
        tokio::spawn(async move {
            forwards.run(&stream, url, &state, &stop).await;
            change_state(&forwards.hooks, "forward", &stream, &state, "ended", None);
            let mut running = forwards.running();
            if let Some(list) = running.get_mut(&stream) {
                list.retain(|f| !Arc::ptr_eq(&f.stop, &stop));
                if list.is_empty() {
                    running.remove(&stream);
                }
            }
            info!(%stream, %id, "forward ended");
        });
        true
    }

    /// Stop the forward `id` of `stream`; `false` when there is none.
    pub fn remove(&self, stream: &str, id: &str) -> bool {
        let running = self.running();
        match running
            .get(stream)
            .and_then(|list| list.iter().find(|f| f.id == id))
        {
            Some(forward) => {
                forward.stop.notify_one();
                true
            }
            None => false,
        }
    }

    /// The forwards of `stream` as they are now.
    pub fn of(&self, stream: &str) -> Vec<RelayInfo> {
        self.running()
            .get(stream)
            .map(|list| list.iter().map(|f| lock(&f.state).clone()).collect())
            .unwrap_or_default()
    }

    /// Every forward as it is now, with the stream it forwards.
    pub fn states(&self) -> Vec<(String, RelayInfo)> {
        let running = self.running();
        let all = running.iter().flat_map(|(stream, list)| {
            list.iter()
                .map(|f| (stream.clone(), lock(&f.state).clone()))
        });
        all.collect()
    }

    fn running(&self) -> MutexGuard<'_, HashMap<String, Vec<Forward>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forward until the stream ends or `stop`, reconnecting as the policy says.
    async fn run(&self, stream: &str, url: RelayUrl, state: &Mutex<RelayInfo>, stop: &Notify) {
        let mut backoff = Backoff::default();
        while self.hub.is_live(stream) {
            set(state, |s| s.state = "connecting".into());
            let connect = RtmpPush::connect(&url, &self.tls, Instant::now() + NEGOTIATE_WITHIN);
            let push = tokio::select! {
                pushed = connect => match pushed {
                    Ok(push) => push,
                    Err(e) => {
                        let failure = if e.unreachable() { Failure::Unreachable } else { Failure::Failed };
                        if !self.retry(stream, state, stop, &mut backoff, failure, Duration::ZERO, &e.to_string()).await {
                            return;
                        }
                        continue;
                    }
                },
                () = stop.notified() => return,
            };
            change_state(&self.hooks, "forward", stream, state, "live", None);
            Metrics::add(&self.metrics.relays_live, 1);
            let since = Instant::now();
            let ended = match push.into_plain() {
                Ok((socket, answers)) => self.fan_out(stream, socket, answers, state, stop).await,
                Err(push) => self.write_each(stream, *push, state, stop).await,
            };
            self.metrics.relays_live.fetch_sub(1, Ordering::Relaxed);
            let Err(why) = ended else { return };
            let live_for = since.elapsed();
            if !self
                .retry(
                    stream,
                    state,
                    stop,
                    &mut backoff,
                    Failure::Failed,
                    live_for,
                    &why,
                )
                .await
            {
                return;
            }
        }
    }

    /// Forward over plain TCP: the destination joins the stream's fan-out as an RTMP
    /// viewer does, and gets the same bytes, written the same way (from the shared tapes
    /// once the stream has many viewers), so that a forward costs what a viewer costs.
    /// This task only answers what the destination says, and keeps the count.
    /// `Ok` once the stream ended or the forward was stopped (the destination is told).
    async fn fan_out(
        &self,
        stream: &str,
        socket: TcpStream,
        mut answers: Answers,
        state: &Mutex<RelayInfo>,
        stop: &Notify,
    ) -> Result<(), String> {
        let socket = Arc::new(socket);
        let Some(mut join) = self.hub.join(stream, Audience::Relay) else {
            goodbye(&socket, None, &mut answers, &self.metrics).await;
            return Ok(());
        };
        headers_at_first_media(&mut join.replay);
        let format = Format::Rtmp {
            stream_id: answers.stream_id(),
        };
        let membership =
            self.lanes
                .attach(join, socket.clone(), format, Pace::Forward, &self.metrics);
        let mut counted = Totals::default();
        let mut tick = tokio::time::interval(COUNT_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut input = BytesMut::with_capacity(READ_SIZE);
        let ended = loop {
            let pump = match membership.pump() {
                Ok(Pump::Ended) => break Ok(()),
                Ok(pump) => pump,
                Err(e) => break Err(egress_error(e)),
            };
            tokio::select! {
                ready = membership.ready(pump) => if let Err(e) = ready {
                    break Err(egress_error(e));
                },
                read = read_some(&socket, &mut input) => {
                    let answered = match read {
                        Ok(_) => answers.take(&input).map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    input.clear();
                    match answered {
                        Ok(Some(answer)) => if let Err(e) = membership.send(answer) {
                            break Err(egress_error(e));
                        },
                        Ok(None) => {}
                        Err(why) => break Err(why),
                    }
                }
                _ = tick.tick() => self.count(stream, state, membership.totals(), &mut counted),
                () = stop.notified() => break Ok(()),
            }
        };
        self.count(stream, state, membership.totals(), &mut counted);
        if ended.is_ok() {
            goodbye(&socket, membership.leave(), &mut answers, &self.metrics).await;
        }
        ended
    }

    /// Forward over TLS: this task takes each frame from the hub and writes it.
    /// `Ok` once the stream ended or the forward was stopped (the destination is told).
    async fn write_each(
        &self,
        stream: &str,
        mut push: RtmpPush,
        state: &Mutex<RelayInfo>,
        stop: &Notify,
    ) -> Result<(), String> {
        // The destination starts at a keyframe, with the metadata and sequence headers.
        let Some(mut frames) = self.hub.subscribe(stream, Audience::Relay) else {
            push.close().await;
            return Ok(());
        };
        let mut timeline = Timeline::default();
        let mut sent_before = push.bytes_sent();
        let ended = loop {
            let delivery = tokio::select! {
                delivery = frames.next() => delivery,
                // Between frames: answer the destination, and notice it went away.
                serviced = push.service() => match serviced {
                    Ok(()) => continue,
                    Err(e) => break Err(e.to_string()),
                },
                () = stop.notified() => break Ok(()),
            };
            match delivery {
                Delivery::Frame(frame) => {
                    let after = match write(&mut push, &mut frames, &mut timeline, frame).await {
                        Ok(after) => after,
                        Err(why) => break Err(why),
                    };
                    let sent = push.bytes_sent();
                    let new = sent.saturating_sub(sent_before);
                    sent_before = sent;
                    Metrics::add(&self.metrics.relay_bytes_total, new);
                    set(state, |s| s.bytes += new);
                    match after {
                        Some(Delivery::Skipped(n)) => self.skipped(stream, state, n),
                        Some(Delivery::End) => break Ok(()),
                        _ => {}
                    }
                }
                Delivery::Skipped(n) => self.skipped(stream, state, n),
                Delivery::End => break Ok(()),
            }
        };
        if ended.is_ok() {
            push.close().await;
        }
        ended
    }

    /// Bring the forward's counts up to `now` from what was `counted` before.
    fn count(&self, stream: &str, state: &Mutex<RelayInfo>, now: Totals, counted: &mut Totals) {
        let bytes = now.bytes.saturating_sub(counted.bytes);
        let skipped = now.skipped.saturating_sub(counted.skipped);
        *counted = now;
        if bytes > 0 {
            Metrics::add(&self.metrics.relay_bytes_total, bytes);
            set(state, |s| s.bytes += bytes);
        }
        if skipped > 0 {
            self.skipped(stream, state, skipped);
        }
    }

    /// The forward fell behind the stream by `n` frames (it resumes at the next keyframe).
    fn skipped(&self, stream: &str, state: &Mutex<RelayInfo>, n: u64) {
        Metrics::add(&self.metrics.relay_frames_skipped_total, n);
        set(state, |s| s.frames_skipped += n);
        warn!(stream, url = %lock(state).url, skipped = n, "forward fell behind; resuming at the next keyframe");
    }

    /// Note the failure and wait before the next attempt; `false` when the forward should
    /// end instead (stopped, or the stream is no longer live).
    #[allow(clippy::too_many_arguments)]
    async fn retry(
        &self,
        stream: &str,
        state: &Mutex<RelayInfo>,
        stop: &Notify,
        backoff: &mut Backoff,
        failure: Failure,
        live_for: Duration,
        why: &str,
    ) -> bool {
        let wait = backoff.failed(failure, live_for);
        Metrics::add(&self.metrics.relay_retries_total, 1);
        warn!(stream, url = %lock(state).url, error = why, retry_in = ?wait, "forward failed");
        change_state(
            &self.hooks,
            "forward",
            stream,
            state,
            "retrying",
            Some(why.to_owned()),
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => self.hub.is_live(stream),
            () = stop.notified() => false,
        }
    }
}

/// Why a destination in the fan-out was let go, in its words.
fn egress_error(e: EgressError) -> String {
    match e {
        EgressError::TooSlow(n) => format!("the destination fell behind {n} times within a minute"),
        EgressError::WriteTimeout(t) => format!("the destination took nothing for {t:?}"),
        EgressError::Io(e) => e.to_string(),
    }
}

/// End a publish politely once the fan-out let go of it: the rest of a message it began,
/// FCUnpublish and deleteStream, then the close; all within [`CLOSE_WITHIN`].
async fn goodbye(
    socket: &TcpStream,
    rest: Option<Bytes>,
    answers: &mut Answers,
    metrics: &Metrics,
) {
    let bye = answers.goodbye();
    let _ = tokio::time::timeout(CLOSE_WITHIN, async {
        for bytes in rest.into_iter().chain(bye) {
            write_all(socket, &bytes, metrics).await?;
        }
        shutdown_write(socket);
        Ok::<(), EgressError>(())
    })
    .await;
}

/// A destination joining mid-stream gets the metadata and sequence headers first, at the
/// time they were first sent; they go out at the time of the first frame after them
/// instead, so that the destination does not see its tracks start far apart.
fn headers_at_first_media(replay: &mut [Arc<Frame>]) {
    let Some(first) = replay
        .iter()
        .position(|f| f.kind != MediaKind::Metadata && !f.sequence_header)
    else {
        return;
    };
    let at = replay[first].timestamp;
    for frame in &mut replay[..first] {
        if frame.sequence_header && frame.timestamp != at {
            let mut moved = Frame::new(frame.kind, at, frame.payload.clone());
            moved.generation = frame.generation;
            *frame = Arc::new(moved);
        }
    }
}

/// Write `first` and what follows it within [`MERGE`] (up to a second picture) to `push`
/// in one write, as the fan-out writes to viewers: a write per two pictures, not per
/// frame. Returns what ended the batch if it was not a frame (a skip, the end).
async fn write(
    push: &mut RtmpPush,
    frames: &mut Subscriber,
    timeline: &mut Timeline,
    first: Arc<Frame>,
) -> Result<Option<Delivery>, String> {
    let until = Instant::now() + MERGE;
    let mut next = Some(Delivery::Frame(first));
    let mut pictures = 0;
    let after = loop {
        match next.take() {
            Some(Delivery::Frame(frame)) => {
                pictures += usize::from(frame.kind == MediaKind::Video && !frame.sequence_header);
                timeline
                    .place(&frame, |f, at| push.queue(f, at))
                    .map_err(|e| e.to_string())?;
                if pictures >= 2 {
                    break None;
                }
            }
            other => break other,
        }
        next = match frames.try_next() {
            Some(delivery) => Some(delivery),
            None => match tokio::time::timeout_at(until, frames.next()).await {
                Ok(delivery) => Some(delivery),
                Err(_) => break None,
            },
        };
    };
    flush_within(push).await?;
    Ok(after)
}

/// Write what `push` has queued, giving the destination [`SEND_WITHIN`] to take it; no
/// timer is set when the socket takes it at once, as it usually does.
async fn flush_within(push: &mut RtmpPush) -> Result<(), String> {
    let mut flush = std::pin::pin!(push.flush());
    let at_once = std::future::poll_fn(|cx| std::task::Poll::Ready(flush.as_mut().poll(cx))).await;
    let flushed = match at_once {
        std::task::Poll::Ready(flushed) => flushed,
        std::task::Poll::Pending => match tokio::time::timeout(SEND_WITHIN, flush).await {
            Ok(flushed) => flushed,
            Err(_) => return Err("the destination took nothing for 10 s".into()),
        },
    };
    flushed.map_err(|e| e.to_string())
}

/// Each connection to a destination is a new publish. Media goes out at the stream's own
/// time, so that its bytes are the ones every RTMP viewer gets (encoded once, shared).
/// What comes before the first media frame, metadata and sequence headers (which the hub
/// keeps with the time they were first sent), is held and goes out at that frame's time,
/// as [`headers_at_first_media`] does for the fan-out.
#[derive(Debug, Default)]
struct Timeline {
    started: bool,
    held: Vec<Arc<Frame>>,
}

impl Timeline {
    /// Hand `send` what goes out now for `frame`, each with its time on RTMP's clock.
    fn place<E>(
        &mut self,
        frame: &Arc<Frame>,
        mut send: impl FnMut(&Frame, u32) -> Result<(), E>,
    ) -> Result<(), E> {
        let media = frame.kind != MediaKind::Metadata && !frame.sequence_header;
        if !self.started && !media {
            self.held.push(frame.clone());
            return Ok(());
        }
        if !self.started {
            self.started = true;
            for held in std::mem::take(&mut self.held) {
                send(&held, frame.wire_timestamp())?;
            }
        }
        send(frame, frame.wire_timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn headers_go_out_with_the_first_media() {
        let mut timeline = Timeline::default();
        let frame = |kind, ts, payload: &'static [u8]| {
            Arc::new(Frame::new(kind, ts, Bytes::from_static(payload)))
        };
        let avc_header: &[u8] = &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f];
        let aac_header: &[u8] = &[0xaf, 0, 0x12, 0x10];
        let mut sent = Vec::new();
        for f in [
            frame(MediaKind::Metadata, 0, b"\x02"),
            frame(MediaKind::Video, 40, avc_header),
            frame(MediaKind::Audio, 20, aac_header),
            frame(
                MediaKind::Video,
                13_080,
                &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65],
            ),
            frame(MediaKind::Audio, 13_093, &[0xaf, 1, 0x21]),
            frame(MediaKind::Audio, 13_200, aac_header),
        ] {
            timeline
                .place(&f, |f, ts| {
                    sent.push((f.kind, ts));
                    Ok::<(), ()>(())
                })
                .unwrap();
        }
        use MediaKind::{Audio, Metadata, Video};
        assert_eq!(
            sent,
            [
                (Metadata, 13_080),
                (Video, 13_080),
                (Audio, 13_080),
                (Video, 13_080),
                (Audio, 13_093),
                // A header in mid-stream (new parameters) goes at its own time.
                (Audio, 13_200),
            ]
        );
    }
}
