//! End-to-end HLS: ffmpeg publishes over RTMP, ffmpeg and ffprobe play the HLS output.

use std::process::Command;
use std::time::{Duration, Instant};

use testkit::*;

/// A media playlist, read by hand (the tests of the packager use an independent parser).
#[derive(Debug)]
struct Playlist {
    media_sequence: u64,
    discontinuity_sequence: u64,
    target_duration: u64,
    segments: Vec<(f64, String, bool)>,
    ended: bool,
}

fn parse_playlist(text: &str) -> Playlist {
    assert!(text.starts_with("#EXTM3U"), "not a playlist: {text}");
    let mut p = Playlist {
        media_sequence: 0,
        discontinuity_sequence: 0,
        target_duration: 0,
        segments: vec![],
        ended: false,
    };
    let mut duration = None;
    let mut discontinuity = false;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
            p.discontinuity_sequence = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target_duration = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            duration = Some(v.trim_end_matches(',').parse::<f64>().unwrap());
        } else if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
        } else if line == "#EXT-X-ENDLIST" {
            p.ended = true;
        } else if !line.starts_with('#') && !line.is_empty() {
            p.segments.push((
                duration.take().expect("EXTINF before URI"),
                line.to_owned(),
                discontinuity,
            ));
            discontinuity = false;
        }
    }
    p
}

fn get_playlist(server: &Server, room: &str) -> Playlist {
    let r = http_get(server.http, &format!("/live/{room}.m3u8")).expect("playlist response");
    assert_eq!(r.status, 200, "playlist status");
    assert!(
        r.head.contains("application/vnd.apple.mpegurl"),
        "{}",
        r.head
    );
    assert!(r.head.contains("Cache-Control: max-age=1"), "{}", r.head);
    assert!(r.head.contains("Access-Control-Allow-Origin: *"));
    parse_playlist(&String::from_utf8(r.body).unwrap())
}

fn hls_url(server: &Server, room: &str) -> String {
    format!("http://{}/live/{room}.m3u8", server.http)
}

/// ffprobe: is the first video frame of this segment a keyframe?
fn segment_starts_with_keyframe(data: &[u8], name: &str) -> bool {
    let path = temp_dir("hls").join(name);
    std::fs::write(&path, data).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-read_intervals",
            "%+#1",
        ])
        .args([
            "-show_entries",
            "frame=key_frame,pict_type",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().is_some_and(|l| l.starts_with("1,I"))
}

#[test]
fn hls_plays_and_every_segment_starts_with_a_keyframe() {
    let server = Server::start(&["--hls-segment", "2"]);
    // A 1.5 s GOP does not divide the 2 s target: segments are cut at the next keyframe.
    let _publisher = publish(&server.rtmp_url("tv"), Source::AudioVideo, 37, 0);
    server.wait_live("tv");

    let started = Instant::now();
    let first = get_playlist(&server, "tv");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "first playlist took {:?}",
        started.elapsed()
    );
    assert!(!first.segments.is_empty());

    let d = decode(&hls_url(&server, "tv"), 6.0);
    assert!(d.errors.trim().is_empty(), "decoder errors: {}", d.errors);
    assert!(d.video >= 140, "decoded {} video frames of 150", d.video);
    assert!(d.audio >= 200, "decoded {} audio frames", d.audio);

    let playlist = get_playlist(&server, "tv");
    assert!(playlist.media_sequence >= first.media_sequence);
    assert!(playlist.segments.len() >= 3, "{playlist:?}");
    for (duration, uri, _) in &playlist.segments {
        assert!(
            duration.ceil() as u64 <= playlist.target_duration,
            "EXTINF {duration} > target {}",
            playlist.target_duration
        );
        assert!(
            *duration >= 1.9,
            "segment shorter than the target: {duration}"
        );
        let r = http_get(server.http, &format!("/live/{uri}")).expect("segment");
        assert_eq!(r.status, 200, "segment {uri}");
        assert!(r.head.contains("video/mp2t"));
        assert!(r.head.contains("max-age=86400"));
        assert_eq!(r.body.len() % 188, 0);
        assert!(
            segment_starts_with_keyframe(&r.body, &uri.replace('/', "_")),
            "segment {uri} does not start with a keyframe"
        );
    }
}

