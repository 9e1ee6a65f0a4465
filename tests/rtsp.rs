//! End-to-end RTSP: ffmpeg and GStreamer (`rtspsrc`) play a stream published over RTMP,
//! over TCP and UDP; ffmpeg and GStreamer publish over RTSP and ffmpeg plays the
//! result over HTTP-FLV and HLS; an edge serves RTSP players; play tokens and UDP session
//! timeouts apply.
//!
//! VLC is not among the players: Debian's VLC is built without live555 (`--disable-live555`)
//! and has no RTSP client but SAT>IP's and RealNetworks', so it plays no RTSP server's
//! streams.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::*;

/// Video and audio frames ffmpeg decodes from `url` in `seconds` over `transport`.
fn ffmpeg_play(url: &str, transport: &str, seconds: u32) -> (usize, usize) {
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-rtsp_transport",
            transport,
        ])
        .args([
            "-timeout",
            "10000000",
            "-i",
            url,
            "-t",
            &seconds.to_string(),
        ])
        .args(["-f", "framecrc", "-"])
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg");
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |stream: &str| text.lines().filter(|l| l.starts_with(stream)).count();
    (count("0,"), count("1,"))
}

/// Whether GStreamer's `rtspsrc` decodes `buffers` pictures of `url` over `protocol`.
fn gstreamer_plays(url: &str, protocol: &str, buffers: u32) -> bool {
    let status = Command::new("timeout")
        .args(["20", "gst-launch-1.0", "-q", "rtspsrc"])
        .arg(format!("location={url}"))
        .arg(format!("protocols={protocol}"))
        .args([
            "latency=200",
            "!",
            "rtph264depay",
            "!",
            "h264parse",
            "!",
            "avdec_h264",
        ])
        .args(["!", "fakesink", "sync=false"])
        .arg(format!("num-buffers={buffers}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("run gst-launch-1.0");
    status.success()
}

fn require_rtsp_clients() {
    require_ffmpeg();
    for element in ["rtspsrc", "rtspclientsink", "x264enc", "avdec_h264"] {
        let found = Command::new("gst-inspect-1.0")
            .arg(element)
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "GStreamer's {element} is missing: ./test.sh installs it"
        );
    }
}

#[test]
fn ffmpeg_and_gstreamer_play_over_tcp_and_udp() {
    require_rtsp_clients();
    let server = Server::start(&[]);
    let _publisher = publish(&server.rtmp_url("cam"), Source::AudioVideo, 25, 0);
    server.wait_live("cam");
    let url = server.rtsp_url("cam");

    for transport in ["tcp", "udp"] {
        let (video, audio) = ffmpeg_play(&url, transport, 3);
        assert!(
            video >= 60 && audio >= 100,
            "ffmpeg over {transport}: {video} pictures, {audio} audio frames in 3 s"
        );
        assert!(
            gstreamer_plays(&url, transport, 50),
            "rtspsrc over {transport}"
        );
    }
    assert!(server.metric("ferrolive_protocol_viewers{protocol=\"rtsp\"}") == 0);
}

#[test]
fn ffmpeg_and_gstreamer_publish_over_rtsp() {
    require_rtsp_clients();
    let server = Server::start(&["--hls-segment", "1"]);
    let publish_rtsp = |room: &str, transport: &str| {
        let output = ["-f", "rtsp", "-rtsp_transport", transport];
        publish_with(&server.rtsp_url(room), Source::AudioVideo, 25, 0, &output)
    };
    let _tcp = publish_rtsp("tcp", "tcp");
    let _udp = publish_rtsp("udp", "udp");
    for room in ["tcp", "udp"] {
        server.wait_live(room);
        let flv = decode(&server.flv_url(room), 3.0);
        assert!(
            flv.video >= 60 && flv.audio >= 100,
            "{room}: HTTP-FLV {flv:?}"
        );
        let hls = format!("http://{}/live/{room}.m3u8", server.http);
        let hls = decode(&hls, 2.0);
        assert!(hls.video >= 40, "{room}: HLS {hls:?}");
    }

    // GStreamer's rtspclientsink (H.264 only: its AAC payloader is LATM), over TCP and UDP.
    let gst_publish = |room: &str, protocol: &str| {
        Proc(
            Command::new("gst-launch-1.0")
                .args(["-q", "videotestsrc", "is-live=true", "!"])
                .args([
                    "video/x-raw,width=320,height=240,framerate=25/1",
                    "!",
                    "x264enc",
                ])
                .args([
                    "tune=zerolatency",
                    "key-int-max=25",
                    "speed-preset=ultrafast",
                    "!",
                ])
                .args(["h264parse", "!", "rtspclientsink"])
                .arg(format!("protocols={protocol}"))
                .arg(format!("location={}", server.rtsp_url(room)))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("run gst-launch-1.0"),
        )
    };
    let _gst_tcp = gst_publish("gst-tcp", "tcp");
    let _gst_udp = gst_publish("gst-udp", "udp");
    for room in ["gst-tcp", "gst-udp"] {
        server.wait_live(room);
        let flv = decode(&server.flv_url(room), 3.0);
        assert!(
            flv.video >= 60,
            "GStreamer's publish ({room}) over HTTP-FLV: {flv:?}"
        );
    }
}

#[test]
fn an_edge_serves_rtsp_players() {
    require_rtsp_clients();
    let redis = Redis::start();
    let origin = Server::in_cluster("origin", "o1", &redis.url(), &["--rtmp-noauth"]);
    let edge = Server::in_cluster("edge", "e1", &redis.url(), &[]);
    let _publisher = publish(&origin.rtmp_url("far"), Source::AudioVideo, 25, 0);
    origin.wait_live("far");
    // The first RTSP player makes the edge pull the stream.
    let (video, audio) = ffmpeg_play(&edge.rtsp_url("far"), "tcp", 3);
    assert!(
        video >= 60 && audio >= 100,
        "edge: {video} pictures, {audio} audio frames"
    );
    assert!(gstreamer_plays(&edge.rtsp_url("far"), "udp", 50));
}

/// One RTSP request on `stream`, the answer's head.
fn request(stream: &mut TcpStream, text: &str) -> String {
    stream.write_all(text.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => answer.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn tokens_apply_and_silent_udp_players_time_out() {
    require_rtsp_clients();
    let secret = "rtsp-secret";
    let server = Server::start(&["--play-secret", secret, "--rtsp-session-timeout", "2"]);
    let _publisher = publish(&server.rtmp_url("guarded"), Source::AudioVideo, 25, 0);
    server.wait_live("guarded");
    let url = server.rtsp_url("guarded");
    assert_eq!(ffmpeg_play(&url, "tcp", 1), (0, 0), "no token, no play");
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token =
        media::token::PlaySecret::new(secret.as_bytes()).sign("live/guarded", expires, None);
    let signed = format!("{url}?token={token}");
    assert!(
        ffmpeg_play(&signed, "tcp", 2).0 >= 25,
        "a valid token plays"
    );

    // A UDP player that never sends RTCP nor a keep-alive is closed after the timeout.
    let mut rtsp = TcpStream::connect(server.rtsp.unwrap()).unwrap();
    rtsp.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let describe = request(
        &mut rtsp,
        &format!("DESCRIBE {signed} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"),
    );
    assert!(describe.starts_with("RTSP/1.0 200"), "{describe}");
    let length: usize = describe
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut sdp = vec![0u8; length];
    rtsp.read_exact(&mut sdp).unwrap();
    let setup = request(
        &mut rtsp,
        &format!("SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP;unicast;client_port=40000-40001\r\n\r\n"),
    );
    assert!(setup.starts_with("RTSP/1.0 200"), "{setup}");
    let session = setup
        .lines()
        .find_map(|l| l.strip_prefix("Session: "))
        .and_then(|s| s.split(';').next())
        .unwrap()
        .to_owned();
    let play = request(
        &mut rtsp,
        &format!("PLAY {url} RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\n\r\n"),
    );
    assert!(play.starts_with("RTSP/1.0 200"), "{play}");
    assert_eq!(
        server.metric("ferrolive_protocol_viewers{protocol=\"rtsp\"}"),
        1
    );
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = rtsp.read_to_end(&mut rest);
    let closed_after = started.elapsed();
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(6),
        "closed after {closed_after:?}"
    );
    assert_eq!(
        server.metric("ferrolive_protocol_viewers{protocol=\"rtsp\"}"),
        0
    );
}
