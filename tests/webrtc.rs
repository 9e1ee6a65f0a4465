//! WebRTC playback (WHEP) in Chromium: a standalone node, an origin and an edge answer a
//! browser's offer, and the `<video>` presents the stream's pictures (H.264 passed through,
//! DTLS-SRTP over the node's one UDP socket, on loopback). Driven by Playwright
//! (`tests/browser/whep.mjs`), with Debian's `chromium`; see tests/browser.rs for the
//! set-up.
//!
//! Also, without a browser: the signalling's refusals (no stream, not SDP, a session that
//! is not there) and its CORS preflight.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::browser::{require_browser, run_script};
use testkit::{http_request, publish, publish_with, LossyUdpRelay, Redis, Server, Source};

/// How one WHEP playback went (see `tests/browser/whep.mjs`).
struct Report(Value);

impl Report {
    fn number(&self, field: &str) -> f64 {
        self.0[field].as_f64().unwrap_or(0.0)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Play `url` (a WHEP endpoint) in Chromium for `seconds`, then leave as `leave` says
/// (`delete`: DELETE the session; `vanish`: close the browser without a word).
fn play_whep(url: &str, seconds: u32, leave: &str) -> Report {
    let seconds = seconds.to_string();
    let line = run_script(
        "whep.mjs",
        &["--url", url, "--seconds", &seconds, "--leave", leave],
    );
    Report(serde_json::from_str(&line).expect("whep.mjs prints one JSON report"))
}

/// Over 10 s of a 25 fps stream, Chromium presents more than 30 pictures, of the stream's
/// size, and the answer was a 201 with the session's resource.
fn assert_played(report: &Report, what: &str) {
    eprintln!("{what}: {report}");
    assert_eq!(report.number("status"), 201.0, "{what}: {report}");
    let location = report.0["location"].as_str().unwrap_or_default();
    assert!(
        location.starts_with("/live/") && location.contains("/whep/"),
        "{what}: {report}"
    );
    assert!(report.number("presentedFrames") > 30.0, "{what}: {report}");
    assert!(report.number("framesDecoded") > 30.0, "{what}: {report}");
    assert_eq!(
        (report.number("width"), report.number("height")),
        (320.0, 240.0),
        "{what}: {report}"
    );
}

/// The node stops counting its WebRTC viewer within `within`; how long that took.
fn assert_session_ends(server: &Server, within: Duration, what: &str) -> Duration {
    let viewers = || server.metric("ferrolive_protocol_viewers{protocol=\"webrtc\"}");
    let start = Instant::now();
    while viewers() != 0 {
        assert!(
            start.elapsed() < within,
            "{what}: still counted after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

#[test]
fn chromium_plays_whep_from_a_standalone_node() {
    let _one_at_a_time = require_browser();
    let server = Server::start(&[]);
    let _publisher = publish(&server.rtmp_url("rtc"), Source::AudioVideo, 25, 0);
    server.wait_live("rtc");
    let url = format!("http://{}/live/rtc/whep", server.http);
    let report = play_whep(&url, 10, "delete");
    assert_played(&report, "standalone");
    // The DELETE ended the session at once.
    assert_eq!(report.number("deleteStatus"), 200.0, "{report}");
    assert_session_ends(&server, Duration::from_secs(2), "after DELETE");
    // A viewer that vanishes without a DELETE is let go when its consent checks stop
    // (str0m's ICE-lite gives up on a pair 15 s after its last binding request).
    let report = play_whep(&url, 5, "vanish");
    assert!(report.number("presentedFrames") > 30.0, "{report}");
    let after = assert_session_ends(&server, Duration::from_secs(35), "after vanishing");
    eprintln!("a vanished viewer's session ended {after:?} after its browser closed");
}

#[test]
fn chromium_plays_whep_from_an_origin_and_an_edge_that_pulls_on_the_offer() {
    let _one_at_a_time = require_browser();
    let redis = Redis::start();
    let node =
        |role: &str, id: &str| Server::in_cluster(role, id, &redis.url(), &["--rtmp-noauth"]);
    let origin = node("origin", "origin-w");
    let edge = node("edge", "edge-w");
    let _publisher = publish(&origin.rtmp_url("far"), Source::AudioVideo, 25, 0);
    origin.wait_live("far");
    // Nobody watches on the edge before the origin's viewer is done: the edge's offer
    // starts its pull.
    for (server, what) in [(&origin, "origin"), (&edge, "edge")] {
        let url = format!("http://{}/live/far/whep", server.http);
        let report = play_whep(&url, 10, "delete");
        assert_played(&report, what);
        assert_eq!(report.number("deleteStatus"), 200.0, "{what}: {report}");
        assert_session_ends(server, Duration::from_secs(2), what);
    }
}

/// A viewer behind a lossy link keeps playing: one datagram in 25 of what the node sends
/// it is lost (by the test's own UDP relay: the fault proxy carries only TCP), Chromium
/// asks again for what it lost (NACK), and the node resends it from its history. The GOP
/// is 10 s, so a picture spoiled by a loss would otherwise stay so until the next keyframe.
#[test]
fn a_viewer_behind_a_lossy_link_recovers_through_nacks() {
    let _one_at_a_time = require_browser();
    // The node answers with 127.0.0.2, where the relay listens on the node's own port.
    let port = testkit::free_udp_port();
    let bound: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = Server::start(&[
        "--webrtc-udp-addr",
        &bound.to_string(),
        "--webrtc-public-ip",
        "127.0.0.2",
    ]);
    let relay = LossyUdpRelay::start(format!("127.0.0.2:{port}").parse().unwrap(), bound, 25);
    let _publisher = publish(&server.rtmp_url("lossy"), Source::AudioVideo, 250, 0);
    server.wait_live("lossy");
    let url = format!("http://{}/live/lossy/whep", server.http);
    let report = play_whep(&url, 10, "delete");
    assert_played(&report, "lossy");
    let video = &report.0["video"];
    let field = |name: &str| video[name].as_f64().unwrap_or(0.0);
    eprintln!("the relay lost {} datagrams", relay.lost());
    assert!(relay.lost() > 40, "{report}");
    assert!(field("nackCount") > 10.0, "{report}");
    // Nearly every picture of the 10 s decoded, and none stayed frozen for long.
    assert!(report.number("framesDecoded") > 200.0, "{report}");
    assert!(field("totalFreezesDuration") < 1.0, "{report}");
}

/// A stream whose audio is Opus (published over RTSP: ffmpeg 5.1 has no Opus in FLV) plays
/// with its sound: Chromium receives Opus packets and decodes samples from them.
#[test]
fn chromium_gets_the_opus_of_a_stream_that_has_it() {
    let _one_at_a_time = require_browser();
    let server = Server::start(&[]);
    let output = [
        "-c:a",
        "libopus",
        "-ar",
        "48000",
        "-f",
        "rtsp",
        "-rtsp_transport",
        "tcp",
    ];
    let _publisher = publish_with(&server.rtsp_url("opus"), Source::AudioVideo, 25, 0, &output);
    server.wait_live("opus");
    let report = play_whep(
        &format!("http://{}/live/opus/whep", server.http),
        8,
        "delete",
    );
    assert_played(&report, "opus");
    let audio = &report.0["audio"];
    assert_eq!(audio["codec"].as_str(), Some("audio/opus"), "{report}");
    // 20 ms packets: 50 a second.
    assert!(
        audio["packetsReceived"].as_f64().unwrap_or(0.0) > 100.0,
        "{report}"
    );
}

/// The signalling without a browser: a stream that is not live is 404, an offer that is
/// not `application/sdp` 415, and a session that is not there 404; the preflight allows
/// the POST and the DELETE from any origin; with a play secret, an offer without a token
/// is 403.
#[test]
fn whep_signalling_refuses_what_it_cannot_answer() {
    testkit::require_ffmpeg();
    let server = Server::start(&[]);
    let post_to = |server: &Server, path: &str, content_type: &str, body: &str| {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        http_request(server.http, &request).expect("an answer")
    };
    let post =
        |path: &str, content_type: &str, body: &str| post_to(&server, path, content_type, body);
    assert_eq!(
        post("/live/none/whep", "application/sdp", "v=0\r\n").status,
        404
    );
    let _publisher = publish(&server.rtmp_url("sig"), Source::AudioVideo, 25, 0);
    server.wait_live("sig");
    assert_eq!(post("/live/sig/whep", "text/plain", "v=0\r\n").status, 415);
    assert_eq!(
        post("/live/sig/whep", "application/sdp", "not sdp").status,
        400
    );
    let delete = "DELETE /live/sig/whep/0123 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(http_request(server.http, delete).unwrap().status, 404);
    let preflight = "OPTIONS /live/sig/whep HTTP/1.1\r\nHost: x\r\nOrigin: http://a.example\r\n\
        Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n";
    let answer = http_request(server.http, preflight).unwrap();
    let allowed = answer
        .head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("access-control-allow-methods")
                .then(|| value.to_owned())
        })
        .unwrap_or_default();
    assert!(
        allowed.contains("POST") && allowed.contains("DELETE"),
        "{allowed}"
    );
    // A body is read off a keep-alive connection whatever the answer: the request after
    // it is answered as the next one.
    let mut socket = std::net::TcpStream::connect(server.http).unwrap();
    let offer = "v=0\r\n";
    let pipelined = format!(
        "POST /live/none/whep HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{offer}GET /healthz HTTP/1.1\r\nHost: x\r\n\
         Connection: close\r\n\r\n",
        offer.len()
    );
    socket.write_all(pipelined.as_bytes()).unwrap();
    let mut answers = String::new();
    socket.read_to_string(&mut answers).unwrap();
    let statuses: Vec<&str> = answers
        .lines()
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .collect();
    assert_eq!(
        statuses,
        ["HTTP/1.1 404 Not Found", "HTTP/1.1 200 OK"],
        "{answers}"
    );
    let guarded = Server::start(&["--play-secret", "s3cret"]);
    let refused = post_to(&guarded, "/live/sig/whep", "application/sdp", "v=0\r\n");
    assert_eq!(refused.status, 403);
}
