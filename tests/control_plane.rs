//! End-to-end control plane: channel keys gate publishing, rooms are listed, keys persist,
//! leases live in a real Redis and vanish with their origin.

use std::time::{Duration, Instant};

use testkit::*;

const ACCEPT_WINDOW: Duration = Duration::from_secs(3);

/// ListRooms over gRPC, with the project's generated client.
fn grpc_list_rooms(addr: std::net::SocketAddr) -> Vec<proto::v1::RoomInfo> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("gRPC connect");
        let mut client = proto::v1::control_client::ControlClient::new(channel);
        client
            .list_rooms(proto::v1::ListRoomsRequest {})
            .await
            .expect("ListRooms")
            .into_inner()
            .rooms
    })
}

fn get_key(api: &Server, room: &str) -> String {
    let (status, body) = api.api("GET", &format!("/control/get?room={room}"), None);
    assert_eq!(status, 200, "{body}");
    livego_data(&body)
}

#[test]
fn channel_keys_gate_publishing_and_persist_across_restarts() {
    let data = temp_dir("keys");
    let data_arg = data.to_str().unwrap().to_owned();
    let mut server = Server::spawn("standalone", &["--data-dir", &data_arg]);
    let key = get_key(&server, "movie");
    assert_eq!(
        get_key(&server, "movie"),
        key,
        "get must return the existing key"
    );

    // The room name is not a key, and a made-up key is refused.
    assert!(
        !publish_accepted(&server.rtmp_url("movie"), ACCEPT_WINDOW).0,
        "room name accepted as a key"
    );
    assert!(
        !publish_accepted(&server.rtmp_url("sk_madeup"), ACCEPT_WINDOW).0,
        "unknown key accepted"
    );

    // The key publishes; viewers watch the room.
    let (ok, publisher) = publish_accepted(&server.rtmp_url(&key), ACCEPT_WINDOW);
    assert!(ok, "valid key refused");
    server.wait_live("movie");
    let d = decode(&server.flv_url("movie"), 2.0);
    assert!(d.video >= 40, "{} frames", d.video);

    // Listed by the livego stat endpoint and the resource API once the lease reports.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let (_, stat) = server.api("GET", "/stat/livestat", None);
        let (_, rooms) = server.api("GET", "/api/v1/rooms", None);
        // The refreshed lease carries codecs and byte counts (livego's `*_total_bytes`).
        let counted = !stat.contains("\"video_total_bytes\":0,");
        if stat.contains("live/movie")
            && counted
            && rooms.contains("\"movie\"")
            && rooms.contains("h264")
        {
            assert!(!rooms.contains(&key), "keys must not be listed with rooms");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "room not listed: {stat} / {rooms}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let rooms = grpc_list_rooms(server.api);
    let movie = rooms
        .iter()
        .find(|r| r.room == "movie")
        .expect("movie in the gRPC list");
    assert!(
        movie.live && movie.video_codec == "h264" && movie.width == 320 && movie.height == 240,
        "{movie:?}"
    );

    // An operator kicks the publisher: its connection closes within a lease refresh.
    let mut publisher = publisher;
    let (status, body) = server.api("POST", "/api/v1/rooms/movie/kick", None);
    assert_eq!(status, 202, "{body}");
    let kicked = Instant::now();
    while publisher.0.try_wait().unwrap().is_none() {
        assert!(
            kicked.elapsed() < Duration::from_secs(6),
            "kicked publisher still connected"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Reset: the old key stops working at once, the new one works.
    let (status, body) = server.api("GET", "/control/reset?room=movie", None);
    assert_eq!(status, 200, "{body}");
    let new_key = livego_data(&body);
    assert_ne!(new_key, key);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !publish_accepted(&server.rtmp_url(&key), ACCEPT_WINDOW).0,
        "revoked key accepted"
    );
    let (ok, publisher) = publish_accepted(&server.rtmp_url(&new_key), ACCEPT_WINDOW);
    assert!(ok, "new key refused");
    drop(publisher);

    // Keys survive a restart of the node (embedded store in the data dir).
    server.kill();
    let server = Server::spawn("standalone", &["--data-dir", &data_arg]);
    assert_eq!(
        get_key(&server, "movie"),
        new_key,
        "key lost across restart"
    );
    let (ok, publisher) = publish_accepted(&server.rtmp_url(&new_key), ACCEPT_WINDOW);
    assert!(ok, "persisted key refused after restart");
    drop(publisher);

    // Delete: room and key are gone.
    std::thread::sleep(Duration::from_millis(500));
    let (status, body) = server.api("GET", "/control/delete?room=movie", None);
    assert_eq!((status, livego_data(&body).as_str()), (200, "Ok"));
    let (status, _) = server.api("GET", "/control/delete?room=movie", None);
    assert_eq!(status, 404);
    assert_eq!(server.api("GET", "/api/v1/rooms/movie", None).0, 404);
    assert!(
        !publish_accepted(&server.rtmp_url(&new_key), ACCEPT_WINDOW).0,
        "deleted room's key accepted"
    );
}

#[test]
fn leases_in_redis_follow_their_origin() {
    let redis = Redis::start();
    let url = redis.url();
    let cluster = [
        "--redis-url",
        url.as_str(),
        "--advertise-host",
        "127.0.0.1",
        "--allow-loopback-advertise",
    ];
    let mut api = Server::spawn("control-api", &["--redis-url", &url]);
    let mut a_args = cluster.to_vec();
    a_args.extend(["--node-id", "origin-a"]);
    let mut origin_a = Server::spawn("origin", &a_args);
    let mut b_args = cluster.to_vec();
    b_args.extend(["--node-id", "origin-b"]);
    let origin_b = Server::spawn("origin", &b_args);

    let key = get_key(&api, "show");
    let (ok, _publisher_a) = publish_accepted(&origin_a.rtmp_url(&key), ACCEPT_WINDOW);
    assert!(ok, "origin A refused a valid key");
    origin_a.wait_live("show");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !api
        .api("GET", "/api/v1/rooms/show", None)
        .1
        .contains("origin-a")
    {
        assert!(Instant::now() < deadline, "lease of origin A not visible");
        std::thread::sleep(Duration::from_millis(200));
    }
    let listed = grpc_list_rooms(api.api);
    assert!(
        listed
            .iter()
            .any(|r| r.room == "show" && r.live && r.origin_node_id == "origin-a"),
        "{listed:?}"
    );

    // The same key on a second origin while A holds the lease is refused (documented).
    assert!(
        !publish_accepted(&origin_b.rtmp_url(&key), ACCEPT_WINDOW).0,
        "second origin accepted a live stream"
    );

    // Keys live in Redis: a restarted control API still knows them.
    api.kill();
    let api = Server::spawn_at(
        "control-api",
        &["--redis-url", &url],
        api.rtmp,
        api.http,
        api.api,
    );
    assert_eq!(get_key(&api, "show"), key);

    // SIGKILL origin A: its lease expires within the lease TTL (6 s).
    origin_a.kill();
    let killed = Instant::now();
    while api.api("GET", "/api/v1/rooms", None).1.contains("\"show\"") {
        assert!(
            killed.elapsed() < Duration::from_secs(8),
            "lease outlived its origin"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("lease gone {:?} after SIGKILL", killed.elapsed());
    let (ok, _publisher_b) = publish_accepted(&origin_b.rtmp_url(&key), ACCEPT_WINDOW);
    assert!(ok, "origin B refused the stream after A died");
}

#[test]
fn redis_outage_keeps_live_streams_and_answers_503() {
    let mut redis = Redis::start();
    let port = redis.port;
    let url = redis.url();
    let api = Server::spawn("control-api", &["--redis-url", &url]);
    let origin = Server::spawn(
        "origin",
        &[
            "--redis-url",
            &url,
            "--advertise-host",
            "127.0.0.1",
            "--allow-loopback-advertise",
            "--node-id",
            "o1",
        ],
    );
    let key = get_key(&api, "steady");
    let (ok, _publisher) = publish_accepted(&origin.rtmp_url(&key), ACCEPT_WINDOW);
    assert!(ok);
    origin.wait_live("steady");

    redis.stop();
    let (status, body) = api.api("GET", "/control/get?room=other", None);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("unavailable"), "{body}");
    // The live stream keeps playing without Redis.
    let d = decode(&origin.flv_url("steady"), 3.0);
    assert!(
        d.video >= 60,
        "stream disturbed by the outage: {} frames",
        d.video
    );
    // A new publish cannot be checked and gets a clear refusal; the origin stays up.
    assert!(!publish_accepted(&origin.rtmp_url(&key), ACCEPT_WINDOW).0);

    // Redis comes back (empty): the origin registers its stream again.
    let _redis = Redis::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !api
        .api("GET", "/api/v1/rooms", None)
        .1
        .contains("\"steady\"")
    {
        assert!(
            Instant::now() < deadline,
            "stream not re-registered after the outage"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn sigterm_ends_streams_and_releases_leases_within_the_grace() {
    let redis = Redis::start();
    let url = redis.url();
    let api = Server::spawn("control-api", &["--redis-url", &url]);
    let mut origin = Server::spawn(
        "origin",
        &[
            "--redis-url",
            &url,
            "--advertise-host",
            "127.0.0.1",
            "--allow-loopback-advertise",
            "--node-id",
            "o-term",
            "--shutdown-grace",
            "5",
        ],
    );
    let key = get_key(&api, "farewell");
    let (ok, _publisher) = publish_accepted(&origin.rtmp_url(&key), ACCEPT_WINDOW);
    assert!(ok, "origin refused a valid key");
    origin.wait_live("farewell");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !api
        .api("GET", "/api/v1/rooms", None)
        .1
        .contains("\"farewell\"")
    {
        assert!(Instant::now() < deadline, "room never listed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut viewer = FlvViewer::connect(origin.http, "farewell");
    assert!(viewer.next_tag().is_some(), "viewer got no media");

    // SIGTERM: the process exits within its grace...
    let signalled = Instant::now();
    assert!(origin.terminate(), "origin did not exit after SIGTERM");
    let exited = Instant::now();
    let took = exited - signalled;
    println!("origin exited {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(6), "shutdown took {took:?}");

    // ...with its lease released, not left to the 6 s TTL...
    while api
        .api("GET", "/api/v1/rooms", None)
        .1
        .contains("\"farewell\"")
    {
        assert!(
            exited.elapsed() < Duration::from_secs(1),
            "lease outlived the graceful shutdown"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...and its heartbeat removed.
    let node = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "EXISTS",
            "ferrolive:node:o-term",
        ])
        .output()
        .expect("redis-cli");
    assert_eq!(
        String::from_utf8_lossy(&node.stdout).trim(),
        "0",
        "node heartbeat left behind"
    );

    // The HTTP-FLV viewer was told the stream ended (chunked terminator), not left hanging.
    viewer.set_timeout(Duration::from_secs(3));
    let mut tags = 0;
    while viewer.next_tag().is_some() {
        tags += 1;
        assert!(tags < 10_000, "stream never ended");
    }
    assert!(
        viewer.ended(),
        "viewer saw no end of stream (after {tags} more tags)"
    );
}
