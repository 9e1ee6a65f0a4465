//! Stream leases: a publishing stream holds `stream:{app}/{room}` in the registry, set only
//! if free or held by the same publish session, refreshed with the stream's stats every
//! [`LEASE_REFRESH`], and released (compare-and-delete) when the publish ends. A lease
//! that is lost (taken over, or kicked by an operator) disconnects its publisher.
//!
//! The registry may be unreachable: streams already live keep streaming and their leases
//! are retried.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use media::hub::{Publisher, StatsHandle};
use media::rtmp::url::RelayUrl;
use registry::{
    now_ms, LeaseOutcome, NodeAddrs, Order, RefreshOutcome, Registry, RegistryError, StreamLease,
};
use serve::{Eviction, Hold, Refusal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::record::Recordings;
use crate::relay::Forwards;

/// A lease lives this long without a refresh: a node that dies loses its streams within it.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
const LEASE_REFRESH: Duration = Duration::from_secs(2);
/// After a refresh failed (the registry unreachable), the next try comes this soon, so
/// that the stream is registered again as soon as the registry is back.
const LEASE_RETRY: Duration = Duration::from_millis(250);

/// How long the holder of a lease a new publisher wants may take to say whether it is
/// there.
const OWNER_PROBE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Most of a node's `/api/streams` answer read.
const OWNER_ANSWER_LIMIT: u64 = 4 * 1024 * 1024;

/// Whether a node's `/api/streams` answer (HTTP head and JSON body) lists `stream` with a
/// publisher. An answer that is not a 200 with that JSON says nothing: `true`.
fn publishes(answer: &[u8], stream: &str) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return true;
    };
    if !head.starts_with("HTTP/1.1 200") {
        return true;
    }
    let Ok(listing) = serde_json::from_str::<serde_json::Value>(body) else {
        return true;
    };
    let Some(streams) = listing["streams"].as_array() else {
        return true;
    };
    streams
        .iter()
        .any(|s| s["stream"] == stream && s["publishing"] == true)
}

/// The leases of one node's streams.
pub(crate) struct Leases {
    registry: Arc<dyn Registry>,
    node_id: String,
    addrs: NodeAddrs,
    /// The node's recordings (none: it cannot record): each lease says whether its stream
    /// is recorded, and carries an operator's ask to start or stop.
    recordings: Option<Arc<Recordings>>,
    /// The node's forwards: each lease lists its stream's, and carries an operator's ask to
    /// add or remove one.
    forwards: Arc<Forwards>,
    /// The leases held (session -> stream), while their keepers run.
    held: watch::Sender<HashMap<String, String>>,
    /// When each stream's lease was last acquired or refreshed (stream -> time).
    renewed: std::sync::Mutex<HashMap<String, tokio::time::Instant>>,
    /// Raised when the node shuts down: every keeper releases its lease and stops.
    closing: watch::Sender<bool>,
}

/// What a publish holds while live: dropping it stops the lease's keeper, which releases
/// the lease.
struct Release(watch::Sender<bool>);

impl Drop for Release {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

impl Leases {
    pub(crate) fn new(
        registry: Arc<dyn Registry>,
        node_id: String,
        addrs: NodeAddrs,
        recordings: Option<Arc<Recordings>>,
        forwards: Arc<Forwards>,
    ) -> Leases {
        Leases {
            registry,
            node_id,
            addrs,
            recordings,
            forwards,
            held: watch::channel(HashMap::new()).0,
            renewed: std::sync::Mutex::default(),
            closing: watch::channel(false).0,
        }
    }

    /// Whether this node still owns `stream`: its lease was renewed within its time to
    /// live. A stream published while the registry was unreachable, never registered, is
    /// owned too (nobody else can hold it). One whose lease ran out unrenewed may have
    /// another owner now.
    pub(crate) fn owns(&self, stream: &str) -> bool {
        let renewed = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        renewed
            .get(stream)
            .is_none_or(|at| at.elapsed() < LEASE_TTL)
    }

    fn renewed(&self, stream: &str, now: bool) {
        let mut renewed = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        if now {
            renewed.insert(stream.to_owned(), tokio::time::Instant::now());
        } else {
            renewed.remove(stream);
        }
    }

