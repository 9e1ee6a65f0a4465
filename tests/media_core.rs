//! End-to-end: the real binary, ffmpeg as publisher and player.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use media::codec::{parse_video_tag, VideoFrameKind, VideoPacketKind};
use media::flv::{TAG_AUDIO, TAG_VIDEO};
use testkit::*;

#[test]
fn rtmp_and_http_flv_playback_decode_video_and_audio() {
    let server = Server::start(&[]);
    let _publisher = publish(&server.rtmp_url("movie"), Source::AudioVideo, 25, 0);
    server.wait_live("movie");

    for url in [server.rtmp_url("movie"), server.flv_url("movie")] {
        let d = decode(&url, 3.0);
        assert!(
            d.errors.trim().is_empty(),
            "{url}: decoder errors: {}",
            d.errors
        );
        // 3 s at 25 fps; allow for the start-up of the player.
        assert!(
            d.video >= 65,
            "{url}: only {} video frames decoded",
            d.video
        );
        assert!(
            d.audio >= 100,
            "{url}: only {} audio frames decoded",
            d.audio
        );
    }
    assert_eq!(server.metric("ferrolive_streams"), 1);
    assert!(server.metric("ferrolive_bytes_out_total") > 100_000);
}

#[test]
fn http10_clients_get_flv_without_chunked_framing() {
    let server = Server::start(&[]);
    let _publisher = publish(&server.rtmp_url("old"), Source::AudioVideo, 25, 0);
    server.wait_live("old");
    let mut socket = TcpStream::connect(server.http).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
        .write_all(b"GET /live/old.flv HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    while raw.len() < 200_000 {
        let n = socket.read(&mut buf).expect("read");
        assert!(n > 0, "closed early");
        raw.extend_from_slice(&buf[..n]);
    }
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(!head.contains("chunked"), "{head}");
    // The body is a plain FLV: header, then tags back to back.
    let mut body = BytesMut::from(&raw[end..]);
    let mut reader = media::flv::FlvReader::new();
    let mut video = 0;
    while let Some(tag) = reader.read(&mut body).expect("a plain FLV body") {
        video += usize::from(tag.tag_type == TAG_VIDEO);
    }
    // Announced from the metadata even when the viewer came before the first frames.
    assert!(reader.header().is_some_and(|h| h.has_video && h.has_audio));
    assert!(video > 10, "{video} video tags");
}

#[test]
fn late_joiner_starts_with_a_keyframe_within_100ms() {
    let server = Server::start(&[]);
    // 2 s GOP, joined mid-GOP: without the GOP cache the first picture would wait.
    let _publisher = publish(&server.rtmp_url("late"), Source::AudioVideo, 50, 0);
    server.wait_live("late");
    std::thread::sleep(Duration::from_millis(3100));

    for attempt in 0..3 {
        let started = Instant::now();
        let mut viewer = FlvViewer::connect(server.http, "late");
        let header = viewer.flv_header();
        let mut first_picture = None;
        let mut video_header_seen = false;
        while first_picture.is_none() {
            let tag = viewer.next_tag().expect("stream ended early");
            if tag.tag_type != TAG_VIDEO {
                continue;
            }
            let info = parse_video_tag(&tag.payload).expect("video tag");
            if info.packet == VideoPacketKind::SequenceHeader {
                video_header_seen = true;
            } else {
                first_picture = Some((info.frame, started.elapsed()));
            }
        }
        let (kind, elapsed) = first_picture.unwrap();
        assert!(
            video_header_seen,
            "sequence header must precede the first picture"
        );
        assert_eq!(
            kind,
            VideoFrameKind::Key,
            "attempt {attempt}: first picture is not a keyframe"
        );
        assert!(
            elapsed < Duration::from_millis(100),
            "attempt {attempt}: first picture after {elapsed:?}"
        );
        let header = header.or(viewer.flv_header()).expect("flv header");
        assert!(header.has_audio && header.has_video);
    }

    // The same over RTMP, as ffprobe sees it.
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-read_intervals",
            "%+#1",
            "-show_entries",
            "frame=key_frame",
        ])
        .args(["-of", "csv=p=0", &server.rtmp_url("late")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().next().map(str::trim),
        Some("1"),
        "first RTMP video frame: {text:?}"
    );
}

