//! The registry every node shares: channel keys and rooms, live stream leases and node
//! heartbeats ([`Heartbeat`]). [`RedisRegistry`] backs a cluster; [`EmbeddedRegistry`] backs a standalone
//! node (keys persisted in a local data directory, leases and nodes in memory).
//!
//! Keys and rooms are separate namespaces: a key is never a room name and a room name is
//! never a key. Every change to a key/room pair is atomic.

mod embedded;
pub mod heartbeat;
mod redis_impl;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use embedded::EmbeddedRegistry;
pub use heartbeat::{Heartbeat, Load, NodeIdentity};
/// App names (`is_valid_name`), room names and the channel-key prefix follow the one rule
/// every node uses, so that the control API accepts exactly the apps and rooms a node can
/// serve.
pub use media::names::{is_valid_name, is_valid_room, KEY_PREFIX};
pub use redis_impl::RedisRegistry;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The backing store cannot be reached; callers answer 503 and retry later.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    #[error("registry data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// Addresses other nodes and players reach a node at (never loopback in a cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeAddrs {
    /// `host:port` of the RTMP listener.
    pub rtmp: String,
    /// `host:port` of the player HTTP listener (HTTP-FLV, HLS).
    pub http: String,
}

/// A live stream, owned by the origin its publisher is connected to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StreamLease {
    /// `app/room`, e.g. `live/movie`.
    pub stream: String,
    pub node_id: String,
    /// Unique per publish session: only the same session may refresh or release the lease.
    pub session: String,
    pub addrs: NodeAddrs,
    /// Unix milliseconds when publishing started.
    pub started_at_ms: u64,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Ingest bit rate over the last heartbeat period.
    pub bitrate_kbps: u64,
    /// Video and audio payload bytes received since publishing started.
    #[serde(default)]
    pub video_bytes: u64,
    #[serde(default)]
    pub audio_bytes: u64,
    /// Viewers on the owning node.
    pub viewers: u64,
    /// Whether the owning node records the stream; `None` when it cannot record (it has
    /// no record folder).
    #[serde(default)]
    pub recording: Option<bool>,
    /// The stream's forwards to other servers.
    #[serde(default)]
    pub relays: Vec<RelayInfo>,
    /// Counts the stream's owners: a publish session that takes a free lease gets the next
    /// number, so a later owner always has a higher one. Set by the registry (what
    /// [`Registry::lease`] reads), not by the owner.
    #[serde(default, skip_serializing)]
    pub generation: u64,
}

/// A stream got a new owner (a publish session took its free lease): what
/// [`Registry::owner_changes`] tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerChange {
    pub stream: String,
    pub generation: u64,
    pub node_id: String,
    pub session: String,
}

/// A relay (a forward, or a pull feeding a room) as the node running it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RelayInfo {
    pub id: String,
    /// The other server's URL without credentials, stream keys shortened.
    pub url: String,
    /// `connecting`, `live` or `retrying`.
    pub state: String,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// Media bytes relayed so far.
    pub bytes: u64,
    /// Frames a forward dropped because its destination was too slow.
    pub frames_skipped: u64,
}

/// A room to feed from another server, asked for at run time (`POST /api/v1/pulls`): some
/// origin whose registry lists it and that sees the room not live anywhere runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullSpec {
    pub id: String,
    pub app: String,
    pub room: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LeaseOutcome {
    /// The lease is ours (new, or already held by this session).
    Acquired,
    /// Another live session holds it.
    HeldBy(Box<StreamLease>),
}

/// What happened when a lease was refreshed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    Refreshed,
    /// The lease expired or was taken over: the publisher no longer owns the stream.
    Lost,
    /// An operator kicked the publisher: disconnect it.
    Kicked,
    /// Refreshed, and these orders of an operator are for the publisher's session, oldest
    /// first (each answered once).
    Orders(Vec<Order>),
}

/// What an operator asks of the origin holding a live stream, through the registry: the
/// origin's next lease refresh answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "order", rename_all = "snake_case")]
pub enum Order {
    /// Start (`on`) or stop recording the stream.
    Record { on: bool },
    /// Forward the stream to `url` (as relay `id`) for as long as it is live.
    AddRelay { id: String, url: String },
    /// Stop the forward `id`.
    RemoveRelay { id: String },
}

/// Orders waiting for one stream's origin are capped; older ones are dropped first.
pub const MAX_PENDING_ORDERS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Standalone,
    Origin,
    Edge,
    ControlApi,
}

/// A node's heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub role: NodeRole,
    pub region: String,
    pub addrs: NodeAddrs,
    /// Viewers on this node per stream (`app/room`).
    pub viewers: BTreeMap<String, u64>,
    /// Bytes per second sent to viewers.
    pub egress_bps: u64,
    /// Unix milliseconds of this heartbeat.
    pub updated_at_ms: u64,
    /// The pulls this node runs, by the stream each feeds.
    #[serde(default)]
    pub pulls: BTreeMap<String, RelayInfo>,
}

/// A room and its channel key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    pub room: String,
    pub key: String,
    /// Unix milliseconds when this key was issued.
    pub key_created_ms: u64,
}

