//! WebRTC playback (WHEP): a browser posts an SDP offer to `/{app}/{room}/whep` on the
//! player port and gets an answer whose one candidate is this node's WebRTC UDP port.
//!
//! The WebRTC stack is [`str0m`], sans-IO like the rest of the house: each session is an
//! ICE-lite `Rtc` in RTP mode driven by a task of its own ([`session`]). A stream with
//! WebRTC sessions has one [`feed`]: it takes the stream's frames from the hub once and
//! makes them RTP payloads once (H.264 as RTSP packetizes it; AAC transcoded to Opus),
//! and every session writes those same payloads under its own numbering
//! ([`outgoing`]), starting at the GOP cache's keyframe. A viewer's keyframe request is
//! answered from the GOP cache, not passed to the publisher. DTLS and SRTP use the
//! system's OpenSSL.
//!
//! Every session shares one UDP socket (`--webrtc-udp-addr`): [`WebRtc::receive`] reads
//! it and hands each datagram to its session, found by the sender's address, or for the
//! first datagrams from an address (STUN binding requests), by the server's half of the
//! STUN username, the ufrag this node put in the session's answer.
//!
//! Publishers (WHIP) have sessions on the same socket: [`ingest`].

mod batch;
mod feed;
mod ingest;
mod outgoing;
mod session;

pub use ingest::PublisherAnswer;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use media::hub::{Hub, Subscriber};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::ice::{IceCreds, StunMessage};
use str0m::rtp::Extension;
use str0m::{Candidate, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info};

use crate::admission::{Admission, ConnectionLimits, Refused};
use crate::hooks::NotifyOnDrop;
use crate::metrics::{Metrics, Protocol, ViewerGuard};

/// Where WebRTC listens and what it tells browsers.
#[derive(Debug, Clone)]
pub struct WebRtcConfig {
    /// The UDP socket every session shares.
    pub udp_addr: SocketAddr,
    /// The address put in answers' candidates (none: the socket's address when it names
    /// one, else the address the offer's HTTP request came in on).
    pub public_ip: Option<IpAddr>,
    /// Sessions open at once, in all and from one IP address (the player port's
    /// connection caps): each holds a task, its `Rtc` and a place on the socket.
    pub limits: ConnectionLimits,
}

/// A datagram bigger than this is no WebRTC packet of a viewer (they stay under the path
/// MTU, and a viewer sends only STUN, DTLS and RTCP).
const MAX_DATAGRAM: usize = 2048;
/// The shared socket's receive and send buffers, asked of the kernel.
const SOCKET_BUFFER: usize = 8 << 20;
/// Datagrams waiting for a session's task; more are dropped, as a full socket would.
const INBOX: usize = 128;
/// Addresses one session may be reached from (a browser tries each of its candidates).
const ADDRESSES_PER_SESSION: usize = 8;

/// Why an offer gets no session.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the offer is not valid SDP: {0}")]
    BadOffer(String),
    #[error("the offer cannot be answered: {0}")]
    Refused(String),
    #[error("too many WebRTC sessions: {0}")]
    TooMany(Refused),
}

/// A session as the socket's reader and the HTTP handlers see it.
struct Entry {
    stream: String,
    ufrag: String,
    inbox: mpsc::Sender<Datagram>,
    /// Raised by DELETE: the session's task ends.
    stop: Arc<Notify>,
    addresses: Vec<SocketAddr>,
    /// A publisher's session (WHIP), which only a WHIP DELETE ends.
    publishing: bool,
}

#[derive(Default)]
struct Sessions {
    by_id: HashMap<String, Entry>,
    by_ufrag: HashMap<String, String>,
    by_address: HashMap<SocketAddr, String>,
}

/// One received datagram.
struct Datagram {
    source: SocketAddr,
    at: Instant,
    contents: Bytes,
}

impl Datagram {
    /// What an `Rtc` takes of it, sent to `destination` (the session's candidate); none
    /// when it is no STUN, DTLS or RTP.
    fn input(&self, destination: SocketAddr) -> Option<str0m::Input<'_>> {
        let contents = self.contents.as_ref().try_into().ok()?;
        Some(str0m::Input::Receive(
            self.at,
            str0m::net::Receive {
                proto: str0m::net::Protocol::Udp,
                source: self.source,
                destination,
                contents,
            },
        ))
    }
}

/// The node's WebRTC: the shared socket and its sessions.
pub struct WebRtc {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    config: WebRtcConfig,
    crypto: Arc<CryptoProvider>,
    /// One certificate for every session: making one costs a key generation, and a
    /// browser checks the fingerprint in the answer, not who signed it.
    certificate: DtlsCert,
    sessions: Mutex<Sessions>,
    /// The caps on open sessions (the config's limits).
    admission: Arc<Admission>,
    /// Each stream's payloads, made once for all of its sessions.
    feeds: feed::Feeds,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
}

