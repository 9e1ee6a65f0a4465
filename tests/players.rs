//! End-to-end continuous players on the player port: WebSocket-FLV (mpegts.js and flv.js
//! play it; the browser test drives mpegts.js), here read by testkit's WebSocket client and
//! decoded by ffmpeg; HTTP-TS and HTTP-fMP4, decoded by ffmpeg.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use testkit::*;

use testkit::websocket::{WebSocket, BINARY, CLOSE, PING, PONG};

/// WebSocket-FLV: each binary message is the FLV header or one tag, the whole of them an
/// FLV that ffmpeg decodes; a ping is answered, a close is answered and ends it, and a
/// stream that is not live is a 404 instead of an upgrade.
#[test]
fn websocket_flv_plays_and_answers_pings_and_closes() {
    require_ffmpeg();
    let server = Server::start(&[]);
    let _publisher = publish(&server.rtmp_url("ws"), Source::AudioVideo, 25, 0);
    server.wait_live("ws");

    let refused = WebSocket::open(server.http, "/live/nobody.flv").err();
    assert!(
        refused
            .as_deref()
            .is_some_and(|h| h.starts_with("HTTP/1.1 404")),
        "{refused:?}"
    );

    let mut ws = WebSocket::open(server.http, "/live/ws.flv").expect("upgraded");
    let (opcode, header) = ws.next_message().expect("the FLV header");
    assert_eq!(opcode, BINARY);
    assert_eq!(&header[..3], b"FLV", "{header:?}");
    let mut file = header;
    let mut tags = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let (opcode, tag) = ws.next_message().expect("the stream goes on");
        assert_eq!(opcode, BINARY);
        // One whole tag: an 11-byte header, its data, then its 4-byte size.
        let data = u32::from_be_bytes([0, tag[1], tag[2], tag[3]]) as usize;
        assert_eq!(tag.len(), 11 + data + 4, "message {tags} is not one tag");
        file.extend_from_slice(&tag);
        tags += 1;
    }
    assert!(tags > 100, "{tags} tags in 3 s");
    // Counted as a player of its protocol.
    let ws_viewers = r#"ferrolive_protocol_viewers{protocol="ws-flv"}"#;
    assert_eq!(server.metric(ws_viewers), 1);
    assert_eq!(server.metric("ferrolive_viewers"), 1);

    ws.send(PING, b"still there?");
    let pong = loop {
        match ws.next_message().expect("an answer to the ping") {
            (BINARY, tag) => file.extend_from_slice(&tag),
            other => break other,
        }
    };
    assert_eq!(pong, (PONG, b"still there?".to_vec()));
    ws.send(CLOSE, &1000u16.to_be_bytes());
    let closed = loop {
        match ws.next_message() {
            Some((BINARY, _)) => continue,
            other => break other,
        }
    };
    assert_eq!(closed, Some((CLOSE, 1000u16.to_be_bytes().to_vec())));
    assert_eq!(ws.next_message(), None, "the server closes after its close");
    assert_eq!(server.metric(ws_viewers), 0);

    let path = temp_dir("ws-flv").join("received.flv");
    std::fs::write(&path, &file).unwrap();
    let decoded = decode(path.to_str().unwrap(), 100.0);
    assert!(
        decoded.video >= 50 && decoded.audio >= 50 && decoded.errors.is_empty(),
        "{decoded:?}"
    );
}

/// HTTP-TS: `/live/ROOM.ts` is one continuous MPEG-TS that ffmpeg decodes, with video and
/// audio, or audio alone; it counts as a player of its protocol; a stream that is not live
/// is a 404.
#[test]
fn http_ts_plays_continuously() {
    require_ffmpeg();
    let server = Server::start(&[]);
    let _av = publish(&server.rtmp_url("ts"), Source::AudioVideo, 25, 0);
    let _audio = publish(&server.rtmp_url("radio"), Source::AudioOnly, 25, 0);
    server.wait_live("ts");
    server.wait_live("radio");
    let missing = http_get(server.http, "/live/nobody.ts").expect("an answer");
    assert_eq!(missing.status, 404);

    let url = format!("http://{}/live/ts.ts", server.http);
    let watching = std::thread::spawn({
        let http = server.http;
        move || {
            std::thread::sleep(Duration::from_millis(1500));
            let mut viewer = std::net::TcpStream::connect(http).unwrap();
            write!(viewer, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut text = String::new();
            let _ = viewer.read_to_string(&mut text);
            text
        }
    });
    let decoded = decode(&url, 4.0);
    assert!(
        decoded.video >= 60 && decoded.audio >= 60 && decoded.errors.is_empty(),
        "{decoded:?}"
    );
    let metrics = watching.join().unwrap();
    assert!(
        metrics.contains("ferrolive_protocol_viewers{protocol=\"http-ts\"} 1"),
        "{metrics}"
    );

    let radio = decode(&format!("http://{}/live/radio.ts", server.http), 3.0);
    assert!(
        radio.video == 0 && radio.audio >= 60 && radio.errors.is_empty(),
        "{radio:?}"
    );
}

/// HTTP-fMP4: `/live/ROOM.mp4` is one continuous fragmented MP4 (an init segment, then a
/// fragment per batch of frames) that ffmpeg decodes, counted as a player of its protocol.
#[test]
fn http_fmp4_plays_continuously() {
    require_ffmpeg();
    let server = Server::start(&[]);
    let _publisher = publish(&server.rtmp_url("mp4"), Source::AudioVideo, 25, 0);
    server.wait_live("mp4");
    let missing = http_get(server.http, "/live/nobody.mp4").expect("an answer");
    assert_eq!(missing.status, 404);
    let watching = std::thread::spawn({
        let http = server.http;
        move || {
            std::thread::sleep(Duration::from_millis(1500));
            let body = http_get(http, "/metrics").expect("metrics").body;
            String::from_utf8_lossy(&body).into_owned()
        }
    });
    let decoded = decode(&format!("http://{}/live/mp4.mp4", server.http), 4.0);
    assert!(
        decoded.video >= 60 && decoded.audio >= 60 && decoded.errors.is_empty(),
        "{decoded:?}"
    );
    let metrics = watching.join().unwrap();
    assert!(
        metrics.contains("ferrolive_protocol_viewers{protocol=\"http-fmp4\"} 1"),
        "{metrics}"
    );
}
