//! WebRTC publishing (WHIP): a publisher's session on the node's shared UDP socket, ICE-lite
//! and DTLS-SRTP through str0m like a WHEP viewer's, receiving H.264 and Opus.
//!
//! The HTTP side (`http::whip`) has this module answer the offer first
//! ([`WebRtc::answer_publisher`]: nothing is claimed, so a bad offer costs nothing), then
//! asks the role exactly as for an RTMP or RTSP publish (channel key, `on_publish` hook, one
//! publisher per stream), and then has the session run ([`WebRtc::start_publish`]): str0m's
//! frame mode gives whole H.264 access units and Opus packets, which [`tags`] turns into
//! the hub's FLV tag bodies (Opus transcoded to AAC once, here, so every player and
//! recording gets AAC).
//!
//! A browser sends a keyframe only when asked: the session asks (PLI) until the first one
//! comes and then every [`tags::KEYFRAME_EVERY`].
//!
//! The session ends on `DELETE` or the node's shutdown (the stream ends cleanly), or when
//! the publisher vanishes: ICE disconnects, nothing comes for [`SILENCE`], the role evicts
//! it. A vanished publisher's viewers are held for the reconnect grace, as for RTMP.

mod tags;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use media::hub::Pushed;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

use self::tags::{IngestTags, KeyframeAsks, SenderReport, Tag};
use super::{parse_offer, session_id, Datagram, Entry, OpenError, Registered, WebRtc};
use crate::admission::Admitted;
use crate::metrics::Metrics;
use crate::{Node, Publishing};

/// ICE and DTLS must be up this soon after the answer.
const CONNECT_DEADLINE: Duration = Duration::from_secs(15);
/// A publisher that sends nothing (no media, no STUN consent check) this long is gone
/// (RFC 7675's consent lapses after 30 s; browsers check every few seconds).
const SILENCE: Duration = Duration::from_secs(30);
/// Datagrams waiting for a publisher's task: a browser sends a keyframe as a burst of
/// a hundred packets or more, which a viewer's inbox is not made for.
const INBOX: usize = 1024;
/// How often the session looks at its own deadlines and the keyframe asks.
const TICK: Duration = Duration::from_millis(250);

/// H.264 as the session takes it: packetization mode 1 only (mode 0 cannot carry a
/// picture larger than a packet), in the profiles browsers offer; (payload type, its
/// retransmission's, profile-level-id). Anything else offered is not negotiated.
const H264_MODE_1: [(u8, u8, u32); 4] = [
    (127, 121, 0x42001f),
    (108, 109, 0x42e01f),
    (123, 119, 0x4d001f),
    (114, 115, 0x64001f),
];

/// A publisher's offer answered: its `Rtc`, not yet a session.
pub struct PublisherAnswer {
    rtc: Rtc,
    candidate: SocketAddr,
    ufrag: String,
    pub sdp: String,
    /// The session's place under the caps on sessions, held from the answer on.
    admitted: Admitted,
}

/// Why a publish session ended (for the log; whether the stream ends with it or waits for
/// a reconnect is decided by it).
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("ended by the publisher (DELETE)")]
    Deleted,
    #[error("node shutting down")]
    Shutdown,
    #[error("not connected within {0:?}")]
    NeverConnected(Duration),
    #[error("nothing from the publisher for {0:?}")]
    Silent(Duration),
    #[error("ICE disconnected")]
    Disconnected,
    #[error("kicked, or the stream moved")]
    Evicted,
    #[error("replaced by a newer publisher")]
    Replaced,
    #[error("webrtc: {0}")]
    Rtc(#[from] str0m::RtcError),
}

impl WebRtc {
    /// Answer a publisher's `offer` (from `peer`, that came in on `via`): H.264 in
    /// packetization mode 1 and Opus are taken, nothing else. Nothing is claimed yet but
    /// the session's place under the caps.
    pub fn answer_publisher(
        &self,
        offer: &str,
        peer: IpAddr,
        via: IpAddr,
    ) -> Result<PublisherAnswer, OpenError> {
        let offer = parse_offer(offer)?;
        let admitted = self.admission.admit(peer).map_err(OpenError::TooMany)?;
        let (config, ufrag) = self.session_config();
        let mut config = config.clear_codecs().enable_opus(true, false);
        for (pt, rtx, profile) in H264_MODE_1 {
            config
                .codec_config()
                .add_h264(pt.into(), Some(rtx.into()), true, profile);
        }
        let mut rtc = config.build(Instant::now());
        let (answer, candidate) = self.answer(&mut rtc, offer, via)?;
        let sdp = answer.to_sdp_string();
        if !takes_media(&sdp) {
            return Err(OpenError::Refused(
                "no H.264 (packetization-mode 1) or Opus track offered".into(),
            ));
        }
        Ok(PublisherAnswer {
            rtc,
            candidate,
            ufrag,
            sdp,
            admitted,
        })
    }

