//! What every ferrolive node serves, whatever its role: the RTMP listener (publish and
//! play), the player HTTP port (HTTP-FLV, HLS, metrics, health), each stream's fan-out to
//! its viewers and the tapes it sends from, around one [`media::hub::Hub`].
//!
//! A node's role plugs in through [`Role`]: whether a client may publish, and where the
//! stream a viewer asks for comes from. This crate depends on no role; `origin` and `edge`
//! implement one each.

pub mod admission;
pub mod fanout;
pub mod hls;
pub mod hooks;
pub mod http;
pub mod io;
mod json;
pub mod metrics;
pub mod ratelimit;
pub mod recordings;
mod role;
pub mod rtmp;
pub mod rtsp;
pub mod tls;
pub mod webrtc;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use media::hls::HlsConfig;
use media::hub::{Audience, Hub, HubConfig, Join, Subscriber};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::admission::{Admission, ConnectionLimits};
use crate::fanout::Lanes;
use crate::hls::Hls;
use crate::metrics::Metrics;
pub use crate::role::{Eviction, Hold, PublishRequest, Publishing, Refusal, Role, Shared};
pub use media::names::stream_key;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub rtmp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// RTMPS listen address (needs [`NodeConfig::tls`]).
    pub rtmps_addr: Option<SocketAddr>,
    /// RTSP listen address (none: no RTSP).
    pub rtsp_addr: Option<SocketAddr>,
    /// What an RTSP session over UDP may go without a request or an RTCP packet (a TCP
    /// session lives as long as its connection); its `Session` header says so.
    pub rtsp_session_timeout: Duration,
    /// WebRTC playback (WHEP) and its UDP socket (none: no WebRTC).
    pub webrtc: Option<webrtc::WebRtcConfig>,
    /// The certificate for RTMPS and for HTTPS on the player port (which then takes TLS
    /// and plain connections alike).
    pub tls: Option<Arc<tls::Certificates>>,
    /// How long viewers wait for a publisher that vanished without unpublishing.
    pub reconnect_grace: Duration,
    /// Kernel send buffer for each viewer socket (0: the kernel's autotuning). A bound keeps
    /// a slow viewer's lag visible to us, so it skips ahead instead of hiding seconds of
    /// video in the kernel, and bounds kernel memory per viewer.
    pub viewer_send_buffer: usize,
    /// How long a viewer's picture may wait for the next one to share its write (zero:
    /// each is written at once); see [`fanout`].
    pub merge_window: Duration,
    pub hub: HubConfig,
    pub hls: HlsConfig,
    /// Apps with HLS settings of their own (an origin cuts their segments to their
    /// target too).
    pub app_hls: BTreeMap<String, HlsConfig>,
    /// The apps streams may be published and played under (empty: any valid name).
    pub apps: Vec<String>,
    /// How long a graceful shutdown may take at most (stop accepting, end streams, release
    /// what the role holds); after it [`run`] returns anyway.
    pub shutdown_grace: Duration,
    /// Caps on open connections, per listener (see [`admission`]).
    pub rtmp_limits: ConnectionLimits,
    pub http_limits: ConnectionLimits,
    /// Where recordings are, for `/recordings/...` (none: not served).
    pub record_dir: Option<PathBuf>,
    /// Where the console's player libraries are (none: the pages load them from a CDN).
    pub console_assets: Option<PathBuf>,
    /// With a secret, every play needs a token signed with it (see [`media::token`]).
    pub play_secret: Option<media::token::PlaySecret>,
    /// Hooks to ask and tell about publishes and plays.
    pub hooks: hooks::HooksConfig,
    /// Player HTTP requests a client address may make per second (0: no limit).
    pub http_requests_per_ip: u32,
    /// Declared bytes of unfinished RTMP messages the node holds at most for connections
    /// that are not publishing, all together (see [`rtmp::IncompleteMessages`]).
    pub rtmp_incomplete_limit: usize,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    // The cause is part of the message rather than a `source`, so that printing the error
    // with its chain does not say it twice.
    #[error("cannot listen for {what} on {addr}: {error}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The node's role could not start.
    #[error("{0}")]
    Role(String),
}

