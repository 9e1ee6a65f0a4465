//! End-to-end edge tier: real redis-server, control-api, origins and edges as separate
//! processes, ffmpeg publishing and playing. Edges pull on a miss, share one upstream per
//! stream, keep their viewers across an origin loss and a Redis restart, and stop pulling
//! when nobody watches.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::*;

const ACCEPT_WINDOW: Duration = Duration::from_secs(3);

struct Cluster {
    redis: Redis,
    api: Server,
    url: String,
}

impl Cluster {
    fn start() -> Cluster {
        let redis = Redis::start();
        let url = redis.url();
        let api = Server::spawn("control-api", &["--redis-url", &url]);
        Cluster { redis, api, url }
    }

    fn node(&self, role: &str, id: &str, extra: &[&str]) -> Server {
        Server::in_cluster(role, id, &self.url, extra)
    }

    fn key(&self, room: &str) -> String {
        let (status, body) = self
            .api
            .api("GET", &format!("/control/get?room={room}"), None);
        assert_eq!(status, 200, "{body}");
        livego_data(&body)
    }
}

fn wait_metric(server: &Server, name: &str, want: u64, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let got = server.metric(name);
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{name} is {got}, expected {want} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Open an HTTP-FLV viewer and wait for its first video frame (not a sequence header).
fn first_frame(server: &Server, room: &str) -> (FlvViewer, Duration) {
    let started = Instant::now();
    let mut viewer = FlvViewer::connect(server.http, room);
    loop {
        let tag = viewer
            .next_tag()
            .expect("stream ended before a video frame");
        if tag.tag_type == 9 && tag.payload.get(1) == Some(&1) {
            return (viewer, started.elapsed());
        }
    }
}

#[test]
fn edges_pull_on_miss_share_one_upstream_and_stop_when_idle() {
    let cluster = Cluster::start();
    let origin = cluster.node("origin", "origin-a", &[]);
    let idle = ["--edge-idle-grace", "2"];
    let edge1 = cluster.node("edge", "edge-1", &idle);
    let edge2 = cluster.node("edge", "edge-2", &idle);
    let key = cluster.key("tv");
    let (ok, _publisher) = publish_accepted(&origin.rtmp_url(&key), ACCEPT_WINDOW);
    assert!(ok, "origin refused the publish");
    origin.wait_live("tv");

    // Edges only play.
    assert!(
        !publish_accepted(&edge1.rtmp_url(&key), ACCEPT_WINDOW).0,
        "edge accepted a publish"
    );

    // 200 concurrent first viewers of a miss on edge 2: one pull, one viewer at the origin.
    let viewers: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(edge2.http).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /live/tv.flv HTTP/1.1\r\nHost: test\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    let viewers = Arc::new(Mutex::new(viewers));
    let readers: Vec<_> = (0..4)
        .map(|part| {
            let viewers = viewers.clone();
            std::thread::spawn(move || {
                let mut mine: Vec<TcpStream> = {
                    let all = viewers.lock().unwrap();
                    all.iter()
                        .skip(part)
                        .step_by(4)
                        .map(|s| s.try_clone().unwrap())
                        .collect()
                };
                let mut buf = [0u8; 16384];
                for s in &mut mine {
                    let mut got = Vec::new();
                    while got.len() < 16 * 1024 {
                        let n = s.read(&mut buf).expect("viewer read");
                        assert!(n > 0, "viewer closed early");
                        got.extend_from_slice(&buf[..n]);
                    }
                    assert!(
                        got.starts_with(b"HTTP/1.1 200"),
                        "{}",
                        String::from_utf8_lossy(&got[..40])
                    );
                }
            })
        })
        .collect();
    for r in readers {
        r.join().expect("viewer thread");
    }
    println!(
        "200 edge viewers all receiving after {:?}",
        started.elapsed()
    );
    assert_eq!(edge2.metric("ferrolive_viewers"), 200);
    assert_eq!(
        edge2.metric("ferrolive_upstream_pulls_total"),
        1,
        "more than one pull for one stream"
    );
    assert_eq!(edge2.metric("ferrolive_upstreams"), 1);
    // The edge's pull is a relay, not a viewer: the origin's viewers are its own players.
    assert_eq!(
        origin.metric("ferrolive_relays"),
        1,
        "origin must see one upstream, not the viewers"
    );
    assert_eq!(origin.metric("ferrolive_viewers"), 0);
    drop(viewers);

    // Cache miss over RTMP on edge 1.
    let d = decode(&edge1.rtmp_url("tv"), 2.0);
    assert!(
        d.video >= 30 && d.audio >= 30,
        "rtmp via edge: {} video / {} audio frames: {}",
        d.video,
        d.audio,
        d.errors
    );
    assert_eq!(edge1.metric("ferrolive_upstream_pulls_total"), 1);

    // Idle teardown on both edges after the 2 s grace.
    let t = wait_metric(&edge1, "ferrolive_upstreams", 0, Duration::from_secs(8));
    println!("edge 1 stopped pulling {t:?} after its viewer left (idle grace 2 s)");
    wait_metric(&edge2, "ferrolive_upstreams", 0, Duration::from_secs(8));
    wait_metric(&origin, "ferrolive_viewers", 0, Duration::from_secs(3));

    // Revival with a cache miss over HTTP-FLV: time to first frame through the edge.
    let (cold, miss) = first_frame(&edge1, "tv");
    let (warm, hit) = first_frame(&edge1, "tv");
    println!("edge first frame: cache miss {miss:?}, already pulled {hit:?}");
    assert!(miss < Duration::from_secs(3), "cache miss took {miss:?}");
    drop((cold, warm));
    let d = decode(&edge1.flv_url("tv"), 2.0);
    assert!(
        d.video >= 30 && d.audio >= 30,
        "http-flv via edge: {} / {}: {}",
        d.video,
        d.audio,
        d.errors
    );
    assert_eq!(
        edge1.metric("ferrolive_upstream_pulls_total"),
        2,
        "revival is a new pull"
    );
    wait_metric(&edge1, "ferrolive_upstreams", 0, Duration::from_secs(8));

    // Cache miss over HLS.
    let d = decode(&format!("http://{}/live/tv.m3u8", edge1.http), 3.0);
    assert!(
        d.video >= 30,
        "hls via edge: {} video frames: {}",
        d.video,
        d.errors
    );
    assert_eq!(edge1.metric("ferrolive_upstream_pulls_total"), 3);

    // A room that is not live: 404 after the bounded wait.
    let asked = Instant::now();
    let r = http_get(edge2.http, "/live/nobody.flv").expect("response");
    let waited = asked.elapsed();
    assert_eq!(r.status, 404);
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(6),
        "404 after {waited:?}"
    );
}