/// What a session takes with it: the viewer's counts and the `on_stop` notice, dropped
/// when it ends.
pub struct Viewer {
    /// The viewer's place in the stream (on an edge, what started the pull); its frames
    /// come from the stream's feed, so only its count is kept.
    pub frames: Subscriber,
    pub peer: SocketAddr,
    pub stop_notice: Option<NotifyOnDrop>,
}

impl WebRtc {
    /// Bind the shared socket.
    pub async fn bind(
        config: WebRtcConfig,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<WebRtc>> {
        let socket = UdpSocket::bind(config.udp_addr).await?;
        // Every session's datagrams share this socket: the kernel's default buffers (about
        // 200 KiB) overflow when a few hundred players join at once (STUN and DTLS in) or
        // get their first GOP (out). The kernel caps these at net.core.rmem_max/wmem_max.
        let buffers = socket2::SockRef::from(&socket);
        let _ = buffers.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = buffers.set_send_buffer_size(SOCKET_BUFFER);
        let local = socket.local_addr()?;
        let crypto = str0m::crypto::from_feature_flags();
        let certificate = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| std::io::Error::other("OpenSSL made no DTLS certificate"))?;
        let admission = Admission::new("WebRTC", config.limits);
        Ok(Arc::new(WebRtc {
            socket: Arc::new(socket),
            local,
            config,
            crypto: Arc::new(crypto),
            certificate,
            sessions: Mutex::default(),
            admission,
            feeds: feed::Feeds::default(),
            hub,
            metrics,
        }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions open now.
    pub fn open_sessions(&self) -> usize {
        self.sessions().by_id.len()
    }

    /// The start of every session's `Rtc`: ICE-lite, fresh ICE credentials and this node's
    /// DTLS certificate. Its ufrag, by which the socket's reader finds the session.
    fn session_config(&self) -> (RtcConfig, String) {
        let credentials = IceCreds::new();
        let ufrag = credentials.ufrag.clone();
        let config = Rtc::builder()
            .set_ice_lite(true)
            .set_local_ice_credentials(credentials)
            .set_crypto_provider(self.crypto.clone())
            .set_dtls_cert(self.certificate.clone());
        (config, ufrag)
    }

    /// Give `rtc` this node's one candidate (see [`WebRtc::candidate`]) and answer `offer`:
    /// the answer, and the candidate.
    fn answer(
        &self,
        rtc: &mut Rtc,
        offer: SdpOffer,
        via: IpAddr,
    ) -> Result<(SdpAnswer, SocketAddr), OpenError> {
        let candidate = self.candidate(via);
        let host =
            Candidate::host(candidate, "udp").map_err(|e| OpenError::Refused(e.to_string()))?;
        rtc.add_local_candidate(host);
        let answer = (rtc.sdp_api())
            .accept_offer(offer)
            .map_err(|e| OpenError::Refused(e.to_string()))?;
        Ok((answer, candidate))
    }

    /// The candidate browsers are told to reach: the configured public address, the
    /// socket's own when it names one, else the address the offer came in on (`via`).
    fn candidate(&self, via: IpAddr) -> SocketAddr {
        let ip = self
            .config
            .public_ip
            .or(Some(self.local.ip()).filter(|ip| !ip.is_unspecified()))
            .unwrap_or(via);
        SocketAddr::new(ip, self.local.port())
    }

    /// Answer `offer` for `viewer` of `stream`: the session's id and the SDP answer. The
    /// session runs until the viewer leaves (DELETE, ICE or DTLS failing, consent lapsing)
    /// or the stream ends.
    pub fn open(
        self: &Arc<Self>,
        stream: &str,
        offer: &str,
        via: IpAddr,
        viewer: Viewer,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(String, String), OpenError> {
        let offer = parse_offer(offer)?;
        let admitted = self
            .admission
            .admit(viewer.peer.ip())
            .map_err(OpenError::TooMany)?;
        let (config, ufrag) = self.session_config();
        let mut rtc = config
            // The feed's payloads are written as they are, under the session's numbering.
            .set_rtp_mode(true)
            // What the hub's streams carry and a browser plays: a session sends each
            // picture in its codec, among those the browser offered.
            .clear_codecs()
            .enable_h264(true)
            .enable_h265(true)
            .enable_av1(true)
            .enable_opus(true, false)
            // Only the media's id in the header: no transport-wide sequence numbers, so
            // browsers send no congestion feedback (TWCC) for the node to account for,
            // per packet and per viewer, when it adapts nothing to it.
            .clear_extension_map()
            .set_extension(4, Extension::RtpMid)
            .build(Instant::now());
        let (answer, candidate) = self.answer(&mut rtc, offer, via)?;
        let watching = viewer.frames.into_watching();
        let feed = self
            .feeds
            .get_or_start(stream, watching.stream_id(), &self.hub, &self.metrics)
            .ok_or_else(|| OpenError::Refused("the stream ended".into()))?;
        let id = session_id();
        let (inbox, datagrams) = mpsc::channel(INBOX);
        let stop = Arc::new(Notify::new());
        {
            let mut sessions = self.sessions();
            sessions.by_ufrag.insert(ufrag.clone(), id.clone());
            sessions.by_id.insert(
                id.clone(),
                Entry {
                    stream: stream.to_owned(),
                    ufrag,
                    inbox,
                    stop: stop.clone(),
                    addresses: Vec::new(),
                    publishing: false,
                },
            );
        }
        let registered = Registered {
            webrtc: self.clone(),
            id: id.clone(),
        };
        let counted = ViewerGuard::new(self.metrics.clone(), Protocol::WebRtc, stream);
        info!(stream, peer = %viewer.peer, session = %id, %candidate, "webrtc viewer start");
        let task = session::Session {
            rtc,
            socket: self.socket.clone(),
            candidate,
            datagrams,
            stop,
            metrics: self.metrics.clone(),
            name: stream.to_owned(),
            id: id.clone(),
            feed,
            batcher: Default::default(),
        };
        tokio::spawn(async move {
            let _registered = registered;
            let _counted = counted;
            let _admitted = admitted;
            let peer = viewer.peer;
            let name = task.name.clone();
            let id = task.id.clone();
            let ended = task.run(shutdown).await;
            drop(watching);
            drop(viewer.stop_notice);
            info!(stream = %name, %peer, session = %id, why = %ended, "webrtc viewer end");
        });
        Ok((id, answer.to_sdp_string()))
    }

    /// End session `id` of `stream` (a WHEP DELETE). Whether there was one.
    pub fn close(&self, stream: &str, id: &str) -> bool {
        let sessions = self.sessions();
        match sessions.by_id.get(id) {
            Some(entry) if !entry.publishing && entry.stream == stream => {
                entry.stop.notify_one();
                true
            }
            _ => false,
        }
    }

    /// Read the shared socket until the node stops, handing each datagram to its session.
    pub async fn receive(self: Arc<Self>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (len, source) = match self.socket.recv_from(&mut buf).await {
                Ok(received) => received,
                // An ICMP error for an earlier send (a viewer gone): nothing to do here;
                // its session notices the silence.
                Err(e) => {
                    debug!(error = %e, "webrtc socket");
                    continue;
                }
            };
            let contents = &buf[..len];
            let Some(inbox) = self.route(source, contents) else {
                continue;
            };
            let datagram = Datagram {
                source,
                at: Instant::now(),
                contents: Bytes::copy_from_slice(contents),
            };
            // A session that cannot keep up loses datagrams, as a full socket buffer would.
            let _ = inbox.try_send(datagram);
        }
    }

    /// The inbox of the session a datagram from `source` is for, if any.
    fn route(&self, source: SocketAddr, contents: &[u8]) -> Option<mpsc::Sender<Datagram>> {
        let mut sessions = self.sessions();
        if let Some(id) = sessions.by_address.get(&source) {
            return sessions.by_id.get(id).map(|e| e.inbox.clone());
        }
        // An address not seen yet: only a STUN binding request naming a session's ufrag
        // ("ours:theirs") opens the way; the session checks its integrity.
        let stun = StunMessage::parse(contents).ok()?;
        if !stun.is_binding_request() {
            return None;
        }
        let (ours, _) = stun.split_username()?;
        let id = sessions.by_ufrag.get(ours)?.clone();
        let entry = sessions.by_id.get_mut(&id)?;
        if entry.addresses.len() >= ADDRESSES_PER_SESSION {
            return None;
        }
        entry.addresses.push(source);
        let inbox = entry.inbox.clone();
        sessions.by_address.insert(source, id);
        Some(inbox)
    }
}

/// A session's place in the maps, given up when its task ends.
struct Registered {
    webrtc: Arc<WebRtc>,
    id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut sessions = self.webrtc.sessions();
        if let Some(entry) = sessions.by_id.remove(&self.id) {
            sessions.by_ufrag.remove(&entry.ufrag);
            for address in entry.addresses {
                sessions.by_address.remove(&address);
            }
        }
    }
}

/// `offer` as SDP. The parser's error runs over several lines (and names a pointer): its
/// first says it.
fn parse_offer(offer: &str) -> Result<SdpOffer, OpenError> {
    SdpOffer::from_sdp_string(offer).map_err(|e| {
        let why = e.to_string();
        OpenError::BadOffer(why.lines().next().unwrap_or_default().to_owned())
    })
}

/// 128 random bits in hex: the session's resource name, which is all a DELETE needs.
fn session_id() -> String {
    let mut bytes = [0u8; 16];
    // The kernel's randomness; should it fail, the PRNG still makes ids that differ.
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        bytes = fastrand::u128(..).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
