//! Runs the bench (own synthetic publisher, RTMP, HTTP-FLV, WebSocket-FLV, HTTP-TS,
//! LL-HLS and RTSP players) against a real
//! `ferrolive standalone --rtmp-noauth`, started by testkit. The binary is another
//! package's, so it is there only if the workspace was built; the test is skipped (with a
//! message) if it is not.

use tokio::io::AsyncReadExt;

/// A standalone node, or `None` (the test is skipped) when the binary is not built.
fn server() -> Option<testkit::Server> {
    if testkit::ferrolive_binary().is_none() {
        eprintln!("SKIPPED: ferrolive binary not built (run `cargo build` in the workspace first)");
        return None;
    }
    Some(testkit::Server::start(&["--log", "warn"]))
}

/// Runs the bench and prints its table; its publisher must not have failed.
async fn run(args: bench::BenchArgs) -> bench::Report {
    let report = bench::run(args).await.expect("bench runs");
    report.print_table();
    assert!(
        report.publisher_error.is_none(),
        "{:?}",
        report.publisher_error
    );
    report
}

#[tokio::test(flavor = "current_thread")]
async fn bench_against_ferrolive() {
    let Some(server) = server() else {
        return;
    };
    let (rtmp, http) = (server.rtmp.port(), server.http.port());
    let data = testkit::temp_dir("bench-report");

    let json = data.join("report.json");
    let args = bench::BenchArgs {
        rtmp: 20,
        flv: 20,
        ws: 20,
        ts: 20,
        llhls: 20,
        publish: Some(format!("rtmp://127.0.0.1:{rtmp}/live/benchtest")),
        url_flv: Some(format!("http://127.0.0.1:{http}/live/benchtest.flv")),
        url_ws: Some(format!("ws://127.0.0.1:{http}/live/benchtest.flv")),
        url_ts: Some(format!("http://127.0.0.1:{http}/live/benchtest.ts")),
        url_llhls: Some(format!("http://127.0.0.1:{http}/live/benchtest/index.m3u8")),
        duration: 5.0,
        json: Some(json.clone()),
        quiet: true,
        ..Default::default()
    };
    let report = run(args).await;
    let published = report.frames_published.unwrap();
    assert!(published >= 5 * 30 - 5, "published {published} frames");
    let (streamed, llhls): (Vec<_>, Vec<_>) = report
        .protocols
        .iter()
        .partition(|p| p.protocol != "ll-hls");
    for p in streamed {
        assert_eq!(
            (p.players, p.connected, p.failed),
            (20, 20, 0),
            "{}: {:?}",
            p.protocol,
            p.errors
        );
        assert!(
            p.frames_received_pct.unwrap() >= 95.0,
            "{}: {:?}",
            p.protocol,
            p.frames_received_pct
        );
        let lat = p.latency_ms.expect("latency measured");
        assert!(lat.p99_ms < 200.0, "{}: latency {lat:?}", p.protocol);
        assert!(p.ttff_ms.is_some());
        assert!(
            p.bitrate_kbps_mean.unwrap() > 1000.0,
            "{}: {:?}",
            p.protocol,
            p.bitrate_kbps_mean
        );
    }
    // LL-HLS: the CMAF packager starts at the first playlist request and the first
    // playlist waits for its first whole segment (2 s GOP), so players get a few seconds of
    // the 5; the open part at the end never closes (the publisher stops), so frames are
    // not all there. But every player must get parts, frames and latencies.
    let [p] = llhls[..] else {
        panic!("no ll-hls report")
    };
    assert_eq!(
        (p.players, p.connected, p.failed),
        (20, 20, 0),
        "ll-hls: {:?}",
        p.errors
    );
    assert!(p.llhls_parts >= 20 * 3, "ll-hls: {} parts", p.llhls_parts);
    assert_eq!(p.llhls_parts_missing, 0);
    assert!(
        p.frames_received_pct.unwrap() >= 50.0,
        "ll-hls: {:?}",
        p.frames_received_pct
    );
    let lat = p.latency_ms.expect("ll-hls latency measured");
    assert!(lat.p50_ms < 1500.0, "ll-hls: latency {lat:?}");
    let spread = p.llhls_reload_spread_ms.expect("reload spread measured");
    assert!(spread.samples >= 20 * 3, "ll-hls: {spread:?}");

    let names: Vec<&str> = report
        .protocols
        .iter()
        .map(|p| p.protocol.as_str())
        .collect();
    assert_eq!(names, ["rtmp", "http-flv", "ws-flv", "http-ts", "ll-hls"]);
    assert_eq!(report.overall.connected, 100);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(written["overall"]["connected"], 100);

    // 60 players of one stream over the fan-out: past 16, its fan-out sends from tapes (sendfile).
    let url = bench::http::Url::parse(&format!("http://127.0.0.1:{http}/metrics")).unwrap();
    let mut socket = tokio::net::TcpStream::connect(url.addr()).await.unwrap();
    let mut body = bytes::BytesMut::new();
    bench::http::get(&mut socket, &url, false, &mut body)
        .await
        .unwrap();
    while socket.read_buf(&mut body).await.unwrap() > 0 {}
    let metrics = String::from_utf8_lossy(&body);
    let zero_copy: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("ferrolive_bytes_out_zero_copy_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no zero-copy counter in {metrics}"));
    assert!(zero_copy > 0, "nothing sent from tapes");
    let _ = std::fs::remove_dir_all(&data);
}

/// RTSP players (interleaved over TCP) of the bench's own stream: every one plays, every
/// frame arrives, no RTP packet is missing, and the marker gives latencies.
#[tokio::test(flavor = "current_thread")]
async fn bench_rtsp_against_ferrolive() {
    let Some(server) = server() else {
        return;
    };
    let args = bench::BenchArgs {
        rtsp: 3,
        publish: Some(format!(
            "rtmp://127.0.0.1:{}/live/benchrtsp",
            server.rtmp.port()
        )),
        url_rtsp: Some(server.rtsp_url("benchrtsp")),
        duration: 4.0,
        quiet: true,
        ..Default::default()
    };
    let report = run(args).await;
    let [p] = &report.protocols[..] else {
        panic!("one protocol: {:?}", report.protocols)
    };
    assert_eq!(p.protocol, "rtsp");
    assert_eq!(
        (p.players, p.connected, p.failed),
        (3, 3, 0),
        "{:?}",
        p.errors
    );
    assert_eq!(p.rtp_packets_lost, 0);
    assert!(p.rtp_audio_packets > 0, "no audio packets");
    assert_eq!(
        p.frames_received_pct,
        Some(100.0),
        "frames {}/{:?}",
        p.frames_received,
        p.frames_expected
    );
    let lat = p.latency_ms.expect("latency measured");
    assert!(lat.p99_ms < 200.0, "latency {lat:?}");
    assert!(p.ttff_ms.is_some());
}