#[test]
fn edge_viewers_survive_origin_loss() {
    let cluster = Cluster::start();
    let mut origin_a = cluster.node("origin", "origin-a", &[]);
    let origin_b = cluster.node("origin", "origin-b", &[]);
    let edge = cluster.node("edge", "edge-1", &[]);
    let key = cluster.key("news");
    let (ok, publisher_a) = publish_accepted(&origin_a.rtmp_url(&key), ACCEPT_WINDOW);
    assert!(ok, "origin A refused the publish");
    origin_a.wait_live("news");

    // One viewer connection on the edge, read on its own thread: (arrival, type, timestamp).
    let (mut viewer, _) = first_frame(&edge, "news");
    viewer.set_timeout(Duration::from_secs(30));
    let tags: Arc<Mutex<Vec<(Instant, u8, u32)>>> = Arc::default();
    let ended = Arc::new(Mutex::new(None));
    let reader = {
        let (tags, ended) = (tags.clone(), ended.clone());
        std::thread::spawn(move || {
            while let Some(tag) = viewer.next_tag() {
                tags.lock()
                    .unwrap()
                    .push((Instant::now(), tag.tag_type, tag.timestamp));
            }
            *ended.lock().unwrap() = Some((Instant::now(), viewer.ended()));
        })
    };
    std::thread::sleep(Duration::from_secs(2));

    origin_a.kill();
    let killed = Instant::now();
    drop(publisher_a);
    // The broadcaster moves to origin B: A is provably gone (it refuses connections), so
    // B takes the stream over at the first try, without waiting for A's lease to expire.
    let (republished, _publisher_b) = loop {
        let attempt = Instant::now();
        let (ok, p) = publish_accepted(&origin_b.rtmp_url(&key), ACCEPT_WINDOW);
        if ok {
            break (attempt, p);
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "origin B never accepted the stream"
        );
    };
    println!(
        "republished on origin B {:?} after SIGKILL of A",
        republished - killed
    );
    assert!(
        republished - killed < Duration::from_secs(1),
        "the first retry was not taken"
    );
    let deadline = republished + Duration::from_secs(3);
    let resumed = loop {
        let first_new = tags
            .lock()
            .unwrap()
            .iter()
            .find(|t| t.0 > republished && t.1 == 9)
            .map(|t| t.0);
        if let Some(at) = first_new {
            break at;
        }
        assert!(ended.lock().unwrap().is_none(), "edge closed the viewer");
        assert!(
            Instant::now() < deadline,
            "no video on the same connection within 3 s of the republish"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "same edge viewer resumed {:?} after the republish",
        resumed - republished
    );
    std::thread::sleep(Duration::from_secs(2));
    {
        let tags = tags.lock().unwrap();
        let after: Vec<_> = tags
            .iter()
            .filter(|t| t.0 > republished && t.1 == 9)
            .collect();
        assert!(
            after.len() >= 25,
            "only {} video tags after the republish",
            after.len()
        );
        let video: Vec<u32> = tags.iter().filter(|t| t.1 == 9).map(|t| t.2).collect();
        assert!(
            video.windows(2).all(|w| w[1] >= w[0]),
            "video timestamps went backwards"
        );
    }
    assert!(edge.metric("ferrolive_upstream_repulls_total") >= 1);
    assert_eq!(edge.metric("ferrolive_upstream_pulls_total"), 1);

    // The broadcaster leaves for good: origin B ends the stream after its reconnect grace
    // and the edge closes its viewer with the chunked terminator.
    drop(_publisher_b);
    let stopped = Instant::now();
    reader.join().unwrap();
    let (at, clean) = ended.lock().unwrap().expect("reader finished");
    assert!(clean, "viewer connection broke instead of ending");
    assert!(
        at - stopped < Duration::from_secs(12),
        "stream end took {:?}",
        at - stopped
    );
    wait_metric(&edge, "ferrolive_upstreams", 0, Duration::from_secs(3));
}

/// What one viewer received, (arrival, tag type, timestamp ms), read on its own thread.
struct Watch {
    name: &'static str,
    tags: Arc<Mutex<Vec<(Instant, u8, u32)>>>,
    /// When the viewer's stream stopped (ended or broke), if it did.
    ended: Arc<Mutex<Option<Instant>>>,
    _player: Option<Proc>,
}

impl Watch {
    /// Record an HTTP-FLV viewer's tags.
    fn flv(name: &'static str, mut viewer: FlvViewer) -> Watch {
        viewer.set_timeout(Duration::from_secs(30));
        let tags: Arc<Mutex<Vec<(Instant, u8, u32)>>> = Arc::default();
        let ended = Arc::new(Mutex::new(None));
        let (t, e) = (tags.clone(), ended.clone());
        std::thread::spawn(move || {
            while let Some(tag) = viewer.next_tag() {
                t.lock()
                    .unwrap()
                    .push((Instant::now(), tag.tag_type, tag.timestamp));
            }
            *e.lock().unwrap() = Some(Instant::now());
        });
        Watch {
            name,
            tags,
            ended,
            _player: None,
        }
    }

    /// Record the video packets an ffmpeg RTMP player reads from `url` (stream copy,
    /// `framecrc` flushed per packet, so each line arrives when ffmpeg got the packet).
    fn rtmp(name: &'static str, url: &str) -> Watch {
        let mut child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error"])
            .args(["-rw_timeout", "30000000", "-i", url])
            .args(["-map", "0:v", "-c", "copy", "-flush_packets", "1"])
            .args(["-f", "framecrc", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run ffmpeg RTMP player");
        let stdout = child.stdout.take().unwrap();
        let tags: Arc<Mutex<Vec<(Instant, u8, u32)>>> = Arc::default();
        let ended = Arc::new(Mutex::new(None));
        let (t, e) = (tags.clone(), ended.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with('#') {
                    continue;
                }
                // `stream, dts, pts, duration, size, crc`, dts in 1/1000.
                let dts = line
                    .split(',')
                    .nth(1)
                    .and_then(|d| d.trim().parse::<i64>().ok());
                if let Some(dts) = dts {
                    t.lock()
                        .unwrap()
                        .push((Instant::now(), 9, dts.max(0) as u32));
                }
            }
            *e.lock().unwrap() = Some(Instant::now());
        });
        Watch {
            name,
            tags,
            ended,
            _player: Some(Proc(child)),
        }
    }

    fn video_count(&self) -> usize {
        self.tags
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t.1 == 9)
            .count()
    }

    /// Assert that the viewer received media all through `from..=to`: still connected, at
    /// least `min_video` video frames, no silence longer than 1 s, media time advancing
    /// with the wall clock, and timestamps of each track never going backwards.
    /// Returns the longest silence.
    fn assert_flowing(&self, from: Instant, to: Instant, min_video: usize) -> Duration {
        let name = self.name;
        if let Some(at) = *self.ended.lock().unwrap() {
            panic!(
                "{name}: stream stopped {:?} into the checked window",
                at.saturating_duration_since(from)
            );
        }
        let tags = self.tags.lock().unwrap();
        let window: Vec<_> = tags.iter().filter(|t| t.0 > from && t.0 <= to).collect();
        let video: Vec<u32> = window.iter().filter(|t| t.1 == 9).map(|t| t.2).collect();
        assert!(
            video.len() >= min_video,
            "{name}: only {} video frames in {:?}",
            video.len(),
            to - from
        );
        let mut gap = Duration::ZERO;
        let mut prev = from;
        for t in &window {
            gap = gap.max(t.0 - prev);
            prev = t.0;
        }
        gap = gap.max(to - prev);
        assert!(
            gap <= Duration::from_secs(1),
            "{name}: nothing received for {gap:?}"
        );
        let span = Duration::from_millis(u64::from(video[video.len() - 1] - video[0]));
        assert!(
            span + Duration::from_secs(1) >= to - from,
            "{name}: media advanced {span:?} in {:?} of wall time",
            to - from
        );
        for kind in [8, 9] {
            let ts: Vec<u32> = tags.iter().filter(|t| t.1 == kind).map(|t| t.2).collect();
            assert!(
                ts.windows(2).all(|w| w[1] >= w[0]),
                "{name}: timestamps of tag type {kind} went backwards"
            );
        }
        gap
    }
}

