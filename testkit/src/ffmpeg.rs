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

/// ffmpeg publishing HEVC (x265, no B-frames, a keyframe a second) to `rtsp_url` until
/// killed: ffmpeg 5.1's FLV cannot carry HEVC, its RTSP can.
pub fn publish_hevc(rtsp_url: &str, source: Source) -> Proc {
    let x265 = [
        "-c:v",
        "libx265",
        "-x265-params",
        "bframes=0:log-level=error",
    ];
    publish_with(
        rtsp_url,
        source,
        25,
        0,
        &[&x265[..], &["-f", "rtsp"]].concat(),
    )
}

/// ffmpeg's AV1 (libaom in real-time mode, 320x240 at 25 fps, a keyframe every `gop`
/// pictures) published over Enhanced RTMP to `room` on `rtmp` (app `live`) until the
/// returned ffmpeg is killed: ffmpeg 5.1 cannot send AV1 in FLV itself, so it writes IVF
/// to a pipe and [`RtmpClient`] sends each temporal unit as coded frames, after a sequence
/// start whose av1C carries the first sequence header OBU.
pub fn publish_av1(rtmp: std::net::SocketAddr, room: &str, gop: u32) -> Proc {
    use std::io::Read;

    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-c:v", "libaom-av1", "-usage", "realtime", "-cpu-used", "8"])
        .args(["-lag-in-frames", "0", "-pix_fmt", "yuv420p"])
        .args(["-g", &gop.to_string(), "-f", "ivf", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Proc)
        .expect("start ffmpeg (libaom-av1)");
    let mut ivf = ffmpeg.0.stdout.take().expect("ffmpeg's stdout");
    let mut publisher = crate::RtmpClient::connect(rtmp, "live");
    assert!(publisher.publish(room), "the AV1 publish is taken");
    std::thread::spawn(move || {
        // The IVF file header, then per frame: size (u32 LE), pts (u64 LE), the unit.
        let mut header = [0u8; 32];
        if ivf.read_exact(&mut header).is_err() {
            return;
        }
        let mut configured = false;
        let mut frame_header = [0u8; 12];
        let mut number = 0u32;
        while ivf.read_exact(&mut frame_header).is_ok() {
            let size = u32::from_le_bytes(frame_header[..4].try_into().unwrap());
            let mut unit = vec![0u8; size as usize];
            if ivf.read_exact(&mut unit).is_err() {
                return;
            }
            // Its OBUs (all with sizes, as libaom writes them) but the temporal delimiter;
            // a keyframe's unit starts with the sequence header.
            let mut obus = Vec::new();
            let mut sequence_header = None;
            for obu in media::codec::av1_obus(&unit).map_while(Result::ok) {
                match obu.obu_type {
                    media::codec::OBU_TEMPORAL_DELIMITER => {}
                    media::codec::OBU_SEQUENCE_HEADER => {
                        sequence_header.get_or_insert(obu.bytes);
                        obus.extend_from_slice(obu.bytes);
                    }
                    _ => obus.extend_from_slice(obu.bytes),
                }
            }
            let key = sequence_header.is_some();
            let ms = number * 40;
            number += 1;
            if let (false, Some(sequence_header)) = (configured, sequence_header) {
                // av1C: version 1; profile 0, level 4.0; 8-bit 4:2:0 (what libaom is asked
                // for); then the sequence header OBU, which decoders take.
                let mut start = vec![0x80];
                start.extend_from_slice(b"av01");
                start.extend_from_slice(&[0x81, 0x08, 0x0c, 0x00]);
                start.extend_from_slice(sequence_header);
                publisher.send(6, 9, 1, ms, &start);
                configured = true;
            }
            if !configured {
                continue;
            }
            let mut frame = vec![0x80 | if key { 0x10 } else { 0x20 } | 1];
            frame.extend_from_slice(b"av01");
            frame.extend_from_slice(&obus);
            publisher.send(6, 9, 1, ms, &frame);
        }
    });
    ffmpeg
}
