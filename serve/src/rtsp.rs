//! The RTSP listener: a thin tokio driver around [`media::rtsp::ServerSession`].
//!
//! **Players.** DESCRIBE attaches the player to its stream (an edge pulls it as for any
//! protocol) and starts the stream's RTP packetization, once for every RTSP player
//! ([`media::hub::Hub::join_rtp`]). Over TCP the player is then an ordinary member of the
//! stream's fan-out, whose shared encoding is the frames' interleaved packets: the same
//! zero-copy writes, tapes, merge window, skipping and dropping as RTMP and HTTP-FLV. Over
//! UDP a task of the player's own sends each packet to the player's ports. Both get an
//! RTCP sender report per track every few seconds, so that players can put audio and
//! video on one clock. A UDP player that stops sending RTCP and keep-alives times out.
//!
//! **Publishers.** ANNOUNCE asks the role, as an RTMP publish does (the URL's last part is
//! the channel key); RTP from SETUP's transport (interleaved, or UDP ports of the
//! session's own) is depacketized per track into FLV tag bodies for the hub.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use media::frame::{MediaKind, Tracks};
use media::hub::{Delivery, Join, Publisher, Pushed};
use media::outbox::Format;
use media::rtp::SenderReport;
use media::rtsp::{
    write_interleaved, Lower, RtpInfo, ServerSession, SessionEvent, StreamPath, TagBody,
    TrackReceiver, Transport,
};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

use crate::admission;
use crate::fanout::{EgressError, Membership, Pace, Pump};
use crate::hooks::NotifyOnDrop;
use crate::io::{limit_send_buffer, read_some, write_all};
use crate::metrics::{GaugeGuard, Metrics, Protocol, ViewerGuard};
use crate::{stream_key, Hold, Node, PublishRequest, Publishing};

/// Time allowed from connecting to PLAY or RECORD.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(10);
/// A publisher that sends nothing for this long is dropped (its viewers wait for it).
const PUBLISH_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How often players get an RTCP sender report per track.
const SENDER_REPORT_EVERY: Duration = Duration::from_secs(5);
/// How long DESCRIBE waits for a stream's codec headers (an edge's pull just started).
const HEADERS_WAIT: Duration = Duration::from_secs(3);
/// RTP packets from a UDP publisher waiting for its connection's task; more are lost.
const UDP_QUEUE: usize = 1024;
const READ_BUFFER: usize = 64 * 1024;
const SMALL_READ_BUFFER: usize = 4 * 1024;

