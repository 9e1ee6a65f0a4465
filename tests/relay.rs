//! End-to-end relays: ferrolive forwarding to a second ferrolive and to nginx-rtmp, and
//! pulling rooms in from them, with ffmpeg publishing and decoding.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::*;

/// ffmpeg publishing 25 fps H.264 (1 s GOP) and AAC in real time until killed.
fn publish_live(url: &str) -> Proc {
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "25"])
        .args(["-c:a", "aac", "-f", "flv", url])
        .stdin(Stdio::null())
        .spawn()
        .expect("start ffmpeg");
    Proc(child)
}

/// Wait until `check` holds, or fail saying `what`.
fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "{what} not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// Whether ffmpeg decodes a second of video from `url` (what it decoded otherwise).
fn plays(url: &str) -> Result<(), Decoded> {
    let decoded = decode(url, 3.0);
    if decoded.video >= 25 {
        Ok(())
    } else {
        Err(decoded)
    }
}

fn api_json(server: &Server, method: &str, path: &str) -> (u16, Value) {
    let (status, body) = server.api(method, path, None);
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// A JSON POST to the control API.
fn api_post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    let body = body.to_string();
    let r = http_request(
        server.api,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .expect("control API response");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    (
        r.status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Forward rules send every stream to a second ferrolive and to nginx-rtmp, both decode;
/// a destination that refuses shows as retrying with its reason while the others go on;
/// the second ferrolive killed and restarted is fed again within 3 s of coming back.
#[test]
fn forwards_reach_ferrolive_and_nginx_and_resume_after_a_restart() {
    require_ffmpeg();
    let nginx = Nginx::start();
    let dest = Server::start(&[]);
    // A ferrolive that wants channel keys refuses the publish (BadName).
    let refusing = Server::spawn(
        "standalone",
        &["--data-dir", temp_dir("relay-refusing").to_str().unwrap()],
    );
    let to_dest = format!("live/*=rtmp://{}/live/{{room}}", dest.rtmp);
    let to_nginx = format!("live/*=rtmp://127.0.0.1:{}/live/{{room}}", nginx.port);
    let to_refusing = format!("live/*=rtmp://{}/live/nokey", refusing.rtmp);
    let source = Server::start(&[
        "--relay-push",
        &to_dest,
        "--relay-push",
        &to_nginx,
        "--relay-push",
        &to_refusing,
    ]);
    let _publisher = publish_live(&source.rtmp_url("show"));
    source.wait_live("show");
    dest.wait_live("show");
    if let Err(decoded) = plays(&dest.flv_url("show")) {
        panic!("the second ferrolive does not play it: {:?}", decoded);
    }
    if let Err(decoded) = plays(&nginx.url("show")) {
        panic!(
            "nginx-rtmp does not play it: {} ({:?})",
            nginx.errors(),
            decoded
        );
    }

    let relays = || api_json(&source, "GET", "/api/v1/rooms/show/relays").1["relays"].clone();
    wait_for("the refusal shown", Duration::from_secs(10), || {
        relays().as_array().is_some_and(|r| {
            r.iter().any(|r| {
                r["state"] == "retrying"
                    && r["error"].as_str().is_some_and(|e| e.contains("BadName"))
            })
        })
    });
    let listed = relays();
    let live: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "live")
        .collect();
    assert_eq!(live.len(), 2, "{listed}");
    // Counts are brought up to date every few seconds.
    wait_for("the bytes sent counted", Duration::from_secs(10), || {
        relays().as_array().is_some_and(|r| {
            r.iter()
                .filter(|r| r["bytes"].as_u64() > Some(10_000))
                .count()
                == 2
        })
    });
    assert!(source.metric("ferrolive_relay_bytes_total") > 10_000);
    // Each relay has its own series, labelled with its rule and redacted URL.
    let metrics = http_get(source.http, "/metrics").unwrap().body;
    let metrics = String::from_utf8_lossy(&metrics);
    let series = |name: &str, id: &str| -> Option<u64> {
        let prefix = format!("{name}{{kind=\"forward\",stream=\"live/show\",id=\"{id}\",url=");
        let line = metrics.lines().find(|l| l.starts_with(&prefix))?;
        line.rsplit(' ').next()?.parse().ok()
    };
    assert_eq!(series("ferrolive_relay_up", "rule-1"), Some(1), "{metrics}");
    assert_eq!(series("ferrolive_relay_up", "rule-3"), Some(0), "{metrics}");
    assert!(
        series("ferrolive_relay_stream_bytes_total", "rule-2") > Some(10_000),
        "{metrics}"
    );
    assert!(
        !metrics.contains("nokey"),
        "a stream key in the metrics: {metrics}"
    );

    // The destination dies and comes back where it was.
    let (rtmp, http, api) = (dest.rtmp, dest.http, dest.api);
    drop(dest);
    std::thread::sleep(Duration::from_secs(3));
    let data = temp_dir("relay-dest-again");
    let dest = Server::spawn_at(
        "standalone",
        &["--rtmp-noauth", "--data-dir", data.to_str().unwrap()],
        rtmp,
        http,
        api,
    );
    let back = wait_for("the forward resumed", Duration::from_secs(10), || {
        http_get(dest.http, "/live/show.flv").is_some_and(|r| r.status == 200)
    });
    println!("forward live again {back:?} after the destination came back");
    assert!(back < Duration::from_secs(3), "{back:?}");
    if let Err(decoded) = plays(&dest.flv_url("show")) {
        let (_, room) = api_json(&dest, "GET", "/api/v1/rooms/show");
        panic!("after the restart: {decoded:?} {room}");
    }
}

/// Forwards added and removed at run time through the control API, and livego's push.
#[test]
fn forwards_are_added_and_removed_through_the_api() {
    require_ffmpeg();
    let dest = Server::start(&[]);
    let source = Server::start(&[]);
    let _publisher = publish_live(&source.rtmp_url("talk"));
    source.wait_live("talk");
    let url = format!("rtmp://{}/live/copy", dest.rtmp);
    let (status, body) = api_post(&source, "/api/v1/rooms/talk/relays", json!({ "url": url }));
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    dest.wait_live("copy");
    plays(&dest.flv_url("copy")).unwrap();
    let (status, _) = api_json(
        &source,
        "DELETE",
        &format!("/api/v1/rooms/talk/relays/{id}"),
    );
    assert_eq!(status, 202);
    wait_for("the forward stopped", Duration::from_secs(10), || {
        http_get(dest.http, "/live/copy.flv").is_some_and(|r| r.status == 404)
    });

    let push = |oper: &str| format!("/control/push?oper={oper}&app=live&name=talk&url={url}");
    let (status, body) = api_json(&source, "GET", &push("start"));
    assert_eq!(status, 200, "{body}");
    dest.wait_live("copy");
    let (status, _) = api_json(&source, "GET", &push("stop"));
    assert_eq!(status, 200);
    wait_for("the livego push stopped", Duration::from_secs(10), || {
        http_get(dest.http, "/live/copy.flv").is_some_and(|r| r.status == 404)
    });
    let (status, _) = api_post(
        &source,
        "/api/v1/rooms/talk/relays",
        json!({ "url": "ftp://x/y/z" }),
    );
    assert_eq!(status, 400);
}

/// A room fed from nginx-rtmp, in a cluster, plays over HLS from an edge; a room fed from
/// another ferrolive's HTTP-FLV plays on the origin.
#[test]
fn pulled_rooms_play_from_an_edge_and_over_http_flv() {
    require_ffmpeg();
    let nginx = Nginx::start();
    let _camera = publish_live(&nginx.url("cam"));
    let other = Server::start(&[]);
    let _publisher = publish_live(&other.rtmp_url("src"));
    other.wait_live("src");

    let redis = Redis::start();
    let url = redis.url();
    let cluster = |id: &'static str| {
        vec![
            "--redis-url".to_owned(),
            url.clone(),
            "--advertise-host".into(),
            "127.0.0.1".into(),
            "--allow-loopback-advertise".into(),
            "--node-id".into(),
            id.into(),
        ]
    };
    let mut origin_args = cluster("origin-p");
    origin_args.extend([
        "--relay-pull".to_owned(),
        format!("live/cam={}", nginx.url("cam")),
        "--relay-pull".to_owned(),
        format!("live/copy=http://{}/live/src.flv", other.http),
    ]);
    let origin_args: Vec<&str> = origin_args.iter().map(String::as_str).collect();
    let origin = Server::spawn("origin", &origin_args);
    let edge_args = cluster("edge-p");
    let edge_args: Vec<&str> = edge_args.iter().map(String::as_str).collect();
    let edge = Server::spawn("edge", &edge_args);

    origin.wait_live("cam");
    origin.wait_live("copy");
    if let Err(decoded) = plays(&origin.flv_url("copy")) {
        panic!("the HTTP-FLV pull does not play: {:?}", decoded);
    }
    // HLS from the edge, which pulls the room from the origin that pulls it from nginx.
    let hls = format!("http://{}/live/cam.m3u8", edge.http);
    wait_for("the edge's playlist", Duration::from_secs(20), || {
        http_get(edge.http, "/live/cam.m3u8").is_some_and(|r| r.status == 200)
    });
    let decoded = decode(&hls, 4.0);
    assert!(decoded.video >= 25, "HLS from the edge: {decoded:?}");
}

/// An on-demand pull starts with the first viewer and stops once nobody has watched for
/// the idle grace; pulls asked for through the API run and stop.
#[test]
fn pulls_start_on_demand_and_through_the_api() {
    require_ffmpeg();
    let nginx = Nginx::start();
    let _camera = publish_live(&nginx.url("cam"));
    let origin = Server::start(&[
        "--relay-pull-on-demand",
        &format!("live/door={}", nginx.url("cam")),
        "--relay-pull-idle",
        "2",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        origin.metric("ferrolive_relays_live"),
        0,
        "pulled before anyone asked"
    );
    if let Err(decoded) = plays(&origin.flv_url("door")) {
        panic!("the first viewer got nothing: {:?}", decoded);
    }
    let stopped = wait_for("the idle pull stopped", Duration::from_secs(15), || {
        origin.metric("ferrolive_relays_live") == 0
    });
    println!("on-demand pull stopped {stopped:?} after the viewer left");

    let (status, body) = api_post(
        &origin,
        "/api/v1/pulls",
        json!({ "room": "gate", "url": nginx.url("cam") }),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    origin.wait_live("gate");
    wait_for("the pull's state", Duration::from_secs(10), || {
        let (_, pulls) = api_json(&origin, "GET", "/api/v1/pulls");
        pulls["pulls"][0]["state"] == "live" && pulls["pulls"][0]["live"] == true
    });
    let (status, _) = api_json(&origin, "DELETE", &format!("/api/v1/pulls/{id}"));
    assert_eq!(status, 200);
    wait_for("the pull stopped", Duration::from_secs(10), || {
        http_get(origin.http, "/live/gate.flv").is_some_and(|r| r.status == 404)
    });
    let (status, _) = api_post(
        &origin,
        "/api/v1/pulls",
        json!({ "room": "x", "url": "rtmp://" }),
    );
    assert_eq!(status, 400);
}

/// Enhanced-RTMP codecs go through a forward byte for byte: an AV1 stream published with
/// FourCC video headers reaches the destination as it was sent.
#[test]
fn enhanced_rtmp_codecs_are_forwarded_as_they_are() {
    let dest = Server::start(&[]);
    let rule = format!("live/*=rtmp://{}/live/{{room}}", dest.rtmp);
    let source = Server::start(&["--relay-push", &rule]);
    // ExVideoTagHeader: frame type in bits 4-6, packet type in bits 0-3, then the FourCC.
    let ex_video = |key: bool, packet_type: u8, body: &[u8]| {
        let mut payload = vec![0x80 | if key { 0x10 } else { 0x20 } | packet_type];
        payload.extend_from_slice(b"av01");
        payload.extend_from_slice(body);
        payload
    };
    let header = ex_video(true, 0, &[0x81, 0x08, 0x0c, 0x00]);
    let frames: Vec<Vec<u8>> = (0..75u32)
        .map(|n| ex_video(n % 25 == 0, 1, &[0x12, 0x00, 0x0a, n as u8, 0x32, 0x10]))
        .collect();
    let mut publisher = RtmpClient::connect(source.rtmp, "live");
    assert!(publisher.publish("av1"));
    publisher.send(6, 9, 1, 0, &header);
    for (n, frame) in frames.iter().enumerate().take(25) {
        publisher.send(6, 9, 1, n as u32 * 40, frame);
    }
    dest.wait_live("av1");
    let mut viewer = FlvViewer::connect(dest.http, "av1");
    for (n, frame) in frames.iter().enumerate().skip(25) {
        publisher.send(6, 9, 1, n as u32 * 40, frame);
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut received = Vec::new();
    while let Some(tag) = viewer.next_tag() {
        if tag.tag_type == 9 {
            received.push(tag.payload.to_vec());
        }
        if received.last() == frames.last() {
            break;
        }
    }
    assert_eq!(received.first(), Some(&header), "the sequence header first");
    let last: Vec<&Vec<u8>> = received.iter().rev().take(25).collect();
    let sent: Vec<&Vec<u8>> = frames.iter().rev().take(25).collect();
    assert_eq!(last, sent, "the frames as they were published");
    // The destination's stats (refreshed every 2 s) know the codec.
    wait_for(
        "the codec in the destination's stats",
        Duration::from_secs(6),
        || api_json(&dest, "GET", "/api/v1/rooms/av1").1["video_codec"] == "av1",
    );
}
