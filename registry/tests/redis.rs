//! Integration tests of [`RedisRegistry`] against a real `redis-server` started on a free
//! port (no persistence) and killed when the test ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
use registry::*;
use testkit::Redis;

mod common;

async fn registry(server: &Redis, prefix: &str) -> RedisRegistry {
    RedisRegistry::connect(&server.url(), prefix)
        .await
        .expect("connect")
}

/// A raw connection for looking at the schema directly.
async fn raw(server: &Redis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance() {
    let server = Redis::start();
    common::check_keys_and_rooms(&registry(&server, "t1:").await).await;
    common::check_leases(&registry(&server, "t2:").await).await;
    common::check_lease_expiry(&registry(&server, "t3:").await).await;
    common::check_kick(&registry(&server, "t4:").await).await;
    common::check_owners(&registry(&server, "t8:").await).await;
    common::check_orders(&registry(&server, "t7:").await).await;
    common::check_pulls(&registry(&server, "t8:").await).await;
    common::check_nodes(&registry(&server, "t5:").await).await;
    common::check_concurrent_reset(Arc::new(registry(&server, "t6:").await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_resets_are_atomic_repeatedly() {
    let server = Redis::start();
    for i in 0..5 {
        let reg: Arc<dyn Registry> = Arc::new(registry(&server, &format!("c{i}:")).await);
        common::check_concurrent_reset(reg).await;
    }
    // Every revoked key is gone from Redis, not merely unmapped.
    let mut raw = raw(&server).await;
    for i in 0..5 {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("c{i}:key:*"))
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(keys.len(), 1, "{keys:?}");
    }
}

#[tokio::test]
async fn schema_and_px_expiry() {
    let server = Redis::start();
    let reg = registry(&server, "ferrolive:").await;
    let mut raw = raw(&server).await;

    let key = reg.get_or_create_key("movie").await.unwrap();
    let room: Option<String> = redis::cmd("GET")
        .arg(format!("ferrolive:key:{key}"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(room.as_deref(), Some("movie"));
    let stored: String = redis::cmd("HGET")
        .arg("ferrolive:room:movie")
        .arg("key")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(stored, key);
    let rooms: Vec<String> = redis::cmd("SMEMBERS")
        .arg("ferrolive:rooms")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(rooms, ["movie"]);

    // The lease is JSON with a PX ttl; Redis expires it.
    let l = common::lease("live/movie", "s1");
    let ttl = Duration::from_millis(300);
    assert_eq!(
        reg.acquire_lease(&l, ttl).await.unwrap(),
        LeaseOutcome::Acquired
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg("ferrolive:stream:live/movie")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= 300, "pttl {pttl}");
    let json: String = redis::cmd("GET")
        .arg("ferrolive:stream:live/movie")
        .query_async(&mut raw)
        .await
        .unwrap();
    let parsed: StreamLease = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, l);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg("ferrolive:stream:live/movie")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(exists, 0);
    assert_eq!(reg.lease("live/movie").await.unwrap(), None);
    // Listing pruned the dead member from the streams set.
    assert!(reg.leases().await.unwrap().is_empty());
    let streams: Vec<String> = redis::cmd("SMEMBERS")
        .arg("ferrolive:streams")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(streams.is_empty(), "{streams:?}");

    // Node heartbeats likewise.
    reg.heartbeat(&common::node("n1"), Duration::from_millis(100))
        .await
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg("ferrolive:node:n1")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= 100, "pttl {pttl}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(reg.nodes().await.unwrap().is_empty());
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg("ferrolive:nodes")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(nodes.is_empty(), "{nodes:?}");

    // Garbage in Redis is reported as Corrupt, not a panic.
    let _: () = redis::cmd("SET")
        .arg("ferrolive:stream:live/bad")
        .arg("not json")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(matches!(
        reg.lease("live/bad").await,
        Err(RegistryError::Corrupt(_))
    ));
    assert!(matches!(
        reg.acquire_lease(&common::lease("live/bad", "s1"), ttl)
            .await,
        Err(RegistryError::Corrupt(_))
    ));
    let _: () = redis::cmd("HSET")
        .arg("ferrolive:room:broken")
        .arg("key")
        .arg("sk_x")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(matches!(
        reg.room("broken").await,
        Err(RegistryError::Corrupt(_))
    ));
}

/// Assert that `op` fails with Unavailable, within the registry's timeout (plus slack).
async fn assert_unavailable<T: std::fmt::Debug>(
    timeout: Duration,
    op: impl std::future::Future<Output = registry::Result<T>>,
) {
    let start = Instant::now();
    let r = op.await;
    let took = start.elapsed();
    assert!(
        matches!(r, Err(RegistryError::Unavailable(_))),
        "expected Unavailable, got {r:?}"
    );
    assert!(took < timeout + Duration::from_millis(500), "took {took:?}");
}

/// Poll until the registry answers again.
async fn wait_until_available(reg: &RedisRegistry) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = reg.ping().await {
        assert!(Instant::now() < deadline, "registry did not recover: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_unavailable_within_timeout_and_recovers() {
    let mut server = Redis::start();
    let timeout = Duration::from_millis(800);
    let reg = RedisRegistry::connect_with_timeout(&server.url(), "ferrolive:", timeout)
        .await
        .unwrap();
    let key = reg.get_or_create_key("movie").await.unwrap();
    let l = common::lease("live/movie", "s1");
    assert_eq!(
        reg.acquire_lease(&l, Duration::from_secs(10))
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );

    // Killed mid-test: every kind of operation fails fast with Unavailable.
    server.stop();
    assert_unavailable(timeout, reg.room_for_key(&key)).await;
    assert_unavailable(timeout, reg.get_or_create_key("movie")).await;
    assert_unavailable(timeout, reg.reset_key("movie")).await;
    assert_unavailable(timeout, reg.refresh_lease(&l, Duration::from_secs(10))).await;
    assert_unavailable(timeout, reg.rooms()).await;
    assert_unavailable(timeout, reg.nodes()).await;
    assert_unavailable(
        timeout,
        reg.heartbeat(&common::node("n1"), Duration::from_secs(1)),
    )
    .await;
    assert_unavailable(timeout, reg.ping()).await;

    // Back on the same port (empty: no persistence): the same registry works again.
    server.restart();
    wait_until_available(&reg).await;
    assert_eq!(reg.room_for_key(&key).await.unwrap(), None);
    let key2 = reg.get_or_create_key("movie").await.unwrap();
    assert_eq!(
        reg.room_for_key(&key2).await.unwrap().as_deref(),
        Some("movie")
    );
    // Scripts are reloaded transparently after the restart emptied the script cache.
    assert_eq!(
        reg.acquire_lease(&l, Duration::from_secs(10))
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );
    assert_eq!(
        reg.refresh_lease(&l, Duration::from_secs(10))
            .await
            .unwrap(),
        RefreshOutcome::Refreshed
    );

    // A server that accepts but never answers (stopped): bounded by the timeout.
    server.pause();
    assert_unavailable(timeout, reg.room_for_key(&key2)).await;
    assert_unavailable(timeout, reg.acquire_lease(&l, Duration::from_secs(10))).await;
    server.resume();
    wait_until_available(&reg).await;
    assert_eq!(
        reg.room_for_key(&key2).await.unwrap().as_deref(),
        Some("movie")
    );
}

/// The first call after Redis comes back succeeds: the connection it finds dropped is
/// made again for it, instead of the call failing with a broken pipe (a 503 from the
/// control API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_call_after_redis_returns_succeeds() {
    let mut server = Redis::start();
    let reg = registry(&server, "back:").await;
    reg.get_or_create_key("room").await.expect("Redis is up");
    server.stop();
    server.restart();
    let started = Instant::now();
    let key = reg.get_or_create_key("room").await;
    assert!(key.is_ok(), "first call after the restart: {key:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_starts_while_redis_is_down() {
    let mut server = Redis::start();
    server.stop();
    let timeout = Duration::from_millis(500);
    // connect succeeds without Redis; operations are Unavailable until it comes up.
    let reg = RedisRegistry::connect_with_timeout(&server.url(), "ferrolive:", timeout)
        .await
        .expect("lazy connect succeeds while Redis is down");
    assert_unavailable(timeout, reg.get_or_create_key("movie")).await;
    assert_unavailable(timeout, reg.ping()).await;
    server.restart();
    wait_until_available(&reg).await;
    let key = reg.get_or_create_key("movie").await.unwrap();
    assert_eq!(
        reg.room_for_key(&key).await.unwrap().as_deref(),
        Some("movie")
    );
}

#[tokio::test]
async fn invalid_url_is_an_error() {
    assert!(matches!(
        RedisRegistry::connect("not a url", "ferrolive:").await,
        Err(RegistryError::Unavailable(_))
    ));
}
