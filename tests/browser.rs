//! Browser players against a real ferrolive: hls.js and Chromium's own HLS player on the
//! HLS playlist, hls.js on the fMP4 and low-latency playlist from an origin and an edge, mpegts.js on HTTP-FLV and WebSocket-FLV, in headless Chromium driven by Playwright
//! (`tests/browser/play.mjs`, which reports how playback went); and Chromium seeking in a
//! recorded MP4 (`tests/browser/seek.mjs`); and the node console (`tests/browser/console.mjs`):
//! the stream list and its player in every protocol, the bare player page, and the player
//! libraries served by the node itself with `--console-assets`; and the control console
//! (`tests/browser/control.mjs`): keys created and rotated, nodes, live rooms.
//!
//! Needs Debian's `chromium` and the npm packages of `tests/browser` (`npm ci` there): the
//! test command in README.md installs both.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use std::process::Stdio;

use serde_json::Value;
use testkit::browser::{browser_dir, require_browser, run_script};
use testkit::{Proc, Redis, Server};

/// How one playback went (see `tests/browser/play.mjs`).
struct Report(Value);

impl Report {
    fn started(&self) -> bool {
        self.0["started"].as_bool().unwrap_or(false)
    }
    fn number(&self, field: &str) -> f64 {
        self.0[field].as_f64().unwrap_or(0.0)
    }
    fn texts(&self, field: &str) -> Vec<String> {
        self.0[field]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Play `url` with `player` (hlsjs, mpegts, native) for `seconds`.
fn play(player: &str, url: &str, seconds: u32) -> Report {
    let seconds = seconds.to_string();
    let args = ["--player", player, "--url", url, "--seconds", &seconds];
    let line = run_script("play.mjs", &args);
    Report(serde_json::from_str(&line).expect("play.mjs prints one JSON report"))
}

/// ffmpeg publishing 25 fps H.264 with B-frames (2 s GOP) and AAC in real time, until
/// killed.
fn publish_b_frames(url: &str) -> Proc {
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "50",
        ])
        .args(["-c:a", "aac", "-f", "flv", url])
        .stdin(Stdio::null())
        .spawn()
        .expect("ffmpeg is required: run the test command from README.md");
    Proc(child)
}

/// A cold stream (nobody asked for its playlist yet) starts in hls.js and in Chromium's
/// own player at the usual hold-back and plays without a stall: the first playlist lists
/// several segments, not one.
#[test]
fn a_cold_hls_stream_starts_without_a_stall() {
    let _one_at_a_time = require_browser();
    testkit::require_ffmpeg();
    let server = Server::start(&[]);
    let _publisher = publish_b_frames(&server.rtmp_url("cold"));
    server.wait_live("cold");
    // Long enough for several segments; nobody has asked for HLS yet.
    std::thread::sleep(Duration::from_secs(9));
    let url = format!("http://{}/live/cold.m3u8", server.http);
    for player in ["hlsjs", "native"] {
        let report = play(player, &url, 14);
        assert!(report.started(), "{player}: {report}");
        assert_eq!(report.number("stalls"), 0.0, "{player}: {report}");
        assert_eq!(report.number("waitingEvents"), 0.0, "{player}: {report}");
        assert!(report.number("maxFreezeMs") < 1000.0, "{player}: {report}");
        if player == "hlsjs" {
            // It started three target durations (2 s) behind live and stayed there: from a
            // playlist of one segment it starts 2 s behind, runs dry and stays close.
            let latency = report.number("latency");
            assert!(latency > 4.5, "{player}: {report}");
        }
    }
}

