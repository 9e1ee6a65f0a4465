//! One WebRTC viewer: its `Rtc` driven by a task of its own, fed the datagrams the shared
//! socket's reader routes to it, the stream's frames once ICE and DTLS are up, and its
//! own timer.
//!
//! str0m's rule: every change to an `Rtc` (a datagram, a timeout, a written sample) is
//! followed by polling it until it says when it next wants the time ([`Session::drain`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::hub::{Delivery, Subscriber};
use str0m::format::Codec;
use str0m::media::{MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tracing::debug;

use super::samples::{ticks_48khz, ticks_90khz, Sample, Samples};
use super::Datagram;
use crate::fanout::SlowViewerGuard;
use crate::metrics::Metrics;

/// ICE and DTLS must be up this soon after the answer, or the viewer is gone.
const CONNECT_DEADLINE: Duration = Duration::from_secs(15);
/// A viewer that sends nothing (no STUN consent check, no RTCP) this long has left
/// (RFC 7675's consent lapses after 30 s; browsers check every few seconds).
const SILENCE: Duration = Duration::from_secs(30);

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
}

/// Where a media line's samples go.
#[derive(Debug, Clone, Copy)]
struct Track {
    mid: Mid,
    pt: str0m::media::Pt,
}

/// What the session knows of its media lines.
#[derive(Debug, Default)]
struct Tracks {
    video: Option<Track>,
    audio: Option<Track>,
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

impl Session {
    /// Run until the viewer or the stream goes; says why it ended.
    pub async fn run(
        mut self,
        mut frames: Subscriber,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Ended {
        tokio::pin!(shutdown);
        let started = Instant::now();
        let mut last_heard = started;
        let mut connected = false;
        let mut tracks = Tracks::default();
        let mut samples = Samples::new();
        let mut slow = SlowViewerGuard::default();
        // Samples' wall clock: the stream's clock placed at the first sample sent.
        let mut epoch: Option<(Instant, u64)> = None;
        let ended = loop {
            let wake = match self.drain(&mut connected, &mut tracks) {
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
            // Wake for str0m's timer, and at least once a second for our own deadlines.
            let wake = wake.min(now + Duration::from_secs(1));
            // Frames wait in the subscriber (bounded by the hub's backlog: past it, a skip
            // to the next keyframe) until there is somewhere to send them.
            let ready = connected && (tracks.video.is_some() || tracks.audio.is_some());
            tokio::select! {
                biased;
                _ = self.stop.notified() => break Ended::Deleted,
                _ = &mut shutdown => break Ended::Shutdown,
                datagram = self.datagrams.recv() => {
                    let Some(datagram) = datagram else { break Ended::Shutdown };
                    last_heard = datagram.at;
                    let Ok(contents) = datagram.contents.as_ref().try_into() else {
                        // Not STUN, DTLS or RTP: not for WebRTC.
                        continue;
                    };
                    let input = Input::Receive(
                        datagram.at,
                        Receive {
                            proto: Protocol::Udp,
                            source: datagram.source,
                            destination: self.candidate,
                            contents,
                        },
                    );
                    if let Err(e) = self.rtc.handle_input(input) {
                        break e.into();
                    }
                }
                delivery = frames.next(), if ready => match delivery {
                    Delivery::Frame(frame) => {
                        let Some(sample) = samples.push(&frame) else { continue };
                        if let Err(e) = self.write(sample, &tracks, &mut epoch) {
                            break e.into();
                        }
                    }
                    Delivery::Skipped(n) => {
                        samples.skip_to_key();
                        if let Err(e) = slow.skipped(n, &self.metrics, Instant::now()) {
                            break Ended::TooSlow(e.to_string());
                        }
                    }
                    Delivery::End => break Ended::StreamOver,
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
        let _ = self.drain(&mut connected, &mut tracks);
        ended
    }

    /// Write one sample to its media line.
    fn write(
        &mut self,
        sample: Sample,
        tracks: &Tracks,
        epoch: &mut Option<(Instant, u64)>,
    ) -> Result<(), str0m::RtcError> {
        let (track, ms, time, data): (_, _, _, Vec<u8>) = match sample {
            Sample::Video { annexb, pts_ms, .. } => {
                let ms = pts_ms.max(0) as u64;
                let time = MediaTime::from_90khz(ticks_90khz(pts_ms));
                (tracks.video, ms, time, annexb)
            }
            Sample::Opus { packet, ms } => {
                let time =
                    MediaTime::new(ticks_48khz(ms), str0m::media::Frequency::FORTY_EIGHT_KHZ);
                (tracks.audio, ms, time, packet.to_vec())
            }
        };
        let Some(track) = track else {
            return Ok(());
        };
        let (start, first_ms) = *epoch.get_or_insert((Instant::now(), ms));
        let wallclock = start + Duration::from_millis(ms.saturating_sub(first_ms));
        let Some(writer) = self.rtc.writer(track.mid) else {
            return Ok(());
        };
        writer.write(track.pt, wallclock, time, data)
    }

    /// Poll the `Rtc` until it wants the time: send what it made, note what it says.
    /// When it next wants the time, or why the session is over.
    fn drain(&mut self, connected: &mut bool, tracks: &mut Tracks) -> Result<Instant, Ended> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(at) => return Ok(at),
                Output::Transmit(out) => {
                    // Non-blocking: a full socket buffer drops the packet (the viewer asks
                    // again for what it misses, NACK) rather than hold every session.
                    if self
                        .socket
                        .try_send_to(&out.contents, out.destination)
                        .is_err()
                    {
                        Metrics::add(&self.metrics.webrtc_packets_dropped_total, 1);
                    }
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
                        let track = self.track(added.mid, added.kind);
                        match added.kind {
                            MediaKind::Video => tracks.video = tracks.video.or(track),
                            MediaKind::Audio => tracks.audio = tracks.audio.or(track),
                        }
                    }
                    Event::KeyframeRequest(request) => {
                        // The next keyframe comes with the stream's GOP (answering from the
                        // GOP cache is a next step).
                        debug!(stream = %self.name, session = %self.id, kind = ?request.kind, "keyframe request");
                    }
                    _ => {}
                },
            }
        }
    }

    /// The payload type a media line's samples go with: H.264 in packetization mode 1
    /// (fragmented NAL units; mode 0 cannot carry a picture larger than a packet), or Opus.
    fn track(&mut self, mid: Mid, kind: MediaKind) -> Option<Track> {
        let writer = self.rtc.writer(mid)?;
        let pt = writer.payload_params().find_map(|params| {
            let spec = params.spec();
            let fits = match kind {
                MediaKind::Video => {
                    spec.codec == Codec::H264 && spec.format.packetization_mode == Some(1)
                }
                MediaKind::Audio => spec.codec == Codec::Opus,
            };
            fits.then(|| params.pt())
        })?;
        Some(Track { mid, pt })
    }
}