#[test]
fn edge_viewers_survive_a_redis_restart() {
    let mut cluster = Cluster::start();
    let redis_port = cluster.redis.port;
    let origin = cluster.node("origin", "origin-a", &[]);
    let edge = cluster.node("edge", "edge-1", &[]);
    let key = cluster.key("concert");
    let (ok, mut publisher) = publish_accepted(&origin.rtmp_url(&key), ACCEPT_WINDOW);
    assert!(ok, "origin refused the publish");
    origin.wait_live("concert");
    let listed = |api: &Server| {
        let (status, body) = api.api("GET", "/api/v1/rooms", None);
        status == 200 && body.contains("\"concert\"") && body.contains("origin-a")
    };
    assert!(
        listed(&cluster.api),
        "live room not listed before the outage"
    );

    // Two viewers on the edge: HTTP-FLV (audio and video) and RTMP (ffmpeg, video).
    let (flv, _) = first_frame(&edge, "concert");
    let flv = Watch::flv("http-flv viewer", flv);
    let rtmp = Watch::rtmp("rtmp viewer", &edge.rtmp_url("concert"));
    let deadline = Instant::now() + Duration::from_secs(8);
    while rtmp.video_count() < 10 {
        assert!(rtmp.ended.lock().unwrap().is_none(), "rtmp viewer stopped");
        assert!(Instant::now() < deadline, "rtmp viewer got no video");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(edge.metric("ferrolive_upstream_pulls_total"), 1);

    // SIGKILL Redis and stay without it longer than the lease TTL (6 s).
    cluster.redis.stop();
    let outage = Instant::now();
    let (status, body) = cluster.api.api("GET", "/api/v1/rooms", None);
    assert_eq!(status, 503, "control API still reads a registry: {body}");
    // A viewer joining during the outage is served from the edge's own stream.
    std::thread::sleep(Duration::from_secs(3));
    let (joined, ttff) = first_frame(&edge, "concert");
    println!("viewer joined the edge during the outage: first frame in {ttff:?}");
    assert!(
        ttff < Duration::from_secs(2),
        "join during the outage took {ttff:?}"
    );
    let joined_at = Instant::now();
    let joined = Watch::flv("viewer joined during the outage", joined);
    std::thread::sleep((outage + Duration::from_secs(8)).saturating_duration_since(Instant::now()));
    let now = Instant::now();
    let gaps = [
        flv.assert_flowing(outage, now, 150),
        rtmp.assert_flowing(outage, now, 150),
        joined.assert_flowing(joined_at, now, 50),
    ];
    println!("8 s without Redis: longest silence per viewer {gaps:?}");
    assert!(
        publisher.0.try_wait().unwrap().is_none(),
        "publisher disconnected"
    );
    assert_eq!(origin.metric("ferrolive_publishes_total"), 1);
    assert_eq!(
        edge.metric("ferrolive_upstream_pulls_total"),
        1,
        "edge started another pull"
    );
    assert_eq!(
        edge.metric("ferrolive_upstream_repulls_total"),
        0,
        "edge lost its upstream"
    );
    assert_eq!(edge.metric("ferrolive_viewers"), 3);

    // Redis comes back on the same port, empty: the origin claims its lease again.
    cluster.redis = Redis::start_on(redis_port);
    let restarted = Instant::now();
    while !listed(&cluster.api) {
        assert!(
            restarted.elapsed() < Duration::from_secs(8),
            "origin did not re-register the live room after Redis came back: {:?}",
            cluster.api.api("GET", "/api/v1/rooms", None)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let registered = restarted.elapsed();
    println!("room listed again {registered:?} after Redis restarted");
    // Redis came back empty (the channel key is gone): the listing is the origin's new claim.
    let (_, body) = cluster.api.api("GET", "/api/v1/rooms/concert", None);
    assert!(
        body.contains("\"has_key\":false") && body.contains("\"live\":true"),
        "{body}"
    );

    // A new edge viewer plays at once, from the pull the edge kept.
    let (late, ttff) = first_frame(&edge, "concert");
    println!("new edge viewer after the restart: first frame in {ttff:?}");
    assert!(ttff < Duration::from_secs(2), "new viewer took {ttff:?}");
    let late_at = Instant::now();
    let late = Watch::flv("viewer joined after the restart", late);
    std::thread::sleep(Duration::from_secs(2));
    let now = Instant::now();
    let gaps = [
        flv.assert_flowing(restarted, now, 50),
        rtmp.assert_flowing(restarted, now, 50),
        joined.assert_flowing(restarted, now, 50),
        late.assert_flowing(late_at, now, 40),
    ];
    println!("after the restart: longest silence per viewer {gaps:?}");
    // And over the whole run, for the first viewer.
    let first = flv.tags.lock().unwrap()[0].0;
    let min_video = (now - first).as_secs() as usize * 20;
    let whole = flv.assert_flowing(first, now, min_video);
    println!("first viewer, whole run: longest silence {whole:?}");
    assert!(
        publisher.0.try_wait().unwrap().is_none(),
        "publisher disconnected"
    );
    assert_eq!(edge.metric("ferrolive_upstream_pulls_total"), 1);
    assert_eq!(edge.metric("ferrolive_upstream_repulls_total"), 0);
    assert_eq!(origin.metric("ferrolive_publishes_total"), 1);
}

/// The playlist of `room` on `server`, once it lists at least `min` segments.
fn playlist(server: &Server, room: &str, min: usize) -> String {
    let started = Instant::now();
    loop {
        let r = http_get(server.http, &format!("/live/{room}.m3u8")).expect("playlist");
        let text = String::from_utf8_lossy(&r.body).into_owned();
        if r.status == 200 && text.matches("#EXTINF").count() >= min {
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no {min} segments on {}: {} {text}",
            server.http,
            r.status
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Fetch the playlist from every server at once, until they agree (a segment may close
/// between two fetches). Returns the common text.
fn agreed_playlist(servers: &[&Server], room: &str, min: usize) -> String {
    let mut last = Vec::new();
    for _ in 0..20 {
        last = servers.iter().map(|s| playlist(s, room, min)).collect();
        if last.windows(2).all(|w| w[0] == w[1]) {
            return last.remove(0);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("playlists never agreed:\n{}", last.join("\n----\n"));
}

#[test]
fn hls_on_every_edge_lists_the_same_segments() {
    require_ffmpeg();
    let cluster = Cluster::start();
    let origin = cluster.node(
        "origin",
        "origin-a",
        &["--hls-segment", "1", "--hls-window", "4"],
    );
    let edge_a = cluster.node(
        "edge",
        "edge-a",
        &["--hls-segment", "1", "--hls-window", "4"],
    );
    let edge_b = cluster.node(
        "edge",
        "edge-b",
        &["--hls-segment", "1", "--hls-window", "4"],
    );
    let key = cluster.key("stage");
    // 25 fps, a keyframe every 0.6 s: segments of 1.2 s, and a packager that starts
    // between keyframes begins at one that is no segment start.
    let _publisher = publish(&origin.rtmp_url(&key), Source::AudioVideo, 15, 0);
    origin.wait_live("stage");
    // Edge A packages from the start; edge B only 3.5 s later.
    playlist(&edge_a, "stage", 1);
    std::thread::sleep(Duration::from_millis(3_500));
    playlist(&edge_b, "stage", 1);
    // Once B's window is full, all three nodes list the same segments under the same
    // numbers, and so does the origin that decided them.
    let text = agreed_playlist(&[&origin, &edge_a, &edge_b], "stage", 4);
    let uris: Vec<&str> = text.lines().filter(|l| l.ends_with(".ts")).collect();
    assert_eq!(uris.len(), 4, "{text}");
    let sequences: Vec<u64> = uris
        .iter()
        .map(|u| {
            u.trim_start_matches("stage/")
                .trim_end_matches(".ts")
                .parse()
                .unwrap()
        })
        .collect();
    let media_sequence = format!("#EXT-X-MEDIA-SEQUENCE:{}\n", sequences[0]);
    assert!(text.contains(&media_sequence), "{text}");
    assert!(sequences.windows(2).all(|w| w[1] == w[0] + 1), "{text}");
    // The same segment is the same bytes everywhere (timestamps, PCR, continuity counters
    // and all), whenever each node started packaging, and each decodes.
    for uri in &uris {
        let bodies: Vec<Vec<u8>> = [&origin, &edge_a, &edge_b]
            .iter()
            .map(|s| {
                let r = http_get(s.http, &format!("/live/{uri}")).expect("segment");
                assert_eq!(r.status, 200, "{uri} on {}", s.http);
                r.body
            })
            .collect();
        assert!(
            bodies.windows(2).all(|w| w[0] == w[1]),
            "{uri} differs between nodes (sizes {:?})",
            bodies.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
    let decoded = decode(&format!("http://{}/live/stage.m3u8", edge_b.http), 3.0);
    assert!(
        decoded.video > 25 && decoded.audio > 25,
        "{}",
        decoded.errors
    );
}

/// The low-latency playlist of `room` on `server` after a blocking reload for part
/// `part` of segment `msn`, checked against the LL-HLS rules.
fn ll_playlist(server: &Server, room: &str, msn: u64, part: usize) -> (String, llhls::LlPlaylist) {
    let path = format!("/live/{room}/index.m3u8?_HLS_msn={msn}&_HLS_part={part}");
    let r = http_get(server.http, &path).expect("playlist");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 200, "{path} on {}: {text}", server.http);
    match llhls::check_ll_playlist(&text) {
        Ok(playlist) => (text, playlist),
        Err(why) => panic!("{path} on {}: {why}\n{text}", server.http),
    }
}

fn body(server: &Server, path: &str) -> Vec<u8> {
    let r = http_get(server.http, path).expect("answer");
    assert_eq!(r.status, 200, "{path} on {}", server.http);
    r.body
}

/// Low-latency HLS is the same on every node: an origin and two edges started apart list
/// the same playlist text (parts, dates and all) and serve the same init segment, segments
/// and parts, byte for byte; a player moved from one edge to the other mid-stream goes on
/// from the next part without a jump.
#[test]
fn ll_hls_is_the_same_on_every_edge() {
    require_ffmpeg();
    let cluster = Cluster::start();
    let flags = ["--hls-segment", "1", "--hls-window", "4"];
    let origin = cluster.node("origin", "origin-a", &flags);
    let edge_a = cluster.node("edge", "edge-a", &flags);
    let edge_b = cluster.node("edge", "edge-b", &flags);
    let key = cluster.key("low");
    let _publisher = publish(&origin.rtmp_url(&key), Source::AudioVideo, 25, 0);
    origin.wait_live("low");
    // Edge A packages from the start; edge B 3.5 s later.
    assert_eq!(
        http_get(edge_a.http, "/live/low/index.m3u8")
            .unwrap()
            .status,
        200
    );
    std::thread::sleep(Duration::from_millis(3_500));
    assert_eq!(
        http_get(edge_b.http, "/live/low/index.m3u8")
            .unwrap()
            .status,
        200
    );
    std::thread::sleep(Duration::from_millis(1_500));

    // Every node asked for the same next part at once answers with the same text (a part
    // may close between two answers: then ask for the next).
    let nodes = [&origin, &edge_a, &edge_b];
    let mut agreed = None;
    let mut last = Vec::new();
    for _ in 0..20 {
        let r = http_get(origin.http, "/live/low/index.m3u8").unwrap();
        let now = llhls::check_ll_playlist(&String::from_utf8_lossy(&r.body)).unwrap();
        let hint = now.preload_hint.unwrap();
        let (msn, part) = hint.trim_end_matches(".m4s").split_once('.').unwrap();
        let (msn, part): (u64, usize) = (msn.parse().unwrap(), part.parse().unwrap());
        last = std::thread::scope(|s| {
            let asked: Vec<_> = nodes
                .iter()
                .map(|n| s.spawn(move || ll_playlist(n, "low", msn, part)))
                .collect();
            asked
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        if last.windows(2).all(|w| w[0].0 == w[1].0) {
            agreed = Some(last[0].1.clone());
            break;
        }
    }
    let Some(playlist) = agreed else {
        let texts: Vec<&str> = last.iter().map(|(t, _)| t.as_str()).collect();
        panic!("playlists never agreed:\n{}", texts.join("\n----\n"));
    };
    let finished = playlist.segments.iter().filter(|s| s.uri.is_some()).count();
    assert_eq!(finished, 4, "the window's four segments");
    // The same bytes everywhere: init segment, segments and parts.
    let mut paths = vec![format!("/live/low/{}", playlist.segments[0].map)];
    for segment in &playlist.segments {
        paths.extend(segment.uri.iter().map(|u| format!("/live/low/{u}")));
        paths.extend(segment.parts.iter().map(|p| format!("/live/low/{}", p.uri)));
    }
    for path in &paths {
        let bodies: Vec<Vec<u8>> = nodes.iter().map(|n| body(n, path)).collect();
        assert!(
            bodies.windows(2).all(|w| w[0] == w[1]),
            "{path} differs between nodes (sizes {:?})",
            bodies.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }

    // A player on edge A for 12 parts, then moved to edge B for 12 more, as an LL-HLS
    // player goes: a blocking reload for the part after its last, then that part.
    let mut file = body(&edge_a, &format!("/live/low/{}", playlist.segments[0].map));
    let (mut msn, mut part) = playlist.last_part().unwrap();
    for (i, edge) in std::iter::repeat_n(&edge_a, 12)
        .chain(std::iter::repeat_n(&edge_b, 12))
        .enumerate()
    {
        let (text, now) = ll_playlist(edge, "low", msn, part + 1);
        (msn, part) = now.part_after(msn, part).unwrap_or_else(|| {
            panic!(
                "part {i}: none after {msn}.{part} on {}:\n{text}",
                edge.http
            )
        });
        file.extend(body(edge, &format!("/live/low/{msn}.{part}.m4s")));
    }
    let path = temp_dir("ll-moved").join("moved.mp4");
    std::fs::write(&path, &file).unwrap();
    // Video every 40 ms from start to end: nothing repeated, nothing missing.
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "packet=pts_time",
        ])
        .args(["-of", "csv=p=0"])
        .arg(&path)
        .output()
        .expect("ffprobe");
    let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    assert!(times.len() > 100, "{} video frames", times.len());
    for w in times.windows(2) {
        let step = w[1] - w[0];
        assert!(
            (0.035..0.045).contains(&step),
            "a jump of {step} s after {}",
            w[0]
        );
    }
    let decoded = decode(path.to_str().unwrap(), 30.0);
    assert!(decoded.errors.is_empty(), "{}", decoded.errors);
}

/// An edge serves the players with muxes of their own (HTTP-TS, HTTP-fMP4) and
/// WebSocket-FLV too, pulling the stream from its origin on the first request.
#[test]
fn an_edge_serves_http_ts_http_fmp4_and_websocket_flv() {
    require_ffmpeg();
    let cluster = Cluster::start();
    let origin = cluster.node("origin", "origin-a", &[]);
    let edge = cluster.node("edge", "edge-a", &[]);
    let key = cluster.key("many");
    let _publisher = publish(&origin.rtmp_url(&key), Source::AudioVideo, 25, 0);
    origin.wait_live("many");
    for path in ["/live/many.ts", "/live/many.mp4"] {
        let decoded = decode(&format!("http://{}{path}", edge.http), 3.0);
        assert!(
            decoded.video > 40 && decoded.audio > 40 && decoded.errors.is_empty(),
            "{path}: {decoded:?}"
        );
    }
    // Upgraded: 101 with the right accept key.
    let upgraded = testkit::websocket::WebSocket::open(edge.http, "/live/many.flv");
    assert!(upgraded.is_ok(), "{:?}", upgraded.err());
}

/// Counts tell the truth: an edge pulling a stream is a relay, not a viewer of its origin;
/// the HLS packager is nobody; an HLS player counts from its first segment; a lone
/// playlist request is not a player. Two real players give two viewers, everywhere.
#[test]
fn viewer_counts_are_real_players_only() {
    require_ffmpeg();
    let cluster = Cluster::start();
    let origin = cluster.node("origin", "origin-c", &[]);
    let edge = cluster.node("edge", "edge-c", &[]);
    let key = cluster.key("count");
    let _publisher = publish(&origin.rtmp_url(&key), Source::AudioVideo, 50, 0);
    origin.wait_live("count");
    // A playlist request with no player behind it, on the origin.
    assert_eq!(
        http_get(origin.http, "/live/count.m3u8").unwrap().status,
        200
    );
    // Two players on the edge: ffmpeg on HLS, a viewer on HTTP-FLV.
    let hls_player = std::thread::spawn({
        let url = format!("http://{}/live/count.m3u8", edge.http);
        move || decode(&url, 12.0)
    });
    let (_flv_player, _) = first_frame(&edge, "count");
    // Heartbeats and leases refresh every 2 s.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(edge.metric("ferrolive_viewers"), 2);
    assert_eq!(origin.metric("ferrolive_viewers"), 0);
    assert_eq!(origin.metric("ferrolive_relays"), 1);
    let (status, body) = cluster.api.api("GET", "/api/v1/rooms/count", None);
    assert_eq!(status, 200, "{body}");
    let room: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(room["viewers"], 2, "{body}");
    assert_eq!(room["viewers_by_node"]["edge-c"], 2, "{body}");
    let (_, body) = cluster.api.api("GET", "/stat/livestat", None);
    let stat: serde_json::Value = serde_json::from_str(&body).unwrap();
    let players = stat["data"]["players"].as_array().unwrap();
    assert_eq!(players.len(), 2, "{body}");
    let decoded = hls_player.join().unwrap();
    assert!(
        decoded.video > 100,
        "the HLS player played: {}",
        decoded.errors
    );
}

/// An edge advertises the address players reach, not its own: in Kubernetes, a per-pod
/// Service's DNS name (`$(FERROLIVE_NODE_ID).<domain>`) or the node's address with host
/// networking. Its region comes from the node's topology label, which the downward API
/// gives as empty where the pod does not carry it: that is the `default` region.
#[test]
fn play_urls_name_the_address_an_edge_advertises_and_its_region() {
    require_ffmpeg();
    let cluster = Cluster::start();
    let origin = cluster.node("origin", "origin-0", &[]);
    // The edge's environment as deploy/k8s/40-edge.yaml gives it, once the kubelet has
    // expanded $(FERROLIVE_NODE_ID) and read a region label the node does not have.
    let edge = Server::spawn(
        "edge",
        &[
            "--redis-url",
            &cluster.url,
            "--node-id",
            "edge-0",
            "--advertise-host",
            "edge-0.edges.example.test",
            "--region",
            "",
        ],
    );
    let key = cluster.key("far");
    let _publisher = publish(
        &format!("rtmp://{}/live/{key}", origin.rtmp),
        Source::AudioVideo,
        25,
        0,
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let (status, body) = cluster.api.api("GET", "/api/v1/rooms/far/play", None);
        if status == 200 && body.contains("edge-0") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no play URLs on the edge: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (rtmp, http) = (edge.rtmp.port(), edge.http.port());
    assert!(body.contains("\"region\":\"default\""), "{body}");
    assert!(
        body.contains(&format!("rtmp://edge-0.edges.example.test:{rtmp}/live/far"))
            && body.contains(&format!(
                "http://edge-0.edges.example.test:{http}/live/far.flv"
            )),
        "{body}"
    );
}
