//! The Redis-backed registry shared by every node of a cluster.
//!
//! Schema (every key under the prefix, `ferrolive:` by default):
//!
//! | key                    | type                | content                                        |
//! |------------------------|---------------------|------------------------------------------------|
//! | `key:{key}`            | string              | the room the channel key publishes to          |
//! | `room:{room}`          | hash                | `key`, `key_created_ms`                        |
//! | `rooms`                | set                 | every room name                                |
//! | `stream:{app/room}`    | string, PX ttl      | JSON [`StreamLease`]                           |
//! | `generation:{app/room}`| integer             | the stream's owners so far (see `generation`)  |
//! | `owners` (channel)     | pub/sub             | each new owner: stream, generation, node, session |
//! | `streams`              | set                 | every stream that may hold a lease             |
//! | `kick:{app/room}`      | string, PX ttl      | session id of the kicked publisher             |
//! | `orders:{app/room}`    | list, PX ttl        | session, a newline, a JSON [`Order`]           |
//! | `node:{id}`            | string, PX ttl      | JSON [`NodeInfo`]                              |
//! | `pulls`                | hash                | pull id -> JSON [`PullSpec`]                   |
//! | `nodes`                | set                 | every node id that may be alive                |
//!
//! Every change to a key/room pair and every lease change runs as one Lua script, so it is
//! atomic. The `streams` and `nodes` sets may hold members whose key has expired; listing
//! prunes them (atomically: a member is removed only if its key is still absent).
//!
//! Availability: [`RedisRegistry::connect`] does not contact Redis. The connection is made
//! on first use and re-made by the [`ConnectionManager`] whenever it breaks, so a node can
//! start while Redis is down and starts working as soon as Redis is back. Every operation is
//! bounded by a timeout (default [`DEFAULT_TIMEOUT`]); on timeout or any connection error it
//! returns [`RegistryError::Unavailable`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult, Script};

use crate::{
    new_key, LeaseOutcome, NodeInfo, Order, OwnerChange, PullSpec, RefreshOutcome, Registry,
    RegistryError, Result, Room, StreamLease, MAX_PENDING_ORDERS,
};

/// Bound on every registry operation (including (re)connecting).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// How many fresh keys to try when a new key collides with an existing one.
const KEY_ATTEMPTS: usize = 8;

