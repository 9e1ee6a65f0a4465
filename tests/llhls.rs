//! End-to-end low-latency HLS in fMP4: the playlist at
//! `/live/ROOM/index.m3u8` with its parts, every playlist read checked against the rules of
//! RFC 8216bis (`testkit::llhls`), a blocking reload answered when its part exists, a
//! preload hint that blocks, delta updates, a player following part by part, and ffmpeg
//! decoding it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testkit::llhls::{check_ll_playlist, LlPlaylist};
use testkit::*;

/// The playlist at `path`, which must pass the checker.
fn checked(server: &Server, path: &str) -> (String, LlPlaylist) {
    let r = get(server, path);
    assert_eq!(r.status, 200, "{path}");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    match check_ll_playlist(&text) {
        Ok(playlist) => (text, playlist),
        Err(why) => panic!("{path}: {why}\n{text}"),
    }
}

fn get(server: &Server, path: &str) -> Response {
    http_get(server.http, path).unwrap_or_else(|| panic!("no answer to {path}"))
}

/// The open segment and the next part of a playlist's preload hint.
fn preload_hint(text: &str) -> (u64, usize) {
    let uri = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .unwrap_or_else(|| panic!("no preload hint in\n{text}"));
    let (sequence, part) = uri.trim_end_matches(".m4s\"").split_once('.').unwrap();
    (sequence.parse().unwrap(), part.parse().unwrap())
}

#[test]
fn ll_hls_blocks_until_the_part_exists_and_plays() {
    require_ffmpeg();
    let started = Instant::now();
    let server = Server::start(&[
        "--hls-segment",
        "1",
        "--hls-window",
        "10",
        "--hls-part-ms",
        "250",
    ]);
    let _publisher = publish(&server.rtmp_url("ll"), Source::AudioVideo, 25, 0);
    server.wait_live("ll");
    let (text, first) = checked(&server, "/live/ll/index.m3u8");
    assert_eq!(
        (first.part_target, first.part_hold_back),
        (0.25, 0.75),
        "{text}"
    );
    assert!(text.contains("#EXT-X-MAP:URI=\"init0.mp4\""), "{text}");
    assert_eq!(get(&server, "/live/ll/init0.mp4").status, 200);
    // Program dates are the origin's wall clock.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let newest = first.segments.last().unwrap().program_date_ms.unwrap();
    assert!((now_ms - newest).abs() < 5_000, "{newest} vs now {now_ms}");

    // A blocking reload for the next part: answered once it exists, well within a second.
    let (sequence, part) = preload_hint(&text);
    let asked = Instant::now();
    let blocked = get(
        &server,
        &format!("/live/ll/index.m3u8?_HLS_msn={sequence}&_HLS_part={part}"),
    );
    let waited = asked.elapsed();
    assert_eq!(blocked.status, 200);
    let now = String::from_utf8_lossy(&blocked.body).into_owned();
    assert!(
        now.contains(&format!("URI=\"{sequence}.{part}.m4s\"")),
        "the part asked for is not listed:\n{now}"
    );
    assert!(waited < Duration::from_millis(900), "waited {waited:?}");
    // The preload hint's part blocks until it exists, then comes whole.
    let (sequence, part) = preload_hint(&now);
    let hinted = get(&server, &format!("/live/ll/{sequence}.{part}.m4s"));
    assert_eq!(hinted.status, 200);
    assert!(hinted.body.starts_with(&[0, 0]) && &hinted.body[4..8] == b"moof");
    // Too far ahead: 400.
    let ahead = get(
        &server,
        &format!("/live/ll/index.m3u8?_HLS_msn={}", sequence + 5),
    );
    assert_eq!(ahead.status, 400);

    // A player following the stream part by part, as LL-HLS players do: a blocking
    // reload for the part after the last it has, then that part. No part is missed and
    // each playlist on the way keeps the rules.
    let (mut sequence, mut part) = {
        let (_, now) = checked(&server, "/live/ll/index.m3u8");
        now.last_part().unwrap()
    };
    let mut fetched = 0;
    while fetched < 12 {
        let path = format!(
            "/live/ll/index.m3u8?_HLS_msn={sequence}&_HLS_part={}",
            part + 1
        );
        let (text, playlist) = checked(&server, &path);
        (sequence, part) = playlist
            .part_after(sequence, part)
            .unwrap_or_else(|| panic!("no part after {sequence}.{part}:\n{text}"));
        if part == 0 {
            // A segment's first part begins with a keyframe.
            let segment = playlist
                .segments
                .iter()
                .find(|s| s.sequence == sequence)
                .unwrap();
            assert!(segment.parts[0].independent, "{text}");
        }
        let body = get(&server, &format!("/live/ll/{sequence}.{part}.m4s"));
        assert_eq!(body.status, 200, "{sequence}.{part}");
        assert_eq!(&body.body[4..8], b"moof");
        fetched += 1;
    }

    // A delta update, once the window reaches past the skip boundary (six target
    // durations): the old segments are one EXT-X-SKIP, and what follows is the full
    // playlist's tail.
    let wait = Duration::from_secs(14).saturating_sub(started.elapsed());
    std::thread::sleep(wait);
    let (text, delta) = checked(&server, "/live/ll/index.m3u8?_HLS_skip=YES");
    assert!(delta.skipped > 0, "nothing skipped:\n{text}");
    let (full_text, full) = checked(&server, "/live/ll/index.m3u8");
    if full.media_sequence == delta.media_sequence
        && full.segments.len() == delta.segments.len() + delta.skipped as usize
    {
        assert_eq!(
            full.segments[delta.skipped as usize..],
            delta.segments[..],
            "{full_text}\n{text}"
        );
    }

    let decoded = decode(&format!("http://{}/live/ll/index.m3u8", server.http), 3.0);
    assert!(decoded.video > 40 && decoded.audio > 40, "{decoded:?}");
}

