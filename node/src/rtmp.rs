//! The RTMP listener: a thin tokio driver around [`media::rtmp::session::ServerSession`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use media::hub::{Publisher, Subscriber};
use media::rtmp::session::{ServerSession, SessionEvent, MEDIA_STREAM_ID};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::control::{self, Registration};
use crate::egress::{self, EgressError, SlowViewerGuard, TrackFilter};
use crate::metrics::{GaugeGuard, Metrics};
use crate::{stream_key, Node};

/// Time allowed for the handshake and for each read before publish/play is agreed.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(10);
/// A publisher that sends nothing for this long is dropped (its viewers wait for it).
const PUBLISH_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
const READ_BUFFER: usize = 64 * 1024;

pub async fn serve(listener: TcpListener, node: Arc<Node>) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "rtmp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _open = GaugeGuard::new(node.metrics.clone(), |m| &m.rtmp_connections);
            Metrics::add(&node.metrics.rtmp_connections_total, 1);
            if let Err(e) = Connection::new(socket, peer, node.clone()).run().await {
                Metrics::add(&node.metrics.connections_rejected_total, 1);
                info!(%peer, error = %e, "rtmp connection closed");
            }
        });
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
    #[error("publisher replaced by a newer session")]
    Replaced,
    #[error("publisher kicked or its stream moved")]
    Evicted,
}

enum Role {
    Negotiating,
    Publishing {
        publisher: Publisher,
        /// The stream's lease when the node has a control plane.
        registration: Option<Registration>,
    },
    Playing {
        sub: Subscriber,
        name: String,
        tracks: TrackFilter,
        slow: SlowViewerGuard,
        _viewer: GaugeGuard,
    },
    /// Answered with an error status; close once it is sent.
    Closing,
}

struct Connection {
    socket: TcpStream,
    peer: SocketAddr,
    node: Arc<Node>,
    session: ServerSession,
    input: BytesMut,
    /// Frames taken for a player, and the buffers being written: both reused.
    batch: egress::Batch,
    queued: VecDeque<Bytes>,
    role: Role,
}

impl Connection {
    fn new(socket: TcpStream, peer: SocketAddr, node: Arc<Node>) -> Self {
        let _ = socket.set_nodelay(true);
        let mut random = [0u8; 1528];
        fastrand::fill(&mut random);
        Connection {
            socket,
            peer,
            node,
            session: ServerSession::new(random),
            input: BytesMut::with_capacity(READ_BUFFER),
            batch: egress::Batch::default(),
            queued: VecDeque::new(),
            role: Role::Negotiating,
        }
    }

