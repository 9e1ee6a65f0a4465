//! What every ferrolive node runs: the RTMP listener, the player HTTP port and metrics,
//! around one [`media::hub::Hub`].

pub mod control;
pub mod edge;
pub mod egress;
pub mod hls;

pub mod http;
pub mod metrics;
pub mod rtmp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use media::hls::HlsConfig;
use media::hub::{Hub, HubConfig, Subscriber};
use tokio::net::TcpListener;
use tracing::info;

use crate::control::ControlConfig;
use crate::edge::{Edge, EdgeConfig};
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
    pub hub: HubConfig,
    pub hls: HlsConfig,
    /// Run as an edge: pull streams from their origins on a miss (needs a registry).
    pub edge: Option<EdgeConfig>,
}

/// State shared by every connection of a node.
pub struct Node {
    pub config: NodeConfig,
    pub hub: Arc<Hub>,
    pub hls: Arc<Hls>,
    pub metrics: Arc<Metrics>,
    /// Key checks, leases and heartbeats; `None` runs without a registry.
    pub control: Option<ControlConfig>,
    /// Pull on miss, on an edge.
    pub edge: Option<Arc<Edge>>,
}

impl Node {
    /// Attach a viewer to `key`: the local stream, or on an edge the stream pulled from
    /// its origin (starting or joining the pull and waiting a bounded time for it).
    pub async fn subscribe(&self, key: &str) -> Option<Subscriber> {
        match &self.edge {
            Some(edge) => edge.subscribe(key).await,
            None => self.hub.subscribe(key),
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
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    };
    (valid(app) && valid(room)).then(|| format!("{app}/{room}"))
}

/// Apply [`NodeConfig::viewer_send_buffer`] to a socket that starts playing.
pub(crate) fn limit_send_buffer(socket: &tokio::net::TcpStream, bytes: usize) {
    if bytes > 0 {
        let _ = socket2::SockRef::from(socket).set_send_buffer_size(bytes);
    }
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
            Edge::new(edge.clone(), control.registry.clone(), hub.clone(), metrics.clone())
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        ),
        (Some(_), None) => {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "an edge needs a registry to find origins"))
        }
        (None, _) => None,
    };
    let node = Arc::new(Node {
        hub,
        hls: Arc::new(Hls::new(config.hls.clone())),
        metrics,
        config,
        control,
        edge,
    });
    let heartbeat = node.control.clone().map(|c| tokio::spawn(control::heartbeat(node.clone(), c)));
    let rtmp_task = tokio::spawn(rtmp::serve(rtmp, node.clone()));
    let http_task = tokio::spawn(http::serve(http, node.clone()));
    shutdown.await;
    info!("shutting down");
    rtmp_task.abort();
    http_task.abort();
    if let Some(task) = heartbeat {
        task.abort();
    }
    if let Some(control) = &node.control {
        let _ = control.registry.remove_node(&control.node_id).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::stream_key;

    #[test]
    fn stream_names_are_checked() {
        assert_eq!(stream_key("live", "room-1_a.b~").as_deref(), Some("live/room-1_a.b~"));
        for bad in ["", "..", ".hidden", "a/b", "a b", "a%2f", "a\n", &"x".repeat(129)] {
            assert_eq!(stream_key("live", bad), None, "{bad:?}");
        }
        assert_eq!(stream_key("", "room"), None);
    }
}
