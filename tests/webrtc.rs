//! WebRTC playback (WHEP) in Chromium: a standalone node, an origin and an edge answer a
//! browser's offer, and the `<video>` presents the stream's pictures (H.264 passed through,
//! DTLS-SRTP over the node's one UDP socket, on loopback) and Chromium decodes its sound
//! (the RTMP publisher's AAC, transcoded to Opus once per stream); ffmpeg's AV1 plays as
//! AV1 from an edge, and HEVC reaches a viewer that offers it. Driven by Playwright
//! (`tests/browser/whep.mjs`), with Debian's `chromium`; see tests/browser.rs for the
//! set-up.
//!
//! Also, without a browser: the signalling's refusals (no stream, not SDP, a session that
//! is not there) and its CORS preflight.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::browser::{require_browser, run_script};
use testkit::{http_request, publish, publish_with, LossyUdpRelay, Redis, Server, Source};

/// How one WHEP playback went (see `tests/browser/whep.mjs`).
struct Report(Value);

impl Report {
    fn number(&self, field: &str) -> f64 {
        self.0[field].as_f64().unwrap_or(0.0)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Play `url` (a WHEP endpoint) in Chromium for `seconds`, then leave as `leave` says
/// (`delete`: DELETE the session; `vanish`: close the browser without a word).
fn play_whep(url: &str, seconds: u32, leave: &str) -> Report {
    play_whep_sessions(url, seconds, leave, 1)
}

/// [`play_whep`] with `sessions` connections to the stream in one page (the report's
/// `others` are the second and later).
fn play_whep_sessions(url: &str, seconds: u32, leave: &str, sessions: u32) -> Report {
    let seconds = seconds.to_string();
    let sessions = sessions.to_string();
    let line = run_script(
        "whep.mjs",
        &[
            "--url",
            url,
            "--seconds",
            &seconds,
            "--leave",
            leave,
            "--sessions",
            &sessions,
        ],
    );
    Report(serde_json::from_str(&line).expect("whep.mjs prints one JSON report"))
}

/// Over 10 s of a 25 fps stream, Chromium presents more than 30 pictures, of the stream's
/// size, and the answer was a 201 with the session's resource.
fn assert_played(report: &Report, what: &str) {
    eprintln!("{what}: {report}");
    assert_eq!(report.number("status"), 201.0, "{what}: {report}");
    let location = report.0["location"].as_str().unwrap_or_default();
    assert!(
        location.starts_with("/live/") && location.contains("/whep/"),
        "{what}: {report}"
    );
    assert!(report.number("presentedFrames") > 30.0, "{what}: {report}");
    assert!(report.number("framesDecoded") > 30.0, "{what}: {report}");
    assert_eq!(
        (report.number("width"), report.number("height")),
        (320.0, 240.0),
        "{what}: {report}"
    );
}

/// Chromium decoded sound: Opus packets, samples out of them, and not silence but the
/// publisher's 440 Hz sine (heard through WebAudio).
fn assert_heard(report: &Report, what: &str) {
    let audio = &report.0["audio"];
    let number = |field: &str| audio[field].as_f64().unwrap_or(0.0);
    assert_eq!(
        audio["codec"].as_str(),
        Some("audio/opus"),
        "{what}: {report}"
    );
    assert!(number("packetsReceived") > 100.0, "{what}: {report}");
    assert!(number("samplesReceived") > 48_000.0, "{what}: {report}");
    let heard = &report.0["heard"];
    // ffmpeg's sine has an amplitude of 1/8: an RMS of 0.088.
    let rms = heard["loudestRms"].as_f64().unwrap_or(0.0);
    assert!(rms > 0.03, "{what}: silence: {report}");
    let hz = heard["peakHz"].as_f64().unwrap_or(0.0);
    assert!((hz - 440.0).abs() < 20.0, "{what}: {hz} Hz: {report}");
}

/// The node stops counting its WebRTC viewer within `within`; how long that took.
fn assert_session_ends(server: &Server, within: Duration, what: &str) -> Duration {
    let viewers = || server.metric("ferrolive_protocol_viewers{protocol=\"webrtc\"}");
    let start = Instant::now();
    while viewers() != 0 {
        assert!(
            start.elapsed() < within,
            "{what}: still counted after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

#[test]
fn chromium_plays_whep_from_a_standalone_node() {
    let _one_at_a_time = require_browser();
    let server = Server::start(&[]);
    let _publisher = publish(&server.rtmp_url("rtc"), Source::AudioVideo, 25, 0);
    server.wait_live("rtc");
    let url = format!("http://{}/live/rtc/whep", server.http);
    let report = play_whep(&url, 10, "delete");
    assert_played(&report, "standalone");
    assert_heard(&report, "standalone");
    // The DELETE ended the session at once.
    assert_eq!(report.number("deleteStatus"), 200.0, "{report}");
    assert_session_ends(&server, Duration::from_secs(2), "after DELETE");
    // A viewer that vanishes without a DELETE is let go when its consent checks stop
    // (str0m's ICE-lite gives up on a pair 15 s after its last binding request).
    let report = play_whep(&url, 5, "vanish");
    assert!(report.number("presentedFrames") > 30.0, "{report}");
    let after = assert_session_ends(&server, Duration::from_secs(35), "after vanishing");
    eprintln!("a vanished viewer's session ended {after:?} after its browser closed");
}

#[test]
fn chromium_plays_whep_from_an_origin_and_an_edge_that_pulls_on_the_offer() {
    let _one_at_a_time = require_browser();
    let redis = Redis::start();
    let node =
        |role: &str, id: &str| Server::in_cluster(role, id, &redis.url(), &["--rtmp-noauth"]);
    let origin = node("origin", "origin-w");
    let edge = node("edge", "edge-w");
    // ffmpeg's RTMP: H.264 and AAC (44.1 kHz), which WebRTC gets as Opus (48 kHz).
    let _publisher = publish(&origin.rtmp_url("far"), Source::AudioVideo, 25, 0);
    origin.wait_live("far");
    // Nobody watches on the edge before the origin's viewer is done: the edge's offer
    // starts its pull.
    for (server, what) in [(&origin, "origin"), (&edge, "edge")] {
        let url = format!("http://{}/live/far/whep", server.http);
        let report = play_whep(&url, 6, "delete");
        assert_played(&report, what);
        assert_heard(&report, what);
        assert_eq!(report.number("deleteStatus"), 200.0, "{what}: {report}");
        assert_session_ends(server, Duration::from_secs(2), what);
        // The last session gone, so is the stream's feed and its transcoder.
        let start = Instant::now();
        while server.metric("ferrolive_webrtc_feeds") != 0 {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "{what}: feed left running"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(server.metric("ferrolive_webrtc_audio_transcoders"), 0);
    }
}

/// A viewer behind a lossy link keeps playing: one datagram in 25 of what the node sends
/// it is lost (by the test's own UDP relay: the fault proxy carries only TCP), Chromium
/// asks again for what it lost (NACK), and the node resends it from its history. The GOP
/// is 10 s, so a picture spoiled by a loss would otherwise stay so until the next keyframe.
#[test]
fn a_viewer_behind_a_lossy_link_recovers_through_nacks() {
    let _one_at_a_time = require_browser();
    // The node answers with 127.0.0.2, where the relay listens on the node's own port.
    let port = testkit::free_udp_port();
    let bound: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = Server::start(&[
        "--webrtc-udp-addr",
        &bound.to_string(),
        "--webrtc-public-ip",
        "127.0.0.2",
    ]);
    let relay = LossyUdpRelay::start(format!("127.0.0.2:{port}").parse().unwrap(), bound, 25);
    let _publisher = publish(&server.rtmp_url("lossy"), Source::AudioVideo, 250, 0);
    server.wait_live("lossy");
    let url = format!("http://{}/live/lossy/whep", server.http);
    let report = play_whep(&url, 10, "delete");
    assert_played(&report, "lossy");
    let video = &report.0["video"];
    let field = |name: &str| video[name].as_f64().unwrap_or(0.0);
    eprintln!("the relay lost {} datagrams", relay.lost());
    assert!(relay.lost() > 40, "{report}");
    assert!(field("nackCount") > 10.0, "{report}");
    // Nearly every picture of the 10 s decoded, and none stayed frozen for long.
    assert!(report.number("framesDecoded") > 200.0, "{report}");
    assert!(field("totalFreezesDuration") < 1.0, "{report}");
}

/// Three sessions of one stream are fed by one packetizer and one AAC transcoder, and
/// each decodes pictures and sound.
#[test]
fn sessions_of_one_stream_share_its_packetizer_and_transcoder() {
    let _one_at_a_time = require_browser();
    let server = Server::start(&[]);
    let _publisher = publish(&server.rtmp_url("many"), Source::AudioVideo, 25, 0);
    server.wait_live("many");
    let url = format!("http://{}/live/many/whep", server.http);
    // While the browser plays, the most feeds and transcoders the node ran at once.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let peaks = {
        let (watching, http) = (watching.clone(), server.http);
        std::thread::spawn(move || {
            let metric = |text: &str, name: &str| -> u64 {
                (text.lines())
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                    .unwrap_or(0)
            };
            let (mut feeds, mut transcoders, mut viewers) = (0, 0, 0);
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(answer) = testkit::http_get(http, "/metrics") {
                    let text = String::from_utf8_lossy(&answer.body);
                    feeds = feeds.max(metric(&text, "ferrolive_webrtc_feeds"));
                    transcoders =
                        transcoders.max(metric(&text, "ferrolive_webrtc_audio_transcoders"));
                    viewers = viewers.max(metric(
                        &text,
                        "ferrolive_protocol_viewers{protocol=\"webrtc\"}",
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (feeds, transcoders, viewers)
        })
    };
    let report = play_whep_sessions(&url, 6, "delete", 3);
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let (feeds, transcoders, viewers) = peaks.join().unwrap();
    assert_played(&report, "first session");
    assert_heard(&report, "first session");
    let others = report.0["others"].as_array().cloned().unwrap_or_default();
    assert_eq!(others.len(), 2, "{report}");
    for other in &others {
        assert!(
            other["framesDecoded"].as_f64().unwrap_or(0.0) > 30.0,
            "{report}"
        );
        assert!(
            other["audioSamples"].as_f64().unwrap_or(0.0) > 0.0,
            "{report}"
        );
    }
    assert_eq!(viewers, 3, "three sessions counted");
    assert_eq!(
        (feeds, transcoders),
        (1, 1),
        "one feed, one transcoder: {report}"
    );
    assert_session_ends(&server, Duration::from_secs(2), "after DELETE");
}

/// A stream whose audio is Opus (published over RTSP: ffmpeg 5.1 has no Opus in FLV) plays
/// with its sound: Chromium receives Opus packets and decodes samples from them.
#[test]
fn chromium_gets_the_opus_of_a_stream_that_has_it() {
    let _one_at_a_time = require_browser();
    let server = Server::start(&[]);
    let output = [
        "-c:a",
        "libopus",
        "-ar",
        "48000",
        "-f",
        "rtsp",
        "-rtsp_transport",
        "tcp",
    ];
    let _publisher = publish_with(&server.rtsp_url("opus"), Source::AudioVideo, 25, 0, &output);
    server.wait_live("opus");
    let report = play_whep(
        &format!("http://{}/live/opus/whep", server.http),
        8,
        "delete",
    );
    assert_played(&report, "opus");
    let audio = &report.0["audio"];
    assert_eq!(audio["codec"].as_str(), Some("audio/opus"), "{report}");
    // 20 ms packets: 50 a second.
    assert!(
        audio["packetsReceived"].as_f64().unwrap_or(0.0) > 100.0,
        "{report}"
    );
}

/// The signalling without a browser: a stream that is not live is 404, an offer that is
/// not `application/sdp` 415, and a session that is not there 404; the preflight allows
/// the POST and the DELETE from any origin; with a play secret, an offer without a token
/// is 403.
#[test]
fn whep_signalling_refuses_what_it_cannot_answer() {
    testkit::require_ffmpeg();
    let server = Server::start(&[]);
    let post_to = |server: &Server, path: &str, content_type: &str, body: &str| {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        http_request(server.http, &request).expect("an answer")
    };
    let post =
        |path: &str, content_type: &str, body: &str| post_to(&server, path, content_type, body);
    assert_eq!(
        post("/live/none/whep", "application/sdp", "v=0\r\n").status,
        404
    );
    let _publisher = publish(&server.rtmp_url("sig"), Source::AudioVideo, 25, 0);
    server.wait_live("sig");
    assert_eq!(post("/live/sig/whep", "text/plain", "v=0\r\n").status, 415);
    assert_eq!(
        post("/live/sig/whep", "application/sdp", "not sdp").status,
        400
    );
    let delete = "DELETE /live/sig/whep/0123 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(http_request(server.http, delete).unwrap().status, 404);
    let preflight = "OPTIONS /live/sig/whep HTTP/1.1\r\nHost: x\r\nOrigin: http://a.example\r\n\
        Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n";
    let answer = http_request(server.http, preflight).unwrap();
    let allowed = answer
        .head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("access-control-allow-methods")
                .then(|| value.to_owned())
        })
        .unwrap_or_default();
    assert!(
        allowed.contains("POST") && allowed.contains("DELETE"),
        "{allowed}"
    );
    // A body is read off a keep-alive connection whatever the answer: the request after
    // it is answered as the next one.
    let mut socket = std::net::TcpStream::connect(server.http).unwrap();
    let offer = "v=0\r\n";
    let pipelined = format!(
        "POST /live/none/whep HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{offer}GET /healthz HTTP/1.1\r\nHost: x\r\n\
         Connection: close\r\n\r\n",
        offer.len()
    );
    socket.write_all(pipelined.as_bytes()).unwrap();
    let mut answers = String::new();
    socket.read_to_string(&mut answers).unwrap();
    let statuses: Vec<&str> = answers
        .lines()
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .collect();
    assert_eq!(
        statuses,
        ["HTTP/1.1 404 Not Found", "HTTP/1.1 200 OK"],
        "{answers}"
    );
    let guarded = Server::start(&["--play-secret", "s3cret"]);
    let refused = post_to(&guarded, "/live/sig/whep", "application/sdp", "v=0\r\n");
    assert_eq!(refused.status, 403);
}

/// A WHEP viewer made of str0m (for what a browser cannot be told to do or does not
/// take), with its socket and the video line it offered, answered by `server` for `room`.
struct Str0mViewer {
    rtc: str0m::Rtc,
    socket: std::net::UdpSocket,
    local: SocketAddr,
    video: str0m::media::Mid,
}

impl Str0mViewer {
    /// Offer to receive video in the codecs `codecs` enables, and take the answer.
    fn offer(
        server: &Server,
        room: &str,
        codecs: impl FnOnce(str0m::RtcConfig) -> str0m::RtcConfig,
    ) -> Str0mViewer {
        use str0m::change::SdpAnswer;
        use str0m::media::{Direction, MediaKind};
        use str0m::{Candidate, Rtc};

        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = socket.local_addr().unwrap();
        let config = Rtc::builder()
            .set_rtp_mode(true)
            .set_crypto_provider(std::sync::Arc::new(str0m::crypto::from_feature_flags()))
            .clear_codecs();
        let mut rtc = codecs(config).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut change = rtc.sdp_api();
        let video = change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let offer = offer.to_sdp_string();
        let request = format!(
            "POST /live/{room}/whep HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{offer}",
            offer.len()
        );
        let answer = http_request(server.http, &request).expect("an answer");
        assert_eq!(
            answer.status,
            201,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        let answer = SdpAnswer::from_sdp_string(&String::from_utf8_lossy(&answer.body)).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        Str0mViewer {
            rtc,
            socket,
            local,
            video,
        }
    }

    /// Run the connection for `seconds`, handing each RTP packet to `packet`.
    fn receive(&mut self, seconds: u64, mut packet: impl FnMut(&str0m::rtp::RtpPacket)) {
        use str0m::net::{Protocol, Receive};
        use str0m::{Event, Input, Output};

        let started = Instant::now();
        let mut buf = vec![0u8; 2048];
        while started.elapsed() < Duration::from_secs(seconds) {
            let wake = loop {
                match self.rtc.poll_output().unwrap() {
                    Output::Timeout(at) => break at,
                    Output::Transmit(out) => {
                        let _ = self.socket.send_to(&out.contents, out.destination);
                    }
                    Output::Event(Event::RtpPacket(rtp)) => packet(&rtp),
                    Output::Event(_) => {}
                }
            };
            let timeout = wake
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), Duration::from_millis(50));
            self.socket.set_read_timeout(Some(timeout)).unwrap();
            let input = match self.socket.recv_from(&mut buf) {
                Ok((len, source)) => Input::Receive(
                    Instant::now(),
                    Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.local,
                        contents: buf[..len].try_into().unwrap(),
                    },
                ),
                Err(_) => Input::Timeout(Instant::now()),
            };
            self.rtc.handle_input(input).unwrap();
        }
    }
}

/// AV1 passes through to a browser that takes it: ffmpeg's AV1 (libaom), published to an
/// origin over Enhanced RTMP, plays in Chromium from an edge, decoded as AV1.
#[test]
fn chromium_plays_an_av1_stream_from_an_edge() {
    let _one_at_a_time = require_browser();
    testkit::require_ffmpeg();
    let redis = Redis::start();
    let node =
        |role: &str, id: &str| Server::in_cluster(role, id, &redis.url(), &["--rtmp-noauth"]);
    let origin = node("origin", "origin-a");
    let edge = node("edge", "edge-a");
    let _publisher = testkit::publish_av1(origin.rtmp, "av1", 25);
    origin.wait_live("av1");
    let report = play_whep(&format!("http://{}/live/av1/whep", edge.http), 8, "delete");
    assert_played(&report, "AV1 from an edge");
    assert_eq!(
        report.0["video"]["codec"].as_str(),
        Some("video/AV1"),
        "{report}"
    );
}

/// HEVC passes through to a viewer that offers it (Chromium here does not: it decodes
/// HEVC only in hardware), so the viewer is str0m: ffmpeg's H.265 (x265, published over
/// RTSP) arrives with the H.265 payload type, keyframes led by an aggregation packet of
/// VPS, SPS and PPS, and the packets make whole pictures again.
#[test]
fn an_hevc_stream_reaches_a_viewer_that_offers_hevc() {
    use media::rtp::{NalFormat, RtpHeader, RtpPacket, VideoDepacketizer};

    testkit::require_ffmpeg();
    let server = Server::start(&[]);
    let _publisher = testkit::publish_hevc(&server.rtsp_url("hevc"), Source::VideoOnly);
    server.wait_live("hevc");
    let mut viewer = Str0mViewer::offer(&server, "hevc", |config| {
        config.enable_h264(true).enable_h265(true)
    });
    let hevc = viewer
        .rtc
        .codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == str0m::format::Codec::H265)
        .map(|p| *p.pt())
        .unwrap();
    let mut depacketizer = VideoDepacketizer::new(NalFormat::Hevc);
    let (mut pictures, mut keyframes, mut payload_types) = (Vec::new(), 0, Vec::new());
    viewer.receive(4, |rtp| {
        if !payload_types.contains(&*rtp.header.payload_type) {
            payload_types.push(*rtp.header.payload_type);
        }
        // An aggregation packet (type 48) of the parameter sets leads each keyframe.
        if rtp.payload.first().is_some_and(|b| (b >> 1) & 0x3f == 48) {
            keyframes += 1;
        }
        // As the node's own RTSP ingest reads it.
        let mut packet = Vec::new();
        RtpHeader {
            marker: rtp.header.marker,
            payload_type: *rtp.header.payload_type,
            sequence: rtp.header.sequence_number,
            timestamp: rtp.header.timestamp,
            ssrc: *rtp.header.ssrc,
        }
        .write(&mut packet);
        packet.extend_from_slice(&rtp.payload);
        let packet = RtpPacket::parse(packet.into()).unwrap();
        depacketizer.push(&packet, &mut pictures);
    });
    assert_eq!(payload_types, [hevc], "every packet is H.265");
    assert!(keyframes >= 1, "keyframes: {keyframes}");
    assert!(pictures.len() > 50, "pictures: {}", pictures.len());
}

/// A viewer's keyframe request (PLI) is answered from the GOP cache, not by waiting for the
/// publisher's next keyframe: with a 10 s GOP, the keyframe comes again within half a
/// second, its RTP timestamp one tick after a picture already sent. And packets the
/// viewer lost and NACKed are sent again: every sequence number arrives. The viewer is
/// str0m (a browser cannot be told to send a PLI or to lose packets), over the node's
/// real UDP socket.
#[test]
fn a_keyframe_request_and_nacks_are_answered() {
    use str0m::media::KeyframeRequestKind;
    use str0m::net::{Protocol, Receive};
    use str0m::{Event, Input, Output};

    testkit::require_ffmpeg();
    let server = Server::start(&[]);
    // A keyframe every 250 pictures: none but the GOP cache's in the test's few seconds.
    let _publisher = publish(&server.rtmp_url("pli"), Source::AudioVideo, 250, 0);
    server.wait_live("pli");
    let Str0mViewer {
        mut rtc,
        socket,
        local,
        video,
    } = Str0mViewer::offer(&server, "pli", |config| config.enable_h264(true));

    // Every video RTP timestamp seen, and when keyframes (a STAP-A with SPS and PPS
    // first) came with which timestamp.
    let mut times = std::collections::HashSet::new();
    let mut sequence_numbers = std::collections::BTreeSet::new();
    let mut datagrams = 0u64;
    let mut lost = 0;
    let mut keyframes: Vec<(Instant, u32)> = Vec::new();
    let mut asked: Option<Instant> = None;
    let started = Instant::now();
    let mut buf = vec![0u8; 2048];
    while started.elapsed() < Duration::from_secs(4) {
        let wake = loop {
            match rtc.poll_output().unwrap() {
                Output::Timeout(at) => break at,
                Output::Transmit(out) => {
                    let _ = socket.send_to(&out.contents, out.destination);
                }
                Output::Event(Event::RtpPacket(packet)) => {
                    sequence_numbers.insert(*packet.seq_no);
                    let time = packet.header.timestamp;
                    times.insert(time);
                    if packet.payload.first().is_some_and(|b| b & 0x1f == 24) {
                        keyframes.push((Instant::now(), time));
                    }
                }
                Output::Event(_) => {}
            }
        };
        // A second and a half into the picture, ask once for a keyframe.
        if asked.is_none() && times.len() > 25 && started.elapsed() > Duration::from_millis(1500) {
            let mut api = rtc.direct_api();
            let stream = api.stream_rx_by_mid(video, None).expect("a video stream");
            stream.request_keyframe(KeyframeRequestKind::Pli);
            asked = Some(Instant::now());
            continue;
        }
        let timeout = wake
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        socket.set_read_timeout(Some(timeout)).unwrap();
        let input = match socket.recv_from(&mut buf) {
            // Lose every 40th RTP packet (not RTCP: RFC 5761's payload types) in the first
            // second of the picture, three in all.
            Ok((len, _))
                if len > 12
                    && buf[0] >> 6 == 2
                    && !(64..96).contains(&(buf[1] & 0x7f))
                    && !sequence_numbers.is_empty()
                    && lost < 3
                    && {
                        datagrams += 1;
                        datagrams.is_multiple_of(40)
                    } =>
            {
                lost += 1;
                continue;
            }
            Ok((len, source)) => Input::Receive(
                Instant::now(),
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: local,
                    contents: buf[..len].try_into().unwrap(),
                },
            ),
            Err(_) => Input::Timeout(Instant::now()),
        };
        rtc.handle_input(input).unwrap();
    }
    let asked = asked.expect("pictures came, and a PLI went");
    // The GOP cache's keyframe started the session; the answer is the second keyframe.
    assert!(keyframes.len() >= 2, "keyframes: {keyframes:?}");
    let (at, time) = keyframes[1];
    let after = at.saturating_duration_since(asked);
    eprintln!("PLI answered after {after:?}");
    assert!(
        at >= asked && after < Duration::from_millis(500),
        "the answer came {after:?} after the PLI"
    );
    assert!(
        times.contains(&time.wrapping_sub(1)),
        "the answer's keyframe is 1 tick after a picture sent"
    );
    assert_eq!(keyframes.len(), 2, "one answer: {keyframes:?}");
    assert_eq!(server.metric("ferrolive_webrtc_keyframe_answers_total"), 1);
    // The lost packets came again (over RTX): no sequence number is missing.
    assert_eq!(lost, 3);
    let (first, last) = (sequence_numbers.first(), sequence_numbers.last());
    let (Some(first), Some(last)) = (first, last) else {
        panic!("no video packets");
    };
    let missing: Vec<u64> = (*first..=*last)
        .filter(|n| !sequence_numbers.contains(n))
        .collect();
    assert!(missing.is_empty(), "never received: {missing:?}");
}

/// WebRTC sessions count against the player port's caps: with two allowed from one
/// address, a third offer from it is refused 503 until one of the two ends.
#[test]
fn webrtc_sessions_from_one_address_are_capped() {
    use std::sync::Arc;
    use str0m::media::{Direction, MediaKind};
    use str0m::{Candidate, Rtc};

    testkit::require_ffmpeg();
    let server = Server::start(&["--http-max-connections-per-ip", "2"]);
    let _publisher = publish(&server.rtmp_url("capped"), Source::AudioVideo, 25, 0);
    server.wait_live("capped");
    // A receive-only offer, as any player makes (never connected: a session counts from
    // its answer on).
    let offer = || {
        let mut rtc = Rtc::builder()
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, _) = change.apply().unwrap();
        let offer = offer.to_sdp_string();
        let request = format!(
            "POST /live/capped/whep HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{offer}",
            offer.len()
        );
        http_request(server.http, &request).expect("an answer")
    };
    let first = offer();
    let statuses = [first.status, offer().status, offer().status];
    assert_eq!(statuses, [201, 201, 503]);
    let location = first
        .head
        .lines()
        .find_map(|l| l.strip_prefix("Location: "))
        .expect("a Location")
        .trim()
        .to_owned();
    let delete = format!("DELETE {location} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(http_request(server.http, &delete).unwrap().status, 200);
    // The session is let go as its task ends.
    let viewers = || server.metric("ferrolive_protocol_viewers{protocol=\"webrtc\"}");
    let start = Instant::now();
    while viewers() != 1 && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(offer().status, 201);
}