/// A publisher that reconnects with B-frames: hls.js, Chromium's own HLS player and
/// mpegts.js cross the break without a freeze over a second (the new stream's first
/// picture is shown where the old stream's pictures end, so nothing overlaps), and
/// mpegts.js sees no second onMetaData.
#[test]
fn players_cross_a_b_frame_publishers_reconnect() {
    let _one_at_a_time = require_browser();
    testkit::require_ffmpeg();
    let server = Server::start(&[]);
    let url = server.rtmp_url("again");
    let mut first = publish_b_frames(&url);
    server.wait_live("again");
    std::thread::sleep(Duration::from_secs(8));
    let hls = format!("http://{}/live/again.m3u8", server.http);
    let flv = format!("http://{}/live/again.flv", server.http);
    let players = [("hlsjs", hls.clone()), ("native", hls), ("mpegts", flv)];
    let handles: Vec<_> = players
        .into_iter()
        .map(|(player, url)| std::thread::spawn(move || (player, play(player, &url, 26))))
        .collect();
    // Let the players start, then the publisher drops off and comes back.
    std::thread::sleep(Duration::from_secs(8));
    // The encoder dies and is started again (the server holds the players meanwhile).
    first.kill();
    let killed = std::time::Instant::now();
    let _second = publish_b_frames(&url);
    // The players' longest freeze includes the encoder's restart, which a loaded machine
    // slows: how long until the node has a publisher again counts on top of the second
    // allowed (nothing if the node had not yet noticed the first one go).
    let publishing = || {
        testkit::http_get(server.http, "/api/streams").is_some_and(|r| {
            String::from_utf8_lossy(&r.body).contains("\"room\":\"again\",\"publishing\":true")
        })
    };
    while !publishing() && killed.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let restart = killed.elapsed().as_millis() as f64;
    eprintln!("the node had a publisher again {restart} ms after the first was killed");
    for handle in handles {
        let (player, report) = handle.join().unwrap();
        assert!(report.started(), "{player}: {report}");
        assert!(
            report.number("maxFreezeMs") <= 1000.0 + restart,
            "{player}: {report}"
        );
        assert!(report.texts("errors").is_empty(), "{player}: {report}");
        let warnings = report.texts("warnings");
        assert!(
            !warnings.iter().any(|w| w.contains("onMetaData")),
            "{player}: {report}"
        );
    }
}

/// hls.js plays the TS playlist, the fMP4 playlist in whole segments and the same
/// playlist in low-latency mode (parts, blocking reloads, preload hints), from an origin
/// and from an edge, each with its picture advancing and no error; in low-latency mode it
/// plays within 4 s of the origin's wall clock (the program dates; about 1.5-2 s on an idle
/// machine), where whole segments play more than 6 s behind.
#[test]
fn hls_js_plays_ts_fmp4_and_low_latency_from_origin_and_edge() {
    let _one_at_a_time = require_browser();
    testkit::require_ffmpeg();
    let redis = Redis::start();
    let node =
        |role: &str, id: &str| Server::in_cluster(role, id, &redis.url(), &["--rtmp-noauth"]);
    let origin = node("origin", "origin-b");
    let edge = node("edge", "edge-b");
    let _publisher = publish_b_frames(&origin.rtmp_url("low"));
    origin.wait_live("low");
    std::thread::sleep(Duration::from_secs(5));
    let mut runs = Vec::new();
    for server in [&origin, &edge] {
        let ts = format!("http://{}/live/low.m3u8", server.http);
        let fmp4 = format!("http://{}/live/low/index.m3u8", server.http);
        runs.push((server.http, "hlsjs", ts));
        runs.push((server.http, "hlsjs-segments", fmp4.clone()));
        runs.push((server.http, "hlsjs", fmp4));
    }
    // Three browsers at a time: two cores.
    for batch in runs.chunks(3) {
        let handles: Vec<_> = batch
            .iter()
            .cloned()
            .map(|(at, player, url)| {
                std::thread::spawn(move || (at, player, url.clone(), play(player, &url, 14)))
            })
            .collect();
        for handle in handles {
            let (at, player, url, report) = handle.join().unwrap();
            let what = format!("{player} {url} on {at}: {report}");
            assert!(report.started(), "{what}");
            assert!(report.number("currentTime") > 5.0, "{what}");
            assert!(report.number("decodedFrames") > 150.0, "{what}");
            assert!(report.number("maxFreezeMs") < 1000.0, "{what}");
            // hls.js also reports what it handled itself (say `bufferSeekOverHole`, a jump
            // over a gap of a few milliseconds at the start): only fatal errors count.
            let fatal: Vec<String> = report
                .texts("errors")
                .into_iter()
                .filter(|e| e.contains("fatal"))
                .collect();
            assert!(fatal.is_empty(), "{what}");
            let low_latency = report.0["lowLatencyPlaylist"].as_bool() == Some(true);
            if url.ends_with("index.m3u8") && player == "hlsjs" {
                assert!(low_latency, "{what}");
                // Well ahead of whole-segment playback (three 2 s segments and more behind),
                // with room for a loaded machine and a debug build.
                let behind = report.number("dateLatency");
                assert!(behind > 0.0 && behind < 4.0, "{what}");
            }
            eprintln!(
                "{player} {url}: {:.2} s behind the live edge by hls.js, {:?} s by the clock",
                report.number("latency"),
                report.0["dateLatency"].as_f64()
            );
        }
    }
}

