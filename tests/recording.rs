//! End-to-end recording: the real binary records what ffmpeg publishes; ffprobe reads the
//! files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::*;

/// ffmpeg publishing 25 fps H.264 with B-frames (1 s GOP) and AAC in real time for
/// `seconds` (0: until killed).
fn publish_for(url: &str, seconds: u32) -> Proc {
    publish_sized(url, seconds, "320x240")
}

/// The same at a picture size of `size`.
fn publish_sized(url: &str, seconds: u32, size: &str) -> Proc {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-re"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=25"),
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]);
    if seconds > 0 {
        cmd.args(["-t", &seconds.to_string()]);
    }
    cmd.args([
        "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "25",
    ])
    .args(["-c:a", "aac", "-f", "flv", url])
    .stdin(Stdio::null());
    Proc(cmd.spawn().expect("start ffmpeg"))
}

/// The files under `dir` with extension `ext`, in name (= start time) order.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// What ffprobe reads in a file.
#[derive(Debug)]
struct Probe {
    video_frames: u64,
    audio_frames: u64,
    duration: f64,
    first_video_is_key: bool,
}

fn probe(path: &Path) -> Probe {
    let ffprobe = |args: &[&str]| {
        let out = Command::new("ffprobe")
            .args(["-v", "error"])
            .args(args)
            .arg(path)
            .output()
            .expect("run ffprobe");
        assert!(
            out.status.success(),
            "ffprobe cannot open {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let counts = ffprobe(&[
        "-count_frames",
        "-show_entries",
        "stream=codec_type,nb_read_frames:format=duration",
        "-of",
        "compact=p=0:nk=1",
    ]);
    let mut probe = Probe {
        video_frames: 0,
        audio_frames: 0,
        duration: 0.0,
        first_video_is_key: false,
    };
    for line in counts.lines() {
        match line.split('|').collect::<Vec<_>>()[..] {
            ["video", n] => probe.video_frames = n.parse().unwrap_or(0),
            ["audio", n] => probe.audio_frames = n.parse().unwrap_or(0),
            [d] => probe.duration = d.parse().unwrap_or(0.0),
            _ => {}
        }
    }
    let first = ffprobe(&[
        "-select_streams",
        "v",
        "-read_intervals",
        "%+#1",
        "-show_entries",
        "frame=key_frame",
        "-of",
        "csv=p=0",
    ]);
    probe.first_video_is_key = first.lines().next().map(|l| l.trim_end_matches(',')) == Some("1");
    probe
}