    /// Claim the lease of `publisher`'s stream, which the local hub accepted. Another
    /// node's live lease refuses the publish; an unreachable registry does not (the lease
    /// is retried in the background).
    pub(crate) async fn claim(self: &Arc<Self>, publisher: &Publisher) -> Result<Hold, Refusal> {
        let stream = publisher.name().to_owned();
        let lease = StreamLease {
            stream: stream.clone(),
            node_id: self.node_id.clone(),
            session: format!(
                "{}-{}-{:08x}",
                self.node_id,
                publisher.generation(),
                fastrand::u32(..)
            ),
            addrs: self.addrs.clone(),
            started_at_ms: now_ms(),
            recording: self.recordings.as_ref().map(|r| r.is_recording(&stream)),
            ..StreamLease::default()
        };
        let mut acquired = false;
        match self.registry.acquire_lease(&lease, LEASE_TTL).await {
            Ok(LeaseOutcome::Acquired) => acquired = true,
            Ok(LeaseOutcome::HeldBy(other)) if other.node_id == self.node_id => {
                // Our own earlier session of this stream, which the hub just let us take over.
                let _ = self.registry.release_lease(&stream, &other.session).await;
                acquired = matches!(
                    self.registry.acquire_lease(&lease, LEASE_TTL).await,
                    Ok(LeaseOutcome::Acquired)
                );
            }
            Ok(LeaseOutcome::HeldBy(other)) => {
                // A broadcaster retrying here after its origin died: take the stream over
                // at once, rather than when the dead origin's lease runs out.
                let gone = self.owner_is_gone(&other).await;
                let taken = gone
                    && matches!(
                        (self.registry)
                            .take_over_lease(&lease, &other.session, LEASE_TTL)
                            .await,
                        Ok(true)
                    );
                if !taken {
                    info!(stream = %stream, owner = %other.node_id, "publish refused: live on another node");
                    return Err(Refusal::taken(format!(
                        "Stream is live on node {}",
                        other.node_id
                    )));
                }
                info!(stream = %stream, owner = %other.node_id, "the stream's owner is gone; taking it over");
                acquired = true;
            }
            Err(e) => {
                warn!(stream = %stream, error = %e, "registry unavailable; will register the stream when it is back")
            }
        }
        if acquired {
            self.renewed(&stream, true);
        }
        let (stop, stopped) = watch::channel(false);
        let eviction = Eviction::default();
        // Listed before the keeper starts, so that a shutdown from now on waits for its release.
        let listed = Listed::new(self.clone(), &lease);
        tokio::spawn(keep(
            listed,
            lease,
            acquired,
            publisher.stats_handle(),
            stopped,
            eviction.clone(),
        ));
        Ok(Hold::new(eviction, Release(stop)))
    }

    /// Whether the node holding `lease` is provably gone: its heartbeat has expired, it
    /// refuses connections (its process is not there), or it answers that it is not
    /// publishing the stream. A node that does not answer in time may be alive behind a
    /// slow link: not gone.
    async fn owner_is_gone(&self, lease: &StreamLease) -> bool {
        if let Ok(nodes) = self.registry.nodes().await {
            if !nodes.iter().any(|n| n.id == lease.node_id) {
                return true;
            }
        }
        let ask = async {
            let mut socket = match tokio::net::TcpStream::connect(&lease.addrs.http).await {
                Ok(socket) => socket,
                Err(e) => return e.kind() == std::io::ErrorKind::ConnectionRefused,
            };
            let request = format!(
                "GET /api/streams HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                lease.addrs.http
            );
            let mut answer = Vec::new();
            let read = async {
                socket.write_all(request.as_bytes()).await?;
                (&mut socket)
                    .take(OWNER_ANSWER_LIMIT)
                    .read_to_end(&mut answer)
                    .await
            };
            if read.await.is_err() {
                return false;
            }
            !publishes(&answer, &lease.stream)
        };
        tokio::time::timeout(OWNER_PROBE_TIMEOUT, ask)
            .await
            .unwrap_or(false)
    }

