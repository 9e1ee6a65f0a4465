//! The registry of a standalone node: keys and rooms persisted in `{data_dir}/keys.json`,
//! leases and node heartbeats in memory (expiry checked against a monotonic clock).
//!
//! Semantics match [`crate::RedisRegistry`] method for method.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{
    new_key, now_ms, LeaseOutcome, NodeInfo, Order, OwnerChange, PullSpec, RefreshOutcome,
    Registry, RegistryError, Result, Room, StreamLease, MAX_PENDING_ORDERS,
};

const KEYS_FILE: &str = "keys.json";
const KEYS_TMP_FILE: &str = "keys.json.tmp";

/// Registry of a standalone node (see the module documentation).
pub struct EmbeddedRegistry {
    /// `{data_dir}/keys.json`; `None` for an in-memory registry.
    path: Option<PathBuf>,
    /// Serialises key/room changes so that the file is written in the order of the changes.
    /// Held across the file write; the state mutex below never is.
    writer: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    owners: tokio::sync::broadcast::Sender<OwnerChange>,
}

impl std::fmt::Debug for EmbeddedRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedRegistry")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    keys: Keys,
    leases: HashMap<String, LeaseEntry>,
    /// Each stream's owners so far.
    generations: HashMap<String, u64>,
    nodes: HashMap<String, (NodeInfo, Instant)>,
    /// Pulls asked for at run time (not kept across restarts: the config's pulls are).
    pulls: BTreeMap<String, PullSpec>,
}

/// Rooms and the reverse key index; always consistent with each other.
#[derive(Clone, Default)]
struct Keys {
    rooms: BTreeMap<String, Room>,
    by_key: HashMap<String, String>,
}

impl Keys {
    fn from_rooms(rooms: Vec<Room>, path: &Path) -> Result<Self> {
        let mut keys = Keys::default();
        for room in rooms {
            let corrupt = |what: &str| {
                RegistryError::Corrupt(format!("{}: {what} {:?}", path.display(), room.room))
            };
            if keys
                .by_key
                .insert(room.key.clone(), room.room.clone())
                .is_some()
            {
                return Err(corrupt("key used twice, again by room"));
            }
            if keys.rooms.contains_key(&room.room) {
                return Err(corrupt("duplicate room"));
            }
            keys.rooms.insert(room.room.clone(), room);
        }
        Ok(keys)
    }

    /// Give `room` the key `key` (which must be unused), revoking its old key.
    fn set_key(&mut self, room: &str, key: String) {
        if let Some(old) = self.rooms.get(room) {
            self.by_key.remove(&old.key);
        }
        self.by_key.insert(key.clone(), room.to_owned());
        self.rooms.insert(
            room.to_owned(),
            Room {
                room: room.to_owned(),
                key,
                key_created_ms: now_ms(),
            },
        );
    }

    /// A fresh key no room uses.
    fn fresh_key(&self) -> String {
        loop {
            let key = new_key();
            if !self.by_key.contains_key(&key) {
                return key;
            }
        }
    }
}

struct LeaseEntry {
    lease: StreamLease,
    expires: Instant,
    /// Kicked by an operator: the next refresh answers `Kicked`.
    kicked: bool,
    /// Orders for the owner, until its next refresh answers them.
    orders: Vec<Order>,
}

/// The on-disk format of `keys.json`.
#[derive(Serialize, Deserialize)]
struct KeysFile {
    version: u32,
    rooms: Vec<Room>,
}

impl EmbeddedRegistry {
    /// Open (creating the directory if missing) the registry persisted in `data_dir`.
    /// A `keys.json` that cannot be parsed is `Corrupt` (naming the file); a directory or
    /// file that cannot be read is `Unavailable`.
    pub async fn open(data_dir: impl AsRef<Path>) -> Result<Self> {
        let dir = data_dir.as_ref();
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| RegistryError::Unavailable(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(KEYS_FILE);
        let keys = match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let file: KeysFile = serde_json::from_slice(&bytes)
                    .map_err(|e| RegistryError::Corrupt(format!("{}: {e}", path.display())))?;
                if file.version != 1 {
                    return Err(RegistryError::Corrupt(format!(
                        "{}: unknown version {}",
                        path.display(),
                        file.version
                    )));
                }
                Keys::from_rooms(file.rooms, &path)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Keys::default(),
            Err(e) => {
                return Err(RegistryError::Unavailable(format!(
                    "reading {}: {e}",
                    path.display()
                )))
            }
        };
        Ok(EmbeddedRegistry {
            path: Some(path),
            writer: tokio::sync::Mutex::new(()),
            owners: tokio::sync::broadcast::channel(256).0,
            state: Mutex::new(State {
                keys,
                ..State::default()
            }),
        })
    }