/// State shared by every connection of a node.
pub struct Node {
    pub config: NodeConfig,
    pub hub: Arc<Hub>,
    pub hls: Arc<Hls>,
    /// The fan-outs that write streams to RTMP and HTTP-FLV viewers.
    pub lanes: Arc<Lanes>,
    pub metrics: Arc<Metrics>,
    pub role: Arc<dyn Role>,
    pub hooks: Arc<hooks::Hooks>,
    pub rtmp_admission: Arc<Admission>,
    pub http_admission: Arc<Admission>,
    /// RTSP connections take the RTMP listener's caps.
    pub rtsp_admission: Arc<Admission>,
    pub incomplete: Arc<rtmp::IncompleteMessages>,
    /// Player HTTP requests per client address ([`NodeConfig::http_requests_per_ip`]).
    pub request_limits: ratelimit::RateLimiter,
    /// Where TLS connections are ended, with a certificate.
    pub tls: Option<tls::Terminator>,
    /// WebRTC sessions and their shared socket, when configured.
    pub webrtc: Option<Arc<webrtc::WebRtc>>,
    /// Raised once when the node starts shutting down; connections watch it.
    shutdown: watch::Sender<bool>,
}

impl Node {
    /// Whether streams of `app` may be published and played here.
    pub fn serves_app(&self, app: &str) -> bool {
        self.config.apps.is_empty() || self.config.apps.iter().any(|a| a == app)
    }

    /// Whether the stream `key` (`app/room`) is of an app served here.
    fn serves_stream(&self, key: &str) -> bool {
        key.split_once('/')
            .is_some_and(|(app, _)| self.serves_app(app))
    }

    /// Take the frames of `key`, the stream the role finds or starts for it: for the HLS
    /// packager (`Audience::Internal`, not a viewer), starting with the stream's last few
    /// segments; for a player that muxes its own (HTTP-TS), with the headers and the
    /// current GOP.
    pub async fn subscribe(&self, key: &str, audience: Audience) -> Option<Subscriber> {
        if !self.serves_stream(key) {
            return None;
        }
        let mut subscriber = None;
        let hub = &self.hub;
        self.role
            .attach(key, &mut || {
                subscriber = match audience {
                    Audience::Internal => hub.subscribe_history(key, audience),
                    _ => hub.subscribe(key, audience),
                };
                subscriber.is_some()
            })
            .await;
        subscriber
    }

    /// Attach a viewer the fan-out serves (see [`Lanes::attach`]) to `key`, the stream the
    /// role finds or starts for it.
    /// A relay (an edge pulling the stream) starts with the stream's last few HLS
    /// segments, so that its own packager can list them at once.
    pub async fn join(&self, key: &str, audience: Audience) -> Option<Join> {
        if !self.serves_stream(key) {
            return None;
        }
        let mut joined = None;
        let hub = &self.hub;
        self.role
            .attach(key, &mut || {
                joined = match audience {
                    Audience::Relay => hub.join_history(key, audience),
                    _ => hub.join(key, audience),
                };
                joined.is_some()
            })
            .await;
        joined
    }

