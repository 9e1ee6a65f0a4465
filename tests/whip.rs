//! WebRTC publishing (WHIP): Chromium publishes its fake camera and microphone (H.264 and
//! Opus, DTLS-SRTP over the node's one UDP socket, on loopback) with a channel key, and
//! ffmpeg plays the room over HTTP-FLV, RTMP and HLS: H.264 of the camera's size and AAC
//! (the Opus transcoded once at ingest), both decoding; and Chromium plays it over WHEP,
//! pictures and sound. Driven by Playwright
//! (`tests/browser/whip.mjs`), with Debian's `chromium`; see tests/browser.rs for the
//! set-up.
//!
//! Also, without a browser: the signalling's answers (a wrong or missing key 403, not SDP
//! 400, nothing we take 400, not `application/sdp` 415, a second publisher 409, DELETE of
//! an unknown session 404) and the CORS preflight a page's bearer token needs.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::browser::{require_browser, run_script};
use testkit::{decode, http_get, http_request, livego_data, temp_dir, Response, Server};

/// A standalone node that checks channel keys and records MP4 (under its data folder's
/// `rec`), and the key of `room`.
fn keyed_server(room: &str) -> (Server, String) {
    // A folder per room: the tests of this process run at once.
    let data = temp_dir(&format!("whip-{room}"));
    let record = data.join("rec");
    let server = Server::spawn(
        "standalone",
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--record-dir",
            record.to_str().unwrap(),
            "--record-format",
            "mp4",
        ],
    );
    let (status, body) = server.api("GET", &format!("/control/get?room={room}"), None);
    assert_eq!(status, 200, "{body}");
    (server, livego_data(&body))
}

/// Where [`keyed_server`] records `room`.
fn recordings(room: &str) -> std::path::PathBuf {
    temp_dir(&format!("whip-{room}"))
        .join("rec/live")
        .join(room)
}

/// Publish from Chromium to `url` for `seconds` (with `bearer` as the bearer token) in a
/// thread of its own; the script's JSON report when it is done.
fn publish_whip(
    url: String,
    seconds: u32,
    bearer: Option<String>,
    leave: &str,
) -> thread::JoinHandle<Value> {
    let leave = leave.to_owned();
    thread::spawn(move || {
        let seconds = seconds.to_string();
        let mut args = vec!["--url", &url, "--seconds", &seconds, "--leave", &leave];
        if let Some(bearer) = &bearer {
            args.extend(["--bearer", bearer]);
        }
        let line = run_script("whip.mjs", &args);
        serde_json::from_str(&line).expect("whip.mjs prints one JSON report")
    })
}

/// ffprobe's streams of `url`: (codec type, codec name, width, height).
fn probe(url: &str) -> Vec<(String, String, u64, u64)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rw_timeout", "10000000", "-of", "json"])
        .args(["-show_entries", "stream=codec_type,codec_name,width,height"])
        .arg(url)
        .output()
        .expect("run ffprobe");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let streams = json["streams"].as_array().cloned().unwrap_or_default();
    let text = |s: &Value, f: &str| s[f].as_str().unwrap_or_default().to_owned();
    let mut streams: Vec<_> = streams
        .iter()
        .map(|s| {
            let size = |f: &str| s[f].as_u64().unwrap_or(0);
            (
                text(s, "codec_type"),
                text(s, "codec_name"),
                size("width"),
                size("height"),
            )
        })
        .collect();
    streams.sort();
    streams
}

/// Whether `room` has a publisher now, as `/api/streams` says.
fn publishing(server: &Server, room: &str) -> bool {
    let entry = format!(
        "\"stream\":\"live/{room}\",\"app\":\"live\",\"room\":\"{room}\",\"publishing\":true"
    );
    http_get(server.http, "/api/streams")
        .is_some_and(|r| String::from_utf8_lossy(&r.body).contains(&entry))
}

