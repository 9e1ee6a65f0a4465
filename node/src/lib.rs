//! What every ferrolive node runs: the RTMP listener, the player HTTP port and metrics,
//! around one [`media::hub::Hub`].

pub mod control;
pub mod edge;
pub mod egress;
pub mod hls;

pub mod http;
pub mod metrics;
pub mod rtmp;
#[cfg(target_os = "linux")]
mod tape;
#[cfg(not(target_os = "linux"))]
#[path = "tape_unsupported.rs"]
mod tape;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use media::hls::HlsConfig;
use media::hub::{Hub, HubConfig, Join, Subscriber};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::control::ControlConfig;
use crate::edge::{Edge, EdgeConfig};
use crate::egress::Lanes;
use crate::hls::Hls;
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub rtmp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// How long viewers wait for a publisher that vanished without unpublishing.
    pub reconnect_grace: Duration,
    /// Kernel send buffer for each viewer socket (0: the kernel's autotuning). A bound keeps
    /// a slow viewer's lag visible to us, so it skips ahead instead of hiding seconds of
    /// video in the kernel, and bounds kernel memory per viewer.
    pub viewer_send_buffer: usize,
    /// How long a viewer's picture may wait for the next one to share its write (zero:
    /// each is written at once); see [`egress`].
    pub merge_window: Duration,
    pub hub: HubConfig,
    pub hls: HlsConfig,
    /// Run as an edge: pull streams from their origins on a miss (needs a registry).
    pub edge: Option<EdgeConfig>,
    /// How long a graceful shutdown may take at most (stop accepting, end streams, release
    /// leases, remove the heartbeat); after it [`run`] returns anyway.
    pub shutdown_grace: Duration,
}

/// State shared by every connection of a node.
pub struct Node {
    pub config: NodeConfig,
    pub hub: Arc<Hub>,
    pub hls: Arc<Hls>,
    /// The fan-outs that write streams to RTMP and HTTP-FLV viewers.
    pub lanes: Arc<Lanes>,
    pub metrics: Arc<Metrics>,
    /// Key checks, leases and heartbeats; `None` runs without a registry.
    pub control: Option<ControlConfig>,
    /// Pull on miss, on an edge.
    pub edge: Option<Arc<Edge>>,
    /// Raised once when the node starts shutting down; connections and lease keepers watch it.
    shutdown: watch::Sender<bool>,
    /// The stream leases this node holds (session -> stream), kept by [`control::register`].
    pub(crate) leases: watch::Sender<HashMap<String, String>>,
}

impl Node {
    /// Attach a viewer to `key`: the local stream, or on an edge the stream pulled from
    /// its origin (starting or joining the pull and waiting a bounded time for it).
    pub async fn subscribe(&self, key: &str) -> Option<Subscriber> {
        match &self.edge {
            Some(edge) => edge.attach(key, Hub::subscribe).await,
            None => self.hub.subscribe(key),
        }
    }

    /// Like [`Node::subscribe`], for a viewer the fan-out serves (see [`Lanes::attach`]).
    pub async fn join(&self, key: &str) -> Option<Join> {
        match &self.edge {
            Some(edge) => edge.attach(key, Hub::join).await,
            None => self.hub.join(key),
        }
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

    /// Edges only play: publishing goes to an origin.
    pub fn is_edge(&self) -> bool {
        self.edge.is_some()
    }
}

/// Longest app or room name accepted.
const MAX_NAME: usize = 128;

/// The hub key of `app`/`room`, or `None` when either is not a safe name: ASCII letters,
/// digits and `-_.~`, not starting with a dot, at most [`MAX_NAME`] bytes. The same rule on
/// every protocol keeps names usable in URLs and free of path tricks.
pub fn stream_key(app: &str, room: &str) -> Option<String> {
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= MAX_NAME
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    };
    (valid(app) && valid(room)).then(|| format!("{app}/{room}"))
}

/// Apply [`NodeConfig::viewer_send_buffer`] to a socket that starts playing.
pub(crate) fn limit_send_buffer(socket: &tokio::net::TcpStream, bytes: usize) {
    if bytes > 0 {
        let _ = socket2::SockRef::from(socket).set_send_buffer_size(bytes);
    }
}