/// mpegts.js plays WebSocket-FLV (`ws://HOST:PORT/live/ROOM.flv`), as it plays HTTP-FLV.
#[test]
fn mpegts_js_plays_websocket_flv() {
    let _one_at_a_time = require_browser();
    testkit::require_ffmpeg();
    let server = Server::start(&[]);
    let _publisher = publish_b_frames(&server.rtmp_url("ws"));
    server.wait_live("ws");
    let report = play("mpegts", &format!("ws://{}/live/ws.flv", server.http), 8);
    assert!(report.started(), "{report}");
    assert!(report.number("decodedFrames") > 50.0, "{report}");
    assert!(report.number("maxFreezeMs") < 1000.0, "{report}");
    assert!(report.texts("errors").is_empty(), "{report}");
}

/// Chromium's own `<video>` plays HTTP-fMP4 (`/live/ROOM.mp4`) as it arrives.
#[test]
fn chromium_plays_http_fmp4_in_a_video_element() {
    let _one_at_a_time = require_browser();
    testkit::require_ffmpeg();
    let server = Server::start(&[]);
    let _publisher = publish_b_frames(&server.rtmp_url("fmp4"));
    server.wait_live("fmp4");
    let report = play(
        "native",
        &format!("http://{}/live/fmp4.mp4", server.http),
        8,
    );
    assert!(report.started(), "{report}");
    assert!(report.number("decodedFrames") > 50.0, "{report}");
    assert!(report.number("maxFreezeMs") < 1000.0, "{report}");
    assert!(report.texts("errors").is_empty(), "{report}");
}

/// A recorded MP4 opens in Chromium's own `<video>`, which finds its whole duration and
/// seeks in it by byte ranges, then plays on from there.
#[test]
fn chromium_seeks_in_a_recorded_mp4() {
    let _one_at_a_time = require_browser();
    let record = testkit::temp_dir("browser-recording").join("rec");
    let server = Server::start(&["--record-dir", record.to_str().unwrap()]);
    let mut publisher = publish_b_frames(&server.rtmp_url("vod"));
    server.wait_live("vod");
    std::thread::sleep(Duration::from_secs(12));
    publisher.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.metric("ferrolive_recordings") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the recording did not end"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let folder = record.join("live/vod");
    let name = std::fs::read_dir(&folder)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".mp4"))
        .expect("a recorded MP4");
    let url = format!("http://{}/recordings/live/vod/{name}", server.http);
    let line = run_script("seek.mjs", &["--url", &url, "--to", "0.6"]);
    let report: Value = serde_json::from_str(&line)
        .unwrap_or_else(|_| panic!("seek.mjs prints one JSON report: {line}"));
    let number = |field: &str| report[field].as_f64().unwrap_or(-1.0);
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert!((9.0..14.0).contains(&number("duration")), "{report}");
    assert!(
        (number("seekedAt") - number("seekTarget")).abs() < 0.1,
        "{report}"
    );
    assert!(number("playedTo") > number("seekedAt") + 0.5, "{report}");
    assert!(
        report["ranges"].as_array().is_some_and(|r| !r.is_empty()),
        "the browser asked for no byte range: {report}"
    );
}

/// Drive the node console at `server` for `stream` (see `tests/browser/console.mjs`),
/// offline (the player libraries from the node) with a play token for the bare page.
fn console(server: &Server, stream: &str, offline: Option<&str>, more: &[&str]) -> Report {
    let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console");
    let base = format!("http://{}", server.http);
    let args = [
        "--base",
        &base,
        "--stream",
        stream,
        "--screenshots",
        screenshots.to_str().expect("a UTF-8 target directory"),
        "--offline",
        if offline.is_some() { "yes" } else { "no" },
        "--token",
        offline.unwrap_or_default(),
    ];
    let args: Vec<&str> = args.iter().chain(more).copied().collect();
    let line = run_script("console.mjs", &args);
    eprintln!("console screenshots in {}", screenshots.display());
    Report(serde_json::from_str(&line).expect("console.mjs prints one JSON report"))
}