#[test]
fn publisher_reconnect_is_a_discontinuity_and_the_sequence_keeps_growing() {
    let server = Server::start(&["--hls-segment", "1"]);
    let mut first = publish(&server.rtmp_url("news"), Source::AudioVideo, 25, 0);
    server.wait_live("news");
    let before = get_playlist(&server, "news");
    std::thread::sleep(Duration::from_secs(3));
    first.kill();
    let mut second = publish(&server.rtmp_url("news"), Source::AudioVideo, 25, 0);

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last_sequence = before.media_sequence;
    let after = loop {
        let p = get_playlist(&server, "news");
        assert!(
            p.media_sequence >= last_sequence,
            "media sequence went back"
        );
        last_sequence = p.media_sequence;
        // Wait for the window to slide too: with few segments since `before` it may not yet.
        let slid = p.media_sequence > before.media_sequence;
        if slid && p.segments.iter().any(|s| s.2) && p.segments.last().is_some_and(|s| !s.2) {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no discontinuity after the reconnect: {p:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(after.media_sequence > before.media_sequence);
    let d = decode(&hls_url(&server, "news"), 3.0);
    assert!(d.video >= 60, "after reconnect: {} frames", d.video);

    // The broadcaster stops cleanly: the playlist ends.
    second.kill();
    let _short = publish(&server.rtmp_url("final"), Source::AudioVideo, 25, 4);
    server.wait_live("final");
    get_playlist(&server, "final");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = http_get(server.http, "/live/final.m3u8").unwrap();
        if r.status == 200 && parse_playlist(&String::from_utf8_lossy(&r.body)).ended {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ENDLIST after the stream ended"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn audio_only_and_video_only_streams_play_over_hls() {
    let server = Server::start(&["--hls-segment", "1"]);
    let _a = publish(&server.rtmp_url("radio"), Source::AudioOnly, 25, 0);
    let _v = publish(&server.rtmp_url("silent"), Source::VideoOnly, 25, 0);
    server.wait_live("radio");
    server.wait_live("silent");
    get_playlist(&server, "radio");
    get_playlist(&server, "silent");
    let d = decode(&hls_url(&server, "radio"), 3.0);
    assert!(d.errors.trim().is_empty(), "radio errors: {}", d.errors);
    assert!(
        d.audio >= 100 && d.video == 0,
        "radio: {} audio, {} video",
        d.audio,
        d.video
    );
    let d = decode(&hls_url(&server, "silent"), 3.0);
    assert!(d.errors.trim().is_empty(), "silent errors: {}", d.errors);
    assert!(
        d.video >= 60 && d.audio == 0,
        "silent: {} audio, {} video",
        d.audio,
        d.video
    );
}

#[test]
fn unknown_rooms_segments_and_path_tricks_are_404() {
    let server = Server::start(&[]);
    for path in [
        "/live/nobody.m3u8",
        "/live/nobody/1.ts",
        "/live/../../etc/passwd.m3u8",
        "/live/a/../b.m3u8",
        "/live/x/abc.ts",
    ] {
        let started = Instant::now();
        let r = http_get(server.http, path).unwrap();
        assert_eq!(r.status, 404, "{path}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{path} was not answered at once"
        );
    }
    let _p = publish(&server.rtmp_url("real"), Source::AudioVideo, 25, 0);
    server.wait_live("real");
    let p = get_playlist(&server, "real");
    let next = p.media_sequence + p.segments.len() as u64 + 100;
    assert_eq!(
        http_get(server.http, &format!("/live/real/{next}.ts"))
            .unwrap()
            .status,
        404
    );
}
