//! Publish admission and registration: channel keys are checked against the registry, a
//! publishing stream holds a lease (refreshed with its stats, released when it ends), and
//! the node heartbeats its load.
//!
//! The registry may be unreachable: streams already live keep streaming and their leases
//! are retried; new publishes cannot be checked and are refused with a clear status.

use std::sync::Arc;
use std::time::Duration;

use media::hub::Publisher;
use registry::{
    now_ms, redact_key, LeaseOutcome, NodeAddrs, NodeInfo, NodeRole, RefreshOutcome, Registry,
    RegistryError, StreamLease,
};
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use crate::Node;

/// A lease lives this long without a refresh: a node that dies loses its streams within it.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
const LEASE_REFRESH: Duration = Duration::from_secs(2);
const NODE_TTL: Duration = Duration::from_secs(6);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// How a node checks publishers and announces streams.
#[derive(Clone)]
pub struct ControlConfig {
    pub registry: Arc<dyn Registry>,
    /// Publish names are channel keys (the default) or, when false, room names.
    pub require_key: bool,
    pub node_id: String,
    pub role: NodeRole,
    pub region: String,
    /// Where other nodes and players reach this node.
    pub addrs: NodeAddrs,
}

/// Why a publish was refused, as the RTMP status the client gets.
#[derive(Debug)]
pub struct Refusal {
    pub code: &'static str,
    pub description: String,
}

impl Refusal {
    fn bad_name(description: impl Into<String>) -> Self {
        Refusal {
            code: "NetStream.Publish.BadName",
            description: description.into(),
        }
    }
}

/// The room a publish name stands for: the channel key's room, or the name itself when
/// keys are not required.
pub async fn admit(control: &ControlConfig, name: &str) -> Result<String, Refusal> {
    if !control.require_key {
        return Ok(name.to_owned());
    }
    match control.registry.room_for_key(name).await {
        Ok(Some(room)) => Ok(room),
        Ok(None) => {
            info!(key = %redact_key(name), "publish refused: unknown or revoked key");
            Err(Refusal::bad_name("Unknown or revoked channel key"))
        }
        Err(e) => {
            warn!(error = %e, "publish refused: cannot check the key");
            Err(Refusal {
                code: "NetStream.Publish.Failed",
                description: format!("Cannot check the channel key now: {e}"),
            })
        }
    }
}

/// Tells a publisher's connection to go (kicked by an operator, or the stream moved).
#[derive(Clone, Default)]
pub struct Eviction(Arc<Notify>);

impl Eviction {
    pub async fn wait(&self) {
        self.0.notified().await
    }

    fn evict(&self) {
        self.0.notify_one();
    }
}

/// A stream's lease, kept alive by a task until [`Registration::release`] or drop.
pub struct Registration {
    stop: watch::Sender<bool>,
    pub eviction: Eviction,
}