    /// Attach an RTSP player to `key`, the stream the role finds or starts for it, once it
    /// has a track RTP can carry (waiting up to `wait` for its codec headers: an edge's
    /// pull has just begun). See [`media::hub::Hub::join_rtp`].
    pub async fn join_rtp(
        &self,
        key: &str,
        origin: &str,
        wait: Duration,
    ) -> Option<media::hub::RtpJoin> {
        if !self.serves_stream(key) {
            return None;
        }
        let deadline = Instant::now() + wait;
        loop {
            let mut joined = None;
            let hub = &self.hub;
            let live = self
                .role
                .attach(key, &mut || {
                    joined = hub.join_rtp(key, fastrand::u64(..), origin);
                    joined.is_some() || hub.is_live(key)
                })
                .await;
            if joined.is_some() || !live || Instant::now() >= deadline {
                return joined;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `client` may play `stream` with the `token=` in `query`: always without a
    /// play secret.
    pub fn authorize_play(
        &self,
        stream: &str,
        query: &str,
        client: std::net::IpAddr,
    ) -> Result<(), media::token::TokenError> {
        let Some(secret) = &self.config.play_secret else {
            return Ok(());
        };
        let now = media::calendar::unix_now_ms() / 1000;
        secret.verify(stream, media::token::from_query(query), now, client)
    }

    /// Ask the `on_play` hook whether `peer` may play `stream` over `protocol` (with the
    /// query of its URL). What it gives, held while the player plays, tells the `on_stop`
    /// hook when dropped.
    pub async fn ask_to_play(
        &self,
        stream: &str,
        query: &str,
        peer: SocketAddr,
        protocol: metrics::Protocol,
    ) -> Result<Option<hooks::NotifyOnDrop>, hooks::HookRefusal> {
        if !self.hooks.watch_plays(media::names::app_of(stream)) {
            // Most nodes have no hooks: a play costs nothing for them.
            return Ok(None);
        }
        let request = hooks::HookRequest {
            client: Some(peer),
            query: query.to_owned(),
            ..hooks::HookRequest::for_stream(stream, protocol.label())
        };
        self.hooks.ask(hooks::HookEvent::Play, &request).await?;
        Ok(self.hooks.notify_on_drop(hooks::HookEvent::Stop, request))
    }

    /// The token to carry into the URIs a playlist lists (`None` without a play secret).
    pub fn token_to_carry<'a>(&self, query: &'a str) -> Option<&'a str> {
        self.config
            .play_secret
            .as_ref()
            .and(media::token::from_query(query))
    }

    /// A publisher that left without ending its stream (no unpublish, no TEARDOWN): its
    /// viewers are held for the reconnect grace, so a broadcaster that reconnects does not
    /// lose them; then the stream ends unless a new publisher took it.
    pub fn hold_for_reconnect(&self, publisher: media::hub::Publisher, peer: SocketAddr) {
        let (name, generation) = (publisher.name().to_owned(), publisher.generation());
        drop(publisher);
        let hub = self.hub.clone();
        let grace = self.config.reconnect_grace;
        info!(stream = %name, %peer, "publisher gone; holding viewers for {grace:?}");
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            hub.end_if_orphaned(&name, generation);
        });
    }

    /// Whether the node is shutting down.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves once the node starts shutting down (at once if it already did).
    pub fn shutting_down(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|down| *down).await;
        }
    }
}

/// The hub and counters a node of `config` serves, to hand to its role before [`run`].
pub fn shared(config: &NodeConfig) -> Shared {
    let mut hub = config.hub.clone();
    hub.segment_targets_by_app = config
        .app_hls
        .iter()
        .map(|(app, hls)| (app.clone(), hls.target_duration))
        .collect();
    Shared {
        hub: Hub::new(hub),
        lanes: Arc::new(Lanes::new(config.merge_window)),
        metrics: Arc::new(Metrics::default()),
        hooks: Arc::new(hooks::Hooks::new(config.hooks.clone())),
    }
}

