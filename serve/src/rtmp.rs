//! The RTMP listener: a thin tokio driver around [`media::rtmp::session::ServerSession`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use media::frame::Tracks;
use media::hub::{Audience, Publisher, Pushed};
use media::outbox::Format;
use media::rtmp::message::MEDIA_STREAM_ID;
use media::rtmp::session::{ServerSession, SessionEvent};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::admission;
use crate::fanout::{EgressError, Membership, Pace, Pump};
use crate::hooks::NotifyOnDrop;
use crate::io::{limit_send_buffer, read_some, write_all};
use crate::metrics::{GaugeGuard, Metrics, Protocol, ViewerGuard};
use crate::tls::Alpn;
use crate::{stream_key, Hold, Node, PublishRequest, Publishing};

/// Time allowed for the whole negotiation, handshake through publish or play: a client
/// that drips bytes must not hold a connection by resetting a per-read timer.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(10);
/// A publisher that sends nothing for this long is dropped (its viewers wait for it).
const PUBLISH_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How much a publisher's connection reads at once.
const READ_BUFFER: usize = 64 * 1024;
/// The same for other connections, which only send a handshake and small commands: at
/// 64 KiB, players' connections held 2.7 MiB more with 1000 players.
const SMALL_READ_BUFFER: usize = 4 * 1024;

/// Serve RTMP (RTMPS with `tls`: every connection's TLS is ended first, see
/// [`crate::tls`]) on `listener`.
pub async fn serve(listener: TcpListener, node: Arc<Node>, tls: bool) {
    loop {
        let (socket, peer, admitted) = node
            .rtmp_admission
            .accept(&listener, admission::refuse_quietly)
            .await;
        let node = node.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            let _open = GaugeGuard::new(node.metrics.clone(), |m| &m.rtmp_connections);
            Metrics::add(&node.metrics.rtmp_connections_total, 1);
            let socket = match (tls, &node.tls) {
                (false, _) => socket,
                (true, Some(terminator)) => {
                    match terminator.terminate(socket, peer, Alpn::None).await {
                        Ok(plain) => plain,
                        Err(e) => {
                            Metrics::add(&node.metrics.connections_rejected_total, 1);
                            info!(%peer, error = %e, "rtmps handshake failed");
                            return;
                        }
                    }
                }
                (true, None) => return,
            };
            match Connection::new(socket, peer, node.clone()).run().await {
                Ok(()) => {}
                Err(e) if e.is_rejection() => {
                    Metrics::add(&node.metrics.connections_rejected_total, 1);
                    info!(%peer, error = %e, "rtmp connection rejected");
                }
                Err(e) => debug!(%peer, error = %e, "rtmp connection closed"),
            }
        });
    }
}

/// The declared bytes of the messages RTMP peers that are not publishing have begun and
/// not finished, across the node's connections, against a cap: each connection's share is
/// limited by its session (see [`media::rtmp::session::NEGOTIATION_MESSAGE_LIMIT`]), and
/// this bounds them together however many connections there are. Publishers, whose
/// keyframes take megabytes, are admitted by their role (a channel key) and not counted:
/// idle connections must not be able to starve them.
pub struct IncompleteMessages {
    held: AtomicUsize,
    cap: usize,
}

impl IncompleteMessages {
    pub fn new(cap: usize) -> Self {
        IncompleteMessages {
            held: AtomicUsize::new(0),
            cap,
        }
    }
}

/// One connection's part of [`IncompleteMessages`], given back when it closes.
struct IncompleteShare {
    pool: Arc<IncompleteMessages>,
    held: usize,
}

impl IncompleteShare {
    /// The connection now holds `bytes`: refused when that takes the node over its cap.
    fn update(&mut self, bytes: usize) -> Result<(), ConnError> {
        let (held, cap) = (&self.pool.held, self.pool.cap);
        if bytes > self.held {
            let grown = bytes - self.held;
            self.held = bytes;
            if held.fetch_add(grown, Ordering::Relaxed) + grown > cap {
                return Err(ConnError::TooMuchIncomplete(cap));
            }
        } else if bytes < self.held {
            held.fetch_sub(self.held - bytes, Ordering::Relaxed);
            self.held = bytes;
        }
        Ok(())
    }
}