impl Registration {
    /// Stop refreshing and delete the lease (compare-and-delete by session).
    pub fn release(self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Claim the lease of `stream` for a publisher that the local hub accepted. Another
/// node's live lease refuses the publish; an unreachable registry does not (the lease is
/// retried in the background).
pub async fn register(
    node: &Arc<Node>,
    control: &ControlConfig,
    publisher: &Publisher,
) -> Result<Registration, Refusal> {
    let stream = publisher.name().to_owned();
    let lease = StreamLease {
        stream: stream.clone(),
        node_id: control.node_id.clone(),
        session: format!(
            "{}-{}-{:08x}",
            control.node_id,
            publisher.generation(),
            fastrand::u32(..)
        ),
        addrs: control.addrs.clone(),
        started_at_ms: now_ms(),
        ..StreamLease::default()
    };
    let mut acquired = false;
    match control.registry.acquire_lease(&lease, LEASE_TTL).await {
        Ok(LeaseOutcome::Acquired) => acquired = true,
        Ok(LeaseOutcome::HeldBy(other)) if other.node_id == control.node_id => {
            // Our own earlier session of this stream, which the hub just let us take over.
            let _ = control
                .registry
                .release_lease(&stream, &other.session)
                .await;
            acquired = matches!(
                control.registry.acquire_lease(&lease, LEASE_TTL).await,
                Ok(LeaseOutcome::Acquired)
            );
        }
        Ok(LeaseOutcome::HeldBy(other)) => {
            info!(stream = %stream, owner = %other.node_id, "publish refused: live on another node");
            return Err(Refusal::bad_name(format!(
                "Stream is live on node {}",
                other.node_id
            )));
        }
        Err(e) => {
            warn!(stream = %stream, error = %e, "registry unavailable; will register the stream when it is back")
        }
    }
    let (stop, stopped) = watch::channel(false);
    let eviction = Eviction::default();
    let stats_source = publisher.stats_handle();
    // Listed before the keeper starts, so that a shutdown from now on waits for its release.
    let held = HeldLease::new(node.clone(), &lease);
    tokio::spawn(keep_lease(
        control.clone(),
        lease,
        acquired,
        stats_source,
        stopped,
        eviction.clone(),
        held,
    ));
    Ok(Registration { stop, eviction })
}

/// A lease listed in [`Node::leases`] while its keeper runs; unlisted when dropped.
struct HeldLease {
    node: Arc<Node>,
    session: String,
}

impl HeldLease {
    fn new(node: Arc<Node>, lease: &StreamLease) -> Self {
        node.leases.send_modify(|held| {
            held.insert(lease.session.clone(), lease.stream.clone());
        });
        HeldLease {
            node,
            session: lease.session.clone(),
        }
    }

    /// Resolves when the node starts shutting down.
    fn shutting_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.node.shutting_down()
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.node.leases.send_modify(|held| {
            held.remove(&self.session);
        });
    }
}

/// Refresh the lease until the registration is released or dropped, the node shuts down,
/// or the lease is lost; then release it (compare-and-delete by session).
async fn keep_lease(
    control: ControlConfig,
    mut lease: StreamLease,
    mut acquired: bool,
    stats: media::hub::StatsHandle,
    mut stopped: watch::Receiver<bool>,
    eviction: Eviction,
    held: HeldLease,
) {
    let mut last_bytes = 0u64;
    let mut last_at = tokio::time::Instant::now();
    let shutdown = held.shutting_down();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LEASE_REFRESH) => {}
            _ = stopped.changed() => break,
            _ = &mut shutdown => break,
        }
        let s = stats.get();
        let elapsed = last_at.elapsed().as_secs_f64().max(0.001);
        lease.bitrate_kbps =
            ((s.bytes_in.saturating_sub(last_bytes)) as f64 * 8.0 / 1000.0 / elapsed) as u64;
        last_bytes = s.bytes_in;
        last_at = tokio::time::Instant::now();
        lease.video_codec = s.video_codec.map(str::to_owned);
        lease.audio_codec = s.audio_codec.map(str::to_owned);
        lease.width = s.width;
        lease.height = s.height;
        lease.viewers = s.viewers as u64;
        lease.video_bytes = s.video_bytes_in;
        lease.audio_bytes = s.audio_bytes_in;
        // A shutdown or a release interrupts a refresh, so that the lease is not claimed
        // again after the release was decided.
        let held_before = acquired;
        let refresh = async {
            let mut outcome = if held_before {
                control.registry.refresh_lease(&lease, LEASE_TTL).await
            } else {
                Ok(RefreshOutcome::Lost)
            };
            let mut reacquired = held_before;
            if matches!(outcome, Ok(RefreshOutcome::Lost)) {
                // Expired (a registry that restarted empty, a long outage) or never taken:
                // claim it again unless another session has it now.
                reacquired = false;
                outcome =
                    control
                        .registry
                        .acquire_lease(&lease, LEASE_TTL)
                        .await
                        .map(|o| match o {
                            LeaseOutcome::Acquired => RefreshOutcome::Refreshed,
                            LeaseOutcome::HeldBy(_) => RefreshOutcome::Lost,
                        });
            }
            (outcome, reacquired)
        };
        let outcome = tokio::select! {
            (outcome, reacquired) = refresh => {
                acquired = reacquired;
                outcome
            }
            _ = stopped.changed() => break,
            _ = &mut shutdown => break,
        };
        match outcome {
            Ok(RefreshOutcome::Refreshed) => {
                if !acquired {
                    info!(stream = %lease.stream, "stream registered");
                }
                acquired = true;
            }
            Ok(RefreshOutcome::Kicked) => {
                info!(stream = %lease.stream, "publisher kicked by an operator");
                eviction.evict();
                break;
            }
            Ok(RefreshOutcome::Lost) => {
                warn!(stream = %lease.stream, "stream lease lost to another session; disconnecting the publisher");
                eviction.evict();
                return;
            }
            Err(RegistryError::Unavailable(e)) => {
                warn!(stream = %lease.stream, error = %e, "lease refresh failed; retrying")
            }
            Err(e) => warn!(stream = %lease.stream, error = %e, "lease refresh failed"),
        }
    }
    if let Err(e) = control
        .registry
        .release_lease(&lease.stream, &lease.session)
        .await
    {
        warn!(stream = %lease.stream, error = %e, "could not release the lease; it expires by itself");
    } else {
        debug!(stream = %lease.stream, "lease released");
    }
    drop(held);
}

/// Heartbeat this node (role, addresses, viewers per stream, egress rate) until shutdown.
pub async fn heartbeat(node: Arc<Node>, control: ControlConfig) {
    let mut last_out = 0u64;
    let mut last_at = tokio::time::Instant::now();
    let mut failing = false;
    loop {
        let out = node
            .metrics
            .bytes_out_total
            .load(std::sync::atomic::Ordering::Relaxed);
        let elapsed = last_at.elapsed().as_secs_f64().max(0.001);
        let info = NodeInfo {
            id: control.node_id.clone(),
            role: control.role,
            region: control.region.clone(),
            addrs: control.addrs.clone(),
            viewers: node
                .hub
                .list()
                .into_iter()
                .map(|s| (s.name, s.viewers as u64))
                .collect(),
            egress_bps: ((out - last_out) as f64 / elapsed) as u64,
            updated_at_ms: now_ms(),
        };
        last_out = out;
        last_at = tokio::time::Instant::now();
        match control.registry.heartbeat(&info, NODE_TTL).await {
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
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
}