    async fn run(mut self) -> Result<(), ConnError> {
        let result = self.drive().await;
        // A publisher that leaves without unpublishing keeps its viewers for a grace period,
        // so a broadcaster that reconnects does not lose them.
        if let Role::Publishing { publisher, .. } = std::mem::replace(&mut self.role, Role::Closing)
        {
            let (name, generation) = (publisher.name().to_owned(), publisher.generation());
            drop(publisher);
            let hub = self.node.hub.clone();
            let grace = self.node.config.reconnect_grace;
            info!(stream = %name, peer = %self.peer, "publisher gone; holding viewers for {grace:?}");
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                hub.end_if_orphaned(&name, generation);
            });
        }
        result
    }

    async fn drive(&mut self) -> Result<(), ConnError> {
        let mut events = Vec::new();
        loop {
            if matches!(self.role, Role::Closing) {
                self.flush().await?;
                return Ok(());
            }
            let read_timeout = match self.role {
                Role::Negotiating => Some(NEGOTIATION_TIMEOUT),
                Role::Publishing { .. } => Some(PUBLISH_IDLE_TIMEOUT),
                _ => None,
            };
            let n = if let Role::Playing { sub, slow, .. } = &mut self.role {
                tokio::select! {
                    read = self.socket.read_buf(&mut self.input) => read?,
                    taken = egress::next_batch(sub, slow, &self.node.metrics, &mut self.batch) => {
                        taken?;
                        self.send_batch().await?;
                        continue;
                    }
                }
            } else if let Role::Publishing { registration, .. } = &self.role {
                let eviction = registration.as_ref().map(|r| r.eviction.clone());
                let evicted = async {
                    match eviction {
                        Some(eviction) => eviction.wait().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    read = tokio::time::timeout(PUBLISH_IDLE_TIMEOUT, self.socket.read_buf(&mut self.input)) => {
                        read.map_err(|_| ConnError::Timeout(PUBLISH_IDLE_TIMEOUT))??
                    }
                    _ = evicted => return Err(ConnError::Evicted),
                    _ = self.node.shutting_down() => {
                        // The node stops: end the stream for its viewers and give the lease back.
                        self.end_publish("node shutting down");
                        return Ok(());
                    }
                }
            } else {
                let read = self.socket.read_buf(&mut self.input);
                match read_timeout {
                    Some(limit) => tokio::time::timeout(limit, read)
                        .await
                        .map_err(|_| ConnError::Timeout(limit))??,
                    None => read.await?,
                }
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
            }
            self.flush().await?;
            if self.input.capacity() < READ_BUFFER / 4 {
                self.input.reserve(READ_BUFFER);
            }
        }
    }

    async fn on_event(&mut self, event: SessionEvent) -> Result<(), ConnError> {
        match event {
            SessionEvent::Publish { app, name, .. } => self.on_publish(&app, &name).await?,
            SessionEvent::Play { app, name, .. } => {
                let sub = match stream_key(&app, &name) {
                    Some(key) => self.node.subscribe(&key).await,
                    None => None,
                };
                match sub {
                    Some(sub) => {
                        debug!(stream = %sub.name(), peer = %self.peer, "play start");
                        self.session.accept_play(&name);
                        crate::limit_send_buffer(&self.socket, self.node.config.viewer_send_buffer);
                        self.role = Role::Playing {
                            sub,
                            name,
                            tracks: TrackFilter::default(),
                            slow: SlowViewerGuard::default(),
                            _viewer: GaugeGuard::new(self.node.metrics.clone(), |m| &m.viewers),
                        };
                    }
                    None => {
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
                    publisher
                        .push(kind, timestamp, payload, Instant::now())
                        .map_err(|_| ConnError::Replaced)?;
                }
            }
            SessionEvent::Unpublish => {
                self.end_publish("publish end");
            }
            SessionEvent::StopPlay => {
                if matches!(self.role, Role::Playing { .. }) {
                    self.role = Role::Negotiating;
                }
            }
            SessionEvent::ReceiveAudio(on) => {
                if let Role::Playing { tracks, .. } = &mut self.role {
                    tracks.audio = on;
                }
            }
            SessionEvent::ReceiveVideo(on) => {
                if let Role::Playing { tracks, .. } = &mut self.role {
                    tracks.video = on;
                }
            }
        }
        Ok(())
    }

    /// Admit a publisher: its name must be a valid stream (a channel key when the node
    /// checks keys), free locally, and not live on another node.
    async fn on_publish(&mut self, app: &str, name: &str) -> Result<(), ConnError> {
        if self.node.is_edge() {
            info!(peer = %self.peer, "publish refused: this is an edge");
            self.refuse_publish(
                "NetStream.Publish.BadName",
                "This is an edge: publish to an origin",
            );
            return Ok(());
        }
        if self.node.is_shutting_down() {
            self.refuse_publish("NetStream.Publish.Failed", "Server shutting down");
            return Ok(());
        }
        let room = match &self.node.control {
            Some(control) => control::admit(control, name).await,
            None => Ok(name.to_owned()),
        };
        let key = match room {
            Ok(room) => stream_key(app, &room),
            Err(refusal) => {
                self.refuse_publish(refusal.code, &refusal.description);
                return Ok(());
            }
        };
        let Some(key) = key else {
            self.refuse_publish("NetStream.Publish.BadName", "Invalid stream name");
            return Ok(());
        };
        let publisher = match self.node.hub.publish(&key, Instant::now()) {
            Ok(publisher) => publisher,
            Err(e) => {
                info!(stream = %key, peer = %self.peer, "publish refused: {e}");
                self.refuse_publish("NetStream.Publish.BadName", "Stream already publishing");
                return Ok(());
            }
        };
        let registration = match &self.node.control {
            Some(control) => match control::register(&self.node, control, &publisher).await {
                Ok(registration) => Some(registration),
                Err(refusal) => {
                    publisher.finish(&self.node.hub);
                    self.refuse_publish(refusal.code, &refusal.description);
                    return Ok(());
                }
            },
            None => None,
        };
        info!(stream = %key, peer = %self.peer, "publish start");
        Metrics::add(&self.node.metrics.publishes_total, 1);
        self.session.accept_publish();
        self.role = Role::Publishing {
            publisher,
            registration,
        };
        Ok(())
    }

    /// The stream ends cleanly: its viewers are closed and its lease released.
    fn end_publish(&mut self, why: &str) {
        if let Role::Publishing {
            publisher,
            registration,
        } = std::mem::replace(&mut self.role, Role::Negotiating)
        {
            info!(stream = %publisher.name(), peer = %self.peer, "{why}");
            publisher.finish(&self.node.hub);
            if let Some(registration) = registration {
                registration.release();
            }
        }
    }

    fn refuse_publish(&mut self, code: &str, description: &str) {
        self.session.reject_publish(code, description);
        self.role = Role::Closing;
    }

    async fn send_batch(&mut self) -> Result<(), ConnError> {
        let batch = std::mem::take(&mut self.batch);
        let result = self.write_batch(&batch).await;
        self.batch = batch;
        result
    }

    async fn write_batch(&mut self, batch: &egress::Batch) -> Result<(), ConnError> {
        let Role::Playing { tracks, name, .. } = &self.role else {
            return Ok(());
        };
        let stream_id = self.session.play_stream_id().unwrap_or(MEDIA_STREAM_ID);
        // Reused across batches: no allocation per batch once it has grown.
        let mut bufs = std::mem::take(&mut self.queued);
        if self.session.has_output() {
            bufs.push_back(self.session.take_output().freeze());
        }
        for frame in batch.frames.iter().filter(|f| tracks.wants(f)) {
            bufs.push_back(if stream_id == MEDIA_STREAM_ID {
                frame.rtmp_chunks().clone()
            } else {
                frame.rtmp_chunks_for(stream_id)
            });
        }
        if batch.ended {
            let name = name.clone();
            self.session.end_play(&name);
            bufs.push_back(self.session.take_output().freeze());
            // Still counted as a viewer until the end is written (a shutdown waits for it).
            let _viewer = match std::mem::replace(&mut self.role, Role::Closing) {
                Role::Playing { _viewer, .. } => Some(_viewer),
                _ => None,
            };
            // The stream ended: what is queued is all there is.
            egress::write_units(&mut self.socket, &mut bufs, |_| false, &self.node.metrics).await?;
            self.queued = bufs;
            return Ok(());
        }
        let Role::Playing { sub, slow, .. } = &mut self.role else {
            return Ok(());
        };
        let dropped = egress::write_units(
            &mut self.socket,
            &mut bufs,
            |pending| sub.is_behind(pending),
            &self.node.metrics,
        )
        .await?;
        self.queued = bufs;
        if dropped > 0 {
            sub.skip_to_keyframe(dropped as u64);
            slow.skipped(dropped as u64, &self.node.metrics, Instant::now())?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        if self.session.has_output() {
            let out = self.session.take_output();
            tokio::time::timeout(egress::WRITE_TIMEOUT, self.socket.write_all(&out))
                .await
                .map_err(|_| ConnError::Timeout(egress::WRITE_TIMEOUT))??;
            Metrics::add(&self.node.metrics.bytes_out_total, out.len() as u64);
        }
        Ok(())
    }
}
