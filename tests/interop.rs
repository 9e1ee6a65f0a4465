//! Other projects' publishers and players against the real binary: what they see must be
//! exactly what the publisher sent, whoever publishes, and bad media or ordinary
//! disconnects must be told apart from attacks.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::amf::{self, Amf0Value};
use media::frame::MediaKind;
use testkit::*;

/// The kinds of stream ffprobe finds in `url`, sorted ("audio", "video", "data", ...).
fn stream_types(url: &str) -> Vec<String> {
    let child = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type",
            "-of",
            "csv=p=0",
        ])
        .arg(url)
        .stdout(Stdio::piped())
        .spawn()
        .expect("ffprobe is required: run the test command from README.md");
    let mut proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while proc.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "ffprobe {url} did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    std::io::Read::read_to_string(proc.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    let mut types: Vec<String> = out
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    types.sort();
    types
}

/// GStreamer (`flvmux ! rtmp2sink`) publishing H.264 and AAC in real time until killed.
fn gstreamer_publish(url: &str) -> Proc {
    let pipeline = format!(
        "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! x264enc tune=zerolatency key-int-max=50 ! h264parse ! flvmux name=m streamable=true \
         ! rtmp2sink location={url} audiotestsrc is-live=true ! audioconvert ! avenc_aac \
         ! aacparse ! m."
    );
    let child = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("GStreamer is required: run the test command from README.md");
    Proc(child)
}

/// Publishers whose muxers send onMetaData with a non-zero timestamp (GStreamer, lal)
/// made every libavformat player see a third, phantom subtitle stream; RTMP players saw a
/// phantom data stream whoever published.
#[test]
fn players_see_exactly_the_publishers_two_tracks() {
    require_ffmpeg();
    let server = Server::start(&[]);
    let _gstreamer = gstreamer_publish(&server.rtmp_url("gst"));
    server.wait_live("gst");
    let both = ["audio", "video"];
    assert_eq!(stream_types(&server.flv_url("gst")), both, "HTTP-FLV");
    assert_eq!(stream_types(&server.rtmp_url("gst")), both, "RTMP");
    let _ffmpeg = publish(&server.rtmp_url("ff"), Source::AudioVideo, 50, 0);
    server.wait_live("ff");
    assert_eq!(
        stream_types(&server.rtmp_url("ff")),
        both,
        "RTMP from ffmpeg"
    );
}

fn avc_header() -> Bytes {
    // One 1-byte SPS, no PPS: enough for the record to parse.
    Bytes::from_static(&[
        0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0, 1, 0x67, 0,
    ])
}

fn picture(key: bool, id: u8) -> Bytes {
    Bytes::from(vec![
        if key { 0x17 } else { 0x27 },
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        1,
        0x65,
        id,
    ])
}

/// A publisher that sends its metadata (with a file's duration and size) at 1000 ms.
fn publish_with_metadata(server: &Server, room: &str) -> RtmpClient {
    let mut publisher = RtmpClient::connect(server.rtmp, "live");
    assert!(publisher.publish(room));
    let metadata = amf::encode_all(&[
        Amf0Value::String("onMetaData".into()),
        Amf0Value::EcmaArray(vec![
            ("duration".into(), Amf0Value::Number(60.0)),
            ("filesize".into(), Amf0Value::Number(1e7)),
            ("width".into(), Amf0Value::Number(320.0)),
            ("videocodecid".into(), Amf0Value::Number(7.0)),
        ]),
    ]);
    let session = publisher.session();
    session
        .send_media(MediaKind::Metadata, 1000, Bytes::from(metadata))
        .unwrap();
    session
        .send_media(MediaKind::Video, 1000, avc_header())
        .unwrap();
    session
        .send_media(MediaKind::Video, 1000, picture(true, 1))
        .unwrap();
    publisher.flush();
    publisher
}

/// Live players get the metadata at time 0 (libavformat reads any other as a subtitle
/// stream) and without the fields that only describe a file.
#[test]
fn metadata_reaches_players_at_time_zero_without_file_fields() {
    let server = Server::start(&[]);
    let _publisher = publish_with_metadata(&server, "meta");
    server.wait_live("meta");
    let mut viewer = FlvViewer::connect(server.http, "meta");
    let script = loop {
        let tag = viewer.next_tag().expect("a script tag");
        if tag.tag_type == 18 {
            break tag;
        }
    };
    assert_eq!(script.timestamp, 0);
    let values = amf::decode_all(&script.payload).unwrap();
    let Amf0Value::EcmaArray(fields) = &values[1] else {
        panic!("{values:?}")
    };
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["width", "videocodecid"]);
}

