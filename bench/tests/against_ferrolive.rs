//! Runs the bench (own synthetic publisher, RTMP + HTTP-FLV players) against a real
//! `ferrolive standalone --rtmp-noauth`. The binary is another package's, so it is looked up
//! in ../target/{debug,release}; the test is skipped (with a message) if it is not built.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ferrolive_binary() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    ["debug", "release"]
        .iter()
        .map(|p| target.join(p).join("ferrolive"))
        .find(|p| p.exists())
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn bench_against_ferrolive() {
    let Some(bin) = ferrolive_binary() else {
        eprintln!("SKIPPED: ferrolive binary not built (run `cargo build` in the workspace first)");
        return;
    };
    let (rtmp, http, api) = (free_port(), free_port(), free_port());
    let data = std::env::temp_dir().join(format!("ferrolive-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let child = Command::new(&bin)
        .args(["standalone", "--rtmp-noauth", "--log", "warn"])
        .args([
            "--rtmp-addr",
            &format!("127.0.0.1:{rtmp}"),
            "--http-addr",
            &format!("127.0.0.1:{http}"),
        ])
        .args([
            "--api-addr",
            &format!("127.0.0.1:{api}"),
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("start ferrolive");
    let _server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", rtmp)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", http)).is_err()
    {
        assert!(Instant::now() < deadline, "ferrolive did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }

    let json = data.join("report.json");
    let args = bench::BenchArgs {
        rtmp: 20,
        flv: 20,
        publish: Some(format!("rtmp://127.0.0.1:{rtmp}/live/benchtest")),
        url_flv: Some(format!("http://127.0.0.1:{http}/live/benchtest.flv")),
        duration: 5.0,
        json: Some(json.clone()),
        quiet: true,
        ..Default::default()
    };
    let report = bench::run(args).await.expect("bench runs");
    report.print_table();

    assert!(
        report.publisher_error.is_none(),
        "{:?}",
        report.publisher_error
    );
    let published = report.frames_published.unwrap();
    assert!(published >= 5 * 30 - 5, "published {published} frames");
    for p in &report.protocols {
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
    assert_eq!(report.overall.connected, 40);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(written["overall"]["connected"], 40);

    // 40 players of one stream: past 16, its fan-out sends from tapes (sendfile).
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
