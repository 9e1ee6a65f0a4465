//! Semantic checks every [`Registry`] implementation must pass, shared by the embedded unit
//! tests (`src/embedded.rs` includes this file with `#[path]`) and the Redis integration
//! tests (`tests/redis.rs`). Names are resolved through `crate::`: inside the registry crate
//! they are the crate's own items, in an integration test the test crate imports them at its
//! root with `use registry::*`.
//!
//! Each check expects an empty registry (the Redis tests give every check its own prefix).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use crate::{
    LeaseOutcome, NodeAddrs, NodeInfo, NodeRole, Order, PullSpec, RefreshOutcome, Registry, Room,
    StreamLease, KEY_PREFIX, MAX_PENDING_ORDERS,
};

pub fn lease(stream: &str, session: &str) -> StreamLease {
    StreamLease {
        stream: stream.to_owned(),
        node_id: format!("node-{session}"),
        session: session.to_owned(),
        addrs: NodeAddrs {
            rtmp: "10.0.0.1:1935".into(),
            http: "10.0.0.1:8080".into(),
        },
        started_at_ms: 1_700_000_000_000,
        video_codec: Some("h264".into()),
        audio_codec: None,
        width: Some(1280),
        height: Some(720),
        bitrate_kbps: 2500,
        video_bytes: 0,
        audio_bytes: 0,
        viewers: 0,
        recording: Some(true),
        relays: Vec::new(),
        generation: 0,
    }
}

/// The lease of `stream` as its owner wrote it (without the generation the registry adds,
/// which [`check_owners`] checks).
pub async fn stored(reg: &dyn Registry, stream: &str) -> Option<StreamLease> {
    let lease = reg.lease(stream).await.unwrap()?;
    Some(StreamLease {
        generation: 0,
        ..lease
    })
}

/// Owners are numbered by generation and told as they change: a session taking a free
/// lease is a new owner, the same session again is not, and a take-over from a session
/// that still holds the lease is.
pub async fn check_owners(reg: &dyn Registry) {
    let mut changes = reg.owner_changes();
    // Redis's channel is listened to from the first call on: wait until it is.
    let warm = lease("live/warm", "w");
    let mut heard = false;
    for _ in 0..40 {
        assert_eq!(
            reg.acquire_lease(&warm, LONG).await.unwrap(),
            LeaseOutcome::Acquired
        );
        let wait = std::time::Duration::from_millis(250);
        heard = tokio::time::timeout(wait, changes.recv()).await.is_ok();
        assert!(reg.release_lease("live/warm", "w").await.unwrap());
        if heard {
            break;
        }
    }
    assert!(heard, "no owner change told");
    let a = lease("live/o", "s1");
    assert_eq!(
        reg.acquire_lease(&a, LONG).await.unwrap(),
        LeaseOutcome::Acquired
    );
    let first = reg.lease("live/o").await.unwrap().unwrap().generation;
    assert!(first >= 1);
    let told = tokio::time::timeout(LONG, changes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            told.stream.as_str(),
            told.generation,
            told.session.as_str(),
            told.node_id.as_str()
        ),
        ("live/o", first, "s1", "node-s1")
    );
    // The same session again: no new owner.
    assert_eq!(
        reg.acquire_lease(&a, LONG).await.unwrap(),
        LeaseOutcome::Acquired
    );
    assert_eq!(
        reg.lease("live/o").await.unwrap().unwrap().generation,
        first
    );
    // A take-over from a session that no longer holds it fails; from the holder, it is the
    // next generation.
    let b = lease("live/o", "s2");
    assert!(!reg.take_over_lease(&b, "s9", LONG).await.unwrap());
    assert!(reg.take_over_lease(&b, "s1", LONG).await.unwrap());
    assert_eq!(stored(reg, "live/o").await, Some(b.clone()));
    assert_eq!(
        reg.lease("live/o").await.unwrap().unwrap().generation,
        first + 1
    );
    let told = tokio::time::timeout(LONG, changes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((told.generation, told.session.as_str()), (first + 1, "s2"));
    // The old session has lost it.
    assert_eq!(
        reg.refresh_lease(&a, LONG).await.unwrap(),
        RefreshOutcome::Lost
    );
    assert!(!reg
        .take_over_lease(&lease("live/none", "s3"), "s1", LONG)
        .await
        .unwrap());
}

