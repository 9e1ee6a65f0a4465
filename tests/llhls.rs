//! End-to-end low-latency HLS in fMP4: the playlist at
//! `/live/ROOM/index.m3u8` with its parts, a blocking reload answered when its part
//! exists, a preload hint that blocks, and ffmpeg decoding it.

use std::time::{Duration, Instant};

use testkit::*;

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
    let server = Server::start(&["--hls-segment", "1"]);
    let _publisher = publish(&server.rtmp_url("ll"), Source::AudioVideo, 25, 0);
    server.wait_live("ll");
    let first = get(&server, "/live/ll/index.m3u8");
    assert_eq!(first.status, 200);
    let text = String::from_utf8_lossy(&first.body).into_owned();
    for tag in [
        "#EXT-X-VERSION:9",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.999",
        "#EXT-X-PART-INF:PART-TARGET=0.333",
        "#EXT-X-MAP:URI=\"init0.mp4\"",
    ] {
        assert!(text.contains(tag), "{tag} missing from\n{text}");
    }
    assert_eq!(get(&server, "/live/ll/init0.mp4").status, 200);

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

    let decoded = decode(&format!("http://{}/live/ll/index.m3u8", server.http), 3.0);
    assert!(decoded.video > 40 && decoded.audio > 40, "{decoded:?}");
}
