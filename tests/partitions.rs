//! Network faults between the cluster's processes, made with the tests' own fault proxy
//! (this kernel has no netem or iptables): links cut, slowed and healed, and what players
//! see meanwhile.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::*;

/// An origin that advertises 127.0.0.2, where a fault proxy in front of its player port
/// stands: edges pull from it through the proxy.
fn origin_behind_proxy(redis: &Redis, id: &str) -> (Server, FaultProxy) {
    let origin = Server::spawn(
        "origin",
        &[
            "--redis-url",
            &redis.url(),
            "--advertise-host",
            "127.0.0.2",
            "--allow-loopback-advertise",
            "--node-id",
            id,
            "--rtmp-noauth",
        ],
    );
    let listen = SocketAddr::new([127, 0, 0, 2].into(), origin.http.port());
    let proxy = FaultProxy::start_on(listen, origin.http);
    (origin, proxy)
}

/// A player on `addr` reading `room` over HTTP-FLV in a thread: when each video tag came,
/// and whether the stream ended (or the connection closed).
struct Watcher {
    video_at: Arc<Mutex<Vec<Instant>>>,
    done: std::thread::JoinHandle<()>,
}

impl Watcher {
    fn start(addr: SocketAddr, room: &str) -> Watcher {
        let video_at: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let seen = video_at.clone();
        let mut viewer = FlvViewer::connect(addr, room);
        viewer.set_timeout(Duration::from_secs(30));
        let done = std::thread::spawn(move || {
            while let Some(tag) = viewer.next_tag() {
                if tag.tag_type == 9 {
                    seen.lock().unwrap().push(Instant::now());
                }
            }
        });
        Watcher { video_at, done }
    }