pub fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.to_owned(),
        role: NodeRole::Edge,
        region: "eu".into(),
        addrs: NodeAddrs {
            rtmp: "10.0.0.2:1935".into(),
            http: "10.0.0.2:8080".into(),
        },
        viewers: [("live/a".to_owned(), 3)].into_iter().collect(),
        egress_bps: 1_000_000,
        updated_at_ms: 1_700_000_000_000,
        pulls: Default::default(),
    }
}

const LONG: Duration = Duration::from_secs(30);

/// Keys and rooms: idempotent creation, reset revokes at once, delete removes both.
pub async fn check_keys_and_rooms(reg: &dyn Registry) {
    assert_eq!(reg.room("alpha").await.unwrap(), None);
    assert_eq!(reg.room_for_key("sk_doesnotexist").await.unwrap(), None);
    assert!(reg.rooms().await.unwrap().is_empty());

    // get_or_create is idempotent.
    let k1 = reg.get_or_create_key("alpha").await.unwrap();
    assert!(k1.starts_with(KEY_PREFIX), "{k1}");
    assert_eq!(reg.get_or_create_key("alpha").await.unwrap(), k1);
    assert_eq!(
        reg.room_for_key(&k1).await.unwrap().as_deref(),
        Some("alpha")
    );
    let room = reg.room("alpha").await.unwrap().expect("alpha exists");
    assert_eq!(
        (room.room.as_str(), room.key.as_str()),
        ("alpha", k1.as_str())
    );
    assert!(room.key_created_ms > 0);
    // A room name is not a key.
    assert_eq!(reg.room_for_key("alpha").await.unwrap(), None);

    // reset revokes the old key at once; the new one works.
    let k2 = reg.reset_key("alpha").await.unwrap();
    assert_ne!(k1, k2);
    assert!(k2.starts_with(KEY_PREFIX));
    assert_eq!(reg.room_for_key(&k1).await.unwrap(), None);
    assert_eq!(
        reg.room_for_key(&k2).await.unwrap().as_deref(),
        Some("alpha")
    );
    assert_eq!(reg.get_or_create_key("alpha").await.unwrap(), k2);
    assert_eq!(reg.room("alpha").await.unwrap().expect("alpha").key, k2);

    // reset creates a missing room.
    let kb = reg.reset_key("beta").await.unwrap();
    assert_eq!(
        reg.room_for_key(&kb).await.unwrap().as_deref(),
        Some("beta")
    );
    let rooms = reg.rooms().await.unwrap();
    let listed: Vec<(&str, &str)> = rooms
        .iter()
        .map(|r| (r.room.as_str(), r.key.as_str()))
        .collect();
    assert_eq!(listed, [("alpha", k2.as_str()), ("beta", kb.as_str())]);

    // delete removes room and key; false the second time.
    assert!(reg.delete_room("alpha").await.unwrap());
    assert_eq!(reg.room_for_key(&k2).await.unwrap(), None);
    assert_eq!(reg.room("alpha").await.unwrap(), None);
    assert!(!reg.delete_room("alpha").await.unwrap());
    assert!(!reg.delete_room("never-existed").await.unwrap());
    let names: Vec<String> = reg
        .rooms()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.room)
        .collect();
    assert_eq!(names, ["beta"]);

    // Re-creating a deleted room issues a new key.
    let k3 = reg.get_or_create_key("alpha").await.unwrap();
    assert!(k3 != k1 && k3 != k2);
    assert_eq!(
        reg.room_for_key(&k3).await.unwrap().as_deref(),
        Some("alpha")
    );
}