/// Bind the listeners and serve `shared`'s streams, with `role` deciding, until `shutdown`
/// resolves; then shut down gracefully.
pub async fn run(
    config: NodeConfig,
    shared: Shared,
    role: Arc<dyn Role>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|error| StartError::Bind { what, addr, error })
    };
    let rtmp = bind("RTMP", config.rtmp_addr).await?;
    let http = bind("player HTTP", config.http_addr).await?;
    let rtmps = match config.rtmps_addr {
        Some(addr) => Some(bind("RTMPS", addr).await?),
        None => None,
    };
    let rtsp = match config.rtsp_addr {
        Some(addr) => Some(bind("RTSP", addr).await?),
        None => None,
    };
    let metrics = shared.metrics;
    let webrtc = match &config.webrtc {
        Some(webrtc) => Some(
            webrtc::WebRtc::bind(webrtc.clone(), shared.hub.clone(), metrics.clone())
                .await
                .map_err(|error| StartError::Bind {
                    what: "WebRTC (UDP)",
                    addr: webrtc.udp_addr,
                    error,
                })?,
        ),
        None => None,
    };
    let local = |l: &TcpListener| {
        l.local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string())
    };
    info!(rtmp = %local(&rtmp), http = %local(&http), rtsp = ?rtsp.as_ref().map(local), webrtc = ?webrtc.as_ref().map(|w| w.local_addr()), rtmps = ?rtmps.as_ref().map(local), tls = config.tls.is_some(), "listening");
    let tls = match &config.tls {
        Some(certificates) => {
            certificates.watch();
            let terminator = tls::Terminator::new(certificates.clone()).await;
            Some(terminator.map_err(|error| StartError::Bind {
                what: "TLS (loopback)",
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                error,
            })?)
        }
        None => None,
    };
    let node = Arc::new(Node {
        hub: shared.hub,
        hls: Arc::new(Hls::new(config.hls.clone(), config.app_hls.clone())),
        lanes: shared.lanes,
        metrics,
        hooks: shared.hooks,
        role,
        rtmp_admission: Admission::new("RTMP", config.rtmp_limits),
        http_admission: Admission::new("player HTTP", config.http_limits),
        rtsp_admission: Admission::new("RTSP", config.rtmp_limits),
        incomplete: Arc::new(rtmp::IncompleteMessages::new(config.rtmp_incomplete_limit)),
        request_limits: ratelimit::RateLimiter::per_second(config.http_requests_per_ip),
        tls,
        webrtc: webrtc.clone(),
        config,
        shutdown: watch::channel(false).0,
    });
    let mut listeners = vec![
        tokio::spawn(rtmp::serve(rtmp, node.clone(), false)),
        tokio::spawn(http::serve(http, node.clone())),
    ];
    if let Some(rtmps) = rtmps {
        listeners.push(tokio::spawn(rtmp::serve(rtmps, node.clone(), true)));
    }
    if let Some(rtsp) = rtsp {
        listeners.push(tokio::spawn(rtsp::serve(rtsp, node.clone())));
    }
    if let Some(webrtc) = webrtc {
        listeners.push(tokio::spawn(webrtc.receive()));
    }
    shutdown.await;
    graceful_shutdown(&node, listeners).await;
    Ok(())
}

/// Time kept at the end of the grace for viewers to receive the end of their streams.
const DRAIN_RESERVE: Duration = Duration::from_millis(500);
const SHUTDOWN_POLL: Duration = Duration::from_millis(20);

/// Stop accepting, end every stream (publishers are finished, so players get their end:
/// UnpublishNotify, the chunked terminator, ENDLIST), let the role give back what it holds
/// (leases, the node's heartbeat) and let viewers drain: all within
/// [`NodeConfig::shutdown_grace`], even with the registry unreachable (every step is
/// bounded; past the grace we give up).
async fn graceful_shutdown(node: &Arc<Node>, listeners: Vec<tokio::task::JoinHandle<()>>) {
    let started = Instant::now();
    let grace = node.config.shutdown_grace;
    let deadline = started + grace;
    info!(?grace, "shutting down");
    // Stop accepting: the accept loops own the listeners, which close as the tasks end.
    for task in listeners {
        task.abort();
        let _ = tokio::time::timeout_at(deadline, task).await;
    }
    // Publisher connections finish their streams and drop what the role holds for them.
    node.shutdown.send_replace(true);
    let role_deadline = deadline
        .checked_sub(DRAIN_RESERVE.min(grace / 4))
        .unwrap_or(deadline)
        .max(started);
    let end_streams = async {
        // Streams whose publisher vanished (held for a reconnect that will not come here)
        // end now; live publishers end themselves on the shutdown signal.
        loop {
            for stream in node.hub.list() {
                if !stream.has_publisher {
                    node.hub.end_if_orphaned(&stream.name, stream.generation);
                }
            }
            if node.hub.list().is_empty() {
                break;
            }
            tokio::time::sleep(SHUTDOWN_POLL).await;
        }
    };
    let steps = async { tokio::join!(end_streams, node.role.shut_down(role_deadline)) };
    if tokio::time::timeout_at(role_deadline, steps).await.is_err() {
        let live: Vec<String> = node.hub.list().into_iter().map(|s| s.name).collect();
        warn!(?live, "shutdown steps did not finish in time");
    }
    // Let viewers and relays receive the end of their streams (bounded by the grace).
    let watching = || {
        node.metrics.viewers.load(Ordering::Relaxed) + node.metrics.relays.load(Ordering::Relaxed)
    };
    while watching() > 0 && Instant::now() < deadline {
        tokio::time::sleep(SHUTDOWN_POLL).await;
    }
    // The last writes of the connections that just ended.
    tokio::time::sleep_until((Instant::now() + SHUTDOWN_POLL * 5).min(deadline)).await;
    info!(after = ?started.elapsed(), "shut down");
}