    /// Run the publisher's session, feeding `publishing`'s stream: its id (the resource
    /// a DELETE names).
    pub fn start_publish(
        self: &Arc<Self>,
        answer: PublisherAnswer,
        publishing: Publishing,
        peer: SocketAddr,
        node: Arc<Node>,
    ) -> String {
        let stream = publishing.publisher.name().to_owned();
        let id = session_id();
        let (inbox, datagrams) = mpsc::channel(INBOX);
        let stop = Arc::new(Notify::new());
        {
            let mut sessions = self.sessions();
            sessions.by_ufrag.insert(answer.ufrag.clone(), id.clone());
            sessions.by_id.insert(
                id.clone(),
                Entry {
                    stream: stream.clone(),
                    ufrag: answer.ufrag,
                    inbox,
                    stop: stop.clone(),
                    addresses: Vec::new(),
                    publishing: true,
                },
            );
        }
        let registered = Registered {
            webrtc: self.clone(),
            id: id.clone(),
        };
        info!(%stream, %peer, session = %id, candidate = %answer.candidate, "webrtc publish start");
        Metrics::add(&node.metrics.publishes_total, 1);
        let session = PublishSession {
            rtc: answer.rtc,
            socket: self.socket.clone(),
            candidate: answer.candidate,
            datagrams,
            stop,
            node: node.clone(),
            stream,
            id: id.clone(),
            video: None,
            told_invalid: false,
        };
        let admitted = answer.admitted;
        tokio::spawn(async move {
            let _registered = registered;
            let _admitted = admitted;
            let Publishing {
                mut publisher,
                hold,
            } = publishing;
            let (stream, id) = (session.stream.clone(), session.id.clone());
            let ended = session.run(&mut publisher, &hold).await;
            info!(%stream, %peer, session = %id, why = %ended, "webrtc publish end");
            match ended {
                // The publisher meant to end (or the node does): viewers get the end.
                Ended::Deleted | Ended::Shutdown | Ended::NeverConnected(_) => {
                    publisher.finish(&node.hub)
                }
                // The stream is its successor's now.
                Ended::Replaced => drop(publisher),
                // It may come back: its viewers wait for the reconnect grace.
                _ => node.hold_for_reconnect(publisher, peer),
            }
            drop(hold);
        });
        id
    }

    /// End publish session `id` of `stream` (a WHIP DELETE). Whether there was one.
    pub fn close_publish(&self, stream: &str, id: &str) -> bool {
        let sessions = self.sessions();
        match sessions.by_id.get(id) {
            Some(entry) if entry.publishing && entry.stream == stream => {
                entry.stop.notify_one();
                true
            }
            _ => false,
        }
    }
}

/// Whether an answer takes a track: H.264 or Opus among its payload types.
fn takes_media(answer: &str) -> bool {
    answer.lines().any(|line| {
        line.starts_with("a=rtpmap:") && {
            let line = line.to_ascii_lowercase();
            line.contains(" h264/90000") || line.contains(" opus/48000")
        }
    })
}

struct PublishSession {
    rtc: Rtc,
    socket: Arc<tokio::net::UdpSocket>,
    candidate: SocketAddr,
    datagrams: mpsc::Receiver<Datagram>,
    stop: Arc<Notify>,
    node: Arc<Node>,
    stream: String,
    id: String,
    /// The video media line, once known (where keyframe requests go).
    video: Option<Mid>,
    told_invalid: bool,
}

impl PublishSession {
    /// Run until the publisher goes; says why.
    async fn run(mut self, publisher: &mut media::hub::Publisher, hold: &crate::Hold) -> Ended {
        let shutdown = self.node.shutting_down();
        tokio::pin!(shutdown);
        let started = Instant::now();
        let mut last_heard = started;
        let mut connected = false;
        let mut tags = IngestTags::new();
        let mut asks = KeyframeAsks::default();
        let mut aligned_told = false;
        let mut out = Vec::new();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = loop {
            let wake = match self.drain(&mut connected, &mut tags, &mut asks, &mut out) {
                Ok(wake) => wake,
                Err(ended) => break ended,
            };
            if let Err(ended) = self.push(publisher, &mut out, &mut asks) {
                break ended;
            }
            if let (false, Some(late)) = (aligned_told, tags.aligned) {
                aligned_told = true;
                debug!(stream = %self.stream, session = %self.id, audio_late_ms = late, "tracks aligned by their sender reports");
            }
            tokio::select! {
                biased;
                _ = self.stop.notified() => break Ended::Deleted,
                _ = &mut shutdown => break Ended::Shutdown,
                _ = hold.evicted() => break Ended::Evicted,
                datagram = self.datagrams.recv() => {
                    let Some(datagram) = datagram else { break Ended::Shutdown };
                    last_heard = datagram.at;
                    // Not STUN, DTLS or RTP: not for WebRTC.
                    let Some(input) = datagram.input(self.candidate) else { continue };
                    if let Err(e) = self.rtc.handle_input(input) {
                        break e.into();
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(Instant::now())) {
                        break e.into();
                    }
                }
                _ = ticks.tick() => {
                    let now = Instant::now();
                    if !connected && now.duration_since(started) > CONNECT_DEADLINE {
                        break Ended::NeverConnected(CONNECT_DEADLINE);
                    }
                    if now.duration_since(last_heard) > SILENCE {
                        break Ended::Silent(SILENCE);
                    }
                    if connected && asks.due(now) {
                        self.ask_for_keyframe();
                    }
                }
            }
        };
        // A DTLS close_notify, so the browser learns at once rather than by silence.
        self.rtc.disconnect();
        let _ = self.drain(&mut connected, &mut tags, &mut asks, &mut out);
        ended
    }