/// Create the room with a new key unless it exists; returns the room's key, or nil when the
/// new key collides with an existing one (the caller retries with another key).
/// KEYS: room:{room}, rooms, key:{new}. ARGV: room, new key, now_ms.
const GET_OR_CREATE_KEY: &str = r#"
local existing = redis.call('HGET', KEYS[1], 'key')
if existing then return existing end
if redis.call('EXISTS', KEYS[3]) == 1 then return false end
redis.call('HSET', KEYS[1], 'key', ARGV[2], 'key_created_ms', ARGV[3])
redis.call('SET', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
return ARGV[2]
"#;

/// Give the room a new key and revoke the old one; nil on key collision.
/// KEYS: room:{room}, rooms, key:{new}. ARGV: room, new key, now_ms, prefix.
const RESET_KEY: &str = r#"
if redis.call('EXISTS', KEYS[3]) == 1 then return false end
local old = redis.call('HGET', KEYS[1], 'key')
if old then redis.call('DEL', ARGV[4] .. 'key:' .. old) end
redis.call('HSET', KEYS[1], 'key', ARGV[2], 'key_created_ms', ARGV[3])
redis.call('SET', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
return ARGV[2]
"#;

/// Delete the room and its key; 1 if the room existed.
/// KEYS: room:{room}, rooms. ARGV: room, prefix.
const DELETE_ROOM: &str = r#"
local old = redis.call('HGET', KEYS[1], 'key')
local existed = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if old then redis.call('DEL', ARGV[2] .. 'key:' .. old) end
return existed
"#;

/// Set the lease if absent or held by the same session; nil when set, else the holder's JSON.
/// A lease taken while free gives the stream its next generation, told on the owners
/// channel as `stream`, generation, node and session, one per line.
/// KEYS: stream:{s}, streams, generation:{s}. ARGV: session, lease JSON, ttl ms, stream,
/// owners channel, node.
const ACQUIRE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, obj = pcall(cjson.decode, cur)
  if not (ok and type(obj) == 'table' and obj.session == ARGV[1]) then return cur end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
if not cur then
  local generation = redis.call('INCR', KEYS[3])
  redis.call('PUBLISH', ARGV[5], ARGV[4] .. '\n' .. generation .. '\n' .. ARGV[6] .. '\n' .. ARGV[1])
end
return false
"#;

/// Replace the lease held by session ARGV[2] with a new owner's, as a new generation; 1 if
/// replaced, 0 if that session does not hold it.
/// KEYS: stream:{s}, streams, generation:{s}. ARGV: session, from session, lease JSON,
/// ttl ms, stream, owners channel, node.
const TAKE_OVER: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local ok, obj = pcall(cjson.decode, cur)
if not (ok and type(obj) == 'table' and obj.session == ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[5])
local generation = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[6], ARGV[5] .. '\n' .. generation .. '\n' .. ARGV[7] .. '\n' .. ARGV[1])
return 1
"#;

/// Refresh a lease held by this session. A pending kick for this session is consumed and the
/// lease deleted; pending orders are consumed and those for this session answered. Returns
/// {'lost'}, {'kicked'} or {'refreshed', order JSON...}.
/// KEYS: stream:{s}, kick:{s}, streams, orders:{s}. ARGV: session, lease JSON, ttl ms, stream.
const REFRESH: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return {'lost'} end
local ok, obj = pcall(cjson.decode, cur)
if not (ok and type(obj) == 'table' and obj.session == ARGV[1]) then return {'lost'} end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[3], ARGV[4])
  return {'kicked'}
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
local answer = {'refreshed'}
local mine = ARGV[1] .. '\n'
for _, entry in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
  if string.sub(entry, 1, #mine) == mine then
    table.insert(answer, string.sub(entry, #mine + 1))
  end
end
redis.call('DEL', KEYS[4])
return answer
"#;

/// Compare-and-delete by session; 1 if deleted.
/// KEYS: stream:{s}, kick:{s}, streams. ARGV: session, stream.
const RELEASE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local ok, obj = pcall(cjson.decode, cur)
if not (ok and type(obj) == 'table' and obj.session == ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('SREM', KEYS[3], ARGV[2])
return 1
"#;

/// Mark the current holder of the lease as kicked, for as long as its lease lives.
/// 1: kicked, 0: no lease, -1: unreadable lease.
/// KEYS: stream:{s}, kick:{s}.
const KICK: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local ok, obj = pcall(cjson.decode, cur)
if not (ok and type(obj) == 'table' and type(obj.session) == 'string') then return -1 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then ttl = 60000 end
redis.call('SET', KEYS[2], obj.session, 'PX', ttl)
return 1
"#;

/// Queue an order for the current holder of the lease (its session, a newline, the order),
/// keeping at most ARGV[2] orders, for as long as the lease lives.
/// 1: queued, 0: no lease, -1: unreadable lease.
/// KEYS: stream:{s}, orders:{s}. ARGV: order JSON, cap.
const ORDER: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local ok, obj = pcall(cjson.decode, cur)
if not (ok and type(obj) == 'table' and type(obj.session) == 'string') then return -1 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then ttl = 60000 end
redis.call('RPUSH', KEYS[2], obj.session .. '\n' .. ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
"#;

/// Remove set members whose key (`ARGV[1] .. member`) no longer exists.
/// KEYS: the set. ARGV: key prefix, members...
const PRUNE: &str = r#"
local removed = 0
for i = 2, #ARGV do
  if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 0 then
    removed = removed + redis.call('SREM', KEYS[1], ARGV[i])
  end
end
return removed
"#;

struct Scripts {
    get_or_create_key: Script,
    reset_key: Script,
    delete_room: Script,
    acquire: Script,
    take_over: Script,
    refresh: Script,
    release: Script,
    kick: Script,
    order: Script,
    prune: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            get_or_create_key: Script::new(GET_OR_CREATE_KEY),
            reset_key: Script::new(RESET_KEY),
            delete_room: Script::new(DELETE_ROOM),
            acquire: Script::new(ACQUIRE),
            take_over: Script::new(TAKE_OVER),
            refresh: Script::new(REFRESH),
            release: Script::new(RELEASE),
            kick: Script::new(KICK),
            order: Script::new(ORDER),
            prune: Script::new(PRUNE),
        }
    }
}

/// Where the Redis master is: one address, or whatever Redis Sentinel says.
enum Source {
    Direct(redis::Client),
    /// `redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]`: the master of SERVICE as
    /// the sentinels name it, asked again whenever a connection is given up (so a failover
    /// is followed).
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

impl Source {
    fn parse(url: &str) -> Result<Source> {
        let invalid = |why: String| RegistryError::Unavailable(format!("invalid redis url: {why}"));
        let Some(rest) = url.strip_prefix("redis+sentinel://") else {
            return redis::Client::open(url)
                .map(Source::Direct)
                .map_err(|e| invalid(e.to_string()));
        };
        let (hosts, path) = rest.split_once('/').ok_or_else(|| {
            invalid("redis+sentinel:// needs /SERVICE after the sentinels".into())
        })?;
        let mut path = path.split('/');
        let service = path.next().filter(|s| !s.is_empty());
        let service = service.ok_or_else(|| invalid("no service (master) name".into()))?;
        let db = match path.next() {
            Some(db) => db
                .parse()
                .map_err(|_| invalid(format!("{db:?} is not a database number")))?,
            None => 0,
        };
        let sentinels: Vec<String> = (hosts.split(','))
            .filter(|h| !h.is_empty())
            .map(|h| format!("redis://{h}"))
            .collect();
        if sentinels.is_empty() {
            return Err(invalid("no sentinel addresses".into()));
        }
        let node = redis::sentinel::SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(redis::RedisConnectionInfo::default().set_db(db));
        let client = redis::sentinel::SentinelClient::build(
            sentinels,
            service.to_owned(),
            Some(node),
            redis::sentinel::SentinelServerType::Master,
        )
        .map_err(|e| invalid(e.to_string()))?;
        Ok(Source::Sentinel(tokio::sync::Mutex::new(client)))
    }

    /// A client for the master, as of now.
    async fn client(&self) -> RedisResult<redis::Client> {
        match self {
            Source::Direct(client) => Ok(client.clone()),
            Source::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
        }
    }
}

/// The pub/sub channel (under the prefix) new owners are told on.
const OWNERS_CHANNEL: &str = "owners";

/// Listen to the owners channel for as long as anyone may (the registry lives), on a
/// connection of its own, made again whenever it breaks.
async fn listen_owners(
    source: Arc<Source>,
    channel: String,
    owners: tokio::sync::broadcast::Sender<OwnerChange>,
) {
    use tokio_stream::StreamExt as _;
    let mut told = false;
    loop {
        let subscribed = async {
            let mut pubsub = source.client().await?.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        };
        match tokio::time::timeout(DEFAULT_TIMEOUT, subscribed).await {
            Ok(Ok(mut pubsub)) => {
                told = false;
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    let Ok(text) = message.get_payload::<String>() else {
                        continue;
                    };
                    let mut lines = text.split('\n');
                    let (Some(stream), Some(generation), Some(node), Some(session)) =
                        (lines.next(), lines.next(), lines.next(), lines.next())
                    else {
                        continue;
                    };
                    let Ok(generation) = generation.parse() else {
                        continue;
                    };
                    let _ = owners.send(OwnerChange {
                        stream: stream.to_owned(),
                        generation,
                        node_id: node.to_owned(),
                        session: session.to_owned(),
                    });
                }
            }
            Ok(Err(e)) if !told => {
                told = true;
                tracing::warn!(error = %e, "cannot listen for stream owner changes; retrying")
            }
            _ => {}
        }
        if owners.receiver_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Registry backed by Redis (see the module documentation for the schema).
pub struct RedisRegistry {
    /// New owners, as the owners channel tells them (see [`listen_owners`]).
    owners: tokio::sync::broadcast::Sender<OwnerChange>,
    owners_listening: std::sync::Mutex<bool>,
    source: Arc<Source>,
    config: ConnectionManagerConfig,
    /// The connection, numbered: an exchange that times out or finds the connection
    /// broken gives it up (see [`RedisRegistry::bounded`]); none until the master is known.
    conn: std::sync::Mutex<(u64, Option<ConnectionManager>)>,
    prefix: String,
    timeout: Duration,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRegistry")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisRegistry {
    /// Run a script that leaves a word for the holder of `stream`'s lease: 1 left, 0 no
    /// lease (`false`), -1 an unreadable lease.
    async fn holder_script(
        &self,
        what: &str,
        stream: &str,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<bool> {
        let inv = &inv;
        let r: i64 = self
            .bounded(what, move |mut conn| async move {
                inv.invoke_async(&mut conn).await
            })
            .await?;
        match r {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(RegistryError::Corrupt(format!(
                "{}: unreadable lease",
                self.k("stream", stream)
            ))),
        }
    }

    /// A registry on `url` (e.g. `redis://10.0.0.5:6379/0`) with every key under `prefix`
    /// (callers use `"ferrolive:"`).
    ///
    /// Lazy: this only parses the URL and never contacts Redis, so it succeeds while Redis
    /// is down; the connection is made on first use and re-made whenever it breaks. Fails
    /// (with `Unavailable`) only on an invalid URL. Use [`RedisRegistry::ping`] to check
    /// that Redis is reachable.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        Self::connect_with_timeout(url, prefix, DEFAULT_TIMEOUT).await
    }

    /// [`RedisRegistry::connect`] with a bound other than [`DEFAULT_TIMEOUT`] on every
    /// operation.
    pub async fn connect_with_timeout(url: &str, prefix: &str, timeout: Duration) -> Result<Self> {
        let source = Source::parse(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Fail a reconnection attempt quickly: the next operation starts a new one, so a
            // long back-off would only delay recovery once Redis is back.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(250));
        // A single address is known at once; a sentinel is asked at the first exchange.
        let conn = match &source {
            Source::Direct(client) => Some(
                ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                    .map_err(|e| RegistryError::Unavailable(format!("redis: {e}")))?,
            ),
            Source::Sentinel(_) => None,
        };
        Ok(RedisRegistry {
            owners: tokio::sync::broadcast::channel(256).0,
            owners_listening: std::sync::Mutex::new(false),
            source: Arc::new(source),
            config,
            conn: std::sync::Mutex::new((0, conn)),
            prefix: prefix.to_owned(),
            timeout,
            scripts: Scripts::new(),
        })
    }

    /// Check that Redis answers (`Unavailable` otherwise).
    pub async fn ping(&self) -> Result<()> {
        let _: String = self
            .bounded("PING", move |mut conn| async move {
                redis::cmd("PING").query_async(&mut conn).await
            })
            .await?;
        Ok(())
    }

    fn k(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.prefix)
    }

    fn set_key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn connection(&self) -> (u64, Option<ConnectionManager>) {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        (conn.0, conn.1.clone())
    }

    /// Give up the connection numbered `number` (unless that was done already) for one to
    /// the master as its source says now. A connection whose exchange timed out may sit on
    /// a link that went silent (a partition, a hung Redis), where TCP would take minutes to
    /// say so; one refused or read-only may be to a master that failed over: a new one
    /// works as soon as Redis answers again, instead of waiting behind it.
    async fn renew(&self, number: u64) {
        if self.connection().0 != number {
            return;
        }
        let client = tokio::time::timeout(self.timeout, self.source.client()).await;
        let fresh = match client {
            Ok(Ok(client)) => ConnectionManager::new_lazy_with_config(client, self.config.clone())
                .map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        let fresh = fresh
            .inspect_err(|e| tracing::debug!(error = %e, "no Redis master to connect to yet"))
            .ok();
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if conn.0 == number {
            *conn = (number + 1, fresh);
        }
    }

    /// Run one Redis exchange (`exchange` on a connection), bounded by the timeout, mapping
    /// errors. A connection found dropped (Redis restarted since the last exchange) is
    /// tried once more: the manager reconnects for it, so the first call after Redis is
    /// back succeeds instead of failing with a broken pipe. An exchange that times out
    /// gives up its connection ([`RedisRegistry::renew`]). Nothing is retried otherwise.
    async fn bounded<T, F>(
        &self,
        what: &str,
        exchange: impl Fn(ConnectionManager) -> F,
    ) -> Result<T>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let (mut number, mut conn) = self.connection();
        if conn.is_none() {
            self.renew(number).await;
            (number, conn) = self.connection();
        }
        let Some(conn) = conn else {
            return Err(RegistryError::Unavailable(format!(
                "redis {what}: no master known"
            )));
        };
        let attempts = async {
            match exchange(conn.clone()).await {
                Err(e) if e.is_connection_dropped() => exchange(conn.clone()).await,
                result => result,
            }
        };
        match tokio::time::timeout(self.timeout, attempts).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let read_only = e.kind() == ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
                if e.is_timeout() || e.is_io_error() || e.is_connection_refusal() || read_only {
                    self.renew(number).await;
                }
                Err(map_err(what, e))
            }
            Err(_) => {
                self.renew(number).await;
                Err(RegistryError::Unavailable(format!(
                    "redis {what}: no answer within {:?}",
                    self.timeout
                )))
            }
        }
    }

    async fn get_string(&self, what: &str, key: String) -> Result<Option<String>> {
        let key = &key;
        self.bounded(what, move |mut conn| async move {
            redis::cmd("GET").arg(key).query_async(&mut conn).await
        })
        .await
    }

    async fn smembers(&self, set: &str) -> Result<Vec<String>> {
        let key = self.set_key(set);
        let key = &key;
        let mut members: Vec<String> = self
            .bounded("SMEMBERS", move |mut conn| async move {
                redis::cmd("SMEMBERS").arg(key).query_async(&mut conn).await
            })
            .await?;
        members.sort();
        Ok(members)
    }

    /// The values of `{kind}:{member}` for every member of `set` (in member order), pruning
    /// members whose key is gone.
    async fn list_values(&self, set: &str, kind: &str) -> Result<Vec<(String, String)>> {
        let members = self.smembers(set).await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = members.iter().map(|m| self.k(kind, m)).collect();
        let keys = &keys;
        let values: Vec<Option<String>> = self
            .bounded("MGET", move |mut conn| async move {
                redis::cmd("MGET").arg(keys).query_async(&mut conn).await
            })
            .await?;
        let mut out = Vec::with_capacity(members.len());
        let mut gone = Vec::new();
        for (member, value) in members.into_iter().zip(values) {
            match value {
                Some(v) => out.push((member, v)),
                None => gone.push(member),
            }
        }
        self.prune(set, kind, gone).await?;
        Ok(out)
    }

    async fn prune(&self, set: &str, kind: &str, members: Vec<String>) -> Result<()> {
        if members.is_empty() {
            return Ok(());
        }
        let mut inv = self.scripts.prune.key(self.set_key(set));
        inv.arg(format!("{}{kind}:", self.prefix)).arg(members);
        let inv = &inv;
        let _: i64 = self
            .bounded("prune", move |mut conn| async move {
                inv.invoke_async(&mut conn).await
            })
            .await?;
        Ok(())
    }

    /// Run the get-or-create or the reset script, retrying on (astronomically unlikely) key
    /// collisions.
    async fn key_script(&self, reset: bool, room: &str) -> Result<String> {
        let what = if reset {
            "reset_key"
        } else {
            "get_or_create_key"
        };
        for _ in 0..KEY_ATTEMPTS {
            let key = new_key();
            let script = if reset {
                &self.scripts.reset_key
            } else {
                &self.scripts.get_or_create_key
            };
            let mut inv = script.key(self.k("room", room));
            inv.key(self.set_key("rooms"))
                .key(self.k("key", &key))
                .arg(room)
                .arg(&key)
                .arg(crate::now_ms());
            if reset {
                inv.arg(&self.prefix);
            }
            let inv = &inv;
            let got: Option<String> = self
                .bounded(what, move |mut conn| async move {
                    inv.invoke_async(&mut conn).await
                })
                .await?;
            if let Some(key) = got {
                return Ok(key);
            }
            tracing::warn!(
                room,
                "new channel key collided with an existing one; retrying"
            );
        }
        Err(RegistryError::Corrupt(format!(
            "{what}: {KEY_ATTEMPTS} fresh keys all collided with existing keys"
        )))
    }
}

fn map_err(what: &str, e: RedisError) -> RegistryError {
    match e.kind() {
        ErrorKind::UnexpectedReturnType | ErrorKind::Parse => {
            RegistryError::Corrupt(format!("redis {what}: {e}"))
        }
        _ => RegistryError::Unavailable(format!("redis {what}: {e}")),
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn to_json<T: serde::Serialize>(what: &str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| RegistryError::Corrupt(format!("encoding {what}: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(key: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| RegistryError::Corrupt(format!("{key}: {e}")))
}

#[async_trait::async_trait]
impl Registry for RedisRegistry {
    async fn get_or_create_key(&self, room: &str) -> Result<String> {
        self.key_script(false, room).await
    }

    async fn reset_key(&self, room: &str) -> Result<String> {
        self.key_script(true, room).await
    }

    async fn delete_room(&self, room: &str) -> Result<bool> {
        let mut inv = self.scripts.delete_room.key(self.k("room", room));
        inv.key(self.set_key("rooms")).arg(room).arg(&self.prefix);
        let inv = &inv;
        let existed: i64 = self
            .bounded("delete_room", move |mut conn| async move {
                inv.invoke_async(&mut conn).await
            })
            .await?;
        Ok(existed > 0)
    }

    async fn room_for_key(&self, key: &str) -> Result<Option<String>> {
        self.get_string("GET key", self.k("key", key)).await
    }

    async fn room(&self, room: &str) -> Result<Option<Room>> {
        let hkey = self.k("room", room);
        let k = hkey.clone();
        let k = &k;
        let fields: HashMap<String, String> = self
            .bounded("HGETALL", move |mut conn| async move {
                redis::cmd("HGETALL").arg(k).query_async(&mut conn).await
            })
            .await?;
        room_from_fields(&hkey, room, &fields)
    }

    async fn rooms(&self) -> Result<Vec<Room>> {
        let members = self.smembers("rooms").await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for m in &members {
            pipe.cmd("HGETALL").arg(self.k("room", m));
        }
        let pipe = &pipe;
        let all: Vec<HashMap<String, String>> = self
            .bounded("HGETALL", move |mut conn| async move {
                pipe.query_async(&mut conn).await
            })
            .await?;
        let mut out = Vec::with_capacity(members.len());
        let mut gone = Vec::new();
        for (member, fields) in members.into_iter().zip(all) {
            match room_from_fields(&self.k("room", &member), &member, &fields)? {
                Some(r) => out.push(r),
                None => gone.push(member),
            }
        }
        self.prune("rooms", "room", gone).await?;
        Ok(out)
    }

    async fn acquire_lease(&self, lease: &StreamLease, ttl: Duration) -> Result<LeaseOutcome> {
        let json = to_json("lease", lease)?;
        let skey = self.k("stream", &lease.stream);
        let mut inv = self.scripts.acquire.key(&skey);
        inv.key(self.set_key("streams"))
            .key(self.k("generation", &lease.stream))
            .arg(&lease.session)
            .arg(json)
            .arg(ttl_ms(ttl))
            .arg(&lease.stream)
            .arg(self.set_key(OWNERS_CHANNEL))
            .arg(&lease.node_id);
        let inv = &inv;
        let holder: Option<String> = self
            .bounded("acquire_lease", move |mut conn| async move {
                inv.invoke_async(&mut conn).await
            })
            .await?;
        match holder {
            None => Ok(LeaseOutcome::Acquired),
            Some(json) => Ok(LeaseOutcome::HeldBy(Box::new(from_json(&skey, &json)?))),
        }
    }

    async fn take_over_lease(
        &self,
        lease: &StreamLease,
        from: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let json = to_json("lease", lease)?;
        let mut inv = self.scripts.take_over.key(self.k("stream", &lease.stream));
        inv.key(self.set_key("streams"))
            .key(self.k("generation", &lease.stream))
            .arg(&lease.session)
            .arg(from)
            .arg(json)
            .arg(ttl_ms(ttl))
            .arg(&lease.stream)
            .arg(self.set_key(OWNERS_CHANNEL))
            .arg(&lease.node_id);
        let inv = &inv;
        let taken: i64 = self
            .bounded("take_over_lease", move |mut conn| async move {
                inv.invoke_async(&mut conn).await
            })
            .await?;
        Ok(taken == 1)
    }

    async fn refresh_lease(&self, lease: &StreamLease, ttl: Duration) -> Result<RefreshOutcome> {
        let json = to_json("lease", lease)?;
        let mut inv = self.scripts.refresh.key(self.k("stream", &lease.stream));
        inv.key(self.k("kick", &lease.stream))
            .key(self.set_key("streams"))
            .key(self.k("orders", &lease.stream))
            .arg(&lease.session)
            .arg(json)
            .arg(ttl_ms(ttl))
            .arg(&lease.stream);
        let inv = &inv;
        let answer: Vec<String> = self
            .bounded("refresh_lease", move |mut conn| async move {
                inv.invoke_async(&mut conn).await
            })
            .await?;
        match answer.split_first() {
            Some((first, orders)) if first == "refreshed" => {
                if orders.is_empty() {
                    return Ok(RefreshOutcome::Refreshed);
                }
                // An order that does not parse (written by a newer version) is skipped.
                Ok(RefreshOutcome::Orders(
                    orders
                        .iter()
                        .filter_map(|o| serde_json::from_str(o).ok())
                        .collect(),
                ))
            }
            Some((first, _)) if first == "lost" => Ok(RefreshOutcome::Lost),
            Some((first, _)) if first == "kicked" => Ok(RefreshOutcome::Kicked),
            _ => Err(RegistryError::Corrupt(format!(
                "refresh_lease: unexpected answer {answer:?}"
            ))),
        }
    }

    async fn release_lease(&self, stream: &str, session: &str) -> Result<bool> {
        let mut inv = self.scripts.release.key(self.k("stream", stream));
        inv.key(self.k("kick", stream))
            .key(self.set_key("streams"))
            .arg(session)
            .arg(stream);
        let inv = &inv;
        let deleted: i64 = self
            .bounded("release_lease", move |mut conn| async move {
                inv.invoke_async(&mut conn).await
            })
            .await?;
        Ok(deleted > 0)
    }

    async fn lease(&self, stream: &str) -> Result<Option<StreamLease>> {
        let key = self.k("stream", stream);
        let keys = [key.clone(), self.k("generation", stream)];
        let keys = &keys;
        let (json, generation): (Option<String>, Option<u64>) = self
            .bounded("MGET stream", move |mut conn| async move {
                redis::cmd("MGET").arg(keys).query_async(&mut conn).await
            })
            .await?;
        let Some(json) = json else {
            return Ok(None);
        };
        let mut lease: StreamLease = from_json(&key, &json)?;
        lease.generation = generation.unwrap_or(0);
        Ok(Some(lease))
    }

    fn owner_changes(&self) -> tokio::sync::broadcast::Receiver<OwnerChange> {
        let mut listening = self
            .owners_listening
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !*listening {
            *listening = true;
            let channel = self.set_key(OWNERS_CHANNEL);
            tokio::spawn(listen_owners(
                self.source.clone(),
                channel,
                self.owners.clone(),
            ));
        }
        self.owners.subscribe()
    }

    async fn leases(&self) -> Result<Vec<StreamLease>> {
        self.list_values("streams", "stream")
            .await?
            .into_iter()
            .map(|(m, json)| from_json(&self.k("stream", &m), &json))
            .collect()
    }

    async fn kick(&self, stream: &str) -> Result<bool> {
        let mut inv = self.scripts.kick.key(self.k("stream", stream));
        inv.key(self.k("kick", stream));
        self.holder_script("kick", stream, inv).await
    }

    async fn order(&self, stream: &str, order: &Order) -> Result<bool> {
        let json = to_json("order", order)?;
        let mut inv = self.scripts.order.key(self.k("stream", stream));
        inv.key(self.k("orders", stream))
            .arg(json)
            .arg(MAX_PENDING_ORDERS);
        self.holder_script("order", stream, inv).await
    }

    async fn put_pull(&self, pull: &PullSpec) -> Result<()> {
        let json = to_json("pull", pull)?;
        let (key, id) = (self.set_key("pulls"), pull.id.clone());
        let (key, id, json) = (&key, &id, &json);
        self.bounded("put_pull", move |mut conn| async move {
            redis::cmd("HSET")
                .arg(key)
                .arg(id)
                .arg(json)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn delete_pull(&self, id: &str) -> Result<bool> {
        let key = self.set_key("pulls");
        let key = &key;
        let removed: i64 = self
            .bounded("delete_pull", move |mut conn| async move {
                redis::cmd("HDEL")
                    .arg(key)
                    .arg(id)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(removed > 0)
    }

    async fn pulls(&self) -> Result<Vec<PullSpec>> {
        let key = self.set_key("pulls");
        let key = &key;
        let all: Vec<String> = self
            .bounded("pulls", move |mut conn| async move {
                redis::cmd("HVALS").arg(key).query_async(&mut conn).await
            })
            .await?;
        let mut pulls: Vec<PullSpec> = all
            .iter()
            .map(|json| {
                serde_json::from_str(json)
                    .map_err(|e| RegistryError::Corrupt(format!("{key}: {e}")))
            })
            .collect::<Result<_>>()?;
        pulls.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(pulls)
    }

    async fn heartbeat(&self, node: &NodeInfo, ttl: Duration) -> Result<()> {
        let json = to_json("node", node)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.k("node", &node.id))
            .arg(json)
            .arg("PX")
            .arg(ttl_ms(ttl))
            .ignore()
            .cmd("SADD")
            .arg(self.set_key("nodes"))
            .arg(&node.id)
            .ignore();
        let pipe = &pipe;
        self.bounded("heartbeat", move |mut conn| async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    async fn remove_node(&self, id: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(self.k("node", id))
            .ignore()
            .cmd("SREM")
            .arg(self.set_key("nodes"))
            .arg(id)
            .ignore();
        let pipe = &pipe;
        self.bounded("remove_node", move |mut conn| async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        self.list_values("nodes", "node")
            .await?
            .into_iter()
            .map(|(m, json)| from_json(&self.k("node", &m), &json))
            .collect()
    }
}

/// A room from its hash (`None` when the hash is empty, i.e. the room does not exist).
fn room_from_fields(
    hkey: &str,
    room: &str,
    fields: &HashMap<String, String>,
) -> Result<Option<Room>> {
    if fields.is_empty() {
        return Ok(None);
    }
    let key = fields
        .get("key")
        .ok_or_else(|| RegistryError::Corrupt(format!("{hkey}: no `key` field")))?;
    let created = fields
        .get("key_created_ms")
        .ok_or_else(|| RegistryError::Corrupt(format!("{hkey}: no `key_created_ms` field")))?;
    let key_created_ms = created
        .parse::<u64>()
        .map_err(|e| RegistryError::Corrupt(format!("{hkey}: key_created_ms {created:?}: {e}")))?;
    Ok(Some(Room {
        room: room.to_owned(),
        key: key.clone(),
        key_created_ms,
    }))
}