/// A video message too short for its codec header stops ffmpeg's FLV reader ("Invalid data
/// found"): it is dropped, counted, and the rest of the stream goes on.
#[test]
fn media_that_cannot_be_valid_is_dropped_and_counted() {
    let server = Server::start(&[]);
    let mut publisher = publish_with_metadata(&server, "bad");
    server.wait_live("bad");
    let mut viewer = FlvViewer::connect(server.http, "bad");
    let session = publisher.session();
    for (ts, payload) in [
        (1040, Bytes::from_static(&[0x27, 0x01])),
        (1080, picture(false, 2)),
        (1120, Bytes::from_static(&[0x27, 0x01])),
        (1160, picture(false, 3)),
    ] {
        session.send_media(MediaKind::Video, ts, payload).unwrap();
    }
    publisher.flush();
    let mut pictures = Vec::new();
    while pictures.len() < 3 {
        let tag = viewer.next_tag().expect("the stream goes on");
        assert_ne!(tag.payload.as_ref(), [0x27, 0x01], "dropped");
        if tag.tag_type == 9 && tag.payload[1] == 1 {
            pictures.push(tag.payload[10]);
        }
    }
    assert_eq!(pictures, [1, 2, 3]);
    assert_eq!(server.metric("ferrolive_invalid_media_total"), 2);
}

/// A stream HLS cannot carry gets an answer that says why, not "stream not found".
#[test]
fn hls_says_why_it_cannot_package_a_stream() {
    let server = Server::start(&[]);
    let mut publisher = RtmpClient::connect(server.rtmp, "live");
    assert!(publisher.publish("av1"));
    // Enhanced RTMP AV1: a sequence start and keyframes (MPEG-TS HLS carries H.264 and HEVC).
    let session = publisher.session();
    let av1 = |packet: u8, frame: u8| {
        let mut p = vec![0x80 | (frame << 4) | packet];
        p.extend_from_slice(b"av01");
        p.extend_from_slice(&[0x81, 0x08, 0x0C, 0x00]);
        Bytes::from(p)
    };
    session.send_media(MediaKind::Video, 0, av1(0, 1)).unwrap();
    for i in 0..10u32 {
        session
            .send_media(MediaKind::Video, i * 40, av1(1, if i == 0 { 1 } else { 2 }))
            .unwrap();
    }
    publisher.flush();
    server.wait_live("av1");
    let started = Instant::now();
    let r = http_get(server.http, "/live/av1.m3u8").expect("an answer");
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, 503, "{body}");
    assert!(body.contains("cannot be packaged as HLS"), "{body}");
    assert!(body.contains("Av1"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at once"
    );
}

/// `ferrolive_connections_rejected_total` counts connections closed for what the peer did
/// wrong, not players that simply went away.
#[test]
fn ordinary_disconnects_are_not_rejections() {
    require_ffmpeg();
    let server = Server::start(&[]);
    let _publisher = publish(&server.rtmp_url("room"), Source::AudioVideo, 25, 0);
    server.wait_live("room");
    for _ in 0..3 {
        // An HTTP-FLV player that reads a little and hangs up without reading the rest.
        let mut viewer = FlvViewer::connect(server.http, "room");
        for _ in 0..10 {
            viewer.next_tag().unwrap();
        }
        drop(viewer);
        // An RTMP player that starts playing and vanishes.
        let mut player = RtmpClient::connect(server.rtmp, "live");
        player.play("room");
        std::thread::sleep(Duration::from_millis(200));
        drop(player);
    }
    assert_eq!(stream_types(&server.flv_url("room")), ["audio", "video"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(server.metric("ferrolive_connections_rejected_total"), 0);
    // Garbage is a rejection.
    let mut socket = TcpStream::connect(server.http).unwrap();
    socket.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
    drop(socket);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.metric("ferrolive_connections_rejected_total") != 1 {
        assert!(
            Instant::now() < deadline,
            "a malformed request is a rejection"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Which apps exist is configurable: others are refused for publishing and playing.
#[test]
fn only_the_configured_apps_exist() {
    let server = Server::start(&["--apps", "live,game"]);
    let mut music = RtmpClient::connect(server.rtmp, "music");
    assert!(!music.publish("room"), "an app that does not exist");
    let mut game = RtmpClient::connect(server.rtmp, "game");
    assert!(game.publish("room"));
    let session = game.session();
    session
        .send_media(MediaKind::Video, 0, avc_header())
        .unwrap();
    session
        .send_media(MediaKind::Video, 0, picture(true, 1))
        .unwrap();
    game.flush();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(server.http, "/game/room.flv").unwrap().status != 200 {
        assert!(Instant::now() < deadline, "game/room never played");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        http_get(server.http, "/music/room.flv").unwrap().status,
        404
    );
}