    /// A registry that persists nothing (tests).
    pub fn in_memory() -> Self {
        EmbeddedRegistry {
            path: None,
            writer: tokio::sync::Mutex::new(()),
            owners: tokio::sync::broadcast::channel(256).0,
            state: Mutex::new(State::default()),
        }
    }

    /// `lease`'s session is its stream's new owner: the next generation, told.
    fn new_owner(&self, state: &mut State, lease: &StreamLease) {
        let generation = state.generations.entry(lease.stream.clone()).or_default();
        *generation += 1;
        let _ = self.owners.send(OwnerChange {
            stream: lease.stream.clone(),
            generation: *generation,
            node_id: lease.node_id.clone(),
            session: lease.session.clone(),
        });
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-changed (every change
        // is a single assignment or insert), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Apply a change to keys and rooms: compute it on a copy, persist the copy, then make it
    /// current. A failed write leaves the registry unchanged.
    async fn change_keys<T>(
        &self,
        change: impl FnOnce(&mut Keys) -> Option<T>,
    ) -> Result<Option<T>> {
        let _writer = self.writer.lock().await;
        let mut keys = self.state().keys.clone();
        let Some(out) = change(&mut keys) else {
            return Ok(None);
        };
        if let Some(path) = &self.path {
            persist(path, &keys).await?;
        }
        self.state().keys = keys;
        Ok(Some(out))
    }
}

/// Write `keys` to `path` atomically: a temporary file, synced, then renamed over `path`.
async fn persist(path: &Path, keys: &Keys) -> Result<()> {
    let file = KeysFile {
        version: 1,
        rooms: keys.rooms.values().cloned().collect(),
    };
    let json = serde_json::to_vec_pretty(&file)
        .map_err(|e| RegistryError::Corrupt(format!("encoding {}: {e}", path.display())))?;
    let path = path.to_owned();
    let write = move || -> Result<()> {
        use std::io::Write;
        let tmp = path.with_file_name(KEYS_TMP_FILE);
        let io = |what: &str, p: &Path, e: std::io::Error| {
            RegistryError::Unavailable(format!("{what} {}: {e}", p.display()))
        };
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
        f.write_all(&json).map_err(|e| io("writing", &tmp, e))?;
        f.sync_all().map_err(|e| io("syncing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("renaming to", &path, e))
    };
    tokio::task::spawn_blocking(write)
        .await
        .map_err(|e| RegistryError::Unavailable(format!("writing keys: {e}")))?
}

#[async_trait::async_trait]
impl Registry for EmbeddedRegistry {
    async fn get_or_create_key(&self, room: &str) -> Result<String> {
        if let Some(r) = self.state().keys.rooms.get(room) {
            return Ok(r.key.clone());
        }
        let key = self
            .change_keys(|keys| {
                let key = match keys.rooms.get(room) {
                    // Created meanwhile by a concurrent call: nothing to change.
                    Some(r) => return Some(Err(r.key.clone())),
                    None => keys.fresh_key(),
                };
                keys.set_key(room, key.clone());
                Some(Ok(key))
            })
            .await?;
        match key {
            Some(Ok(k) | Err(k)) => Ok(k),
            None => Err(RegistryError::Corrupt("get_or_create_key: no key".into())),
        }
    }

    async fn reset_key(&self, room: &str) -> Result<String> {
        self.change_keys(|keys| {
            let key = keys.fresh_key();
            keys.set_key(room, key.clone());
            Some(key)
        })
        .await?
        .ok_or_else(|| RegistryError::Corrupt("reset_key: no key".into()))
    }

    async fn delete_room(&self, room: &str) -> Result<bool> {
        let deleted = self
            .change_keys(|keys| {
                let old = keys.rooms.remove(room)?;
                keys.by_key.remove(&old.key);
                Some(())
            })
            .await?;
        Ok(deleted.is_some())
    }

    async fn room_for_key(&self, key: &str) -> Result<Option<String>> {
        Ok(self.state().keys.by_key.get(key).cloned())
    }

    async fn room(&self, room: &str) -> Result<Option<Room>> {
        Ok(self.state().keys.rooms.get(room).cloned())
    }

    async fn rooms(&self) -> Result<Vec<Room>> {
        Ok(self.state().keys.rooms.values().cloned().collect())
    }

    async fn acquire_lease(&self, lease: &StreamLease, ttl: Duration) -> Result<LeaseOutcome> {
        let now = Instant::now();
        let mut state = self.state();
        let (kicked, orders) = match state.leases.get_mut(&lease.stream) {
            Some(e) if e.expires > now && e.lease.session != lease.session => {
                return Ok(LeaseOutcome::HeldBy(Box::new(e.lease.clone())));
            }
            // Same session: what an operator asked stays pending.
            Some(e) if e.expires > now => (e.kicked, std::mem::take(&mut e.orders)),
            _ => (false, Vec::new()),
        };
        let fresh = state
            .leases
            .get(&lease.stream)
            .is_none_or(|e| e.expires <= now);
        state.leases.insert(
            lease.stream.clone(),
            LeaseEntry {
                lease: lease.clone(),
                expires: now + ttl,
                kicked,
                orders,
            },
        );
        if fresh {
            self.new_owner(&mut state, lease);
        }
        Ok(LeaseOutcome::Acquired)
    }

    async fn take_over_lease(
        &self,
        lease: &StreamLease,
        from: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let now = Instant::now();
        let mut state = self.state();
        match state.leases.get(&lease.stream) {
            Some(e) if e.expires > now && e.lease.session == from => {}
            _ => return Ok(false),
        }
        state.leases.insert(
            lease.stream.clone(),
            LeaseEntry {
                lease: lease.clone(),
                expires: now + ttl,
                kicked: false,
                orders: Vec::new(),
            },
        );
        self.new_owner(&mut state, lease);
        Ok(true)
    }

    async fn refresh_lease(&self, lease: &StreamLease, ttl: Duration) -> Result<RefreshOutcome> {
        let now = Instant::now();
        let mut state = self.state();
        let Some(entry) = state.leases.get_mut(&lease.stream) else {
            return Ok(RefreshOutcome::Lost);
        };
        if entry.expires <= now {
            state.leases.remove(&lease.stream);
            return Ok(RefreshOutcome::Lost);
        }
        if entry.lease.session != lease.session {
            return Ok(RefreshOutcome::Lost);
        }
        if entry.kicked {
            state.leases.remove(&lease.stream);
            return Ok(RefreshOutcome::Kicked);
        }
        entry.lease = lease.clone();
        entry.expires = now + ttl;
        Ok(match std::mem::take(&mut entry.orders) {
            orders if orders.is_empty() => RefreshOutcome::Refreshed,
            orders => RefreshOutcome::Orders(orders),
        })
    }

    async fn release_lease(&self, stream: &str, session: &str) -> Result<bool> {
        let now = Instant::now();
        let mut state = self.state();
        match state.leases.get(stream) {
            Some(e) if e.expires > now && e.lease.session == session => {
                state.leases.remove(stream);
                Ok(true)
            }
            Some(e) if e.expires <= now => {
                state.leases.remove(stream);
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    async fn lease(&self, stream: &str) -> Result<Option<StreamLease>> {
        let now = Instant::now();
        let state = self.state();
        let generation = state.generations.get(stream).copied().unwrap_or(0);
        Ok(state
            .leases
            .get(stream)
            .filter(|e| e.expires > now)
            .map(|e| StreamLease {
                generation,
                ..e.lease.clone()
            }))
    }

    fn owner_changes(&self) -> tokio::sync::broadcast::Receiver<OwnerChange> {
        self.owners.subscribe()
    }

    async fn leases(&self) -> Result<Vec<StreamLease>> {
        let now = Instant::now();
        let mut state = self.state();
        state.leases.retain(|_, e| e.expires > now);
        let mut out: Vec<StreamLease> = state.leases.values().map(|e| e.lease.clone()).collect();
        out.sort_by(|a, b| a.stream.cmp(&b.stream));
        Ok(out)
    }

    async fn kick(&self, stream: &str) -> Result<bool> {
        let now = Instant::now();
        let mut state = self.state();
        match state.leases.get_mut(stream) {
            Some(e) if e.expires > now => {
                e.kicked = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn order(&self, stream: &str, order: &Order) -> Result<bool> {
        let now = Instant::now();
        let mut state = self.state();
        match state.leases.get_mut(stream) {
            Some(e) if e.expires > now => {
                if e.orders.len() == MAX_PENDING_ORDERS {
                    e.orders.remove(0);
                }
                e.orders.push(order.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn put_pull(&self, pull: &PullSpec) -> Result<()> {
        self.state().pulls.insert(pull.id.clone(), pull.clone());
        Ok(())
    }

    async fn delete_pull(&self, id: &str) -> Result<bool> {
        Ok(self.state().pulls.remove(id).is_some())
    }

    async fn pulls(&self) -> Result<Vec<PullSpec>> {
        Ok(self.state().pulls.values().cloned().collect())
    }

    async fn heartbeat(&self, node: &NodeInfo, ttl: Duration) -> Result<()> {
        let expires = Instant::now() + ttl;
        self.state()
            .nodes
            .insert(node.id.clone(), (node.clone(), expires));
        Ok(())
    }

    async fn remove_node(&self, id: &str) -> Result<()> {
        self.state().nodes.remove(id);
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let now = Instant::now();
        let mut state = self.state();
        state.nodes.retain(|_, (_, expires)| *expires > now);
        let mut out: Vec<NodeInfo> = state.nodes.values().map(|(n, _)| n.clone()).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

/// The semantic checks shared with the Redis integration tests.
#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod common;

#[cfg(test)]
mod tests {
    use super::*;

    use super::common;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ferrolive-registry-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn keys_and_rooms() {
        common::check_keys_and_rooms(&EmbeddedRegistry::in_memory()).await;
    }

    #[tokio::test]
    async fn leases() {
        common::check_leases(&EmbeddedRegistry::in_memory()).await;
    }

    #[tokio::test]
    async fn lease_expiry() {
        common::check_lease_expiry(&EmbeddedRegistry::in_memory()).await;
    }

    #[tokio::test]
    async fn kick() {
        common::check_kick(&EmbeddedRegistry::in_memory()).await;
    }

    #[tokio::test]
    async fn owners() {
        common::check_owners(&EmbeddedRegistry::in_memory()).await;
    }

    #[tokio::test]
    async fn pulls() {
        common::check_pulls(&EmbeddedRegistry::in_memory()).await;
    }

    #[tokio::test]
    async fn orders() {
        common::check_orders(&EmbeddedRegistry::in_memory()).await;
    }

    #[tokio::test]
    async fn nodes() {
        common::check_nodes(&EmbeddedRegistry::in_memory()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_reset_is_atomic() {
        let dir = temp_dir("concurrent");
        let reg = std::sync::Arc::new(EmbeddedRegistry::open(&dir).await.expect("open"));
        common::check_concurrent_reset(reg).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn persisted_registry_semantics() {
        let dir = temp_dir("semantics");
        let reg = EmbeddedRegistry::open(&dir).await.expect("open");
        common::check_keys_and_rooms(&reg).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn keys_persist_across_reopen() {
        let dir = temp_dir("reopen").join("nested");
        let (key_a, key_b_old, key_b) = {
            let reg = EmbeddedRegistry::open(&dir).await.expect("open");
            let a = reg.get_or_create_key("a").await.expect("a");
            let b_old = reg.get_or_create_key("b").await.expect("b");
            let b = reg.reset_key("b").await.expect("reset b");
            reg.get_or_create_key("gone").await.expect("gone");
            assert!(reg.delete_room("gone").await.expect("delete"));
            (a, b_old, b)
        };
        assert!(dir.join(KEYS_FILE).is_file());
        assert!(!dir.join(KEYS_TMP_FILE).exists());

        let reg = EmbeddedRegistry::open(&dir).await.expect("reopen");
        assert_eq!(reg.get_or_create_key("a").await.expect("a"), key_a);
        assert_eq!(
            reg.room_for_key(&key_a).await.expect("lookup").as_deref(),
            Some("a")
        );
        assert_eq!(
            reg.room_for_key(&key_b).await.expect("lookup").as_deref(),
            Some("b")
        );
        assert_eq!(reg.room_for_key(&key_b_old).await.expect("lookup"), None);
        assert_eq!(reg.room("gone").await.expect("room"), None);
        let names: Vec<String> = reg
            .rooms()
            .await
            .expect("rooms")
            .into_iter()
            .map(|r| r.room)
            .collect();
        assert_eq!(names, ["a", "b"]);
        let b = reg.room("b").await.expect("room").expect("b exists");
        assert_eq!(b.key, key_b);
        assert!(b.key_created_ms > 0);
        let _ = std::fs::remove_dir_all(dir.parent().unwrap_or(&dir));
    }

    #[tokio::test]
    async fn corrupt_file_is_reported_with_its_path() {
        let dir = temp_dir("corrupt");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(KEYS_FILE);
        std::fs::write(&path, b"{ not json").expect("write");
        match EmbeddedRegistry::open(&dir).await {
            Err(RegistryError::Corrupt(msg)) => {
                assert!(msg.contains(&path.display().to_string()), "{msg}")
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // The same key for two rooms is corrupt too.
        std::fs::write(
            &path,
            br#"{"version":1,"rooms":[{"room":"a","key":"sk_x","key_created_ms":1},
                                      {"room":"b","key":"sk_x","key_created_ms":2}]}"#,
        )
        .expect("write");
        assert!(matches!(
            EmbeddedRegistry::open(&dir).await,
            Err(RegistryError::Corrupt(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