    /// A PLI on the video line (nothing before its first packet: str0m has no stream to
    /// send it on yet, and the next tick asks again).
    fn ask_for_keyframe(&mut self) {
        let Some(mid) = self.video else { return };
        if let Some(mut writer) = self.rtc.writer(mid) {
            if writer
                .request_keyframe(None, KeyframeRequestKind::Pli)
                .is_ok()
            {
                debug!(stream = %self.stream, session = %self.id, "asked the publisher for a keyframe");
            }
        }
    }

    /// Hand the tags made so far to the hub.
    fn push(
        &mut self,
        publisher: &mut media::hub::Publisher,
        out: &mut Vec<Tag>,
        asks: &mut KeyframeAsks,
    ) -> Result<(), Ended> {
        let now = Instant::now();
        for tag in out.drain(..) {
            // A keyframe's tag: frame type 1, AVC, packet type 1 (a picture).
            if tag.kind == media::frame::MediaKind::Video && tag.body.get(..2) == Some(&[0x17, 1]) {
                asks.keyframe(now);
            }
            // The hub extends the 32-bit wire time itself.
            let pushed = publisher
                .push_transcoded(tag.kind, tag.ms as u32, tag.body, tag.published_opus, now)
                .map_err(|_| Ended::Replaced)?;
            if let Pushed::Refused(invalid) = pushed {
                Metrics::add(&self.node.metrics.invalid_media_total, 1);
                if !std::mem::replace(&mut self.told_invalid, true) {
                    warn!(stream = %self.stream, session = %self.id, error = %invalid, "dropping webrtc media that cannot be valid for its codec (said once per publisher)");
                }
            }
        }
        Ok(())
    }

    /// Poll the `Rtc` until it wants the time: send what it made, turn media into tags.
    /// When it next wants the time, or why the session is over.
    fn drain(
        &mut self,
        connected: &mut bool,
        tags: &mut IngestTags,
        asks: &mut KeyframeAsks,
        out: &mut Vec<Tag>,
    ) -> Result<Instant, Ended> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(at) => return Ok(at),
                Output::Transmit(transmit) => {
                    // Non-blocking: what a full socket buffer drops, the peer asks again for.
                    if (self.socket)
                        .try_send_to(&transmit.contents, transmit.destination)
                        .is_err()
                    {
                        Metrics::add(&self.node.metrics.webrtc_packets_dropped_total, 1);
                    }
                }
                Output::Event(event) => match event {
                    Event::Connected => {
                        debug!(stream = %self.stream, session = %self.id, "webrtc publisher connected");
                        *connected = true;
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        return Err(Ended::Disconnected);
                    }
                    Event::MediaAdded(added) if added.kind == MediaKind::Video => {
                        self.video = self.video.or(Some(added.mid));
                    }
                    Event::MediaData(data) => {
                        let report = data.last_sender_info.and_then(|info| {
                            let since = info.ntp_time.duration_since(UNIX_EPOCH).ok()?;
                            Some(SenderReport {
                                rtp: info.rtp_time.numer() as u32,
                                unix_ms: i64::try_from(since.as_millis()).ok()?,
                            })
                        });
                        let rtp = (data.time.numer(), report);
                        let made = match data.params.spec().codec {
                            Codec::H264 => {
                                if !data.contiguous {
                                    asks.broken();
                                }
                                tags.video(&data.data, rtp, data.network_time)
                            }
                            Codec::Opus => tags.audio(&data.data, rtp, data.network_time),
                            _ => Vec::new(),
                        };
                        out.extend(made);
                    }
                    _ => {}
                },
            }
        }
    }
}