/// Read what `socket` has (waiting for something): the count, 0 at end of stream. Through a
/// shared reference, since a viewer's socket is also written by its stream's fan-out.
pub(crate) async fn read_some(
    socket: &tokio::net::TcpStream,
    buf: &mut bytes::BytesMut,
) -> std::io::Result<usize> {
    loop {
        socket.readable().await?;
        match socket.try_read_buf(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

/// Write all of `data` to `socket`, giving up after [`egress::WRITE_TIMEOUT`] without progress.
pub(crate) async fn write_all(
    socket: &tokio::net::TcpStream,
    mut data: &[u8],
    metrics: &Metrics,
) -> Result<(), egress::EgressError> {
    while !data.is_empty() {
        tokio::time::timeout(egress::WRITE_TIMEOUT, socket.writable())
            .await
            .map_err(|_| egress::EgressError::WriteTimeout(egress::WRITE_TIMEOUT))??;
        match socket.try_write(data) {
            Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()),
            Ok(n) => {
                Metrics::add(&metrics.bytes_out_total, n as u64);
                data = &data[n..];
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Bind the listeners and serve until `shutdown` resolves.
pub async fn run(
    config: NodeConfig,
    control: Option<ControlConfig>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let rtmp = TcpListener::bind(config.rtmp_addr).await?;
    let http = TcpListener::bind(config.http_addr).await?;
    info!(rtmp = %rtmp.local_addr()?, http = %http.local_addr()?, "listening");
    let hub = Hub::new(config.hub.clone());
    let metrics = Arc::new(Metrics::default());
    let edge = match (&config.edge, &control) {
        (Some(edge), Some(control)) => Some(
            Edge::new(
                edge.clone(),
                control.registry.clone(),
                hub.clone(),
                metrics.clone(),
            )
            .map_err(|e| std::io::Error::other(e.to_string()))?,
        ),
        (Some(_), None) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an edge needs a registry to find origins",
            ))
        }
        (None, _) => None,
    };
    let node = Arc::new(Node {
        hub,
        hls: Arc::new(Hls::new(config.hls.clone())),
        lanes: Arc::new(Lanes::new(config.merge_window)),
        metrics,
        config,
        control,
        edge,
        shutdown: watch::channel(false).0,
        leases: watch::channel(HashMap::new()).0,
    });
    let heartbeat = node
        .control
        .clone()
        .map(|c| tokio::spawn(control::heartbeat(node.clone(), c)));
    let rtmp_task = tokio::spawn(rtmp::serve(rtmp, node.clone()));
    let http_task = tokio::spawn(http::serve(http, node.clone()));
    shutdown.await;
    graceful_shutdown(&node, [rtmp_task, http_task], heartbeat).await;
    Ok(())
}

/// Time kept at the end of the grace for viewers to receive the end of their streams.
const DRAIN_RESERVE: Duration = Duration::from_millis(500);
const SHUTDOWN_POLL: Duration = Duration::from_millis(20);

/// Stop accepting, end every stream (publishers are finished, so players get their end:
/// UnpublishNotify, the chunked terminator, ENDLIST), release the stream leases, remove the
/// node heartbeat and let viewers drain: all within [`NodeConfig::shutdown_grace`], even
/// with the registry unreachable (every step is bounded; past the grace we give up).
async fn graceful_shutdown(
    node: &Arc<Node>,
    listeners: [tokio::task::JoinHandle<()>; 2],
    heartbeat: Option<tokio::task::JoinHandle<()>>,
) {
    let started = Instant::now();
    let grace = node.config.shutdown_grace;
    let deadline = started + grace;
    info!(?grace, "shutting down");
    // Stop accepting: the accept loops own the listeners, which close as the tasks end.
    for task in listeners {
        task.abort();
        let _ = tokio::time::timeout_at(deadline, task).await;
    }
    if let Some(task) = heartbeat {
        task.abort();
    }
    // Publisher connections finish their streams and drop their leases; lease keepers
    // release; edge pulls finish their local streams.
    node.shutdown.send_replace(true);
    if let Some(edge) = &node.edge {
        edge.close();
    }
    let control_deadline = deadline
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
    let release_leases = async {
        let mut leases = node.leases.subscribe();
        let _ = leases.wait_for(|held| held.is_empty()).await;
    };
    let remove_node = async {
        if let Some(control) = &node.control {
            if let Err(e) = control.registry.remove_node(&control.node_id).await {
                warn!(error = %e, "could not remove the node heartbeat; it expires by itself");
            }
        }
    };
    let steps = async { tokio::join!(end_streams, release_leases, remove_node) };
    if tokio::time::timeout_at(control_deadline, steps)
        .await
        .is_err()
    {
        let held: Vec<String> = node.leases.borrow().values().cloned().collect();
        let live: Vec<String> = node.hub.list().into_iter().map(|s| s.name).collect();
        warn!(
            ?held,
            ?live,
            "shutdown steps did not finish in time; leases left expire by themselves"
        );
    }
    // Let viewers receive the end of their streams (bounded by the grace).
    while node.metrics.viewers.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(SHUTDOWN_POLL).await;
    }
    // The last writes of the connections that just ended.
    tokio::time::sleep_until((Instant::now() + SHUTDOWN_POLL * 5).min(deadline)).await;
    info!(after = ?started.elapsed(), "shut down");
}

#[cfg(test)]
mod tests {
    use super::stream_key;

    #[test]
    fn stream_names_are_checked() {
        assert_eq!(
            stream_key("live", "room-1_a.b~").as_deref(),
            Some("live/room-1_a.b~")
        );
        for bad in [
            "",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "a%2f",
            "a\n",
            &"x".repeat(129),
        ] {
            assert_eq!(stream_key("live", bad), None, "{bad:?}");
        }
        assert_eq!(stream_key("", "room"), None);
    }
}