    /// The first video tag after `after`, waiting up to `within`.
    fn video_after(&self, after: Instant, within: Duration) -> Option<Duration> {
        let deadline = Instant::now() + within;
        loop {
            let first = (self.video_at.lock().unwrap().iter())
                .find(|t| **t > after)
                .map(|t| t.duration_since(after));
            if first.is_some() || Instant::now() > deadline {
                return first;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn is_playing(&self) -> bool {
        !self.done.is_finished()
    }
}

#[test]
fn an_edge_cut_from_its_origin_for_ten_seconds_resumes_its_viewers_at_once() {
    require_ffmpeg();
    let redis = Redis::start();
    let (origin, link) = origin_behind_proxy(&redis, "o1");
    let edge = Server::in_cluster("edge", "e1", &redis.url(), &[]);
    let _publisher = publish(&origin.rtmp_url("cut"), Source::AudioVideo, 25, 0);
    origin.wait_live("cut");
    let watcher = Watcher::start(edge.http, "cut");
    let started = Instant::now();
    assert!(watcher
        .video_after(started, Duration::from_secs(10))
        .is_some());

    link.block();
    let cut = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    link.heal();
    let healed = Instant::now();
    let resumed = watcher
        .video_after(healed, Duration::from_secs(10))
        .expect("video after the heal");
    assert!(watcher.is_playing(), "the viewer was kept");
    assert!(
        resumed <= Duration::from_secs(4),
        "video resumed {resumed:?} after the heal"
    );
    // During the cut the edge noticed the silence from the stream's pace, and kept
    // re-pulling (nothing reached the viewer from the dead link meanwhile).
    let during = (watcher.video_at.lock().unwrap().iter())
        .filter(|t| **t > cut + Duration::from_secs(2) && **t < healed)
        .count();
    assert_eq!(during, 0);
    assert!(edge.metric("ferrolive_upstream_repulls_total") >= 1);
    eprintln!("video resumed {resumed:?} after a 10 s cut healed");
}

/// A broadcaster that retries every half second, as OBS does, until stopped.
struct RetryingBroadcaster {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl RetryingBroadcaster {
    fn start(url: String) -> RetryingBroadcaster {
        let stop: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let mut attempt = publish(&url, Source::AudioVideo, 25, 0);
                while attempt.0.try_wait().unwrap().is_none() {
                    if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                        attempt.kill();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        RetryingBroadcaster { stop }
    }
}

impl Drop for RetryingBroadcaster {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether `room` has a publisher on `server` now.
fn publishing(server: &Server, room: &str) -> bool {
    let entry = format!(
        "\"stream\":\"live/{room}\",\"app\":\"live\",\"room\":\"{room}\",\"publishing\":true"
    );
    http_get(server.http, "/api/streams")
        .is_some_and(|r| String::from_utf8_lossy(&r.body).contains(&entry))
}

#[test]
fn redis_cut_from_everyone_for_fifteen_seconds_is_forgotten_within_a_second() {
    require_ffmpeg();
    let redis = Redis::start();
    let link = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port)));
    let url = format!("redis://{}", link.addr);
    let api = Server::spawn("control-api", &["--redis-url", &url]);
    let origin = Server::in_cluster("origin", "o1", &url, &[]);
    let key = |room: &str| {
        let (status, body) = api.api("GET", &format!("/control/get?room={room}"), None);
        assert_eq!(status, 200, "{body}");
        livego_data(&body)
    };
    let (stay, late) = (key("stay"), key("late"));
    let _live = publish(&origin.rtmp_url(&stay), Source::AudioVideo, 25, 0);
    origin.wait_live("stay");

    link.block();
    std::thread::sleep(Duration::from_secs(5));
    // A broadcaster starting during the outage cannot be let in (its key cannot be
    // checked) and keeps retrying.
    let _broadcaster = RetryingBroadcaster::start(origin.rtmp_url(&late));
    std::thread::sleep(Duration::from_secs(10));
    assert!(!publishing(&origin, "late"));
    link.heal();
    let healed = Instant::now();

    // Every live room listed again, and the retrying publish taken, within a second.
    let listed = |room: &str| {
        let (status, body) = api.api("GET", "/api/v1/rooms", None);
        status == 200 && body.contains(&format!("\"{room}\"")) && body.contains("\"o1\"")
    };
    let deadline = healed + Duration::from_secs(5);
    while !listed("stay") {
        assert!(Instant::now() < deadline, "the live room never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stay_back = healed.elapsed();
    while !publishing(&origin, "late") {
        assert!(Instant::now() < deadline, "publish never taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    let taken = healed.elapsed();
    eprintln!("after the heal: live room listed in {stay_back:?}, a publish taken in {taken:?}");
    assert!(
        stay_back <= Duration::from_secs(1),
        "live room listed {stay_back:?} after"
    );
    assert!(
        taken <= Duration::from_secs(1),
        "publish taken {taken:?} after"
    );
}

#[test]
fn an_origin_cut_from_redis_loses_its_room_to_a_republish_and_edges_follow_at_once() {
    require_ffmpeg();
    let redis = Redis::start();
    let direct = redis.url();
    let o1_link = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port)));
    let o1_redis = format!("redis://{}", o1_link.addr);
    let api = Server::spawn("control-api", &["--redis-url", &direct]);
    let o1 = Server::in_cluster("origin", "o1", &o1_redis, &[]);
    let o2 = Server::in_cluster("origin", "o2", &direct, &[]);
    let edge = Server::in_cluster("edge", "e1", &direct, &[]);
    let (status, body) = api.api("GET", "/control/get?room=split", None);
    assert_eq!(status, 200, "{body}");
    let key = livego_data(&body);

    let mut first = publish(&o1.rtmp_url(&key), Source::AudioVideo, 25, 0);
    o1.wait_live("split");
    let watcher = Watcher::start(edge.http, "split");
    assert!(watcher
        .video_after(Instant::now(), Duration::from_secs(10))
        .is_some());

    // o1 is cut off from Redis: its lease runs out (6 s), and the broadcaster's
    // republish to o2 is taken.
    o1_link.block();
    std::thread::sleep(Duration::from_secs(7));
    // o1's lease ran out unrenewed: it no longer serves the stream to edges as its owner
    // (its own players go on).
    let pull = http_get(o1.http, "/live/split.flv?segment_marks=1").unwrap();
    assert_eq!(
        pull.status, 421,
        "an origin without its lease still serves edges"
    );
    let _second = publish(&o2.rtmp_url(&key), Source::AudioVideo, 25, 0);
    o2.wait_live("split");
    let moved = Instant::now();
    // The edge follows the new owner at once: o1's publisher can go and video goes on.
    std::thread::sleep(Duration::from_secs(2));
    first.kill();
    let first_gone = Instant::now();
    let resumed = watcher
        .video_after(
            first_gone + Duration::from_millis(500),
            Duration::from_secs(5),
        )
        .expect("video from the new owner");
    assert!(watcher.is_playing(), "no viewer closed");
    assert!(
        resumed < Duration::from_secs(1),
        "video resumed {resumed:?} after"
    );

    // The link heals: o1 finds its lease taken and ends its stream; the viewer plays on.
    o1_link.heal();
    std::thread::sleep(Duration::from_secs(3));
    let now = Instant::now();
    assert!(watcher.video_after(now, Duration::from_secs(2)).is_some());
    assert!(watcher.is_playing(), "no viewer closed after the heal");
    eprintln!(
        "republish taken {:?} before o1's publisher left; video after it left within {resumed:?}",
        first_gone - moved
    );
}

/// What `redis-cli -p PORT ARGS...` prints.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is required (redis-tools)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn losing_the_redis_master_under_sentinel_costs_a_failover_not_the_cluster() {
    require_ffmpeg();
    let mut master = Redis::start();
    let replica = Redis::replica_of(&master);
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("the replica never synced", &|| {
        redis_cli(replica.port, &["INFO", "replication"]).contains("master_link_status:up")
    });
    let sentinel = Sentinel::start(&master, "ferrolive");
    wait("the sentinel never saw the replica", &|| {
        redis_cli(sentinel.port, &["SENTINEL", "replicas", "ferrolive"])
            .contains(&replica.port.to_string())
    });
    let url = format!("redis+sentinel://127.0.0.1:{}/ferrolive", sentinel.port);
    let api = Server::spawn("control-api", &["--redis-url", &url]);
    let origin = Server::in_cluster("origin", "o1", &url, &[]);
    let edge = Server::in_cluster("edge", "e1", &url, &[]);
    let key = |room: &str| {
        let (status, body) = api.api("GET", &format!("/control/get?room={room}"), None);
        assert_eq!(status, 200, "{body}");
        livego_data(&body)
    };
    let (before, after) = (key("before"), key("after"));
    let _publisher = publish(&origin.rtmp_url(&before), Source::AudioVideo, 25, 0);
    origin.wait_live("before");
    let watcher = Watcher::start(edge.http, "before");
    assert!(watcher
        .video_after(Instant::now(), Duration::from_secs(10))
        .is_some());
    // Everything so far reached the replica.
    std::thread::sleep(Duration::from_secs(1));

    master.stop();
    let killed = Instant::now();
    wait("no failover", &|| {
        redis_cli(replica.port, &["INFO", "replication"]).contains("role:master")
    });
    let failed_over = killed.elapsed();
    // The live room's lease is intact on the new master, and new publishes are taken.
    let listed = || {
        let (status, body) = api.api("GET", "/api/v1/rooms", None);
        status == 200 && body.contains("\"before\"") && body.contains("\"o1\"")
    };
    wait("the live room is not listed after the failover", &listed);
    let relisted = killed.elapsed();
    let (taken, _second) = publish_accepted(&origin.rtmp_url(&after), Duration::from_secs(3));
    assert!(taken, "a publish after the failover was refused");
    let now = Instant::now();
    assert!(watcher.video_after(now, Duration::from_secs(3)).is_some());
    assert!(watcher.is_playing(), "no viewer closed");
    eprintln!(
        "master killed: failover in {failed_over:?}, the live room listed again {relisted:?} after"
    );
}
