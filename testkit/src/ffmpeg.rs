//! ffmpeg and ffprobe as the publisher and player a user would run.

use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::Proc;

/// Panics with what to do unless ffmpeg and ffprobe run (checked once per test process).
pub fn require_ffmpeg() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        for tool in ["ffmpeg", "ffprobe"] {
            let ok = Command::new(tool)
                .arg("-version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "{tool} is required: run the test command from README.md, which installs it"
            );
        }
    });
}

/// Whether a publish of `url` is accepted: ffmpeg still running after `within` means the
/// server took it; an early exit means it was refused.
pub fn publish_accepted(url: &str, within: Duration) -> (bool, Proc) {
    let mut p = publish(url, Source::AudioVideo, 25, 0);
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if p.0.try_wait().unwrap().is_some() {
            return (false, p);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (true, p)
}

/// What to publish.
#[derive(Clone, Copy, PartialEq)]
pub enum Source {
    AudioVideo,
    AudioOnly,
    VideoOnly,
}

/// ffmpeg publishing a test source in real time with `gop` frames per keyframe at 25 fps.
/// `seconds` of 0 publishes until killed.
pub fn publish(url: &str, source: Source, gop: u32, seconds: u32) -> Proc {
    publish_with(url, source, gop, seconds, &["-f", "flv"])
}

/// [`publish`] with the output's format and options given (`-f rtsp -rtsp_transport udp`,
/// `-tls_verify 1 ... -f flv`).
pub fn publish_with(url: &str, source: Source, gop: u32, seconds: u32, output: &[&str]) -> Proc {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-re"]);
    if source != Source::AudioOnly {
        cmd.args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"]);
    }
    if source != Source::VideoOnly {
        cmd.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]);
    }
    if seconds > 0 {
        cmd.args(["-t", &seconds.to_string()]);
    }
    if source != Source::AudioOnly {
        let gop = gop.to_string();
        cmd.args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-pix_fmt",
            "yuv420p",
        ]);
        cmd.args(["-g", &gop, "-keyint_min", &gop, "-sc_threshold", "0"]);
    }
    if source != Source::VideoOnly {
        cmd.args(["-c:a", "aac", "-b:a", "64k"]);
    }
    cmd.args(output)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    Proc(cmd.spawn().expect("start ffmpeg publisher"))
}

/// Frames decoded per stream by ffmpeg reading `url` for `seconds`.
#[derive(Debug)]
pub struct Decoded {
    pub video: usize,
    pub audio: usize,
    pub errors: String,
    pub elapsed: Duration,
}

pub fn decode(url: &str, seconds: f32) -> Decoded {
    let started = Instant::now();
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-rw_timeout",
            "10000000",
            "-i",
            url,
        ])
        .args(["-t", &seconds.to_string(), "-f", "framecrc", "-"])
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg player");
    decoded_from(out, started.elapsed())
}

/// Decode until the stream ends by itself (no time limit), bounded by `limit`.
pub fn decode_to_end(url: &str, limit: Duration) -> (Decoded, bool) {
    let started = Instant::now();
    let mut child = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            url,
            "-f",
            "framecrc",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ffmpeg player");
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            return (decoded_from(out, started.elapsed()), false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (decoded_from(out, started.elapsed()), true)
}

fn decoded_from(out: Output, elapsed: Duration) -> Decoded {
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    // framecrc numbers streams in input order; find which index is audio from the header.
    let (video, audio) = if text.contains("#media_type 0: audio") {
        (count("1,"), count("0,"))
    } else {
        (count("0,"), count("1,"))
    };
    Decoded {
        video,
        audio,
        errors: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed,
    }
}
