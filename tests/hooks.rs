//! End-to-end HTTP hooks: a hook server of the test's own answers the node's `on_publish`
//! and `on_play` questions (allowing, refusing, answering too late, or not there at all)
//! while ffmpeg publishes and plays, and receives the notifications (`on_unpublish`,
//! `on_stop`, `on_record_done`, `on_relay`), every body signed.

use std::time::{Duration, Instant};

use media::token::HmacKey;
use serde_json::Value;
use testkit::*;

const SECRET: &str = "hook-secret-for-tests";
const SOON: Duration = Duration::from_secs(10);

fn body(call: &HookCall) -> Value {
    serde_json::from_str(&call.body).unwrap_or_else(|e| panic!("{e}: {}", call.body))
}

/// The call's signature is the HMAC-SHA256 of its body under [`SECRET`].
fn assert_signed(call: &HookCall) {
    let hex = (call.signature.as_deref())
        .and_then(|s| s.strip_prefix("sha256="))
        .unwrap_or_else(|| panic!("unsigned: {call:?}"));
    let tag: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap())
        .collect();
    assert!(
        HmacKey::new(SECRET.as_bytes()).verify(call.body.as_bytes(), &tag),
        "bad signature: {call:?}"
    );
}

/// A player's GET with its own User-Agent (HLS players are told apart by it).
fn get_as(server: &Server, path: &str, agent: &str) -> u16 {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUser-Agent: {agent}\r\nConnection: close\r\n\r\n"
    );
    http_request(server.http, &request).map_or(0, |r| r.status)
}

#[test]
fn publishes_and_plays_ask_the_hooks_and_their_ends_are_told() {
    require_ffmpeg();
    let hooks = HookServer::start();
    let record = temp_dir("hooks-record");
    let (on_publish, on_play) = (hooks.url("on_publish"), hooks.url("on_play"));
    let (on_unpublish, on_stop) = (hooks.url("on_unpublish"), hooks.url("on_stop"));
    let on_record_done = hooks.url("on_record_done");
    let server = Server::start(&[
        "--on-publish",
        &on_publish,
        "--on-play",
        &on_play,
        "--on-unpublish",
        &on_unpublish,
        "--on-stop",
        &on_stop,
        "--on-record-done",
        &on_record_done,
        "--hook-secret",
        SECRET,
        "--record-dir",
        record.to_str().unwrap(),
        "--hls-segment",
        "1",
    ]);

    // Allowed: the publish goes on, and the hook heard of the room, the client and the query.
    let url = format!("{}?tag=first", server.rtmp_url("show"));
    let (accepted, mut publisher) = publish_accepted(&url, Duration::from_secs(2));
    assert!(accepted, "publish allowed by the hook");
    server.wait_live("show");
    let asked = hooks.wait_for("on_publish", "show", SOON).unwrap();
    assert_signed(&asked);
    let asked = body(&asked);
    assert_eq!(asked["stream"], "live/show");
    assert_eq!(asked["protocol"], "rtmp");
    assert_eq!(asked["query"], "tag=first");
    assert_eq!(asked["ip"], "127.0.0.1");

    // Each protocol asks on_play with the player's query, and plays once allowed.
    let flv = format!("{}?token=abc", server.flv_url("show"));
    assert!(decode(&flv, 1.5).video > 0, "HTTP-FLV plays");
    let asked = hooks.wait_for("on_play", "http-flv", SOON).unwrap();
    assert_signed(&asked);
    assert_eq!(body(&asked)["query"], "token=abc");
    // The player left: on_stop tells so, for the same protocol.
    let stopped = hooks
        .wait_for("on_stop", "http-flv", SOON)
        .expect("on_stop");
    assert_eq!(body(&stopped)["stream"], "live/show");
    assert!(
        decode(&server.rtmp_url("show"), 1.5).video > 0,
        "RTMP plays"
    );
    assert!(hooks.wait_for("on_play", "\"rtmp\"", SOON).is_some());
    // An HLS player asks once, at its first playlist, not at every reload.
    for _ in 0..3 {
        assert_eq!(get_as(&server, "/live/show.m3u8", "player-1"), 200);
    }
    assert_eq!(get_as(&server, "/live/show/index.m3u8", "player-1"), 200);
    assert_eq!(
        (hooks.calls("on_play").iter())
            .filter(|c| c.body.contains("\"hls\""))
            .count(),
        1,
        "{:?}",
        hooks.calls("on_play")
    );

    // Refused: every protocol gets what its players understand.
    hooks.answer("on_play", 403, Duration::ZERO);
    assert_eq!(get_as(&server, "/live/show.flv", "refused"), 403);
    assert_eq!(get_as(&server, "/live/show.ts", "refused"), 403);
    assert_eq!(get_as(&server, "/live/show.m3u8", "player-2"), 403);
    assert_eq!(get_as(&server, "/live/show/index.m3u8", "player-3"), 403);
    let mut rtmp = RtmpClient::connect(server.rtmp, "live");
    rtmp.play("show");
    assert!(rtmp.wait_for("NetStream.Play.Failed"), "RTMP play refused");
    assert!(decode(&server.flv_url("show"), 1.0).video == 0);
    // The player already let in plays on.
    assert_eq!(get_as(&server, "/live/show.m3u8", "player-1"), 200);

    hooks.answer("on_publish", 403, Duration::ZERO);
    let (accepted, _refused) = publish_accepted(&server.rtmp_url("other"), Duration::from_secs(2));
    assert!(!accepted, "publish refused by the hook");

    // The publish ends: on_unpublish, and the recording's file is finished.
    publisher.kill();
    let ended = hooks
        .wait_for("on_unpublish", "live/show", SOON)
        .expect("on_unpublish");
    assert_signed(&ended);
    let done = hooks
        .wait_for("on_record_done", "live/show", SOON)
        .expect("on_record_done");
    let file = body(&done)["file"].as_str().unwrap().to_owned();
    assert!(
        file.starts_with(record.to_str().unwrap()) && file.ends_with(".mp4"),
        "{file}"
    );
    assert!(std::fs::metadata(&file).unwrap().len() > 0);
    // Nothing was told of the refused publish.
    assert!(hooks
        .wait_for("on_unpublish", "live/other", Duration::ZERO)
        .is_none());
    let _ = std::fs::remove_dir_all(record);
}