/// Wait until the node has no recording running.
fn wait_recordings_closed(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.metric("ferrolive_recordings") > 0 {
        assert!(Instant::now() < deadline, "the recording did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 25 s published at 10 s segments: three files per format, each starting with a
/// keyframe, together as long as what was published and holding every frame.
#[test]
fn a_published_stream_is_recorded_in_segments_of_whole_gops() {
    require_ffmpeg();
    let dir = temp_dir("recording-segments");
    let record = dir.join("rec");
    let server = Server::start(&[
        "--record-dir",
        record.to_str().unwrap(),
        "--record-format",
        "flv,mp4",
        "--record-segment",
        "10",
    ]);
    let mut publisher = publish_for(&server.rtmp_url("taped"), 25);
    assert!(publisher.0.wait().unwrap().success(), "ffmpeg failed");
    wait_recordings_closed(&server);
    for ext in ["flv", "mp4"] {
        let found = files(&record.join("live/taped"), ext);
        assert_eq!(found.len(), 3, "{ext}: {found:?}");
        let probes: Vec<Probe> = found.iter().map(|f| probe(f)).collect();
        for (file, p) in found.iter().zip(&probes) {
            assert!(p.first_video_is_key, "{}: {p:?}", file.display());
        }
        let frames: u64 = probes.iter().map(|p| p.video_frames).sum();
        assert_eq!(frames, 25 * 25, "{ext}: {probes:?}");
        let audio: u64 = probes.iter().map(|p| p.audio_frames).sum();
        // 44.1 kHz AAC: 1024 samples a frame.
        assert!(
            (audio as f64 - 25.0 * 44_100.0 / 1024.0).abs() < 5.0,
            "{ext}: {probes:?}"
        );
        let duration: f64 = probes.iter().map(|p| p.duration).sum();
        assert!(
            (duration - 25.0).abs() < 0.5,
            "{ext}: {duration} s: {probes:?}"
        );
        assert!(
            probes[0].duration >= 9.9 && probes[1].duration >= 9.9,
            "{probes:?}"
        );
        served_with_byte_ranges(&server, &record, &found[0]);
    }
}

/// `file` (under `record`) is served by `server` whole and in byte ranges, and nothing
/// outside the recording folder is.
fn served_with_byte_ranges(server: &Server, record: &Path, file: &Path) {
    let bytes = std::fs::read(file).unwrap();
    let len = bytes.len();
    let url = format!(
        "/recordings/{}",
        file.strip_prefix(record).unwrap().display()
    );
    let get = |range: Option<&str>| {
        let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
        http_request(
            server.http,
            &format!("GET {url} HTTP/1.1\r\nHost: t\r\n{range}Connection: close\r\n\r\n"),
        )
        .expect("an answer")
    };
    let whole = get(None);
    assert_eq!(whole.status, 200);
    assert!(
        whole.head.contains("Accept-Ranges: bytes"),
        "{}",
        whole.head
    );
    assert_eq!(whole.body, bytes);
    let part = get(Some("bytes=100-199"));
    assert_eq!(part.status, 206);
    assert!(
        part.head
            .contains(&format!("Content-Range: bytes 100-199/{len}")),
        "{}",
        part.head
    );
    assert_eq!(part.body, &bytes[100..200]);
    let tail = get(Some("bytes=-50"));
    assert_eq!((tail.status, &tail.body[..]), (206, &bytes[len - 50..]));
    let beyond = get(Some(&format!("bytes={len}-")));
    assert_eq!(beyond.status, 416);
    for outside in [
        "/recordings/../../etc/passwd",
        "/recordings/live/taped/..%2f..%2f..%2fetc%2fpasswd.flv",
        "/recordings/live/taped/missing.flv",
    ] {
        assert_eq!(
            http_get(server.http, outside).map(|r| r.status),
            Some(404),
            "{outside}"
        );
    }
}

/// `kill -9` while recording: the files open, missing at most their last second.
#[test]
fn a_killed_node_leaves_files_that_open() {
    require_ffmpeg();
    let dir = temp_dir("recording-killed");
    let record = dir.join("rec");
    let mut server = Server::start(&[
        "--record-dir",
        record.to_str().unwrap(),
        "--record-format",
        "flv,mp4",
    ]);
    let _publisher = publish_for(&server.rtmp_url("cut"), 0);
    server.wait_live("cut");
    std::thread::sleep(Duration::from_secs(6));
    server.kill();
    let probes: Vec<Probe> = ["flv", "mp4"]
        .iter()
        .map(|ext| {
            let found = files(&record.join("live/cut"), ext);
            assert_eq!(found.len(), 1, "{ext}: {found:?}");
            let p = probe(&found[0]);
            assert!(p.first_video_is_key, "{ext}: {p:?}");
            // About 6 s were published (the file began at the first keyframe).
            assert!(p.video_frames >= 25 * 4, "{ext}: {p:?}");
            p
        })
        .collect();
    // The FLV file has every tag written; the MP4 misses at most its open fragment (1 s).
    assert!(
        probes[1].video_frames + 25 >= probes[0].video_frames,
        "{probes:?}"
    );
}

/// A tmpfs mounted at `path`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the test command runs the suite as root)"
        );
        Tmpfs(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A disk that fills ends the recording (counted, the file closed with what it has) while
/// the stream's viewers play on.
#[test]
fn a_full_disk_ends_the_recording_while_viewers_play() {
    require_ffmpeg();
    let dir = temp_dir("recording-full");
    let disk = Tmpfs::mount(dir.join("small"), "400k");
    // The default format, MP4.
    let server = Server::start(&["--record-dir", disk.0.to_str().unwrap()]);
    let _publisher = publish_for(&server.rtmp_url("full"), 0);
    server.wait_live("full");
    let watched = decode(&server.flv_url("full"), 12.0);
    assert!(watched.errors.trim().is_empty(), "{}", watched.errors);
    assert!(
        watched.video >= 25 * 11,
        "the viewer decoded {} frames",
        watched.video
    );
    assert_eq!(server.metric("ferrolive_record_errors_total"), 1);
    assert_eq!(server.metric("ferrolive_recordings"), 0);
    let found = files(&disk.0, "mp4");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        probe(&found[0]).video_frames > 25,
        "the file keeps what fitted"
    );
}

/// The control API starts and stops the recording of a live room, lists the files from
/// the folder (after a restart too), deletes one; retention deletes old files at start.
#[test]
fn recordings_are_controlled_listed_and_kept_through_the_api() {
    require_ffmpeg();
    let dir = temp_dir("recording-api");
    let record = dir.join("rec");
    // Left by an earlier run: one file five hours old (retention deletes it), one not a
    // recording (left alone).
    let old = record.join("live/old/2026-01-01T00-00-00Z.flv");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    std::fs::write(&old, b"FLV").unwrap();
    let touched = Command::new("touch")
        .args(["-d", "5 hours ago"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(touched.success());
    std::fs::write(record.join("live/old/notes.txt"), b"x").unwrap();

    let args = [
        "--record-dir",
        record.to_str().unwrap(),
        "--record-format",
        "flv,mp4",
        // Streams of `live` are recorded only when asked.
        "--record-apps",
        "other",
        "--record-keep-hours",
        "1",
    ];
    let mut server = Server::start(&args);
    let deadline = Instant::now() + Duration::from_secs(10);
    while old.exists() {
        assert!(
            Instant::now() < deadline,
            "retention kept {}",
            old.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(record.join("live/old/notes.txt").exists());

    let _publisher = publish_for(&server.rtmp_url("asked"), 0);
    server.wait_live("asked");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        files(&record.join("live/asked"), "flv").is_empty(),
        "recorded unasked"
    );
    let (status, body) = server.api("POST", "/api/v1/rooms/asked/record", None);
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("ferrolive_recordings") == 0 {
        assert!(Instant::now() < deadline, "the recording did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(5));
    let (_, room) = server.api("GET", "/api/v1/rooms/asked", None);
    assert!(room.contains(r#""recording":true"#), "{room}");
    let (status, body) = server.api("DELETE", "/api/v1/rooms/asked/record", None);
    assert_eq!(status, 202, "{body}");
    wait_recordings_closed(&server);
    let mut recorded = files(&record.join("live/asked"), "flv");
    recorded.extend(files(&record.join("live/asked"), "mp4"));
    assert_eq!(recorded.len(), 2, "{recorded:?}");

    // A new node on the same folder lists what the first recorded.
    server.terminate();
    let server = Server::start(&args);
    let (status, body) = server.api("GET", "/api/v1/recordings?room=asked", None);
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let files_listed = listed["recordings"].as_array().unwrap();
    assert_eq!(files_listed.len(), 2, "{body}");
    for file in files_listed {
        let path = file["path"].as_str().unwrap();
        let on_disk = record.join(path);
        assert!(recorded.contains(&on_disk), "{path}");
        assert_eq!(file["codecs"], serde_json::json!(["h264", "aac"]), "{path}");
        let duration = file["duration"].as_f64().unwrap();
        let probed = probe(&on_disk).duration;
        assert!(
            (duration - probed).abs() < 0.2,
            "{path}: listed {duration} s, ffprobe {probed} s"
        );
        assert!(duration > 3.0, "{body}");
        assert_eq!(
            file["size"].as_u64(),
            Some(std::fs::metadata(&on_disk).unwrap().len())
        );
        assert_eq!(
            http_get(server.http, &format!("/recordings/{path}")).map(|r| r.status),
            Some(200)
        );

        let (status, body) = server.api("DELETE", &format!("/api/v1/recordings/{path}"), None);
        assert_eq!(status, 200, "{body}");
        assert!(!on_disk.exists());
        assert_eq!(
            http_get(server.http, &format!("/recordings/{path}")).map(|r| r.status),
            Some(404)
        );
        let (status, _) = server.api("DELETE", &format!("/api/v1/recordings/{path}"), None);
        assert_eq!(status, 404);
    }
}

/// In a cluster the control API reaches the origin holding a room through Redis, and lists
/// what the origins write to the folder they share with it.
#[test]
fn a_cluster_records_on_the_origin_holding_the_room() {
    require_ffmpeg();
    let redis = Redis::start();
    let url = redis.url();
    let record = temp_dir("recording-cluster").join("shared");
    let record_arg = record.to_str().unwrap();
    let api = Server::spawn(
        "control-api",
        &["--redis-url", &url, "--record-dir", record_arg],
    );
    let origin = Server::spawn(
        "origin",
        &[
            "--redis-url",
            &url,
            "--advertise-host",
            "127.0.0.1",
            "--allow-loopback-advertise",
            "--node-id",
            "origin-r",
            "--record-dir",
            record_arg,
            "--record-format",
            "flv",
            // Only an app nobody publishes to records by itself.
            "--record-apps",
            "none",
        ],
    );
    let (status, body) = api.api("GET", "/control/get?room=show", None);
    assert_eq!(status, 200, "{body}");
    let key = livego_data(&body);
    let _publisher = publish_for(&origin.rtmp_url(&key), 0);
    origin.wait_live("show");
    let deadline = Instant::now() + Duration::from_secs(10);
    let accepted = loop {
        let (status, body) = api.api("POST", "/api/v1/rooms/show/record", None);
        if status == 202 {
            break body;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(accepted.contains(r#""node_id":"origin-r""#), "{accepted}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.metric("ferrolive_recordings") == 0 {
        assert!(
            Instant::now() < deadline,
            "the origin did not start recording"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (status, body) = api.api("DELETE", "/api/v1/rooms/show/record", None);
    assert_eq!(status, 202, "{body}");
    wait_recordings_closed(&origin);
    let (status, body) = api.api("GET", "/api/v1/recordings?app=live&room=show", None);
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let listed = listed["recordings"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{body}");
    assert!(listed[0]["duration"].as_f64().unwrap() > 1.0, "{body}");
}

/// A publisher that drops and reconnects within the grace with the same parameters
/// continues its file, on one timeline; one that comes back with another picture size
/// starts a new file. (A publisher that ends its stream cleanly ends the recording.)
#[test]
fn a_reconnect_continues_the_file_and_new_parameters_start_one() {
    require_ffmpeg();
    let record = temp_dir("recording-reconnect").join("rec");
    let server = Server::start(&[
        "--record-dir",
        record.to_str().unwrap(),
        "--record-format",
        "flv,mp4",
    ]);
    for size in ["320x240", "320x240", "640x360"] {
        let mut publisher = publish_sized(&server.rtmp_url("again"), 0, size);
        std::thread::sleep(Duration::from_secs(4));
        publisher.kill();
    }
    wait_recordings_closed(&server);
    for ext in ["flv", "mp4"] {
        let found = files(&record.join("live/again"), ext);
        assert_eq!(found.len(), 2, "{ext}: {found:?}");
        let (first, second) = (probe(&found[0]), probe(&found[1]));
        // Both 320x240 sessions in one file (about 2 x 3.5 s after the first keyframe),
        // their frames one after the other: as long as the frames it holds.
        assert!(first.video_frames >= 2 * 3 * 25, "{ext}: {first:?}");
        let seconds_of_frames = first.video_frames as f64 / 25.0;
        assert!(
            (first.duration - seconds_of_frames).abs() < 0.5,
            "{ext}: a gap or an overlap: {first:?}"
        );
        assert!(second.video_frames >= 3 * 25, "{ext}: {second:?}");
        assert!(first.first_video_is_key && second.first_video_is_key);
    }
}