pub async fn serve(listener: TcpListener, node: Arc<Node>) {
    loop {
        let (socket, peer, admitted) = node
            .rtsp_admission
            .accept(&listener, admission::refuse_quietly)
            .await;
        let node = node.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            let _open = GaugeGuard::new(node.metrics.clone(), |m| &m.rtsp_connections);
            match Connection::new(socket, peer, node.clone()).run().await {
                Ok(()) => {}
                Err(e) if e.is_rejection() => {
                    Metrics::add(&node.metrics.connections_rejected_total, 1);
                    info!(%peer, error = %e, "rtsp connection rejected");
                }
                Err(e) => debug!(%peer, error = %e, "rtsp connection closed"),
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Session(#[from] media::rtsp::RtspError),
    #[error(transparent)]
    Egress(#[from] EgressError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("no PLAY or RECORD within {0:?}")]
    Negotiation(Duration),
    #[error("nothing from the client for {0:?}")]
    Timeout(Duration),
    #[error("publisher replaced by a newer session")]
    Replaced,
    #[error("publisher kicked or its stream moved")]
    Evicted,
}

impl ConnError {
    fn is_rejection(&self) -> bool {
        match self {
            ConnError::Session(_) | ConnError::Negotiation(_) | ConnError::Timeout(_) => true,
            ConnError::Egress(e) => e.is_stall(),
            ConnError::Io(_) | ConnError::Replaced | ConnError::Evicted => false,
        }
    }
}

/// A player between DESCRIBE and PLAY: attached to its stream, not yet sent anything.
struct Described {
    key: String,
    join: Join,
    /// What each RTP track carries.
    tracks: Vec<MediaKind>,
    stop_notice: Option<NotifyOnDrop>,
}

/// How a playing viewer gets its packets.
enum Delivering {
    /// Interleaved on this connection, by the stream's fan-out.
    Tcp(Membership),
    /// By a task sending datagrams, and one hearing RTCP (which end with the session).
    Udp { _tasks: Vec<AbortOnDrop> },
}

struct Playing {
    key: String,
    delivering: Delivering,
    /// Set-up tracks: (track, its RTCP destination: a channel over TCP, a port over UDP).
    reports: Vec<(usize, ReportTo)>,
    /// Raised by every RTCP packet a UDP player sends (its session stays alive).
    heard: Arc<Notify>,
    _viewer: ViewerGuard,
    _stop_notice: Option<NotifyOnDrop>,
}

#[derive(Clone)]
enum ReportTo {
    Channel(u8),
    Udp(Arc<UdpSocket>, SocketAddr),
}

struct Publish {
    publisher: Publisher,
    hold: Hold,
    /// Per announced track: its depacketizer (none for a codec we cannot take).
    receivers: Vec<Option<TrackReceiver>>,
    /// UDP tracks' packets: (track, packet).
    udp: Option<mpsc::Receiver<(usize, Bytes)>>,
    _udp_tasks: Vec<AbortOnDrop>,
    recording: bool,
    told_invalid: bool,
}

enum Role {
    Negotiating,
    Described(Described),
    Playing(Playing),
    Publishing(Box<Publish>),
    Closing,
}

/// A UDP track's sockets: RTP on an even port, RTCP on the next.
struct UdpPair {
    rtp: Arc<UdpSocket>,
    rtcp: Arc<UdpSocket>,
}

struct Connection {
    socket: Arc<TcpStream>,
    peer: SocketAddr,
    node: Arc<Node>,
    session: ServerSession,
    input: BytesMut,
    role: Role,
    /// UDP tracks set up so far: the track, its sockets, the client's RTP and RTCP ports.
    udp: Vec<(usize, UdpPair, (u16, u16))>,
    /// When the client last showed it is alive.
    last_heard: tokio::time::Instant,
}

impl Connection {
    fn new(socket: TcpStream, peer: SocketAddr, node: Arc<Node>) -> Self {
        let _ = socket.set_nodelay(true);
        let id = format!("{:016x}", fastrand::u64(..));
        let timeout = node.config.rtsp_session_timeout.as_secs() as u32;
        Connection {
            socket: Arc::new(socket),
            peer,
            node,
            session: ServerSession::new(id, timeout),
            input: BytesMut::with_capacity(SMALL_READ_BUFFER),
            role: Role::Negotiating,
            udp: Vec::new(),
            last_heard: tokio::time::Instant::now(),
        }
    }

    async fn run(mut self) -> Result<(), ConnError> {
        let result = self.drive().await;
        // A publisher that leaves without TEARDOWN keeps its viewers for a grace period.
        if let Role::Publishing(publishing) = std::mem::replace(&mut self.role, Role::Closing) {
            self.node
                .hold_for_reconnect(publishing.publisher, self.peer);
        }
        result
    }

    async fn drive(&mut self) -> Result<(), ConnError> {
        let mut events = Vec::new();
        let negotiate_until = tokio::time::Instant::now() + NEGOTIATION_TIMEOUT;
        let mut reports = tokio::time::interval(SENDER_REPORT_EVERY);
        reports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.flush().await?;
            let n = match &mut self.role {
                Role::Closing => return Ok(()),
                Role::Playing(playing) => {
                    let udp = matches!(playing.delivering, Delivering::Udp { .. });
                    let timeout = self.node.config.rtsp_session_timeout;
                    let silent_until = self.last_heard + timeout;
                    let pump = match &playing.delivering {
                        Delivering::Tcp(membership) => membership.pump()?,
                        Delivering::Udp { .. } => Pump::Idle,
                    };
                    if pump == Pump::Ended {
                        // The stream ended and its last packets are written.
                        return Ok(());
                    }
                    tokio::select! {
                        read = read_some(&self.socket, &mut self.input) => read?,
                        _ = playing.heard.notified() => {
                            self.last_heard = tokio::time::Instant::now();
                            continue;
                        }
                        ready = ready(&playing.delivering, pump) => {
                            ready?;
                            continue;
                        }
                        _ = reports.tick() => {
                            self.send_reports()?;
                            continue;
                        }
                        _ = tokio::time::sleep_until(silent_until), if udp => {
                            return Err(ConnError::Timeout(timeout));
                        }
                    }
                }
                Role::Publishing(publishing) if publishing.recording => {
                    let idle_until = self.last_heard + PUBLISH_IDLE_TIMEOUT;
                    let udp = publishing.udp.as_mut();
                    tokio::select! {
                        read = read_some(&self.socket, &mut self.input) => read?,
                        Some((track, packet)) = recv(udp) => {
                            self.last_heard = tokio::time::Instant::now();
                            self.on_rtp(track, packet)?;
                            continue;
                        }
                        _ = publishing.hold.evicted() => return Err(ConnError::Evicted),
                        _ = self.node.shutting_down() => {
                            self.end_publish("node shutting down");
                            return Ok(());
                        }
                        _ = tokio::time::sleep_until(idle_until) => {
                            return Err(ConnError::Timeout(PUBLISH_IDLE_TIMEOUT));
                        }
                    }
                }
                _ => tokio::time::timeout_at(
                    negotiate_until,
                    read_some(&self.socket, &mut self.input),
                )
                .await
                .map_err(|_| ConnError::Negotiation(NEGOTIATION_TIMEOUT))??,
            };
            if n == 0 {
                return Ok(());
            }
            Metrics::add(&self.node.metrics.bytes_in_total, n as u64);
            loop {
                self.session.feed(&mut self.input, &mut events)?;
                if events.is_empty() {
                    break;
                }
                for event in std::mem::take(&mut events) {
                    self.on_event(event).await?;
                }
                self.flush().await?;
            }
            let wanted = match self.role {
                Role::Publishing(_) => READ_BUFFER,
                _ => SMALL_READ_BUFFER,
            };
            if self.input.capacity() < wanted / 4 {
                self.input.reserve(wanted);
            }
        }
    }

    async fn on_event(&mut self, event: SessionEvent) -> Result<(), ConnError> {
        if !matches!(event, SessionEvent::Rtp { .. }) {
            self.last_heard = tokio::time::Instant::now();
        }
        match event {
            SessionEvent::Describe { path } => self.on_describe(&path).await,
            SessionEvent::Setup {
                track, transport, ..
            } => self.on_setup(track, transport).await?,
            SessionEvent::Play { .. } => self.on_play().await?,
            SessionEvent::Announce { path, description } => {
                self.on_announce(&path, &description).await
            }
            SessionEvent::Record { .. } => self.on_record(),
            SessionEvent::Rtp { track, packet } => {
                self.last_heard = tokio::time::Instant::now();
                self.on_rtp(track, packet)?;
            }
            SessionEvent::Teardown => {
                self.end_publish("rtsp teardown");
                self.role = Role::Closing;
            }
            SessionEvent::Rtcp { .. } | SessionEvent::KeepAlive => {}
        }
        Ok(())
    }

    /// A player asks what `path` carries: its token, the on_play hook, then the stream
    /// (pulled first on an edge) and its description.
    async fn on_describe(&mut self, path: &StreamPath) {
        let key = match stream_key(&path.app, &path.room) {
            Some(key) if self.node.serves_app(&path.app) => key,
            _ => return self.reject(404),
        };
        if let Err(refused) = self.node.authorize_play(&key, &path.query, self.peer.ip()) {
            debug!(stream = %key, peer = %self.peer, %refused, "rtsp play refused");
            return self.reject(403);
        }
        let stop_notice = match (self.node)
            .ask_to_play(&key, &path.query, self.peer, Protocol::Rtsp)
            .await
        {
            Ok(notice) => notice,
            Err(_) => return self.reject(403),
        };
        let origin = self.socket.local_addr().map(|a| a.ip().to_string());
        let origin = origin.unwrap_or_else(|_| "0.0.0.0".into());
        let Some(joined) = self.node.join_rtp(&key, &origin, HEADERS_WAIT).await else {
            if let Some(notice) = stop_notice {
                notice.disarm();
            }
            return self.reject(404);
        };
        if self.session.accept_describe(&joined.description).is_ok() {
            self.role = Role::Described(Described {
                key,
                join: joined.join,
                tracks: joined.tracks,
                stop_notice,
            });
        }
    }

    /// A track's transport: TCP channels are the session's; UDP gets a socket pair of
    /// its own.
    async fn on_setup(&mut self, track: usize, transport: Transport) -> Result<(), ConnError> {
        if transport.lower == Lower::Tcp {
            let _ = self.session.accept_setup(None, None);
            return Ok(());
        }
        let (Some(client_ports), true) = (transport.client_port, transport.unicast) else {
            self.reject(461);
            return Ok(());
        };
        let Ok(pair) = udp_pair(self.socket.local_addr()?).await else {
            self.reject(500);
            return Ok(());
        };
        let server = (
            pair.rtp.local_addr()?.port(),
            pair.rtcp.local_addr()?.port(),
        );
        if self.session.accept_setup(Some(server), None).is_err() {
            return Ok(());
        }
        self.udp.retain(|(t, ..)| *t != track);
        self.udp.push((track, pair, client_ports));
        Ok(())
    }

    /// Start sending: the fan-out (TCP) or a sender task (UDP) takes the player's join.
    async fn on_play(&mut self) -> Result<(), ConnError> {
        let Role::Described(described) = std::mem::replace(&mut self.role, Role::Negotiating)
        else {
            // PLAY without DESCRIBE: nothing is attached to play.
            self.reject(455);
            return Ok(());
        };
        let Described {
            key,
            join,
            tracks,
            stop_notice,
        } = described;
        let setups = self.session.tracks().to_vec();
        let mut wanted = Tracks::NONE;
        for setup in &setups {
            match tracks.get(setup.track) {
                Some(MediaKind::Video) => wanted.video = true,
                Some(MediaKind::Audio) => wanted.audio = true,
                _ => {}
            }
        }
        // Where each set-up track's packets begin for this player.
        let rtp_info: Vec<RtpInfo> = (setups.iter())
            .filter_map(|setup| {
                let kind = *tracks.get(setup.track)?;
                let (sequence, rtp_time) = (join.replay.iter())
                    .filter(|f| f.kind == kind)
                    .find_map(|f| f.rtp_packets()?.first_sequence_and_timestamp())?;
                Some(RtpInfo {
                    track: setup.track,
                    sequence,
                    rtp_time,
                })
            })
            .collect();
        if self.session.accept_play(&rtp_info).is_err() {
            return Ok(());
        }
        // The PLAY answer goes before any packet.
        self.flush().await?;
        let viewer = ViewerGuard::new(self.node.metrics.clone(), Protocol::Rtsp, &key);
        let udp = std::mem::take(&mut self.udp);
        let heard = Arc::new(Notify::new());
        let (delivering, reports) = if udp.is_empty() {
            limit_send_buffer(&self.socket, self.node.config.viewer_send_buffer);
            let membership = self.node.lanes.attach(
                join,
                self.socket.clone(),
                Format::Rtp,
                Pace::Player,
                &self.node.metrics,
            );
            membership.update_tracks(|t| *t = wanted);
            let reports = (setups.iter())
                .filter_map(|s| Some((s.track, ReportTo::Channel(s.transport.interleaved?.1))))
                .collect();
            (Delivering::Tcp(membership), reports)
        } else {
            let mut destinations = Vec::new();
            let mut reports = Vec::new();
            let mut udp_tasks = Vec::new();
            for (track, pair, (rtp_port, rtcp_port)) in udp {
                let ip = self.peer.ip();
                let kind = tracks.get(track).copied();
                destinations.push((kind, pair.rtp.clone(), SocketAddr::new(ip, rtp_port)));
                reports.push((
                    track,
                    ReportTo::Udp(pair.rtcp.clone(), SocketAddr::new(ip, rtcp_port)),
                ));
                // A player's receiver reports over UDP keep its session alive.
                let rtcp = heard_from(pair.rtcp, ip, heard.clone());
                udp_tasks.push(AbortOnDrop(tokio::spawn(rtcp)));
            }
            let task = tokio::spawn(send_udp(join, destinations, self.node.metrics.clone()));
            udp_tasks.push(AbortOnDrop(task));
            (Delivering::Udp { _tasks: udp_tasks }, reports)
        };
        debug!(stream = %key, peer = %self.peer, "rtsp play start");
        self.role = Role::Playing(Playing {
            key,
            delivering,
            reports,
            heard,
            _viewer: viewer,
            _stop_notice: stop_notice,
        });
        self.send_reports()?;
        Ok(())
    }

    /// Each set-up track's RTCP sender report.
    fn send_reports(&mut self) -> Result<(), ConnError> {
        let Role::Playing(playing) = &self.role else {
            return Ok(());
        };
        let ntp = SenderReport::ntp_from_unix_ms(media::calendar::unix_now_ms());
        for (track, to) in &playing.reports {
            let Some(report) = self.node.hub.rtp_sender_report(&playing.key, *track, ntp) else {
                continue;
            };
            match (to, &playing.delivering) {
                (ReportTo::Channel(channel), Delivering::Tcp(membership)) => {
                    let mut framed = BytesMut::with_capacity(report.len() + 4);
                    write_interleaved(*channel, &report, &mut framed);
                    membership.send(framed.freeze())?;
                }
                (ReportTo::Udp(socket, to), _) => {
                    let _ = socket.try_send_to(&report, *to);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A publisher announces its stream: the role decides, as for an RTMP publish.
    async fn on_announce(
        &mut self,
        path: &StreamPath,
        description: &media::sdp::SessionDescription,
    ) {
        if self.node.is_shutting_down() {
            return self.reject(503);
        }
        if !self.node.serves_app(&path.app) {
            info!(app = %path.app, peer = %self.peer, "rtsp publish refused: unknown app");
            return self.reject(404);
        }
        let receivers: Vec<Option<TrackReceiver>> = (description.media.iter())
            .map(|media| media.codec().ok().map(|codec| TrackReceiver::new(&codec)))
            .collect();
        if receivers.iter().all(Option::is_none) {
            info!(peer = %self.peer, "rtsp publish refused: no track of a codec we take");
            return self.reject(415);
        }
        let request = PublishRequest {
            app: &path.app,
            name: &path.room,
            query: &path.query,
            peer: self.peer,
            protocol: Protocol::Rtsp,
        };
        let Publishing { publisher, hold } = match self.node.role.publish(&request).await {
            Ok(publishing) => publishing,
            Err(refusal) => {
                info!(peer = %self.peer, code = refusal.code, "rtsp publish refused: {}", refusal.description);
                return self.reject(403);
            }
        };
        if self.session.accept_announce().is_ok() {
            self.role = Role::Publishing(Box::new(Publish {
                publisher,
                hold,
                receivers,
                udp: None,
                _udp_tasks: Vec::new(),
                recording: false,
                told_invalid: false,
            }));
        }
    }

    fn on_record(&mut self) {
        let Role::Publishing(publishing) = &mut self.role else {
            return self.reject(455);
        };
        if self.session.accept_record().is_err() {
            return;
        }
        // UDP tracks: their sockets' packets come through a queue.
        let udp = std::mem::take(&mut self.udp);
        if !udp.is_empty() {
            let (tx, rx) = mpsc::channel(UDP_QUEUE);
            for (track, pair, _) in udp {
                let task = tokio::spawn(receive_udp(track, pair, self.peer.ip(), tx.clone()));
                publishing._udp_tasks.push(AbortOnDrop(task));
            }
            publishing.udp = Some(rx);
        }
        publishing.recording = true;
        info!(stream = %publishing.publisher.name(), peer = %self.peer, "rtsp publish start");
        Metrics::add(&self.node.metrics.publishes_total, 1);
    }

    /// A publisher's RTP packet into the hub.
    fn on_rtp(&mut self, track: usize, packet: Bytes) -> Result<(), ConnError> {
        let Role::Publishing(publishing) = &mut self.role else {
            return Ok(());
        };
        let Some(Some(receiver)) = publishing.receivers.get_mut(track) else {
            return Ok(());
        };
        let mut tags = Vec::new();
        // A malformed packet is lost like a dropped one: the depacketizer waits for the
        // next access unit.
        let _ = receiver.push(packet, &mut tags);
        for TagBody {
            kind,
            timestamp_ms,
            body,
        } in tags
        {
            let pushed = (publishing.publisher)
                .push(kind, timestamp_ms as u32, body, Instant::now())
                .map_err(|_| ConnError::Replaced)?;
            if let Pushed::Refused(invalid) = pushed {
                Metrics::add(&self.node.metrics.invalid_media_total, 1);
                if !std::mem::replace(&mut publishing.told_invalid, true) {
                    let stream = publishing.publisher.name();
                    warn!(%stream, peer = %self.peer, error = %invalid, "dropping rtsp media that cannot be valid for its codec (said once per publisher)");
                }
            }
        }
        Ok(())
    }

    /// The stream ends cleanly: its viewers are closed and the role's hold given back.
    fn end_publish(&mut self, why: &str) {
        if let Role::Publishing(publishing) = std::mem::replace(&mut self.role, Role::Closing) {
            info!(stream = %publishing.publisher.name(), peer = %self.peer, "{why}");
            publishing.publisher.finish(&self.node.hub);
        }
    }

    fn reject(&mut self, status: u16) {
        let _ = self.session.reject(status);
    }

    /// Send the session's answers: through the fan-out's queue while playing over TCP,
    /// so they keep their place among the packets.
    async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.session.has_output() {
            return Ok(());
        }
        let out = self.session.take_output();
        match &self.role {
            Role::Playing(Playing {
                delivering: Delivering::Tcp(membership),
                ..
            }) => membership.send(out.freeze())?,
            _ => write_all(&self.socket, &out, &self.node.metrics).await?,
        }
        Ok(())
    }
}

async fn ready(delivering: &Delivering, pump: Pump) -> Result<(), EgressError> {
    match delivering {
        Delivering::Tcp(membership) => membership.ready(pump).await,
        Delivering::Udp { .. } => std::future::pending().await,
    }
}

async fn recv(udp: Option<&mut mpsc::Receiver<(usize, Bytes)>>) -> Option<(usize, Bytes)> {
    match udp {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Aborts its task when dropped (the session ended).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A pair of UDP sockets on an even port and the next one, on the address the client
/// reached us at.
async fn udp_pair(local: SocketAddr) -> std::io::Result<UdpPair> {
    for _ in 0..16 {
        let rtp = UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?;
        let port = rtp.local_addr()?.port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(local.ip(), port + 1)).await {
            return Ok(UdpPair {
                rtp: Arc::new(rtp),
                rtcp: Arc::new(rtcp),
            });
        }
    }
    Err(std::io::Error::other("no even and odd UDP port pair free"))
}

/// A UDP player's packets: its replay, then the stream, each frame's packets to the
/// destination of its kind. Ends with the stream.
async fn send_udp(
    join: Join,
    destinations: Vec<(Option<MediaKind>, Arc<UdpSocket>, SocketAddr)>,
    metrics: Arc<Metrics>,
) {
    let mut frames = join.into_subscriber();
    loop {
        let frame = match frames.next().await {
            Delivery::Frame(frame) => frame,
            Delivery::Skipped(n) => {
                Metrics::add(&metrics.frames_skipped_total, n);
                continue;
            }
            Delivery::End => return,
        };
        let Some(packets) = frame.rtp_packets() else {
            continue;
        };
        let Some((_, socket, to)) = destinations.iter().find(|(k, ..)| *k == Some(frame.kind))
        else {
            continue;
        };
        for datagram in packets.datagrams() {
            // A datagram that cannot go is lost, as on the network.
            if socket.send_to(&datagram, to).await.is_ok() {
                Metrics::add(&metrics.bytes_out_total, datagram.len() as u64);
            }
        }
    }
}

/// Raise `heard` for every packet the player at `player` sends to a track's RTCP port
/// (receiver reports; their content is not needed). Others' packets are ignored.
async fn heard_from(socket: Arc<UdpSocket>, player: std::net::IpAddr, heard: Arc<Notify>) {
    let mut buf = [0u8; 1500];
    while let Ok((_, from)) = socket.recv_from(&mut buf).await {
        if from.ip() == player {
            heard.notify_one();
        }
    }
}

/// A UDP publisher's packets for `track` (from the publisher's address only: nobody else
/// may inject media), to its connection's task.
async fn receive_udp(
    track: usize,
    pair: UdpPair,
    publisher: std::net::IpAddr,
    to: mpsc::Sender<(usize, Bytes)>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok((n, from)) = pair.rtp.recv_from(&mut buf).await else {
            return;
        };
        if from.ip() != publisher {
            continue;
        }
        let packet = Bytes::copy_from_slice(&buf[..n]);
        if to.try_send((track, packet)).is_err() && to.is_closed() {
            return;
        }
    }
}
