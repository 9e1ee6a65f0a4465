//! The edge role: where players connect. An edge refuses publishers; a viewer asking for a
//! stream the edge does not have makes it look the stream's lease up in the registry and
//! pull the stream from the owning origin over HTTP-FLV (see [`pull`]). The pulled tags go
//! into the local hub as an ordinary publisher, so every player protocol serves pulled
//! streams exactly as published ones, and one pull serves however many viewers.
//!
//! The rules of a pull's life (when to retry, re-pull, give up or stop) are plain data in
//! [`policy`]; `pull.rs` drives them.

mod policy;
mod pull;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use media::hub::Segmenting;
use registry::{Heartbeat, Load, NodeIdentity, Registry};
use serve::{NodeConfig, PublishRequest, Publishing, Refusal, Role, Shared, StartError};
use tokio::time::Instant;
use tracing::info;

pub use pull::PullError;
use pull::Pulls;

/// How an edge pulls.
#[derive(Debug, Clone)]
pub struct PullConfig {
    /// How long a viewer of a stream that is not (yet) live waits before a 404.
    pub play_wait: Duration,
    /// How long viewers are held and the owner re-pulled after the upstream broke.
    pub upstream_grace: Duration,
    /// A pulled stream nobody watches for this long is stopped.
    pub idle_grace: Duration,
    /// The longest an upstream may be silent before it counts as lost (sooner when its
    /// pace says so: a few of its usual gaps).
    pub upstream_timeout: Duration,
    /// The cluster's play secret: pulls carry a token signed with it, as any player must.
    pub play_secret: Option<media::token::PlaySecret>,
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            play_wait: Duration::from_secs(3),
            upstream_grace: Duration::from_secs(15),
            idle_grace: Duration::from_secs(10),
            upstream_timeout: Duration::from_secs(3),
            play_secret: None,
        }
    }
}

/// How an edge runs.
#[derive(Clone)]
pub struct EdgeConfig {
    pub node: NodeConfig,
    pub registry: Arc<dyn Registry>,
    pub identity: NodeIdentity,
    pub pull: PullConfig,
}

/// Serve as an edge until `shutdown` resolves, then shut down gracefully.
pub async fn run(
    mut config: EdgeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    // An edge's HLS segments are its origin's: the marks come with the pulled stream.
    config.node.hub.segments = Segmenting::Upstream;
    let shared = serve::shared(&config.node);
    let edge = Edge::start(&config, &shared).map_err(|e| StartError::Role(e.to_string()))?;
    serve::run(config.node, shared, edge, shutdown).await
}

/// The edge's side of a node: its pulls and its heartbeat.
pub struct Edge {
    pulls: Arc<Pulls>,
    heartbeat: Heartbeat,
}

impl Edge {
    /// The edge of a node serving `shared`; starts its heartbeat.
    pub fn start(config: &EdgeConfig, shared: &Shared) -> Result<Arc<Edge>, PullError> {
        let load = {
            let shared = shared.clone();
            move || Load {
                viewers: shared.viewers_by_stream().collect(),
                bytes_out: shared.bytes_out(),
                pulls: Default::default(),
            }
        };
        Ok(Arc::new(Edge {
            pulls: Pulls::new(config.pull.clone(), config.registry.clone(), shared)?,
            heartbeat: Heartbeat::start(config.registry.clone(), config.identity.clone(), load),
        }))
    }

    /// Streams being pulled right now (starting, live or re-pulling).
    pub fn active(&self) -> usize {
        self.pulls.active()
    }
}

#[async_trait::async_trait]
impl Role for Edge {
    /// Edges only play: publishing goes to an origin.
    async fn publish(&self, request: &PublishRequest<'_>) -> Result<Publishing, Refusal> {
        info!(peer = %request.peer, "publish refused: this is an edge");
        Err(Refusal::bad_name("This is an edge: publish to an origin"))
    }

    /// The local stream if there is one, else the stream pulled from its origin.
    async fn attach(&self, stream: &str, attach: &mut (dyn FnMut() -> bool + Send)) -> bool {
        self.pulls.attach(stream, attach).await
    }

    /// Every pull ends its local stream (its viewers get the end) and stops; the
    /// heartbeat goes.
    async fn shut_down(&self, deadline: Instant) {
        self.pulls.close();
        let _ = tokio::time::timeout_at(deadline, self.heartbeat.stop()).await;
    }
}
