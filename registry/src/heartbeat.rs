//! A node's heartbeat: who it is (role, region, addresses) and what it carries (viewers
//! per stream, egress rate), written every [`HEARTBEAT_EVERY`] and expiring after
//! [`NODE_TTL`] when the node dies. The control API picks edges by it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::{now_ms, NodeAddrs, NodeInfo, NodeRole, Registry};

/// A heartbeat lives this long without a refresh.
pub const NODE_TTL: Duration = Duration::from_secs(6);
/// How often a node heartbeats.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// After a failed heartbeat the next comes this soon, so that the node is listed again as
/// soon as the registry is back.
pub const HEARTBEAT_RETRY: Duration = Duration::from_millis(250);

/// Who a node is in the registry.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub id: String,
    pub role: NodeRole,
    pub region: String,
    /// Where other nodes and players reach it.
    pub addrs: NodeAddrs,
}

/// What a node carries right now.
#[derive(Debug, Clone, Default)]
pub struct Load {
    /// Viewers per stream (`app/room`).
    pub viewers: BTreeMap<String, u64>,
    /// Bytes sent to viewers since the node started.
    pub bytes_out: u64,
    /// The pulls the node runs, by the stream each feeds.
    pub pulls: BTreeMap<String, crate::RelayInfo>,
}

/// A node's heartbeat, written in the background until [`Heartbeat::stop`].
pub struct Heartbeat {
    registry: Arc<dyn Registry>,
    id: String,
    task: JoinHandle<()>,
}

impl Heartbeat {
    /// Start heartbeating `identity` with the load `load` reports each time.
    pub fn start(
        registry: Arc<dyn Registry>,
        identity: NodeIdentity,
        load: impl FnMut() -> Load + Send + 'static,
    ) -> Heartbeat {
        let id = identity.id.clone();
        let task = tokio::spawn(beat(registry.clone(), identity, load));
        Heartbeat { registry, id, task }
    }

    /// Stop and remove the heartbeat, so the node drops out of the registry at once rather
    /// than when it expires.
    pub async fn stop(&self) {
        self.task.abort();
        if let Err(e) = self.registry.remove_node(&self.id).await {
            warn!(error = %e, "could not remove the node heartbeat; it expires by itself");
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn beat(registry: Arc<dyn Registry>, identity: NodeIdentity, mut load: impl FnMut() -> Load) {
    let mut last_out = 0u64;
    let mut last_at = Instant::now();
    let mut failing = false;
    loop {
        let now = load();
        let elapsed = last_at.elapsed().as_secs_f64().max(0.001);
        let info = NodeInfo {
            id: identity.id.clone(),
            role: identity.role,
            region: identity.region.clone(),
            addrs: identity.addrs.clone(),
            viewers: now.viewers,
            egress_bps: (now.bytes_out.saturating_sub(last_out) as f64 / elapsed) as u64,
            updated_at_ms: now_ms(),
            pulls: now.pulls,
        };
        last_out = now.bytes_out;
        last_at = Instant::now();
        match registry.heartbeat(&info, NODE_TTL).await {
            Ok(()) if failing => {
                info!("registry reachable again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                warn!(error = %e, "node heartbeat failed; retrying");
                failing = true;
            }
            Err(_) => {}
        }
        let next = if failing {
            HEARTBEAT_RETRY
        } else {
            HEARTBEAT_EVERY
        };
        tokio::time::sleep(next).await;
    }
}