#[async_trait::async_trait]
pub trait Registry: Send + Sync + 'static {
    // --- keys and rooms ---

    /// The room's channel key, creating room and key if the room does not exist.
    async fn get_or_create_key(&self, room: &str) -> Result<String>;
    /// A new key for the room (creating the room if needed); the old key stops working at once.
    async fn reset_key(&self, room: &str) -> Result<String>;
    /// Delete the room and its key. `false` when there was no such room.
    async fn delete_room(&self, room: &str) -> Result<bool>;
    /// The room a channel key publishes to (`None`: unknown or revoked key).
    async fn room_for_key(&self, key: &str) -> Result<Option<String>>;
    async fn room(&self, room: &str) -> Result<Option<Room>>;
    async fn rooms(&self) -> Result<Vec<Room>>;

    // --- stream leases ---

    /// Take the lease of `lease.stream` if it is free or already held by the same
    /// `session`; expires after `ttl` unless refreshed.
    async fn acquire_lease(&self, lease: &StreamLease, ttl: Duration) -> Result<LeaseOutcome>;
    /// Refresh (and update the stats of) a lease we hold.
    async fn refresh_lease(&self, lease: &StreamLease, ttl: Duration) -> Result<RefreshOutcome>;
    /// Compare-and-delete: remove the lease only if `session` still holds it.
    async fn release_lease(&self, stream: &str, session: &str) -> Result<bool>;
    /// Take the lease of `lease.stream` from `from` (a session whose owner is known to be
    /// gone) if it still holds it, as a new owner (a new generation). `false`: it does
    /// not hold it any more.
    async fn take_over_lease(&self, lease: &StreamLease, from: &str, ttl: Duration)
        -> Result<bool>;
    /// Every new owner of any stream from now on, as it happens (Redis pub/sub: told within
    /// a round trip, not found by polling). A receiver that falls behind misses changes,
    /// which [`Registry::lease`] still gives.
    fn owner_changes(&self) -> tokio::sync::broadcast::Receiver<OwnerChange>;
    async fn lease(&self, stream: &str) -> Result<Option<StreamLease>>;
    async fn leases(&self) -> Result<Vec<StreamLease>>;
    /// Ask the owner to disconnect the publisher of `stream` (seen at its next refresh).
    /// `false` when the stream is not live.
    async fn kick(&self, stream: &str) -> Result<bool>;
    /// Give the owner of `stream` an order, seen at its next refresh by the session that
    /// holds the lease now (a later publisher does not get it). `false` when the stream is
    /// not live.
    async fn order(&self, stream: &str, order: &Order) -> Result<bool>;

    // --- pulls asked for at run time ---

    /// Add (or replace, by id) a pull.
    async fn put_pull(&self, pull: &PullSpec) -> Result<()>;
    /// `false` when there was no such pull.
    async fn delete_pull(&self, id: &str) -> Result<bool>;
    async fn pulls(&self) -> Result<Vec<PullSpec>>;

    // --- nodes ---

    async fn heartbeat(&self, node: &NodeInfo, ttl: Duration) -> Result<()>;
    async fn remove_node(&self, id: &str) -> Result<()>;
    async fn nodes(&self) -> Result<Vec<NodeInfo>>;
}

/// A fresh channel key: 32 random characters from a URL- and path-safe alphabet, prefixed
/// so that it can never be mistaken for a room name (room names may not contain `_`
/// followed by this prefix's shape: see [`is_valid_room`]).
///
/// The characters come from the kernel's CSPRNG (`getrandom`): a key is a publish
/// credential, so it must not be predictable from keys seen before.
pub fn new_key() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    // Bytes at or above the largest multiple of the alphabet's size are discarded so that
    // every character is equally likely.
    const LIMIT: u8 = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
    let mut key = String::with_capacity(KEY_PREFIX.len() + 32);
    key.push_str(KEY_PREFIX);
    let mut random = [0u8; 64];
    while key.len() < KEY_PREFIX.len() + 32 {
        fill_random(&mut random);
        for &byte in random.iter().filter(|&&b| b < LIMIT) {
            if key.len() == KEY_PREFIX.len() + 32 {
                break;
            }
            key.push(ALPHABET[usize::from(byte) % ALPHABET.len()] as char);
        }
    }
    key
}

fn fill_random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            // getrandom(2) blocks until the pool is seeded and fails otherwise only for a
            // kernel older than 3.17, which the rest of the server does not run on either.
            Err(e) => panic!("the kernel's random generator is unavailable: {e}"),
        }
    }
}

/// A key as it may appear in logs: the prefix and the first four characters.
pub fn redact_key(key: &str) -> String {
    let shown: String = key.chars().take(KEY_PREFIX.len() + 4).collect();
    format!("{shown}…")
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_do_not_follow_from_a_seeded_generator() {
        // A key drawn from a seedable generator is the same after the same seed: these
        // two would be equal if keys came from `fastrand`.
        fastrand::seed(7);
        let first = new_key();
        fastrand::seed(7);
        let second = new_key();
        assert_ne!(first, second);
    }

    #[test]
    fn keys_use_the_whole_alphabet_evenly() {
        let mut counts = std::collections::HashMap::<char, u32>::new();
        for _ in 0..2000 {
            let key = new_key();
            assert!(key.starts_with(KEY_PREFIX));
            assert_eq!(key.len(), KEY_PREFIX.len() + 32);
            for c in key[KEY_PREFIX.len()..].chars() {
                *counts.entry(c).or_default() += 1;
            }
        }
        // 64 000 draws over 62 characters: about 1032 each; a skewed mapping (such as
        // `byte % 62` without rejection) puts the first eight near 1250.
        assert_eq!(counts.len(), 62);
        for (c, n) in counts {
            assert!((850..1220).contains(&n), "{c} drawn {n} times");
        }
    }
}
