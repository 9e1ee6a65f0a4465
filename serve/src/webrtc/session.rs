//! One WebRTC viewer: its `Rtc` driven by a task of its own, fed the datagrams the shared
//! socket's reader routes to it, its stream's feed once ICE and DTLS are up, and its own
//! timer.
//!
//! The `Rtc` runs in RTP mode: the feed's payloads, made once for the stream, are written
//! as they are with the session's own payload types, SSRCs, sequence numbers and
//! timestamps ([`super::outgoing`]). Video packets are written NACK-able, so str0m keeps
//! them in the stream's send buffer and resends what the viewer reports lost (over RTX
//! when negotiated).
//!
//! str0m's rule: every change to an `Rtc` (a datagram, a timeout, a written packet) is
//! followed by polling it until it says when it next wants the time ([`Session::drain`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::codec::VideoCodec;
use str0m::format::{Codec, CodecSpec};
use str0m::media::{MediaKind, Mid, Pt};
use str0m::rtp::RtpWrite;
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, Notify};
use tracing::{debug, warn};

use super::batch::{self, Batch, Batcher};
use super::feed::{Feed, Picture, Unit};
use super::outgoing::{AudioOut, VideoOut};
use super::Datagram;
use crate::fanout::SlowViewerGuard;
use crate::metrics::Metrics;

/// ICE and DTLS must be up this soon after the answer, or the viewer is gone.
const CONNECT_DEADLINE: Duration = Duration::from_secs(15);
/// A viewer that sends nothing (no STUN consent check, no RTCP) this long has left
/// (RFC 7675's consent lapses after 30 s; browsers check every few seconds).
const SILENCE: Duration = Duration::from_secs(30);

/// Packets a session keeps to answer NACKs from: about a second of a 2.7 Mbit/s stream (a
/// NACK comes a round trip after the loss). str0m's default, 2000 over 3 s, cost each
/// viewer about a megabyte.
const RTX_PACKETS: usize = 400;
const RTX_AGE: Duration = Duration::from_millis(1500);
/// Queued resends are dropped when they would be more than this share of what is sent
/// (str0m's default): a viewer on a link that loses that much is better off skipping.
const RTX_RATIO_CAP: f32 = 0.15;

pub(super) struct Session {
    pub rtc: Rtc,
    pub socket: Arc<UdpSocket>,
    /// The address in the answer's candidate: what the viewer's datagrams are sent to.
    pub candidate: SocketAddr,
    pub datagrams: mpsc::Receiver<Datagram>,
    pub stop: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    pub name: String,
    pub id: String,
    /// The stream's payloads, shared with its other sessions.
    pub feed: Arc<Feed>,
    /// What str0m made to send, gathered for GSO.
    pub batcher: Batcher,
}

/// Where a media line's packets go.
#[derive(Debug, Clone, Copy)]
struct Track {
    mid: Mid,
    pt: Pt,
}

/// The video line: the payload type of each codec the viewer took (H.264 in packetization
/// mode 1, HEVC, AV1), so that a picture goes with its own codec's.
#[derive(Debug, Clone, Copy)]
struct VideoTrack {
    mid: Mid,
    h264: Option<Pt>,
    hevc: Option<Pt>,
    av1: Option<Pt>,
}

impl VideoTrack {
    fn for_codec(&self, codec: VideoCodec) -> Option<Track> {
        let pt = match codec {
            VideoCodec::Avc => self.h264,
            VideoCodec::Hevc => self.hevc,
            VideoCodec::Av1 => self.av1,
            _ => None,
        }?;
        Some(Track { mid: self.mid, pt })
    }
}

/// What the session knows of its media lines.
#[derive(Debug, Default)]
struct Tracks {
    video: Option<VideoTrack>,
    audio: Option<Track>,
    /// A codec of the stream the viewer did not offer (said once in the log).
    refused: Option<VideoCodec>,
}

/// Why a session ended (for the log).
#[derive(Debug, thiserror::Error)]
pub(super) enum Ended {
    #[error("ended by the viewer (DELETE)")]
    Deleted,
    #[error("the stream ended")]
    StreamOver,
    #[error("node shutting down")]
    Shutdown,
    #[error("not connected within {0:?}")]
    NeverConnected(Duration),
    #[error("nothing from the viewer for {0:?}")]
    Silent(Duration),
    #[error("ICE disconnected")]
    Disconnected,
    #[error("too slow: {0}")]
    TooSlow(String),
    #[error("webrtc: {0}")]
    Rtc(#[from] str0m::RtcError),
}

/// Where the session is in its stream: its numbering on the shared payloads and the
/// wall clock the stream's clock maps to.
struct Sending {
    video: VideoOut,
    audio: AudioOut,
    /// The stream's clock placed at the first packet sent: (when, stream ms).
    epoch: Option<(Instant, i64)>,
    /// The wall clock of the last picture sent (an answer's pictures go out at it).
    last_picture_at: Option<Instant>,
}

impl Sending {
    fn new() -> Sending {
        Sending {
            video: VideoOut::new(fastrand::u16(..), fastrand::u32(..)),
            audio: AudioOut::new(fastrand::u16(..), fastrand::u32(..)),
            epoch: None,
            last_picture_at: None,
        }
    }