/// How one player in the console went: its picture advanced and was decoded, the page
/// showed a latency, and the player reported no error.
fn assert_played(what: &str, played: &Value, report: &Report) {
    let number = |field: &str| played[field].as_f64().unwrap_or(0.0);
    assert!(
        number("currentTime") > number("early") && number("early") > 0.0,
        "{what}: the picture did not advance: {played}\n{report}"
    );
    assert!(number("frames") > 25.0, "{what}: {played}\n{report}");
    assert!(
        played["latency"].as_f64().is_some(),
        "{what}: no latency shown: {played}"
    );
    assert_eq!(
        played["errors"],
        Value::Array(vec![]),
        "{what}: {played}\n{report}"
    );
}

/// The console on the player port: with ffmpeg publishing, `/` lists the stream within
/// 3 s with its codecs and resolution, its player plays it over HTTP-FLV, WebSocket-FLV,
/// HLS, LL-HLS and HTTP-fMP4 with the latency on screen, and the bare page
/// `/play/APP/ROOM` plays it too. The libraries come from the CDN URLs (answered here by the
/// npm copies, whose integrity hashes the pages pin).
#[test]
fn the_console_lists_the_stream_and_plays_every_protocol() {
    let _one_at_a_time = require_browser();
    testkit::require_ffmpeg();
    let server = Server::start(&[]);
    let _publisher = publish_b_frames(&server.rtmp_url("show"));
    server.wait_live("show");
    std::thread::sleep(Duration::from_secs(3));
    // B-frames are noticed (the console warns WebRTC viewers of them).
    assert!(has_b_frames(&server, "live/show"));
    let report = console(&server, "live/show", None, &[]);
    let listed = report.number("listedMs");
    assert!(listed > 0.0 && listed < 3000.0, "{report}");
    let row = report.0["row"].as_str().unwrap_or_default();
    assert!(
        row.contains("h264 320×240") && row.contains("aac"),
        "{report}"
    );
    for protocol in ["http-flv", "ws-flv", "hls", "ll-hls", "http-fmp4"] {
        assert_played(protocol, &report.0["protocols"][protocol], &report);
    }
    assert_played("/play/live/show", &report.0["bare"], &report);
    let cdn = report.texts("cdnRequests");
    assert!(cdn.iter().any(|u| u.contains("hls.js@")), "{report}");
}

/// `/api/streams` entry of `stream`, and whether it says the stream has B-frames.
fn has_b_frames(server: &Server, stream: &str) -> bool {
    let answer = testkit::http_get(server.http, "/api/streams").expect("/api/streams answers");
    let streams: Value = serde_json::from_slice(&answer.body).expect("JSON");
    let entry = streams["streams"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["stream"] == stream))
        .unwrap_or_else(|| panic!("{stream} listed: {streams}"));
    entry["b_frames"].as_bool().expect("b_frames in the entry")
}

/// The console's WebRTC player: the page posts its own WHEP offer, plays, and shows how far
/// behind the picture is; the bare page `/play/APP/ROOM?protocol=webrtc` too. (The
/// publisher sends no B-frames: browsers' WebRTC decoders take none.)
#[test]
fn the_console_plays_webrtc_with_its_latency_on_screen() {
    let _one_at_a_time = require_browser();
    testkit::require_ffmpeg();
    let server = Server::start(&[]);
    let _publisher = testkit::publish(&server.rtmp_url("rtc"), testkit::Source::AudioVideo, 25, 0);
    server.wait_live("rtc");
    assert!(!has_b_frames(&server, "live/rtc"));
    let webrtc = ["--protocols", "webrtc", "--bare", "webrtc"];
    let report = console(&server, "live/rtc", None, &webrtc);
    for played in [&report.0["protocols"]["webrtc"], &report.0["bare"]] {
        assert_played("webrtc", played, &report);
        eprintln!("webrtc in the console: {played}");
        let latency = played["latency"].as_f64().unwrap_or(f64::MAX);
        assert!((0.0..1.0).contains(&latency), "{played}");
    }
}

/// The console's WebRTC player says so when the browser cannot get the stream's video over
/// WebRTC: an HEVC stream (x265 over RTSP) in a Chromium that decodes HEVC only in
/// hardware, which this machine lacks.
#[test]
fn the_console_says_when_webrtc_cannot_bring_the_streams_video() {
    let _one_at_a_time = require_browser();
    testkit::require_ffmpeg();
    let server = Server::start(&[]);
    let _publisher = testkit::publish_hevc(&server.rtsp_url("hevc"), testkit::Source::AudioVideo);
    server.wait_live("hevc");
    let report = console(
        &server,
        "live/hevc",
        None,
        &["--protocols", "webrtc", "--bare", "http-flv"],
    );
    let note = report.0["protocols"]["webrtc"]["note"]
        .as_str()
        .unwrap_or_default();
    assert!(
        note.contains("H265") && note.contains("sound alone"),
        "{report}"
    );
}