/// `room` stops being published within `within`; how long that took.
fn assert_unpublished(server: &Server, room: &str, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    while publishing(server, room) {
        assert!(
            started.elapsed() < within,
            "{what}: still publishing after {within:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

#[test]
fn chromium_publishes_whip_and_ffmpeg_plays_it_over_flv_and_hls() {
    let _one_at_a_time = require_browser();
    let (server, key) = keyed_server("cam");
    let url = format!("http://{}/live/{key}/whip", server.http);
    let browser = publish_whip(url, 28, None, "delete");
    server.wait_live("cam");
    let flv = server.flv_url("cam");
    let streams = probe(&flv);
    eprintln!("FLV streams: {streams:?}");
    let decoded = decode(&flv, 4.0);
    eprintln!("HTTP-FLV, 4 s: {decoded:?}");
    // The fake camera runs at 20 fps; AAC frames are 1024 samples at 48 kHz (47 a second).
    assert!(decoded.video > 30, "{decoded:?}");
    assert!(decoded.audio > 100, "{decoded:?}");
    let rtmp = decode(&server.rtmp_url("cam"), 2.0);
    eprintln!("RTMP, 2 s: {rtmp:?}");
    assert!(rtmp.video > 15 && rtmp.audio > 50, "{rtmp:?}");
    let hls = format!("http://{}/live/cam.m3u8", server.http);
    let decoded_hls = decode(&hls, 4.0);
    eprintln!("HLS, 4 s: {decoded_hls:?}");
    assert!(decoded_hls.video > 30, "{decoded_hls:?}");
    assert!(decoded_hls.audio > 100, "{decoded_hls:?}");
    // fMP4 keeps the publisher's Opus: HTTP-fMP4 as ffprobe reads it, and the LL-HLS
    // playlist's current init segment (ffprobe would read the playlist's first segment,
    // which may be from before both tracks had begun).
    let mut codecs: Vec<String> = probe(&format!("http://{}/live/cam.mp4", server.http))
        .into_iter()
        .map(|(_, codec, ..)| codec)
        .collect();
    codecs.sort();
    assert_eq!(codecs, ["h264", "opus"], "HTTP-fMP4");
    let playlist = testkit::http_get(server.http, "/live/cam/index.m3u8").expect("a playlist");
    let playlist = String::from_utf8_lossy(&playlist.body).into_owned();
    let init = (playlist.lines().rev())
        .filter_map(|line| line.strip_prefix("#EXT-X-MAP:URI=\""))
        .filter_map(|rest| rest.split('"').next())
        .next()
        .unwrap_or_else(|| panic!("an init segment in {playlist}"));
    let init = testkit::http_get(server.http, &format!("/live/cam/{init}")).expect("the init");
    let has = |box_name: &[u8]| init.body.windows(4).any(|w| w == box_name);
    assert!(
        has(b"avc1") && has(b"Opus") && has(b"dOps") && !has(b"mp4a"),
        "LL-HLS's init segment: {playlist}"
    );
    // 20 ms Opus packets: 50 a second.
    let decoded_fmp4 = decode(&format!("http://{}/live/cam.mp4", server.http), 4.0);
    eprintln!("HTTP-fMP4, 4 s: {decoded_fmp4:?}");
    assert!(
        decoded_fmp4.video > 30 && decoded_fmp4.audio > 150,
        "{decoded_fmp4:?}"
    );
    // And WebRTC to WebRTC: another Chromium plays the room over WHEP, with its sound:
    // the publisher's Opus as it sent it, no transcoder running.
    let whep = format!("http://{}/live/cam/whep", server.http);
    let viewer = thread::spawn(move || run_script("whep.mjs", &["--url", &whep, "--seconds", "5"]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.metric("ferrolive_webrtc_feeds") != 1 {
        assert!(Instant::now() < deadline, "a feed for the WHEP viewer");
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_secs(1));
    assert_eq!(server.metric("ferrolive_webrtc_audio_transcoders"), 0);
    let line = viewer.join().expect("the viewer's thread");
    let played: Value = serde_json::from_str(&line).expect("whep.mjs prints one JSON report");
    eprintln!("WHEP, 5 s: {played}");
    assert!(
        played["framesDecoded"].as_f64().unwrap_or(0.0) > 30.0,
        "{played}"
    );
    assert_eq!(played["audio"]["codec"], "audio/opus", "{played}");
    assert!(
        played["audio"]["samplesReceived"].as_f64().unwrap_or(0.0) > 48_000.0,
        "{played}"
    );
    let report = browser.join().expect("the browser's thread");
    eprintln!("whip.mjs: {report}");
    assert_eq!(report["status"], 201, "{report}");
    let location = report["location"].as_str().unwrap_or_default();
    assert!(location.starts_with("/live/cam/whip/"), "{report}");
    assert!(
        !location.contains(&key),
        "the resource names the room, not the key"
    );
    assert_eq!(report["sent"]["video"]["codec"], "video/H264", "{report}");
    let (width, height) = (report["width"].as_u64(), report["height"].as_u64());
    assert!(width.is_some() && height.is_some(), "{report}");
    let (width, height) = (width.unwrap_or(0), height.unwrap_or(0));
    assert_eq!(
        streams,
        vec![
            ("audio".into(), "aac".into(), 0, 0),
            ("video".into(), "h264".into(), width, height),
        ],
        "{report}"
    );
    // The DELETE ended the publish at once.
    assert_eq!(report["deleteStatus"], 200, "{report}");
    assert_unpublished(&server, "cam", Duration::from_secs(2), "after DELETE");
    // The MP4 recording keeps the Opus too.
    let folder = recordings("cam");
    let deadline = Instant::now() + Duration::from_secs(10);
    let recorded = loop {
        let file = std::fs::read_dir(&folder)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .find(|path| path.extension().is_some_and(|e| e == "mp4"));
        let mut codecs: Vec<String> = file
            .map(|f| {
                probe(f.to_str().unwrap())
                    .into_iter()
                    .map(|(_, c, ..)| c)
                    .collect()
            })
            .unwrap_or_default();
        codecs.sort();
        if codecs.len() == 2 || Instant::now() > deadline {
            break codecs;
        }
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        recorded,
        ["h264", "opus"],
        "the recording in {}",
        folder.display()
    );
}

/// OBS's form: the URL names the app only and the key is the bearer token. A publisher
/// that vanishes without a DELETE (its consent checks stop) is let go, and its viewers
/// held for the reconnect grace as for RTMP.
#[test]
fn chromium_publishes_with_a_bearer_key_and_a_vanished_publisher_is_let_go() {
    let _one_at_a_time = require_browser();
    let (server, key) = keyed_server("obs");
    let url = format!("http://{}/live/whip", server.http);
    let browser = publish_whip(url, 8, Some(key), "vanish");
    server.wait_live("obs");
    let decoded = decode(&server.flv_url("obs"), 2.0);
    assert!(decoded.video > 10 && decoded.audio > 40, "{decoded:?}");
    let report = browser.join().expect("the browser's thread");
    eprintln!("whip.mjs: {report}");
    assert_eq!(report["status"], 201, "{report}");
    assert!(report["location"]
        .as_str()
        .unwrap_or_default()
        .starts_with("/live/obs/whip/"));
    let after = assert_unpublished(&server, "obs", Duration::from_secs(35), "after vanishing");
    eprintln!("a vanished publisher was let go {after:?} after its browser closed");
}

/// An offer as a browser would make it (without the browser): a send-only video line of
/// `video` (an `a=rtpmap` and `a=fmtp`) and an Opus line.
fn offer(video: &str) -> String {
    let fingerprint = (0..32)
        .map(|i| format!("{i:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let common = format!(
        "c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:Ab3d\r\n\
         a=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 {fingerprint}\r\n\
         a=setup:actpass\r\n"
    );
    format!(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96\r\n{common}a=mid:0\r\na=sendonly\r\na=rtcp-mux\r\n\
         {video}a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=ssrc:1111 cname:test\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{common}a=mid:1\r\na=sendonly\r\na=rtcp-mux\r\n\
         a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
         a=ssrc:2222 cname:test\r\n"
    )
}

const H264: &str = "a=rtpmap:96 H264/90000\r\n\
    a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

fn post(server: &Server, path: &str, headers: &str, body: &str) -> Response {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    http_request(server.http, &request).expect("an answer")
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.head.lines().find_map(|l| {
        let (n, value) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn delete(server: &Server, path: &str) -> u16 {
    let request = format!("DELETE {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    http_request(server.http, &request)
        .expect("an answer")
        .status
}

/// The signalling without a browser: the key is checked as for RTMP (wrong, missing or
/// contradicted: 403), a bad offer is refused before anything is claimed (400), one
/// publisher per stream (409), DELETE ends the publish and an unknown session is 404.
#[test]
fn whip_signalling_admits_as_an_rtmp_publish_does() {
    testkit::require_ffmpeg();
    let (server, key) = keyed_server("sig");
    let sdp = "Content-Type: application/sdp\r\n";
    let h264 = offer(H264);
    let status = |path: &str, headers: &str, body: &str| post(&server, path, headers, body).status;
    assert_eq!(status("/live/wrong/whip", sdp, &h264), 403);
    assert_eq!(status("/live/whip", sdp, &h264), 403, "no key at all");
    let bearer = |k: &str| format!("{sdp}Authorization: Bearer {k}\r\n");
    assert_eq!(status("/live/whip", &bearer("wrong"), &h264), 403);
    assert_eq!(
        status(&format!("/live/{key}/whip"), &bearer("other"), &h264),
        403
    );
    assert_eq!(status(&format!("/live/{key}/whip"), sdp, "not sdp"), 400);
    assert_eq!(
        status(
            &format!("/live/{key}/whip"),
            "Content-Type: text/plain\r\n",
            &h264
        ),
        415
    );
    // Packetization mode 0 and VP8 are not taken; with nothing else to take, no publish.
    let mode_0 = offer(&H264.replace("packetization-mode=1", "packetization-mode=0"));
    let vp8 = offer("a=rtpmap:96 VP8/90000\r\n");
    let video_only = |o: &str| {
        o.split("m=audio")
            .next()
            .unwrap_or_default()
            .replace(" 0 1\r\n", " 0\r\n")
    };
    assert_eq!(
        status(&format!("/live/{key}/whip"), sdp, &video_only(&mode_0)),
        400
    );
    assert_eq!(
        status(&format!("/live/{key}/whip"), sdp, &video_only(&vp8)),
        400
    );
    assert!(
        !publishing(&server, "sig"),
        "a refused offer claims nothing"
    );
    // The right key, in the path or as OBS sends it.
    let created = post(&server, &format!("/live/{key}/whip"), sdp, &h264);
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(header(&created, "content-type"), Some("application/sdp"));
    let answer = String::from_utf8_lossy(&created.body).into_owned();
    assert!(
        answer.contains("H264/90000") && answer.contains("a=recvonly"),
        "{answer}"
    );
    assert!(!answer.contains("packetization-mode=0"), "{answer}");
    let location = header(&created, "location").unwrap_or_default().to_owned();
    assert!(location.starts_with("/live/sig/whip/"), "{location}");
    assert!(publishing(&server, "sig"));
    // One publisher per stream.
    assert_eq!(status("/live/whip", &bearer(&key), &h264), 409);
    assert_eq!(delete(&server, "/live/sig/whip/0123"), 404);
    assert_eq!(delete(&server, &location.replace("/whip/", "/whep/")), 404);
    assert_eq!(delete(&server, &location), 200);
    assert_unpublished(&server, "sig", Duration::from_secs(2), "after DELETE");
    let again = post(&server, "/live/whip", &bearer(&key), &h264);
    assert_eq!(
        again.status,
        201,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    // A page may send its key as a bearer token: the preflight allows the header.
    let preflight = "OPTIONS /live/whip HTTP/1.1\r\nHost: x\r\nOrigin: http://a.example\r\n\
        Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n\
        Connection: close\r\n\r\n";
    let answer = http_request(server.http, preflight).expect("an answer");
    let allowed = header(&answer, "access-control-allow-headers").unwrap_or_default();
    assert!(
        allowed.to_ascii_lowercase().contains("authorization"),
        "{allowed}"
    );
}
