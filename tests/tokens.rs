//! End-to-end signed play URLs: with `--play-secret`, every play needs `?token=` minted by
//! the control API (or signed with the same secret). Valid, expired, tampered, another
//! room's and another address's tokens, on every protocol of a standalone node, on an
//! edge (which checks tokens itself and signs its own pull) and on the origin behind it.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use media::token::PlaySecret;
use serde_json::Value;
use testkit::*;

const SECRET: &str = "play-secret-for-tests";

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The status of `GET path` on the player port (for a stream, once its head is in).
fn status(server: &Server, path: &str) -> u16 {
    http_get(server.http, path).map_or(0, |r| r.status)
}

/// Tokens that must not play `live/{room}`.
fn bad_tokens(room: &str, valid: &str) -> Vec<(&'static str, String)> {
    let secret = PlaySecret::new(SECRET.as_bytes());
    let stream = format!("live/{room}");
    let elsewhere: IpAddr = "192.0.2.1".parse().unwrap();
    let mut tampered = valid.to_owned().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    vec![
        ("none", String::new()),
        ("expired", secret.sign(&stream, now_s() - 5, None)),
        ("tampered", String::from_utf8(tampered).unwrap()),
        (
            "another room",
            secret.sign("live/other", now_s() + 600, None),
        ),
        (
            "another address",
            secret.sign(&stream, now_s() + 600, Some(elsewhere)),
        ),
        (
            "another secret",
            PlaySecret::new(b"wrong").sign(&stream, now_s() + 600, None),
        ),
    ]
}

/// A token minted by the control API of `server`.
fn minted(server: &Server, room: &str) -> String {
    let (status, body) = server.api("POST", &format!("/api/v1/rooms/{room}/play-token"), None);
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["token"].as_str().unwrap().to_owned()
}

#[test]
fn every_protocol_needs_a_valid_token() {
    require_ffmpeg();
    let server = Server::start(&["--play-secret", SECRET, "--hls-segment", "1"]);
    let _publisher = publish(&server.rtmp_url("show"), Source::AudioVideo, 25, 0);
    server.wait_live("show");
    let token = minted(&server, "show");
    let paths = [
        "/live/show.flv",
        "/live/show.ts",
        "/live/show.mp4",
        "/live/show.m3u8",
        "/live/show/index.m3u8",
    ];
    for path in paths {
        for (why, bad) in bad_tokens("show", &token) {
            let asked = format!("{path}?token={bad}");
            assert_eq!(status(&server, &asked), 403, "{why}: {asked}");
        }
        let asked = format!("{path}?token={token}");
        assert_eq!(status(&server, &asked), 200, "{asked}");
    }
    // HLS: the playlists carry the token into every URI they list, which need it.
    let playlist = http_get(server.http, &format!("/live/show.m3u8?token={token}")).unwrap();
    let text = String::from_utf8_lossy(&playlist.body).into_owned();
    let segment = text
        .lines()
        .find(|l| l.ends_with(&format!("?token={token}")))
        .unwrap();
    assert_eq!(status(&server, &format!("/live/{segment}")), 200, "{text}");
    let bare = segment.split('?').next().unwrap();
    assert_eq!(status(&server, &format!("/live/{bare}")), 403);
    let ll = http_get(server.http, &format!("/live/show/index.m3u8?token={token}")).unwrap();
    let text = String::from_utf8_lossy(&ll.body).into_owned();
    let uris: Vec<&str> = text
        .lines()
        .filter_map(|l| match l.split_once("URI=\"") {
            Some((_, rest)) => rest.split('"').next(),
            None => (!l.starts_with('#') && !l.is_empty()).then_some(l),
        })
        .collect();
    assert!(
        uris.len() > 3 && uris.iter().all(|u| u.ends_with(&format!("?token={token}"))),
        "{text}"
    );
    let init = uris.iter().find(|u| u.starts_with("init")).unwrap();
    assert_eq!(status(&server, &format!("/live/show/{init}")), 200);
    let bare = init.split('?').next().unwrap();
    assert_eq!(status(&server, &format!("/live/show/{bare}")), 403);
    // Real players: ffmpeg over RTMP and HTTP-FLV with the token; without it, nothing.
    let rtmp = format!("rtmp://{}/live/show", server.rtmp);
    let flv = format!("http://{}/live/show.flv", server.http);
    for url in [&rtmp, &flv] {
        let played = decode(&format!("{url}?token={token}"), 2.0);
        assert!(played.video > 20, "{url}: {played:?}");
        let refused = decode(url, 2.0);
        assert_eq!(refused.video, 0, "{url} without a token: {refused:?}");
    }
}

/// An edge checks tokens with the shared secret and signs its own pull; the origin refuses
/// a pull without a token.
#[test]
fn an_edge_checks_tokens_and_its_origin_wants_one_too() {
    require_ffmpeg();
    let redis = Redis::start();
    let extra = ["--rtmp-noauth", "--play-secret", SECRET];
    let node = |role: &str, id: &str| Server::in_cluster(role, id, &redis.url(), &extra);
    let origin = node("origin", "origin-t");
    let edge = node("edge", "edge-t");
    let _publisher = publish(&origin.rtmp_url("gated"), Source::AudioVideo, 25, 0);
    origin.wait_live("gated");
    let token = PlaySecret::new(SECRET.as_bytes()).sign("live/gated", now_s() + 600, None);
    for (why, bad) in bad_tokens("gated", &token) {
        let asked = format!("/live/gated.flv?token={bad}");
        assert_eq!(status(&edge, &asked), 403, "{why}");
    }
    let played = decode(
        &format!("http://{}/live/gated.flv?token={token}", edge.http),
        2.0,
    );
    assert!(played.video > 20, "{played:?}");
    // Pulling as an edge does not get around the token.
    assert_eq!(status(&origin, "/live/gated.flv?segment_marks=1"), 403);
}