impl Drop for IncompleteShare {
    fn drop(&mut self) {
        self.pool.held.fetch_sub(self.held, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Session(#[from] media::rtmp::session::SessionError),
    #[error(transparent)]
    Egress(#[from] EgressError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("no data for {0:?}")]
    Timeout(Duration),
    #[error("no publish or play within {0:?}")]
    Negotiation(Duration),
    #[error("unfinished messages of connections not publishing would exceed {0} bytes")]
    TooMuchIncomplete(usize),
    #[error("publisher replaced by a newer session")]
    Replaced,
    #[error("publisher kicked or its stream moved")]
    Evicted,
}

impl ConnError {
    /// Whether the connection was closed for what the peer did wrong (bad input, a stall),
    /// rather than ended by the peer or by us.
    fn is_rejection(&self) -> bool {
        match self {
            ConnError::Session(_)
            | ConnError::Timeout(_)
            | ConnError::Negotiation(_)
            | ConnError::TooMuchIncomplete(_) => true,
            ConnError::Egress(e) => e.is_stall(),
            ConnError::Io(_) | ConnError::Replaced | ConnError::Evicted => false,
        }
    }
}

enum Role {
    Negotiating,
    /// What the role holds for the stream (an origin: its lease) goes with the publisher.
    Publishing {
        publisher: Publisher,
        hold: Hold,
    },
    Playing {
        membership: Membership,
        name: String,
        _viewer: ViewerGuard,
        /// Tells the `on_stop` hook when the play ends.
        _stop_notice: Option<NotifyOnDrop>,
    },
    /// Answered with an error status; close once it is sent.
    Closing,
}

struct Connection {
    /// Shared with the stream's fan-out while playing.
    socket: Arc<TcpStream>,
    peer: SocketAddr,
    node: Arc<Node>,
    session: ServerSession,
    input: BytesMut,
    incomplete: IncompleteShare,
    role: Role,
    /// Media that cannot be valid was dropped and logged: it is logged once per publisher.
    told_invalid: bool,
}

impl Connection {
    fn new(socket: TcpStream, peer: SocketAddr, node: Arc<Node>) -> Self {
        let _ = socket.set_nodelay(true);
        let mut random = [0u8; 1528];
        fastrand::fill(&mut random);
        Connection {
            socket: Arc::new(socket),
            peer,
            incomplete: IncompleteShare {
                pool: node.incomplete.clone(),
                held: 0,
            },
            node,
            session: ServerSession::new(random),
            input: BytesMut::with_capacity(SMALL_READ_BUFFER),
            role: Role::Negotiating,
            told_invalid: false,
        }
    }

    async fn run(mut self) -> Result<(), ConnError> {
        let result = self.drive().await;
        // A publisher that leaves without unpublishing keeps its viewers for a grace period,
        // so a broadcaster that reconnects does not lose them.
        if let Role::Publishing { publisher, .. } = std::mem::replace(&mut self.role, Role::Closing)
        {
            self.node.hold_for_reconnect(publisher, self.peer);
        }
        result
    }

    async fn drive(&mut self) -> Result<(), ConnError> {
        let mut events = Vec::new();
        // Set while negotiating; a connection that stops publishing or playing negotiates
        // anew, with a new deadline.
        let mut negotiate_until = None;
        loop {
            if matches!(self.role, Role::Closing) {
                self.flush().await?;
                return Ok(());
            }
            if !matches!(self.role, Role::Negotiating) {
                negotiate_until = None;
            }
            let n = if let Role::Playing { membership, .. } = &self.role {
                let pump = membership.pump()?;
                if pump == Pump::Ended {
                    self.end_play().await?;
                    continue;
                }
                tokio::select! {
                    read = read_some(&self.socket, &mut self.input) => read?,
                    ready = membership.ready(pump) => {
                        ready?;
                        continue;
                    }
                }
            } else if let Role::Publishing { hold, .. } = &self.role {
                tokio::select! {
                    read = tokio::time::timeout(PUBLISH_IDLE_TIMEOUT, read_some(&self.socket, &mut self.input)) => {
                        read.map_err(|_| ConnError::Timeout(PUBLISH_IDLE_TIMEOUT))??
                    }
                    _ = hold.evicted() => return Err(ConnError::Evicted),
                    _ = self.node.shutting_down() => {
                        // The node stops: end the stream for its viewers and give the lease back.
                        self.end_publish("node shutting down");
                        return Ok(());
                    }
                }
            } else {
                let deadline = *negotiate_until
                    .get_or_insert_with(|| tokio::time::Instant::now() + NEGOTIATION_TIMEOUT);
                tokio::time::timeout_at(deadline, read_some(&self.socket, &mut self.input))
                    .await
                    .map_err(|_| ConnError::Negotiation(NEGOTIATION_TIMEOUT))??
            };
            if n == 0 {
                return Ok(());
            }
            Metrics::add(&self.node.metrics.bytes_in_total, n as u64);
            loop {
                self.session.feed(&mut self.input, &mut events)?;
                let unfinished = match self.role {
                    Role::Publishing { .. } => 0,
                    _ => self.session.incomplete_bytes(),
                };
                self.incomplete.update(unfinished)?;
                if events.is_empty() {
                    break;
                }
                for event in std::mem::take(&mut events) {
                    self.on_event(event).await?;
                }
            }
            self.flush().await?;
            let wanted = match self.role {
                Role::Publishing { .. } => READ_BUFFER,
                _ => SMALL_READ_BUFFER,
            };
            if self.input.capacity() < wanted / 4 {
                self.input.reserve(wanted);
            }
        }
    }

    async fn on_event(&mut self, event: SessionEvent) -> Result<(), ConnError> {
        match event {
            SessionEvent::Publish { app, name, query } => {
                self.on_publish(&app, &name, &query).await?
            }
            SessionEvent::Play { app, name, query } => {
                // A second play replaces the first.
                self.stop_playing().await?;
                let key = stream_key(&app, &name);
                if let Some(refused) = key
                    .as_deref()
                    .and_then(|key| (self.node.authorize_play(key, &query, self.peer.ip())).err())
                {
                    debug!(stream = ?key, peer = %self.peer, %refused, "play refused");
                    self.session
                        .reject_play("NetStream.Play.Failed", &refused.to_string());
                    self.role = Role::Closing;
                    return Ok(());
                }
                let mut stop_notice = None;
                if let Some(key) = &key {
                    match (self
                        .node
                        .ask_to_play(key, &query, self.peer, Protocol::Rtmp))
                    .await
                    {
                        Ok(notice) => stop_notice = notice,
                        Err(refused) => {
                            self.session
                                .reject_play("NetStream.Play.Failed", &refused.to_string());
                            self.role = Role::Closing;
                            return Ok(());
                        }
                    }
                }
                let join = match key {
                    Some(key) => self.node.join(&key, Audience::Viewer).await,
                    None => None,
                };
                match join {
                    Some(join) => {
                        debug!(stream = %join.watching.name(), peer = %self.peer, "play start");
                        let _viewer = ViewerGuard::new(
                            self.node.metrics.clone(),
                            Protocol::Rtmp,
                            join.watching.name(),
                        );
                        self.session.accept_play(&name);
                        limit_send_buffer(&self.socket, self.node.config.viewer_send_buffer);
                        // The play replies go first; from here the fan-out writes the media.
                        self.flush().await?;
                        let stream_id = self.session.play_stream_id().unwrap_or(MEDIA_STREAM_ID);
                        let membership = self.node.lanes.attach(
                            join,
                            self.socket.clone(),
                            Format::Rtmp { stream_id },
                            Pace::Player,
                            &self.node.metrics,
                        );
                        self.role = Role::Playing {
                            membership,
                            name,
                            _viewer,
                            _stop_notice: stop_notice,
                        };
                    }
                    None => {
                        if let Some(notice) = stop_notice {
                            notice.disarm();
                        }
                        self.session
                            .reject_play("NetStream.Play.StreamNotFound", "Stream not found");
                        self.role = Role::Closing;
                    }
                }
            }
            SessionEvent::Media {
                kind,
                timestamp,
                payload,
            } => {
                if let Role::Publishing { publisher, .. } = &mut self.role {
                    let pushed = publisher
                        .push(kind, timestamp, payload, Instant::now())
                        .map_err(|_| ConnError::Replaced)?;
                    if let Pushed::Refused(invalid) = pushed {
                        Metrics::add(&self.node.metrics.invalid_media_total, 1);
                        if !std::mem::replace(&mut self.told_invalid, true) {
                            let stream = publisher.name();
                            warn!(%stream, peer = %self.peer, error = %invalid, "dropping media that cannot be valid for its codec (said once per publisher)");
                        }
                    }
                }
            }
            SessionEvent::Unpublish => {
                self.end_publish("publish end");
            }
            SessionEvent::StopPlay => self.stop_playing().await?,
            SessionEvent::ReceiveAudio(on) => self.update_tracks(|tracks| tracks.audio = on),
            SessionEvent::ReceiveVideo(on) => self.update_tracks(|tracks| tracks.video = on),
        }
        Ok(())
    }

    /// Ask the node's role whether this client may publish; it claims the stream.
    async fn on_publish(&mut self, app: &str, name: &str, query: &str) -> Result<(), ConnError> {
        if self.node.is_shutting_down() {
            self.refuse_publish("NetStream.Publish.Failed", "Server shutting down");
            return Ok(());
        }
        if !self.node.serves_app(app) {
            info!(app, peer = %self.peer, "publish refused: unknown app");
            self.refuse_publish("NetStream.Publish.BadName", "Unknown app");
            return Ok(());
        }
        let request = PublishRequest {
            app,
            name,
            query,
            peer: self.peer,
            protocol: Protocol::Rtmp,
        };
        let Publishing { publisher, hold } = match self.node.role.publish(&request).await {
            Ok(publishing) => publishing,
            Err(refusal) => {
                self.refuse_publish(refusal.code, &refusal.description);
                return Ok(());
            }
        };
        info!(stream = %publisher.name(), peer = %self.peer, "publish start");
        Metrics::add(&self.node.metrics.publishes_total, 1);
        self.session.accept_publish();
        self.role = Role::Publishing { publisher, hold };
        Ok(())
    }

    /// The stream ends cleanly: its viewers are closed and what the role held for it is
    /// given back.
    fn end_publish(&mut self, why: &str) {
        if let Role::Publishing { publisher, hold } =
            std::mem::replace(&mut self.role, Role::Negotiating)
        {
            info!(stream = %publisher.name(), peer = %self.peer, "{why}");
            publisher.finish(&self.node.hub);
            drop(hold);
        }
    }

    fn refuse_publish(&mut self, code: &str, description: &str) {
        self.session.reject_publish(code, description);
        self.role = Role::Closing;
    }

    fn update_tracks(&self, change: impl FnOnce(&mut Tracks)) {
        if let Role::Playing { membership, .. } = &self.role {
            membership.update_tracks(change);
        }
    }

    /// Leave the stream being played, if any.
    async fn stop_playing(&mut self) -> Result<(), ConnError> {
        if !matches!(self.role, Role::Playing { .. }) {
            return Ok(());
        }
        if let Role::Playing { membership, .. } =
            std::mem::replace(&mut self.role, Role::Negotiating)
        {
            // A message the fan-out began must end before anything else is written.
            if let Some(rest) = membership.leave() {
                write_all(&self.socket, &rest, &self.node.metrics).await?;
            }
        }
        Ok(())
    }

    /// The stream ended and its last frames are written: tell the player, then close.
    async fn end_play(&mut self) -> Result<(), ConnError> {
        let Role::Playing { name, .. } = &self.role else {
            return Ok(());
        };
        let name = name.clone();
        self.session.end_play(&name);
        let out = self.session.take_output();
        // Still counted as a viewer until the end is written (a shutdown waits for it).
        write_all(&self.socket, &out, &self.node.metrics).await?;
        self.role = Role::Closing;
        Ok(())
    }

    /// Send the session's replies: through the fan-out's queue while playing, so they
    /// keep their place among the media.
    async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.session.has_output() {
            return Ok(());
        }
        let out = self.session.take_output();
        match &self.role {
            Role::Playing { membership, .. } => membership.send(out.freeze())?,
            _ => write_all(&self.socket, &out, &self.node.metrics).await?,
        }
        Ok(())
    }
}