/// Synthetic H.264-tagged frames: a counter after the 5-byte AVC header, then filler.
fn synthetic_frame(n: u32, size: usize) -> Vec<u8> {
    let mut v = vec![if n.is_multiple_of(25) { 0x17 } else { 0x27 }, 1, 0, 0, 0];
    v.extend_from_slice(&n.to_be_bytes());
    v.resize(size, 0x5A);
    v
}

#[test]
fn viewers_that_never_read_do_not_slow_a_normal_viewer() {
    // A short backlog so slow viewers fall behind within the test. Frames are 200 KB at
    // 25 fps (40 Mbit/s) so kernel socket buffers fill within a second or two.
    const FRAMES: u32 = 300;
    let server = Server::start(&["--viewer-backlog", "64", "--viewer-send-buffer", "65536"]);
    let mut publisher = RtmpClient::connect(server.rtmp, "live");
    assert!(publisher.publish("fan"));
    publisher.send(
        6,
        9,
        1,
        0,
        &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff, 0xe0, 0xe0],
    );

    let rejected_before = server.metric("ferrolive_connections_rejected_total");
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(server.http).unwrap();
        write!(s, "GET /live/fan.flv HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        stalled.push(s);
        let mut r = RtmpClient::connect(server.rtmp, "live");
        r.play("fan");
        stalled.push(r.socket);
    }
    // One viewer that reads, but far slower than the stream.
    let slow = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // A small receive window, as on a constrained link, so the server sees the slowness.
    slow.set_recv_buffer_size(64 * 1024).unwrap();
    slow.connect(&server.http.into()).unwrap();
    let mut slow: TcpStream = slow.into();
    write!(slow, "GET /live/fan.flv HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let slow_reader = std::thread::spawn(move || {
        let mut buf = [0u8; 10_000];
        let mut total = 0;
        while let Ok(n) = slow.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
            std::thread::sleep(Duration::from_millis(100));
        }
        total
    });

    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        for n in 0..FRAMES {
            let due = started + Duration::from_millis(40 * u64::from(n));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            publisher.send(6, 9, 1, n * 40, &synthetic_frame(n, 200_000));
        }
        publisher.unpublish();
        publisher
    });

    let mut viewer = FlvViewer::connect(server.http, "fan");
    let mut expected = None;
    let mut late = Duration::ZERO;
    while let Some(tag) = viewer.next_tag() {
        if tag.tag_type != TAG_VIDEO || tag.payload.len() < 9 || tag.payload[1] != 1 {
            continue;
        }
        let n = u32::from_be_bytes(tag.payload[5..9].try_into().unwrap());
        if let Some(e) = expected {
            assert_eq!(n, e, "the normal viewer lost frames");
        }
        expected = Some(n + 1);
        let due = started + Duration::from_millis(40 * u64::from(n));
        late = late.max(Instant::now().saturating_duration_since(due));
    }
    assert_eq!(
        expected,
        Some(FRAMES),
        "the normal viewer did not get to the end"
    );
    assert!(
        late < Duration::from_millis(500),
        "the normal viewer fell {late:?} behind"
    );
    let _publisher = sender.join().unwrap();

    assert!(
        server.metric("ferrolive_frames_skipped_total") > 0,
        "the slow viewer should have skipped frames"
    );
    assert!(
        server.metric("ferrolive_viewers_dropped_slow_total") >= 1,
        "the slow viewer should be dropped"
    );
    let received = slow_reader.join().unwrap();
    assert!(
        received < 20_000_000,
        "the slow viewer cannot have received the whole stream ({received} bytes)"
    );
    // Viewers that never read are cut off by the write timeout.
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.metric("ferrolive_connections_rejected_total") < rejected_before + 40 {
        assert!(
            Instant::now() < deadline,
            "stalled viewers were not disconnected"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(stalled);
}

#[test]
fn publisher_reconnect_keeps_the_viewer_connected() {
    let server = Server::start(&[]);
    let mut first = publish(&server.rtmp_url("relay"), Source::AudioVideo, 25, 0);
    server.wait_live("relay");
    let mut viewer = FlvViewer::connect(server.http, "relay");
    let read_for = |viewer: &mut FlvViewer, d: Duration, last_ts: &mut [u32; 2]| {
        let end = Instant::now() + d;
        let mut tags = 0;
        let mut video_headers = 0;
        while Instant::now() < end {
            let tag = viewer.next_tag().expect("viewer was disconnected");
            let track = usize::from(tag.tag_type == TAG_VIDEO);
            if tag.tag_type == TAG_AUDIO || tag.tag_type == TAG_VIDEO {
                assert!(
                    tag.timestamp >= last_ts[track],
                    "timestamps went back: {} < {}",
                    tag.timestamp,
                    last_ts[track]
                );
                last_ts[track] = tag.timestamp;
                tags += 1;
            }
            if tag.tag_type == TAG_VIDEO
                && parse_video_tag(&tag.payload)
                    .is_some_and(|i| i.packet == VideoPacketKind::SequenceHeader)
            {
                video_headers += 1;
            }
        }
        (tags, video_headers)
    };
    let mut last = [0u32; 2];
    let (before, _) = read_for(&mut viewer, Duration::from_secs(2), &mut last);
    assert!(before > 50);

    // The broadcaster's connection dies without an unpublish, and it comes back.
    first.kill();
    let _second = publish(&server.rtmp_url("relay"), Source::AudioVideo, 25, 0);
    let (after, headers) = read_for(&mut viewer, Duration::from_secs(4), &mut last);
    assert!(
        after > 80,
        "viewer received only {after} tags after the reconnect"
    );
    assert!(headers >= 1, "new sequence headers must reach the viewer");
}

#[test]
fn second_publisher_is_refused_while_the_first_is_live() {
    let server = Server::start(&[]);
    let _first = publish(&server.rtmp_url("busy"), Source::AudioVideo, 25, 0);
    server.wait_live("busy");
    let mut second = publish(&server.rtmp_url("busy"), Source::AudioVideo, 25, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = second.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "second publisher was not refused"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    // The first one is untouched.
    let d = decode(&server.flv_url("busy"), 2.0);
    assert!(d.video >= 40, "first stream disturbed: {} frames", d.video);
}

#[test]
fn viewers_are_closed_when_the_publisher_ends() {
    let server = Server::start(&[]);
    let _publisher = publish(&server.rtmp_url("short"), Source::AudioVideo, 25, 5);
    server.wait_live("short");
    let players: Vec<_> = [server.rtmp_url("short"), server.flv_url("short")]
        .into_iter()
        .map(|url| std::thread::spawn(move || (decode_to_end(&url, Duration::from_secs(20)), url)))
        .collect();
    for player in players {
        let ((d, ended), url) = player.join().unwrap();
        assert!(
            ended,
            "{url}: player was not closed when the publisher ended"
        );
        assert!(d.video > 50, "{url}: {} frames", d.video);
    }
}

#[test]
fn audio_only_and_video_only_streams_play_with_truthful_flv_headers() {
    let server = Server::start(&[]);
    let _a = publish(&server.rtmp_url("radio"), Source::AudioOnly, 25, 0);
    let _v = publish(&server.rtmp_url("silent"), Source::VideoOnly, 25, 0);
    server.wait_live("radio");
    server.wait_live("silent");
    std::thread::sleep(Duration::from_millis(500));

    let mut radio = FlvViewer::connect(server.http, "radio");
    radio.next_tag().unwrap();
    let h = radio.flv_header().unwrap();
    assert!(h.has_audio && !h.has_video, "audio-only header: {h:?}");
    let mut silent = FlvViewer::connect(server.http, "silent");
    silent.next_tag().unwrap();
    let h = silent.flv_header().unwrap();
    assert!(!h.has_audio && h.has_video, "video-only header: {h:?}");

    let d = decode(&server.flv_url("radio"), 2.0);
    assert!(
        d.audio >= 60 && d.video == 0,
        "radio: {} audio, {} video",
        d.audio,
        d.video
    );
    let d = decode(&server.rtmp_url("silent"), 2.0);
    assert!(
        d.video >= 40 && d.audio == 0,
        "silent: {} audio, {} video",
        d.audio,
        d.video
    );
}

#[test]
fn http_answers_404_cors_preflight_health_and_metrics() {
    let server = Server::start(&[]);
    let started = Instant::now();
    let r = http_get(server.http, "/live/nothing.flv").unwrap();
    assert_eq!(r.status, 404);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(
        http_get(server.http, "/live/..%2f.flv").unwrap().status,
        404
    );

    let r = http_request(
        server.http,
        "OPTIONS /live/x.flv HTTP/1.1\r\nHost: t\r\nOrigin: http://a\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 204);
    assert!(r.head.contains("Access-Control-Allow-Origin: *"));
    assert!(r.head.contains("Access-Control-Allow-Methods"));

    assert_eq!(http_get(server.http, "/healthz").unwrap().status, 200);
    assert_eq!(http_get(server.http, "/readyz").unwrap().status, 200);
    let _p = publish(&server.rtmp_url("m"), Source::AudioVideo, 25, 0);
    server.wait_live("m");
    let r = FlvViewer::connect(server.http, "m");
    assert!(r.head.contains("Access-Control-Allow-Origin: *"));
    assert!(r
        .head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked"));
    assert!(server.metric("ferrolive_publishes_total") >= 1);
    assert!(server.metric("ferrolive_viewers") >= 1);
    assert!(server.metric("ferrolive_bytes_in_total") > 0);
}

#[test]
fn malformed_clients_do_not_hurt_a_healthy_viewer() {
    let mut server = Server::start(&[]);
    let _publisher = publish(&server.rtmp_url("sturdy"), Source::AudioVideo, 25, 0);
    server.wait_live("sturdy");
    let rtmp = server.rtmp;
    let rejected_before = server.metric("ferrolive_connections_rejected_total");

    let attackers = std::thread::spawn(move || {
        let mut kept = Vec::new();
        // Garbage instead of a handshake.
        let mut s = TcpStream::connect(rtmp).unwrap();
        let _ = s.write_all(&[0xAB; 4000]);
        // A stalled handshake: connect and say nothing.
        kept.push(TcpStream::connect(rtmp).unwrap());
        // Valid handshake, then: garbage chunks; a 100 MiB message; thousands of chunk
        // stream ids; a command that is not AMF.
        let evil: Vec<Vec<u8>> = vec![
            vec![0xFF; 10_000],
            {
                let mut v = vec![0x03, 0, 0, 0, 0x06, 0x40, 0x00, 0x00, 0x14, 0, 0, 0, 0];
                v.extend_from_slice(&[0; 128]);
                v
            },
            (0..5000u32)
                .flat_map(|i| {
                    let csid = 64 + (i % 60000);
                    let mut v = vec![0x01, ((csid - 64) & 0xff) as u8, ((csid - 64) >> 8) as u8];
                    v.extend_from_slice(&[0, 0, 0, 0, 0x10, 0x00, 0x09, 1, 0, 0, 0]);
                    v.extend_from_slice(&[0x17; 128]);
                    v
                })
                .collect(),
            {
                let mut v = vec![0x03, 0, 0, 0, 0, 0, 0x10, 0x14, 0, 0, 0, 0];
                v.extend_from_slice(&[
                    0x05, 0xEE, 0xEE, 0x99, 0x12, 0x00, 0xFF, 0x13, 0x44, 0x12, 0x00, 0x00, 0x00,
                    0x00, 0x00, 0x00,
                ]);
                v
            },
        ];
        for bytes in evil {
            let mut s = RtmpClient::handshaken(rtmp).socket;
            let _ = s.write_all(&bytes);
            kept.push(s);
        }
        kept
    });

    let d = decode(&server.flv_url("sturdy"), 5.0);
    let _kept = attackers.join().unwrap();
    assert!(d.errors.trim().is_empty(), "decoder errors: {}", d.errors);
    assert!(
        d.video >= 110,
        "healthy viewer decoded only {} frames",
        d.video
    );
    assert!(server.is_running());
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.metric("ferrolive_connections_rejected_total") < rejected_before + 5 {
        assert!(
            Instant::now() < deadline,
            "bad connections were not all closed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every player is an open file, and most systems start a process with a soft limit of
/// 1024: a node takes its hard limit instead, or it could not serve a thousand players.
#[test]
fn a_node_raises_its_open_files_limit_to_the_hard_limit() {
    let soft = 256;
    let node = Server::start_after(Some(&format!("ulimit -Sn {soft}")), &[]);

    let limits = std::fs::read_to_string(format!("/proc/{}/limits", node.pid())).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("open files in /proc/PID/limits");
    let values: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    let (now, hard) = (values[0], values[1]);
    assert_eq!(now, hard, "{line}");
    assert_ne!(now, soft.to_string(), "{line}");
}