    /// What operators asked of `stream`'s origin.
    fn carry_out(&self, stream: &str, orders: Vec<Order>) {
        for order in orders {
            match order {
                Order::Record { on } => {
                    info!(stream, on, "recording asked by an operator");
                    if let Some(recordings) = &self.recordings {
                        if on {
                            recordings.start(stream);
                        } else {
                            recordings.stop(stream);
                        }
                    }
                }
                Order::AddRelay { id, url } => match RelayUrl::parse(&url) {
                    Ok(url) => {
                        self.forwards.add(stream, &id, url);
                    }
                    Err(e) => {
                        warn!(stream, id, error = %e, "forward asked with a URL that does not parse")
                    }
                },
                Order::RemoveRelay { id } => {
                    if !self.forwards.remove(stream, &id) {
                        info!(stream, id, "asked to stop a forward that does not run");
                    }
                }
            }
        }
    }

    /// The node shuts down: every keeper releases its lease.
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves when no lease is held any more.
    pub(crate) async fn released(&self) {
        let mut held = self.held.subscribe();
        let _ = held.wait_for(|held| held.is_empty()).await;
    }

    /// The streams whose leases are still held.
    pub(crate) fn held(&self) -> Vec<String> {
        self.held.borrow().values().cloned().collect()
    }
}

/// A lease listed in [`Leases::held`] while its keeper runs; unlisted when dropped.
struct Listed {
    leases: Arc<Leases>,
    session: String,
}

impl Listed {
    fn new(leases: Arc<Leases>, lease: &StreamLease) -> Self {
        leases.held.send_modify(|held| {
            held.insert(lease.session.clone(), lease.stream.clone());
        });
        Listed {
            leases,
            session: lease.session.clone(),
        }
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.leases.held.send_modify(|held| {
            held.remove(&self.session);
        });
    }
}

/// Refresh the lease until its publish ends (the hold is dropped), the node shuts down, or
/// the lease is lost; then release it (compare-and-delete by session).
async fn keep(
    listed: Listed,
    mut lease: StreamLease,
    mut acquired: bool,
    stats: StatsHandle,
    mut stopped: watch::Receiver<bool>,
    eviction: Eviction,
) {
    let registry = listed.leases.registry.clone();
    let mut closing = listed.leases.closing.subscribe();
    let mut last_bytes = 0u64;
    let mut last_at = tokio::time::Instant::now();
    let shutdown = async move {
        let _ = closing.wait_for(|closing| *closing).await;
    };
    tokio::pin!(shutdown);
    let mut next_refresh = LEASE_REFRESH;
    let mut told_unavailable = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(next_refresh) => {}
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
        lease.recording =
            (listed.leases.recordings.as_ref()).map(|r| r.is_recording(&lease.stream));
        lease.relays = listed.leases.forwards.of(&lease.stream);
        // A shutdown or a release interrupts a refresh, so that the lease is not claimed
        // again after the release was decided.
        let held_before = acquired;
        let refresh = async {
            let mut outcome = if held_before {
                registry.refresh_lease(&lease, LEASE_TTL).await
            } else {
                Ok(RefreshOutcome::Lost)
            };
            let mut reacquired = held_before;
            if matches!(outcome, Ok(RefreshOutcome::Lost)) {
                // Expired (a registry that restarted empty, a long outage) or never taken:
                // claim it again unless another session has it now.
                reacquired = false;
                outcome = registry
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
        next_refresh = match outcome {
            Err(RegistryError::Unavailable(_)) => LEASE_RETRY,
            _ => LEASE_REFRESH,
        };
        match outcome {
            Ok(outcome @ (RefreshOutcome::Refreshed | RefreshOutcome::Orders(_))) => {
                listed.leases.renewed(&lease.stream, true);
                let after_outage = std::mem::take(&mut told_unavailable);
                if !acquired || after_outage {
                    info!(stream = %lease.stream, "stream registered");
                }
                acquired = true;
                if let RefreshOutcome::Orders(orders) = outcome {
                    listed.leases.carry_out(&lease.stream, orders);
                }
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
                // Said once per outage, not at every retry.
                if !std::mem::replace(&mut told_unavailable, true) {
                    warn!(stream = %lease.stream, error = %e, "registry unreachable; the stream goes on, and its lease is retried until the registry is back")
                }
            }
            Err(e) => warn!(stream = %lease.stream, error = %e, "lease refresh failed"),
        }
    }
    listed.leases.renewed(&lease.stream, false);
    if let Err(e) = registry.release_lease(&lease.stream, &lease.session).await {
        warn!(stream = %lease.stream, error = %e, "could not release the lease; it expires by itself");
    } else {
        debug!(stream = %lease.stream, "lease released");
    }
    drop(listed);
}