#[test]
fn unanswered_hooks_allow_or_refuse_as_configured() {
    require_ffmpeg();
    let hooks = HookServer::start();
    hooks.answer("on_publish", 200, Duration::from_secs(5));
    let slow = hooks.url("on_publish");
    let down = format!("http://127.0.0.1:{}/on_play", free_port());
    let args = [
        "--hook-timeout",
        "0.5",
        "--on-publish",
        &slow,
        "--on-play",
        &down,
    ];

    // Closed (the default): a hook past its timeout, or down, refuses.
    let closed = Server::start(&args);
    let started = Instant::now();
    let (accepted, _refused) = publish_accepted(&closed.rtmp_url("late"), Duration::from_secs(3));
    assert!(!accepted, "a hook past its timeout refuses");
    assert!(started.elapsed() < Duration::from_secs(4));
    hooks.answer("on_publish", 200, Duration::ZERO);
    let (accepted, _publisher) = publish_accepted(&closed.rtmp_url("late"), Duration::from_secs(2));
    assert!(accepted, "the same publish, answered in time");
    closed.wait_live("late");
    assert_eq!(get_as(&closed, "/live/late.flv", "x"), 403, "on_play down");

    // Open: both let the client in.
    hooks.answer("on_publish", 200, Duration::from_secs(5));
    let mut open_args = args.to_vec();
    open_args.push("--hook-fail-open");
    let open = Server::start(&open_args);
    let (accepted, _publisher) = publish_accepted(&open.rtmp_url("late"), Duration::from_secs(3));
    assert!(accepted, "a hook past its timeout allows when failing open");
    open.wait_live("late");
    assert!(decode(&open.flv_url("late"), 1.0).video > 0, "on_play down");
    assert!(closed.metric("ferrolive_hook_unanswered_total") >= 2);
}

#[test]
fn relay_state_changes_are_told() {
    require_ffmpeg();
    let hooks = HookServer::start();
    let target = Server::start(&[]);
    let rule = format!("live/*=rtmp://{}/live/{{room}}", target.rtmp);
    let source = Server::start(&["--relay-push", &rule, "--on-relay", &hooks.url("on_relay")]);
    let _publisher = publish(&source.rtmp_url("relayed"), Source::AudioVideo, 25, 0);
    let live = hooks
        .wait_for("on_relay", "\"state\":\"live\"", SOON)
        .expect("the forward went live");
    let live = body(&live);
    assert_eq!(
        (&live["relay"], &live["stream"]),
        (&Value::from("forward"), &Value::from("live/relayed"))
    );
    drop(target);
    assert!(
        hooks
            .wait_for("on_relay", "\"state\":\"retrying\"", SOON)
            .is_some(),
        "the forward's failure is told"
    );
}