    /// The wall-clock time of `ms` on the stream's clock (for str0m's sender reports,
    /// which browsers line audio and video up with).
    fn wallclock(&mut self, ms: i64) -> Instant {
        let (start, first) = *self.epoch.get_or_insert((Instant::now(), ms));
        start + Duration::from_millis(ms.saturating_sub(first).max(0) as u64)
    }
}

impl Session {
    /// Run until the viewer or the stream goes; says why it ended.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()> + Send) -> Ended {
        tokio::pin!(shutdown);
        let started = Instant::now();
        let mut last_heard = started;
        let mut connected = false;
        let mut tracks = Tracks::default();
        let mut sending = Sending::new();
        let mut slow = SlowViewerGuard::default();
        // The feed's live units, taken once there is somewhere to send them (before, they
        // would only pile up).
        let mut units: Option<broadcast::Receiver<Unit>> = None;
        let ended = loop {
            let wake = match self.drain(&mut connected, &mut tracks, &mut sending) {
                Ok(wake) => wake,
                Err(ended) => break ended,
            };
            let now = Instant::now();
            if !connected && now.duration_since(started) > CONNECT_DEADLINE {
                break Ended::NeverConnected(CONNECT_DEADLINE);
            }
            if now.duration_since(last_heard) > SILENCE {
                break Ended::Silent(SILENCE);
            }
            let ready = connected && (tracks.video.is_some() || tracks.audio.is_some());
            if ready && units.is_none() {
                // The GOP so far first, so that the picture starts at once; then live.
                let joined = self.feed.join();
                // The GOP's last picture is the stream's now: the wall clock of every packet
                // is then in the past or present, as sender reports need.
                if let Some(last) = joined.gop.last() {
                    sending.epoch = Some((Instant::now(), last.pts_ms));
                }
                for picture in &joined.gop {
                    self.send_picture(picture, &mut tracks, &mut sending);
                }
                units = Some(joined.units);
                continue;
            }
            // Wake for str0m's timer, and at least once a second for our own deadlines.
            let wake = wake.min(now + Duration::from_secs(1));
            tokio::select! {
                biased;
                _ = self.stop.notified() => break Ended::Deleted,
                _ = &mut shutdown => break Ended::Shutdown,
                datagram = self.datagrams.recv() => {
                    let Some(datagram) = datagram else { break Ended::Shutdown };
                    last_heard = datagram.at;
                    // Not STUN, DTLS or RTP: not for WebRTC.
                    let Some(input) = datagram.input(self.candidate) else { continue };
                    if let Err(e) = self.rtc.handle_input(input) {
                        break e.into();
                    }
                }
                unit = next_unit(&mut units) => match unit {
                    Ok(Unit::Picture(picture)) => self.send_picture(&picture, &mut tracks, &mut sending),
                    Ok(Unit::Opus { payload, ms }) => {
                        if let Some(track) = tracks.audio {
                            let (sequence, time) = sending.audio.packet(ms);
                            let wallclock = sending.wallclock(ms as i64);
                            let packet = RtpWrite::new(track.pt, sequence.into(), time, wallclock, payload);
                            self.write(track.mid, packet);
                        }
                    }
                    // The session fell the feed's backlog behind: on from the next keyframe.
                    Err(RecvError::Lagged(n)) => {
                        sending.video.lost();
                        if let Err(e) = slow.skipped(n, &self.metrics, Instant::now()) {
                            break Ended::TooSlow(e.to_string());
                        }
                    }
                    Err(RecvError::Closed) => break Ended::StreamOver,
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(Instant::now())) {
                        break e.into();
                    }
                }
            }
        };
        // A DTLS close_notify, so the browser learns at once rather than by silence.
        self.rtc.disconnect();
        let _ = self.drain(&mut connected, &mut tracks, &mut sending);
        ended
    }

    /// Send a live picture (unless the session waits for a keyframe, or the viewer's
    /// browser does not take its codec).
    fn send_picture(&mut self, picture: &Arc<Picture>, tracks: &mut Tracks, sending: &mut Sending) {
        let Some(video) = tracks.video else { return };
        let Some(track) = video.for_codec(picture.codec) else {
            if tracks.refused.replace(picture.codec) != Some(picture.codec) {
                warn!(stream = %self.name, session = %self.id, codec = ?picture.codec, "the viewer's browser did not offer the stream's video codec: no pictures sent");
            }
            return;
        };
        let Some(time) = sending.video.live(picture) else {
            return;
        };
        let wallclock = sending.wallclock(picture.pts_ms);
        sending.last_picture_at = Some(wallclock);
        self.write_picture(track, picture, time, wallclock, &mut sending.video);
    }

    /// Write a picture's payloads at RTP time `time`, NACK-able.
    fn write_picture(
        &mut self,
        track: Track,
        picture: &Picture,
        time: u32,
        wallclock: Instant,
        video: &mut VideoOut,
    ) {
        for payload in &picture.payloads {
            let packet = RtpWrite::new(
                track.pt,
                video.next_sequence().into(),
                time,
                wallclock,
                payload.bytes.clone(),
            )
            .marker(payload.marker)
            .nackable(true);
            self.write(track.mid, packet);
        }
    }

    /// Queue one packet on the media line's send stream (there is one once the answer is
    /// made for a line the viewer receives).
    fn write(&mut self, mid: Mid, packet: RtpWrite) {
        if let Some(stream) = self.rtc.direct_api().stream_tx_by_mid(mid, None) {
            stream.write_rtp(packet);
        }
    }

    /// A viewer's keyframe request: answered from the GOP cache, never asked of the
    /// publisher (see [`super::outgoing`]).
    fn answer_keyframe_request(&mut self, tracks: &Tracks, sending: &mut Sending) {
        let Some(video) = tracks.video else { return };
        let answer = sending.video.keyframe_request(Instant::now());
        if answer.is_empty() {
            return;
        }
        Metrics::add(&self.metrics.webrtc_keyframe_answers_total, 1);
        let wallclock = sending.last_picture_at.unwrap_or_else(Instant::now);
        for timed in &answer {
            let Some(track) = video.for_codec(timed.picture.codec) else {
                continue;
            };
            self.write_picture(
                track,
                &timed.picture,
                timed.time,
                wallclock,
                &mut sending.video,
            );
        }
    }

    /// Poll the `Rtc` until it wants the time: send what it made, note what it says.
    /// When it next wants the time, or why the session is over.
    fn drain(
        &mut self,
        connected: &mut bool,
        tracks: &mut Tracks,
        sending: &mut Sending,
    ) -> Result<Instant, Ended> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(at) => {
                    let (socket, metrics) = (&self.socket, &self.metrics);
                    self.batcher
                        .flush(&mut |batch| send(socket, metrics, &batch));
                    return Ok(at);
                }
                Output::Transmit(out) => {
                    let (socket, metrics) = (&self.socket, &self.metrics);
                    let datagram = Vec::from(out.contents);
                    (self.batcher).push(out.destination, datagram, &mut |batch| {
                        send(socket, metrics, &batch)
                    });
                }
                Output::Event(event) => match event {
                    Event::Connected => {
                        debug!(stream = %self.name, session = %self.id, "webrtc connected");
                        *connected = true;
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        return Err(Ended::Disconnected);
                    }
                    Event::MediaAdded(added) => {
                        match added.kind {
                            MediaKind::Video => {
                                tracks.video = tracks.video.or_else(|| self.video(added.mid));
                            }
                            MediaKind::Audio => {
                                tracks.audio = tracks.audio.or_else(|| self.opus(added.mid));
                            }
                        }
                        if let Some(stream) =
                            self.rtc.direct_api().stream_tx_by_mid(added.mid, None)
                        {
                            stream.set_rtx_cache(RTX_PACKETS, RTX_AGE, Some(RTX_RATIO_CAP));
                        }
                    }
                    Event::KeyframeRequest(request) => {
                        debug!(stream = %self.name, session = %self.id, kind = ?request.kind, "keyframe request");
                        self.answer_keyframe_request(tracks, sending);
                    }
                    _ => {}
                },
            }
        }
    }

    /// The first payload type the viewer offered on line `mid` that `fits`.
    fn offered(&self, mid: Mid, fits: impl Fn(&CodecSpec) -> bool) -> Option<Pt> {
        let offered = self.rtc.media(mid)?.remote_pts();
        self.rtc.codec_config().params().iter().find_map(|params| {
            (fits(&params.spec()) && offered.contains(&params.pt())).then(|| params.pt())
        })
    }

    /// The video line's payload types: H.264 in packetization mode 1 (fragmented NAL
    /// units, which the feed makes), HEVC and AV1, those the viewer offered; none of them,
    /// no video.
    fn video(&self, mid: Mid) -> Option<VideoTrack> {
        let track = VideoTrack {
            mid,
            h264: self.offered(mid, |spec| {
                spec.codec == Codec::H264 && spec.format.packetization_mode == Some(1)
            }),
            hevc: self.offered(mid, |spec| spec.codec == Codec::H265),
            av1: self.offered(mid, |spec| spec.codec == Codec::Av1),
        };
        (track.h264.is_some() || track.hevc.is_some() || track.av1.is_some()).then_some(track)
    }

    fn opus(&self, mid: Mid) -> Option<Track> {
        let pt = self.offered(mid, |spec| spec.codec == Codec::Opus)?;
        Some(Track { mid, pt })
    }
}

/// Send `batch` without waiting: a full socket buffer drops packets (the viewer asks again
/// for what it misses, NACK) rather than hold every session.
fn send(socket: &UdpSocket, metrics: &Metrics, batch: &Batch<'_>) {
    let lost = batch::send(socket, batch);
    if lost > 0 {
        Metrics::add(&metrics.webrtc_packets_dropped_total, lost as u64);
    }
}

/// The next unit of the feed, once the session takes them (never, before).
async fn next_unit(units: &mut Option<broadcast::Receiver<Unit>>) -> Result<Unit, RecvError> {
    match units {
        Some(units) => units.recv().await,
        None => std::future::pending().await,
    }
}