/// nghttp (nghttp2's client) fetching `urls` over HTTP/2 with prior knowledge (h2c), all
/// at once on one connection: each request's path and status, in the order they completed.
fn nghttp(urls: &[String]) -> Vec<(String, u16)> {
    let out = std::process::Command::new("nghttp")
        .args(["--null-out", "--stat", "--timeout", "10"])
        .args(urls)
        .output()
        .expect("nghttp is required: run the test command from README.md");
    // The statistics table: id, responseEnd, requestStart, process, code, size, path.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let code = f.get(4)?.parse().ok()?;
            Some((f.get(6)?.to_string(), code))
        })
        .collect()
}

/// HTTP/2 cleartext beside HTTP/1.1 on the player port: an LL-HLS player's blocking reload
/// and the hinted part go out together on one connection and both answer once the part
/// exists; a continuous stream is refused over HTTP/2 with a reason.
#[test]
fn ll_hls_over_http2_cleartext() {
    require_ffmpeg();
    let server = Server::start(&["--hls-segment", "1"]);
    let _publisher = publish(&server.rtmp_url("h2"), Source::AudioVideo, 25, 0);
    server.wait_live("h2");
    let (_, now) = checked(&server, "/live/h2/index.m3u8");
    let hint = now.preload_hint.clone().unwrap();
    let (msn, part) = hint.trim_end_matches(".m4s").split_once('.').unwrap();
    let base = format!("http://{}/live/h2", server.http);
    let urls = [
        format!("{base}/index.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
        format!("{base}/{hint}"),
        format!("{base}/{}", now.segments[0].map),
        format!("http://{}/live/h2.flv", server.http),
    ];
    let asked = Instant::now();
    let answers = nghttp(&urls);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    let status = |ends: &str| {
        let found = answers.iter().find(|(path, _)| path.ends_with(ends));
        found.map(|(_, code)| *code)
    };
    assert_eq!(answers.len(), 4, "{answers:?}");
    assert_eq!(
        status(&format!("_HLS_part={part}")),
        Some(200),
        "{answers:?}"
    );
    assert_eq!(status(&hint), Some(200), "{answers:?}");
    assert_eq!(status(".mp4"), Some(200), "{answers:?}");
    assert_eq!(status(".flv"), Some(505), "{answers:?}");
    // The init segment, there already, came before the reload and the part, which waited.
    assert!(
        answers[0].0.ends_with(".mp4") || answers[0].0.ends_with(".flv"),
        "{answers:?}"
    );
    // HTTP/1.1 on the same port goes on as before.
    assert_eq!(get(&server, "/live/h2/index.m3u8").status, 200);
}