/// Lease ownership: acquire, HeldBy, same-session re-acquire, refresh, release.
pub async fn check_leases(reg: &dyn Registry) {
    let a = lease("live/a", "s1");
    assert_eq!(stored(reg, "live/a").await, None);
    assert_eq!(
        reg.acquire_lease(&a, LONG).await.unwrap(),
        LeaseOutcome::Acquired
    );
    assert_eq!(stored(reg, "live/a").await, Some(a.clone()));

    // Another session is refused and told who holds it.
    let intruder = lease("live/a", "s2");
    assert_eq!(
        reg.acquire_lease(&intruder, LONG).await.unwrap(),
        LeaseOutcome::HeldBy(Box::new(a.clone()))
    );
    // The same session acquires again (e.g. after a registry hiccup), updating the lease.
    let a2 = StreamLease {
        viewers: 7,
        ..a.clone()
    };
    assert_eq!(
        reg.acquire_lease(&a2, LONG).await.unwrap(),
        LeaseOutcome::Acquired
    );
    assert_eq!(stored(reg, "live/a").await, Some(a2.clone()));

    // Only the owner refreshes; refresh updates the stats.
    assert_eq!(
        reg.refresh_lease(&intruder, LONG).await.unwrap(),
        RefreshOutcome::Lost
    );
    let a3 = StreamLease {
        bitrate_kbps: 4000,
        video_bytes: 1_000_000,
        audio_bytes: 64_000,
        viewers: 9,
        ..a.clone()
    };
    assert_eq!(
        reg.refresh_lease(&a3, LONG).await.unwrap(),
        RefreshOutcome::Refreshed
    );
    assert_eq!(stored(reg, "live/a").await, Some(a3.clone()));

    // A second stream; listing is sorted by stream.
    let b = lease("live/b", "s3");
    assert_eq!(
        reg.acquire_lease(&b, LONG).await.unwrap(),
        LeaseOutcome::Acquired
    );
    assert_eq!(reg.leases().await.unwrap(), [a3.clone(), b.clone()]);

    // Release is compare-and-delete by session.
    assert!(!reg.release_lease("live/a", "s2").await.unwrap());
    assert_eq!(stored(reg, "live/a").await, Some(a3.clone()));
    assert!(reg.release_lease("live/a", "s1").await.unwrap());
    assert_eq!(stored(reg, "live/a").await, None);
    assert!(!reg.release_lease("live/a", "s1").await.unwrap());
    assert_eq!(
        reg.refresh_lease(&a3, LONG).await.unwrap(),
        RefreshOutcome::Lost
    );
    assert!(!reg.release_lease("live/none", "s1").await.unwrap());
    assert_eq!(reg.leases().await.unwrap(), std::slice::from_ref(&b));

    // Once released, another session takes it.
    assert_eq!(
        reg.acquire_lease(&intruder, LONG).await.unwrap(),
        LeaseOutcome::Acquired
    );
    assert_eq!(
        reg.refresh_lease(&a3, LONG).await.unwrap(),
        RefreshOutcome::Lost
    );
}

/// Leases expire after their ttl unless refreshed.
pub async fn check_lease_expiry(reg: &dyn Registry) {
    let short = Duration::from_millis(50);
    let a = lease("live/exp", "s1");
    assert_eq!(
        reg.acquire_lease(&a, short).await.unwrap(),
        LeaseOutcome::Acquired
    );
    assert!(reg.lease("live/exp").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(stored(reg, "live/exp").await, None);
    assert!(reg.leases().await.unwrap().is_empty());
    assert_eq!(
        reg.refresh_lease(&a, short).await.unwrap(),
        RefreshOutcome::Lost
    );
    assert!(!reg.release_lease("live/exp", "s1").await.unwrap());
    assert!(!reg.kick("live/exp").await.unwrap());
    let b = lease("live/exp", "s2");
    assert_eq!(
        reg.acquire_lease(&b, short).await.unwrap(),
        LeaseOutcome::Acquired
    );

    // Refreshing keeps a lease alive well past its ttl.
    let c = lease("live/kept", "s3");
    let ttl = Duration::from_millis(300);
    assert_eq!(
        reg.acquire_lease(&c, ttl).await.unwrap(),
        LeaseOutcome::Acquired
    );
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            reg.refresh_lease(&c, ttl).await.unwrap(),
            RefreshOutcome::Refreshed
        );
    }
    assert_eq!(stored(reg, "live/kept").await, Some(c));
}