/// With `--console-assets`, the pages load the player libraries from the node: nothing
/// is fetched from the CDN (every such request fails here) and the player plays; on a
/// node with a play secret, with the token the page's own URL carries.
#[test]
fn the_console_works_without_the_internet_with_console_assets() {
    let _one_at_a_time = require_browser();
    testkit::require_ffmpeg();
    let assets = testkit::temp_dir("console-assets");
    let node_modules = browser_dir().join("node_modules");
    for (from, to) in [
        ("hls.js/dist/hls.min.js", "hls.min.js"),
        ("mpegts.js/dist/mpegts.js", "mpegts.js"),
    ] {
        std::fs::copy(node_modules.join(from), assets.join(to)).expect("copy a library");
    }
    let server = Server::start(&[
        "--console-assets",
        assets.to_str().unwrap(),
        "--play-secret",
        "console-play-secret",
    ]);
    let _publisher = publish_b_frames(&server.rtmp_url("local"));
    server.wait_live("local");
    let (status, minted) = server.api("POST", "/api/v1/rooms/local/play-token", None);
    assert_eq!(status, 200, "{minted}");
    let minted: Value = serde_json::from_str(&minted).unwrap();
    let report = console(&server, "live/local", minted["token"].as_str(), &[]);
    assert!(report.texts("cdnRequests").is_empty(), "{report}");
    assert_played("/play/live/local offline", &report.0["bare"], &report);
}

/// The control console (`/console` on the control API) behind the admin token: without it
/// the page shows nothing but what it needs; with it, it creates a room and shows its key,
/// lists the node, rotates the key, after which a publisher with the old key is refused
/// and one with the new key is accepted, and lists the live room with its play URLs.
#[test]
fn the_control_console_rotates_a_key_and_the_old_one_is_refused() {
    use std::io::{BufRead, BufReader};
    let _one_at_a_time = require_browser();
    testkit::require_ffmpeg();
    let data = testkit::temp_dir("control-console");
    let server = Server::spawn(
        "standalone",
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--admin-token",
            "console-secret",
        ],
    );
    let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console");
    let mut script = Command::new("node")
        .current_dir(browser_dir())
        .args(["control.mjs", "--api", &format!("http://{}", server.api)])
        .args([
            "--token",
            "console-secret",
            "--room",
            "stage",
            "--screenshots",
        ])
        .arg(&screenshots)
        .stdout(Stdio::piped())
        .spawn()
        .expect("node is required: run the test command from README.md");
    let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
    let mut next = || -> Value {
        let line = lines
            .next()
            .and_then(Result::ok)
            .expect("control.mjs reports");
        serde_json::from_str(&line).expect("control.mjs prints JSON lines")
    };
    let keys = next();
    assert!(
        keys["refused"]
            .as_str()
            .unwrap_or_default()
            .contains("token"),
        "{keys}"
    );
    let (first, second) = (
        keys["first"].as_str().unwrap(),
        keys["second"].as_str().unwrap(),
    );
    assert!(
        first.len() >= 16 && second.len() >= 16 && first != second,
        "{keys}"
    );
    assert!(
        keys["nodes"][0]
            .as_str()
            .unwrap_or_default()
            .contains("standalone"),
        "{keys}"
    );
    let url = |key: &str| format!("rtmp://{}/live/{key}", server.rtmp);
    let (old_accepted, _old) = testkit::publish_accepted(&url(first), Duration::from_secs(3));
    assert!(!old_accepted, "the rotated-out key was accepted");
    let (new_accepted, _publisher) =
        testkit::publish_accepted(&url(second), Duration::from_secs(3));
    assert!(new_accepted, "the new key was refused");
    let live = next();
    let rows = live["live"].as_array().cloned().unwrap_or_default();
    assert!(
        rows.iter()
            .any(|r| r.as_str().unwrap_or_default().contains("/live/stage.flv")),
        "{live}"
    );
    let _ = script.wait();
}