/// Kick: false without a lease; the owner's next refresh answers Kicked (once).
pub async fn check_orders(reg: &dyn Registry) {
    let record = |on| Order::Record { on };
    assert!(!reg.order("live/r", &record(true)).await.unwrap());
    let a = lease("live/r", "s1");
    assert_eq!(
        reg.acquire_lease(&a, LONG).await.unwrap(),
        LeaseOutcome::Acquired
    );
    // Another session neither sees nor consumes the orders; they come in order, once.
    let add = Order::AddRelay {
        id: "r1".into(),
        url: "rtmp://example.com/app/key?x=\"y\"\n".into(),
    };
    assert!(reg.order("live/r", &record(true)).await.unwrap());
    assert!(reg.order("live/r", &add).await.unwrap());
    assert!(reg.order("live/r", &record(false)).await.unwrap());
    assert_eq!(
        reg.refresh_lease(&lease("live/r", "s2"), LONG)
            .await
            .unwrap(),
        RefreshOutcome::Lost
    );
    assert_eq!(
        reg.refresh_lease(&a, LONG).await.unwrap(),
        RefreshOutcome::Orders(vec![record(true), add.clone(), record(false)])
    );
    assert_eq!(
        reg.refresh_lease(&a, LONG).await.unwrap(),
        RefreshOutcome::Refreshed
    );
    // Orders are capped: the oldest go.
    for i in 0..MAX_PENDING_ORDERS + 3 {
        let order = Order::RemoveRelay { id: i.to_string() };
        assert!(reg.order("live/r", &order).await.unwrap());
    }
    match reg.refresh_lease(&a, LONG).await.unwrap() {
        RefreshOutcome::Orders(orders) => {
            assert_eq!(orders.len(), MAX_PENDING_ORDERS);
            assert_eq!(orders[0], Order::RemoveRelay { id: "3".into() });
        }
        other => panic!("{other:?}"),
    }
    // An order is for the session it was made to: the next publisher does not get it.
    assert!(reg.order("live/r", &record(true)).await.unwrap());
    assert!(reg.release_lease("live/r", "s1").await.unwrap());
    let b = lease("live/r", "s3");
    assert_eq!(
        reg.acquire_lease(&b, LONG).await.unwrap(),
        LeaseOutcome::Acquired
    );
    assert_eq!(
        reg.refresh_lease(&b, LONG).await.unwrap(),
        RefreshOutcome::Refreshed
    );
}

pub async fn check_pulls(reg: &dyn Registry) {
    assert!(reg.pulls().await.unwrap().is_empty());
    let pull = |id: &str, room: &str| PullSpec {
        id: id.into(),
        app: "live".into(),
        room: room.into(),
        url: "rtmp://camera.local/live/cam".into(),
    };
    reg.put_pull(&pull("b", "one")).await.unwrap();
    reg.put_pull(&pull("a", "two")).await.unwrap();
    reg.put_pull(&pull("b", "three")).await.unwrap();
    assert_eq!(
        reg.pulls().await.unwrap(),
        [pull("a", "two"), pull("b", "three")]
    );
    assert!(reg.delete_pull("a").await.unwrap());
    assert!(!reg.delete_pull("a").await.unwrap());
    assert_eq!(reg.pulls().await.unwrap(), [pull("b", "three")]);
}

pub async fn check_kick(reg: &dyn Registry) {
    assert!(!reg.kick("live/k").await.unwrap());
    let a = lease("live/k", "s1");
    assert_eq!(
        reg.acquire_lease(&a, LONG).await.unwrap(),
        LeaseOutcome::Acquired
    );
    assert!(reg.kick("live/k").await.unwrap());
    // The lease stays until the owner notices.
    assert_eq!(stored(reg, "live/k").await, Some(a.clone()));
    // Another session's refresh neither sees nor consumes the kick.
    assert_eq!(
        reg.refresh_lease(&lease("live/k", "s2"), LONG)
            .await
            .unwrap(),
        RefreshOutcome::Lost
    );
    assert_eq!(
        reg.refresh_lease(&a, LONG).await.unwrap(),
        RefreshOutcome::Kicked
    );
    // Kicked: the session no longer owns the stream, and the kick is consumed.
    assert_eq!(stored(reg, "live/k").await, None);
    assert_eq!(
        reg.refresh_lease(&a, LONG).await.unwrap(),
        RefreshOutcome::Lost
    );
    assert!(!reg.kick("live/k").await.unwrap());

    // A new publisher is not affected by the kick of the previous one.
    let b = lease("live/k", "s2");
    assert_eq!(
        reg.acquire_lease(&b, LONG).await.unwrap(),
        LeaseOutcome::Acquired
    );
    assert_eq!(
        reg.refresh_lease(&b, LONG).await.unwrap(),
        RefreshOutcome::Refreshed
    );

    // A kicked publisher that releases leaves no kick behind for the next one.
    assert!(reg.kick("live/k").await.unwrap());
    assert!(reg.release_lease("live/k", "s2").await.unwrap());
    let c = lease("live/k", "s3");
    assert_eq!(
        reg.acquire_lease(&c, LONG).await.unwrap(),
        LeaseOutcome::Acquired
    );
    assert_eq!(
        reg.refresh_lease(&c, LONG).await.unwrap(),
        RefreshOutcome::Refreshed
    );
}

/// Node heartbeats: listed sorted by id, updated by the next heartbeat, expire, removable.
pub async fn check_nodes(reg: &dyn Registry) {
    assert!(reg.nodes().await.unwrap().is_empty());
    let n1 = node("n1");
    let n2 = node("n2");
    reg.heartbeat(&n2, LONG).await.unwrap();
    reg.heartbeat(&n1, Duration::from_millis(60)).await.unwrap();
    assert_eq!(reg.nodes().await.unwrap(), [n1.clone(), n2.clone()]);
    let n2b = NodeInfo {
        egress_bps: 42,
        updated_at_ms: n2.updated_at_ms + 1,
        pulls: Default::default(),
        ..n2.clone()
    };
    reg.heartbeat(&n2b, LONG).await.unwrap();
    assert_eq!(reg.nodes().await.unwrap(), [n1.clone(), n2b.clone()]);

    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(reg.nodes().await.unwrap(), std::slice::from_ref(&n2b));
    // A heartbeat brings an expired node back.
    reg.heartbeat(&n1, LONG).await.unwrap();
    assert_eq!(reg.nodes().await.unwrap(), [n1.clone(), n2b.clone()]);

    reg.remove_node("n2").await.unwrap();
    reg.remove_node("unknown").await.unwrap();
    assert_eq!(reg.nodes().await.unwrap(), [n1]);
}

/// 20 concurrent resets of one room: afterwards exactly one key maps to the room.
pub async fn check_concurrent_reset(reg: Arc<dyn Registry>) {
    let first = reg.get_or_create_key("busy").await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let reg = reg.clone();
            tokio::spawn(async move { reg.reset_key("busy").await })
        })
        .collect();
    let mut keys = vec![first];
    for t in tasks {
        keys.push(t.await.expect("task").unwrap());
    }
    let mut distinct = keys.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), keys.len(), "every reset issues a new key");

    let mut live = Vec::new();
    for k in &keys {
        if let Some(room) = reg.room_for_key(k).await.unwrap() {
            assert_eq!(room, "busy");
            live.push(k.clone());
        }
    }
    assert_eq!(live.len(), 1, "exactly one key maps to the room: {live:?}");
    let room: Room = reg.room("busy").await.unwrap().expect("room exists");
    assert_eq!(room.key, live[0]);
    assert_eq!(reg.get_or_create_key("busy").await.unwrap(), live[0]);
    assert_eq!(reg.rooms().await.unwrap(), [room]);
}
